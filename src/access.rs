//! The caller's permissions on an event: its policy evaluated against the caller's
//! claims, then privileges applied. Every permission decision goes through here.

use std::sync::Arc;

use crate::crypto::MasterKeys;
use crate::identity::Identity;
use crate::model::{Event, Perms, Privilege};
use crate::policy::{EvalInput, PolicyEngine};

#[derive(Clone)]
pub struct Access {
    pub engine: Arc<PolicyEngine>,
    pub identity: Arc<Identity>,
    /// Set only for callers with the `blobkey` privilege: responses show data keys.
    pub blob_keys: Option<Arc<MasterKeys>>,
}

impl Access {
    pub fn new(engine: Arc<PolicyEngine>, identity: Identity) -> Access {
        Access {
            engine,
            identity: Arc::new(identity),
            blob_keys: None,
        }
    }

    /// Lets a caller with the `blobkey` privilege see data keys (no-op for anyone else).
    pub fn with_blob_keys(mut self, keys: Arc<MasterKeys>) -> Access {
        if self.identity.claims.has_privilege(Privilege::BlobKey) {
            self.blob_keys = Some(keys);
        }
        self
    }

    pub fn is_root(&self) -> bool {
        self.identity.claims.has_privilege(Privilege::Root)
    }

    pub fn is_readonly(&self) -> bool {
        self.identity.claims.has_privilege(Privilege::ReadOnly)
    }

    /// Letters granted by `target`'s policy for `action`, with `object` as
    /// `input.object` (the event being read or written: for a create, the new child,
    /// judged by the parent's policy). No policy grants nothing (default-deny).
    pub fn perms(&self, target: &Event, action: char, object: &Event) -> Perms {
        if self.is_root() {
            return self.mask(Perms::ALL);
        }
        let Some(policy) = target.objectpolicy.as_ref() else {
            return Perms::NONE;
        };
        let view = || object.policy_view();
        let granted = self.engine.evaluate(
            policy,
            &EvalInput {
                claims: &self.identity.claims,
                action,
                object: &view,
            },
        );
        self.mask(granted)
    }

    /// The letters shown on a returned event (`policy`), evaluated as a read.
    pub fn letters(&self, event: &Event) -> Perms {
        self.perms(event, 'R', event)
    }

    fn mask(&self, p: Perms) -> Perms {
        if self.is_readonly() {
            p.minus(Perms::WRITES)
        } else {
            p
        }
    }
}
