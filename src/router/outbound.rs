//! Requests the implementing client starts: an iq get/set from a target resource to a
//! user's JAT address goes to the user from the component host, under an id of the
//! proxy's own (two resources may use the same id), and the user's answer goes back to
//! that resource with its own id. Tracked, bounded and timed out like inbound requests.

use crate::config::Config;
use crate::pending::{Kind, PendingTable, Refusal};
use crate::router::{
    Answer, Proxy, StanzaError, Verdict, NO_ID, NO_OUTBOUND, TABLE_FULL, TIMED_OUT,
};
use std::collections::HashMap;

/// The implementing client addressed a translated address the proxy cannot map back.
pub const UNKNOWN_JAT: StanzaError = StanzaError {
    kind: "cancel",
    condition: "item-not-found",
    text: "No user behind this translated address (unknown or expired)",
};

/// Too many requests of the implementing client to one user are outstanding.
pub const USER_FULL: StanzaError = StanzaError {
    kind: "wait",
    condition: "resource-constraint",
    text: "Too many outstanding requests to this user",
};

/// Outstanding requests of the implementing client to users.
pub struct Outbound {
    /// Keyed by (user, the proxy's id); the resource is the target resource that asked.
    table: PendingTable,
    /// The proxy's id number -> the id the asking resource used.
    original: HashMap<u64, String>,
    /// Next id number; ids on the wire are "cp" + hex.
    next: u64,
}

impl Outbound {
    /// An empty table with the component's limits.
    pub fn new(config: &Config) -> Self {
        Outbound {
            table: PendingTable::new(
                config.timeout,
                config.max_pending,
                config.max_pending_per_requester,
            ),
            original: HashMap::new(),
            next: 0,
        }
    }

    /// Applies changed limits (a reload).
    pub fn reconfigure(&mut self, config: &Config) {
        self.table.timeout = config.timeout;
        self.table.max_total = config.max_pending;
        self.table.max_per_requester = config.max_pending_per_requester;
    }

    /// Number of outstanding outbound requests.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when none is outstanding.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

fn wire_id(n: u64) -> String {
    format!("cp{n:x}")
}

fn number_of(id: &str) -> Option<u64> {
    u64::from_str_radix(id.strip_prefix("cp")?, 16).ok()
}

impl Proxy {
    /// An iq get/set from target resource `resource` to the JAT address `jat`.
    pub(crate) fn outbound_request(
        &mut self,
        resource: &str,
        jat: &str,
        id: Option<&str>,
        kind: Kind,
        now: f64,
    ) -> Verdict {
        if !self.config.outbound {
            return Verdict::Error(NO_OUTBOUND);
        }
        let Some(id) = id else {
            return Verdict::Error(NO_ID);
        };
        let Ok(user) = self.jat.decode(jat, now) else {
            return Verdict::Error(UNKNOWN_JAT);
        };
        self.outbound.next += 1;
        let n = self.outbound.next;
        let wire = wire_id(n);
        let holder = self
            .resources
            .name_of(resource)
            .unwrap_or_else(|| resource.into());
        match self.outbound.table.insert(&user, &wire, holder, kind, now) {
            Ok(_) => {}
            Err(Refusal::DuplicateId) => unreachable!("fresh ids are unique"),
            Err(Refusal::RequesterFull) => return Verdict::Error(USER_FULL),
            Err(Refusal::TableFull) => return Verdict::Error(TABLE_FULL),
        }
        self.outbound.original.insert(n, id.to_owned());
        self.counters.outbound += 1;
        Verdict::Rewrite {
            to: user,
            from: self.config.host.clone(),
            id: wire,
        }
    }

    /// A user's iq result/error to the component: the answer to an outbound request, if any.
    pub(crate) fn outbound_reply(
        &mut self,
        user: &str,
        id: Option<&str>,
        now: f64,
    ) -> Option<Verdict> {
        let id = id?;
        let n = number_of(id)?;
        let request = self.outbound.table.take(user, id)?;
        let original = self.outbound.original.remove(&n)?;
        Some(Verdict::Rewrite {
            to: format!("{}/{}", self.config.target, request.resource),
            from: format!("{}/{}", self.config.host, self.jat.encode(user, now)),
            id: original,
        })
    }

    /// Outbound requests past their deadline: the asking resource gets remote-server-timeout.
    pub(crate) fn outbound_expire(&mut self, now: f64) -> Vec<Answer> {
        let expired = self.outbound.table.expire(now);
        let mut out = Vec::with_capacity(expired.len());
        for r in expired {
            let Some(n) = number_of(&r.id) else { continue };
            let Some(original) = self.outbound.original.remove(&n) else {
                continue;
            };
            out.push(Answer {
                to: format!("{}/{}", self.config.target, r.resource),
                from: format!(
                    "{}/{}",
                    self.config.host,
                    self.jat.encode(&r.requester, now)
                ),
                id: original,
                error: TIMED_OUT,
                seq: 0,
            });
        }
        out
    }

    /// A target resource went away: nobody is left to give its outbound answers to.
    pub(crate) fn outbound_forget(&mut self, resource: &str) {
        for r in self.outbound.table.take_resource(resource) {
            if let Some(n) = number_of(&r.id) {
                self.outbound.original.remove(&n);
            }
        }
    }
}
