//! Outstanding requests: what was forwarded to which resource, until when.
//!
//! This is what lets the proxy keep RFC 6120's promise (every get/set gets exactly one
//! answer): a reply is accepted only from the resource the request went to, for the id it
//! carried and the requester who sent it; what is never answered is timed out.
//!
//! Built for a table of hundreds of thousands of entries, where a probe of a table of
//! whole entries is a cache miss, often two. Requests live in slots of a dense array,
//! numbered by the hold number the shim keeps their stanza under; a slot given back is
//! the next one handed out, so the slots in use stay few and lately touched. An index of
//! slot numbers by hash (4 bytes a bucket, small enough to stay in cache) finds them. The
//! users table is built the same way, and a request keeps its user's slot, so that a
//! reply reaches the counts without a hash or a probe. Each table is hashed once per
//! request: the key's hash and the user's come from one pass over the requester's
//! address. Deadlines are kept in arrival order (a queue per timeout value) of (deadline,
//! request number, slot): an answer removes nothing from them; a deadline whose slot holds
//! another request, or none, is skipped when it comes up, or dropped when the queues
//! outgrow the table.

use crate::address::{split_at_byte, user_and_domain};
use hashbrown::hash_map::EntryRef;
use hashbrown::hash_table::Entry as Slot;
use hashbrown::{HashMap, HashTable};
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
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

/// A string held in the slot's own memory when it is short, as most JIDs and ids are: a
/// key compared in a lookup is then read from the slot the lookup has just loaded, not
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

    /// `requester NUL id`, the key of a request (NUL cannot occur in XML, so the split is
    /// unambiguous).
    fn key(requester: &str, id: &str) -> Self {
        let len = requester.len() + 1 + id.len();
        if len > SHORT_TEXT {
            return Text::Long([requester, "\0", id].concat().into());
        }
        let mut bytes = [0; SHORT_TEXT];
        bytes[..requester.len()].copy_from_slice(requester.as_bytes());
        bytes[requester.len() + 1..len].copy_from_slice(id.as_bytes());
        Text::Short {
            len: len as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // SAFETY: the bytes are whole `&str`s copied by `new` or `key`, with a NUL
            // byte between two: valid UTF-8.
            Text::Short { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..usize::from(*len)])
            },
            Text::Long(text) => text,
        }
    }

    /// Whether this is the key of `requester`'s request `id`.
    fn is_key(&self, requester: &str, id: &str) -> bool {
        let (key, r) = (self.as_str().as_bytes(), requester.len());
        key.len() == r + 1 + id.len()
            && key[r] == 0
            && key.starts_with(requester.as_bytes())
            && key.ends_with(id.as_bytes())
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// The requester's account (bare JID) and resourcepart (empty when it has none).
fn user_and_device(requester: &str) -> (&str, &str) {
    split_at_byte(requester, b'/').unwrap_or((requester, ""))
}

/// The hashes of a request's key (requester, NUL, id) and of its requester's account, in
/// one pass over the address: the account is the address's first part, so its hash is a
/// copy of the key's hasher taken there. Each stream ends in 0xff, as a `str` does.
fn hashes(state: &RandomState, requester: &str, user: &str, id: &str) -> (u64, u64) {
    debug_assert!(requester.starts_with(user));
    let mut key = state.build_hasher();
    key.write(user.as_bytes());
    let mut account = key.clone();
    account.write_u8(0xff);
    key.write(&requester.as_bytes()[user.len()..]);
    key.write_u8(0);
    key.write(id.as_bytes());
    key.write_u8(0xff);
    (key.finish(), account.finish())
}

/// The hash of a request's key, as `hashes` makes it.
fn key_hash(state: &RandomState, requester: &str, id: &str) -> u64 {
    let mut key = state.build_hasher();
    key.write(requester.as_bytes());
    key.write_u8(0);
    key.write(id.as_bytes());
    key.write_u8(0xff);
    key.finish()
}

/// The hash of an account (bare JID), as `hashes` makes it.
fn user_hash(state: &RandomState, user: &str) -> u64 {
    let mut account = state.build_hasher();
    account.write(user.as_bytes());
    account.write_u8(0xff);
    account.finish()
}

/// An outstanding request: in its slot of the table, or taken out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `requester NUL id`.
    key: Text,
    /// Where the requester ends in `key`.
    requester_len: u32,
    /// The resource of the target it went to.
    pub resource: Arc<str>,
    /// Get or set, and xml:lang.
    pub shape: Shape,
    /// Its number in arrival order (deadline ties, and the deadline queues).
    pub seq: u64,
    /// The number the shim holds the request's stanza under (for a retry), which is also
    /// its slot in the table: given back with `release` and handed out again, so that the
    /// numbers in use stay few and dense, and the shim's table of held stanzas stays a Lua
    /// array (a hash part of ever-new numbers rehashed and grew the collector's debt: a
    /// fifth of the shim's cost per request, callgrind). Until then the slot waits for the
    /// request to be put back (a retry) and nothing else takes it.
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
        &self.key.as_str()[..self.requester_len as usize]
    }

    /// The iq id, as the requester sent it.
    pub fn id(&self) -> &str {
        &self.key.as_str()[self.requester_len as usize + 1..]
    }
}

/// An outstanding request in its slot, with what the tables find it and its user by.
struct Stored {
    request: Request,
    /// Of the request's key, for the index (which keeps slot numbers only).
    hash: u64,
    /// The slot of the requester's account in the users table.
    user: u32,
}

/// The request in slot `n` (a hold number, from 1), if one is there.
fn stored(requests: &[Option<Stored>], n: u32) -> Option<&Stored> {
    requests.get((n as usize).wrapping_sub(1))?.as_ref()
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

/// What one user (bare JID) has outstanding, in all and per device (full JID).
struct User {
    /// The full JID of the device that made the record, so that the usual user (one
    /// device) costs no allocation of its own.
    jid: Text,
    bare_len: usize,
    /// Of the bare JID, for the index.
    hash: u64,
    total: u32,
    /// Of the device named in `jid`.
    first: u32,
    /// Other devices (resourceparts) and theirs.
    others: Vec<(Box<str>, u32)>,
}

impl User {
    fn bare(&self) -> &str {
        &self.jid.as_str()[..self.bare_len]
    }

    fn device(&self) -> &str {
        self.jid.as_str().get(self.bare_len + 1..).unwrap_or("")
    }

    /// The count of a device (0 when it has none).
    fn count_of(&self, device: &str) -> u32 {
        if self.device() == device {
            return self.first;
        }
        self.others
            .iter()
            .find(|(d, _)| &**d == device)
            .map_or(0, |(_, n)| *n)
    }

    /// The count of a device, if it has one.
    fn of_device(&mut self, device: &str) -> Option<&mut u32> {
        if self.device() == device {
            return Some(&mut self.first);
        }
        self.others
            .iter_mut()
            .find(|(d, _)| &**d == device)
            .map(|(_, n)| n)
    }
}

/// What each user has outstanding, for the per-user and per-requester limits: one table
/// for both, so that a request touches it once. Records in slots (a freed one reused
/// first), found by an index of slot numbers by the bare JID's hash.
#[derive(Default)]
struct Users {
    records: Vec<Option<User>>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

impl Users {
    fn record(records: &[Option<User>], i: u32) -> Option<&User> {
        records.get(i as usize)?.as_ref()
    }

    /// Users with requests outstanding.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    /// Outstanding requests of the requester's account and of the requester itself;
    /// `hash`: of the account.
    fn counts(&self, hash: u64, requester: &str) -> (u32, u32) {
        let (user, device) = user_and_device(requester);
        let records = &self.records;
        let found = self.index.find(hash, |&i| {
            Self::record(records, i).is_some_and(|r| r.bare() == user)
        });
        found
            .and_then(|&i| Self::record(records, i))
            .map_or((0, 0), |r| (r.total, r.count_of(device)))
    }

    /// Counts a request unless the requester already has `limits.0` requests outstanding
    /// (RequesterFull) or its account `limits.1` (UserFull), or else `otherwise` refuses
    /// it; one probe of the index for the check and the count. `hash`: of the account.
    /// Returns the account's slot.
    fn add_within(
        &mut self,
        hash: u64,
        requester: &str,
        (user, device): (&str, &str),
        (per_requester, per_user): (u32, u32),
        otherwise: Result<(), Refusal>,
    ) -> Result<u32, Refusal> {
        let Users {
            records,
            free,
            index,
        } = self;
        let found = index.entry(
            hash,
            |&i| Self::record(records, i).is_some_and(|r| r.bare() == user),
            |&i| Self::record(records, i).map_or(0, |r| r.hash),
        );
        match found {
            Slot::Occupied(o) => {
                let i = *o.get();
                let Some(record) = records[i as usize].as_mut() else {
                    unreachable!("the index names only records in their slots")
                };
                if record.count_of(device) >= per_requester {
                    return Err(Refusal::RequesterFull);
                }
                if record.total >= per_user {
                    return Err(Refusal::UserFull);
                }
                otherwise?;
                record.total += 1;
                match record.of_device(device) {
                    Some(n) => *n += 1,
                    None => record.others.push((device.into(), 1)),
                }
                Ok(i)
            }
            Slot::Vacant(v) => {
                if per_requester == 0 {
                    return Err(Refusal::RequesterFull);
                }
                if per_user == 0 {
                    return Err(Refusal::UserFull);
                }
                otherwise?;
                let i = free.pop().unwrap_or_else(|| {
                    records.push(None);
                    (records.len() - 1) as u32
                });
                records[i as usize] = Some(User {
                    jid: Text::new(requester),
                    bare_len: user.len(),
                    hash,
                    total: 1,
                    first: 1,
                    others: Vec::new(),
                });
                v.insert(i);
                Ok(i)
            }
        }
    }

    /// Counts a request whatever the limits (one put back after a retry); `hash`: of the
    /// account. Returns the account's slot.
    fn add(&mut self, hash: u64, requester: &str) -> u32 {
        let split = user_and_device(requester);
        let counted = self.add_within(hash, requester, split, (u32::MAX, u32::MAX), Ok(()));
        counted.unwrap_or_else(|_| unreachable!("no count reaches u32::MAX"))
    }

    /// Counts a request of the account in slot `i` no longer outstanding.
    fn sub(&mut self, i: u32, requester: &str) {
        let device = user_and_device(requester).1;
        let Some(record) = self.records.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        record.total -= 1;
        if record.total == 0 {
            let hash = record.hash;
            self.records[i as usize] = None;
            if let Ok(entry) = self.index.find_entry(hash, |&j| j == i) {
                entry.remove();
            }
            self.free.push(i);
            return;
        }
        if let Some(n) = record.of_device(device) {
            *n -= 1;
        }
        record.others.retain(|(_, n)| *n > 0);
    }
}

/// The deadlines of requests that arrived under one timeout, in arrival order (so in
/// deadline order: the clock does not go back): (deadline in ms, the request's number, its
/// slot), which say whether the request is still there without a lookup.
struct Queue {
    timeout_ms: u64,
    entries: VecDeque<(u64, u64, u32)>,
}

/// One queue per timeout in force when requests arrived (one, unless a reload changed it
/// while requests were outstanding).
#[derive(Default)]
struct Deadlines {
    queues: Vec<Queue>,
    /// Entries in all queues.
    queued: usize,
    /// The queue deadlines went to last.
    last: usize,
}

impl Deadlines {
    /// Keeps the entries `live` says are of requests still in the table, and the queues
    /// that hold some or are of the timeout in force.
    fn compact(&mut self, timeout_ms: u64, live: impl Fn(u64, u32) -> bool) {
        for q in &mut self.queues {
            q.entries.retain(|&(_, seq, n)| live(seq, n));
        }
        self.drop_idle(timeout_ms);
        self.queued = self.queues.iter().map(|q| q.entries.len()).sum();
    }

    /// Drops the empty queues of timeouts no longer in force.
    fn drop_idle(&mut self, timeout_ms: u64) {
        self.queues
            .retain(|q| !q.entries.is_empty() || q.timeout_ms == timeout_ms);
    }

    fn push(&mut self, timeout_ms: u64, deadline: u64, seq: u64, n: u32) {
        if self
            .queues
            .get(self.last)
            .is_none_or(|q| q.timeout_ms != timeout_ms)
        {
            // The timeout changed (a reload): the queue of one no longer in force goes
            // once its requests are gone.
            self.drop_idle(timeout_ms);
            self.last = match self.queues.iter().position(|q| q.timeout_ms == timeout_ms) {
                Some(i) => i,
                None => {
                    self.queues.push(Queue {
                        timeout_ms,
                        entries: VecDeque::new(),
                    });
                    self.queues.len() - 1
                }
            };
        }
        let queue = &mut self.queues[self.last].entries;
        // Under one timeout, in arrival order, the deadlines only grow; a clock that went
        // back still gets its place (at O(n)).
        if queue.back().is_none_or(|(last, _, _)| *last <= deadline) {
            queue.push_back((deadline, seq, n));
        } else {
            let at = queue.partition_point(|(d, _, _)| *d <= deadline);
            queue.insert(at, (deadline, seq, n));
        }
        self.queued += 1;
    }

    /// Takes the entries due at `limit` (ms), queue by queue.
    fn due(&mut self, limit: u64) -> Vec<(u64, u32)> {
        let mut due = Vec::new();
        for q in &mut self.queues {
            while q
                .entries
                .front()
                .is_some_and(|(deadline, _, _)| *deadline <= limit)
            {
                let (_, seq, n) = q.entries.pop_front().expect("front just seen");
                due.push((seq, n));
            }
        }
        self.queued -= due.len();
        due
    }
}

/// The table of outstanding requests, bounded in total, per requester (full JID), per
/// user (bare JID) and per domain.
pub struct PendingTable {
    /// Requests by hold number (number n in `requests[n - 1]`); `None`: a free number, or
    /// a request taken out and not yet released.
    requests: Vec<Option<Stored>>,
    /// Numbers given back, the last one first out.
    free: Vec<u32>,
    /// The numbers of the requests in `requests`, by the hash of their key.
    index: HashTable<u32>,
    /// One keyed hash for the requests' keys and the users' (`hashes`).
    hasher: RandomState,
    /// Per user and per requester.
    per_user: Users,
    deadlines: Deadlines,
    /// Only requests whose domain is capped are counted.
    per_domain: Tally,
    seq: u64,
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
            requests: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            per_user: Users::default(),
            deadlines: Deadlines::default(),
            per_domain: Tally::default(),
            seq: 0,
            timeout,
            max_total,
            max_per_requester,
            max_per_user: u32::MAX,
            max_per_domain: u32::MAX,
        }
    }

    /// Number of outstanding requests.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Outstanding requests of one requester.
    pub fn of_requester(&self, requester: &str) -> u32 {
        let hash = user_hash(&self.hasher, user_and_device(requester).0);
        self.per_user.counts(hash, requester).1
    }

    /// Outstanding requests held by one resource (O(n); the resource set keeps the live
    /// count, this is the tests' independent check).
    #[cfg(test)]
    pub fn of_resource(&self, resource: &str) -> usize {
        self.requests
            .iter()
            .flatten()
            .filter(|s| &*s.request.resource == resource)
            .count()
    }

    /// Hold numbers handed out and not given back with `release`.
    #[cfg(test)]
    pub fn numbers_out(&self) -> usize {
        self.requests.len() - self.free.len()
    }

    /// Outstanding requests of one user (bare JID).
    pub fn of_user(&self, user: &str) -> u32 {
        self.per_user.counts(user_hash(&self.hasher, user), user).0
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
        let (user, device) = user_and_device(requester);
        let (hash, account) = hashes(&self.hasher, requester, user, id);
        let domain = cap_domain.then(|| user_and_domain(requester).1);
        let otherwise = if domain.is_some_and(|d| self.per_domain.get(d) >= self.max_per_domain) {
            Err(Refusal::DomainFull)
        } else if self.index.len() >= self.max_total {
            Err(Refusal::TableFull)
        } else {
            Ok(())
        };
        let limits = (self.max_per_requester, self.max_per_user);
        let PendingTable {
            requests,
            free,
            index,
            per_user,
            ..
        } = self;
        // Each index probed once: the lookup that finds no duplicate is the one that
        // inserts.
        let vacant = match index.entry(
            hash,
            |&n| stored(requests, n).is_some_and(|s| s.request.key.is_key(requester, id)),
            |&n| stored(requests, n).map_or(0, |s| s.hash),
        ) {
            Slot::Occupied(_) => return Err(Refusal::DuplicateId),
            Slot::Vacant(vacant) => vacant,
        };
        let user = per_user.add_within(account, requester, (user, device), limits, otherwise)?;
        // A free number whose slot holds a request (released twice: the router's bug) is
        // skipped rather than overwritten.
        let n = loop {
            match free.pop() {
                Some(n) if stored(requests, n).is_some() => continue,
                Some(n) => break n,
                None => {
                    requests.push(None);
                    break requests.len() as u32;
                }
            }
        };
        vacant.insert(n);
        if let Some(domain) = domain {
            self.per_domain.add(domain);
        }
        self.seq += 1;
        let deadline = millis(now + self.timeout);
        self.requests[n as usize - 1] = Some(Stored {
            request: Request {
                key: Text::key(requester, id),
                requester_len: requester.len() as u32,
                resource,
                shape: shape.into(),
                seq: self.seq,
                held: u64::from(n),
                earlier: Vec::new(),
                deadline,
                capped: cap_domain,
            },
            hash,
            user,
        });
        self.queue_deadline(deadline, self.seq, n);
        Ok(u64::from(n))
    }

    /// The shim no longer holds the stanza of the request it held under `held` (the
    /// answer that says so is on its way): the number may be handed out again. Only once
    /// the shim has applied that answer, which it does before it routes the next stanza.
    pub fn release(&mut self, held: u64) {
        let Ok(n) = u32::try_from(held) else { return };
        // A number still in use is not given out again (a router that released the
        // wrong number would otherwise have two requests share a slot).
        if (1..=self.requests.len()).contains(&(n as usize)) && stored(&self.requests, n).is_none()
        {
            self.free.push(n);
        }
    }

    /// Puts a request taken out of the table back, now held by another resource; it keeps
    /// its number (its slot, which waited for it) and deadline (its place in the deadline
    /// queue, which the table has not compacted since: nothing is inserted in between),
    /// and the resource it leaves joins `earlier`.
    pub fn retarget(&mut self, mut request: Request, resource: Arc<str>) {
        let left = std::mem::replace(&mut request.resource, resource);
        request.earlier.push(left);
        self.put(request);
    }

    fn put(&mut self, request: Request) {
        let (requester, id) = (request.requester(), request.id());
        let (hash, account) = hashes(&self.hasher, requester, user_and_device(requester).0, id);
        let user = self.per_user.add(account, requester);
        if request.capped {
            self.per_domain.add(user_and_domain(requester).1);
        }
        let n = request.held as u32;
        let requests = &mut self.requests;
        debug_assert!(stored(requests, n).is_none(), "slot {n} taken while out");
        self.index
            .insert_unique(hash, n, |&m| stored(requests, m).map_or(0, |s| s.hash));
        requests[n as usize - 1] = Some(Stored {
            request,
            hash,
            user,
        });
    }

    /// Queues the deadline of the request just put in the table, under the current
    /// timeout; drops the deadlines of answered requests once the queues hold twice as
    /// many as the table held before (so they stay O(table), at O(1) amortized per
    /// request).
    fn queue_deadline(&mut self, deadline: u64, seq: u64, n: u32) {
        let timeout_ms = millis(self.timeout);
        let most = 2 * self.index.len().saturating_sub(1) + 1024;
        if self.deadlines.queued >= most {
            let requests = &self.requests;
            self.deadlines.compact(timeout_ms, |seq, n| {
                stored(requests, n).is_some_and(|s| s.request.seq == seq)
            });
        }
        self.deadlines.push(timeout_ms, deadline, seq, n);
    }

    /// Takes the request in slot `n` (the index's entry for it already gone).
    fn take_slot(&mut self, n: u32) -> Option<Request> {
        let Stored { request, user, .. } = self.requests.get_mut(n as usize - 1)?.take()?;
        let requester = request.requester();
        self.per_user.sub(user, requester);
        if request.capped {
            self.per_domain.sub(user_and_domain(requester).1);
        }
        Some(request)
    }

    /// Takes the request in slot `n` out of the index and the table.
    fn remove_slot(&mut self, n: u32) -> Option<Request> {
        let hash = stored(&self.requests, n)?.hash;
        if let Ok(entry) = self.index.find_entry(hash, |&m| m == n) {
            entry.remove();
        }
        self.take_slot(n)
    }

    /// Takes a request by requester and id, whoever holds it (outbound requests, whose
    /// answer comes from the user they were sent to).
    pub fn take(&mut self, requester: &str, id: &str) -> Option<Request> {
        self.take_from(requester, id, None).ok()
    }

    /// Takes the request a reply answers, if the reply comes from the right resource.
    pub fn take_reply(
        &mut self,
        requester: &str,
        id: &str,
        from_resource: &str,
    ) -> Result<Request, Mismatch> {
        self.take_from(requester, id, Some(from_resource))
    }

    /// Takes `requester`'s request `id`, if `resource` (when given) holds it.
    fn take_from(
        &mut self,
        requester: &str,
        id: &str,
        resource: Option<&str>,
    ) -> Result<Request, Mismatch> {
        let hash = key_hash(&self.hasher, requester, id);
        let requests = &self.requests;
        let Ok(found) = self.index.find_entry(hash, |&n| {
            stored(requests, n).is_some_and(|s| s.request.key.is_key(requester, id))
        }) else {
            return Err(Mismatch::Unknown);
        };
        let n = *found.get();
        if resource.is_some_and(|r| stored(requests, n).is_none_or(|s| &*s.request.resource != r)) {
            return Err(Mismatch::WrongResource);
        }
        found.remove();
        self.take_slot(n).ok_or(Mismatch::Unknown)
    }

    /// The numbers of the requests `pick` chooses, in slot order (O(slots); rare).
    fn numbers_where(&self, pick: impl Fn(&Stored) -> bool) -> Vec<u32> {
        (1..=self.requests.len() as u32)
            .filter(|&n| stored(&self.requests, n).is_some_and(&pick))
            .collect()
    }

    /// Takes every request held by a resource that went away (O(n); rare).
    pub fn take_resource(&mut self, resource: &str) -> Vec<Request> {
        let numbers = self.numbers_where(|s| &*s.request.resource == resource);
        numbers
            .into_iter()
            .filter_map(|n| self.remove_slot(n))
            .collect()
    }

    /// Takes every outstanding request (the target revoked or errored).
    pub fn take_all(&mut self) -> Vec<Request> {
        let numbers = self.numbers_where(|_| true);
        self.index.clear();
        numbers
            .into_iter()
            .filter_map(|n| self.take_slot(n))
            .collect()
    }

    /// Takes the requests whose deadline has passed, oldest first.
    pub fn expire(&mut self, now: f64) -> Vec<Request> {
        let due = self.deadlines.due(millis(now));
        let mut out = Vec::with_capacity(due.len());
        for (seq, n) in due {
            // Another request in the slot, or none: answered (or lost) before its deadline.
            if stored(&self.requests, n).is_some_and(|s| s.request.seq == seq) {
                out.extend(self.remove_slot(n));
            }
        }
        if self.deadlines.queues.len() > 1 {
            out.sort_by_key(|r| (r.deadline, r.seq));
        }
        out
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
                && t.deadlines.queued == 0
                && t.deadlines.queues.iter().all(|q| q.entries.is_empty())
                && t.per_user.len() == 0
                && t.per_user.records.iter().all(Option::is_none)
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
            t.deadlines.queues.len(),
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
    fn a_clock_that_went_back_still_expires_in_deadline_order() {
        let mut t = PendingTable::new(10.0, 10, 10);
        for (requester, now) in [("u@x/a", 5.0), ("v@x/a", 2.0), ("w@x/a", 3.0)] {
            t.insert(requester, "1", "r".into(), Method::Get, now, false)
                .unwrap();
        }
        assert!(t.expire(11.9).is_empty());
        let order: Vec<_> = t
            .expire(15.0)
            .iter()
            .map(|r| r.requester().to_owned())
            .collect();
        assert_eq!(order, ["v@x/a", "w@x/a", "u@x/a"]);
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
            let answered = t.take_reply("u@x/a", &id, "r").unwrap();
            t.release(answered.held);
            let queued: usize = t.deadlines.queues.iter().map(|q| q.entries.len()).sum();
            assert_eq!(queued, t.deadlines.queued);
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
    fn a_deadline_left_by_an_answered_request_does_not_expire_the_next_in_its_slot() {
        let mut t = PendingTable::new(10.0, 10, 10);
        let first = t
            .insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        let answered = t.take_reply("u@x/a", "1", "r").unwrap();
        t.release(answered.held);
        let next = t
            .insert("v@x/a", "1", "r".into(), Method::Get, 5.0, false)
            .unwrap();
        assert_eq!(next, first, "the number, and the slot, came back");
        assert!(t.expire(10.0).is_empty(), "the first request's deadline");
        let gone = t.expire(15.0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].requester(), "v@x/a");
    }

    #[test]
    fn deadlines_follow_their_requests_through_reused_numbers_and_retries() {
        let mut t = PendingTable::new(1.0e6, 100, 100);
        t.insert("old@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        // A pseudo-random mix of requests, answers and retargets; answered numbers are
        // released (and reused), as the router does.
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
                let request = t.take(&requester, &id).unwrap();
                if roll == 9 {
                    t.retarget(request, "r2".into());
                    open.push((requester, id));
                } else {
                    t.release(request.held);
                }
            }
            if i % 50_021 == 0 {
                assert_eq!(t.len(), open.len() + 1);
                assert!(
                    t.numbers_out() == t.len(),
                    "numbers of answered requests came back"
                );
                assert!(
                    t.deadlines.queued <= 2 * t.len() + 1024,
                    "{} queued",
                    t.deadlines.queued
                );
            }
        }
        assert!(
            t.requests.len() <= 101,
            "{} slots for at most 100 requests",
            t.requests.len()
        );
        let gone = t.expire(2.0e6);
        assert_eq!(
            gone.len(),
            open.len() + 1,
            "every request still outstanding expires"
        );
        assert!(gone.iter().any(|r| r.requester() == "old@x/a"));
        assert!(t.is_empty() && t.per_user.len() == 0);
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
        assert!(t.per_user.len() == 2 && t.len() == 3);
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
    fn a_number_released_while_in_use_or_twice_is_not_shared() {
        let mut t = PendingTable::new(10.0, 10, 10);
        let live = t
            .insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.release(live); // still outstanding: not given out
        let answered = t
            .insert("u@x/a", "2", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.take_reply("u@x/a", "2", "r").unwrap();
        t.release(answered);
        t.release(answered); // twice
        let numbers: Vec<u64> = ["3", "4"]
            .iter()
            .map(|id| {
                t.insert("u@x/a", id, "r".into(), Method::Get, 0.0, false)
                    .unwrap()
            })
            .collect();
        assert!(
            !numbers.contains(&live) && numbers[0] != numbers[1],
            "{live} {numbers:?}"
        );
        for id in ["1", "3", "4"] {
            assert!(t.take_reply("u@x/a", id, "r").is_ok(), "request {id}");
        }
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
    fn one_pass_hashes_the_key_and_the_account_as_lookups_do() {
        let t = table();
        for (requester, id) in [
            ("u@x/a", "1"),
            (
                "a-requester-longer-than-inline@a-long-domain.example.org/device",
                "id-1",
            ),
            ("", ""),
            ("u@x", "1"),
            ("a@x", "b/c"),
            ("é@x/ü", "\u{1F600}"),
        ] {
            let user = user_and_device(requester).0;
            assert_eq!(
                hashes(&t.hasher, requester, user, id),
                (
                    key_hash(&t.hasher, requester, id),
                    user_hash(&t.hasher, user)
                ),
                "{requester} {id}"
            );
            let key = Text::key(requester, id);
            assert!(key.is_key(requester, id));
            assert_eq!(key, Text::new(&format!("{requester}\0{id}")));
        }
        assert!(!Text::key("u@x/a", "1").is_key("u@x", "a1"));
        assert!(!Text::key("u@x/a", "1").is_key("u@x/a", "12"));
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
