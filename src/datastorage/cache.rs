//! A small bounded cache whose entries expire by age: each entry has its own time to live
//! (allowed answers longer, refusals very briefly), and when the cache is full the oldest
//! entries go first — never everything at once, so a flood of new keys cannot turn every
//! request into a call to the backend it protects.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry<V> {
    inserted: Instant,
    expires: Instant,
    value: V,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Keys in insertion order; a key inserted again appears twice, the older copy is stale.
    order: VecDeque<(K, Instant)>,
}

pub struct TtlCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    /// The value for `key` if it has not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let inner = self.inner.lock().ok()?;
        inner.map.get(key).filter(|e| now < e.expires).map(|e| e.value.clone())
    }

    /// Stores `value` for `ttl`; first drops expired and, when full, the oldest entries.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let inner = &mut *inner;
        while let Some((k, inserted)) = inner.order.front() {
            let current = inner.map.get(k).filter(|e| e.inserted == *inserted);
            let evict = match current {
                // A stale copy of a key inserted again later: just drop the queue slot.
                None => true,
                Some(e) => now >= e.expires || inner.map.len() >= self.capacity,
            };
            if !evict {
                break;
            }
            if let Some((k, inserted)) = inner.order.pop_front() {
                if inner.map.get(&k).is_some_and(|e| e.inserted == inserted) {
                    inner.map.remove(&k);
                }
            }
        }
        inner.order.push_back((key.clone(), now));
        inner.map.insert(
            key,
            Entry {
                inserted: now,
                expires: now + ttl,
                value,
            },
        );
        // Re-inserted keys leave stale queue slots; keep the queue bounded too.
        if inner.order.len() > 2 * self.capacity {
            let map = &inner.map;
            inner.order.retain(|(k, at)| map.get(k).is_some_and(|e| e.inserted == *at));
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn entries_expire_by_their_own_ttl() {
        let c = TtlCache::new(10);
        let t0 = Instant::now();
        c.insert("yes", true, 10 * S, t0);
        c.insert("no", false, S, t0);
        assert_eq!(c.get(&"yes", t0 + S / 2), Some(true));
        assert_eq!(c.get(&"no", t0 + S / 2), Some(false));
        assert_eq!(c.get(&"no", t0 + S), None, "refusals are kept only briefly");
        assert_eq!(c.get(&"yes", t0 + 9 * S), Some(true));
        assert_eq!(c.get(&"yes", t0 + 10 * S), None);
    }

    #[test]
    fn a_full_cache_evicts_the_oldest_not_everything() {
        let c = TtlCache::new(3);
        let t0 = Instant::now();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            c.insert(k, i, 60 * S, t0 + S * i as u32);
        }
        c.insert("d", 3, 60 * S, t0 + 3 * S);
        assert_eq!(c.len(), 3);
        let now = t0 + 4 * S;
        assert_eq!(c.get(&"a", now), None, "the oldest went");
        assert_eq!((c.get(&"b", now), c.get(&"c", now), c.get(&"d", now)), (Some(1), Some(2), Some(3)));
    }

    #[test]
    fn expired_entries_make_room_first_and_reinsertion_refreshes_age() {
        let c = TtlCache::new(3);
        let t0 = Instant::now();
        c.insert("a", 0, 60 * S, t0);
        c.insert("b", 1, S, t0);
        c.insert("c", 2, 60 * S, t0);
        // "a" is re-inserted: it is now the youngest, so "b" (expired) and then "c" go first.
        c.insert("a", 10, 60 * S, t0 + S);
        c.insert("d", 3, 60 * S, t0 + 2 * S);
        c.insert("e", 4, 60 * S, t0 + 3 * S);
        let now = t0 + 4 * S;
        assert_eq!(c.get(&"a", now), Some(10));
        assert_eq!(c.get(&"b", now), None);
        assert_eq!(c.get(&"c", now), None);
        assert_eq!((c.get(&"d", now), c.get(&"e", now)), (Some(3), Some(4)));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_flood_of_new_keys_stays_bounded() {
        let c = TtlCache::new(100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            c.insert(i, i, 60 * S, t0);
            c.insert(7, 7, 60 * S, t0);
        }
        assert!(c.len() <= 100);
        assert!(c.inner.lock().unwrap().order.len() <= 200);
    }
}
