//! Objects whose audit record this process has seen Data Storage confirm, shared by the
//! controller and the webhook of one `serve`, keyed by uid *and* `resourceVersion`
//! ([`release_key`]).
//!
//! The validating webhook lets the controller's identity take the finalizer off only when
//! Data Storage holds the record of the object as it is; a hit here spares that check its
//! round trip to Data Storage on the deletion hot path. The key names the exact version of
//! the object the confirmed record was built from: the controller's release patch tests
//! that `resourceVersion`, so the object the webhook is asked about is the one whose content
//! was confirmed. A later version (a status change since) misses and is checked by content.
//! A miss (another replica stored it, or this process restarted) falls back to that check,
//! so the set only has to be fast, bounded and never wrong: only a confirmation from Data
//! Storage adds a key, and one version of an object never changes.

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

/// How many confirmed object versions one process remembers: a mass cleanup of this many CRs
/// never needs the check by content; beyond it the oldest (long since released) are forgotten. About 100 bytes
/// each, so at most ~10 MiB.
pub const CONFIRMED_CAPACITY: usize = 100_000;

/// The object versions whose records Data Storage confirmed to this process.
pub type ConfirmedRecords = UidSet;

/// The key of a record confirmed as built from the object `uid` at `resource_version`.
pub fn release_key(uid: &str, resource_version: &str) -> String {
    format!("{uid}@{resource_version}")
}

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

    /// A confirmation is of one version of an object: a later version of the same uid (a
    /// status write since) is not confirmed by it.
    #[test]
    fn a_confirmation_is_of_one_version() {
        let set = confirmed_records();
        set.insert(&release_key("u-1", "7"));
        assert!(set.contains(&release_key("u-1", "7")));
        assert!(!set.contains(&release_key("u-1", "8")));
        assert!(!set.contains("u-1"));
    }
}
