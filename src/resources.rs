//! The implementing client's online resources, as its presence to the component shows them,
//! and the choice of the one that gets the next request.

use rand::RngExt;
use rustc_hash::FxHashMap;
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

/// Which requests a resource may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Eligible, priority >= 0: gets requests.
    Active,
    /// Eligible, negative priority: gets requests only while no active resource is online.
    Draining,
    /// The shim found it not eligible (its name matches none of `client_proxy_resources`,
    /// or its latest presence lacks a `client_proxy_require_caps` node): never gets requests.
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
    /// Out of rotation until this time (it kept failing), if ejected.
    pub ejected_until: Option<f64>,
    /// Its stream is hibernating (stream management: the connection dropped and the
    /// session waits to be resumed): out of rotation, even as the last one, until it
    /// resumes or goes offline.
    pub hibernating: bool,
    /// Requests in a row it let time out or declined.
    failures: u32,
    /// Ejections since it last answered: each one lasts twice as long as the one before.
    ejections: u32,
    /// When it was last given a request (a counter): ties in `LeastPending` go to the
    /// one that waited longest, so a lightly loaded service still rotates.
    stamp: u64,
    /// Position in its tier's dense list.
    slot: usize,
}

/// When a failing resource leaves the rotation, and for how long.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ejection {
    /// Failures in a row (timeouts, declines) that eject a resource; 0: never.
    pub after: u32,
    /// Seconds of the first ejection; each further one doubles, up to `MAX_EJECTION`.
    pub seconds: f64,
}

/// The longest ejection, in seconds.
pub const MAX_EJECTION: f64 = 600.0;

/// Most requesters remembered by the sticky strategy; past it the memory starts over.
const STICKY_CAPACITY: usize = 100_000;

/// Tiers of eligible resources, in the order they are chosen from: active, draining, and
/// ejected (only while no other eligible resource is online).
const TIERS: usize = 3;
const EJECTED: usize = 2;

/// Online resources with O(1) add, remove and random or round-robin choice, and
/// O(log n) least-pending choice.
///
/// Each tier is a dense list (swap-remove keeps it dense): the original used a Lua array
/// with holes, and lost half its requests once a resource left.
pub struct ResourceSet {
    strategy: Strategy,
    /// Keyed by names only the implementing account's own sessions make: a fast hash
    /// (rustc-hash), which a name chosen to collide could slow; nobody else adds to it.
    all: FxHashMap<Arc<str>, Resource>,
    tiers: [Vec<Arc<str>>; TIERS],
    /// (pending, stamp, name) of the active and draining tiers, kept only for `LeastPending`.
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

fn tier_of(r: &Resource) -> Option<usize> {
    match r.pool {
        Pool::Ineligible => None,
        _ if r.hibernating => None,
        _ if r.ejected_until.is_some() => Some(EJECTED),
        Pool::Active => Some(0),
        Pool::Draining => Some(1),
    }
}

impl ResourceSet {
    /// An empty set choosing by `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        ResourceSet {
            strategy,
            all: FxHashMap::default(),
            tiers: Default::default(),
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
                if let Some(t) = tier_of(r).filter(|&t| t < EJECTED) {
                    self.least[t].insert(r.least_key());
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
        let (mut resource, new) = match self.detach(name) {
            Some(r) => (r, false),
            None => (
                Resource {
                    name: Arc::from(name),
                    priority,
                    pool,
                    pending: 0,
                    ejected_until: None,
                    hibernating: false,
                    failures: 0,
                    ejections: 0,
                    stamp: 0,
                    slot: 0,
                },
                true,
            ),
        };
        resource.priority = priority;
        resource.pool = pool;
        self.attach(resource);
        new
    }

    /// Removes a resource; true when it was online. One that comes back starts clean.
    pub fn remove(&mut self, name: &str) -> bool {
        self.detach(name).is_some()
    }

    /// Forgets every resource (the target revoked the subscription or errored).
    pub fn clear(&mut self) {
        self.all.clear();
        self.tiers = Default::default();
        self.least = [BTreeSet::new(), BTreeSet::new()];
        self.sticky.clear();
    }

    /// Whether this resource is online.
    pub fn contains(&self, name: &str) -> bool {
        self.all.contains_key(name)
    }

    /// Whether this resource is online, eligible and not ejected (active or draining): it
    /// keeps its affinity keys, where an ejected or ineligible one loses them.
    pub fn in_rotation(&self, name: &str) -> bool {
        self.all
            .get(name)
            .and_then(tier_of)
            .is_some_and(|t| t < EJECTED)
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

    /// Number of online resources that may get requests (ejected ones included: they
    /// still get them when nothing better is online; hibernating ones not).
    pub fn eligible(&self) -> usize {
        self.tiers.iter().map(Vec::len).sum()
    }

    /// Number of ejected resources.
    pub fn ejected(&self) -> usize {
        self.tiers[EJECTED].len()
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

    /// The resource answered a request it held: it holds one less, and its failures and
    /// ejections start over (one lookup for both).
    pub fn answered(&mut self, name: &str) {
        if let Some(r) = self.adjust(name, -1, None) {
            r.failures = 0;
            r.ejections = 0;
        }
    }

    /// The resource let a request time out or declined it. Returns the end of its
    /// ejection when this failure ejects it: `policy.after` failures in a row, unless it
    /// is the last eligible resource in rotation (with nothing better, it keeps serving).
    pub fn failed(&mut self, name: &str, now: f64, policy: Ejection) -> Option<f64> {
        let in_rotation = self.tiers[0].len() + self.tiers[1].len();
        let r = self.all.get_mut(name)?;
        r.failures = r.failures.saturating_add(1);
        let tier = tier_of(r)?;
        if policy.after == 0 || r.failures < policy.after || tier == EJECTED || in_rotation <= 1 {
            return None;
        }
        let doubling = 2f64.powi(r.ejections.min(30) as i32);
        let until = now + (policy.seconds * doubling).min(MAX_EJECTION);
        r.ejections += 1;
        r.failures = 0;
        let mut resource = self.detach(name)?;
        resource.ejected_until = Some(until);
        self.attach(resource);
        Some(until)
    }

    /// Its stream hibernates (`true`) or was resumed (`false`): out of every tier while it
    /// hibernates, so that it gets nothing new, not even as the last resort; its count of
    /// failures and its ejection (if any) are kept. True when that changed anything (the
    /// resource is online and was not in that state already).
    pub fn set_hibernating(&mut self, name: &str, hibernating: bool) -> bool {
        if self
            .all
            .get(name)
            .is_none_or(|r| r.hibernating == hibernating)
        {
            return false;
        }
        let Some(mut resource) = self.detach(name) else {
            return false;
        };
        resource.hibernating = hibernating;
        self.attach(resource);
        true
    }

    /// Whether this resource is online and its stream hibernates.
    pub fn is_hibernating(&self, name: &str) -> bool {
        self.all.get(name).is_some_and(|r| r.hibernating)
    }

    /// Requests this resource holds now (0 when it is not online).
    pub fn pending_of(&self, name: &str) -> u32 {
        self.all.get(name).map_or(0, |r| r.pending)
    }

    /// Number of online resources that would be eligible but whose stream hibernates
    /// (O(n): for the status and a request nobody can take).
    pub fn hibernating(&self) -> usize {
        self.all
            .values()
            .filter(|r| r.hibernating && r.pool != Pool::Ineligible)
            .count()
    }

    /// Puts resources whose ejection ended back into rotation; returns their names.
    pub fn readmit(&mut self, now: f64) -> Vec<Arc<str>> {
        let due: Vec<Arc<str>> = self.tiers[EJECTED]
            .iter()
            .filter(|n| {
                self.all
                    .get(&***n)
                    .and_then(|r| r.ejected_until)
                    .is_some_and(|until| until <= now)
            })
            .cloned()
            .collect();
        for name in &due {
            if let Some(mut resource) = self.detach(name) {
                resource.ejected_until = None;
                self.attach(resource);
            }
        }
        due
    }

    /// The resource for the next request keyed `key` (the sticky strategy keeps a key on
    /// one resource), by the strategy, among the active resources or, while none is
    /// online, the draining ones, then the ejected ones; `except` are skipped (a retry).
    pub fn choose<R: rand::Rng>(
        &mut self,
        rng: &mut R,
        key: &str,
        except: &[&str],
    ) -> Option<Arc<str>> {
        self.choose_by(self.strategy, rng, key, except)
    }

    /// Like `choose`, by the given strategy (messages are always sticky).
    pub fn choose_by<R: rand::Rng>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
        key: &str,
        except: &[&str],
    ) -> Option<Arc<str>> {
        let skipped = |tier: usize, all: &FxHashMap<Arc<str>, Resource>| {
            except
                .iter()
                .filter(|e| all.get(**e).and_then(tier_of) == Some(tier))
                .count()
        };
        let tier = (0..TIERS).find(|&t| self.tiers[t].len() > skipped(t, &self.all))?;
        let excluded = |name: &str| except.contains(&name);
        match strategy {
            Strategy::RoundRobin => self.pick_next(tier, &excluded),
            Strategy::LeastPending if self.strategy == Strategy::LeastPending && tier < EJECTED => {
                self.least[tier]
                    .iter()
                    .map(|(_, _, n)| n)
                    .find(|n| !excluded(n))
                    .cloned()
            }
            Strategy::Sticky => {
                let kept = self.sticky.get(key).filter(|name| {
                    !excluded(name) && self.all.get(&***name).and_then(tier_of) == Some(tier)
                });
                if let Some(name) = kept {
                    return Some(name.clone());
                }
                let name = self.pick_random(tier, rng, &excluded)?;
                if self.sticky.len() >= STICKY_CAPACITY {
                    self.sticky.clear();
                }
                self.sticky.insert(key.to_owned(), name.clone());
                Some(name)
            }
            _ => self.pick_random(tier, rng, &excluded),
        }
    }

    fn pick_random<R: rand::Rng>(
        &self,
        tier: usize,
        rng: &mut R,
        excluded: &dyn Fn(&str) -> bool,
    ) -> Option<Arc<str>> {
        let list = &self.tiers[tier];
        if list.iter().all(|n| !excluded(n)) {
            return list.get(rng.random_range(0..list.len())).cloned();
        }
        // A retry: the few resources that already had the request are left out.
        let candidates: Vec<&Arc<str>> = list.iter().filter(|n| !excluded(n)).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[rng.random_range(0..candidates.len())].clone())
    }

    fn pick_next(&mut self, tier: usize, excluded: &dyn Fn(&str) -> bool) -> Option<Arc<str>> {
        let len = self.tiers[tier].len();
        for _ in 0..len {
            let i = self.cursor % len;
            self.cursor = self.cursor.wrapping_add(1);
            let name = &self.tiers[tier][i];
            if !excluded(name) {
                return Some(name.clone());
            }
        }
        None
    }

    /// Changes a resource's count of requests held; returns it, if it is online.
    fn adjust(&mut self, name: &str, delta: i32, stamp: Option<u64>) -> Option<&mut Resource> {
        let r = self.all.get_mut(name)?;
        // Its place in the least-pending order is looked at only under that strategy
        // (the key holds a counted reference to the name: two atomic operations).
        let before = (self.strategy == Strategy::LeastPending).then(|| r.least_key());
        r.pending = r.pending.saturating_add_signed(delta);
        r.stamp = stamp.unwrap_or(r.stamp);
        if let Some(before) = before {
            if let Some(t) = tier_of(r).filter(|&t| t < EJECTED) {
                self.least[t].remove(&before);
                self.least[t].insert(r.least_key());
            }
        }
        Some(r)
    }

    /// Puts a resource into the list of its tier.
    fn attach(&mut self, mut resource: Resource) {
        if let Some(t) = tier_of(&resource) {
            resource.slot = self.tiers[t].len();
            self.tiers[t].push(resource.name.clone());
            if t < EJECTED && self.strategy == Strategy::LeastPending {
                self.least[t].insert(resource.least_key());
            }
        }
        self.all.insert(resource.name.clone(), resource);
    }

    /// Takes a resource out of the set and the list of its tier.
    fn detach(&mut self, name: &str) -> Option<Resource> {
        let r = self.all.remove(name)?;
        if let Some(t) = tier_of(&r) {
            let list = &mut self.tiers[t];
            list.swap_remove(r.slot);
            if let Some(moved) = list.get(r.slot) {
                if let Some(m) = self.all.get_mut(&**moved) {
                    m.slot = r.slot;
                }
            }
            if t < EJECTED {
                self.least[t].remove(&r.least_key());
            }
        }
        Some(r)
    }
}

impl Resource {
    fn least_key(&self) -> (u32, u64, Arc<str>) {
        (self.pending, self.stamp, self.name.clone())
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
            .map(|_| s.choose(&mut r, requester, &[]).unwrap().to_string())
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
        assert_eq!(s.choose(&mut r, "u", &[]), None);
        s.upsert("a", 0, true);
        assert_eq!(s.choose(&mut r, "u", &["a"]), None);
        assert_eq!(s.choose(&mut r, "u", &["zz"]).as_deref(), Some("a"));
        s.upsert("b", 0, true);
        s.upsert("c", 0, true);
        for _ in 0..50 {
            assert_eq!(s.choose(&mut r, "u", &["a", "c"]).as_deref(), Some("b"));
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
            let name = s.choose(&mut r, "u", &[]).unwrap();
            s.hold(&name);
        }
        assert!(s.iter().all(|r| r.pending == 3), "spread evenly");
        s.release("b");
        assert_eq!(s.choose(&mut r, "u", &[]).as_deref(), Some("b"));
        s.upsert("d", 0, true);
        assert_eq!(
            s.choose(&mut r, "u", &[]).as_deref(),
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
            let name = s.choose(&mut r, "u", &[]).unwrap();
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
        assert_eq!(s.choose(&mut rng(), "u", &[]).as_deref(), Some("b"));
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
            .map(|i| s.choose(&mut r, &format!("r{i}"), &[]).unwrap())
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
        assert_eq!(s.choose(&mut rng(), "u", &[]), None);
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
        assert_eq!(s.choose(&mut rng(), "u", &[]).as_deref(), Some("c"));
        s.remove("c");
        assert_eq!(
            s.choose(&mut rng(), "u", &[]).as_deref(),
            Some("b"),
            "least loaded of the draining"
        );
        assert_eq!(s.iter().find(|r| &*r.name == "a").unwrap().pending, 1);
    }

    #[test]
    fn hibernating_resources_are_in_no_tier_and_keep_their_state() {
        let mut s = set(Strategy::LeastPending, &["a", "b"]);
        s.hold("a");
        assert!(s.set_hibernating("a", true));
        assert!(!s.set_hibernating("a", true), "already");
        assert!(!s.set_hibernating("zz", true), "not online");
        assert!(s.is_hibernating("a") && !s.in_rotation("a"));
        assert_eq!(
            (s.eligible(), s.hibernating(), s.pending_of("a")),
            (1, 1, 1)
        );
        assert!(picks(&mut s, "u", 20).iter().all(|r| r == "b"));
        s.remove("b");
        assert_eq!(
            s.choose(&mut rng(), "u", &[]),
            None,
            "not even as the last one"
        );
        s.upsert("a", 5, true);
        assert!(s.is_hibernating("a"), "a presence does not wake it");
        assert!(s.set_hibernating("a", false));
        assert_eq!(s.choose(&mut rng(), "u", &[]).as_deref(), Some("a"));
        assert_eq!(s.iter().next().unwrap().priority, 5);
    }
}
