//! The caller's permissions on an event: its policy evaluated against the caller's
//! claims, then privileges applied. Every permission decision goes through here.

use std::sync::Arc;

use crate::crypto::MasterKeys;
use crate::error::{Code, Error};
use crate::identity::Identity;
use crate::model::{Event, Perms, Privilege};
use crate::policy::{Budget, EvalInput, Meter, PolicyEngine};

#[derive(Clone)]
pub struct Access {
    pub engine: Arc<PolicyEngine>,
    pub identity: Arc<Identity>,
    /// Set only for callers with the `blobkey` privilege: responses show data keys.
    pub blob_keys: Option<Arc<MasterKeys>>,
    /// The policy time this request (or this transaction, on the writer) may spend.
    pub budget: Arc<Budget>,
    /// Whether evaluations wait for a permit at the policy gate (not on the writer thread).
    gated: bool,
}

impl Access {
    /// A caller's access, with a request's policy budget of `budget`.
    pub fn new(
        engine: Arc<PolicyEngine>,
        identity: Identity,
        budget: std::time::Duration,
    ) -> Access {
        Access {
            engine,
            identity: Arc::new(identity),
            blob_keys: None,
            budget: Arc::new(Budget::new(budget)),
            gated: true,
        }
    }

    /// The same caller deciding on the store's writer thread: its own budget (a transaction's)
    /// and no waiting at the gate.
    pub fn on_writer(&self, budget: std::time::Duration) -> Access {
        Access {
            budget: Arc::new(Budget::new(budget)),
            gated: false,
            ..self.clone()
        }
    }

    /// The same caller with a fresh budget: each step of a long-lived request (a
    /// notification feed) gets its own.
    pub fn renewed(&self, budget: std::time::Duration) -> Access {
        Access {
            budget: Arc::new(Budget::new(budget)),
            ..self.clone()
        }
    }

    /// The meter compiles and evaluations of this request are charged to.
    pub fn meter(&self) -> Meter<'_> {
        Meter {
            budget: &self.budget,
            lane: self.gated.then(|| self.identity.claims.key()),
        }
    }

    /// When a decision came out "no" because the budget ran out (or the request was
    /// abandoned), the error to answer instead: never a quiet denial or omission.
    pub fn budget_error(&self) -> Option<Error> {
        if self.budget.is_cancelled() {
            return Some(Error::unavailable(
                Code::RequestAbandoned,
                "the request was abandoned",
            ));
        }
        self.budget.exhausted().then(|| {
            Error::unavailable(
                Code::PolicyBudgetExceeded,
                format!(
                    "evaluating policies for this request took longer than its budget ({} ms); \
                     try again, or with fewer objects",
                    self.budget.used().as_millis()
                ),
            )
        })
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
                meter: self.meter(),
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
