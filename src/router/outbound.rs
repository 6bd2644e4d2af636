//! Requests the implementing client starts: an iq get/set from a target resource to a
//! user's JAT address goes to the user from the component host, under an id of the
//! proxy's own (two resources may use the same id), and the user's answer goes back to
//! that resource with its own id. Tracked, bounded and timed out like inbound requests.

use super::Proxy;
use crate::config::Config;
use crate::pending::{Limits, Method, PendingTable, Refusal, Request};
use crate::verdict::{
    OutItem, Send, Verdict, NO_ID, NO_OUTBOUND, TABLE_FULL, TIMED_OUT, UNKNOWN_JAT, USER_FULL,
};
use std::collections::HashMap;

/// Outstanding requests of the implementing client to users.
pub(super) struct Outbound {
    /// Keyed by (user, the proxy's id); the resource is the target resource that asked.
    table: PendingTable,
    /// The proxy's id number -> the id the asking resource used.
    original: HashMap<u64, String>,
    /// Next id number; ids on the wire are "cp" + hex.
    next: u64,
}

/// The limits of the outbound table: the component's timeout and size, and the
/// per-requester limit applied to each user asked; no cap per account or domain (the
/// implementing client is the one asking).
fn limits(config: &Config) -> Limits {
    Limits {
        timeout: config.timeout,
        max_total: config.max_pending,
        max_per_requester: config.max_pending_per_requester,
        max_per_user: u32::MAX,
        max_per_domain: u32::MAX,
    }
}

impl Outbound {
    /// An empty table with the component's limits.
    pub(super) fn new(config: &Config) -> Self {
        Outbound {
            table: PendingTable::new(limits(config)),
            original: HashMap::new(),
            next: 0,
        }
    }

    /// Applies changed limits (a reload).
    pub(super) fn reconfigure(&mut self, config: &Config) {
        self.table.set_limits(limits(config));
    }

    /// Number of outstanding outbound requests.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// A request out of the table: its hold number is free again (nobody holds outbound
    /// stanzas, so nothing waits to let go of it), and the id the asking resource used,
    /// if it is still known.
    fn original_of(&mut self, request: &Request) -> Option<String> {
        self.table.release(request.held());
        self.original.remove(&number_of(request.id())?)
    }

    /// Hold numbers handed out and not given back (the tests' check that none leak).
    #[cfg(test)]
    pub(super) fn numbers_out(&self) -> usize {
        self.table.numbers_out()
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
    pub(super) fn outbound_request(
        &mut self,
        resource: &str,
        jat: &str,
        id: Option<&str>,
        method: Method,
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
        match self
            .outbound
            .table
            .insert(&user, &wire, holder, method, now, false)
        {
            Ok(_) => {}
            Err(Refusal::DuplicateId) => unreachable!("fresh ids are unique"),
            Err(Refusal::RequesterFull | Refusal::UserFull | Refusal::DomainFull) => {
                return Verdict::Error(USER_FULL)
            }
            Err(Refusal::TableFull) => return Verdict::Error(TABLE_FULL),
        }
        self.outbound.original.insert(n, id.to_owned());
        self.counters.outbound += 1;
        Verdict::Send(Send {
            to: user,
            from: self.config.host.clone(),
            id: Some(wire),
            hold: None,
            release: None,
        })
    }

    /// A user's iq result/error to the component: the answer to an outbound request, or
    /// nothing (counted as unsolicited).
    pub(super) fn reply_from_user(&mut self, user: &str, id: Option<&str>, now: f64) -> Verdict {
        match self.outbound_reply(user, id, now) {
            Some(verdict) => verdict,
            None => {
                self.counters.unsolicited += 1;
                Verdict::drop("iq result from a requester answers nothing")
            }
        }
    }

    fn outbound_reply(&mut self, user: &str, id: Option<&str>, now: f64) -> Option<Verdict> {
        let id = id?;
        number_of(id)?; // not one of the proxy's ids: not looked up
        let request = self.outbound.table.take(user, id)?;
        let original = self.outbound.original_of(&request)?;
        Some(Verdict::Send(Send {
            to: self.target_jid(request.resource()),
            from: self.jat_address(user, now),
            id: Some(original),
            hold: None,
            release: None,
        }))
    }

    /// Outbound requests past their deadline: the asking resource gets remote-server-timeout.
    pub(super) fn expire_outbound(&mut self, now: f64) {
        for r in self.outbound.table.expire(now) {
            let Some(original) = self.outbound.original_of(&r) else {
                continue;
            };
            let (to, from) = (
                self.target_jid(r.resource()),
                self.jat_address(r.requester(), now),
            );
            self.outbox.push(OutItem::Error {
                to,
                from,
                id: original,
                error: TIMED_OUT,
                release: None,
            });
        }
    }

    /// A target resource went away: nobody is left to give its outbound answers to.
    pub(super) fn outbound_forget(&mut self, resource: &str) {
        for r in self.outbound.table.take_resource(resource) {
            self.outbound.original_of(&r);
        }
    }
}
