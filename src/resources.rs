//! The implementing client's online resources, as its presence to the component shows them.

use rand::RngExt;
use std::collections::HashMap;

/// One online resource of the target account.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The resourcepart, as Prosody prepped it.
    pub name: String,
    /// Presence priority (RFC 6121: -128..127); negative means draining.
    pub priority: i32,
}

/// Online resources with O(1) add, remove and uniform random choice.
///
/// A dense vector plus an index (swap-remove keeps it dense): the original used a Lua
/// array with holes, and lost half its requests once a resource left.
#[derive(Default)]
pub struct ResourceSet {
    list: Vec<Resource>,
    index: HashMap<String, usize>,
}

impl ResourceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resource or updates its priority; true when it was not online before.
    pub fn upsert(&mut self, name: &str, priority: i32) -> bool {
        if let Some(&i) = self.index.get(name) {
            self.list[i].priority = priority;
            return false;
        }
        self.index.insert(name.to_owned(), self.list.len());
        self.list.push(Resource {
            name: name.to_owned(),
            priority,
        });
        true
    }

    /// Removes a resource; true when it was online.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.index.remove(name) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        true
    }

    /// Forgets every resource (the target revoked the subscription or errored).
    pub fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
    }

    /// Whether this resource is online.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Number of online resources.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when no resource is online.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The online resources, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.list.iter()
    }

    /// A uniformly random online resource, like the original; `except` is skipped
    /// when another one is online (used to retry elsewhere).
    pub fn choose_random<R: rand::Rng>(&self, rng: &mut R, except: Option<&str>) -> Option<&str> {
        let skip = except.and_then(|name| self.index.get(name).copied());
        let n = self.list.len() - usize::from(skip.is_some());
        if n == 0 {
            return None;
        }
        let mut i = rng.random_range(0..n);
        if let Some(s) = skip {
            if i >= s {
                i += 1;
            }
        }
        Some(&self.list[i].name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::SmallRng {
        rand::rngs::SmallRng::seed_from_u64(7)
    }

    #[test]
    fn add_update_remove() {
        let mut set = ResourceSet::new();
        assert!(set.upsert("a", 0));
        assert!(set.upsert("b", 5));
        assert!(!set.upsert("a", 3), "update, not a second copy");
        assert_eq!(set.len(), 2);
        assert!(set.remove("a"));
        assert!(!set.remove("a"));
        assert!(set.contains("b") && !set.contains("a"));
        assert_eq!(set.iter().next().unwrap().priority, 5);
    }

    #[test]
    fn removal_leaves_no_hole_and_readding_works() {
        let mut set = ResourceSet::new();
        for r in ["a", "b", "c"] {
            set.upsert(r, 0);
        }
        set.remove("a");
        let mut rng = rng();
        for _ in 0..200 {
            let r = set.choose_random(&mut rng, None).unwrap();
            assert!(r == "b" || r == "c");
        }
        set.upsert("a", 0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(set.choose_random(&mut rng, None).unwrap().to_owned());
        }
        assert_eq!(seen.len(), 3, "every online resource is chosen again");
    }

    #[test]
    fn empty_set_chooses_nothing_and_except_skips() {
        let mut set = ResourceSet::new();
        let mut rng = rng();
        assert_eq!(set.choose_random(&mut rng, None), None);
        set.upsert("a", 0);
        assert_eq!(set.choose_random(&mut rng, Some("a")), None);
        assert_eq!(set.choose_random(&mut rng, Some("zz")), Some("a"));
        set.upsert("b", 0);
        for _ in 0..50 {
            assert_eq!(set.choose_random(&mut rng, Some("a")), Some("b"));
        }
        set.clear();
        assert!(set.is_empty());
    }
}
