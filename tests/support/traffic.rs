//! Traffic under faults, for the end-to-end tests of "every request answered exactly once".
//!
//! - [`Relay`]: a TCP relay between a client and the server whose connections can be
//!   reset at once ([`Relay::cut`]): the server sees the connection drop without any
//!   stream end or unavailable presence, the client sees it too and reconnects (tokio-xmpp
//!   does that by itself) through the relay.
//! - [`FaultResource`]: an implementing resource of the target account whose answer to
//!   each request is chosen by a [`Policy`] (at once, after a delay, never), that can send
//!   unavailable and available presence on command, and that records every request it got
//!   and when it answered; [`Rng`]: the seeded generator behind its choices.
//! - [`traffic`]: one requester sending gets and sets to the standard setup's host as a
//!   [`Plan`] says and recording every answer ([`Report`]); [`Tally`]: per-request counts
//!   over reports, and the exactly-once assertion.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

use super::client::{
    condition, error_type, get, iq_type, iq_xml, is_from_host, jid, stanza_xml, test_payload, Xmpp,
};
use super::implementer::{echo_payload, ECHO_NS};
use super::setup::PROXY;

/// A TCP relay on 127.0.0.1 to `upstream`. Runs as tasks of the current runtime.
pub struct Relay {
    /// `127.0.0.1:<port>`: give this to the client instead of the server's address.
    pub addr: String,
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free port and relays every connection to `upstream`.
    pub async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address").to_string();
        let (epoch, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let (epoch2, accepted2) = (epoch.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                accepted2.fetch_add(1, Ordering::SeqCst);
                let mut cut = epoch2.subscribe();
                cut.borrow_and_update();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        reset(client);
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {
                            reset(server);
                            reset(client);
                        }
                    }
                });
            }
        });
        Relay {
            addr,
            epoch,
            accepted,
            accept,
        }
    }

    /// Resets every connection open now, both ways (RST, no FIN, nothing more written).
    pub fn cut(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Connections accepted so far (the first login plus one per reconnect).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Closes a socket with SO_LINGER 0: the peer gets a reset instead of an orderly close.
#[allow(deprecated)] // linger 0 does not block on drop: the reset is sent at once
pub fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// How a [`FaultResource`] answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An echo result (see [`echo_payload`]) after this delay (zero: at once).
    After(Duration),
    /// No answer.
    Silent,
}

/// Chooses the [`Reply`] for each request the resource receives.
pub type Policy = Arc<dyn Fn(&Iq) -> Reply + Send + Sync>;

/// One request as a [`FaultResource`] got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    /// The JAT address it came from, e.g. `proxy.localhost/user@localhost/abc`.
    pub from: String,
    /// "get" or "set".
    pub kind: &'static str,
    pub at: Instant,
    /// The connection it came in on (0: the first; +1 per reconnect).
    pub connection: usize,
    /// What the policy chose.
    pub reply: Reply,
    /// When the answer was written (None: not (yet) answered).
    pub replied: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    others: Mutex<Vec<Stanza>>,
    approved: AtomicUsize,
    send_failures: AtomicUsize,
    connections: AtomicUsize,
    /// Available presence sent on the current connection, and since when.
    online_since: Mutex<Option<Instant>>,
}

enum Command {
    Presence(bool),
    Send(Box<Stanza>),
    Stop(oneshot::Sender<()>),
}

/// An implementing resource with a [`Policy`]; see the module documentation.
pub struct FaultResource {
    pub resource: String,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl FaultResource {
    /// Logs in as `user@localhost/resource` at `addr` (the server or a [`Relay`]), sends
    /// available presence and starts answering requests proxied by `proxy`.
    pub async fn start(
        addr: &str,
        user: &str,
        password: &str,
        resource: &str,
        proxy: &str,
        policy: Policy,
    ) -> FaultResource {
        let full = format!("{user}@{}/{resource}", super::DOMAIN);
        let mut xmpp = Xmpp::login(addr, &full, password).await;
        xmpp.presence(None).await;
        let shared = Arc::new(Shared::default());
        *shared.online_since.lock().unwrap() = Some(Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(xmpp, shared.clone(), proxy.to_string(), policy, rx));
        FaultResource {
            resource: resource.to_string(),
            shared,
            commands: tx,
            task,
        }
    }

    /// Sends available (`true`) or unavailable (`false`) presence on the current
    /// connection; after a reconnect, available presence is sent again only if the last
    /// one asked for was available.
    pub fn presence(&self, available: bool) {
        if !available {
            *self.shared.online_since.lock().unwrap() = None;
        }
        let _ = self.commands.send(Command::Presence(available));
    }

    /// Tell the resource that its connection was cut (see [`Relay::cut`]): it counts as
    /// offline until it has reconnected and sent presence again, or resumed its stream.
    pub fn mark_cut(&self) {
        *self.shared.online_since.lock().unwrap() = None;
    }

    /// How long it has been online (available presence sent on its current connection).
    pub fn online_for(&self) -> Option<Duration> {
        self.shared
            .online_since
            .lock()
            .unwrap()
            .map(|since| since.elapsed())
    }

    /// Sends any stanza from this resource.
    pub fn send(&self, stanza: impl Into<Stanza>) {
        let _ = self.commands.send(Command::Send(Box::new(stanza.into())));
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The request with this id, if it came here.
    pub fn got(&self, id: &str) -> Option<Received> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// Stanzas received that were neither requests nor the proxy's subscription request
    /// (taken: each is returned once).
    pub fn others(&self) -> Vec<Stanza> {
        self.shared.others.lock().unwrap().drain(..).collect()
    }

    /// Reconnects seen (connections after the first).
    pub fn reconnects(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stanzas it failed to send (e.g. its connection failed while sending).
    pub fn send_failures(&self) -> usize {
        self.shared.send_failures.load(Ordering::SeqCst)
    }

    /// How many subscription requests from the proxy it approved.
    pub fn approved(&self) -> usize {
        self.shared.approved.load(Ordering::SeqCst)
    }

    /// Is the task still running?
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Sends unavailable presence and closes the stream (bounded).
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = timeout(Duration::from_secs(10), rx).await;
        }
        self.task.abort();
    }
}

impl Drop for FaultResource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends without letting a failure (the harness client panics on one) end the task.
async fn send_safe(xmpp: &mut Xmpp, shared: &Shared, stanza: Stanza) -> bool {
    match AssertUnwindSafe(xmpp.send(stanza)).catch_unwind().await {
        Ok(()) => true,
        Err(_) => {
            shared.send_failures.fetch_add(1, Ordering::SeqCst);
            false
        }
    }
}

async fn serve(
    mut xmpp: Xmpp,
    shared: Arc<Shared>,
    proxy: String,
    policy: Policy,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let own = xmpp.jid.clone();
    let (later_tx, mut later) = mpsc::unbounded_channel::<(usize, Iq)>();
    let mut want_available = true;
    let mut reconnects = 0;
    let mut resumes = 0;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Presence(available)) => {
                    want_available = available;
                    let p = if available { Presence::available() } else { Presence::unavailable() };
                    if send_safe(&mut xmpp, &shared, p.into()).await && available {
                        *shared.online_since.lock().unwrap() = Some(Instant::now());
                    }
                }
                Some(Command::Send(stanza)) => {
                    send_safe(&mut xmpp, &shared, *stanza).await;
                }
                Some(Command::Stop(done)) => {
                    xmpp.close().await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            Some((index, reply)) = later.recv() => {
                if send_safe(&mut xmpp, &shared, reply.into()).await {
                    shared.received.lock().unwrap()[index].replied = Some(Instant::now());
                }
            }
            // Short waits, so that a reconnect is noticed soon even when nothing arrives.
            stanza = xmpp.next_stanza(Duration::from_millis(100)) => {
                if xmpp.reconnects != reconnects {
                    // A new session (the relay cut the old one): presence again.
                    reconnects = xmpp.reconnects;
                    shared.connections.store(reconnects, Ordering::SeqCst);
                    if want_available
                        && send_safe(&mut xmpp, &shared, Presence::available().into()).await
                    {
                        *shared.online_since.lock().unwrap() = Some(Instant::now());
                    }
                }
                if xmpp.resumes != resumes {
                    // The stream resumed (XEP-0198): the same session, its presence kept.
                    resumes = xmpp.resumes;
                    if want_available {
                        *shared.online_since.lock().unwrap() = Some(Instant::now());
                    }
                }
                let Some(stanza) = stanza else { continue };
                handle(&mut xmpp, &own, &shared, &proxy, &policy, &later_tx, reconnects, stanza).await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    xmpp: &mut Xmpp,
    own: &FullJid,
    shared: &Shared,
    proxy: &str,
    policy: &Policy,
    later: &mpsc::UnboundedSender<(usize, Iq)>,
    connection: usize,
    stanza: Stanza,
) {
    match stanza {
        Stanza::Iq(iq @ (Iq::Get { .. } | Iq::Set { .. })) => {
            let reply = policy(&iq);
            let index = {
                let mut received = shared.received.lock().unwrap();
                received.push(Received {
                    id: iq.id().to_string(),
                    from: iq.from().map(|j| j.to_string()).unwrap_or_default(),
                    kind: iq_type(&iq),
                    at: Instant::now(),
                    connection,
                    reply,
                    replied: None,
                });
                received.len() - 1
            };
            let Reply::After(delay) = reply else { return };
            let (to, id, payload) = match iq {
                Iq::Get {
                    from, id, payload, ..
                }
                | Iq::Set {
                    from, id, payload, ..
                } => (from, id, payload),
                _ => unreachable!(),
            };
            let answer = Iq::Result {
                from: None,
                to,
                id,
                payload: Some(echo_payload(own, &payload)),
            };
            if delay.is_zero() {
                if send_safe(xmpp, shared, answer.into()).await {
                    shared.received.lock().unwrap()[index].replied = Some(Instant::now());
                }
            } else {
                let later = later.clone();
                tokio::spawn(async move {
                    sleep(delay).await;
                    let _ = later.send((index, answer));
                });
            }
        }
        Stanza::Presence(p)
            if p.type_ == PresenceType::Subscribe
                && p.from.as_ref().is_some_and(|f| f.to_string() == proxy) =>
        {
            if send_safe(
                xmpp,
                shared,
                Presence::subscribed().with_to(jid(proxy)).into(),
            )
            .await
            {
                shared.approved.fetch_add(1, Ordering::SeqCst);
            }
        }
        other => shared.others.lock().unwrap().push(other),
    }
}

/// A small deterministic pseudo-random generator (SplitMix64): runs print their seed, and
/// decisions derived from (seed, request id) are the same in every run with that seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for this seed and key (e.g. a request id).
    pub fn keyed(seed: u64, key: &str) -> Rng {
        // FNV-1a of the key, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut r = Rng(seed ^ h);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A duration uniform in `lo..=hi` (milliseconds).
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// A get or a set to H with the test payload carrying the id.
pub fn request(id: &str, set: bool) -> Iq {
    if set {
        Iq::Set {
            from: None,
            to: Some(jid(PROXY)),
            id: id.to_string(),
            payload: test_payload(id),
        }
    } else {
        get(PROXY, id, test_payload(id))
    }
}

/// Jitsi Meet's focus namespace (`<conference room='...'/>`, the affinity key).
pub const FOCUS_NS: &str = "http://jitsi.org/protocol/focus";

/// Like [`request`], for room `room{room}`: the test payload inside a conference element,
/// `<conference xmlns=FOCUS_NS room='room<room>@conference.localhost'><query n=id/></conference>`.
pub fn keyed_request(id: &str, set: bool, room: u64) -> Iq {
    let payload = Element::builder("conference", FOCUS_NS)
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("room").to_owned(),
            format!("room{room}@conference.localhost"),
        )
        .append(test_payload(id))
        .build();
    if set {
        Iq::Set {
            from: None,
            to: Some(jid(PROXY)),
            id: id.to_string(),
            payload,
        }
    } else {
        get(PROXY, id, payload)
    }
}

/// What one answer was.
#[derive(Clone, Debug)]
pub enum What {
    /// An echo result for this very request, from this resource.
    Result(String),
    /// An error from H: condition, type.
    Error(String, String),
    /// Anything else (wrong payload, wrong sender...): always a failure.
    Odd(String),
}

pub fn classify(iq: &Iq, id: &str) -> What {
    if iq.from().map(|j| j.to_string()).as_deref() != Some(PROXY) {
        return What::Odd(format!("not from {PROXY}: {}", iq_xml(iq)));
    }
    match iq {
        Iq::Result {
            payload: Some(p), ..
        } if p.is("echo", ECHO_NS) => {
            let query = p.get_child("query", ECHO_NS).or_else(|| {
                p.get_child("conference", FOCUS_NS)
                    .and_then(|c| c.get_child("query", ECHO_NS))
            });
            let n = query.and_then(|q| q.attr("n"));
            match (n, p.attr("resource")) {
                (Some(n), Some(res)) if n == id => What::Result(res.to_string()),
                _ => What::Odd(format!("result for another request: {}", iq_xml(iq))),
            }
        }
        Iq::Error { error, .. } => What::Error(condition(error), error_type(error)),
        _ => What::Odd(iq_xml(iq)),
    }
}

/// One request sent by a [`traffic`] loop.
#[derive(Debug)]
pub struct Sent {
    pub id: String,
    pub kind: &'static str,
    pub at: Instant,
}

/// One answer received.
#[derive(Clone, Debug)]
pub struct Got {
    pub at: Instant,
    pub what: What,
}

/// What a [`traffic`] loop saw.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: Vec<Sent>,
    /// Per request (same index as `sent`): every answer with its id.
    pub answers: Vec<Vec<Got>>,
    /// Stanzas from H that answer nothing this requester sent.
    pub strays: Vec<String>,
    pub disconnects: usize,
}

/// How a [`traffic`] loop sends.
pub struct Plan {
    /// Send this many requests; None: until `stop`.
    pub count: Option<usize>,
    pub stop: Arc<AtomicBool>,
    /// Most requests outstanding at once.
    pub window: usize,
    /// Share of sets among the requests.
    pub sets: f64,
    pub seed: u64,
    /// After the last send, wait at most this long for the missing answers.
    pub give_up: Duration,
    /// Then keep listening this long for late duplicates.
    pub linger: Duration,
    /// Counts first answers (for the driver's progress).
    pub progress: Arc<AtomicUsize>,
    /// Jitsi rooms: with n > 0, half the requests are for one of n rooms (an affinity key,
    /// [`keyed_request`]).
    pub rooms: u64,
}

/// Sends requests with ids from `make_id` as planned and records every answer.
pub async fn traffic(mut x: Xmpp, plan: Plan, make_id: impl Fn(usize) -> String) -> Report {
    let mut rng = Rng::new(plan.seed);
    let mut report = Report::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut outstanding = 0usize;
    let mut last_send = Instant::now();
    // Like a real client, a requester told service-unavailable waits a little.
    let mut paused_until = Instant::now();
    fn record(
        s: Stanza,
        report: &mut Report,
        index: &HashMap<String, usize>,
        outstanding: &mut usize,
        progress: &AtomicUsize,
        paused_until: &mut Instant,
    ) {
        let at = Instant::now();
        if let Stanza::Iq(iq) = &s {
            if matches!(iq, Iq::Result { .. } | Iq::Error { .. }) {
                if let Some(&i) = index.get(iq.id()) {
                    let what = classify(iq, iq.id());
                    if matches!(&what, What::Error(c, _) if c == "service-unavailable") {
                        *paused_until = at + Duration::from_millis(100);
                    }
                    report.answers[i].push(Got { at, what });
                    if report.answers[i].len() == 1 {
                        *outstanding -= 1;
                        progress.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
            }
        }
        if is_from_host(&s, PROXY) {
            report.strays.push(stanza_xml(&s));
        }
    }
    loop {
        let more = |report: &Report| match plan.count {
            Some(n) => report.sent.len() < n,
            None => !plan.stop.load(Ordering::SeqCst),
        };
        while more(&report) && outstanding < plan.window && Instant::now() >= paused_until {
            let id = make_id(report.sent.len());
            let set = rng.chance(plan.sets);
            let room = (plan.rooms > 0 && rng.chance(0.5)).then(|| rng.below(plan.rooms));
            x.send(match room {
                Some(room) => keyed_request(&id, set, room),
                None => request(&id, set),
            })
            .await;
            last_send = Instant::now();
            index.insert(id.clone(), report.sent.len());
            report.sent.push(Sent {
                id,
                kind: if set { "set" } else { "get" },
                at: last_send,
            });
            report.answers.push(Vec::new());
            outstanding += 1;
        }
        if !more(&report) && (outstanding == 0 || last_send.elapsed() > plan.give_up) {
            break;
        }
        if let Some(s) = x.next_stanza(Duration::from_millis(50)).await {
            record(
                s,
                &mut report,
                &index,
                &mut outstanding,
                &plan.progress,
                &mut paused_until,
            );
        }
    }
    let until = Instant::now() + plan.linger;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match x.next_stanza(left).await {
            Some(s) => record(
                s,
                &mut report,
                &index,
                &mut outstanding,
                &plan.progress,
                &mut paused_until,
            ),
            None => break,
        }
    }
    report.disconnects = x.disconnects;
    x.close().await;
    report
}

/// Per-request tallies over reports.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub sent_by_kind: BTreeMap<&'static str, usize>,
    pub once: usize,
    pub twice_or_more: Vec<String>,
    pub never: Vec<String>,
    pub results: usize,
    pub results_by_resource: BTreeMap<String, usize>,
    /// (condition, type, kind of request) -> count
    pub errors: BTreeMap<(String, String, &'static str), usize>,
    pub odd: Vec<String>,
    pub strays: Vec<String>,
    pub disconnects: usize,
    pub latencies: Vec<Duration>,
}

impl Tally {
    pub fn add(&mut self, report: &Report) {
        self.disconnects += report.disconnects;
        self.strays.extend(report.strays.iter().cloned());
        for (sent, answers) in report.sent.iter().zip(&report.answers) {
            self.sent += 1;
            *self.sent_by_kind.entry(sent.kind).or_default() += 1;
            match answers.len() {
                0 => self.never.push(format!("{} ({})", sent.id, sent.kind)),
                1 => self.once += 1,
                n => self.twice_or_more.push(format!(
                    "{} ({}) answered {n} times: {:?}",
                    sent.id,
                    sent.kind,
                    answers
                        .iter()
                        .map(|g| (&g.what, g.at - sent.at))
                        .collect::<Vec<_>>()
                )),
            }
            for got in answers {
                match &got.what {
                    What::Result(res) => {
                        self.results += 1;
                        *self.results_by_resource.entry(res.clone()).or_default() += 1;
                    }
                    What::Error(cond, etype) => {
                        *self
                            .errors
                            .entry((cond.clone(), etype.clone(), sent.kind))
                            .or_default() += 1
                    }
                    What::Odd(text) => self.odd.push(format!("{}: {text}", sent.id)),
                }
            }
            if let Some(first) = answers.first() {
                self.latencies.push(first.at - sent.at);
            }
        }
    }

    pub fn errors_of(&self, cond: &str) -> usize {
        self.errors
            .iter()
            .filter(|((c, _, _), _)| c == cond)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn latency(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }

    pub fn print(&mut self, title: &str) {
        eprintln!("==== {title} ====");
        eprintln!("sent {} {:?}", self.sent, self.sent_by_kind);
        eprintln!(
            "answered once {}, answered twice or more {}, never answered {}, stray answers {}, odd answers {}",
            self.once,
            self.twice_or_more.len(),
            self.never.len(),
            self.strays.len(),
            self.odd.len()
        );
        eprintln!(
            "results {} by resource {:?}",
            self.results, self.results_by_resource
        );
        for ((cond, etype, kind), n) in &self.errors {
            eprintln!("error {cond} ({etype}) to a {kind}: {n}");
        }
        eprintln!(
            "latency of the first answer: p50 {:?}, p99 {:?}, max {:?}; requester disconnects {}",
            self.latency(0.5),
            self.latency(0.99),
            self.latency(1.0),
            self.disconnects
        );
    }

    /// Panics unless every request got exactly one answer and nothing else came.
    pub fn assert_exactly_once(&self) {
        let show = |v: &Vec<String>| v.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ");
        assert!(
            self.never.is_empty(),
            "{} request(s) never answered, e.g.:\n  {}",
            self.never.len(),
            show(&self.never)
        );
        assert!(
            self.twice_or_more.is_empty(),
            "{} request(s) answered more than once, e.g.:\n  {}",
            self.twice_or_more.len(),
            show(&self.twice_or_more)
        );
        assert!(
            self.strays.is_empty(),
            "{} stanza(s) from the proxy that answer nothing sent, e.g.:\n  {}",
            self.strays.len(),
            show(&self.strays)
        );
        assert!(
            self.odd.is_empty(),
            "{} odd answer(s), e.g.:\n  {}",
            self.odd.len(),
            show(&self.odd)
        );
    }
}
