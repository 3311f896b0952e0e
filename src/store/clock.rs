//! The store's one clock: tstamps and oids are nanosecond timestamps, unique and
//! strictly increasing across the whole store even when the wall clock steps back.
//! Only the single writer owns a `Clock`, so no locking is needed.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Oid, Tstamp};

#[derive(Debug)]
pub struct Clock {
    last: u64,
}

impl Clock {
    /// `high_water` is the largest tstamp or oid already in the store.
    pub fn new(high_water: u64) -> Clock {
        Clock { last: high_water }
    }

    fn next(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.last = now.max(self.last + 1);
        self.last
    }

    /// The last tstamp or oid handed out (or the high-water mark it started from).
    pub fn last(&self) -> u64 {
        self.last
    }

    pub fn tstamp(&mut self) -> Tstamp {
        Tstamp(self.next())
    }

    pub fn oid(&mut self) -> Oid {
        Oid(self.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_repeats_or_goes_back() {
        let far_future = u64::MAX / 4;
        let mut c = Clock::new(far_future);
        let a = c.tstamp();
        let b = c.tstamp();
        assert!(a.0 > far_future && b.0 > a.0);
    }
}
