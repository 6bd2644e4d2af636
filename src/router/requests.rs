//! Requests from users: forwarded to a resource of the target and tracked until exactly one
//! answer goes back (the resource's reply, or an error when it goes away or stays silent).

use super::{bare, Proxy};
use crate::address::user_and_domain;
use crate::affinity::KeyRef;
use crate::pending::{Method, Mismatch, Refusal, Request, Shape};
use crate::verdict::{
    Head, OutItem, Send, StanzaError, Verdict, ACCOUNT_FULL, ALL_HIBERNATING, DOMAIN_FULL,
    DUPLICATE_ID, INTERNAL, NOT_ADDRESSED, NO_ID, NO_RESOURCE, REQUESTER_FULL, RESOURCE_GONE,
    TABLE_FULL, TIMED_OUT,
};
use std::sync::Arc;

/// An answer with one of these conditions means the resource does not implement the
/// request: nothing happened, so another resource may take it.
const DECLINES: [&str; 2] = ["service-unavailable", "feature-not-implemented"];

impl Proxy {
    /// An iq get/set from a user (`requester`, the head's from): to a resource, or
    /// refused. A request with an affinity key (`head.affinity`) goes to the resource that
    /// has the key.
    pub(super) fn forward(
        &mut self,
        requester: &str,
        head: Head<'_>,
        method: Method,
        now: f64,
    ) -> Verdict {
        let key = match head.affinity {
            Some(text) if !self.config.affinity.is_empty() => self.keys.key(text),
            _ => None,
        };
        let shape = Shape {
            method,
            lang: head.lang.map(|lang| self.lang(lang)),
            affinity: None,
        };
        let verdict = self.try_forward(requester, head.id, key, shape, now);
        match verdict {
            Verdict::Send(_) => self.counters.forwarded += 1,
            _ => self.counters.refused += 1,
        }
        verdict
    }

    /// The xml:lang as the table keeps it: most requests carry the same one, shared.
    fn lang(&mut self, lang: &str) -> Arc<str> {
        match &self.last_lang {
            Some(last) if &**last == lang => last.clone(),
            _ => {
                let shared: Arc<str> = lang.into();
                self.last_lang = Some(shared.clone());
                shared
            }
        }
    }

    fn try_forward(
        &mut self,
        requester: &str,
        id: Option<&str>,
        affinity: Option<KeyRef>,
        mut shape: Shape,
        now: f64,
    ) -> Verdict {
        let Some(id) = id else {
            return Verdict::Error(NO_ID);
        };
        let (user, domain) = user_and_domain(requester);
        let Some((resource, key)) = self.choose_for(user, affinity, now) else {
            return Verdict::Error(if self.resources.hibernating() > 0 {
                ALL_HIBERNATING
            } else {
                NO_RESOURCE
            });
        };
        shape.affinity = key.map(KeyRef::to_bits);
        let to = self.target_jid(&resource);
        let cap_domain = self.caps_domain(domain);
        let held =
            match self
                .pending
                .insert(requester, id, resource.clone(), shape, now, cap_domain)
            {
                Ok(held) => held,
                Err(refusal) => {
                    return Verdict::Error(match refusal {
                        Refusal::DuplicateId => DUPLICATE_ID,
                        Refusal::RequesterFull => REQUESTER_FULL,
                        Refusal::TableFull => TABLE_FULL,
                        Refusal::UserFull => ACCOUNT_FULL,
                        Refusal::DomainFull => DOMAIN_FULL,
                    })
                }
            };
        self.resources.hold(&resource);
        let from = self.jat_address(requester, now);
        Verdict::Send(Send {
            to,
            from,
            id: None,
            hold: Some(held),
            release: None,
        })
    }

    /// The resource for a new request from `user`, and the handle on its affinity key:
    /// the resource that has the key while it is in rotation (draining included), else
    /// the strategy's choice, which then has the key (unless it is out of rotation, the
    /// last resort when nothing else is online: the key waits for a better one). Without
    /// a key (or without rules), the strategy's choice.
    fn choose_for(
        &mut self,
        user: &str,
        affinity: Option<KeyRef>,
        now: f64,
    ) -> Option<(Arc<str>, Option<KeyRef>)> {
        let Some(key) = affinity else {
            let resource = self.resources.choose(&mut self.rng, user, &[])?;
            return Some((resource, None));
        };
        if let Some(holder) = self.keys.entry(key, now) {
            if self.resources.in_rotation(holder) {
                return Some((holder.clone(), Some(key)));
            }
        }
        let resource = self.resources.choose(&mut self.rng, user, &[])?;
        if self.resources.in_rotation(&resource) {
            self.keys.assign(key, &resource);
        }
        Some((resource, Some(key)))
    }

    /// An iq from a target resource: a request to a user (outbound) or a reply.
    pub(super) fn iq_from_target(
        &mut self,
        head: Head<'_>,
        from_res: Option<&str>,
        to_res: Option<&str>,
        now: f64,
    ) -> Verdict {
        let is_reply = matches!(head.stanza_type, Some("result") | Some("error"));
        let Some(jat) = to_res else {
            return if is_reply {
                Verdict::drop("reply from the target to the bare component")
            } else {
                Verdict::Error(NOT_ADDRESSED)
            };
        };
        if !is_reply {
            let method = if head.stanza_type == Some("set") {
                Method::Set
            } else {
                Method::Get
            };
            let Some(resource) = from_res else {
                return Verdict::Error(NOT_ADDRESSED);
            };
            return self.outbound_request(resource, jat, head.id, method, now);
        }
        // An error's defined condition ("" when it has none).
        let error = (head.stanza_type == Some("error")).then(|| head.condition.unwrap_or(""));
        self.match_reply(jat, from_res, head.id, error, now)
    }

    /// A reply that answers nothing: dropped and counted.
    fn unsolicited(&mut self, reason: &'static str) -> Verdict {
        self.counters.unsolicited += 1;
        Verdict::drop(reason)
    }

    /// A reply from a target resource: `error` is the condition of an error ("" for none),
    /// None for a result.
    fn match_reply(
        &mut self,
        jat: &str,
        from_res: Option<&str>,
        id: Option<&str>,
        error: Option<&str>,
        now: f64,
    ) -> Verdict {
        let (Some(resource), Some(id)) = (from_res, id) else {
            return self.unsolicited("reply without resource or id");
        };
        let Some(requester) = self.jat.requester_of(jat, now) else {
            return self.unsolicited("reply to an address this proxy did not produce");
        };
        let declined = error.is_some_and(|c| DECLINES.contains(&c));
        // A hibernating resource sends nothing: an error from it is mod_smacks' bounce of
        // what it never acknowledged, as the hibernation ends without a resumption
        // (recipient-unavailable from its full JID, 0.12 and 13, before its unavailable
        // presence).
        let bounced = error.is_some() && self.resources.is_hibernating(resource);
        // A result from a resource that left the request asleep still answers it (a get
        // moved elsewhere while its stream hibernated: the first answer wins). Not an
        // error: the bounce is one, and the resource that holds it now decides.
        let or_asleep = error.is_none();
        match self.pending.take_reply(&requester, id, resource, or_asleep) {
            Ok(request) if &**request.resource() != resource => {
                // The one that holds it now will not be heard (its answer is dropped).
                self.resources.release(request.resource());
                self.deliver(request)
            }
            Ok(request) if bounced => {
                // As if it had gone offline (the unavailable presence that follows finds
                // nothing left): a get goes elsewhere, a set is answered recipient-unavailable.
                self.resources.release(request.resource());
                self.lose(vec![request], now);
                Verdict::drop("bounced by stream management: the resource did not resume")
            }
            Ok(request) if declined => {
                self.resources.release(request.resource());
                self.failed(request.resource(), now);
                match self.retry_elsewhere(request, now, false) {
                    Ok(()) => Verdict::drop("declined: sent to another resource"),
                    Err(request) => self.deliver(request),
                }
            }
            Ok(request) => {
                self.resources.answered(request.resource());
                self.deliver(request)
            }
            Err(Mismatch::Unknown) => self.unsolicited("reply to no outstanding request"),
            Err(Mismatch::WrongResource) => {
                self.unsolicited("reply from a resource the request was not sent to")
            }
        }
    }

    /// The answer goes to the requester; the held stanza is let go.
    fn deliver(&mut self, request: Request) -> Verdict {
        self.counters.delivered += 1;
        // The shim lets go of it when it applies this verdict, before the next stanza.
        self.pending.release(request.held());
        let verdict = Verdict::Send(Send {
            to: request.requester().to_owned(),
            from: self.config.host.clone(),
            id: None,
            hold: None,
            release: Some(request.held()),
        });
        // Kept (a move, no copy) in case the verdict never reaches the shim: `undo`.
        self.answered = Some(request);
        verdict
    }

    /// A forward the shim never received (`undo`): the requester gets the shim's
    /// internal-server-error instead, so the request is forgotten, counted as refused.
    pub(super) fn unforward(&mut self, held: u64) {
        let Some(request) = self.pending.forget(held) else {
            return;
        };
        self.resources.release(request.resource());
        self.counters.forwarded -= 1;
        self.counters.refused += 1;
    }

    /// An answer the shim never received (`undo`): the requester is owed one, an
    /// internal-server-error in the outbox. The shim still holds the request's stanza
    /// (it let go of nothing): the item lets go of it, and the number is free again once
    /// the shim has the outbox, as with any answer in the outbox; if it was handed out
    /// again meanwhile (not when `undo` follows the verdict at once), the new request's
    /// stanza replaces the old one in the shim and the item lets go of nothing.
    pub(super) fn undeliver(&mut self, send: &Send, held: u64) {
        let Some(request) = self.answered.take_if(|r| r.held() == held) else {
            return;
        };
        let release = self.pending.withhold(held).then_some(held);
        self.released_at_drain.extend(release);
        self.outbox.push(OutItem::Error {
            to: send.to.clone(),
            from: send.from.clone(),
            id: request.id().to_owned(),
            error: INTERNAL,
            release,
        });
    }

    /// Sends a held request to an eligible resource that has not had it yet (a retry);
    /// gives it back when there is none. `asleep`: its resource hibernates, and its result
    /// still answers the request.
    // The request comes back by value when no resource is left (its key inline makes it
    // 144 bytes): a move on a rare path, where a box would be an allocation for nothing.
    #[allow(clippy::result_large_err)]
    fn retry_elsewhere(&mut self, request: Request, now: f64, asleep: bool) -> Result<(), Request> {
        let mut had: Vec<&str> = request.earlier().iter().map(|r| &**r).collect();
        had.push(request.resource());
        // A request with an affinity key goes where the key is, if it has not been there
        // yet (another of the key's requests moved it first); else the key follows it.
        let key = request.affinity().map(KeyRef::from_bits);
        let kept = key
            .and_then(|key| self.keys.holder(key))
            .filter(|holder| !had.contains(&&***holder) && self.resources.in_rotation(holder))
            .cloned();
        let Some(resource) = kept.or_else(|| {
            self.resources
                .choose(&mut self.rng, bare(request.requester()), &had)
        }) else {
            return Err(request);
        };
        if let Some(key) = key.filter(|_| self.resources.in_rotation(&resource)) {
            self.keys.assign(key, &resource);
        }
        let (to, from) = (
            self.target_jid(&resource),
            self.jat_address(request.requester(), now),
        );
        self.outbox.push(OutItem::Resend {
            held: request.held(),
            to,
            from,
            stanza_type: match request.method() {
                Method::Get => "get",
                Method::Set => "set",
            },
            id: request.id().to_owned(),
            lang: request.lang().map(str::to_owned),
        });
        self.resources.hold(&resource);
        self.pending.retarget(request, resource, asleep);
        self.counters.retried += 1;
        Ok(())
    }

    /// A resource let a request time out or declined it: it may leave the rotation.
    fn failed(&mut self, resource: &str, now: f64) {
        if let Some(until) = self.resources.failed(resource, now, self.config.ejection) {
            self.counters.ejections += 1;
            // Out of rotation: its keys are assigned anew at their next request.
            self.keys.lost(resource);
            self.outbox.push(OutItem::Log(format!(
                "{}/{resource} ejected for {:.0} s: it let {} requests in a row time out or declined them",
                self.config.target,
                until - now,
                self.config.ejection.after
            )));
        }
    }

    /// The stream of a target resource hibernates (XEP-0198 on this server: its
    /// connection dropped and the session waits to be resumed). It leaves the rotation at
    /// once, even as the last one (a request then gets `ALL_HIBERNATING` rather than a
    /// wait of up to the hibernation time), without counting as a failure; its affinity
    /// keys go elsewhere; the gets it holds go to another resource now (a get has no side
    /// effects: its result, or the other one's, whichever comes first, answers); the sets
    /// it holds wait for it (it may resume and answer). Returns the outbox.
    pub fn hibernating(&mut self, resource: &str, now: f64) -> Vec<OutItem> {
        if self.resources.set_hibernating(resource, true) {
            self.keys.lost(resource);
            let mut moved = 0;
            for get in self.pending.take_gets(resource) {
                match self.retry_elsewhere(get, now, true) {
                    Ok(()) => {
                        self.resources.release(resource);
                        moved += 1;
                    }
                    Err(get) => self.pending.put_back(get),
                }
            }
            let waiting = self.resources.pending_of(resource);
            self.outbox.push(OutItem::Log(format!(
                "{}/{resource} is hibernating (stream management): out of rotation until it resumes; {moved} get(s) sent to another resource, {waiting} request(s) wait for it",
                self.config.target
            )));
            self.health_changed();
        }
        self.drain()
    }

    /// The hibernating stream of a target resource was resumed: back in rotation (an
    /// ejection it had still runs). Returns the outbox.
    pub fn resumed(&mut self, resource: &str) -> Vec<OutItem> {
        if self.resources.set_hibernating(resource, false) {
            self.outbox.push(OutItem::Log(format!(
                "{}/{resource} resumed its stream: back in rotation",
                self.config.target
            )));
            self.health_changed();
        }
        self.drain()
    }

    /// Ejected resources whose time is up go back into rotation.
    pub(super) fn readmit(&mut self, now: f64) {
        for resource in self.resources.readmit(now) {
            self.outbox.push(OutItem::Log(format!(
                "{}/{resource} is back in rotation after its ejection",
                self.config.target
            )));
        }
    }

    /// Requests whose resource went away: a get not yet retried goes to another online
    /// resource (it has no side effects); anything else is answered recipient-unavailable
    /// (a set may have been done).
    pub(super) fn lose(&mut self, lost: Vec<Request>, now: f64) {
        for request in lost {
            if request.method() == Method::Get && request.earlier().is_empty() {
                if let Err(request) = self.retry_elsewhere(request, now, false) {
                    self.answer_lost(vec![request]);
                }
            } else {
                self.answer_lost(vec![request]);
            }
        }
    }

    /// Answers requests that cannot be retried: recipient-unavailable.
    pub(super) fn answer_lost(&mut self, lost: Vec<Request>) {
        self.counters.lost += lost.len() as u64;
        for request in lost {
            self.owe(request, RESOURCE_GONE);
        }
    }

    /// Requests past their deadline: remote-server-timeout.
    pub(super) fn expire_requests(&mut self, now: f64) {
        for request in self.pending.expire(now) {
            self.resources.release(request.resource());
            self.failed(request.resource(), now);
            self.counters.timed_out += 1;
            self.owe(request, TIMED_OUT);
        }
    }

    fn owe(&mut self, request: Request, error: StanzaError) {
        // Every forwarded request is held (a declined one, or a lost get, is retried):
        // the shim lets go of it when it applies this item, at the next drain.
        self.released_at_drain.push(request.held());
        let release = Some(request.held());
        self.outbox.push(OutItem::Error {
            to: request.requester().to_owned(),
            from: self.config.host.clone(),
            id: request.id().to_owned(),
            error,
            release,
        });
    }
}
