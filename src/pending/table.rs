//! The table of outstanding requests, and the limits it keeps them within.
//!
//! Requests live in slots of a dense array, numbered by the hold number the shim keeps
//! their stanza under; a slot given back is the next one handed out, so the slots in use
//! stay few and lately touched. An index of slot numbers by hash (4 bytes a bucket, small
//! enough to stay in cache) finds them. Each table is hashed once per request: the key's
//! hash and the user's come from one pass over the requester's address.

use super::deadlines::{millis, Deadlines};
use super::request::{Method, Request, Shape};
use super::tally::Tally;
use super::users::{user_and_device, Users};
use crate::address::user_and_domain;
use hashbrown::hash_table::Entry as Slot;
use hashbrown::HashTable;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

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
    limits: Limits,
}

/// The bounds a table keeps its requests within, given together (at creation and at a
/// reload) so that the table alone decides what a request counts against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Seconds a request may stay unanswered (a new value applies to new requests).
    pub timeout: f64,
    /// Most requests outstanding at once.
    pub max_total: usize,
    /// Most requests one requester (full JID) may have outstanding.
    pub max_per_requester: u32,
    /// Most requests one user (bare JID) may have outstanding.
    pub max_per_user: u32,
    /// Most requests one domain may have outstanding, where the domain is capped.
    pub max_per_domain: u32,
}

impl PendingTable {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Self {
        PendingTable {
            requests: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            per_user: Users::default(),
            deadlines: Deadlines::default(),
            per_domain: Tally::default(),
            seq: 0,
            limits,
        }
    }

    /// New limits (a reload): they apply to requests that arrive from now on, and a new
    /// timeout to their deadlines only; nothing outstanding is refused or expired for it.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
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
            .filter(|s| &**s.request.resource() == resource)
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
        let otherwise =
            if domain.is_some_and(|d| self.per_domain.get(d) >= self.limits.max_per_domain) {
                Err(Refusal::DomainFull)
            } else if self.index.len() >= self.limits.max_total {
                Err(Refusal::TableFull)
            } else {
                Ok(())
            };
        let limits = (self.limits.max_per_requester, self.limits.max_per_user);
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
            |&n| stored(requests, n).is_some_and(|s| s.request.is(requester, id)),
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
        let deadline = millis(now + self.limits.timeout);
        let request = Request::new(
            (requester, id),
            resource,
            shape.into(),
            self.seq,
            u64::from(n),
            deadline,
            cap_domain,
        );
        self.requests[n as usize - 1] = Some(Stored {
            request,
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

    /// Takes the number `held` back from the numbers given back, unless it was handed out
    /// again: the answer that let go of it never reached the shim, which still holds the
    /// stanza, so the number waits for the next `release` (the one that goes with the
    /// answer owed instead). Whether it was taken back.
    pub fn withhold(&mut self, held: u64) -> bool {
        let Ok(n) = u32::try_from(held) else {
            return false;
        };
        // Released last, so on top, unless another was released since.
        match self.free.iter().rposition(|&m| m == n) {
            Some(at) => {
                self.free.remove(at);
                true
            }
            None => false,
        }
    }

    /// Forgets the request held under `held` as if it had never been inserted: out of the
    /// index and every count, its deadline left to find another request (or none) in its
    /// slot, its number free again. For a forward the shim never received (it answers the
    /// requester itself).
    pub fn forget(&mut self, held: u64) -> Option<Request> {
        let n = u32::try_from(held).ok()?;
        let request = self.remove_slot(n)?;
        self.release(held);
        Some(request)
    }

    /// Puts a request taken out of the table back, now held by another resource; it keeps
    /// its number (its slot, which waited for it) and deadline (its place in the deadline
    /// queue, which the table has not compacted since: nothing is inserted in between),
    /// and the resource it leaves joins `earlier`. `asleep`: that resource's stream
    /// hibernates (stream management): it may still answer after it resumes, and its
    /// result is accepted too (`take_reply` with `or_asleep`).
    pub fn retarget(&mut self, mut request: Request, resource: Arc<str>, asleep: bool) {
        request.move_to(resource, asleep);
        self.put(request);
    }

    /// Puts a request taken out of the table back as it was (nowhere else to move it): it
    /// keeps its number and deadline, as in `retarget`.
    pub fn put_back(&mut self, request: Request) {
        self.put(request);
    }

    fn put(&mut self, request: Request) {
        let (requester, id) = (request.requester(), request.id());
        let (hash, account) = hashes(&self.hasher, requester, user_and_device(requester).0, id);
        let user = self.per_user.add(account, requester);
        if request.capped() {
            self.per_domain.add(user_and_domain(requester).1);
        }
        let n = request.held() as u32;
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
        let timeout_ms = millis(self.limits.timeout);
        let most = 2 * self.index.len().saturating_sub(1) + 1024;
        if self.deadlines.queued() >= most {
            let requests = &self.requests;
            self.deadlines.compact(timeout_ms, |seq, n| {
                stored(requests, n).is_some_and(|s| s.request.seq() == seq)
            });
        }
        self.deadlines.push(timeout_ms, deadline, seq, n);
    }

    /// Takes the request in slot `n` (the index's entry for it already gone).
    fn take_slot(&mut self, n: u32) -> Option<Request> {
        let Stored { request, user, .. } = self.requests.get_mut(n as usize - 1)?.take()?;
        let requester = request.requester();
        self.per_user.sub(user, requester);
        if request.capped() {
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

    /// Takes the request a reply answers, if the reply comes from the right resource: the
    /// one that holds it or, with `or_asleep`, one that left it while it hibernated
    /// (`retarget` with `asleep`; the first answer wins).
    pub fn take_reply(
        &mut self,
        requester: &str,
        id: &str,
        from_resource: &str,
        or_asleep: bool,
    ) -> Result<Request, Mismatch> {
        self.take_from(requester, id, Some((from_resource, or_asleep)))
    }

    /// Takes `requester`'s request `id`, if `resource` (when given) holds it, or left it
    /// asleep when that is accepted too.
    fn take_from(
        &mut self,
        requester: &str,
        id: &str,
        resource: Option<(&str, bool)>,
    ) -> Result<Request, Mismatch> {
        let hash = key_hash(&self.hasher, requester, id);
        let requests = &self.requests;
        let Ok(found) = self.index.find_entry(hash, |&n| {
            stored(requests, n).is_some_and(|s| s.request.is(requester, id))
        }) else {
            return Err(Mismatch::Unknown);
        };
        let n = *found.get();
        let accepted = |(r, or_asleep): (&str, bool)| {
            stored(requests, n).is_some_and(|s| {
                &**s.request.resource() == r || (or_asleep && s.request.left_asleep(r))
            })
        };
        if resource.is_some_and(|r| !accepted(r)) {
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
        let numbers = self.numbers_where(|s| &**s.request.resource() == resource);
        numbers
            .into_iter()
            .filter_map(|n| self.remove_slot(n))
            .collect()
    }

    /// Takes the gets held by a resource (its stream hibernates: they go elsewhere, where
    /// the sets it holds wait for it; O(n), rare).
    pub fn take_gets(&mut self, resource: &str) -> Vec<Request> {
        let numbers = self.numbers_where(|s| {
            s.request.method() == Method::Get && &**s.request.resource() == resource
        });
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
            if stored(&self.requests, n).is_some_and(|s| s.request.seq() == seq) {
                out.extend(self.remove_slot(n));
            }
        }
        if self.deadlines.queues() > 1 {
            out.sort_by_key(|r| (r.deadline(), r.seq()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
