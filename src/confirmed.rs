//! Uids whose audit record this process has seen Data Storage confirm, shared by the
//! controller, the buffered writer and the webhook of one `serve`.
//!
//! The validating webhook lets the controller take the finalizer off only when Data Storage
//! holds the record; a hit here spares that check its GET on the deletion hot path. A miss
//! (another replica stored it, or this process restarted) falls back to the GET, so the set
//! only has to be fast, bounded and never wrong: only a confirmation from Data Storage adds
//! a uid, and records are immutable, so a confirmed uid stays confirmed.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// A bounded set of uids; past its capacity the oldest are forgotten first.
#[derive(Debug)]
pub struct UidSet {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl UidSet {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn insert(&self, uid: &str) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.set.contains(uid) {
            return;
        }
        inner.set.insert(uid.to_string());
        inner.order.push_back(uid.to_string());
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.inner.lock().map(|i| i.set.contains(uid)).unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.set.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many confirmed uids one process remembers: a mass cleanup of this many CRs never
/// needs the GET; beyond it the oldest (long since released) are forgotten. About 100 bytes
/// each, so at most ~10 MiB.
pub const CONFIRMED_CAPACITY: usize = 100_000;

/// The uids whose records Data Storage confirmed to this process.
pub type ConfirmedRecords = UidSet;

pub fn confirmed_records() -> ConfirmedRecords {
    UidSet::new(CONFIRMED_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_its_capacity_and_forgets_the_oldest_first() {
        let set = UidSet::new(3);
        for uid in ["a", "b", "c", "b"] {
            set.insert(uid);
        }
        assert_eq!(set.len(), 3);
        set.insert("d");
        assert!(!set.contains("a"), "the oldest goes first");
        for uid in ["b", "c", "d"] {
            assert!(set.contains(uid), "{uid}");
        }
        assert!(!UidSet::new(0).contains("x"));
    }
}
