//! Requests from users: forwarded to a resource of the target and tracked until exactly one
//! answer goes back (the resource's reply, or an error when it goes away or stays silent).

use super::{full_jid, Proxy};
use crate::pending::{Method, Mismatch, Refusal, Request};
use crate::verdict::{
    Head, OutItem, Send, StanzaError, Verdict, DUPLICATE_ID, NOT_ADDRESSED, NO_ID, NO_RESOURCE,
    REQUESTER_FULL, RESOURCE_GONE, TABLE_FULL, TIMED_OUT,
};

/// The held stanza of a request, if the shim holds one: only gets are held, because
/// only gets are retried (they have no side effects).
fn held(request: &Request) -> Option<u64> {
    (request.method == Method::Get).then_some(request.seq)
}

impl Proxy {
    /// An iq get/set from a user: to a resource, or refused.
    pub(super) fn forward(
        &mut self,
        requester: &str,
        id: Option<&str>,
        method: Method,
        now: f64,
    ) -> Verdict {
        let verdict = self.try_forward(requester, id, method, now);
        match verdict {
            Verdict::Send(_) => self.counters.forwarded += 1,
            _ => self.counters.refused += 1,
        }
        verdict
    }

    fn try_forward(
        &mut self,
        requester: &str,
        id: Option<&str>,
        method: Method,
        now: f64,
    ) -> Verdict {
        let Some(id) = id else {
            return Verdict::Error(NO_ID);
        };
        let Some(resource) = self.resources.choose(&mut self.rng, requester, None) else {
            return Verdict::Error(NO_RESOURCE);
        };
        let to = full_jid(&self.config.target, &resource);
        let seq = match self
            .pending
            .insert(requester, id, resource.clone(), method, now)
        {
            Ok(seq) => seq,
            Err(refusal) => {
                return Verdict::Error(match refusal {
                    Refusal::DuplicateId => DUPLICATE_ID,
                    Refusal::RequesterFull => REQUESTER_FULL,
                    Refusal::TableFull => TABLE_FULL,
                })
            }
        };
        self.resources.hold(&resource);
        let from = full_jid(&self.config.host, &self.jat.encode(requester, now));
        Verdict::Send(Send {
            to,
            from,
            id: None,
            hold: (method == Method::Get).then_some(seq),
            release: None,
        })
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
        let verdict = self.match_reply(jat, from_res, head.id, now);
        match verdict {
            Verdict::Send(_) => self.counters.delivered += 1,
            _ => self.counters.unsolicited += 1,
        }
        verdict
    }

    fn match_reply(
        &mut self,
        jat: &str,
        from_res: Option<&str>,
        id: Option<&str>,
        now: f64,
    ) -> Verdict {
        let (Some(resource), Some(id)) = (from_res, id) else {
            return Verdict::drop("reply without resource or id");
        };
        let Some(requester) = self.jat.requester_of(jat, now) else {
            return Verdict::drop("reply to an address this proxy did not produce");
        };
        match self.pending.take_reply(&requester, id, resource) {
            Ok(request) => {
                self.resources.release(&request.resource);
                let release = held(&request);
                Verdict::Send(Send {
                    to: request.requester,
                    from: self.config.host.clone(),
                    id: None,
                    hold: None,
                    release,
                })
            }
            Err(Mismatch::Unknown) => Verdict::drop("reply to no outstanding request"),
            Err(Mismatch::WrongResource) => {
                Verdict::drop("reply from a resource the request was not sent to")
            }
        }
    }

    /// Requests whose resource went away: a get not yet retried goes to another online
    /// resource (it has no side effects); anything else is answered recipient-unavailable.
    pub(super) fn lose(&mut self, lost: Vec<Request>, now: f64) {
        for request in lost {
            let other = if request.method == Method::Get && !request.retried {
                self.resources
                    .choose(&mut self.rng, &request.requester, Some(&request.resource))
            } else {
                None
            };
            match other {
                Some(resource) => {
                    self.outbox.push(OutItem::Resend {
                        held: request.seq,
                        to: full_jid(&self.config.target, &resource),
                        from: full_jid(
                            &self.config.host,
                            &self.jat.encode(&request.requester, now),
                        ),
                    });
                    self.resources.hold(&resource);
                    self.pending.retarget(request, resource);
                    self.counters.retried += 1;
                }
                None => self.answer_lost(vec![request]),
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
            self.resources.release(&request.resource);
            self.counters.timed_out += 1;
            self.owe(request, TIMED_OUT);
        }
    }

    fn owe(&mut self, request: Request, error: StanzaError) {
        let release = held(&request);
        self.outbox.push(OutItem::Error {
            to: request.requester,
            from: self.config.host.clone(),
            id: request.id,
            error,
            release,
        });
    }
}
