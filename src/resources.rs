//! The implementing client's online resources, as its presence to the component shows them,
//! and the choice of the one that gets the next request.

use rand::RngExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// How the next request's resource is chosen among the eligible ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Uniformly at random, like the original.
    Random,
    /// In turn.
    RoundRobin,
    /// The one with the fewest outstanding requests.
    LeastPending,
    /// The one this requester had last, while it stays online; random at first.
    Sticky,
}

impl Strategy {
    /// Parses the `client_proxy_strategy` option value.
    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "random" => Some(Strategy::Random),
            "round_robin" => Some(Strategy::RoundRobin),
            "least_pending" => Some(Strategy::LeastPending),
            "sticky" => Some(Strategy::Sticky),
            _ => None,
        }
    }
}

/// Which requests a resource may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Eligible, priority >= 0: gets requests.
    Active,
    /// Eligible, negative priority: gets requests only while no active resource is online.
    Draining,
    /// Its name matches none of `client_proxy_resources`: never gets requests.
    Ineligible,
}

/// One online resource of the target account.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The resourcepart, as Prosody prepped it (shared with the pending table).
    pub name: Arc<str>,
    /// Presence priority (RFC 6121: -128..127).
    pub priority: i32,
    /// Which requests it may get.
    pub pool: Pool,
    /// Requests it holds now.
    pub pending: u32,
    /// When it was last given a request (a counter): ties in `LeastPending` go to the
    /// one that waited longest, so a lightly loaded service still rotates.
    stamp: u64,
    /// Position in its pool's dense list.
    slot: usize,
}

/// Most requesters remembered by the sticky strategy; past it the memory starts over.
const STICKY_CAPACITY: usize = 100_000;

/// Online resources with O(1) add, remove and random or round-robin choice, and
/// O(log n) least-pending choice.
///
/// Each pool is a dense list (swap-remove keeps it dense): the original used a Lua array
/// with holes, and lost half its requests once a resource left.
pub struct ResourceSet {
    strategy: Strategy,
    all: HashMap<Arc<str>, Resource>,
    active: Vec<Arc<str>>,
    draining: Vec<Arc<str>>,
    /// (pending, stamp, name) per pool, kept only for `LeastPending`.
    least: [BTreeSet<(u32, u64, Arc<str>)>; 2],
    clock: u64,
    cursor: usize,
    sticky: HashMap<String, Arc<str>>,
}

impl Default for ResourceSet {
    fn default() -> Self {
        Self::new(Strategy::Random)
    }
}

impl ResourceSet {
    /// An empty set choosing by `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        ResourceSet {
            strategy,
            all: HashMap::new(),
            active: Vec::new(),
            draining: Vec::new(),
            least: [BTreeSet::new(), BTreeSet::new()],
            clock: 0,
            cursor: 0,
            sticky: HashMap::new(),
        }
    }

    /// Changes the strategy (a reload), keeping who is online and what they hold.
    pub fn set_strategy(&mut self, strategy: Strategy) {
        if strategy == self.strategy {
            return;
        }
        self.strategy = strategy;
        self.sticky.clear();
        self.least = [BTreeSet::new(), BTreeSet::new()];
        if strategy == Strategy::LeastPending {
            for r in self.all.values() {
                if let Some(i) = pool_index(r.pool) {
                    self.least[i].insert(r.least_key());
                }
            }
        }
    }

    /// Adds a resource or updates it; true when it was not online before.
    pub fn upsert(&mut self, name: &str, priority: i32, eligible: bool) -> bool {
        let pool = match (eligible, priority >= 0) {
            (false, _) => Pool::Ineligible,
            (true, true) => Pool::Active,
            (true, false) => Pool::Draining,
        };
        if let Some(r) = self.all.get_mut(name) {
            if r.pool == pool {
                r.priority = priority;
                return false;
            }
        }
        let (name, pending, stamp, new) = match self.detach(name) {
            Some(r) => (r.name, r.pending, r.stamp, false),
            None => (Arc::from(name), 0, 0, true),
        };
        let slot = match pool {
            Pool::Active => push(&mut self.active, &name),
            Pool::Draining => push(&mut self.draining, &name),
            Pool::Ineligible => 0,
        };
        let resource = Resource {
            name: name.clone(),
            priority,
            pool,
            pending,
            stamp,
            slot,
        };
        if self.strategy == Strategy::LeastPending {
            if let Some(i) = pool_index(pool) {
                self.least[i].insert(resource.least_key());
            }
        }
        self.all.insert(name, resource);
        new
    }

    /// Removes a resource; true when it was online.
    pub fn remove(&mut self, name: &str) -> bool {
        self.detach(name).is_some()
    }

    /// Forgets every resource (the target revoked the subscription or errored).
    pub fn clear(&mut self) {
        self.all.clear();
        self.active.clear();
        self.draining.clear();
        self.least = [BTreeSet::new(), BTreeSet::new()];
        self.sticky.clear();
    }

    /// Whether this resource is online.
    pub fn contains(&self, name: &str) -> bool {
        self.all.contains_key(name)
    }

    /// The shared name of an online resource.
    pub fn name_of(&self, name: &str) -> Option<Arc<str>> {
        self.all.get_key_value(name).map(|(k, _)| k.clone())
    }

    /// Number of online resources, eligible or not.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// True when no resource is online.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Number of online resources that may get requests.
    pub fn eligible(&self) -> usize {
        self.active.len() + self.draining.len()
    }

    /// The online resources, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.all.values()
    }

    /// Counts a request the resource now holds.
    pub fn hold(&mut self, name: &str) {
        self.clock += 1;
        let clock = self.clock;
        self.adjust(name, 1, Some(clock));
    }

    /// Counts a request the resource no longer holds.
    pub fn release(&mut self, name: &str) {
        self.adjust(name, -1, None);
    }

    /// The resource for the next request of `requester`, by the strategy, among the active
    /// resources or, while none is online, the draining ones; `except` is skipped (a retry).
    pub fn choose<R: rand::Rng>(
        &mut self,
        rng: &mut R,
        requester: &str,
        except: Option<&str>,
    ) -> Option<Arc<str>> {
        self.choose_by(self.strategy, rng, requester, except)
    }

    /// Like `choose`, by the given strategy (messages are always sticky).
    pub fn choose_by<R: rand::Rng>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
        requester: &str,
        except: Option<&str>,
    ) -> Option<Arc<str>> {
        let skip = |list: &Vec<Arc<str>>| except.is_some_and(|e| list.iter().any(|n| &**n == e));
        let usable = |list: &Vec<Arc<str>>| list.len() > usize::from(skip(list));
        let pool = if usable(&self.active) {
            0
        } else if usable(&self.draining) {
            1
        } else {
            return None;
        };
        let chosen = match strategy {
            Strategy::Random => self.pick_random(pool, rng, except),
            Strategy::RoundRobin => self.pick_next(pool, except),
            Strategy::LeastPending if self.strategy != Strategy::LeastPending => {
                self.pick_random(pool, rng, except)
            }
            Strategy::LeastPending => self.least[pool]
                .iter()
                .map(|(_, _, n)| n)
                .find(|n| Some(&***n) != except)
                .cloned(),
            Strategy::Sticky => {
                let kept = self.sticky.get(requester).filter(|name| {
                    Some(&***name) != except
                        && self.all.get(&***name).and_then(|r| pool_index(r.pool)) == Some(pool)
                });
                match kept {
                    Some(name) => Some(name.clone()),
                    None => {
                        let name = self.pick_random(pool, rng, except);
                        if let Some(name) = &name {
                            if self.sticky.len() >= STICKY_CAPACITY {
                                self.sticky.clear();
                            }
                            self.sticky.insert(requester.to_owned(), name.clone());
                        }
                        name
                    }
                }
            }
        };
        chosen
    }

    fn list(&self, pool: usize) -> &Vec<Arc<str>> {
        if pool == 0 {
            &self.active
        } else {
            &self.draining
        }
    }

    fn pick_random<R: rand::Rng>(
        &self,
        pool: usize,
        rng: &mut R,
        except: Option<&str>,
    ) -> Option<Arc<str>> {
        let list = self.list(pool);
        let skip = except
            .and_then(|e| self.all.get(e))
            .filter(|r| pool_index(r.pool) == Some(pool));
        let n = list.len() - usize::from(skip.is_some());
        if n == 0 {
            return None;
        }
        let mut i = rng.random_range(0..n);
        if let Some(s) = skip {
            if i >= s.slot {
                i += 1;
            }
        }
        Some(list[i].clone())
    }

    fn pick_next(&mut self, pool: usize, except: Option<&str>) -> Option<Arc<str>> {
        for _ in 0..2 {
            let i = self.cursor % self.list(pool).len();
            self.cursor = self.cursor.wrapping_add(1);
            let name = &self.list(pool)[i];
            if Some(&**name) != except {
                return Some(name.clone());
            }
        }
        None
    }

    fn adjust(&mut self, name: &str, delta: i32, stamp: Option<u64>) {
        let Some(r) = self.all.get_mut(name) else {
            return;
        };
        let before = r.least_key();
        r.pending = r.pending.saturating_add_signed(delta);
        r.stamp = stamp.unwrap_or(r.stamp);
        if self.strategy == Strategy::LeastPending {
            if let Some(i) = pool_index(r.pool) {
                self.least[i].remove(&before);
                self.least[i].insert(r.least_key());
            }
        }
    }

    fn detach(&mut self, name: &str) -> Option<Resource> {
        let r = self.all.remove(name)?;
        let list = match r.pool {
            Pool::Active => Some(&mut self.active),
            Pool::Draining => Some(&mut self.draining),
            Pool::Ineligible => None,
        };
        if let Some(list) = list {
            list.swap_remove(r.slot);
            if let Some(moved) = list.get(r.slot) {
                if let Some(m) = self.all.get_mut(&**moved) {
                    m.slot = r.slot;
                }
            }
        }
        if let Some(i) = pool_index(r.pool) {
            self.least[i].remove(&r.least_key());
        }
        Some(r)
    }
}

impl Resource {
    fn least_key(&self) -> (u32, u64, Arc<str>) {
        (self.pending, self.stamp, self.name.clone())
    }
}

fn push(list: &mut Vec<Arc<str>>, name: &Arc<str>) -> usize {
    list.push(name.clone());
    list.len() - 1
}

fn pool_index(pool: Pool) -> Option<usize> {
    match pool {
        Pool::Active => Some(0),
        Pool::Draining => Some(1),
        Pool::Ineligible => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn rng() -> rand::rngs::SmallRng {
        rand::rngs::SmallRng::seed_from_u64(7)
    }

    fn set(strategy: Strategy, names: &[&str]) -> ResourceSet {
        let mut s = ResourceSet::new(strategy);
        for n in names {
            s.upsert(n, 0, true);
        }
        s
    }

    fn picks(s: &mut ResourceSet, requester: &str, n: usize) -> Vec<String> {
        let mut r = rng();
        (0..n)
            .map(|_| s.choose(&mut r, requester, None).unwrap().to_string())
            .collect()
    }

    #[test]
    fn add_update_remove() {
        let mut s = set(Strategy::Random, &["a"]);
        assert!(s.upsert("b", 5, true));
        assert!(!s.upsert("a", 3, true), "update, not a second copy");
        assert_eq!(s.len(), 2);
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert!(s.contains("b") && !s.contains("a"));
        assert_eq!(s.iter().next().unwrap().priority, 5);
    }

    #[test]
    fn removal_leaves_no_hole_and_readding_works() {
        let mut s = set(Strategy::Random, &["a", "b", "c"]);
        s.remove("a");
        assert!(picks(&mut s, "u", 200).iter().all(|r| r == "b" || r == "c"));
        s.upsert("a", 0, true);
        let seen: HashSet<_> = picks(&mut s, "u", 200).into_iter().collect();
        assert_eq!(seen.len(), 3, "every online resource is chosen again");
    }

    #[test]
    fn empty_set_chooses_nothing_and_except_skips() {
        let mut s = ResourceSet::new(Strategy::Random);
        let mut r = rng();
        assert_eq!(s.choose(&mut r, "u", None), None);
        s.upsert("a", 0, true);
        assert_eq!(s.choose(&mut r, "u", Some("a")), None);
        assert_eq!(s.choose(&mut r, "u", Some("zz")).as_deref(), Some("a"));
        s.upsert("b", 0, true);
        for _ in 0..50 {
            assert_eq!(s.choose(&mut r, "u", Some("a")).as_deref(), Some("b"));
        }
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn round_robin_takes_turns() {
        let mut s = set(Strategy::RoundRobin, &["a", "b", "c"]);
        let p = picks(&mut s, "u", 6);
        assert_eq!(p[0..3], p[3..6]);
        assert_eq!(p[0..3].iter().collect::<HashSet<_>>().len(), 3);
    }

    #[test]
    fn least_pending_picks_the_least_loaded() {
        let mut s = set(Strategy::LeastPending, &["a", "b", "c"]);
        let mut r = rng();
        for _ in 0..9 {
            let name = s.choose(&mut r, "u", None).unwrap();
            s.hold(&name);
        }
        assert!(s.iter().all(|r| r.pending == 3), "spread evenly");
        s.release("b");
        assert_eq!(s.choose(&mut r, "u", None).as_deref(), Some("b"));
        s.upsert("d", 0, true);
        assert_eq!(
            s.choose(&mut r, "u", None).as_deref(),
            Some("d"),
            "a newcomer holds nothing"
        );
    }

    #[test]
    fn least_pending_ties_rotate() {
        let mut s = set(Strategy::LeastPending, &["a", "b", "c"]);
        let mut r = rng();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let name = s.choose(&mut r, "u", None).unwrap();
            s.hold(&name);
            s.release(&name);
            seen.push(name.to_string());
        }
        assert_eq!(seen[0..3], seen[3..6], "answered at once: a, b, c in turn");
        assert_eq!(seen[0..3].iter().collect::<HashSet<_>>().len(), 3);
    }

    #[test]
    fn least_pending_survives_a_strategy_change() {
        let mut s = set(Strategy::Random, &["a", "b"]);
        s.hold("a");
        s.set_strategy(Strategy::LeastPending);
        assert_eq!(s.choose(&mut rng(), "u", None).as_deref(), Some("b"));
    }

    #[test]
    fn sticky_keeps_a_requester_on_its_resource_while_online() {
        let mut s = set(Strategy::Sticky, &["a", "b", "c", "d"]);
        let first = picks(&mut s, "u", 1)[0].clone();
        assert!(picks(&mut s, "u", 20).iter().all(|r| *r == first));
        s.remove(&first);
        let second = picks(&mut s, "u", 1)[0].clone();
        assert_ne!(second, first);
        assert!(picks(&mut s, "u", 20).iter().all(|r| *r == second));
        let mut r = rng();
        let others: HashSet<_> = (0..40)
            .map(|i| s.choose(&mut r, &format!("r{i}"), None).unwrap())
            .collect();
        assert!(others.len() > 1, "different requesters spread");
    }

    #[test]
    fn negative_priority_drains() {
        let mut s = ResourceSet::new(Strategy::Random);
        s.upsert("old", -1, true);
        s.upsert("new", 0, true);
        assert!(picks(&mut s, "u", 50).iter().all(|r| r == "new"));
        s.remove("new");
        assert!(
            picks(&mut s, "u", 5).iter().all(|r| r == "old"),
            "draining still serves alone"
        );
        s.upsert("old", 1, true);
        s.upsert("new", 0, true);
        assert_eq!(
            picks(&mut s, "u", 100).iter().collect::<HashSet<_>>().len(),
            2
        );
    }

    #[test]
    fn ineligible_resources_are_listed_but_never_chosen() {
        let mut s = ResourceSet::new(Strategy::Random);
        s.upsert("phone", 10, false);
        assert_eq!(s.choose(&mut rng(), "u", None), None);
        assert_eq!((s.len(), s.eligible()), (1, 0));
        s.upsert("focus", 0, true);
        assert!(picks(&mut s, "u", 30).iter().all(|r| r == "focus"));
    }

    #[test]
    fn pool_changes_keep_lists_dense() {
        let mut s = set(Strategy::LeastPending, &["a", "b", "c"]);
        s.hold("a");
        s.upsert("a", -5, true);
        s.upsert("b", -5, true);
        assert_eq!(s.choose(&mut rng(), "u", None).as_deref(), Some("c"));
        s.remove("c");
        assert_eq!(
            s.choose(&mut rng(), "u", None).as_deref(),
            Some("b"),
            "least loaded of the draining"
        );
        assert_eq!(s.iter().find(|r| &*r.name == "a").unwrap().pending, 1);
    }
}
