//! Affinity by request content (`client_proxy_affinity`): requests that carry the same key
//! (the value of a payload attribute, such as a Jitsi room) go to one resource, the one
//! that holds the state they share.
//!
//! [`Rules`] say which attribute is a key; [`KeyTable`] remembers which resource has each
//! key. The table does not choose: the router chooses a resource for a key it does not
//! hold (by its strategy) and tells the table. A key stays with its resource until the
//! router says that resource is lost (offline, ejected, no longer eligible): then every
//! key it had is unassigned at once, in O(1) (its keys carry the resource's epoch, which
//! dies with it), and each is assigned anew at its next request. A resource that comes
//! online takes no existing key (hashing would move a share of the rooms, whose state
//! their resource keeps in memory). Keys are forgotten after `idle` seconds without a
//! request, and the least recently used go first when the table is full. The table keeps
//! a hash and a second of last use per key and no order of use: a request touches one
//! entry, and expiry and the bound sweep the table now and then instead.

use crate::siphash::SipKey;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

/// One rule of `client_proxy_affinity`, `{namespace}element@attribute`: a get/set whose
/// payload element is `element` in `namespace` and carries `attribute` has that
/// attribute's value as its key. Kept apart so that the shim, which has the stanza, can
/// match it (the core never parses XML).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The payload element's namespace (`http://jitsi.org/protocol/focus`).
    pub namespace: String,
    /// The payload element's name (`conference`).
    pub element: String,
    /// The attribute whose value is the key (`room`).
    pub attribute: String,
}

/// The rules of `client_proxy_affinity`, in the order written (the first that matches a
/// request gives its key). Empty: no affinity, every request is routed by the strategy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// Whether `name` can be an XML element or attribute name as a rule writes it: no
/// space, no markup, no character of the rule's own syntax.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "{}@<>&'\"/=".contains(c))
}

impl Rules {
    /// Parses the option's entries; the error says which entry is wrong and why (the
    /// config names the option). The same rule twice is an error: it is a typo.
    pub fn parse(entries: &[String]) -> Result<Rules, String> {
        let mut rules = Vec::with_capacity(entries.len());
        for entry in entries {
            let rule = Rule::parse(entry)?;
            if rules.contains(&rule) {
                return Err(format!("{entry:?} is listed twice"));
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    /// The rules, in order: what the shim matches payloads against.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rule: affinity is off, a key handed to the router is ignored.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The key of a request whose payload matched rule `rule` (0-based) with attribute
    /// value `value`: the value itself with one rule (no copy), else the rule's index, a
    /// colon and the value, so that two rules' equal values are two keys (the digits end
    /// at the first non-digit, so no two pairs give one key). None for a rule there is not.
    pub fn key<'a>(&self, rule: usize, value: &'a str) -> Option<Cow<'a, str>> {
        match self.rules.len() {
            n if rule >= n => None,
            1 => Some(Cow::Borrowed(value)),
            _ => Some(Cow::Owned(format!("{rule}:{value}"))),
        }
    }
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, String> {
        let malformed = || {
            format!("{entry:?} is not {{namespace}}element@attribute (e.g. \"{{http://jitsi.org/protocol/focus}}conference@room\")")
        };
        let rest = entry.strip_prefix('{').ok_or_else(malformed)?;
        let (namespace, rest) = rest.split_once('}').ok_or_else(malformed)?;
        let (element, attribute) = rest.split_once('@').ok_or_else(malformed)?;
        if namespace.is_empty()
            || namespace
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            || !is_name(element)
            || !is_name(attribute)
        {
            return Err(malformed());
        }
        Ok(Rule {
            namespace: namespace.to_owned(),
            element: element.to_owned(),
            attribute: attribute.to_owned(),
        })
    }
}

/// Longest key kept, in bytes: a room is a JID (at most 3071 bytes); a longer value is
/// routed without affinity rather than hashed at every request.
pub const MAX_KEY: usize = 3071;

/// How many keys the table keeps at most (a Jitsi deployment's rooms, many times over):
/// past that, the least recently used go first.
pub const MAX_KEYS: usize = 100_000;

/// A key as the table knows it: its 64-bit hash, randomized per table. The table keeps
/// no key's text, so two keys whose hashes agree would be one key (two rooms on one
/// resource: harmless, and rare enough to ignore). A request keeps it so that a retry
/// moves the key along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef(NonZeroU64);

impl KeyRef {
    /// As a number (the pending table keeps it without knowing what it is).
    pub fn to_bits(self) -> NonZeroU64 {
        self.0
    }

    /// Back from `to_bits`.
    pub fn from_bits(bits: NonZeroU64) -> KeyRef {
        KeyRef(bits)
    }
}

/// One key: 16 bytes, four to a cache line, so that a lookup in a large table reads one
/// line.
#[derive(Clone, Copy, Default)]
struct Entry {
    /// The key's hash; 0 while the entry is free.
    hash: u64,
    /// Last request, in whole seconds of the router's clock.
    last: u32,
    /// The life of the resource it was given to (it has the key while that life lasts);
    /// 0: never assigned.
    epoch: u32,
}

/// A resource that has keys, in one life (from its first key until it is lost).
struct Holder {
    name: Arc<str>,
    /// Keys it has now.
    keys: u32,
}

/// Which resource has each affinity key: an open-addressing table of 16-byte entries
/// (linear probing, at most 4/5 full) with no list and no pointer to follow. A lookup is
/// one hash and, in a large table, one cache miss; the loss of a resource is O(1) (its
/// life ends, and its keys' epochs no longer name a holder). Expiry and the bound sweep
/// the table: a tick sweeps only when the oldest key is due, and a full table forgets its
/// least recently used 1/64 at once, so that no request pays for order of use.
pub struct KeyTable {
    /// Entries by hash; a power of two long (or empty).
    entries: Box<[Entry]>,
    len: usize,
    /// Keys come from users: SipHash under a secret key.
    hasher: SipKey,
    /// Holders by their life's epoch.
    lives: FxHashMap<u32, Holder>,
    /// Epochs by holder name. Names only the implementing account's sessions make: a
    /// fast hash.
    by_name: FxHashMap<Arc<str>, u32>,
    last_epoch: u32,
    /// No key was last used before this second (a bound, exact after a sweep).
    oldest: u32,
    moves: u64,
    evicted: u64,
    idle: f64,
    max_keys: usize,
}

/// A time in whole seconds as an entry keeps it (saturating: a clock before 0 is 0).
fn second(now: f64) -> u32 {
    now as u32
}

/// A key is due when more than `idle` whole seconds passed since its last request.
fn due(last: u32, idle: f64, now: u32) -> bool {
    f64::from(now.saturating_sub(last)) > idle
}

impl KeyTable {
    /// An empty table forgetting keys after `idle` seconds without a request, with at
    /// most `max_keys` keys.
    pub fn new(idle: f64, max_keys: usize) -> KeyTable {
        KeyTable {
            entries: Box::new([]),
            len: 0,
            hasher: SipKey::random(),
            lives: FxHashMap::default(),
            by_name: FxHashMap::default(),
            last_epoch: 0,
            oldest: u32::MAX,
            moves: 0,
            evicted: 0,
            idle,
            max_keys: max_keys.max(1),
        }
    }

    /// `client_proxy_affinity_idle` changed (a reload): the keys stay.
    pub fn set_idle(&mut self, idle: f64) {
        self.idle = idle;
    }

    /// Forgets every key (the rules changed: the old keys mean something else).
    pub fn clear(&mut self) {
        let (idle, max_keys, moves, evicted) = (self.idle, self.max_keys, self.moves, self.evicted);
        *self = KeyTable::new(idle, max_keys);
        self.moves = moves;
        self.evicted = evicted;
    }

    /// The key for a request's key text; None for a text the table does not keep (empty,
    /// or longer than `MAX_KEY`): such a request is routed as if it had none.
    pub fn key(&self, text: &str) -> Option<KeyRef> {
        if text.is_empty() || text.len() > MAX_KEY {
            return None;
        }
        let hash = self.hasher.hash(text.as_bytes());
        Some(KeyRef(NonZeroU64::new(hash).unwrap_or(NonZeroU64::MIN)))
    }

    /// The resource that has `key`, which was requested at `now`: the key is found
    /// (and marked used) or added unassigned.
    pub fn entry(&mut self, key: KeyRef, now: f64) -> Option<&Arc<str>> {
        let now = second(now);
        let i = match self.find(key.0.get()) {
            Ok(i) => i,
            Err(_) => {
                self.make_room();
                let Err(i) = self.find(key.0.get()) else {
                    unreachable!("make_room adds no key")
                };
                self.entries[i].hash = key.0.get();
                self.len += 1;
                i
            }
        };
        let e = &mut self.entries[i];
        e.last = now;
        self.oldest = self.oldest.min(now);
        let epoch = e.epoch;
        self.holder_of(epoch)
    }

    /// The resource that has the key, if any (a retry's question: does the key already
    /// live elsewhere?).
    pub fn holder(&self, key: KeyRef) -> Option<&Arc<str>> {
        let i = self.find(key.0.get()).ok()?;
        self.holder_of(self.entries[i].epoch)
    }

    /// The key now belongs to `resource`, the router's choice: a new key's first
    /// resource, or a move (its resource was lost, or a retry took its request
    /// elsewhere). Nothing when the key was forgotten meanwhile.
    pub fn assign(&mut self, key: KeyRef, resource: &Arc<str>) {
        let Ok(i) = self.find(key.0.get()) else {
            return;
        };
        let old = self.entries[i].epoch;
        if let Some(holder) = self.lives.get_mut(&old) {
            if *holder.name == **resource {
                return;
            }
            holder.keys -= 1;
        }
        if old != 0 {
            self.moves += 1;
        }
        let epoch = self.epoch_of(resource);
        if let Some(holder) = self.lives.get_mut(&epoch) {
            holder.keys += 1;
        }
        self.entries[i].epoch = epoch;
    }

    /// `resource` went offline, was ejected or is no longer eligible: none of its keys is
    /// its any more (each is assigned anew at its next request). O(1): its life ends.
    /// Returns how many keys it had.
    pub fn lost(&mut self, resource: &str) -> usize {
        let Some(epoch) = self.by_name.remove(resource) else {
            return 0;
        };
        self.lives.remove(&epoch).map_or(0, |h| h.keys as usize)
    }

    /// Every resource is lost (the target revoked the subscription, or a new target).
    pub fn lost_all(&mut self) {
        self.lives.clear();
        self.by_name.clear();
    }

    /// Forgets the keys without a request for more than `idle` seconds (whole seconds
    /// of the clock) at `now`; returns how many. Sweeps the table only when its oldest key
    /// is due.
    pub fn expire(&mut self, now: f64) -> usize {
        let now = second(now);
        if self.len == 0 || !due(self.oldest, self.idle, now) {
            return 0;
        }
        let idle = self.idle;
        self.sweep(|e| due(e.last, idle, now), usize::MAX)
    }

    /// Keys kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No key kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys `resource` has (the status lists them per resource).
    pub fn keys_of(&self, resource: &str) -> usize {
        self.by_name
            .get(resource)
            .and_then(|epoch| self.lives.get(epoch))
            .map_or(0, |h| h.keys as usize)
    }

    /// Keys that no resource has: their resource was lost, or no resource could take them
    /// yet. Each is assigned at its next request.
    pub fn unassigned(&self) -> usize {
        self.len - self.lives.values().map(|h| h.keys as usize).sum::<usize>()
    }

    /// Keys given a resource other than their first (their resource was lost, or a retry
    /// took them along): what an operator watches to see rooms move.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Keys forgotten to stay within the bound while they were not idle for `idle` yet.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask()
    }

    /// Where `hash` is (Ok), or the free entry where it would go (Err); Err(0) in a table
    /// with no entries.
    fn find(&self, hash: u64) -> Result<usize, usize> {
        if self.entries.is_empty() {
            return Err(0);
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            match self.entries[i].hash {
                0 => return Err(i),
                h if h == hash => return Ok(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn holder_of(&self, epoch: u32) -> Option<&Arc<str>> {
        self.lives.get(&epoch).map(|h| &h.name)
    }

    /// The epoch of an online resource's life, begun at its first key.
    fn epoch_of(&mut self, resource: &Arc<str>) -> u32 {
        if let Some(&epoch) = self.by_name.get(&**resource) {
            return epoch;
        }
        // Never 0, never reused while a key may still carry it (4 billion lives).
        self.last_epoch = self.last_epoch.checked_add(1).unwrap_or(1);
        let epoch = self.last_epoch;
        self.lives.insert(
            epoch,
            Holder {
                name: resource.clone(),
                keys: 0,
            },
        );
        self.by_name.insert(resource.clone(), epoch);
        epoch
    }

    /// Room for one more key: forgets the least recently used 1/64 of the bound when the
    /// table is full, and doubles the entries past 4/5 full.
    fn make_room(&mut self) {
        if self.len >= self.max_keys {
            let batch = (self.max_keys / 64).max(1);
            let mut lasts: Vec<u32> = self.live().map(|e| e.last).collect();
            let (_, &mut threshold, _) = lasts.select_nth_unstable(batch - 1);
            let below = lasts.iter().filter(|&&l| l < threshold).count();
            drop(lasts);
            // Every key older than the threshold, and as many of its second as the batch
            // still takes.
            let mut ties = batch - below;
            let removed = self.sweep(
                |e| {
                    e.last < threshold
                        || (e.last == threshold && ties > 0 && {
                            ties -= 1;
                            true
                        })
                },
                batch,
            );
            self.evicted += removed as u64;
        }
        if (self.len + 1) * 5 > self.entries.len() * 4 {
            self.grow();
        }
    }

    fn live(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.hash != 0)
    }

    /// Twice the entries (at least 16), each key in its new place.
    fn grow(&mut self) {
        let size = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, vec![Entry::default(); size].into());
        for e in old.iter().filter(|e| e.hash != 0) {
            let Err(i) = self.find(e.hash) else {
                unreachable!("each hash once")
            };
            self.entries[i] = *e;
        }
    }

    /// Forgets the keys `forget` picks (at most `limit`), in one pass; counts them and
    /// sets `oldest` to the oldest key left.
    fn sweep(&mut self, mut forget: impl FnMut(&Entry) -> bool, limit: usize) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let e = self.entries[i];
            if e.hash != 0 && removed < limit && forget(&e) {
                self.remove(i);
                removed += 1;
                // Another key may have moved into entry i: look at it again.
            } else {
                i += 1;
            }
        }
        self.oldest = self.live().map(|e| e.last).min().unwrap_or(u32::MAX);
        removed
    }

    /// Frees entry `i`, moving back the keys after it that belong before it (a lookup stops
    /// at the first free entry).
    fn remove(&mut self, i: usize) {
        let epoch = self.entries[i].epoch;
        if let Some(holder) = self.lives.get_mut(&epoch) {
            holder.keys -= 1;
        }
        self.len -= 1;
        let mask = self.mask();
        let (mut free, mut j) = (i, i);
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e.hash == 0 {
                break;
            }
            // Distance from its home to j, and from free to j: it may fill the free entry
            // when that is no nearer than its home.
            let home = self.home(e.hash);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(free) & mask) {
                self.entries[free] = e;
                free = j;
            }
        }
        self.entries[free] = Entry::default();
    }

    /// Checks every count against the entries (tests only: a full scan).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert_eq!(self.live().count(), self.len);
        assert!(self.len <= self.max_keys && self.len * 5 <= self.entries.len() * 4);
        let mut per_life: std::collections::HashMap<u32, u32> = Default::default();
        for (i, e) in self.entries.iter().enumerate().filter(|(_, e)| e.hash != 0) {
            assert_eq!(self.find(e.hash), Ok(i), "entry {i} is found where it is");
            assert!(e.last >= self.oldest);
            if self.lives.contains_key(&e.epoch) {
                *per_life.entry(e.epoch).or_default() += 1;
            }
        }
        for (epoch, holder) in &self.lives {
            assert_eq!(holder.keys, per_life.get(epoch).copied().unwrap_or(0));
            assert_eq!(self.by_name.get(&holder.name), Some(epoch));
        }
        assert_eq!(self.by_name.len(), self.lives.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn an_entry_is_16_bytes_and_100000_keys_take_2_mb() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        let mut t = KeyTable::new(1e9, MAX_KEYS);
        for i in 0..MAX_KEYS {
            request(
                &mut t,
                &format!("room{i}@conference.meet.example.org"),
                "a",
                0.0,
            );
        }
        assert_eq!(
            (t.len(), t.keys_of("a"), t.evicted()),
            (MAX_KEYS, MAX_KEYS, 0)
        );
        assert_eq!(t.entries.len() * std::mem::size_of::<Entry>(), 2 << 20);
        t.check();
    }

    fn name(s: &str) -> Arc<str> {
        s.into()
    }

    fn table() -> KeyTable {
        KeyTable::new(100.0, MAX_KEYS)
    }

    /// Finds or adds `key`; gives it to `choice` unless some resource has it; returns
    /// the resource it has now.
    fn request(t: &mut KeyTable, key: &str, choice: &str, now: f64) -> Arc<str> {
        let key = t.key(key).expect("a key");
        match t.entry(key, now) {
            Some(holder) => holder.clone(),
            None => {
                t.assign(key, &name(choice));
                name(choice)
            }
        }
    }

    fn holder_of(t: &mut KeyTable, key: &str, now: f64) -> Option<Arc<str>> {
        let key = t.key(key).expect("a key");
        t.entry(key, now).cloned()
    }

    #[test]
    fn rules_parse_and_name_the_bad_entry() {
        let rules =
            Rules::parse(&["{http://jitsi.org/protocol/focus}conference@room".into()]).unwrap();
        let rule = rules.iter().next().unwrap();
        assert_eq!(
            (&*rule.namespace, &*rule.element, &*rule.attribute),
            ("http://jitsi.org/protocol/focus", "conference", "room")
        );
        assert_eq!(rules.key(0, "r@c").as_deref(), Some("r@c"));
        assert_eq!(rules.key(1, "r@c"), None);
        for bad in [
            "",
            "conference@room",
            "{}conference@room",
            "{ns}conference",
            "{ns}@room",
            "{ns}conference@",
            "{ns}con ference@room",
            "{ns}a@b@c",
            "{n s}a@b",
            "{ns",
        ] {
            let e = Rules::parse(&[bad.into()]).unwrap_err();
            assert!(e.starts_with(&format!("{bad:?} is not")), "{bad:?}: {e}");
        }
        let twice = ["{ns}a@b".to_string(), "{ns}a@b".to_string()];
        assert_eq!(
            Rules::parse(&twice).unwrap_err(),
            "\"{ns}a@b\" is listed twice"
        );
        let two = Rules::parse(&["{ns}a@b".into(), "{ns}a@c".into()]).unwrap();
        assert_eq!(
            (two.key(0, "x").as_deref(), two.key(1, "x").as_deref()),
            (Some("0:x"), Some("1:x"))
        );
        assert_eq!(two.key(2, "x"), None);
        let none = Rules::parse(&[]).unwrap();
        assert!(none.is_empty() && none.key(0, "x").is_none());
    }

    #[test]
    fn a_key_stays_with_its_first_resource() {
        let mut t = table();
        assert_eq!(&*request(&mut t, "room1", "a", 0.0), "a");
        assert_eq!(
            &*request(&mut t, "room1", "b", 1.0),
            "a",
            "the caller's choice is not asked again"
        );
        assert_eq!(&*request(&mut t, "room2", "b", 1.0), "b");
        assert_eq!(
            (t.keys_of("a"), t.keys_of("b"), t.len(), t.moves()),
            (1, 1, 2, 0)
        );
        assert!(t.key("").is_none() && t.key(&"x".repeat(MAX_KEY + 1)).is_none());
        assert!(t.key(&"x".repeat(MAX_KEY)).is_some());
        assert_eq!(t.key("room1"), t.key("room1"));
        assert_ne!(t.key("room1"), t.key("room2"));
        assert_ne!(
            t.key("room1"),
            table().key("room1"),
            "each table has its own secret hash key"
        );
        t.check();
    }

    #[test]
    fn loss_unassigns_only_the_lost_resources_keys() {
        let mut t = table();
        for i in 0..30 {
            let choice = ["a", "b", "c"][i % 3];
            request(&mut t, &format!("room{i}"), choice, 0.0);
        }
        assert_eq!(t.lost("b"), 10);
        assert_eq!((t.keys_of("b"), t.unassigned()), (0, 10));
        t.check();
        for i in 0..30 {
            let had = ["a", "b", "c"][i % 3];
            let now = request(&mut t, &format!("room{i}"), "c", 1.0);
            // b's keys go to the caller's new choice; a's and c's stay.
            assert_eq!(&*now, if had == "b" { "c" } else { had });
        }
        assert_eq!((t.keys_of("a"), t.keys_of("c"), t.moves()), (10, 20, 10));
        // b comes back: it takes none of them.
        for i in 0..30 {
            assert_ne!(&*request(&mut t, &format!("room{i}"), "b", 2.0), "b");
        }
        assert_eq!(t.lost("nobody"), 0);
        t.lost_all();
        assert_eq!(t.unassigned(), 30);
        t.check();
    }

    #[test]
    fn a_retry_moves_the_key() {
        let mut t = table();
        let key = t.key("room").unwrap();
        assert_eq!(t.entry(key, 0.0), None);
        t.assign(key, &name("a"));
        t.assign(key, &name("b"));
        assert_eq!(t.holder(key).map(|h| &**h), Some("b"));
        assert_eq!((t.keys_of("a"), t.keys_of("b"), t.moves()), (0, 1, 1));
        t.assign(key, &name("b"));
        assert_eq!(t.moves(), 1, "to where it is already: no move");
        t.check();
    }

    #[test]
    fn idle_keys_expire_and_forgotten_keys_are_left_alone() {
        let mut t = table();
        let old = t.key("old").unwrap();
        t.entry(old, 0.5);
        t.assign(old, &name("a"));
        request(&mut t, "used", "a", 0.0);
        request(&mut t, "used", "a", 60.0);
        assert_eq!(t.expire(100.9), 0, "100 whole seconds: not more than idle");
        assert_eq!(t.expire(101.0), 1, "more than 100 s without a request");
        assert_eq!((t.len(), t.keys_of("a")), (1, 1));
        // A forgotten key has no holder, and a late retry does not bring it back.
        assert_eq!(t.holder(old), None);
        t.assign(old, &name("b"));
        assert_eq!((t.len(), t.keys_of("b")), (1, 0));
        assert_eq!(t.expire(160.0), 0);
        assert_eq!(t.expire(161.0), 1);
        assert!(t.is_empty());
        assert_eq!(t.expire(1e6), 0, "nothing left to sweep");
        // A clock that goes back makes no key older.
        request(&mut t, "k", "a", 500.0);
        assert_eq!((t.expire(10.0), t.expire(-5.0), t.len()), (0, 0, 1));
        t.check();
    }

    #[test]
    fn the_bound_forgets_the_least_recently_used_first() {
        let mut t = KeyTable::new(1e9, 64);
        for i in 0..64 {
            request(&mut t, &format!("k{i}"), "a", f64::from(i));
        }
        request(&mut t, "k0", "a", 64.0);
        request(&mut t, "k64", "a", 65.0);
        assert_eq!(
            holder_of(&mut t, "k1", 66.0),
            None,
            "k1, idle longest, was forgotten"
        );
        assert_eq!(
            (t.len(), t.evicted()),
            (64, 2),
            "k1 came back as new, which forgot k2"
        );
        assert!(holder_of(&mut t, "k0", 67.0).is_some());
        assert!(holder_of(&mut t, "k3", 68.0).is_some());
        t.check();
        // A full table of 128 forgets 2 at once: the 2 least recently used.
        let mut t = KeyTable::new(1e9, 128);
        for i in 0..128 {
            request(&mut t, &format!("k{i}"), "a", f64::from(i));
        }
        request(&mut t, "k0", "a", 200.0);
        request(&mut t, "new", "a", 201.0);
        assert_eq!((t.len(), t.evicted()), (127, 2));
        for (key, kept) in [("k0", true), ("k3", true), ("k1", false), ("k2", false)] {
            assert_eq!(holder_of(&mut t, key, 202.0).is_some(), kept, "{key}");
        }
        t.check();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Request { key: u8, choice: u8 },
        Move { key: u8, to: u8 },
        Lost(u8),
        LostAll,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..24u8, 0..4u8).prop_map(|(key, choice)| Op::Request { key, choice }),
            2 => (0..24u8, 0..4u8).prop_map(|(key, to)| Op::Move { key, to }),
            2 => (0..4u8).prop_map(Op::Lost),
            1 => Just(Op::LostAll),
            2 => (0..40u8).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// The table against a model: a map of key -> (resource, last use), the bound
        /// forgetting the least recently used. Each operation takes a second, so that no
        /// two keys were last used in one second (the table keeps whole seconds).
        #[test]
        fn the_table_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..300)) {
            let mut t = KeyTable::new(30.0, 16);
            let mut model: HashMap<String, (Option<String>, f64)> = HashMap::new();
            let mut now = 0.0;
            let resource = |r: u8| format!("r{r}");
            for op in ops {
                now += 1.0;
                match op {
                    Op::Request { key, choice } | Op::Move { key, to: choice } => {
                        let key = format!("k{key}");
                        let is_move = matches!(op, Op::Move { .. });
                        if !model.contains_key(&key) && model.len() == 16 {
                            let oldest = model.iter().min_by(|a, b| a.1.1.total_cmp(&b.1.1)).map(|(k, _)| k.clone()).unwrap();
                            model.remove(&oldest);
                        }
                        let entry = model.entry(key.clone()).or_insert((None, now));
                        entry.1 = now;
                        let found = holder_of(&mut t, &key, now);
                        prop_assert_eq!(found.as_deref(), entry.0.as_deref());
                        if entry.0.is_none() || is_move {
                            t.assign(t.key(&key).unwrap(), &resource(choice).into());
                            entry.0 = Some(resource(choice));
                        }
                    }
                    Op::Lost(r) => {
                        t.lost(&resource(r));
                        for v in model.values_mut() {
                            if v.0.as_deref() == Some(&*resource(r)) {
                                v.0 = None;
                            }
                        }
                    }
                    Op::LostAll => {
                        t.lost_all();
                        model.values_mut().for_each(|v| v.0 = None);
                    }
                    Op::Tick(dt) => {
                        now += f64::from(dt);
                        let before = model.len();
                        model.retain(|_, v| now - v.1 <= 30.0);
                        prop_assert_eq!(t.expire(now), before - model.len());
                    }
                }
                t.check();
                prop_assert_eq!(t.len(), model.len());
                for r in 0..4 {
                    let held = model.values().filter(|v| v.0.as_deref() == Some(&*resource(r))).count();
                    prop_assert_eq!(t.keys_of(&resource(r)), held);
                }
            }
        }
    }
}
