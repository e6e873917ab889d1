//! Which local entries carry which tag, and which depend on which key: what tag and
//! dependency invalidation walk. Covers L1 and L2 (Redis keeps its own sets).
//!
//! Invariants:
//! 1. `by_key` holds exactly the (namespace, key) pairs that `tags` and `dependents` name,
//!    with the tags and dependencies those maps list them under.
//! 2. An entry written to a local tier is in the index until it is removed, invalidated,
//!    evicted from the last local tier holding it, or the local tiers are retired.
//!
//! A key may be in the index and no longer in any tier (L1 evicted it, L2 is off): its
//! invalidation is then a no-op, and it leaves the index when it goes.

use crate::entry::Meta;
use std::collections::{HashMap, HashSet, VecDeque};

type NsKey = (String, String);

#[derive(Debug, Default)]
pub(crate) struct Index {
    by_key: HashMap<NsKey, (Vec<String>, Vec<String>)>,
    tags: HashMap<NsKey, HashSet<String>>,
    dependents: HashMap<NsKey, HashSet<String>>,
}

impl Index {
    /// Records `meta`'s tags and dependencies, replacing what the key had before.
    pub fn insert(&mut self, meta: &Meta) {
        self.remove(&meta.ns, &meta.key);
        if meta.tags.is_empty() && meta.deps.is_empty() {
            return;
        }
        for t in &meta.tags {
            self.tags
                .entry((meta.ns.clone(), t.clone()))
                .or_default()
                .insert(meta.key.clone());
        }
        for d in &meta.deps {
            self.dependents
                .entry((meta.ns.clone(), d.clone()))
                .or_default()
                .insert(meta.key.clone());
        }
        self.by_key.insert(
            (meta.ns.clone(), meta.key.clone()),
            (meta.tags.clone(), meta.deps.clone()),
        );
    }

    /// Forgets `key`'s tags and dependencies (its own dependents stay: they still depend
    /// on it whether or not it is cached).
    pub fn remove(&mut self, ns: &str, key: &str) {
        let Some((tags, deps)) = self.by_key.remove(&(ns.to_string(), key.to_string())) else {
            return;
        };
        for (map, names) in [(&mut self.tags, tags), (&mut self.dependents, deps)] {
            for n in names {
                let k = (ns.to_string(), n);
                if let Some(set) = map.get_mut(&k) {
                    set.remove(key);
                    if set.is_empty() {
                        map.remove(&k);
                    }
                }
            }
        }
    }

    /// Every key an invalidation of `keys` and `tags` in `ns` reaches: the keys, the keys
    /// carrying a tag, then their dependents, transitively. Each key once, whatever the
    /// cycles.
    pub fn closure(&self, ns: &str, keys: &[String], tags: &[String]) -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<String> = VecDeque::new();
        let start = keys.iter().cloned().chain(tags.iter().flat_map(|t| {
            self.tags
                .get(&(ns.to_string(), t.clone()))
                .into_iter()
                .flatten()
                .cloned()
        }));
        for k in start {
            if seen.insert(k.clone()) {
                queue.push_back(k);
            }
        }
        let mut out = Vec::new();
        while let Some(k) = queue.pop_front() {
            if let Some(ds) = self.dependents.get(&(ns.to_string(), k.clone())) {
                for d in ds {
                    if seen.insert(d.clone()) {
                        queue.push_back(d.clone());
                    }
                }
            }
            out.push(k);
        }
        out
    }

    /// Forgets everything (the local tiers were retired).
    pub fn clear(&mut self) {
        *self = Index::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, tags: &[&str], deps: &[&str]) -> Meta {
        Meta {
            ns: "n".into(),
            key: key.into(),
            created_ms: 0,
            expires_ms: 1,
            version: 0,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            deps: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn closure_follows_dependents_through_cycles_once() {
        let mut ix = Index::default();
        ix.insert(&meta("a", &["t"], &["c"]));
        ix.insert(&meta("b", &[], &["a"]));
        ix.insert(&meta("c", &[], &["b"])); // a -> c -> b -> a: a cycle
        ix.insert(&meta("x", &["u"], &[]));
        let mut got = ix.closure("n", &[], &["t".into()]);
        got.sort();
        assert_eq!(got, vec!["a", "b", "c"]);
        assert_eq!(ix.closure("n", &["x".into()], &[]), vec!["x"]);
        assert_eq!(
            ix.closure("other", &[], &["t".into()]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn replacing_and_removing_keep_the_maps_in_step() {
        let mut ix = Index::default();
        ix.insert(&meta("a", &["t"], &["d"]));
        ix.insert(&meta("a", &["u"], &[]));
        assert!(ix.closure("n", &[], &["t".into()]).is_empty());
        assert!(ix.closure("n", &["d".into()], &[]) == vec!["d"]);
        ix.remove("n", "a");
        assert!(ix.by_key.is_empty());
        assert!(ix.tags.is_empty() && ix.dependents.is_empty());
    }
}
