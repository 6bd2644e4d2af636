//! The decision: given a stanza's head (name, type, from, to, id) and the time, what the
//! component does with it. No I/O and no clock: the shim applies the verdict.

use crate::config::Config;
use crate::jat::{TokenMap, Translator};
use crate::pending::{Kind, Mismatch, PendingTable, Refusal, Request};
use crate::resources::ResourceSet;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::Arc;

/// A stanza error the proxy sends: RFC 6120 type, defined condition and a human text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StanzaError {
    /// "cancel", "wait", "modify", "auth".
    pub kind: &'static str,
    /// The defined condition element name.
    pub condition: &'static str,
    /// Explanation for the human reading the client's log.
    pub text: &'static str,
}

const fn err(kind: &'static str, condition: &'static str, text: &'static str) -> StanzaError {
    StanzaError {
        kind,
        condition,
        text,
    }
}

/// No implementing resource is online (the original's answer, with a text).
pub const NO_RESOURCE: StanzaError = err(
    "cancel",
    "service-unavailable",
    "No implementing resource is online",
);
/// The resource holding the request went offline before answering.
pub const RESOURCE_GONE: StanzaError = err(
    "wait",
    "recipient-unavailable",
    "The implementing resource went offline before answering",
);
/// Nobody answered in time.
pub const TIMED_OUT: StanzaError = err(
    "wait",
    "remote-server-timeout",
    "The implementing client did not answer in time",
);
/// Presence to the proxy (the original's answer).
pub const NO_PRESENCE: StanzaError = err("cancel", "bad-request", "This service takes no presence");
/// Messages through the proxy (the original's answer).
pub const NO_MESSAGES: StanzaError = err(
    "cancel",
    "feature-not-implemented",
    "This service does not proxy messages",
);
/// Requests started by the implementing client (the original's answer).
pub const NO_OUTBOUND: StanzaError = err(
    "cancel",
    "feature-not-implemented",
    "Requests from the implementing client are not proxied",
);
/// The implementing client addressed the component without a JAT resource.
pub const NOT_ADDRESSED: StanzaError = err(
    "cancel",
    "bad-request",
    "Address a requester through its translated resource",
);
/// An iq without an id cannot be answered properly.
pub const NO_ID: StanzaError = err("modify", "bad-request", "An iq request needs an id");
/// Same requester, same id, still outstanding.
pub const DUPLICATE_ID: StanzaError = err(
    "modify",
    "bad-request",
    "A request with this id from you is still outstanding",
);
/// Too many outstanding requests from this requester.
pub const REQUESTER_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests from you",
);
/// Too many outstanding requests in all.
pub const TABLE_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests",
);
/// The native core failed (used by the shim, listed here so all texts live together).
pub const INTERNAL: StanzaError = err(
    "cancel",
    "internal-server-error",
    "The proxy failed to handle this request",
);

/// What arrived: the parts of a stanza the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// "iq", "message" or "presence".
    pub name: &'a str,
    /// The type attribute.
    pub kind: Option<&'a str>,
    /// The from attribute (prepped by Prosody).
    pub from: Option<&'a str>,
    /// The to attribute (prepped by Prosody).
    pub to: Option<&'a str>,
    /// The id attribute.
    pub id: Option<&'a str>,
    /// Presence priority (0 when absent).
    pub priority: i32,
    /// For presence: whether the sender's resource matches `client_proxy_resources`.
    pub eligible: bool,
}

/// What to do with the stanza.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// A request: readdress it and send it to the implementing resource; the shim holds
    /// a get under `seq` so that it can be retried elsewhere.
    Forward {
        /// New to: the chosen resource of the target.
        to: String,
        /// New from: the component host with the requester's JAT resource.
        from: String,
        /// Number of the request in the pending table.
        seq: u64,
    },
    /// An answer: readdress it and send it to the requester; the shim lets go of `seq`.
    Deliver {
        /// New to: the requester.
        to: String,
        /// New from: the component host.
        from: String,
        /// Number of the request it answers.
        seq: u64,
    },
    /// Answer the sender with this error (never produced for a stanza of type error).
    Error(StanzaError),
    /// Nothing to send; the reason is for a debug log line.
    Drop(&'static str),
    /// Consumed (target presence, a bounce); answers or retries may be waiting.
    Consumed(&'static str),
    /// A message: readdress it and send it on (not tracked).
    Relay {
        /// New to.
        to: String,
        /// New from.
        from: String,
    },
    /// An outbound request or its answer: readdress it, give it this id, send it on.
    Rewrite {
        /// New to.
        to: String,
        /// New from.
        from: String,
        /// New id.
        id: String,
    },
    /// A user's subscription request ("subscribe"), cancellation ("unsubscribe") or
    /// probe ("probe") of the service's availability; the shim keeps the subscribers.
    Subscription(&'static str),
}

/// An iq error the proxy must send for a request it can no longer forward an answer to.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The requester (a user, or the implementing resource for an outbound request).
    pub to: String,
    /// The sender: the component host, or the user's JAT address for an outbound request.
    pub from: String,
    /// The request's id.
    pub id: String,
    /// Why.
    pub error: StanzaError,
    /// Number of the request (the shim lets go of the stanza it holds).
    pub seq: u64,
}

/// A get whose resource went away, to be sent again to another resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// Number the shim holds the request under.
    pub seq: u64,
    /// The new resource of the target.
    pub to: String,
    /// The component host with the requester's JAT resource.
    pub from: String,
}

/// What happened so far, for statistics and the status command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests sent to an implementing resource (retries not counted again).
    pub forwarded: u64,
    /// Requests refused with an error at once (no resource, limits, bad request).
    pub refused: u64,
    /// Answers from the implementing client delivered to their requester.
    pub delivered: u64,
    /// Replies that answer nothing (unknown id, wrong resource or requester, late).
    pub unsolicited: u64,
    /// Requests answered remote-server-timeout.
    pub timed_out: u64,
    /// Requests answered recipient-unavailable because their resource went away.
    pub lost: u64,
    /// Gets sent again to another resource.
    pub retried: u64,
    /// Requests the implementing client sent to users.
    pub outbound: u64,
    /// Messages from users to the implementing client.
    pub messages_in: u64,
    /// Messages from the implementing client to users.
    pub messages_out: u64,
}

/// The state of one component: who is online, what is outstanding, how to translate.
pub struct Proxy {
    /// The checked options.
    pub config: Config,
    /// Online resources of the target.
    pub resources: ResourceSet,
    /// Outstanding requests.
    pub pending: PendingTable,
    /// What happened so far.
    pub counters: Counters,
    /// The target revoked the subscription (or its presence errored) and has not come back.
    pub revoked: bool,
    pub(crate) jat: Translator,
    pub(crate) rng: SmallRng,
    answers: Vec<Answer>,
    retries: Vec<Retry>,
    /// Requests the implementing client sent to users.
    pub outbound: crate::outbound::Outbound,
    /// Which resource last wrote to each user, for the bounces of its messages.
    pub(crate) message_origins: HashMap<String, Arc<str>>,
}

fn split_resource(jid: &str) -> (&str, Option<&str>) {
    match jid.split_once('/') {
        Some((bare, res)) => (bare, Some(res)),
        None => (jid, None),
    }
}

/// `bare/resource`, built with one allocation: on every forwarded request, where
/// `format!` cost about as much as the rest of the routing decision (callgrind).
fn full_jid(bare: &str, resource: &str) -> String {
    let mut jid = String::with_capacity(bare.len() + 1 + resource.len());
    jid.push_str(bare);
    jid.push('/');
    jid.push_str(resource);
    jid
}

impl Proxy {
    /// A proxy with nothing online and nothing outstanding.
    pub fn new(config: Config) -> Self {
        let resources = ResourceSet::new(config.strategy);
        let outbound = crate::outbound::Outbound::new(&config);
        let pending = PendingTable::new(
            config.timeout,
            config.max_pending,
            config.max_pending_per_requester,
        );
        // Tokens live at least as long as a request may wait for its answer.
        let tokens = TokenMap::new(10_000, (config.timeout * 2.0).max(600.0));
        Proxy {
            jat: Translator::new(config.jat, tokens),
            config,
            resources,
            pending,
            counters: Counters::default(),
            revoked: false,
            rng: SmallRng::from_rng(&mut rand::rng()),
            answers: Vec::new(),
            retries: Vec::new(),
            outbound,
            message_origins: HashMap::new(),
        }
    }

    /// Seeds the random choice, for reproducible tests.
    pub fn seed(&mut self, seed: u64) {
        self.rng = SmallRng::seed_from_u64(seed);
    }

    /// Applies options changed by a reload. A new target means the online resources are
    /// someone else's: they are forgotten and every outstanding request is answered
    /// (drained with `take_answers`).
    pub fn reconfigure(&mut self, config: Config) {
        if config.target != self.config.target {
            self.resources.clear();
            let lost = self.pending.take_all();
            self.counters.lost += lost.len() as u64;
            let host = self.config.host.clone();
            self.answers.extend(lost.into_iter().map(|r| Answer {
                from: host.clone(),
                seq: r.seq,
                to: r.requester,
                id: r.id,
                error: RESOURCE_GONE,
            }));
        }
        self.resources.set_strategy(config.strategy);
        self.outbound.reconfigure(&config);
        self.pending.timeout = config.timeout;
        self.pending.max_total = config.max_pending;
        self.pending.max_per_requester = config.max_pending_per_requester;
        if config.jat != self.jat.mode() {
            self.jat = Translator::new(
                config.jat,
                TokenMap::new(10_000, (config.timeout * 2.0).max(600.0)),
            );
        }
        self.config = config;
    }

    /// The decision for one stanza.
    pub fn route(&mut self, head: Head<'_>, now: f64) -> Verdict {
        let Some(from) = head.from else {
            return Verdict::Drop("stanza without from");
        };
        let (from_bare, from_res) = split_resource(from);
        let to_res = head.to.and_then(|to| split_resource(to).1);
        let is_error = head.kind == Some("error");
        if from_bare == self.config.target {
            return match (head.name, to_res) {
                ("presence", None) => self.target_presence(head, from_res, now),
                ("iq", _) => self.iq_from_target(head, from_res, to_res, now),
                ("message", Some(jat)) => self.message_from_target(from_res, jat, is_error, now),
                _ if is_error => Verdict::Drop("error from the target"),
                ("message", None) => Verdict::Error(NOT_ADDRESSED),
                _ => Verdict::Drop("directed presence from the target"),
            };
        }
        match (head.name, head.kind) {
            ("message", Some("error")) => self.message_bounce_from_user(from, now),
            ("iq", Some("result") | Some("error")) => match self.outbound_reply(from, head.id, now)
            {
                Some(verdict) => verdict,
                None => {
                    self.counters.unsolicited += 1;
                    Verdict::Drop("iq result from a requester answers nothing")
                }
            },
            (_, Some("error")) => Verdict::Drop("error stanza from a requester"),
            ("iq", Some("get")) => self.forward(from, head.id, Kind::Get, now),
            ("iq", Some("set")) => self.forward(from, head.id, Kind::Set, now),
            ("iq", _) => Verdict::Drop("iq without a valid type"),
            ("message", _) => self.message_from_user(from, now),
            ("presence", kind) => self.user_presence(kind),
            _ => Verdict::Drop("unknown stanza"),
        }
    }

    fn user_presence(&mut self, kind: Option<&str>) -> Verdict {
        if !self.config.presence {
            return Verdict::Error(NO_PRESENCE);
        }
        match kind {
            Some("subscribe") => Verdict::Subscription("subscribe"),
            Some("unsubscribe") => Verdict::Subscription("unsubscribe"),
            Some("probe") => Verdict::Subscription("probe"),
            _ => Verdict::Drop("directed presence or subscription answer from a user"),
        }
    }

    fn forward(&mut self, requester: &str, id: Option<&str>, kind: Kind, now: f64) -> Verdict {
        let verdict = self.try_forward(requester, id, kind, now);
        match verdict {
            Verdict::Forward { .. } => self.counters.forwarded += 1,
            _ => self.counters.refused += 1,
        }
        verdict
    }

    fn try_forward(&mut self, requester: &str, id: Option<&str>, kind: Kind, now: f64) -> Verdict {
        let Some(id) = id else {
            return Verdict::Error(NO_ID);
        };
        let Some(resource) = self.resources.choose(&mut self.rng, requester, None) else {
            return Verdict::Error(NO_RESOURCE);
        };
        let to = full_jid(&self.config.target, &resource);
        let seq = match self
            .pending
            .insert(requester, id, resource.clone(), kind, now)
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
        Verdict::Forward { to, from, seq }
    }

    fn iq_from_target(
        &mut self,
        head: Head<'_>,
        from_res: Option<&str>,
        to_res: Option<&str>,
        now: f64,
    ) -> Verdict {
        let is_reply = matches!(head.kind, Some("result") | Some("error"));
        let Some(jat) = to_res else {
            return if is_reply {
                Verdict::Drop("reply from the target to the bare component")
            } else {
                Verdict::Error(NOT_ADDRESSED)
            };
        };
        if !is_reply {
            let kind = if head.kind == Some("set") {
                Kind::Set
            } else {
                Kind::Get
            };
            let Some(resource) = from_res else {
                return Verdict::Error(NOT_ADDRESSED);
            };
            return self.outbound_request(resource, jat, head.id, kind, now);
        }
        let verdict = self.match_reply(jat, from_res, head.id, now);
        match verdict {
            Verdict::Deliver { .. } => self.counters.delivered += 1,
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
            return Verdict::Drop("reply without resource or id");
        };
        let Some(requester) = self.jat.requester_of(jat, now) else {
            return Verdict::Drop("reply to an address this proxy did not produce");
        };
        match self.pending.take_reply(&requester, id, resource) {
            Ok(request) => {
                self.resources.release(&request.resource);
                Verdict::Deliver {
                    to: request.requester,
                    from: self.config.host.clone(),
                    seq: request.seq,
                }
            }
            Err(Mismatch::Unknown) => Verdict::Drop("reply to no outstanding request"),
            Err(Mismatch::WrongResource) => {
                Verdict::Drop("reply from a resource the request was not sent to")
            }
        }
    }

    fn target_presence(&mut self, head: Head<'_>, from_res: Option<&str>, now: f64) -> Verdict {
        match (head.kind, from_res) {
            (None, Some(res)) => {
                self.revoked = false;
                if self.resources.upsert(res, head.priority, head.eligible) {
                    Verdict::Consumed("resource online")
                } else {
                    Verdict::Consumed("resource updated")
                }
            }
            (Some("unavailable"), Some(res)) => {
                if self.resources.remove(res) {
                    self.outbound_forget(res);
                    let lost = self.pending.take_resource(res);
                    self.lose(lost, now);
                    Verdict::Consumed("resource offline")
                } else {
                    Verdict::Consumed("unknown resource offline")
                }
            }
            (Some("error"), _) | (Some("unsubscribed"), _) => {
                self.revoked = true;
                self.resources.clear();
                let lost = self.pending.take_all();
                self.lose(lost, now);
                if head.kind == Some("error") {
                    Verdict::Consumed("presence error from the target: all resources dropped")
                } else {
                    Verdict::Consumed("target revoked the subscription: all resources dropped")
                }
            }
            (Some("subscribed"), _) => {
                self.revoked = false;
                Verdict::Consumed("target approved the subscription")
            }
            _ => Verdict::Consumed("ignored target presence"),
        }
    }

    /// Requests whose resource went away: a get not yet retried goes to another online
    /// resource (it has no side effects); anything else is answered recipient-unavailable.
    fn lose(&mut self, lost: Vec<Request>, now: f64) {
        for request in lost {
            let other = if request.kind == Kind::Get && !request.retried {
                self.resources
                    .choose(&mut self.rng, &request.requester, Some(&request.resource))
            } else {
                None
            };
            match other {
                Some(resource) => {
                    self.retries.push(Retry {
                        seq: request.seq,
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
                None => {
                    self.counters.lost += 1;
                    self.answers.push(Answer {
                        from: self.config.host.clone(),
                        seq: request.seq,
                        to: request.requester,
                        id: request.id,
                        error: RESOURCE_GONE,
                    });
                }
            }
        }
    }

    /// Answers owed to requesters whose requests were lost, and gets to send again
    /// elsewhere (drained by the shim after a `Consumed` verdict).
    pub fn take_answers(&mut self) -> (Vec<Answer>, Vec<Retry>) {
        (
            std::mem::take(&mut self.answers),
            std::mem::take(&mut self.retries),
        )
    }

    /// Requests past their deadline, answered remote-server-timeout by the shim.
    pub fn expire(&mut self, now: f64) -> Vec<Answer> {
        self.jat.expire(now);
        let expired: Vec<Answer> = self
            .pending
            .expire(now)
            .into_iter()
            .map(|r| {
                self.resources.release(&r.resource);
                Answer {
                    from: self.config.host.clone(),
                    seq: r.seq,
                    to: r.requester,
                    id: r.id,
                    error: TIMED_OUT,
                }
            })
            .collect();
        self.counters.timed_out += expired.len() as u64;
        let mut expired = expired;
        expired.extend(self.outbound_expire(now));
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "proxy.example";
    const T: &str = "service@example.org";
    const R: &str = "user@example.org/abc";
    const R_JAT: &str = "proxy.example/user@example.org/abc";

    fn proxy() -> Proxy {
        let mut p = Proxy::new(Config::new(H, Some(T), None, Some(10.0), None, None).unwrap());
        p.seed(1);
        p
    }

    fn head<'a>(
        name: &'a str,
        kind: Option<&'a str>,
        from: &'a str,
        to: &'a str,
        id: &'a str,
    ) -> Head<'a> {
        Head {
            name,
            kind,
            from: Some(from),
            to: Some(to),
            id: Some(id),
            priority: 0,
            eligible: true,
        }
    }

    /// (to, from) of a forwarded request.
    fn forwarded(v: Verdict) -> (String, String) {
        match v {
            Verdict::Forward { to, from, .. } => (to, from),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    /// (to, from) of a delivered answer.
    fn delivered(v: Verdict) -> (String, String) {
        match v {
            Verdict::Deliver { to, from, .. } => (to, from),
            other => panic!("not delivered: {other:?}"),
        }
    }

    fn presence(p: &mut Proxy, res: &str, kind: Option<&str>) {
        let from = format!("{T}/{res}");
        let v = p.route(head("presence", kind, &from, H, ""), 0.0);
        assert!(matches!(v, Verdict::Consumed(_)), "{v:?}");
    }

    fn online(p: &mut Proxy, res: &str) {
        presence(p, res, None);
    }

    fn offline(p: &mut Proxy, res: &str) -> (Vec<Answer>, Vec<Retry>) {
        presence(p, res, Some("unavailable"));
        p.take_answers()
    }

    fn request(p: &mut Proxy, from: &str, id: &str, to: &str) -> Verdict {
        p.route(head("iq", Some("get"), from, to, id), 0.0)
    }

    fn set(p: &mut Proxy, from: &str, id: &str) -> Verdict {
        p.route(head("iq", Some("set"), from, H, id), 0.0)
    }

    fn reply(p: &mut Proxy, res: &str, kind: &str, to: &str, id: &str) -> Verdict {
        let from = format!("{T}/{res}");
        p.route(head("iq", Some(kind), &from, to, id), 1.0)
    }

    #[test]
    fn request_is_forwarded_from_the_jat_address_as_in_the_original_readme() {
        let mut p = proxy();
        online(&mut p, "a");
        for to in [H, "proxy.example/x", "node@proxy.example"] {
            let v = forwarded(request(&mut p, R, to, to));
            assert_eq!(v, ("service@example.org/a".into(), R_JAT.into()));
        }
        assert_eq!(p.pending.len(), 3);
    }

    #[test]
    fn no_resource_is_service_unavailable() {
        let mut p = proxy();
        assert_eq!(request(&mut p, R, "1", H), Verdict::Error(NO_RESOURCE));
        assert_eq!(NO_RESOURCE.condition, "service-unavailable");
        assert!(p.pending.is_empty());
    }

    #[test]
    fn reply_is_delivered_from_the_host_only_for_a_tracked_request() {
        let mut p = proxy();
        online(&mut p, "a");
        let Verdict::Forward { seq, .. } = request(&mut p, R, "1234", H) else {
            panic!()
        };
        let v = reply(&mut p, "a", "result", R_JAT, "1234");
        assert_eq!(
            v,
            Verdict::Deliver {
                to: R.into(),
                from: H.into(),
                seq
            }
        );
        assert!(
            matches!(
                reply(&mut p, "a", "result", R_JAT, "1234"),
                Verdict::Drop(_)
            ),
            "answered once"
        );
        assert!(
            matches!(reply(&mut p, "a", "result", R_JAT, "999"), Verdict::Drop(_)),
            "never sent"
        );
    }

    #[test]
    fn error_reply_is_passed_back() {
        let mut p = proxy();
        online(&mut p, "a");
        request(&mut p, R, "7", H);
        assert_eq!(
            delivered(reply(&mut p, "a", "error", R_JAT, "7")),
            (R.into(), H.into())
        );
    }

    #[test]
    fn reply_from_another_resource_is_dropped_and_the_request_stays() {
        let mut p = proxy();
        online(&mut p, "a");
        request(&mut p, R, "1", H);
        online(&mut p, "b");
        assert!(matches!(
            reply(&mut p, "b", "result", R_JAT, "1"),
            Verdict::Drop(_)
        ));
        delivered(reply(&mut p, "a", "result", R_JAT, "1"));
    }

    #[test]
    fn reply_for_another_requester_is_dropped() {
        let mut p = proxy();
        online(&mut p, "a");
        request(&mut p, R, "1", H);
        let other = "proxy.example/other@example.org/x";
        assert!(matches!(
            reply(&mut p, "a", "result", other, "1"),
            Verdict::Drop(_)
        ));
        assert_eq!(p.pending.len(), 1);
    }

    #[test]
    fn reply_to_garbage_jat_is_dropped() {
        let mut p = proxy();
        online(&mut p, "a");
        for to in [
            "proxy.example/@deadbeef",
            "proxy.example/not a jid@",
            "proxy.example/",
        ] {
            assert!(
                matches!(reply(&mut p, "a", "result", to, "1"), Verdict::Drop(_)),
                "{to}"
            );
        }
    }

    #[test]
    fn presence_adds_and_removes_resources() {
        let mut p = proxy();
        online(&mut p, "a");
        online(&mut p, "b");
        online(&mut p, "a");
        assert_eq!(p.resources.len(), 2);
        offline(&mut p, "a");
        assert_eq!(p.resources.len(), 1);
        for i in 0..20 {
            let (to, _) = forwarded(request(&mut p, R, &i.to_string(), H));
            assert_eq!(to, format!("{T}/b"));
        }
    }

    #[test]
    fn resource_coming_back_is_used_again() {
        let mut p = proxy();
        online(&mut p, "a");
        online(&mut p, "b");
        offline(&mut p, "a");
        online(&mut p, "a");
        let seen: std::collections::HashSet<_> = (0..40)
            .map(|i| forwarded(request(&mut p, R, &i.to_string(), H)).0)
            .collect();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn resource_going_offline_answers_its_requests_at_once() {
        let mut p = proxy();
        online(&mut p, "a");
        request(&mut p, R, "1", H);
        set(&mut p, "other@example.org/x", "2");
        let (answers, retries) = offline(&mut p, "a");
        assert_eq!(answers.len(), 2, "no other resource: nothing to retry on");
        assert!(retries.is_empty());
        assert!(answers.iter().all(|a| a.error == RESOURCE_GONE));
        assert!(p.pending.is_empty());
    }

    #[test]
    fn a_lost_get_is_retried_once_on_another_resource_and_a_set_is_not() {
        let mut p = proxy();
        online(&mut p, "a");
        let Verdict::Forward { seq, .. } = request(&mut p, R, "g", H) else {
            panic!()
        };
        set(&mut p, R, "s");
        online(&mut p, "b");
        let (answers, retries) = offline(&mut p, "a");
        assert_eq!(
            retries,
            vec![Retry {
                seq,
                to: format!("{T}/b"),
                from: R_JAT.into()
            }]
        );
        assert_eq!(answers.len(), 1);
        assert_eq!(
            (answers[0].id.as_str(), answers[0].error),
            ("s", RESOURCE_GONE)
        );
        online(&mut p, "c");
        let (answers, retries) = offline(&mut p, "b");
        assert!(retries.is_empty(), "retried once only");
        assert_eq!((answers[0].id.as_str(), answers[0].seq), ("g", seq));
    }

    #[test]
    fn a_retried_get_is_answered_by_its_new_resource() {
        let mut p = proxy();
        online(&mut p, "a");
        request(&mut p, R, "g", H);
        online(&mut p, "b");
        offline(&mut p, "a");
        assert!(matches!(
            reply(&mut p, "a", "result", R_JAT, "g"),
            Verdict::Drop(_)
        ));
        assert_eq!(
            delivered(reply(&mut p, "b", "result", R_JAT, "g")),
            (R.into(), H.into())
        );
    }

    #[test]
    fn reconfigured_target_answers_what_is_outstanding() {
        let mut p = proxy();
        online(&mut p, "a");
        let Verdict::Forward { seq, .. } = request(&mut p, R, "1", H) else {
            panic!()
        };
        p.reconfigure(Config::new(H, Some(T), None, Some(5.0), None, None).unwrap());
        assert_eq!(
            (p.pending.len(), p.resources.len()),
            (1, 1),
            "same target: state kept"
        );
        p.reconfigure(Config::new(H, Some("other@example.org"), None, None, None, None).unwrap());
        assert!(p.resources.is_empty() && p.pending.is_empty());
        let (answers, _) = p.take_answers();
        assert_eq!((answers[0].seq, answers[0].error), (seq, RESOURCE_GONE));
        p.resources.upsert("a", 0, true);
        let Verdict::Forward { seq: next, .. } = request(&mut p, R, "2", H) else {
            panic!()
        };
        assert!(next > seq, "numbers are not reused");
    }

    #[test]
    fn presence_error_or_unsubscribed_drops_all() {
        for kind in ["error", "unsubscribed"] {
            let mut p = proxy();
            assert!(!p.revoked);
            online(&mut p, "a");
            online(&mut p, "b");
            request(&mut p, R, "1", H);
            let v = p.route(head("presence", Some(kind), T, H, ""), 0.0);
            assert!(matches!(v, Verdict::Consumed(_)));
            assert!(p.resources.is_empty());
            let (answers, retries) = p.take_answers();
            assert_eq!((answers.len(), retries.len()), (1, 0));
            assert_eq!(request(&mut p, R, "2", H), Verdict::Error(NO_RESOURCE));
            assert!(p.revoked);
            online(&mut p, "a");
            assert!(!p.revoked, "back when a resource is online again");
        }
    }

    #[test]
    fn ineligible_and_draining_resources() {
        let mut p = proxy();
        let mut h = head("presence", None, "service@example.org/phone", H, "");
        h.eligible = false;
        assert!(matches!(p.route(h, 0.0), Verdict::Consumed(_)));
        assert_eq!(
            request(&mut p, R, "1", H),
            Verdict::Error(NO_RESOURCE),
            "only an ineligible one"
        );
        let mut h = head("presence", None, "service@example.org/old", H, "");
        h.priority = -1;
        p.route(h, 0.0);
        assert_eq!(forwarded(request(&mut p, R, "2", H)).0, format!("{T}/old"));
        online(&mut p, "new");
        for i in 3..20 {
            assert_eq!(
                forwarded(request(&mut p, R, &i.to_string(), H)).0,
                format!("{T}/new")
            );
        }
        assert_eq!((p.resources.len(), p.resources.eligible()), (3, 2));
    }

    fn original() -> Proxy {
        let config = Config::new(H, Some(T), None, Some(10.0), None, None)
            .unwrap()
            .with_switches(Some(false), Some(false), Some(false));
        Proxy::new(config)
    }

    #[test]
    fn with_the_switches_off_the_original_answers() {
        let mut p = original();
        online(&mut p, "a");
        assert_eq!(
            reply(&mut p, "a", "get", R_JAT, "q"),
            Verdict::Error(NO_OUTBOUND)
        );
        assert_eq!(
            reply(&mut p, "a", "set", H, "q"),
            Verdict::Error(NOT_ADDRESSED)
        );
        let msg =
            |p: &mut Proxy, from, to| p.route(head("message", Some("chat"), from, to, ""), 0.0);
        assert_eq!(
            msg(&mut p, "service@example.org/a", R_JAT),
            Verdict::Error(NO_MESSAGES)
        );
        assert_eq!(msg(&mut p, R, H), Verdict::Error(NO_MESSAGES));
        assert_eq!(
            p.route(head("message", None, R, H, ""), 0.0),
            Verdict::Error(NO_MESSAGES)
        );
        for kind in [Some("subscribe"), Some("probe"), None] {
            assert_eq!(
                p.route(head("presence", kind, R, H, ""), 0.0),
                Verdict::Error(NO_PRESENCE)
            );
        }
    }

    fn message(p: &mut Proxy, from: &str, to: &str, kind: &str) -> Verdict {
        p.route(head("message", Some(kind), from, to, ""), 0.0)
    }

    #[test]
    fn user_messages_stick_to_one_resource_and_replies_reach_the_user() {
        let mut p = proxy();
        assert_eq!(
            message(&mut p, R, H, "chat"),
            Verdict::Error(crate::messages::NO_RESOURCE_FOR_MESSAGE)
        );
        for r in ["a", "b", "c"] {
            online(&mut p, r);
        }
        let first = message(&mut p, R, H, "chat");
        let Verdict::Relay { to, from } = &first else {
            panic!("{first:?}")
        };
        assert_eq!(from, R_JAT);
        for _ in 0..5 {
            assert_eq!(message(&mut p, R, H, "chat"), first, "sticky");
        }
        let res = to.rsplit('/').next().unwrap().to_owned();
        let from_res = format!("{T}/{res}");
        assert_eq!(
            message(&mut p, &from_res, R_JAT, "chat"),
            Verdict::Relay {
                to: R.into(),
                from: H.into()
            }
        );
        // The user's server bounces it: back to the resource that wrote.
        assert_eq!(
            message(&mut p, R, H, "error"),
            Verdict::Relay {
                to: from_res.clone(),
                from: R_JAT.into()
            }
        );
        // A bounce of the user's message from the target goes back to the user, unanswered.
        assert_eq!(
            message(&mut p, &from_res, R_JAT, "error"),
            Verdict::Relay {
                to: R.into(),
                from: H.into()
            }
        );
        offline(&mut p, &res);
        assert!(
            matches!(message(&mut p, R, H, "error"), Verdict::Drop(_)),
            "its writer is gone"
        );
        assert_ne!(
            message(&mut p, R, H, "chat"),
            first,
            "moves on when its resource leaves"
        );
        assert_eq!((p.counters.messages_in, p.counters.messages_out), (7, 1));
    }

    #[test]
    fn outbound_request_gets_its_answer_with_its_own_id() {
        let mut p = proxy();
        online(&mut p, "a");
        online(&mut p, "b");
        let ask = |p: &mut Proxy, res: &str| reply(p, res, "get", R_JAT, "same");
        let Verdict::Rewrite { to, from, id: id_a } = ask(&mut p, "a") else {
            panic!()
        };
        assert_eq!((to.as_str(), from.as_str()), (R, H));
        let Verdict::Rewrite { id: id_b, .. } = ask(&mut p, "b") else {
            panic!()
        };
        assert_ne!(id_a, id_b, "two resources, one id: unique towards the user");
        let answer = |p: &mut Proxy, id: &str| p.route(head("iq", Some("result"), R, H, id), 1.0);
        assert_eq!(
            answer(&mut p, &id_b),
            Verdict::Rewrite {
                to: format!("{T}/b"),
                from: R_JAT.into(),
                id: "same".into()
            }
        );
        assert_eq!(
            answer(&mut p, &id_a),
            Verdict::Rewrite {
                to: format!("{T}/a"),
                from: R_JAT.into(),
                id: "same".into()
            }
        );
        assert!(
            matches!(answer(&mut p, &id_a), Verdict::Drop(_)),
            "answered once"
        );
        let forged = p.route(
            head("iq", Some("result"), "other@example.org/x", H, &id_b),
            1.0,
        );
        assert!(matches!(forged, Verdict::Drop(_)));
    }

    #[test]
    fn outbound_request_times_out_towards_the_resource() {
        let mut p = proxy();
        online(&mut p, "a");
        let Verdict::Rewrite { .. } = reply(&mut p, "a", "set", R_JAT, "q") else {
            panic!()
        };
        let gone = p.expire(20.0);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (
                gone[0].to.as_str(),
                gone[0].from.as_str(),
                gone[0].id.as_str()
            ),
            ("service@example.org/a", R_JAT, "q")
        );
        assert_eq!(gone[0].error, TIMED_OUT);
        let bad = reply(&mut p, "a", "get", "proxy.example/@0000000000000000", "q");
        assert_eq!(bad, Verdict::Error(crate::outbound::UNKNOWN_JAT));
    }

    #[test]
    fn users_subscribe_to_the_service() {
        let mut p = proxy();
        for (kind, action) in [
            ("subscribe", "subscribe"),
            ("unsubscribe", "unsubscribe"),
            ("probe", "probe"),
        ] {
            assert_eq!(
                p.route(head("presence", Some(kind), R, H, ""), 0.0),
                Verdict::Subscription(action)
            );
        }
        for kind in [
            None,
            Some("unavailable"),
            Some("subscribed"),
            Some("unsubscribed"),
        ] {
            assert!(
                matches!(
                    p.route(head("presence", kind, R, H, ""), 0.0),
                    Verdict::Drop(_)
                ),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn error_stanzas_are_never_answered() {
        let mut p = proxy();
        for name in ["iq", "message", "presence"] {
            for from in [R, "service@example.org/a"] {
                for to in [H, "proxy.example/u@x/y"] {
                    let v = p.route(head(name, Some("error"), from, to, "e"), 0.0);
                    assert!(
                        !matches!(v, Verdict::Error(_)),
                        "{name} from {from} to {to}: {v:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn unanswered_request_times_out_once() {
        let mut p = proxy();
        online(&mut p, "a");
        let Verdict::Forward { seq, .. } = request(&mut p, R, "1", H) else {
            panic!()
        };
        assert!(p.expire(9.0).is_empty());
        let gone = p.expire(10.0);
        assert_eq!(
            gone,
            vec![Answer {
                to: R.into(),
                from: H.into(),
                id: "1".into(),
                error: TIMED_OUT,
                seq
            }]
        );
        assert!(p.expire(100.0).is_empty());
        let late = reply(&mut p, "a", "result", R_JAT, "1");
        assert!(matches!(late, Verdict::Drop(_)), "late reply not delivered");
    }

    #[test]
    fn iq_without_id_or_from() {
        let mut p = proxy();
        online(&mut p, "a");
        let mut h = head("iq", Some("get"), R, H, "");
        h.id = None;
        assert_eq!(p.route(h, 0.0), Verdict::Error(NO_ID));
        h.from = None;
        assert!(matches!(p.route(h, 0.0), Verdict::Drop(_)));
    }

    #[test]
    fn duplicate_id_and_limits() {
        let mut p = Proxy::new(Config::new(H, Some(T), None, None, Some(2.0), Some(1.0)).unwrap());
        online(&mut p, "a");
        forwarded(request(&mut p, R, "1", H));
        assert_eq!(request(&mut p, R, "1", H), Verdict::Error(DUPLICATE_ID));
        assert_eq!(request(&mut p, R, "2", H), Verdict::Error(REQUESTER_FULL));
        forwarded(request(&mut p, "b@x/y", "1", H));
        assert_eq!(request(&mut p, "c@x/y", "1", H), Verdict::Error(TABLE_FULL));
    }

    #[test]
    fn overlong_requester_gets_a_token_that_maps_back() {
        let mut p = proxy();
        online(&mut p, "a");
        let long = format!("user@example.org/{}", "r".repeat(1023));
        let (_, from) = forwarded(request(&mut p, &long, "1", H));
        let res = from.strip_prefix("proxy.example/").unwrap();
        assert!(res.starts_with('@') && res.len() < 64);
        assert_eq!(
            delivered(reply(&mut p, "a", "result", &from, "1")),
            (long, H.into())
        );
    }

    #[test]
    fn base64_mode_round_trips() {
        let mut p = Proxy::new(Config::new(H, Some(T), Some("base64"), None, None, None).unwrap());
        online(&mut p, "a");
        let (_, from) = forwarded(request(&mut p, R, "1", H));
        assert_eq!(from, "proxy.example/dXNlckBleGFtcGxlLm9yZy9hYmM");
        assert_eq!(
            delivered(reply(&mut p, "a", "result", &from, "1")),
            (R.into(), H.into())
        );
    }
}

/// Random sequences of requests, replies, presence changes and clock ticks against a model
/// of RFC 6120's promise: every forwarded get/set ends with exactly one answer.
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const H: &str = "proxy.example";
    const T: &str = "service@example.org";
    const RESOURCES: [&str; 3] = ["a", "b", "c"];
    const REQUESTERS: [&str; 3] = ["u@example.org/1", "u@example.org/2", "v@example.net/x"];

    #[derive(Clone, Debug)]
    enum Op {
        Request {
            who: usize,
            id: u8,
            set: bool,
        },
        Reply {
            res: usize,
            who: usize,
            id: u8,
            error: bool,
        },
        Online(usize),
        Offline(usize),
        Revoke,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 0..6u8, any::<bool>()).prop_map(|(who, id, set)| Op::Request { who, id, set }),
            6 => (0..3usize, 0..3usize, 0..6u8, any::<bool>())
                .prop_map(|(res, who, id, error)| Op::Reply { res, who, id, error }),
            2 => (0..3usize).prop_map(Op::Online),
            2 => (0..3usize).prop_map(Op::Offline),
            1 => Just(Op::Revoke),
            2 => (0..8u8).prop_map(Op::Tick),
        ]
    }

    /// What the model knows: open requests by number, and answers counted per request.
    #[derive(Default)]
    struct World {
        open: HashMap<u64, (String, String)>,
        answered: HashMap<u64, u32>,
        forwarded: u64,
    }

    impl World {
        fn answer(&mut self, seq: u64, to: &str, id: &str) {
            let (who, rid) = self
                .open
                .remove(&seq)
                .expect("answer for a request that is not open");
            assert_eq!(
                (who.as_str(), rid.as_str()),
                (to, id),
                "answer goes to its requester"
            );
            *self.answered.entry(seq).or_insert(0) += 1;
        }

        fn drain(&mut self, p: &mut Proxy) {
            let (answers, retries) = p.take_answers();
            for a in answers {
                self.answer(a.seq, &a.to, &a.id);
            }
            for r in retries {
                assert!(
                    self.open.contains_key(&r.seq),
                    "retry of a request that is not open"
                );
                assert!(r.to.starts_with(T));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn every_request_is_answered_exactly_once(ops in proptest::collection::vec(op(), 1..120)) {
            let config = Config::new(H, Some(T), None, Some(5.0), Some(8.0), Some(4.0)).unwrap();
            let mut p = Proxy::new(config);
            p.seed(3);
            let mut w = World::default();
            let mut now = 0.0;
            for op in ops {
                match op {
                    Op::Request { who, id, set } => {
                        let id = id.to_string();
                        let kind = if set { "set" } else { "get" };
                        let head = Head { name: "iq", kind: Some(kind), from: Some(REQUESTERS[who]), to: Some(H), id: Some(&id), priority: 0, eligible: true };
                        match p.route(head, now) {
                            Verdict::Forward { seq, to, .. } => {
                                prop_assert!(to.starts_with(T));
                                prop_assert!(w.open.insert(seq, (REQUESTERS[who].into(), id)).is_none());
                                w.forwarded += 1;
                            }
                            Verdict::Error(_) => {}
                            other => prop_assert!(false, "request got {other:?}"),
                        }
                    }
                    Op::Reply { res, who, id, error } => {
                        let id = id.to_string();
                        let from = format!("{T}/{}", RESOURCES[res]);
                        let to = format!("{H}/{}", REQUESTERS[who]);
                        let kind = if error { "error" } else { "result" };
                        let head = Head { name: "iq", kind: Some(kind), from: Some(&from), to: Some(&to), id: Some(&id), priority: 0, eligible: true };
                        match p.route(head, now) {
                            Verdict::Deliver { to, seq, from } => {
                                prop_assert_eq!(from, H);
                                w.answer(seq, &to, &id);
                            }
                            Verdict::Drop(_) => {}
                            other => prop_assert!(false, "reply got {other:?}"),
                        }
                    }
                    Op::Online(res) | Op::Offline(res) => {
                        let from = format!("{T}/{}", RESOURCES[res]);
                        let kind = matches!(op, Op::Offline(_)).then_some("unavailable");
                        let head = Head { name: "presence", kind, from: Some(&from), to: Some(H), id: None, priority: 0, eligible: true };
                        prop_assert!(matches!(p.route(head, now), Verdict::Consumed(_)));
                        w.drain(&mut p);
                    }
                    Op::Revoke => {
                        let head = Head { name: "presence", kind: Some("unsubscribed"), from: Some(T), to: Some(H), id: None, priority: 0, eligible: true };
                        p.route(head, now);
                        w.drain(&mut p);
                    }
                    Op::Tick(dt) => {
                        now += f64::from(dt);
                        for a in p.expire(now) {
                            w.answer(a.seq, &a.to, &a.id);
                        }
                    }
                }
                prop_assert!(p.pending.len() <= 8);
                for r in REQUESTERS {
                    prop_assert!(p.pending.of_requester(r) <= 4);
                }
                prop_assert_eq!(p.pending.len(), w.open.len());
            }
            for a in p.expire(now + 5.0) {
                w.answer(a.seq, &a.to, &a.id);
            }
            prop_assert!(w.open.is_empty(), "never answered: {:?}", w.open);
            prop_assert!(p.pending.is_empty());
            prop_assert_eq!(w.answered.len() as u64, w.forwarded);
            prop_assert!(w.answered.values().all(|&n| n == 1));
            let c = p.counters;
            prop_assert_eq!(c.forwarded, w.forwarded);
            prop_assert_eq!(c.delivered + c.timed_out + c.lost, w.forwarded, "{:?}", c);
        }
    }
}
