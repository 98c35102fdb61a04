//! An ordered map kept as one sorted `Vec` of pairs.
//!
//! Why not `BTreeMap`: its node code is copied for every key and value type
//! and was about 13 KB of the `.wasm` (BENCHMARKS.md, "Size"), while the maps
//! here are small (a node's health, the learned partition keys) and read far
//! more often than written. Lookups are a binary search; an insert or remove
//! moves the entries after it, which for a few thousand entries at most is
//! cheaper than the tree's allocations. Iteration is in key order, which the
//! shared-data encodings rely on to be canonical.

use std::borrow::Borrow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecMap<K, V> {
    /// Sorted by key, no key twice.
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> VecMap<K, V> {
    pub const fn new() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        self.entries.get(i).map(|(_, v)| v)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Sets `key`'s value; the value it replaces, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => self
                .entries
                .get_mut(i)
                .map(|(_, old)| std::mem::replace(old, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for VecMap<K, V> {
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no such key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A long random mix of inserts, removes and retains, step by step
    /// against the standard BTreeMap.
    #[test]
    fn behaves_like_a_btree_map() {
        let mut ours: VecMap<u8, u32> = VecMap::new();
        let mut theirs: BTreeMap<u8, u32> = BTreeMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..5000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let key = (seed % 64) as u8;
            match (seed >> 8) % 10 {
                0..=5 => assert_eq!(ours.insert(key, step), theirs.insert(key, step)),
                6..=8 => assert_eq!(ours.remove(&key), theirs.remove(&key)),
                _ => {
                    ours.retain(|k, v| (u32::from(*k) + *v) % 3 != 0);
                    theirs.retain(|k, v| (u32::from(*k) + *v) % 3 != 0);
                }
            }
            assert_eq!(ours.get(&key), theirs.get(&key));
            assert_eq!(ours.contains_key(&key), theirs.contains_key(&key));
            assert_eq!(ours.len(), theirs.len());
            assert!(ours.iter().eq(theirs.iter()));
        }
        ours.clear();
        assert!(ours.is_empty());
    }

    #[test]
    fn borrowed_keys_look_up_owned_ones() {
        let mut m: VecMap<String, String> = VecMap::new();
        m.insert("orders".into(), "pk".into());
        assert_eq!(m.get("orders").map(String::as_str), Some("pk"));
        assert_eq!(m["orders"], "pk");
        assert!(m.get("other").is_none());
    }
}
