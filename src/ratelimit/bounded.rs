//! A map from callers to small values that never holds more than its capacity.
//!
//! Rule: a key is reduced to a 64-bit hash under a per-process random key, so an entry's
//! size never depends on what a caller sent and nobody can aim collisions; when a shard is
//! full, the half of it with the lowest rank goes (for token buckets the fullest ones,
//! whose loss changes least), never the caller who has been limited hardest.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, PoisonError};

/// Shards, so concurrent callers rarely wait on the same lock.
const SHARDS: usize = 16;

/// A sharded map holding at most its capacity of entries.
pub struct BoundedMap<V> {
    shards: Box<[Mutex<HashMap<u64, V>>]>,
    shard_capacity: usize,
    hasher: RandomState,
    rank: fn(&V) -> u64,
}

impl<V: Copy> BoundedMap<V> {
    /// A map of at most about `capacity` entries (rounded up to a multiple of the shard
    /// count); when full, entries of the lowest `rank` are evicted first.
    pub fn new(capacity: usize, rank: fn(&V) -> u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            rank,
        }
    }

    /// The most entries the map will hold.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * SHARDS
    }

    fn shard_and_hash(&self, key: &impl Hash) -> (&Mutex<HashMap<u64, V>>, u64) {
        let hash = self.hasher.hash_one(key);
        // The top bits pick the shard; the whole hash is the entry's key.
        let index = usize::try_from(hash >> 60).unwrap_or(0) % SHARDS;
        (&self.shards[index], hash)
    }

    /// Reads `key`'s value, lets `f` decide the answer and the new value (`None` removes
    /// it), under the shard's lock so concurrent updates of one key never interleave.
    pub fn update<T>(&self, key: &impl Hash, f: impl FnOnce(Option<V>) -> (T, Option<V>)) -> T {
        let (shard, hash) = self.shard_and_hash(key);
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let old = map.get(&hash).copied();
        let (answer, new) = f(old);
        match new {
            Some(value) => {
                if old.is_none() && map.len() >= self.shard_capacity {
                    evict_lowest_half(&mut map, self.rank);
                }
                map.insert(hash, value);
            }
            None => {
                map.remove(&hash);
            }
        }
        answer
    }

    /// `key`'s value, if it has one.
    pub fn get(&self, key: &impl Hash) -> Option<V> {
        let (shard, hash) = self.shard_and_hash(key);
        shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .copied()
    }

    /// Keeps only the entries `keep` accepts, and gives back the memory of the rest.
    pub fn retain(&self, keep: impl Fn(&V) -> bool) {
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, value| keep(value));
            map.shrink_to_fit();
        }
    }

    /// How many entries the map holds now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the half of `map` whose rank is lowest (ties at the median go too).
fn evict_lowest_half<V>(map: &mut HashMap<u64, V>, rank: fn(&V) -> u64) {
    let mut ranks: Vec<u64> = map.values().map(rank).collect();
    let middle = ranks.len() / 2;
    let (_, median, _) = ranks.select_nth_unstable(middle);
    let median = *median;
    map.retain(|_, value| rank(value) > median);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(value: &u64) -> u64 {
        *value
    }

    #[test]
    fn a_flood_of_fresh_keys_never_grows_it_past_its_capacity() {
        let map = BoundedMap::new(1_000, identity);
        for key in 0..200_000u64 {
            map.update(&key, |_| ((), Some(key)));
            assert!(map.len() <= map.capacity());
        }
        assert!(map.len() > map.capacity() / 4, "eviction took too much");
    }

    #[test]
    fn eviction_keeps_the_highest_ranked_entries() {
        let map = BoundedMap::new(160, identity);
        // One heavily limited caller, then a flood of low-ranked fresh ones.
        map.update(&"heavy", |_| ((), Some(u64::MAX)));
        for key in 0..100_000u64 {
            map.update(&key, |_| ((), Some(key % 1_000)));
        }
        assert_eq!(map.get(&"heavy"), Some(u64::MAX));
    }

    #[test]
    fn update_sees_the_old_value_and_none_removes() {
        let map = BoundedMap::new(10, identity);
        assert_eq!(map.update(&"a", |old| (old, Some(1))), None);
        assert_eq!(map.update(&"a", |old| (old, Some(2))), Some(1));
        map.update(&"a", |_| ((), None));
        assert_eq!(map.get(&"a"), None);
        map.update(&"b", |_| ((), Some(5)));
        map.retain(|value| *value > 5);
        assert!(map.is_empty());
    }
}
