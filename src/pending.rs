//! Outstanding requests: what was forwarded to which resource, until when.
//!
//! This is what lets the proxy keep RFC 6120's promise (every get/set gets exactly one
//! answer): a reply is accepted only from the resource the request went to, for the id it
//! carried and the requester who sent it; what is never answered is timed out.
//!
//! Built for a table of hundreds of thousands of entries, where every lookup is a cache
//! miss: one hash of the key per table touched, no key copied to look it up, and the
//! deadlines in arrival order (a queue per timeout value) instead of a sorted tree, so
//! that an answer removes nothing from them: a deadline whose request was answered is
//! skipped when it comes up, or dropped when the queues outgrow the table.

use crate::address::{split_at_byte, user_and_domain};
use hashbrown::hash_map::{EntryRef, RawEntryMut};
use hashbrown::{Equivalent, HashMap};
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// Whether the forwarded request was a get (safe to retry) or a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `type='get'`
    Get,
    /// `type='set'`
    Set,
}

/// What a retry rebuilds a request with, besides its payload, addresses and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Get or set.
    pub method: Method,
    /// Its xml:lang (Prosody writes the client stream's on each of its stanzas).
    pub lang: Option<Arc<str>>,
}

impl From<Method> for Shape {
    fn from(method: Method) -> Self {
        Shape { method, lang: None }
    }
}

/// Why a request could not be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The same requester already has a request with this id outstanding.
    DuplicateId,
    /// The requester has `max_per_requester` requests outstanding.
    RequesterFull,
    /// The table holds `max_total` requests.
    TableFull,
    /// The requester's account (bare JID) has `max_per_user` requests outstanding.
    UserFull,
    /// The requester's domain has `max_per_domain` requests outstanding.
    DomainFull,
}

/// Why a reply was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// No outstanding request from that requester with that id (never sent, answered, expired).
    Unknown,
    /// The request went to another resource.
    WrongResource,
}

/// A string held in the table's own memory when it is short, as most JIDs and ids are: a
/// key compared in a lookup is then read from the bucket the lookup has just loaded, not
/// from a pointer to elsewhere (at 200,000 entries each such pointer is a cache miss).
#[derive(Clone)]
enum Text {
    Short { len: u8, bytes: [u8; SHORT_TEXT] },
    Long(Box<str>),
}

/// Bytes a `Text` keeps inline (the enum is then 48 bytes, a long one's box included).
const SHORT_TEXT: usize = 46;

impl Text {
    fn new(text: &str) -> Self {
        if text.len() <= SHORT_TEXT {
            let mut bytes = [0; SHORT_TEXT];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Text::Short {
                len: text.len() as u8,
                bytes,
            }
        } else {
            Text::Long(text.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // SAFETY: the bytes are a whole `&str` copied by `new`: valid UTF-8.
            Text::Short { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..usize::from(*len)])
            },
            Text::Long(text) => text,
        }
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The key of a request: requester, NUL, id (NUL cannot occur in XML, so the split is
/// unambiguous), and the request's number, by which its deadline finds it again. Hashes
/// and compares as its text.
#[derive(Clone, Debug)]
struct Key {
    text: Text,
    seq: u64,
}

impl Key {
    fn parts(&self) -> (&str, &str) {
        let text = self.text.as_str();
        split_at_byte(text, 0).unwrap_or((text, ""))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.text.as_str() == other.text.as_str()
    }
}

impl Eq for Key {}

/// A key to look up without building it: hashes and compares as the `Key` it names.
struct KeyRef<'a> {
    requester: &'a str,
    id: &'a str,
}

fn hash_parts<H: Hasher>(requester: &str, id: &str, state: &mut H) {
    state.write(requester.as_bytes());
    state.write(&[0]);
    state.write(id.as_bytes());
    state.write_u8(0xff);
}

impl Hash for Key {
    /// The bytes `hash_parts` writes for its parts, in one write (the table's hasher
    /// takes its writes as one stream; a unit test holds it to that).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.text.as_str().as_bytes());
        state.write_u8(0xff);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.requester, self.id, state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        let (key, r) = (key.text.as_str().as_bytes(), self.requester.len());
        key.len() == r + 1 + self.id.len()
            && key[r] == 0
            && key.starts_with(self.requester.as_bytes())
            && key.ends_with(self.id.as_bytes())
    }
}

/// An outstanding request taken out of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    key: Key,
    /// The resource of the target it went to.
    pub resource: Arc<str>,
    /// Get or set, and xml:lang.
    pub shape: Shape,
    /// Its number in arrival order (deadline ties, and the deadline queues).
    pub seq: u64,
    /// The number the shim holds the request's stanza under (for a retry): a slot given
    /// back with `release` and handed out again, so that the numbers in use stay few and
    /// dense and the shim's table of held stanzas stays a Lua array (a hash part of
    /// ever-new numbers rehashed and grew the collector's debt: a fifth of the shim's
    /// cost per request, callgrind).
    pub held: u64,
    /// The resources it went to before `resource` (a retry), oldest first.
    pub earlier: Vec<Arc<str>>,
    /// Deadline in ms: kept across a retry, so the timeout counts from arrival.
    deadline: u64,
    /// Counted toward its domain's cap.
    capped: bool,
}

impl Request {
    /// The requester's full JID.
    pub fn requester(&self) -> &str {
        self.key.parts().0
    }

    /// The iq id, as the requester sent it.
    pub fn id(&self) -> &str {
        self.key.parts().1
    }
}

struct Entry {
    resource: Arc<str>,
    /// `Request::held`.
    slot: u32,
    shape: Shape,
    /// The hash of the requester's account in the users table: a reply need not hash it.
    user_hash: u64,
    earlier: Vec<Arc<str>>,
    deadline: u64,
    capped: bool,
}

/// Outstanding requests counted by a part of the requester's address.
struct Tally(HashMap<String, u32, RandomState>);

impl Default for Tally {
    fn default() -> Self {
        Tally(HashMap::with_hasher(RandomState::new()))
    }
}

impl Tally {
    fn get(&self, key: &str) -> u32 {
        self.0.get(key).copied().unwrap_or(0)
    }

    fn add(&mut self, key: &str) {
        *self.0.entry_ref(key).or_insert(0) += 1;
    }

    fn sub(&mut self, key: &str) {
        if let EntryRef::Occupied(mut n) = self.0.entry_ref(key) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

/// What each user (bare JID) has outstanding, in all and per device (full JID): one
/// table for both limits, so that a request touches it once.
#[derive(Default)]
struct Users(HashMap<UserKey, User, RandomState>);

/// A user's key: the full JID of the device that made the user's record, so that the
/// usual user (one device) costs one allocation. Hashes and compares as its bare JID.
struct UserKey {
    jid: Text,
    bare_len: usize,
}

impl UserKey {
    fn bare(&self) -> &str {
        &self.jid.as_str()[..self.bare_len]
    }

    fn device(&self) -> &str {
        self.jid.as_str().get(self.bare_len + 1..).unwrap_or("")
    }
}

/// A bare JID, to look a user up by.
struct Bare<'a>(&'a str);

impl Hash for UserKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bare().hash(state);
    }
}

impl Hash for Bare<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for UserKey {
    fn eq(&self, other: &Self) -> bool {
        self.bare() == other.bare()
    }
}

impl Eq for UserKey {}

impl Equivalent<UserKey> for Bare<'_> {
    fn equivalent(&self, key: &UserKey) -> bool {
        key.bare() == self.0
    }
}

struct User {
    total: u32,
    /// Of the device named in the key.
    first: u32,
    /// Other devices (resourceparts) and theirs.
    others: Vec<(Box<str>, u32)>,
}

impl User {
    /// The count of a device; `first`: it is the device named in the key.
    fn of_device(&mut self, first: bool, device: &str) -> Option<&mut u32> {
        if first {
            return Some(&mut self.first);
        }
        self.others
            .iter_mut()
            .find(|(d, _)| &**d == device)
            .map(|(_, n)| n)
    }
}

/// The requester's account (bare JID) and resourcepart (empty when it has none).
fn user_and_device(requester: &str) -> (&str, &str) {
    split_at_byte(requester, b'/').unwrap_or((requester, ""))
}

impl Users {
    /// The hash of the requester's account in this table.
    fn hash(&self, requester: &str) -> u64 {
        self.0.hasher().hash_one(Bare(user_and_device(requester).0))
    }

    /// Outstanding requests of the requester's account and of the requester itself.
    fn counts(&self, hash: u64, requester: &str) -> (u32, u32) {
        let (user, device) = user_and_device(requester);
        let found = self
            .0
            .raw_entry()
            .from_key_hashed_nocheck(hash, &Bare(user));
        found.map_or((0, 0), |(key, u)| {
            let of_device = if key.device() == device {
                u.first
            } else {
                u.others
                    .iter()
                    .find(|(d, _)| &**d == device)
                    .map_or(0, |(_, n)| *n)
            };
            (u.total, of_device)
        })
    }

    /// Counts a request unless the requester already has `limits.0` requests outstanding
    /// (RequesterFull) or its account `limits.1` (UserFull), or else `otherwise` refuses
    /// it; one probe of the table for the check and the count. `hash`: of the
    /// requester's account.
    fn add_within(
        &mut self,
        hash: u64,
        requester: &str,
        (per_requester, per_user): (u32, u32),
        otherwise: Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let (user, device) = user_and_device(requester);
        match self
            .0
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &Bare(user))
        {
            RawEntryMut::Vacant(v) => {
                if per_requester == 0 {
                    return Err(Refusal::RequesterFull);
                }
                if per_user == 0 {
                    return Err(Refusal::UserFull);
                }
                otherwise?;
                let key = UserKey {
                    jid: Text::new(requester),
                    bare_len: user.len(),
                };
                let record = User {
                    total: 1,
                    first: 1,
                    others: Vec::new(),
                };
                v.insert_hashed_nocheck(hash, key, record);
            }
            RawEntryMut::Occupied(mut o) => {
                let (key, record) = o.get_key_value_mut();
                let first = key.device() == device;
                let of_device = record.of_device(first, device).map_or(0, |n| *n);
                if of_device >= per_requester {
                    return Err(Refusal::RequesterFull);
                }
                if record.total >= per_user {
                    return Err(Refusal::UserFull);
                }
                otherwise?;
                record.total += 1;
                match record.of_device(first, device) {
                    Some(n) => *n += 1,
                    None => record.others.push((device.into(), 1)),
                }
            }
        }
        Ok(())
    }

    /// Counts a request whatever the limits (one put back after a retry); `hash`: of the
    /// requester's account.
    fn add(&mut self, hash: u64, requester: &str) {
        let counted = self.add_within(hash, requester, (u32::MAX, u32::MAX), Ok(()));
        debug_assert!(counted.is_ok(), "no count reaches u32::MAX");
    }

    /// Counts a request no longer outstanding; `hash`: of the requester's account, as
    /// `add` was given it.
    fn sub(&mut self, hash: u64, requester: &str) {
        let (user, device) = user_and_device(requester);
        let found = self
            .0
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &Bare(user));
        let RawEntryMut::Occupied(mut o) = found else {
            return;
        };
        let first = o.key().device() == device;
        let record = o.get_mut();
        record.total -= 1;
        if record.total == 0 {
            o.remove();
            return;
        }
        if let Some(n) = record.of_device(first, device) {
            *n -= 1;
        }
        record.others.retain(|(_, n)| *n > 0);
    }
}

/// The deadlines of requests that arrived under one timeout, in arrival order (so in
/// deadline order: the clock does not go back): (deadline in ms, the request's number, the
/// hash of its key), which find the request in the table if it is still there.
struct Deadlines {
    timeout_ms: u64,
    queue: VecDeque<(u64, u64, u64)>,
}

/// The numbers the shim holds stanzas under: the last one given back is handed out first
/// (a stack), and a new one only when none is free, so that those in use stay in 1..peak.
#[derive(Default)]
struct Slots {
    free: Vec<u32>,
    /// Numbers handed out so far (1..=next are in use or free).
    next: u32,
}

impl Slots {
    fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        })
    }

    fn give(&mut self, slot: u32) {
        debug_assert!(slot >= 1 && slot <= self.next && !self.free.contains(&slot));
        self.free.push(slot);
    }
}

/// Which request numbers are in the table, one bit each from `base` on: the deadline
/// queues learn that a request was answered from this, read in their own (arrival)
/// order, instead of from a lookup in the table, which at 200,000 entries is a cache miss
/// for each of the one or two deadlines every request leaves behind. A number below
/// `base` (the bits of the oldest requests are dropped when they would outgrow the
/// queues) is looked up in the table as before.
#[derive(Default)]
struct LiveSeqs {
    /// The number of the first bit: a multiple of 64.
    base: u64,
    words: VecDeque<u64>,
}

impl LiveSeqs {
    /// The word and bit of `seq`, when it has one.
    fn place(&self, seq: u64) -> Option<(usize, u64)> {
        let offset = seq.checked_sub(self.base)?;
        let word = usize::try_from(offset / 64).ok()?;
        (word < self.words.len()).then_some((word, 1 << (offset % 64)))
    }

    /// Whether `seq` is in the table; `None`: not known here.
    fn get(&self, seq: u64) -> Option<bool> {
        self.place(seq).map(|(w, bit)| self.words[w] & bit != 0)
    }

    /// `seq` is in the table. Numbers only grow, so a new one is at most one word on.
    fn set(&mut self, seq: u64) {
        if self.words.is_empty() {
            self.base = seq - seq % 64;
        }
        while seq >= self.base && self.place(seq).is_none() {
            self.words.push_back(0);
        }
        if let Some((w, bit)) = self.place(seq) {
            self.words[w] |= bit;
        }
    }

    /// `seq` is no longer in the table.
    fn clear(&mut self, seq: u64) {
        if let Some((w, bit)) = self.place(seq) {
            self.words[w] &= !bit;
        }
    }

    /// Drops the leading words that say nothing is live, and then the oldest words while
    /// more than `most` are kept (their numbers are then looked up in the table); the
    /// last word stays, for the next number.
    fn trim(&mut self, most: usize) {
        while self.words.len() > 1 && (self.words[0] == 0 || self.words.len() > most) {
            self.words.pop_front();
            self.base += 64;
        }
    }
}

/// The table of outstanding requests, bounded in total, per requester (full JID), per
/// user (bare JID) and per domain.
pub struct PendingTable {
    entries: HashMap<Key, Entry, RandomState>,
    /// One queue per timeout in force when requests arrived (one, unless a reload changed
    /// it while requests were outstanding).
    deadlines: Vec<Deadlines>,
    /// Per user and per requester.
    per_user: Users,
    /// Which numbers are in `entries`, for the deadline queues.
    live: LiveSeqs,
    /// The numbers the shim holds stanzas under.
    slots: Slots,
    /// Only requests whose domain is capped are counted.
    per_domain: Tally,
    seq: u64,
    scratch: String,
    /// Seconds a request may stay unanswered.
    pub timeout: f64,
    /// Most requests outstanding at once.
    pub max_total: usize,
    /// Most requests one requester may have outstanding.
    pub max_per_requester: u32,
    /// Most requests one user (bare JID) may have outstanding.
    pub max_per_user: u32,
    /// Most requests one domain may have outstanding, where the domain is capped.
    pub max_per_domain: u32,
}

/// Whether the request numbered `seq`, whose key hashes to `hash`, is in the table: from
/// its bit, else from the table.
fn is_live(
    entries: &HashMap<Key, Entry, RandomState>,
    live: &LiveSeqs,
    seq: u64,
    hash: u64,
) -> bool {
    live.get(seq).unwrap_or_else(|| {
        entries
            .raw_entry()
            .from_hash(hash, |key| key.seq == seq)
            .is_some()
    })
}

fn millis(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0) as u64
    } else {
        0
    }
}

impl PendingTable {
    /// An empty table with these limits.
    pub fn new(timeout: f64, max_total: usize, max_per_requester: u32) -> Self {
        PendingTable {
            entries: HashMap::with_hasher(RandomState::new()),
            deadlines: Vec::new(),
            per_user: Users::default(),
            live: LiveSeqs::default(),
            slots: Slots::default(),
            per_domain: Tally::default(),
            seq: 0,
            scratch: String::new(),
            timeout,
            max_total,
            max_per_requester,
            max_per_user: u32::MAX,
            max_per_domain: u32::MAX,
        }
    }

    /// Number of outstanding requests.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Outstanding requests of one requester.
    pub fn of_requester(&self, requester: &str) -> u32 {
        self.per_user
            .counts(self.per_user.hash(requester), requester)
            .1
    }

    /// Outstanding requests held by one resource (O(n); the resource set keeps the live
    /// count, this is the tests' independent check).
    #[cfg(test)]
    pub fn of_resource(&self, resource: &str) -> usize {
        self.entries
            .values()
            .filter(|e| &*e.resource == resource)
            .count()
    }

    /// Hold numbers handed out and not given back with `release`.
    #[cfg(test)]
    pub fn numbers_out(&self) -> usize {
        self.slots.next as usize - self.slots.free.len()
    }

    /// Outstanding requests of one user (bare JID).
    pub fn of_user(&self, user: &str) -> u32 {
        self.per_user.counts(self.per_user.hash(user), user).0
    }

    /// Outstanding requests of one capped domain.
    pub fn of_domain(&self, domain: &str) -> u32 {
        self.per_domain.get(domain)
    }

    /// Records a forwarded request and returns the number the shim holds it under
    /// (`Request::held`), or says why it may not be forwarded. `cap_domain`: the
    /// requester's domain is held to `max_per_domain` (a domain this server does not host).
    pub fn insert(
        &mut self,
        requester: &str,
        id: &str,
        resource: Arc<str>,
        shape: impl Into<Shape>,
        now: f64,
        cap_domain: bool,
    ) -> Result<u64, Refusal> {
        // Each table hashed and probed once: the lookup that finds no duplicate (or the
        // user's record) is the one that inserts.
        let by_parts = KeyRef { requester, id };
        let hash = self.entries.hasher().hash_one(&by_parts);
        let (_, domain) = user_and_domain(requester);
        let otherwise = if cap_domain && self.per_domain.get(domain) >= self.max_per_domain {
            Err(Refusal::DomainFull)
        } else if self.entries.len() >= self.max_total {
            Err(Refusal::TableFull)
        } else {
            Ok(())
        };
        let vacant = match self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &by_parts)
        {
            RawEntryMut::Occupied(_) => return Err(Refusal::DuplicateId),
            RawEntryMut::Vacant(vacant) => vacant,
        };
        let user_hash = self.per_user.hash(requester);
        let limits = (self.max_per_requester, self.max_per_user);
        self.per_user
            .add_within(user_hash, requester, limits, otherwise)?;
        if cap_domain {
            self.per_domain.add(domain);
        }
        self.seq += 1;
        // Built in a buffer kept for it, then copied into the key (inline when short).
        self.scratch.clear();
        self.scratch.push_str(requester);
        self.scratch.push('\0');
        self.scratch.push_str(id);
        let key = Key {
            text: Text::new(&self.scratch),
            seq: self.seq,
        };
        let deadline = millis(now + self.timeout);
        self.live.set(self.seq);
        let slot = self.slots.take();
        let entry = Entry {
            resource,
            slot,
            shape: shape.into(),
            user_hash,
            earlier: Vec::new(),
            deadline,
            capped: cap_domain,
        };
        vacant.insert_hashed_nocheck(hash, key, entry);
        self.queue_deadline(deadline, self.seq, hash);
        Ok(u64::from(slot))
    }

    /// The shim no longer holds the stanza of the request it held under `held` (the
    /// answer that says so is on its way): the number may be handed out again. Only once
    /// the shim has applied that answer, which it does before it routes the next stanza.
    pub fn release(&mut self, held: u64) {
        if let Ok(slot) = u32::try_from(held) {
            self.slots.give(slot);
        }
    }

    /// Puts a request taken out of the table back, now held by another resource; it keeps
    /// its number and deadline (its place in the deadline queue), and the resource it
    /// leaves joins `earlier`.
    pub fn retarget(&mut self, mut request: Request, resource: Arc<str>) {
        let left = std::mem::replace(&mut request.resource, resource);
        request.earlier.push(left);
        self.put(request);
    }

    fn put(&mut self, request: Request) {
        let Request {
            key,
            resource,
            shape,
            held,
            earlier,
            deadline,
            capped,
            ..
        } = request;
        self.live.set(key.seq);
        let (requester, _) = key.parts();
        let user_hash = self.per_user.hash(requester);
        self.per_user.add(user_hash, requester);
        if capped {
            self.per_domain.add(user_and_domain(requester).1);
        }
        self.entries.insert(
            key,
            Entry {
                resource,
                slot: held as u32,
                shape,
                user_hash,
                earlier,
                deadline,
                capped,
            },
        );
    }

    /// Queues the deadline of the request just put in the table, under the current
    /// timeout; drops the deadlines of answered requests once the queues hold twice as
    /// many as the table held before (so they stay O(table), at O(1) amortized per
    /// request).
    fn queue_deadline(&mut self, deadline: u64, seq: u64, hash: u64) {
        let timeout_ms = millis(self.timeout);
        let queued: usize = self.deadlines.iter().map(|d| d.queue.len()).sum();
        let most = 2 * self.entries.len().saturating_sub(1) + 1024;
        if queued >= most {
            let (entries, live) = (&self.entries, &self.live);
            for d in &mut self.deadlines {
                d.queue
                    .retain(|&(_, seq, hash)| is_live(entries, live, seq, hash));
            }
        }
        // The bits take at most the memory of the deadlines they serve (24 bytes each).
        self.live.trim(most * 3);
        // The queue of a timeout no longer in force goes once its requests are gone.
        self.deadlines
            .retain(|d| !d.queue.is_empty() || d.timeout_ms == timeout_ms);
        let i = match self
            .deadlines
            .iter()
            .position(|d| d.timeout_ms == timeout_ms)
        {
            Some(i) => i,
            None => {
                self.deadlines.push(Deadlines {
                    timeout_ms,
                    queue: VecDeque::new(),
                });
                self.deadlines.len() - 1
            }
        };
        let queue = &mut self.deadlines[i].queue;
        // Under one timeout, in arrival order, the deadlines only grow; a clock that went
        // back still gets its place (at O(n)).
        let at = if queue.back().is_none_or(|(last, _, _)| *last <= deadline) {
            queue.len()
        } else {
            queue.partition_point(|(d, _, _)| *d <= deadline)
        };
        queue.insert(at, (deadline, seq, hash));
    }

    /// Takes a request by requester and id, whoever holds it (outbound requests, whose
    /// answer comes from the user they were sent to).
    pub fn take(&mut self, requester: &str, id: &str) -> Option<Request> {
        let (key, entry) = self.entries.remove_entry(&KeyRef { requester, id })?;
        Some(self.taken(key, entry))
    }

    /// Takes the request a reply answers, if the reply comes from the right resource.
    pub fn take_reply(
        &mut self,
        requester: &str,
        id: &str,
        from_resource: &str,
    ) -> Result<Request, Mismatch> {
        match self
            .entries
            .raw_entry_mut()
            .from_key(&KeyRef { requester, id })
        {
            RawEntryMut::Vacant(_) => Err(Mismatch::Unknown),
            RawEntryMut::Occupied(e) if &*e.get().resource != from_resource => {
                Err(Mismatch::WrongResource)
            }
            RawEntryMut::Occupied(e) => {
                let (key, entry) = e.remove_entry();
                Ok(self.taken(key, entry))
            }
        }
    }

    /// Takes every request held by a resource that went away (O(n); rare).
    pub fn take_resource(&mut self, resource: &str) -> Vec<Request> {
        let taken: Vec<(Key, Entry)> = self
            .entries
            .extract_if(|_, e| &*e.resource == resource)
            .collect();
        taken.into_iter().map(|(k, e)| self.taken(k, e)).collect()
    }

    /// Takes every outstanding request (the target revoked or errored).
    pub fn take_all(&mut self) -> Vec<Request> {
        let taken: Vec<(Key, Entry)> = self.entries.drain().collect();
        taken.into_iter().map(|(k, e)| self.taken(k, e)).collect()
    }

    /// Takes the requests whose deadline has passed, oldest first.
    pub fn expire(&mut self, now: f64) -> Vec<Request> {
        let limit = millis(now);
        let mut due = Vec::new();
        for d in &mut self.deadlines {
            while d
                .queue
                .front()
                .is_some_and(|(deadline, _, _)| *deadline <= limit)
            {
                let (_, seq, hash) = d.queue.pop_front().expect("front just seen");
                due.push((seq, hash));
            }
        }
        let mut out = Vec::with_capacity(due.len());
        for (seq, hash) in due {
            if self.live.get(seq) == Some(false) {
                continue; // answered (or lost) before its deadline
            }
            // Not found: answered (or lost) before its deadline.
            let found = self
                .entries
                .raw_entry_mut()
                .from_hash(hash, |key| key.seq == seq);
            if let RawEntryMut::Occupied(e) = found {
                let (key, entry) = e.remove_entry();
                out.push(self.taken(key, entry));
            }
        }
        if self.deadlines.len() > 1 {
            out.sort_by_key(|r| (r.deadline, r.seq));
        }
        out
    }

    /// A request out of the table: no longer counted.
    fn taken(&mut self, key: Key, entry: Entry) -> Request {
        self.live.clear(key.seq);
        let (requester, _) = key.parts();
        self.per_user.sub(entry.user_hash, requester);
        if entry.capped {
            self.per_domain.sub(user_and_domain(requester).1);
        }
        Request {
            seq: key.seq,
            held: u64::from(entry.slot),
            key,
            resource: entry.resource,
            shape: entry.shape,
            earlier: entry.earlier,
            deadline: entry.deadline,
            capped: entry.capped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PendingTable {
        PendingTable::new(10.0, 4, 2)
    }

    #[test]
    fn reply_accepted_once_from_the_right_resource() {
        let mut t = table();
        t.insert("u@x/a", "1", "res1".into(), Method::Get, 0.0, false)
            .unwrap();
        assert_eq!(
            t.take_reply("u@x/a", "1", "res2"),
            Err(Mismatch::WrongResource)
        );
        assert_eq!(t.take_reply("u@x/b", "1", "res1"), Err(Mismatch::Unknown));
        assert_eq!(t.take_reply("u@x/a", "2", "res1"), Err(Mismatch::Unknown));
        let r = t.take_reply("u@x/a", "1", "res1").unwrap();
        assert_eq!((r.requester(), r.id()), ("u@x/a", "1"));
        assert_eq!(t.take_reply("u@x/a", "1", "res1"), Err(Mismatch::Unknown));
        assert!(t.is_empty());
    }

    #[test]
    fn limits_and_duplicates() {
        let mut t = table();
        t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        assert_eq!(
            t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false),
            Err(Refusal::DuplicateId)
        );
        t.insert("u@x/a", "2", "r".into(), Method::Set, 0.0, false)
            .unwrap();
        assert_eq!(
            t.insert("u@x/a", "3", "r".into(), Method::Get, 0.0, false),
            Err(Refusal::RequesterFull)
        );
        t.insert("v@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.insert("w@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        assert_eq!(
            t.insert("z@x/a", "1", "r".into(), Method::Get, 0.0, false),
            Err(Refusal::TableFull)
        );
        t.take_reply("u@x/a", "1", "r").unwrap();
        assert_eq!(t.of_requester("u@x/a"), 1);
        t.insert("u@x/a", "3", "r".into(), Method::Get, 0.0, false)
            .unwrap();
    }

    #[test]
    fn expiry_in_deadline_order() {
        let mut t = table();
        t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.insert("v@x/a", "1", "r".into(), Method::Get, 5.0, false)
            .unwrap();
        assert!(t.expire(9.9).is_empty());
        let gone = t.expire(10.0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].requester(), "u@x/a");
        assert_eq!(t.expire(100.0).len(), 1);
        assert!(
            t.is_empty()
                && t.deadlines.iter().all(|d| d.queue.is_empty())
                && t.per_user.0.is_empty()
                && t.per_domain.0.is_empty()
        );
    }

    #[test]
    fn a_new_timeout_applies_to_new_requests_and_expiry_stays_oldest_first() {
        let mut t = PendingTable::new(10.0, 10, 10);
        t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.timeout = 2.0;
        t.insert("v@x/a", "1", "r".into(), Method::Get, 1.0, false)
            .unwrap();
        t.insert("w@x/a", "1", "r".into(), Method::Get, 9.0, false)
            .unwrap();
        t.timeout = 10.0;
        t.insert("z@x/a", "1", "r".into(), Method::Get, 9.5, false)
            .unwrap();
        assert_eq!(
            t.deadlines.len(),
            2,
            "one queue per timeout in force: 10 s and 2 s"
        );
        let first: Vec<_> = t
            .expire(3.0)
            .iter()
            .map(|r| r.requester().to_owned())
            .collect();
        assert_eq!(first, ["v@x/a"]);
        let next: Vec<_> = t
            .expire(11.0)
            .iter()
            .map(|r| r.requester().to_owned())
            .collect();
        assert_eq!(next, ["u@x/a", "w@x/a"], "by deadline across the queues");
        assert_eq!(t.expire(19.5).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn deadlines_of_answered_requests_do_not_pile_up() {
        let mut t = PendingTable::new(1.0e6, 10, 10);
        t.insert("held@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        for i in 0..10_000 {
            let id = i.to_string();
            t.insert("u@x/a", &id, "r".into(), Method::Get, 0.0, false)
                .unwrap();
            t.take_reply("u@x/a", &id, "r").unwrap();
            let queued: usize = t.deadlines.iter().map(|d| d.queue.len()).sum();
            assert!(
                queued <= 2 * t.len() + 1025,
                "{queued} deadlines queued for {} requests",
                t.len()
            );
        }
        assert_eq!(
            t.expire(2.0e6).len(),
            1,
            "the request still outstanding expires"
        );
    }

    #[test]
    fn the_live_bits_say_what_the_table_holds_and_stay_bounded() {
        let mut t = PendingTable::new(1.0e6, 100, 100);
        t.insert("old@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        // A pseudo-random mix of requests, answers, losses and retargets.
        let mut state = 12345u64;
        let mut open: Vec<(String, String)> = Vec::new();
        for i in 0..1_000_000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let roll = (state >> 33) % 10;
            if roll < 5 || open.is_empty() {
                let (requester, id) = (format!("u{}@x/a", i % 50), i.to_string());
                if t.insert(&requester, &id, "r".into(), Method::Get, 0.0, false)
                    .is_ok()
                {
                    open.push((requester, id));
                }
            } else {
                let (requester, id) = open.swap_remove((state >> 40) as usize % open.len());
                if roll == 9 {
                    let request = t.take(&requester, &id).unwrap();
                    t.retarget(request, "r2".into());
                    open.push((requester, id));
                } else {
                    t.take(&requester, &id).unwrap();
                }
            }
            if i % 50_021 == 0 {
                for d in &t.deadlines {
                    for &(_, seq, hash) in &d.queue {
                        let in_table = t.entries.raw_entry().from_hash(hash, |k| k.seq == seq);
                        if let Some(bit) = t.live.get(seq) {
                            assert_eq!(bit, in_table.is_some(), "request {seq}");
                        }
                    }
                }
            }
        }
        let most = 3 * (2 * t.len() + 1024);
        assert!(t.live.words.len() <= most, "{} words", t.live.words.len());
        assert_eq!(t.live.get(1), None, "the oldest request's bit was dropped");
        let gone = t.expire(2.0e6);
        assert_eq!(
            gone.len(),
            open.len() + 1,
            "every request still outstanding expires"
        );
        assert!(gone.iter().any(|r| r.requester() == "old@x/a"));
        assert!(t.is_empty());
    }

    #[test]
    fn a_refused_request_counts_nowhere_and_the_first_limit_reached_is_named() {
        let mut t = PendingTable::new(10.0, 3, 2);
        t.max_per_user = 2;
        t.max_per_domain = 1;
        t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, true)
            .unwrap();
        let refused = t.insert("u@x/b", "1", "r".into(), Method::Get, 0.0, true);
        assert_eq!(refused, Err(Refusal::DomainFull));
        t.insert("u@x/b", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        // The account is full, the table too: the account is named.
        t.insert("v@y/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        let refused = t.insert("u@x/c", "1", "r".into(), Method::Get, 0.0, false);
        assert_eq!(refused, Err(Refusal::UserFull));
        assert_eq!(
            t.insert("w@y/a", "1", "r".into(), Method::Get, 0.0, false),
            Err(Refusal::TableFull)
        );
        assert_eq!((t.of_user("u@x"), t.of_requester("u@x/c")), (2, 0));
        assert_eq!((t.of_user("w@y"), t.of_domain("x")), (0, 1));
        assert!(t.per_user.0.len() == 2 && t.len() == 3);
    }

    #[test]
    fn hold_numbers_stay_few_and_come_back_once_released() {
        let mut t = PendingTable::new(10.0, 10, 10);
        let held: Vec<u64> = ["1", "2", "3"]
            .iter()
            .map(|id| {
                t.insert("u@x/a", id, "r".into(), Method::Get, 0.0, false)
                    .unwrap()
            })
            .collect();
        assert_eq!(held, [1, 2, 3]);
        let answered = t.take_reply("u@x/a", "2", "r").unwrap();
        assert_eq!(answered.held, 2);
        let next = t.insert("u@x/a", "4", "r".into(), Method::Get, 0.0, false);
        assert_eq!(next, Ok(4), "not before the shim let go of it");
        t.release(answered.held);
        let again = t.insert("u@x/a", "5", "r".into(), Method::Get, 0.0, false);
        assert_eq!(again, Ok(2));
    }

    #[test]
    fn resource_loss_takes_only_its_requests() {
        let mut t = table();
        t.insert("u@x/a", "1", "r1".into(), Method::Get, 0.0, false)
            .unwrap();
        t.insert("v@x/a", "1", "r2".into(), Method::Set, 0.0, false)
            .unwrap();
        t.insert("w@x/a", "1", "r1".into(), Method::Set, 0.0, false)
            .unwrap();
        let lost = t.take_resource("r1");
        assert_eq!(lost.len(), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.of_resource("r2"), 1);
        assert_eq!(t.take_all().len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn retarget_keeps_number_and_deadline() {
        let mut t = table();
        let seq = t
            .insert("u@x/a", "1", "r1".into(), Method::Get, 0.0, false)
            .unwrap();
        let lost = t.take_resource("r1").pop().unwrap();
        assert!(lost.earlier.is_empty());
        t.retarget(lost, "r2".into());
        assert_eq!(t.of_resource("r2"), 1);
        assert_eq!(t.of_requester("u@x/a"), 1);
        assert!(t.expire(9.0).is_empty());
        let gone = t.expire(10.0).pop().unwrap();
        assert_eq!((gone.held, &*gone.resource), (seq, "r2"));
        assert_eq!(gone.earlier, vec![Arc::<str>::from("r1")]);
    }

    #[test]
    fn a_key_hashes_as_the_parts_it_is_looked_up_by() {
        use std::hash::BuildHasher;
        let t = table();
        let hasher = t.entries.hasher();
        for (requester, id) in [
            ("u@x/a", "1"),
            (
                "a-requester-longer-than-inline@a-long-domain.example.org/device",
                "id-1",
            ),
            ("", ""),
            ("a@x", "b/c"),
            ("é@x/ü", "\u{1F600}"),
        ] {
            let key = Key {
                text: Text::new(&format!("{requester}\0{id}")),
                seq: 0,
            };
            let by_parts = KeyRef { requester, id };
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(&by_parts));
            assert!(by_parts.equivalent(&key));
        }
        assert!(!KeyRef {
            requester: "u@x",
            id: "a1"
        }
        .equivalent(&Key {
            text: Text::new("u@x/a\u{0}1"),
            seq: 0
        }));
    }

    #[test]
    fn ids_with_nul_free_text_keep_requesters_apart() {
        let mut t = PendingTable::new(10.0, 10, 10);
        t.insert("a@x/b", "c", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.insert("a@x", "b/c", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        assert_eq!(t.take_reply("a@x", "b/c", "r").unwrap().requester(), "a@x");
        assert_eq!(t.take_reply("a@x/b", "c", "r").unwrap().id(), "c");
    }
}
