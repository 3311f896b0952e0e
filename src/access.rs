//! The caller's permissions on an event: its policy evaluated against the caller's
//! claims, then privileges applied. Every permission decision goes through here, and each
//! is made in the read snapshot or write transaction it is asked in, so that what else
//! grants letters (SPEC §9's shares) is read in the same snapshot as the object itself.

use std::sync::Arc;

use crate::error::{Code, Error};
use crate::identity::Identity;
use crate::model::{Event, Letter, Perms, Privilege};
use crate::policy::{Budget, EvalInput, Meter, PolicyEngine};
use crate::store::MetaRead;

/// Below this many events a second thread costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 64;

#[derive(Clone)]
pub struct Access {
    pub engine: Arc<PolicyEngine>,
    pub identity: Arc<Identity>,
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

    /// Whether responses to this caller show data keys (the `blobkey` privilege).
    pub fn sees_blob_keys(&self) -> bool {
        self.identity.claims.has_privilege(Privilege::BlobKey)
    }

    pub fn is_root(&self) -> bool {
        self.identity.claims.has_privilege(Privilege::Root)
    }

    pub fn is_readonly(&self) -> bool {
        self.identity.claims.has_privilege(Privilege::ReadOnly)
    }

    /// Whether the caller holds `letter` on `target`, decided in the snapshot `s`:
    /// `target`'s policy evaluated for `letter` with `object` as `input.object` (the event
    /// being read or written: for a create, the new child, judged by the parent's policy).
    /// No policy grants nothing (default-deny).
    pub fn may<S: MetaRead + ?Sized>(
        &self,
        s: &S,
        target: &Event,
        letter: Letter,
        object: &Event,
    ) -> bool {
        self.granted(s, target, letter, object)
            .contains(letter.perm())
    }

    /// The letters shown on a returned event (`policy`), evaluated as a read in `s`.
    pub fn letters<S: MetaRead + ?Sized>(&self, s: &S, event: &Event) -> Perms {
        self.granted(s, event, Letter::R, event)
    }

    /// The letters shown on each of `events`, as [`Access::letters`] gives them. Policy
    /// evaluation is CPU-bound (a distinct Rego policy per child costs tens of
    /// microseconds), so a large page is split across two threads; the snapshot is only
    /// read on this one (a connection is not shared between threads).
    pub fn letters_all<S: MetaRead + ?Sized>(&self, s: &S, events: &[&Event]) -> Vec<Perms> {
        if events.len() < PARALLEL_MIN_ROWS {
            return events.iter().map(|e| self.letters(s, e)).collect();
        }
        let (a, b) = events.split_at(events.len() / 2);
        let by_policy = |e: &&Event| self.by_policy(e, Letter::R, e);
        let policy: Vec<Perms> = std::thread::scope(|scope| {
            let other = scope.spawn(|| b.iter().map(by_policy).collect::<Vec<_>>());
            let mut out: Vec<Perms> = a.iter().map(by_policy).collect();
            match other.join() {
                Ok(rest) => out.extend(rest),
                // A panic in evaluation grants nothing (default-deny) rather than failing
                // the page.
                Err(_) => out.extend(std::iter::repeat_n(Perms::NONE, b.len())),
            }
            out
        });
        if self.is_root() {
            return policy;
        }
        let incoming = self.incoming(s);
        events
            .iter()
            .zip(policy)
            .map(|(e, p)| self.mask(p | shared_letters(&incoming, e)))
            .collect()
    }

    /// [`Access::letters`] with the caller's shares already read ([`Access::incoming`], in
    /// the snapshot `event` was read in): no store access, so it may run after the snapshot
    /// ended.
    pub fn letters_given(&self, incoming: &[crate::model::Share], event: &Event) -> Perms {
        let policy = self.by_policy(event, Letter::R, event);
        if self.is_root() {
            return policy;
        }
        self.mask(policy | shared_letters(incoming, event))
    }

    /// Every letter the caller holds on `target` when asking for `letter`: what its policy
    /// grants, united with the letters of every share on it or on a folder above it that
    /// grants now and whose audience the caller is in (SPEC §9.3), read in the snapshot `s`
    /// (so a revocation committed before it is seen); privileges last.
    fn granted<S: MetaRead + ?Sized>(
        &self,
        s: &S,
        target: &Event,
        letter: Letter,
        object: &Event,
    ) -> Perms {
        let policy = self.by_policy(target, letter, object);
        if self.is_root() {
            return policy;
        }
        self.mask(policy | shared_letters(&self.incoming_on(s, target), target))
    }

    /// The caller's shares on `target` or a folder above it that grant now, in `s`.
    fn incoming_on<S: MetaRead + ?Sized>(&self, s: &S, target: &Event) -> Vec<crate::model::Share> {
        let mut chain: Vec<crate::model::Oid> = target
            .fulldir
            .split('/')
            .filter_map(|seg| seg.parse().ok())
            .collect();
        chain.push(target.oid);
        self.live_shares(s, |pairs| s.shares_to_on(pairs, &chain))
    }

    /// The letters `target`'s policy alone grants the caller (privileges applied): what
    /// "holding U by its policy" means for who may share (SPEC §9.2).
    pub fn by_policy_only(&self, target: &Event, letter: Letter) -> Perms {
        self.by_policy(target, letter, target)
    }

    /// Every share whose audience the caller is in and that grants now, in `s`. A store
    /// failure grants nothing (default-deny), and is logged.
    pub fn incoming<S: MetaRead + ?Sized>(&self, s: &S) -> Vec<crate::model::Share> {
        self.live_shares(s, |pairs| s.shares_to(pairs))
    }

    /// The shares `find` returns for the caller's audience pairs that grant now, with every
    /// share above them. A store failure grants nothing (default-deny), and is logged.
    fn live_shares<S: MetaRead + ?Sized>(
        &self,
        s: &S,
        find: impl FnOnce(
            &[(String, String)],
        ) -> Result<Vec<crate::model::Share>, crate::store::StoreError>,
    ) -> Vec<crate::model::Share> {
        let pairs = crate::model::share::audience_pairs(&self.identity.claims);
        // Shares are for identities: an anonymous caller is in no audience, whatever
        // its label says.
        if pairs.is_empty() || self.identity.kind == crate::identity::IdentityKind::Anonymous {
            return Vec::new();
        }
        let found = find(&pairs).and_then(|shares| {
            let mut live = Vec::new();
            for sh in shares.into_iter().filter(|sh| sh.grants()) {
                if chain_grants(s, &sh)? {
                    live.push(sh);
                }
            }
            Ok(live)
        });
        match found {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "reading shares failed: they grant nothing");
                Vec::new()
            }
        }
    }

    /// The letters `target`'s own policy grants, privileges applied.
    fn by_policy(&self, target: &Event, letter: Letter, object: &Event) -> Perms {
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
                action: letter.as_char(),
                object: &view,
                meter: self.meter(),
            },
        );
        self.mask(granted)
    }

    pub(crate) fn mask(&self, p: Perms) -> Perms {
        if self.is_readonly() {
            p.minus(Perms::WRITES)
        } else {
            p
        }
    }
}

/// The letters `shares` grant on `target`: those of each share on it or on a folder above it
/// (by `target`'s `fulldir`).
pub fn shared_letters(shares: &[crate::model::Share], target: &Event) -> Perms {
    if shares.is_empty() {
        return Perms::NONE;
    }
    shares
        .iter()
        .filter(|sh| sh.oid == target.oid || is_ancestor(sh.oid, target))
        .fold(Perms::NONE, |acc, sh| acc | sh.letters)
}

/// Whether `oid` is a folder above `target` (named in its `fulldir`).
pub fn is_ancestor(oid: crate::model::Oid, target: &Event) -> bool {
    target
        .fulldir
        .split('/')
        .filter(|seg| !seg.is_empty())
        .any(|seg| seg.parse::<crate::model::Oid>() == Ok(oid))
}

/// Longest chain of shares made through shares that is followed; a longer one grants
/// nothing (the chain is walked on every decision).
const MAX_SHARE_CHAIN: usize = 32;

/// Whether every share `share` was made through grants too: a share through a share that
/// was revoked, declined, expired or is pending again grants nothing.
fn chain_grants<S: MetaRead + ?Sized>(
    s: &S,
    share: &crate::model::Share,
) -> Result<bool, crate::store::StoreError> {
    let mut next = share.parent;
    for _ in 0..MAX_SHARE_CHAIN {
        let Some(id) = next else {
            return Ok(true);
        };
        match s.share(id)? {
            Some(p) if p.grants() => next = p.parent,
            _ => return Ok(false),
        }
    }
    Ok(false)
}
