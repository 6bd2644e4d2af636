//! Fault injection for the end-to-end tests (tests/e2e_faults.rs).
//!
//! - [`enable_modules`]: adds modules (e.g. `admin_shell`) to a not yet started server's
//!   `modules_enabled`.
//! - [`shell`]: runs `prosodyctl --config <file> shell "<command>"` without blocking the
//!   runtime.
//! - [`Relay`]: a TCP relay between a client and the server whose connections can be
//!   reset at once ([`Relay::cut`]): the server sees the connection drop without any
//!   stream end or unavailable presence, the client sees it too and reconnects (tokio-xmpp
//!   does that by itself) through the relay.
//! - [`FaultResource`]: an implementing resource of the target account whose answer to
//!   each request is chosen by a [`Policy`] (at once, after a delay, never), that can send
//!   unavailable and available presence on command, and that records every request it got
//!   and when it answered.

use std::collections::HashMap;
use std::fs;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_xmpp::jid::FullJid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

use super::client::{iq_type, jid, Xmpp};
use super::implementer::echo_payload;
use super::Prosody;

/// Adds `modules` to the `modules_enabled` line of the server's config. Call before
/// [`Prosody::start`] (or restart afterwards).
pub fn enable_modules(prosody: &Prosody, modules: &[&str]) {
    let path = prosody.dir().join("prosody.cfg.lua");
    let cfg = fs::read_to_string(&path).expect("read prosody config");
    let mut done = false;
    let out: Vec<String> = cfg
        .lines()
        .map(|line| match line.strip_prefix("modules_enabled = {") {
            Some(rest) if !done => {
                done = true;
                let extra: Vec<String> = modules.iter().map(|m| format!(" {m:?},")).collect();
                format!("modules_enabled = {{{}{rest}", extra.concat())
            }
            _ => line.to_string(),
        })
        .collect();
    assert!(done, "no modules_enabled line in {}", path.display());
    fs::write(&path, out.join("\n") + "\n").expect("write prosody config");
}

/// What `prosodyctl shell` did.
#[derive(Debug)]
pub struct ShellOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// When the command was started and when it ended.
    pub started: Instant,
    pub ended: Instant,
}

/// Runs `prosodyctl --config <config> shell <command>` (needs `admin_shell`, see
/// [`enable_modules`]); bounded to 20 s.
pub async fn shell(prosody: &Prosody, command: &str) -> ShellOutput {
    let started = Instant::now();
    let out = timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("prosodyctl")
            .arg("--config")
            .arg(prosody.dir().join("prosody.cfg.lua"))
            .arg("shell")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("prosodyctl shell {command:?} did not end within 20 s"))
    .unwrap_or_else(|e| panic!("run prosodyctl shell {command:?}: {e}"));
    ShellOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        started,
        ended: Instant::now(),
    }
}

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
fn reset(stream: TcpStream) {
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
    /// offline until it has reconnected and sent presence again.
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

/// Counts of the reasons in the module's "Dropped <stanza>/<type> ...: <reason>" debug
/// lines, for the report.
pub fn dropped_reasons(prosody: &Prosody) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in prosody.log_lines("client_proxy\tdebug\tDropped ") {
        let reason = line.rsplit(": ").next().unwrap_or("").to_string();
        let kind = line
            .split("Dropped ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or("?");
        *out.entry(format!("{kind}: {reason}")).or_default() += 1;
    }
    out
}
