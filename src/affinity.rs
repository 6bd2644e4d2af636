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
//! request, and the least recently used goes first when the table is full: a list in
//! order of use, which a request moves its key to the end of, so that no request or
//! tick scans the table. A key is moved at most once per `RELINK` seconds (a move
//! touches its two neighbours, two cache misses in a large table): the order is exact to
//! within that, and a key expires at most that late.

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
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
/// routed without affinity rather than let one request take the room of thousands.
pub const MAX_KEY: usize = 3071;

/// Bytes a key costs besides its text, as the bound counts it: its slot (96, a short key's
/// text included), its share of the index and of the slots' spare capacity (up to half
/// again), and the allocator's overhead for a long key's text. On the safe side of what
/// `examples/route_cost.rs` measures.
pub const KEY_OVERHEAD: usize = 160;

/// How many keys the table keeps at most: past either bound, the least recently used
/// key is forgotten first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Most keys.
    pub keys: usize,
    /// Most bytes, counted as each key's length plus `KEY_OVERHEAD`: long keys cannot
    /// take more memory than short ones would.
    pub bytes: usize,
}

impl Bound {
    /// 100,000 keys (a Jitsi deployment's rooms, many times over), in 20 MB at most
    /// (room names of up to ~45 bytes reach the key bound first).
    pub const DEFAULT: Bound = Bound {
        keys: 100_000,
        bytes: 20 << 20,
    };
}

/// A handle on a key in the table, which a request keeps so that its retry moves the
/// key along without the key's text (it goes stale when the key is forgotten).
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

    fn new(slot: u32, generation: u32) -> KeyRef {
        // The generation is never 0.
        KeyRef(
            NonZeroU64::new((u64::from(generation) << 32) | u64::from(slot))
                .unwrap_or(NonZeroU64::MIN),
        )
    }

    fn slot(self) -> usize {
        (self.0.get() & u64::from(u32::MAX)) as usize
    }

    fn generation(self) -> u32 {
        (self.0.get() >> 32) as u32
    }
}

/// Seconds a key's place in the order of use may lag behind its last request.
pub const RELINK: f64 = 1.0;

/// Bytes of a key kept in its slot (a longer one is boxed): a room JID usually fits, so
/// that the lookup compares it in the slot it has just loaded instead of following a
/// pointer (in a table of 100,000 keys, a cache miss).
const SHORT_KEY: usize = 46;

/// A key's text: in the slot when short, boxed when long; empty in a free slot.
enum KeyText {
    Short { len: u8, bytes: [u8; SHORT_KEY] },
    Long(Box<str>),
}

impl KeyText {
    const EMPTY: KeyText = KeyText::Short {
        len: 0,
        bytes: [0; SHORT_KEY],
    };

    fn new(key: &str) -> KeyText {
        if key.len() <= SHORT_KEY {
            let mut bytes = [0; SHORT_KEY];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            KeyText::Short {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyText::Long(key.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            KeyText::Short { len, bytes } => &bytes[..*len as usize],
            KeyText::Long(text) => text.as_bytes(),
        }
    }

    fn len(&self) -> usize {
        self.as_bytes().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// No slot, no holder.
const NIL: u32 = u32::MAX;

/// One key: its text, where it is in the order of use, and who has it.
struct Slot {
    /// Empty while the slot is free.
    key: KeyText,
    hash: u64,
    /// Last request, in the router's seconds.
    last: f64,
    /// When it was last moved to the end of the order of use.
    linked: f64,
    /// Neighbours in the order of use (NIL at the ends); `next` links the free slots.
    prev: u32,
    next: u32,
    /// The holder it was given to and that holder's epoch then (it has the key while
    /// the epochs agree); NIL: never assigned.
    holder: u32,
    epoch: u32,
    /// Bumped when the slot is freed: a `KeyRef` of an earlier key no longer matches.
    generation: u32,
}

/// A resource that has (or had) keys.
struct Holder {
    /// None while the entry is free.
    name: Option<Arc<str>>,
    /// Keys it has now.
    keys: u32,
    /// Unique to this life of the entry: 0 when free, never reused.
    epoch: u32,
}

/// Which resource has each affinity key. Per request: one hash of the key, one probe, a
/// relink in the order of use; O(1) amortised for insert, loss of a resource and expiry.
pub struct KeyTable {
    /// Slot numbers by the key's hash. Keys come from users: randomized SipHash.
    index: HashTable<u32>,
    hasher: RandomState,
    slots: Vec<Slot>,
    /// First free slot (linked through `next`).
    free: u32,
    /// Least and most recently used keys.
    head: u32,
    tail: u32,
    len: usize,
    /// Bytes as the bound counts them.
    bytes: usize,
    holders: Vec<Holder>,
    free_holders: Vec<u32>,
    /// Names only the implementing account's sessions make: a fast hash.
    by_name: FxHashMap<Arc<str>, u32>,
    last_epoch: u32,
    moves: u64,
    evicted: u64,
    idle: f64,
    bound: Bound,
}

/// What the table knows of a key of a request: its handle, and the resource that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The key's handle, for `assign` and for the request to keep.
    pub key: KeyRef,
    /// The resource that has the key, if any (None: new, or its resource was lost).
    pub holder: Option<Arc<str>>,
}

impl KeyTable {
    /// An empty table forgetting keys after `idle` seconds without a request, within
    /// `bound`.
    pub fn new(idle: f64, bound: Bound) -> KeyTable {
        KeyTable {
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
            holders: Vec::new(),
            free_holders: Vec::new(),
            by_name: FxHashMap::default(),
            last_epoch: 0,
            moves: 0,
            evicted: 0,
            idle,
            bound,
        }
    }

    /// `client_proxy_affinity_idle` changed (a reload): the keys stay.
    pub fn set_idle(&mut self, idle: f64) {
        self.idle = idle;
    }

    /// Forgets every key (the rules changed: the old keys mean something else).
    pub fn clear(&mut self) {
        let (idle, bound, moves, evicted) = (self.idle, self.bound, self.moves, self.evicted);
        *self = KeyTable::new(idle, bound);
        self.moves = moves;
        self.evicted = evicted;
    }

    /// The key of a request at `now`: found (and marked used) or added unassigned; with
    /// the resource that has it. None for a key the table does not keep (empty, or longer
    /// than `MAX_KEY`): such a request is routed as if it had none.
    pub fn entry(&mut self, key: &str, now: f64) -> Option<Found> {
        if key.is_empty() || key.len() > MAX_KEY {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let found = {
            let slots = &self.slots;
            self.index
                .find(hash, |&i| {
                    let s = &slots[i as usize];
                    s.hash == hash && s.key.as_bytes() == key.as_bytes()
                })
                .copied()
        };
        let i = match found {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.last = now;
                // A clock that went back relinks too, so the order stays sane.
                if !(now - s.linked < RELINK && now >= s.linked) {
                    s.linked = now;
                    self.unlink(i);
                    self.push_back(i);
                }
                i
            }
            None => self.insert(key, hash, now),
        };
        let s = &self.slots[i as usize];
        Some(Found {
            key: KeyRef::new(i, s.generation),
            holder: self.holder_of(s).cloned(),
        })
    }

    /// The resource that has the key, if the handle is still the key's and a resource
    /// has it (a retry's question: does the key already live elsewhere?).
    pub fn holder(&self, key: KeyRef) -> Option<&Arc<str>> {
        self.holder_of(self.slot(key)?)
    }

    /// The key now belongs to `resource`, the router's choice: a new key's first
    /// resource, or a move (its resource was lost, or a retry took its request
    /// elsewhere). Nothing when the handle is stale (the key was forgotten meanwhile).
    pub fn assign(&mut self, key: KeyRef, resource: &Arc<str>) {
        let Some(slot) = self.slot(key) else {
            return;
        };
        let (old_holder, old_epoch) = (slot.holder, slot.epoch);
        if let Some(h) = self.holders.get(old_holder as usize) {
            if h.epoch == old_epoch {
                if h.name.as_deref() == Some(&**resource) {
                    return;
                }
                self.holders[old_holder as usize].keys -= 1;
            }
        }
        if old_holder != NIL {
            self.moves += 1;
        }
        let h = self.holder_for(resource);
        let holder = &mut self.holders[h as usize];
        holder.keys += 1;
        let epoch = holder.epoch;
        let slot = &mut self.slots[key.slot()];
        slot.holder = h;
        slot.epoch = epoch;
    }

    /// `resource` went offline, was ejected or is no longer eligible: none of its keys is
    /// its any more (each is assigned anew at its next request). O(1): its epoch ends.
    /// Returns how many keys it had.
    pub fn lost(&mut self, resource: &str) -> usize {
        let Some(h) = self.by_name.remove(resource) else {
            return 0;
        };
        let holder = &mut self.holders[h as usize];
        let keys = holder.keys as usize;
        *holder = Holder {
            name: None,
            keys: 0,
            epoch: 0,
        };
        self.free_holders.push(h);
        keys
    }

    /// Every resource is lost (the target revoked the subscription, or a new target).
    pub fn lost_all(&mut self) {
        self.holders.clear();
        self.free_holders.clear();
        self.by_name.clear();
    }

    /// Forgets the keys without a request for `idle` seconds at `now`, least recently
    /// used first; returns how many. Stops at the first key still in use.
    pub fn expire(&mut self, now: f64) -> usize {
        let mut expired = 0;
        while self.head != NIL && self.slots[self.head as usize].last + self.idle <= now {
            self.remove(self.head);
            expired += 1;
        }
        expired
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
            .map_or(0, |&h| self.holders[h as usize].keys as usize)
    }

    /// Keys that no resource has: their resource was lost, or no resource could take them
    /// yet. Each is assigned at its next request.
    pub fn unassigned(&self) -> usize {
        self.len - self.holders.iter().map(|h| h.keys as usize).sum::<usize>()
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

    /// The key's slot, if the handle is still its.
    fn slot(&self, key: KeyRef) -> Option<&Slot> {
        self.slots
            .get(key.slot())
            .filter(|s| s.generation == key.generation() && !s.key.is_empty())
    }

    fn holder_of(&self, slot: &Slot) -> Option<&Arc<str>> {
        let h = self.holders.get(slot.holder as usize)?;
        (h.epoch == slot.epoch).then_some(h.name.as_ref()?)
    }

    /// The holder entry of an online resource, made at its first key.
    fn holder_for(&mut self, resource: &Arc<str>) -> u32 {
        if let Some(&h) = self.by_name.get(&**resource) {
            return h;
        }
        self.last_epoch += 1;
        let holder = Holder {
            name: Some(resource.clone()),
            keys: 0,
            epoch: self.last_epoch,
        };
        let h = match self.free_holders.pop() {
            Some(h) => {
                self.holders[h as usize] = holder;
                h
            }
            None => {
                self.holders.push(holder);
                (self.holders.len() - 1) as u32
            }
        };
        self.by_name.insert(resource.clone(), h);
        h
    }

    /// Adds an unassigned key, first making room by forgetting the least recently used.
    fn insert(&mut self, key: &str, hash: u64, now: f64) -> u32 {
        let cost = key.len() + KEY_OVERHEAD;
        while self.head != NIL
            && (self.len >= self.bound.keys || self.bytes + cost > self.bound.bytes)
        {
            self.remove(self.head);
            self.evicted += 1;
        }
        let slot = Slot {
            key: KeyText::new(key),
            hash,
            last: now,
            linked: now,
            prev: NIL,
            next: NIL,
            holder: NIL,
            epoch: 0,
            generation: 1,
        };
        let i = if self.free != NIL {
            let i = self.free;
            let s = &mut self.slots[i as usize];
            self.free = s.next;
            *s = Slot {
                generation: s.generation,
                ..slot
            };
            i
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
        self.push_back(i);
        self.len += 1;
        self.bytes += cost;
        i
    }

    /// Forgets the key in slot `i`.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let s = &self.slots[i as usize];
        if let Ok(entry) = self.index.find_entry(s.hash, |&j| j == i) {
            entry.remove();
        }
        if let Some(h) = self.holders.get_mut(s.holder as usize) {
            if h.epoch == s.epoch {
                h.keys -= 1;
            }
        }
        self.len -= 1;
        self.bytes -= s.key.len() + KEY_OVERHEAD;
        let free = self.free;
        let s = &mut self.slots[i as usize];
        s.key = KeyText::EMPTY;
        s.generation = s.generation.wrapping_add(1).max(1);
        s.holder = NIL;
        s.next = free;
        self.free = i;
    }

    /// Takes slot `i` out of the order of use.
    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    /// Puts slot `i` at the end of the order of use (the most recently used).
    fn push_back(&mut self, i: u32) {
        let tail = self.tail;
        {
            let s = &mut self.slots[i as usize];
            s.prev = tail;
            s.next = NIL;
        }
        match tail {
            NIL => self.head = i,
            t => self.slots[t as usize].next = i,
        }
        self.tail = i;
    }

    /// Checks every count against the slots (tests only: a full scan).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut order = 0;
        let mut i = self.head;
        let mut prev = NIL;
        while i != NIL {
            let s = &self.slots[i as usize];
            assert_eq!(s.prev, prev);
            assert!(!s.key.is_empty());
            order += 1;
            prev = i;
            i = s.next;
        }
        assert_eq!(prev, self.tail);
        assert_eq!(order, self.len);
        assert_eq!(self.index.len(), self.len);
        let mut per_holder = vec![0u32; self.holders.len()];
        let mut bytes = 0;
        for s in self.slots.iter().filter(|s| !s.key.is_empty()) {
            bytes += s.key.len() + KEY_OVERHEAD;
            if self.holder_of(s).is_some() {
                per_holder[s.holder as usize] += 1;
            }
        }
        assert_eq!(bytes, self.bytes);
        for (h, holder) in self.holders.iter().enumerate() {
            assert_eq!(holder.keys, per_holder[h], "keys of holder {h}");
            if let Some(name) = &holder.name {
                assert_eq!(self.by_name.get(name), Some(&(h as u32)));
            }
        }
        assert_eq!(
            self.by_name.len(),
            self.holders.iter().filter(|h| h.name.is_some()).count()
        );
        assert!(
            self.len <= self.bound.keys
                && self.bytes <= self.bound.bytes.max(MAX_KEY + KEY_OVERHEAD)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_96_bytes_and_long_keys_are_boxed() {
        assert_eq!(std::mem::size_of::<Slot>(), 96);
        let long = "x".repeat(SHORT_KEY + 1);
        let mut t = table();
        for key in [&long[..SHORT_KEY], &long[..]] {
            request(&mut t, key, "a", 0.0);
            assert!(t.entry(key, 0.0).unwrap().holder.is_some());
        }
        assert_eq!(t.len(), 2, "a short key is not a long one's prefix");
        t.check();
    }
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn name(s: &str) -> Arc<str> {
        s.into()
    }

    fn table() -> KeyTable {
        KeyTable::new(100.0, Bound::DEFAULT)
    }

    /// Finds or adds `key`; gives it to `choice` unless some resource has it; returns
    /// the resource it has now.
    fn request(t: &mut KeyTable, key: &str, choice: &str, now: f64) -> Arc<str> {
        let found = t.entry(key, now).expect("a key");
        match found.holder {
            Some(holder) => holder,
            None => {
                t.assign(found.key, &name(choice));
                name(choice)
            }
        }
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
        assert!(t.entry("", 0.0).is_none() && t.entry(&"x".repeat(MAX_KEY + 1), 0.0).is_none());
        assert!(t.entry(&"x".repeat(MAX_KEY), 0.0).is_some());
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
        let found = t.entry("room", 0.0).unwrap();
        t.assign(found.key, &name("a"));
        t.assign(found.key, &name("b"));
        assert_eq!(t.holder(found.key).map(|h| &**h), Some("b"));
        assert_eq!((t.keys_of("a"), t.keys_of("b"), t.moves()), (0, 1, 1));
        t.assign(found.key, &name("b"));
        assert_eq!(t.moves(), 1, "to where it is already: no move");
        t.check();
    }

    #[test]
    fn idle_keys_expire_and_stale_handles_do_nothing() {
        let mut t = table();
        let old = t.entry("old", 0.0).unwrap().key;
        t.assign(old, &name("a"));
        request(&mut t, "used", "a", 0.0);
        request(&mut t, "used", "a", 60.0);
        assert_eq!(t.expire(99.0), 0);
        assert_eq!(t.expire(100.0), 1, "100 s without a request");
        assert_eq!((t.len(), t.keys_of("a")), (1, 1));
        // The freed slot's next key is another key: the old handle no longer reaches it.
        let new = t.entry("new", 100.0).unwrap().key;
        assert_eq!(new.slot(), old.slot());
        assert_eq!(t.holder(old), None);
        t.assign(old, &name("b"));
        assert_eq!((t.keys_of("b"), t.holder(new)), (0, None));
        assert_eq!(t.expire(160.0), 1);
        assert_eq!(t.expire(1000.0), 1);
        assert!(t.is_empty());
        t.check();
    }

    #[test]
    fn the_bound_forgets_the_least_recently_used_first() {
        let mut t = KeyTable::new(
            1e9,
            Bound {
                keys: 3,
                bytes: usize::MAX,
            },
        );
        for (i, key) in ["k0", "k1", "k2"].iter().enumerate() {
            request(&mut t, key, "a", i as f64);
        }
        request(&mut t, "k0", "a", 3.0);
        request(&mut t, "k3", "a", 4.0);
        assert!(
            t.entry("k1", 5.0).unwrap().holder.is_none(),
            "k1, idle longest, was forgotten"
        );
        assert_eq!(
            (t.len(), t.evicted()),
            (3, 2),
            "k1 came back as new, which forgot k2"
        );
        assert!(t.entry("k0", 6.0).unwrap().holder.is_some());
        t.check();
        let mut t = KeyTable::new(
            1e9,
            Bound {
                keys: 100,
                bytes: 3 * (KEY_OVERHEAD + 2),
            },
        );
        for key in ["k0", "k1", "k2", "k3"] {
            request(&mut t, key, "a", 0.0);
        }
        assert_eq!(t.len(), 3, "the byte bound");
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
            8 => (0..12u8, 0..4u8).prop_map(|(key, choice)| Op::Request { key, choice }),
            2 => (0..12u8, 0..4u8).prop_map(|(key, to)| Op::Move { key, to }),
            2 => (0..4u8).prop_map(Op::Lost),
            1 => Just(Op::LostAll),
            2 => (0..40u8).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// The table against a model: a map of key -> (resource, last use), the bound
        /// forgetting the least recently used.
        #[test]
        fn the_table_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut t = KeyTable::new(30.0, Bound { keys: 8, bytes: usize::MAX });
            // key -> (resource, last use, place in the order of use, when it got it)
            let mut model: HashMap<String, (Option<String>, f64, u64, f64)> = HashMap::new();
            let (mut now, mut use_count) = (0.0, 0u64);
            let resource = |r: u8| format!("r{r}");
            for op in ops {
                match op {
                    Op::Request { key, choice } | Op::Move { key, to: choice } => {
                        let key = format!("k{key}");
                        let is_move = matches!(op, Op::Move { .. });
                        use_count += 1;
                        if !model.contains_key(&key) && model.len() == 8 {
                            let oldest = model.iter().min_by_key(|(_, v)| v.2).map(|(k, _)| k.clone()).unwrap();
                            model.remove(&oldest);
                        }
                        let entry = model.entry(key.clone()).or_insert((None, now, use_count, now));
                        entry.1 = now;
                        if now - entry.3 >= RELINK {
                            entry.2 = use_count;
                            entry.3 = now;
                        }
                        let found = t.entry(&key, now).unwrap();
                        prop_assert_eq!(found.holder.as_deref(), entry.0.as_deref());
                        if entry.0.is_none() || is_move {
                            t.assign(found.key, &resource(choice).into());
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
                        t.expire(now);
                        // In the order of use, up to the first key still in use.
                        let mut order: Vec<(u64, String, f64)> = model.iter().map(|(k, v)| (v.2, k.clone(), v.1)).collect();
                        order.sort_by_key(|o| o.0);
                        for (_, key, last) in order {
                            if last + 30.0 > now {
                                break;
                            }
                            model.remove(&key);
                        }
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
