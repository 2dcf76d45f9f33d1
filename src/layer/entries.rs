//! The entries of a layer being made, before they are written: what each path
//! holds (`Planned`), kept in the order a directory walk visits paths
//! (`PathKey`). COPY plans them, RUN's change is read as them (the sandbox's
//! upper dir, the in-place walk), and the writer writes them in that order.

use super::writer::{EntryBody, EntryMeta};
use std::collections::BTreeMap;

/// One entry a step adds, by root-relative path.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) meta: EntryMeta,
    pub(crate) body: EntryBody,
}

/// A root-relative path ordered as a directory walk visits it: by components,
/// so `a/b` sorts right after `a` and before `a-b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathKey(pub String);

impl Ord for PathKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The entries of a layer a step plans, by root-relative path.
pub(crate) type Entries = BTreeMap<PathKey, Planned>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sort_as_a_walk_visits_them() {
        let mut keys: Vec<PathKey> = ["a-b", "a/b", "a", "a/b/c", "ab"]
            .into_iter()
            .map(|p| PathKey(p.into()))
            .collect();
        keys.sort();
        let order: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(order, ["a", "a/b", "a/b/c", "a-b", "ab"]);
    }
}
