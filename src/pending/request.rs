//! One outstanding request as the router sees it: who asked, under which id, which
//! resource holds it and which held it before, how to rebuild it for a retry, and the
//! number the shim keeps its stanza under. Read-only outside the table: the table alone
//! moves a request between resources, so its counts and its record cannot disagree.

use super::text::Text;
use std::num::NonZeroU64;
use std::sync::Arc;

/// Whether the forwarded request was a get (safe to retry) or a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `type='get'`
    Get,
    /// `type='set'`
    Set,
}

/// What a retry rebuilds a request with, besides its payload, addresses and id, and
/// what decides where the retry goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Get or set.
    pub method: Method,
    /// Its xml:lang (Prosody writes the client stream's on each of its stanzas).
    pub lang: Option<Arc<str>>,
    /// The router's handle on its affinity key (opaque here): a retry goes where the key
    /// is, and takes the key along.
    pub affinity: Option<NonZeroU64>,
}

impl From<Method> for Shape {
    fn from(method: Method) -> Self {
        Shape {
            method,
            lang: None,
            affinity: None,
        }
    }
}

/// An outstanding request: in its slot of the table, or taken out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `requester NUL id`.
    key: Text,
    /// Where the requester ends in `key`.
    requester_len: u32,
    /// The resource of the target it went to.
    resource: Arc<str>,
    /// Get or set, and xml:lang.
    shape: Shape,
    /// Its number in arrival order (deadline ties, and the deadline queues).
    seq: u64,
    /// The number the shim holds the request's stanza under (for a retry), which is also
    /// its slot in the table: given back with `release` and handed out again, so that the
    /// numbers in use stay few and dense, and the shim's table of held stanzas stays a Lua
    /// array (a hash part of ever-new numbers rehashed and grew the collector's debt: a
    /// fifth of the shim's cost per request, callgrind). Until then the slot waits for the
    /// request to be put back (a retry) and nothing else takes it.
    held: u64,
    /// The resources it went to before `resource` (a retry), oldest first.
    earlier: Vec<Arc<str>>,
    /// Bit i set: `earlier[i]` was left while its stream hibernated (stream management),
    /// and its result still answers the request (the first answer wins). Only the first
    /// 32 are marked: a request moved more often than that is not seen in practice.
    asleep: u32,
    /// Deadline in ms: kept across a retry, so the timeout counts from arrival.
    deadline: u64,
    /// Counted toward its domain's cap.
    capped: bool,
}

impl Request {
    /// A request just forwarded to `resource`, held under `held`, due at `deadline` (ms).
    pub(super) fn new(
        (requester, id): (&str, &str),
        resource: Arc<str>,
        shape: Shape,
        seq: u64,
        held: u64,
        deadline: u64,
        capped: bool,
    ) -> Self {
        Request {
            key: Text::key(requester, id),
            requester_len: requester.len() as u32,
            resource,
            shape,
            seq,
            held,
            earlier: Vec::new(),
            asleep: 0,
            deadline,
            capped,
        }
    }

    /// The requester's full JID: where its answer goes.
    pub fn requester(&self) -> &str {
        self.key.part(0..self.requester_len as usize)
    }

    /// The iq id, as the requester sent it: its answer carries it.
    pub fn id(&self) -> &str {
        self.key
            .part(self.requester_len as usize + 1..self.key.len())
    }

    /// The resource of the target that holds it: the one whose reply is accepted, and
    /// whose pending count it is in.
    pub fn resource(&self) -> &Arc<str> {
        &self.resource
    }

    /// Get or set: only a get is retried after its resource went away.
    pub fn method(&self) -> Method {
        self.shape.method
    }

    /// Its xml:lang, which a retry carries.
    pub fn lang(&self) -> Option<&str> {
        self.shape.lang.as_deref()
    }

    /// The handle on its affinity key the router gave it, if any.
    pub fn affinity(&self) -> Option<NonZeroU64> {
        self.shape.affinity
    }

    /// The number the shim holds its stanza under (see the field).
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The resources it went to before this one (a retry goes to none of them).
    pub fn earlier(&self) -> &[Arc<str>] {
        &self.earlier
    }

    /// Whether this is `requester`'s request `id`.
    pub(super) fn is(&self, requester: &str, id: &str) -> bool {
        self.key.is_key(requester, id)
    }

    /// Its number in arrival order.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Its deadline in ms.
    pub(super) fn deadline(&self) -> u64 {
        self.deadline
    }

    /// Whether it counts toward its domain's cap.
    pub(super) fn capped(&self) -> bool {
        self.capped
    }

    /// Whether `resource` held it before and left it while its stream hibernated: its
    /// result still answers the request.
    pub fn left_asleep(&self, resource: &str) -> bool {
        self.asleep != 0
            && self
                .earlier
                .iter()
                .take(32)
                .enumerate()
                .any(|(i, r)| self.asleep & (1 << i) != 0 && &**r == resource)
    }

    /// Now held by `resource`; the one it leaves joins `earlier` (marked when it left
    /// asleep: its result still counts).
    pub(super) fn move_to(&mut self, resource: Arc<str>, asleep: bool) {
        let left = std::mem::replace(&mut self.resource, resource);
        if asleep && self.earlier.len() < 32 {
            self.asleep |= 1 << self.earlier.len();
        }
        self.earlier.push(left);
    }
}
