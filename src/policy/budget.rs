//! What one request may spend on policies, and how evaluations share the machine.
//!
//! [`Budget`]: every request (a read, a write transaction, a feed step) evaluates policies
//! against one budget of wall time; an evaluation never gets more time than is left, and once
//! it is spent (or the request is abandoned) further evaluations grant nothing without
//! running. The caller turns "denied because the budget ran out" into an error rather than a
//! quiet omission, so a 200 never hides what the caller may see.
//!
//! [`Gate`]: at most `permits` evaluations run at once, which bounds the memory evaluations
//! hold (each is charged against its own memory budget) and keeps threads free for other
//! work. Waiting is fair between callers, not first come first served: the next free permit
//! goes to the caller (by claims) that has waited least recently, so a caller queueing many
//! expensive evaluations does not make everyone else wait behind them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A request's policy time.
#[derive(Debug)]
pub struct Budget {
    limit_ns: u64,
    used_ns: AtomicU64,
    cancelled: AtomicBool,
}

impl Budget {
    /// A budget that never runs out.
    pub const fn unlimited() -> Budget {
        Budget {
            limit_ns: u64::MAX,
            used_ns: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
        }
    }

    pub fn new(limit: Duration) -> Budget {
        Budget {
            limit_ns: u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX),
            used_ns: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Time left; zero once spent or cancelled.
    pub fn remaining(&self) -> Duration {
        if self.cancelled.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        Duration::from_nanos(
            self.limit_ns
                .saturating_sub(self.used_ns.load(Ordering::Relaxed)),
        )
    }

    pub fn charge(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.used_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Spent, or cancelled: evaluations grant nothing without running.
    pub fn exhausted(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The request was abandoned (its client went away).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }
}

/// Cancels a budget when dropped: held by a request handler, so that evaluations still running
/// for a request whose client went away (and whose handler was dropped) stop.
pub struct CancelOnDrop(pub std::sync::Arc<Budget>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Who waits at the gate: a digest of the caller's claims.
pub type Lane = [u8; 16];

#[derive(Default)]
struct GateState {
    free: usize,
    /// Waiting tickets per lane, oldest first.
    queues: HashMap<Lane, VecDeque<u64>>,
    /// Lanes with waiters, in the order they get the next permits.
    order: VecDeque<Lane>,
    /// Tickets handed a permit, not yet picked up by their waiter.
    granted: std::collections::HashSet<u64>,
    next_ticket: u64,
}

/// A counting semaphore that hands permits round-robin over lanes.
pub struct Gate {
    state: Mutex<GateState>,
    wake: Condvar,
}

/// A held permit; released on drop.
pub struct Permit<'g> {
    gate: &'g Gate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl Gate {
    pub fn new(permits: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                free: permits.max(1),
                ..GateState::default()
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a permit, at most `patience`; `None` if none came in time (the caller's
    /// budget ran out while waiting).
    pub fn acquire(&self, lane: Lane, patience: Duration) -> Option<Permit<'_>> {
        let mut st = self.lock();
        if st.free > 0 && st.order.is_empty() {
            st.free -= 1;
            return Some(Permit { gate: self });
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        let q = st.queues.entry(lane).or_default();
        q.push_back(ticket);
        if q.len() == 1 {
            st.order.push_back(lane);
        }
        let deadline = std::time::Instant::now() + patience;
        loop {
            if st.granted.remove(&ticket) {
                return Some(Permit { gate: self });
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                // Leave the queue; if the permit came meanwhile, pass it on.
                Self::withdraw(&mut st, lane, ticket);
                drop(st);
                return None;
            }
            st = self
                .wake
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn withdraw(st: &mut GateState, lane: Lane, ticket: u64) {
        if let Some(q) = st.queues.get_mut(&lane) {
            q.retain(|t| *t != ticket);
            if q.is_empty() {
                st.queues.remove(&lane);
                st.order.retain(|l| *l != lane);
            }
        }
    }

    fn release(&self) {
        let mut st = self.lock();
        while let Some(lane) = st.order.pop_front() {
            let Some(q) = st.queues.get_mut(&lane) else {
                continue;
            };
            let Some(ticket) = q.pop_front() else {
                st.queues.remove(&lane);
                continue;
            };
            if q.is_empty() {
                st.queues.remove(&lane);
            } else {
                st.order.push_back(lane);
            }
            st.granted.insert(ticket);
            drop(st);
            self.wake.notify_all();
            return;
        }
        st.free += 1;
    }

    /// Evaluations waiting for a permit (for metrics and tests).
    pub fn waiting(&self) -> usize {
        self.lock().queues.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_budget_runs_out_and_a_cancelled_one_has_nothing_left() {
        let b = Budget::new(Duration::from_millis(10));
        assert!(!b.exhausted());
        b.charge(Duration::from_millis(11));
        assert!(b.exhausted());
        let b = Budget::new(Duration::from_secs(10));
        b.cancel();
        assert_eq!(b.remaining(), Duration::ZERO);
    }

    #[test]
    fn permits_go_round_robin_over_lanes() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.acquire([0; 16], Duration::from_secs(1)).unwrap();
        // Lane 1 queues three, then lane 2 queues one: lane 2 must be served second.
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for (lane, n) in [(1u8, 0u8), (1, 1), (1, 2), (2, 0)] {
            let (g, served) = (gate.clone(), served.clone());
            handles.push(std::thread::spawn(move || {
                let p = g.acquire([lane; 16], Duration::from_secs(10)).unwrap();
                served.lock().unwrap().push((lane, n));
                std::thread::sleep(Duration::from_millis(5));
                drop(p);
            }));
            // Queue in this order.
            let deadline = Instant::now() + Duration::from_secs(5);
            while gate.waiting() < handles.len() && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        drop(held);
        for h in handles {
            h.join().unwrap();
        }
        let order: Vec<u8> = served.lock().unwrap().iter().map(|(l, _)| *l).collect();
        assert_eq!(order, [1, 2, 1, 1]);
    }

    #[test]
    fn a_waiter_gives_up_when_its_patience_ends() {
        let gate = Gate::new(1);
        let held = gate.acquire([0; 16], Duration::from_secs(1)).unwrap();
        let t = Instant::now();
        assert!(gate.acquire([1; 16], Duration::from_millis(20)).is_none());
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert_eq!(gate.waiting(), 0);
        drop(held);
    }
}
