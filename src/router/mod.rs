//! The decision: given a stanza's head and the time, what the component does with it.
//! `Proxy` owns all state of one component; no I/O and no clock: the shim applies the
//! verdicts and sends what the outbox holds. One child module per concern: requests
//! (forward, reply matching, loss and retry), presence (target presence and user
//! subscriptions), messages, outbound (requests the implementing client starts).

mod messages;
mod outbound;
mod presence;
mod requests;

use crate::address::{split_resource, user_and_domain};
use crate::affinity::{KeyTable, Rules, MAX_KEYS};
use crate::config::Config;
use crate::jat::{TokenMap, Translator};
use crate::pending::{Limits, Method, PendingTable, Request};
use crate::resources::{Pool, ResourceSet};
use crate::verdict::{Head, Level, OutItem, Verdict, FORBIDDEN, NOT_ADDRESSED};
use outbound::Outbound;
use presence::Subscriptions;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rustc_hash::FxHashSet;
use std::collections::HashMap;
use std::sync::Arc;

/// What happened so far, for statistics and the status command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    forwarded: u64,
    refused: u64,
    delivered: u64,
    unsolicited: u64,
    timed_out: u64,
    lost: u64,
    retried: u64,
    outbound: u64,
    messages_in: u64,
    messages_out: u64,
    ejections: u64,
}

/// One online resource as the status command lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceStatus {
    /// The resourcepart.
    pub name: String,
    /// Presence priority.
    pub priority: i32,
    /// "active", "draining" or "ineligible".
    pub pool: &'static str,
    /// Requests it holds now.
    pub pending: u32,
    /// Out of rotation until then (the shim's clock), if ejected.
    pub ejected_until: Option<f64>,
    /// Its stream hibernates (stream management): out of rotation until it resumes.
    pub hibernating: bool,
    /// Affinity keys it has (`client_proxy_affinity`).
    pub keys: usize,
}

/// A snapshot of one component for the status command, metrics and `module:set_status`.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The component host.
    pub host: String,
    /// The implementing client's bare JID.
    pub target: String,
    /// Inbound requests outstanding.
    pub pending: usize,
    /// Requests of the implementing client to users outstanding.
    pub outbound_pending: usize,
    /// Online resources that may get requests.
    pub eligible: usize,
    /// Of those, the ones out of rotation because they kept failing.
    pub ejected: usize,
    /// Resources that would be eligible but whose stream hibernates (stream management).
    pub hibernating: usize,
    /// Ejections so far.
    pub ejections: u64,
    /// The target revoked the subscription (or its presence errored).
    pub revoked: bool,
    /// `client_proxy_manage_roster`: the shim keeps the subscription (roster.lib.lua).
    pub manage_roster: bool,
    /// Health, as `module:set_status` takes it.
    pub level: Level,
    /// Health, for the operator.
    pub text: String,
    /// Requests by what became of them (metric label, count).
    pub requests: [(&'static str, u64); 8],
    /// Messages by direction (metric label, count).
    pub messages: [(&'static str, u64); 2],
    /// Affinity keys remembered (those a resource has, and those whose resource was lost
    /// and that wait for their next request).
    pub keys: usize,
    /// Affinity keys given a resource other than their first (their resource was lost,
    /// or a retry took them along).
    pub moves: u64,
    /// The online resources, by name.
    pub resources: Vec<ResourceStatus>,
}

/// The state of one component: who is online, what is outstanding, who subscribed.
pub struct Proxy {
    config: Config,
    resources: ResourceSet,
    pending: PendingTable,
    /// Which resource has each affinity key.
    keys: KeyTable,
    outbound: Outbound,
    subscriptions: Subscriptions,
    counters: Counters,
    /// The target revoked the subscription (or its presence errored) and has not come back.
    revoked: bool,
    jat: Translator,
    rng: SmallRng,
    /// Stanzas to send that are not the one being routed, in order.
    outbox: Vec<OutItem>,
    /// Which resource last wrote to each user, for the bounces of its messages.
    message_origins: HashMap<String, Arc<str>>,
    /// Hold numbers of requests answered in the outbox: free once the shim has the
    /// outbox (and so lets go of them before it routes another stanza).
    released_at_drain: Vec<u64>,
    /// The request the last answer delivered (by a verdict) answered, until the next one:
    /// what `undo` needs to answer its requester if that verdict never reached the shim.
    answered: Option<Request>,
    /// The xml:lang of the last request forwarded, shared by the next ones that carry it.
    last_lang: Option<Arc<str>>,
    /// Domains this server hosts: exempt from `client_proxy_max_pending_per_domain`. A
    /// fast hash (rustc-hash) is safe here: nobody else adds to it.
    local_domains: FxHashSet<String>,
}

/// The bare JID: what keeps a user on one resource (sticky strategy, messages, so that a
/// user's devices reach the resource that holds their state) and what subscribes.
fn bare(jid: &str) -> &str {
    split_resource(jid).0
}

/// The limits of the table of inbound requests, as the options set them.
fn limits(config: &Config) -> Limits {
    Limits {
        timeout: config.timeout,
        max_total: config.max_pending,
        max_per_requester: config.max_pending_per_requester,
        max_per_user: config.max_pending_per_user,
        max_per_domain: config.max_pending_per_domain,
    }
}

/// Tokens live at least as long as a request may wait for its answer.
fn translator(config: &Config) -> Translator {
    Translator::new(
        config.jat,
        TokenMap::new(10_000, (config.timeout * 2.0).max(600.0)),
    )
}

impl Proxy {
    /// A proxy with nothing online, nothing outstanding and nobody subscribed.
    pub fn new(config: Config) -> Self {
        Proxy {
            resources: ResourceSet::new(config.strategy),
            pending: PendingTable::new(limits(&config)),
            keys: KeyTable::new(config.affinity_idle, MAX_KEYS),
            outbound: Outbound::new(&config),
            subscriptions: Subscriptions::default(),
            jat: translator(&config),
            config,
            counters: Counters::default(),
            revoked: false,
            rng: SmallRng::from_rng(&mut rand::rng()),
            outbox: Vec::new(),
            message_origins: HashMap::new(),
            released_at_drain: Vec::new(),
            answered: None,
            last_lang: None,
            local_domains: FxHashSet::default(),
        }
    }

    /// The domains this server hosts (they change as hosts are activated).
    pub fn set_local_domains<'a>(&mut self, domains: impl IntoIterator<Item = &'a str>) {
        self.local_domains = domains.into_iter().map(str::to_owned).collect();
    }

    /// Whether requests from this domain count toward `client_proxy_max_pending_per_domain`.
    fn caps_domain(&self, domain: &str) -> bool {
        !self.local_domains.contains(domain)
    }

    /// The rules of `client_proxy_affinity`, which the shim matches each request's payload
    /// against (it has the stanza; the core never parses XML).
    pub fn affinity_rules(&self) -> &Rules {
        &self.config.affinity
    }

    /// Seeds the random choice, for reproducible tests.
    pub fn seed(&mut self, seed: u64) {
        self.rng = SmallRng::seed_from_u64(seed);
    }

    /// Applies options changed by a reload. A new target means the online resources are
    /// someone else's: they are forgotten and every outstanding request is answered
    /// (in the outbox).
    pub fn reconfigure(&mut self, config: Config) {
        let new_target = config.target != self.config.target;
        if new_target {
            self.resources.clear();
            self.keys.lost_all();
            self.revoked = false;
            let lost = self.pending.take_all();
            self.answer_lost(lost);
        }
        self.resources.set_strategy(config.strategy);
        if config.affinity != self.config.affinity {
            // Other rules: the keys remembered are values of other attributes.
            self.keys.clear();
        }
        self.keys.set_idle(config.affinity_idle);
        self.outbound.reconfigure(&config);
        self.pending.set_limits(limits(&config));
        if config.jat != self.jat.mode() {
            self.jat = translator(&config);
        }
        self.config = config;
        if new_target {
            self.health_changed();
        }
    }

    /// `target/resource`: where a stanza to the implementing client goes.
    fn target_jid(&self, resource: &str) -> String {
        let target = &self.config.target;
        let mut jid = String::with_capacity(target.len() + 1 + resource.len());
        jid.push_str(target);
        jid.push('/');
        jid.push_str(resource);
        jid
    }

    /// `host/JAT`: the component's address for a requester.
    fn jat_address(&mut self, requester: &str, now: f64) -> String {
        self.jat.address(&self.config.host, requester, now)
    }

    /// The decision for one stanza.
    pub fn route(&mut self, head: Head<'_>, now: f64) -> Verdict {
        let mut verdict = self.decide(head, now);
        if let Verdict::Drop { drain, .. } = &mut verdict {
            *drain = !self.outbox.is_empty();
        }
        verdict
    }

    fn decide(&mut self, head: Head<'_>, now: f64) -> Verdict {
        let Some(from) = head.from else {
            return Verdict::drop("stanza without from");
        };
        let (from_bare, from_res) = split_resource(from);
        let to_res = head.to.and_then(|to| split_resource(to).1);
        let is_error = head.stanza_type == Some("error");
        if from_bare == self.config.target {
            return match (head.name, to_res) {
                ("presence", None) => self.target_presence(head, from_res, now),
                ("iq", _) => self.iq_from_target(head, from_res, to_res, now),
                ("message", Some(jat)) => self.message_from_target(from_res, jat, is_error, now),
                _ if is_error => Verdict::drop("error from the target"),
                ("message", None) => Verdict::Error(NOT_ADDRESSED),
                _ => Verdict::drop("directed presence from the target"),
            };
        }
        if !self.admits(from) {
            return match (head.name, head.stanza_type) {
                // Answers to the implementing client's own requests still come back.
                ("iq", Some("result" | "error")) => self.reply_from_user(from, head.id, now),
                (_, Some("error")) => Verdict::drop("error stanza from a requester"),
                ("iq", Some("get" | "set")) => {
                    self.counters.refused += 1;
                    Verdict::Error(FORBIDDEN)
                }
                ("message", _) | ("presence", Some("subscribe" | "probe")) => {
                    Verdict::Error(FORBIDDEN)
                }
                _ => Verdict::drop("stanza from a sender not on client_proxy_allow"),
            };
        }
        match (head.name, head.stanza_type) {
            ("message", Some("error")) => self.message_bounce_from_user(from, now),
            ("iq", Some("result") | Some("error")) => self.reply_from_user(from, head.id, now),
            (_, Some("error")) => Verdict::drop("error stanza from a requester"),
            ("iq", Some("get")) => self.forward(from, head, Method::Get, now),
            ("iq", Some("set")) => self.forward(from, head, Method::Set, now),
            ("iq", _) => Verdict::drop("iq without a valid type"),
            ("message", _) => self.message_from_user(from, now),
            ("presence", presence_type) => self.user_presence(from, presence_type),
            _ => Verdict::drop("unknown stanza"),
        }
    }

    /// The binding could not hand `verdict`, the one `route` just returned, to Lua (Lua
    /// raised while it pushed the verdict's strings: out of memory, a finalizer that
    /// errors), so the shim gets the verdict "fail" and answers a get/set with
    /// internal-server-error itself. Undoes what the verdict would have done so that a
    /// requester still gets exactly one answer: a forwarded request is forgotten as if
    /// it had never been forwarded (the shim's error is its answer, and no timeout
    /// follows); an answer to a requester that never went out is owed as an
    /// internal-server-error in the outbox (drain it). Anything else is left as it is (a
    /// message or a presence is not answered, an error or a drop changed nothing). Only
    /// for the verdict just returned, once.
    pub fn undo(&mut self, verdict: &Verdict) {
        let Verdict::Send(send) = verdict else {
            return;
        };
        if let Some(held) = send.hold {
            self.unforward(held);
        } else if let Some(held) = send.release {
            self.undeliver(send, held);
        }
    }

    /// Whether `client_proxy_allow` lets this sender use the service.
    fn admits(&self, sender: &str) -> bool {
        let Some(allow) = &self.config.allow else {
            return true;
        };
        let (user, domain) = user_and_domain(sender);
        allow.admits(user, domain)
    }

    /// Takes what the outbox holds, in the order to send it.
    pub fn drain(&mut self) -> Vec<OutItem> {
        for held in self.released_at_drain.drain(..) {
            self.pending.release(held);
        }
        std::mem::take(&mut self.outbox)
    }

    /// The clock moved to `now`: requests past their deadline are answered
    /// remote-server-timeout. Returns the outbox (those answers last).
    pub fn tick(&mut self, now: f64) -> Vec<OutItem> {
        self.jat.expire(now);
        self.keys.expire(now);
        self.readmit(now);
        self.expire_requests(now);
        self.expire_outbound(now);
        self.drain()
    }

    /// The component's health, and the text that explains it to the operator.
    fn health(&self) -> (Level, String) {
        let (target, host) = (&self.config.target, &self.config.host);
        let eligible = self.resources.eligible();
        if self.revoked {
            (
                Level::Error,
                format!("{target} revoked the subscription or its presence failed: approve the subscription of {host}"),
            )
        } else if eligible == 0 {
            let hibernating = self.resources.hibernating();
            let text = if hibernating > 0 {
                format!("No eligible resource of {target} is online ({hibernating} hibernating: waiting for it to resume)")
            } else {
                format!("No eligible resource of {target} is online")
            };
            (Level::Warn, text)
        } else {
            (
                Level::Ok,
                format!("{eligible} eligible resource(s) of {target} online"),
            )
        }
    }

    /// A snapshot for the status command, metrics and `module:set_status`.
    pub fn status(&self) -> Status {
        let c = self.counters;
        let (level, text) = self.health();
        let mut resources: Vec<ResourceStatus> = self
            .resources
            .iter()
            .map(|r| ResourceStatus {
                name: r.name.to_string(),
                priority: r.priority,
                pool: match r.pool {
                    Pool::Active => "active",
                    Pool::Draining => "draining",
                    Pool::Ineligible => "ineligible",
                },
                pending: r.pending,
                ejected_until: r.ejected_until,
                hibernating: r.hibernating,
                keys: self.keys.keys_of(&r.name),
            })
            .collect();
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        Status {
            host: self.config.host.clone(),
            target: self.config.target.clone(),
            pending: self.pending.len(),
            outbound_pending: self.outbound.len(),
            eligible: self.resources.eligible(),
            ejected: self.resources.ejected(),
            hibernating: self.resources.hibernating(),
            ejections: c.ejections,
            revoked: self.revoked,
            manage_roster: self.config.manage_roster,
            level,
            text,
            requests: [
                ("forwarded", c.forwarded),
                ("refused", c.refused),
                ("delivered", c.delivered),
                ("unsolicited", c.unsolicited),
                ("timed_out", c.timed_out),
                ("lost", c.lost),
                ("retried", c.retried),
                ("outbound", c.outbound),
            ],
            messages: [("to_service", c.messages_in), ("to_user", c.messages_out)],
            keys: self.keys.len(),
            moves: self.keys.moves(),
            resources,
        }
    }
}

#[cfg(test)]
mod tests;
