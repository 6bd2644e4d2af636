//! Outstanding requests: what was forwarded to which resource, until when.
//!
//! This is what lets the proxy keep RFC 6120's promise (every get/set gets exactly one
//! answer): a reply is accepted only from the resource the request went to, for the id it
//! carried and the requester who sent it; what is never answered is timed out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Whether the forwarded request was a get (safe to retry) or a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `type='get'`
    Get,
    /// `type='set'`
    Set,
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

/// An outstanding request taken out of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The requester's full JID.
    pub requester: String,
    /// The iq id, as the requester sent it.
    pub id: String,
    /// The resource of the target it went to.
    pub resource: Arc<str>,
    /// Get or set.
    pub method: Method,
    /// Number the shim holds the request stanza under (for a retry).
    pub seq: u64,
    /// The resources it went to before `resource` (a retry), oldest first.
    pub earlier: Vec<Arc<str>>,
    /// (deadline in ms, seq): kept across a retry, so the timeout counts from arrival.
    deadline: (u64, u64),
}

struct Entry {
    resource: Arc<str>,
    method: Method,
    earlier: Vec<Arc<str>>,
    deadline: (u64, u64),
}

/// Outstanding requests counted by a part of the requester's address.
#[derive(Default)]
struct Tally(HashMap<String, u32>);

impl Tally {
    fn get(&self, key: &str) -> u32 {
        self.0.get(key).copied().unwrap_or(0)
    }

    fn add(&mut self, key: &str) {
        // No key copy when the key already has requests outstanding (the usual case).
        match self.0.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(key.to_owned(), 1);
            }
        }
    }

    fn sub(&mut self, key: &str) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }
}

/// The requester's account (bare JID) and domain.
pub fn user_and_domain(requester: &str) -> (&str, &str) {
    let bare = requester
        .split_once('/')
        .map_or(requester, |(bare, _)| bare);
    let domain = bare.split_once('@').map_or(bare, |(_, domain)| domain);
    (bare, domain)
}

/// The table of outstanding requests, bounded in total, per requester (full JID), per
/// user (bare JID) and per domain.
pub struct PendingTable {
    /// Key: requester, NUL, id (NUL cannot occur in XML, so the split is unambiguous).
    entries: HashMap<Arc<str>, Entry>,
    /// (deadline in ms, sequence) -> key: expiry in deadline order, O(log n).
    deadlines: BTreeMap<(u64, u64), Arc<str>>,
    per_requester: Tally,
    per_user: Tally,
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

fn key_of(requester: &str, id: &str) -> String {
    let mut key = String::with_capacity(requester.len() + id.len() + 1);
    key.push_str(requester);
    key.push('\0');
    key.push_str(id);
    key
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('\0').unwrap_or((key, ""))
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
            entries: HashMap::new(),
            deadlines: BTreeMap::new(),
            per_requester: Tally::default(),
            per_user: Tally::default(),
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
        self.entries.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Outstanding requests of one requester.
    pub fn of_requester(&self, requester: &str) -> u32 {
        self.per_requester.get(requester)
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

    /// Outstanding requests of one user (bare JID).
    pub fn of_user(&self, user: &str) -> u32 {
        self.per_user.get(user)
    }

    /// Outstanding requests of one domain.
    pub fn of_domain(&self, domain: &str) -> u32 {
        self.per_domain.get(domain)
    }

    /// Records a forwarded request and returns its number, or says why it may not be
    /// forwarded. `cap_domain`: the requester's domain is held to `max_per_domain` (a
    /// domain this server does not host).
    pub fn insert(
        &mut self,
        requester: &str,
        id: &str,
        resource: Arc<str>,
        method: Method,
        now: f64,
        cap_domain: bool,
    ) -> Result<u64, Refusal> {
        let key = key_of(requester, id);
        if self.entries.contains_key(key.as_str()) {
            return Err(Refusal::DuplicateId);
        }
        if self.of_requester(requester) >= self.max_per_requester {
            return Err(Refusal::RequesterFull);
        }
        let (user, domain) = user_and_domain(requester);
        if self.per_user.get(user) >= self.max_per_user {
            return Err(Refusal::UserFull);
        }
        if cap_domain && self.per_domain.get(domain) >= self.max_per_domain {
            return Err(Refusal::DomainFull);
        }
        if self.entries.len() >= self.max_total {
            return Err(Refusal::TableFull);
        }
        self.seq += 1;
        let deadline = (millis(now + self.timeout), self.seq);
        self.put(key, requester, resource, method, Vec::new(), deadline);
        Ok(self.seq)
    }

    /// Puts a request taken out of the table back, now held by another resource; it keeps
    /// its number and deadline, and the resource it leaves joins `earlier`.
    pub fn retarget(&mut self, request: Request, resource: Arc<str>) {
        let key = key_of(&request.requester, &request.id);
        let Request {
            requester,
            method,
            deadline,
            resource: left,
            mut earlier,
            ..
        } = request;
        earlier.push(left);
        self.put(key, &requester, resource, method, earlier, deadline);
    }

    fn put(
        &mut self,
        key: String,
        requester: &str,
        resource: Arc<str>,
        method: Method,
        earlier: Vec<Arc<str>>,
        deadline: (u64, u64),
    ) {
        let key: Arc<str> = Arc::from(key);
        self.deadlines.insert(deadline, key.clone());
        self.entries.insert(
            key,
            Entry {
                resource,
                method,
                earlier,
                deadline,
            },
        );
        let (user, domain) = user_and_domain(requester);
        self.per_requester.add(requester);
        self.per_user.add(user);
        self.per_domain.add(domain);
    }

    /// Takes a request by requester and id, whoever holds it (outbound requests, whose
    /// answer comes from the user they were sent to).
    pub fn take(&mut self, requester: &str, id: &str) -> Option<Request> {
        self.remove(&key_of(requester, id))
    }

    /// Takes the request a reply answers, if the reply comes from the right resource.
    pub fn take_reply(
        &mut self,
        requester: &str,
        id: &str,
        from_resource: &str,
    ) -> Result<Request, Mismatch> {
        let key = key_of(requester, id);
        match self.entries.get(key.as_str()) {
            None => Err(Mismatch::Unknown),
            Some(e) if &*e.resource != from_resource => Err(Mismatch::WrongResource),
            Some(_) => Ok(self.remove(&key).expect("entry just seen")),
        }
    }

    /// Takes every request held by a resource that went away (O(n); rare).
    pub fn take_resource(&mut self, resource: &str) -> Vec<Request> {
        let keys: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| &*e.resource == resource)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// Takes every outstanding request (the target revoked or errored).
    pub fn take_all(&mut self) -> Vec<Request> {
        let keys: Vec<Arc<str>> = self.entries.keys().cloned().collect();
        keys.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// Takes the requests whose deadline has passed, oldest first.
    pub fn expire(&mut self, now: f64) -> Vec<Request> {
        let limit = millis(now);
        let mut out = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > limit {
                break;
            }
            let key = entry.remove();
            if let Some(request) = self.remove(&key) {
                out.push(request);
            }
        }
        out
    }

    fn remove(&mut self, key: &str) -> Option<Request> {
        let (key, entry) = self.entries.remove_entry(key)?;
        self.deadlines.remove(&entry.deadline);
        let (requester, id) = split_key(&key);
        let (user, domain) = user_and_domain(requester);
        self.per_requester.sub(requester);
        self.per_user.sub(user);
        self.per_domain.sub(domain);
        Some(Request {
            requester: requester.to_owned(),
            id: id.to_owned(),
            resource: entry.resource,
            method: entry.method,
            seq: entry.deadline.1,
            earlier: entry.earlier,
            deadline: entry.deadline,
        })
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
        assert_eq!((r.requester.as_str(), r.id.as_str()), ("u@x/a", "1"));
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
        assert_eq!(gone[0].requester, "u@x/a");
        assert_eq!(t.expire(100.0).len(), 1);
        assert!(
            t.is_empty()
                && t.deadlines.is_empty()
                && t.per_requester.0.is_empty()
                && t.per_user.0.is_empty()
                && t.per_domain.0.is_empty()
        );
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
        assert!(t.is_empty() && t.deadlines.is_empty());
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
        assert_eq!((gone.seq, &*gone.resource), (seq, "r2"));
        assert_eq!(gone.earlier, vec![Arc::<str>::from("r1")]);
    }

    #[test]
    fn ids_with_nul_free_text_keep_requesters_apart() {
        let mut t = PendingTable::new(10.0, 10, 10);
        t.insert("a@x/b", "c", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        t.insert("a@x", "b/c", "r".into(), Method::Get, 0.0, false)
            .unwrap();
        assert_eq!(t.take_reply("a@x", "b/c", "r").unwrap().requester, "a@x");
        assert_eq!(t.take_reply("a@x/b", "c", "r").unwrap().id, "c");
    }
}
