//! `make bench`, part 1: end to end against a real Prosody on 127.0.0.1.
//!
//! **Throughput.** A throwaway Prosody (the harness of tests/support, read-only here) with
//!
//! ```text
//! Component "proxy.localhost" "client_proxy"          this module
//!     target_address = "service@localhost"
//! Component "floor.localhost" "readdress_floor"       bench/mod_readdress_floor.lua
//!     readdress_floor_targets = { "service@localhost/a", "service@localhost/b" }
//! ```
//!
//! two implementing resources, service@localhost/a and /b, answering every iq get at once
//! with an empty result, and C requesters (user@localhost/r1..rC), each sending one iq
//! get at a time and waiting for its answer. Three modes, interleaved in rounds (the order
//! rotates from round to round), each spread over the same two resources:
//!
//! - direct: the requester sends the iq straight to service@localhost/a or /b (in turn);
//! - floor: to floor.localhost, which readdresses it to /a or /b (in turn) and the answer
//!   back, and does nothing else (the least a proxy does);
//! - proxied: to proxy.localhost (strategy random over /a and /b).
//!
//! Prosody is pinned to CPU 0 (`taskset -a -c -p 0`), this load generator to CPU 1 (all
//! its threads), when the machine has two CPUs or more (BENCH_PIN=0: no pinning). Per
//! round and mode: round trips/s, p50/p99 latency, Prosody CPU per round trip
//! (utime+stime of its pid from /proc/<pid>/stat), the load generator's own CPU per round
//! trip. The figures that count are per-round ratios, proxied/floor, and their median
//! over the rounds: Prosody CPU per round trip (target <= 1.05) and round trips/s.
//!
//! **Memory.** A second throwaway Prosody with `Component "hold.localhost"
//! "client_proxy"` (target silent@localhost, timeout 3600 s, caps raised), a silent
//! implementing resource silent@localhost/s (online, never answers) and the helper
//! bench/mod_bench_heap.lua on the VirtualHost. The helper sends BENCH_MEMORY_REQUESTS
//! (default 100,000) iq gets to hold.localhost from as many distinct requesters
//! (u<k>@localhost/r), in chunks, each chunk once the silent resource has received the
//! one before. Prosody's VmRSS (/proc/<pid>/status) and Lua heap (collectgarbage("count")
//! after two full collections, via the helper) before and after, divided by the number
//! of requests held; and what one stanza of the held shape takes in the heap.
//!
//! The harness writes `log = { debug = ... }`; debug logging dominates Prosody's CPU, so
//! this bench rewrites that line of the config to `info` before starting the server (the
//! harness waits for an info line, "Activated service 'c2s'", so info is the lowest
//! level that still lets it start).
//!
//! Environment: BENCH_ROUNDS (default 7), BENCH_REQUESTS (round trips per mode per round,
//! default 10000), BENCH_CONCURRENCY (requesters, default 32), BENCH_WARMUP (round trips
//! per mode before measuring, default 2000), BENCH_PIN (default 1), BENCH_MEMORY_REQUESTS
//! (default 100000; 0 skips the memory part), CLIENT_PROXY_SO (default the release build).
//! Threads besides Prosody: one for the requesters, one per implementing resource, each a
//! current-thread tokio runtime (see tests/support/mod.rs for why not multi-thread).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread;
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use support::{ComponentSpec, Prosody, DOMAIN};
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

const PROXY: &str = "proxy.localhost";
const FLOOR: &str = "floor.localhost";
const HOLD: &str = "hold.localhost";
const SERVICE: &str = "service";
const SILENT: &str = "silent";
const USER: &str = "user";
const PASSWORD: &str = "secret";
const PAYLOAD_NS: &str = "urn:example:client-proxy-bench";
const HEAP_NS: &str = "urn:example:client-proxy-bench:heap";
const RESOURCES: [&str; 2] = ["a", "b"];
/// A round trip that takes longer than this is a failure (no answer).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests the helper sends per inject iq.
const INJECT_CHUNK: usize = 5000;
/// The CPU targets of issue 10.
const CPU_TARGET: f64 = 1.05;
const MEMORY_TARGET: f64 = 1024.0;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

fn jid(s: &str) -> Jid {
    Jid::new(s).unwrap_or_else(|e| panic!("bad JID {s:?}: {e}"))
}

/// Clock ticks per second for /proc/<pid>/stat (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// A field of /proc/<pid>/status, e.g. "VmRSS" (value without the unit) or
/// "Cpus_allowed_list".
fn status_field(pid: &str, field: &str) -> String {
    let prefix = format!("{field}:");
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        .unwrap_or_default()
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: &str) -> u64 {
    status_field(pid, "VmRSS").parse().unwrap_or(0)
}

/// Pins every thread of `pid` to `cpu` (taskset); later threads inherit it. Returns
/// the CPUs it may run on afterwards.
fn pin(pid: &str, cpu: usize) -> String {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-c", "-p", &cpu.to_string(), pid])
        .output();
    match out {
        Ok(o) if o.status.success() => status_field(pid, "Cpus_allowed_list"),
        Ok(o) => panic!(
            "taskset -a -c -p {cpu} {pid} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("taskset (util-linux) not found: {e}; set BENCH_PIN=0"),
    }
}

/// Connects and waits for the session (bounded); sends nothing.
async fn login(addr: &str, full_jid: &str) -> Client {
    let mut client = Client::new_plaintext(
        jid(full_jid),
        PASSWORD.to_string(),
        DnsConfig::addr(addr),
        Timeouts::tight(),
    );
    let online = timeout(Duration::from_secs(15), async {
        while let Some(event) = client.next().await {
            match event {
                Event::Online { .. } => return true,
                Event::Disconnected(e) => eprintln!("login {full_jid}: disconnected: {e}"),
                Event::Stanza(_) => {}
            }
        }
        false
    })
    .await;
    assert!(
        matches!(online, Ok(true)),
        "login {full_jid} at {addr} failed"
    );
    client
}

async fn send(client: &mut Client, stanza: impl Into<Stanza>) {
    timeout(Duration::from_secs(10), client.send_stanza(stanza.into()))
        .await
        .expect("sending timed out")
        .expect("sending failed");
}

/// An implementing resource: approves any subscription request, counts the iq gets and
/// sets it receives, and answers each at once with an empty result unless `silent`. Runs
/// until `stop` fires.
async fn implementer(
    addr: String,
    full_jid: String,
    silent: bool,
    ready: std_mpsc::Sender<()>,
    mut stop: oneshot::Receiver<()>,
    served: Arc<AtomicU64>,
) {
    let mut client = login(&addr, &full_jid).await;
    send(&mut client, Presence::available()).await;
    let _ = ready.send(());
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            event = client.next() => event,
        };
        match event {
            None => panic!("{full_jid}: stream ended"),
            Some(Event::Stanza(Stanza::Iq(
                Iq::Get { from, id, .. } | Iq::Set { from, id, .. },
            ))) => {
                served.fetch_add(1, Ordering::Relaxed);
                if !silent {
                    let reply = Iq::Result {
                        from: None,
                        to: from,
                        id,
                        payload: None,
                    };
                    send(&mut client, reply).await;
                }
            }
            Some(Event::Stanza(Stanza::Presence(p))) if p.type_ == PresenceType::Subscribe => {
                if let Some(from) = p.from {
                    send(&mut client, Presence::subscribed().with_to(from)).await;
                }
            }
            Some(Event::Disconnected(e)) => eprintln!("{full_jid}: disconnected: {e}"),
            Some(Event::Online { .. }) => {
                eprintln!("{full_jid}: reconnected; sending presence again");
                send(&mut client, Presence::available()).await;
            }
            Some(Event::Stanza(_)) => {}
        }
    }
    let _ = timeout(Duration::from_secs(5), client.send_end()).await;
}

/// An implementing resource on a thread (and runtime) of its own; its stop switch and
/// the count of requests it received. Returns once it is online.
struct Implementer {
    stop: oneshot::Sender<()>,
    thread: thread::JoinHandle<()>,
    served: Arc<AtomicU64>,
}

impl Implementer {
    fn start(addr: &str, full_jid: &str, silent: bool) -> Implementer {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (stop, stop_rx) = oneshot::channel();
        let served = Arc::new(AtomicU64::new(0));
        let thread = {
            let (addr, full_jid, served) = (addr.to_string(), full_jid.to_string(), served.clone());
            thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(implementer(
                        addr, full_jid, silent, ready_tx, stop_rx, served,
                    ))
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{full_jid} did not come online"));
        Implementer {
            stop,
            thread,
            served,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// What one requester saw.
#[derive(Default)]
struct Outcome {
    /// Round-trip latencies in microseconds.
    latencies: Vec<u32>,
    /// Answers of type error (the first one kept).
    errors: usize,
    first_error: Option<String>,
}

fn payload() -> Element {
    Element::builder("query", PAYLOAD_NS).build()
}

/// Waits (bounded) for the answer to `id`; None for an error answer (its XML in `error`).
async fn answer(client: &mut Client, id: &str, error: &mut Option<String>) -> Option<Iq> {
    loop {
        let event = timeout(ANSWER_TIMEOUT, client.next())
            .await
            .unwrap_or_else(|_| panic!("no answer to {id} within {ANSWER_TIMEOUT:?}"));
        match event {
            Some(Event::Stanza(Stanza::Iq(iq @ Iq::Result { .. }))) if iq.id() == id => {
                return Some(iq)
            }
            Some(Event::Stanza(Stanza::Iq(iq @ Iq::Error { .. }))) if iq.id() == id => {
                *error = Some(String::from(&Element::from(iq)));
                return None;
            }
            Some(Event::Stanza(_)) => {}
            Some(Event::Disconnected(e)) => eprintln!("requester: disconnected: {e}"),
            Some(Event::Online { .. }) => eprintln!("requester: reconnected"),
            None => panic!("requester: stream ended"),
        }
    }
}

/// `n` round trips, one at a time, the i-th to `targets[(offset + i) % len]`.
async fn requester(
    client: &mut Client,
    targets: &[Jid],
    offset: usize,
    n: usize,
    tag: &str,
) -> Outcome {
    let mut out = Outcome {
        latencies: Vec::with_capacity(n),
        ..Outcome::default()
    };
    let payload = payload();
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let iq = Iq::Get {
            from: None,
            to: Some(targets[(offset + i) % targets.len()].clone()),
            id: id.clone(),
            payload: payload.clone(),
        };
        let started = Instant::now();
        send(client, iq).await;
        let mut error = None;
        if answer(client, &id, &mut error).await.is_none() {
            out.errors += 1;
            if out.first_error.is_none() {
                out.first_error = error;
            }
        }
        out.latencies
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    Floor,
    Proxied,
}

const MODES: [Mode; 3] = [Mode::Direct, Mode::Floor, Mode::Proxied];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Floor => "floor",
            Mode::Proxied => "proxied",
        }
    }

    fn targets(self) -> Vec<Jid> {
        match self {
            Mode::Direct => RESOURCES
                .iter()
                .map(|r| jid(&format!("{SERVICE}@{DOMAIN}/{r}")))
                .collect(),
            Mode::Floor => vec![jid(FLOOR)],
            Mode::Proxied => vec![jid(PROXY)],
        }
    }
}

/// One round of one mode.
#[derive(Default)]
struct Round {
    round_trips: usize,
    seconds: f64,
    /// Prosody's utime+stime over the round, in seconds.
    prosody_cpu: f64,
    /// This process's (the load generator's) utime+stime, in seconds.
    own_cpu: f64,
    /// Sorted, in microseconds.
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.round_trips as f64 / self.seconds
    }
    /// Prosody CPU microseconds per round trip.
    fn cpu_us(&self) -> f64 {
        self.prosody_cpu / self.round_trips as f64 * 1e6
    }
    fn own_cpu_us(&self) -> f64 {
        self.own_cpu / self.round_trips as f64 * 1e6
    }
    fn p50_ms(&self) -> f64 {
        percentile(&self.latencies, 50.0) / 1000.0
    }
    fn p99_ms(&self) -> f64 {
        percentile(&self.latencies, 99.0) / 1000.0
    }
}

struct Load {
    clients: Vec<Client>,
    prosody_pid: String,
    ticks_per_second: f64,
    run: usize,
}

impl Load {
    /// `n` round trips in `mode` spread over the requesters.
    async fn round(&mut self, mode: Mode, n: usize) -> Round {
        self.run += 1;
        let targets = mode.targets();
        let c = self.clients.len();
        let shares: Vec<usize> = (0..c).map(|i| n / c + usize::from(i < n % c)).collect();
        let tag = format!("{}{}", &mode.name()[..1], self.run);
        let prosody_before = cpu_ticks(&self.prosody_pid);
        let own_before = cpu_ticks("self");
        let started = Instant::now();
        let outcomes = join_all(self.clients.iter_mut().zip(&shares).enumerate().map(
            |(i, (client, &share))| {
                let targets = targets.clone();
                let tag = format!("{tag}-r{i}");
                async move { requester(client, &targets, i, share, &tag).await }
            },
        ))
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut round = Round {
            round_trips: n,
            seconds,
            prosody_cpu: (cpu_ticks(&self.prosody_pid) - prosody_before) as f64
                / self.ticks_per_second,
            own_cpu: (cpu_ticks("self") - own_before) as f64 / self.ticks_per_second,
            ..Round::default()
        };
        for o in outcomes {
            round.latencies.extend(o.latencies);
            round.errors += o.errors;
            if round.first_error.is_none() {
                round.first_error = o.first_error;
            }
        }
        round.latencies.sort_unstable();
        round
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    f64::from(sorted[rank.min(sorted.len()) - 1])
}

fn median(xs: impl IntoIterator<Item = f64>) -> f64 {
    let mut xs: Vec<f64> = xs.into_iter().collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Rewrites the harness's debug log line to info (see the module comment); appends
/// `extra` (Lua) to the config. Returns the log line.
fn adjust_config(prosody: &Prosody, extra: &str) -> String {
    let path = prosody.dir().join("prosody.cfg.lua");
    let config = fs::read_to_string(&path).expect("read the Prosody config");
    let mut replaced = 0;
    let rewritten: Vec<String> = config
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("log = { debug = ") {
                replaced += 1;
                line.replacen("log = { debug = ", "log = { info = ", 1)
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(
        replaced, 1,
        "the harness config has no `log = {{ debug = ... }}` line to rewrite; config:\n{config}"
    );
    fs::write(&path, rewritten.join("\n") + "\n" + extra).expect("write the Prosody config");
    rewritten
        .iter()
        .find(|l| l.starts_with("log = "))
        .cloned()
        .unwrap_or_default()
}

/// Copies bench/<module>.lua into the server's plugin directory.
fn install_bench_module(prosody: &Prosody, module: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("bench/{module}.lua"));
    fs::copy(&source, prosody.dir().join(format!("plugins/{module}.lua")))
        .unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
}

fn prosody_pid(prosody: &Prosody) -> String {
    let pidfile = prosody.dir().join("prosody.pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = fs::read_to_string(&pidfile) {
            let pid = text.trim().to_string();
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !pid.is_empty() && String::from_utf8_lossy(&cmdline).contains("prosody") {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running Prosody pid in {}",
            pidfile.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Starts the server, pins it to CPU 0 when `pinning`; returns its pid.
fn start(prosody: &mut Prosody, pinning: bool) -> String {
    prosody.start();
    let pid = prosody_pid(prosody);
    if pinning {
        pin(&pid, 0);
    }
    pid
}

struct Throughput {
    rounds: Vec<[Round; 3]>,
    tracebacks: usize,
    final_rss: u64,
}

fn throughput(
    rounds: usize,
    per_round: usize,
    concurrency: usize,
    warmup: usize,
    pinning: bool,
) -> Throughput {
    let component = ComponentSpec::new(PROXY, &format!("{SERVICE}@{DOMAIN}"), &[]);
    let mut prosody = Prosody::new(std::slice::from_ref(&component));
    install_bench_module(&prosody, "mod_readdress_floor");
    let targets: Vec<String> = RESOURCES
        .iter()
        .map(|r| format!("{:?}", format!("{SERVICE}@{DOMAIN}/{r}")))
        .collect();
    let floor_section = format!(
        "\nComponent {FLOOR:?} \"readdress_floor\"\n    readdress_floor_targets = {{ {} }}\n",
        targets.join(", ")
    );
    let log_line = adjust_config(&prosody, &floor_section);
    prosody.register(SERVICE, PASSWORD);
    prosody.register(USER, PASSWORD);
    let pid = start(&mut prosody, pinning);
    let addr = prosody.addr();
    let ticks_per_second = clock_ticks();

    println!(
        "Throughput: Prosody pid {pid} on {addr}, CPUs {}; load generator CPUs {}",
        status_field(&pid, "Cpus_allowed_list"),
        status_field("self", "Cpus_allowed_list")
    );
    println!(
        "components: {PROXY} (client_proxy, strategy random) and {FLOOR} (bench/mod_readdress_floor.lua, round robin) -> {SERVICE}@{DOMAIN}/{{a,b}}, which answer every get at once (empty result)"
    );
    println!(
        "Prosody config: {log_line}  (the harness's debug log rewritten to info for the bench)"
    );
    println!(
        "{rounds} rounds x {{direct, floor, proxied}} (order rotating) x {per_round} round trips, {concurrency} requesters ({USER}@{DOMAIN}/r1..r{concurrency}, one outstanding get each), warm-up {warmup} per mode"
    );
    println!("CPU: utime+stime from /proc/<pid>/stat, {ticks_per_second} ticks/s\n");

    let implementers: Vec<Implementer> = RESOURCES
        .iter()
        .map(|r| Implementer::start(&addr, &format!("{SERVICE}@{DOMAIN}/{r}"), false))
        .collect();

    let runtime = current_thread_runtime();
    let measured = runtime.block_on(async {
        let clients = join_all((1..=concurrency).map(|i| {
            let addr = addr.clone();
            async move { login(&addr, &format!("{USER}@{DOMAIN}/r{i}")).await }
        }))
        .await;
        let mut load = Load {
            clients,
            prosody_pid: pid.clone(),
            ticks_per_second,
            run: 0,
        };
        // The proxy routes once it has seen the implementers' presence (after the
        // subscription is approved): until then it answers service-unavailable. Wait
        // until both resources have been chosen.
        let ready_by = Instant::now() + Duration::from_secs(20);
        let served_before: Vec<u64> = implementers.iter().map(Implementer::served).collect();
        loop {
            let probe = load.round(Mode::Proxied, 8).await;
            let both = implementers
                .iter()
                .zip(&served_before)
                .all(|(i, before)| i.served() > *before);
            if probe.errors == 0 && both {
                break;
            }
            assert!(
                Instant::now() < ready_by,
                "the proxy does not route to both resources: {}",
                probe.first_error.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if warmup > 0 {
            for mode in MODES {
                let w = load.round(mode, warmup).await;
                assert_eq!(w.errors, 0, "warm-up {}: {:?}", mode.name(), w.first_error);
            }
        }
        println!(
            "Prosody RSS after warm-up: {:.1} MiB\n",
            rss_kib(&pid) as f64 / 1024.0
        );
        println!(
            "{:>5}  {:>8}  {:>8}  {:>7}  {:>7}  {:>14}  {:>15}",
            "round", "mode", "rt/s", "p50 ms", "p99 ms", "Prosody us/rt", "load gen us/rt"
        );
        let mut measured: Vec<[Round; 3]> = Vec::new();
        for round in 0..rounds {
            let mut results: [Option<Round>; 3] = [None, None, None];
            for j in 0..MODES.len() {
                let k = (round + j) % MODES.len();
                let mode = MODES[k];
                let r = load.round(mode, per_round).await;
                assert_eq!(r.errors, 0, "{}: {:?}", mode.name(), r.first_error);
                println!(
                    "{:>5}  {:>8}  {:>8.0}  {:>7.2}  {:>7.2}  {:>14.1}  {:>15.1}",
                    round + 1,
                    mode.name(),
                    r.rate(),
                    r.p50_ms(),
                    r.p99_ms(),
                    r.cpu_us(),
                    r.own_cpu_us()
                );
                results[k] = Some(r);
            }
            measured.push(results.map(|r| r.expect("every mode ran")));
        }
        for client in load.clients.drain(..) {
            let _ = timeout(Duration::from_secs(5), client.send_end()).await;
        }
        measured
    });
    let served: Vec<u64> = implementers.iter().map(Implementer::served).collect();
    for i in implementers {
        i.stop();
    }
    println!("implementing resources answered {served:?} requests");
    let tracebacks = prosody.traceback_count();
    let final_rss = rss_kib(&pid);
    prosody.stop();
    Throughput {
        rounds: measured,
        tracebacks,
        final_rss,
    }
}

/// Memory per outstanding request: Prosody's RSS and Lua heap, and one held-shape stanza.
struct Memory {
    requests: usize,
    rss_bytes: f64,
    heap_bytes: f64,
    stanza_bytes: f64,
    text_bytes: f64,
    text_length: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
}

async fn helper_iq(client: &mut Client, iq: Iq, id: &str) -> Iq {
    send(client, iq).await;
    let mut error = None;
    answer(client, id, &mut error)
        .await
        .unwrap_or_else(|| panic!("bench helper: {}", error.unwrap_or_default()))
}

/// The helper's heap report (after two full collections), in KiB; with `cost`, also
/// what one held-shape stanza takes: (bytes as util.stanza, bytes serialized, length).
async fn heap(client: &mut Client, n: &mut usize, cost: bool) -> (f64, Option<(f64, f64, f64)>) {
    *n += 1;
    let id = format!("heap{n}");
    let mut request = Element::builder("heap", HEAP_NS);
    if cost {
        request = request.attr(xml_ncname!("cost").to_owned(), "1");
    }
    let iq = Iq::Get {
        from: None,
        to: Some(jid(DOMAIN)),
        id: id.clone(),
        payload: request.build(),
    };
    let result = helper_iq(client, iq, &id).await;
    let Iq::Result {
        payload: Some(heap),
        ..
    } = result
    else {
        panic!("bench helper: no <heap/> in the answer");
    };
    let attr = |name: &str| -> f64 {
        heap.attr(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bench helper: <heap/> without {name}"))
    };
    let costs = cost.then(|| (attr("stanza"), attr("text"), attr("length")));
    (attr("kib"), costs)
}

fn memory(requests: usize, pinning: bool) -> Memory {
    let options = [
        "client_proxy_timeout = 3600",
        "client_proxy_max_pending = 10000000",
        "client_proxy_max_pending_per_requester = 10000000",
        "client_proxy_max_pending_per_user = 10000000",
        "client_proxy_max_pending_per_domain = 10000000",
    ];
    let component = ComponentSpec::new(HOLD, &format!("{SILENT}@{DOMAIN}"), &options);
    let mut prosody = Prosody::new(std::slice::from_ref(&component));
    install_bench_module(&prosody, "mod_bench_heap");
    prosody.add_globals(&["bench_heap"], &[]);
    adjust_config(&prosody, "");
    prosody.register(SILENT, PASSWORD);
    prosody.register(USER, PASSWORD);
    let pid = start(&mut prosody, pinning);
    let addr = prosody.addr();
    let silent = Implementer::start(&addr, &format!("{SILENT}@{DOMAIN}/s"), true);
    let runtime = current_thread_runtime();
    let memory = runtime.block_on(async {
        let mut client = login(&addr, &format!("{USER}@{DOMAIN}/m")).await;
        let mut n = 0;
        // Routable once the proxy has the silent resource's presence: a probe get reaches
        // it (and stays outstanding) instead of coming back service-unavailable.
        let ready_by = Instant::now() + Duration::from_secs(20);
        let mut probes = 0;
        while silent.served() == 0 {
            assert!(
                Instant::now() < ready_by,
                "{HOLD} does not route to the silent resource"
            );
            probes += 1;
            let id = format!("probe{probes}");
            let iq = Iq::Get {
                from: None,
                to: Some(jid(HOLD)),
                id: id.clone(),
                payload: payload(),
            };
            send(&mut client, iq).await;
            let wait_until = Instant::now() + Duration::from_millis(300);
            while silent.served() == 0 && Instant::now() < wait_until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The probes' error answers, if any, are read and dropped by later waits.
        let base = silent.served();
        let (heap_before, _) = heap(&mut client, &mut n, false).await;
        let rss_before = rss_kib(&pid);
        let mut sent = 0;
        while sent < requests {
            let count = INJECT_CHUNK.min(requests - sent);
            n += 1;
            let id = format!("inject{n}");
            let inject = Element::builder("inject", HEAP_NS)
                .attr(xml_ncname!("to").to_owned(), HOLD)
                .attr(xml_ncname!("first").to_owned(), (sent + 1).to_string())
                .attr(xml_ncname!("count").to_owned(), count.to_string())
                .build();
            let iq = Iq::Set {
                from: None,
                to: Some(jid(DOMAIN)),
                id: id.clone(),
                payload: inject,
            };
            helper_iq(&mut client, iq, &id).await;
            sent += count;
            let deadline = Instant::now() + Duration::from_secs(60);
            while silent.served() < base + sent as u64 {
                assert!(
                    Instant::now() < deadline,
                    "the silent resource got {} of {sent} requests",
                    silent.served() - base
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (heap_after, _) = heap(&mut client, &mut n, false).await;
        let rss_after = rss_kib(&pid);
        let (_, costs) = heap(&mut client, &mut n, true).await;
        let (stanza_bytes, text_bytes, text_length) = costs.expect("stanza costs");
        let _ = timeout(Duration::from_secs(5), client.send_end()).await;
        let per = |kib: f64| kib * 1024.0 / requests as f64;
        Memory {
            requests,
            rss_bytes: per(rss_after as f64 - rss_before as f64),
            heap_bytes: per(heap_after - heap_before),
            stanza_bytes,
            text_bytes,
            text_length,
            rss_before_mib: rss_before as f64 / 1024.0,
            rss_after_mib: rss_after as f64 / 1024.0,
        }
    });
    let held = silent.served();
    silent.stop();
    assert!(
        held >= requests as u64,
        "the silent resource got {held} requests"
    );
    let tracebacks = prosody.traceback_count();
    assert_eq!(tracebacks, 0, "Lua tracebacks in the memory run's log");
    prosody.stop();
    memory
}

fn main() {
    let rounds = env_number("BENCH_ROUNDS", 7).max(1);
    let per_round = env_number("BENCH_REQUESTS", 10_000).max(1);
    let concurrency = env_number("BENCH_CONCURRENCY", 32).max(1);
    let warmup = env_number("BENCH_WARMUP", 2000);
    let memory_requests = env_number("BENCH_MEMORY_REQUESTS", 100_000);
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let pinning = env_number("BENCH_PIN", 1) != 0 && cpus >= 2;
    // Before any thread starts: every thread of this process inherits CPU 1, and so
    // does Prosody until it is pinned to CPU 0.
    if pinning {
        pin(&std::process::id().to_string(), 1);
    } else {
        println!(
            "not pinned ({cpus} CPU(s), BENCH_PIN={})",
            std::env::var("BENCH_PIN").unwrap_or_default()
        );
    }
    let prosody_version = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "prosody"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into());
    println!(
        "End to end: tokio-xmpp load generator against Prosody {prosody_version} on 127.0.0.1\n"
    );

    let t = throughput(rounds, per_round, concurrency, warmup, pinning);
    let m = (memory_requests > 0).then(|| memory(memory_requests, pinning));
    report(&t, m.as_ref(), pinning);
}

fn report(t: &Throughput, m: Option<&Memory>, pinning: bool) {
    let idx = |mode: Mode| MODES.iter().position(|m| *m == mode).expect("a mode");
    let (d, f, p) = (idx(Mode::Direct), idx(Mode::Floor), idx(Mode::Proxied));
    let med = |k: usize, g: fn(&Round) -> f64| median(t.rounds.iter().map(|r| g(&r[k])));
    let ratio = |a: usize, b: usize, g: fn(&Round) -> f64| {
        median(t.rounds.iter().map(|r| g(&r[a]) / g(&r[b])))
    };
    println!(
        "\nMedians over {} rounds ({} round trips per mode per round):",
        t.rounds.len(),
        t.rounds[0][0].round_trips
    );
    println!(
        "{:>8}  {:>8}  {:>7}  {:>7}  {:>14}  {:>15}",
        "mode", "rt/s", "p50 ms", "p99 ms", "Prosody us/rt", "load gen us/rt"
    );
    for mode in MODES {
        let k = idx(mode);
        println!(
            "{:>8}  {:>8.0}  {:>7.2}  {:>7.2}  {:>14.1}  {:>15.1}",
            mode.name(),
            med(k, Round::rate),
            med(k, Round::p50_ms),
            med(k, Round::p99_ms),
            med(k, Round::cpu_us),
            med(k, Round::own_cpu_us)
        );
    }
    let cpu_pf = ratio(p, f, Round::cpu_us);
    let rate_pf = ratio(p, f, Round::rate);
    let cpu_ratios: Vec<String> = t
        .rounds
        .iter()
        .map(|r| format!("{:.3}", r[p].cpu_us() / r[f].cpu_us()))
        .collect();
    println!(
        "\nper round, Prosody CPU per round trip proxied/floor: {}",
        cpu_ratios.join(", ")
    );
    println!(
        "median of the per-round ratios: proxied/floor CPU per round trip {cpu_pf:.3}x (target <= {CPU_TARGET}), round trips/s {rate_pf:.3}x; floor/direct CPU {:.3}x, proxied/direct CPU {:.3}x",
        ratio(f, d, Round::cpu_us),
        ratio(p, d, Round::cpu_us)
    );
    println!(
        "(ratio of the medians instead: proxied/floor CPU per round trip {:.3}x, round trips/s {:.3}x)",
        med(p, Round::cpu_us) / med(f, Round::cpu_us),
        med(p, Round::rate) / med(f, Round::rate)
    );
    println!(
        "Prosody {}; RSS at the end {:.1} MiB; Lua tracebacks in its log: {}",
        if pinning {
            "on CPU 0, load generator on CPU 1"
        } else {
            "not pinned"
        },
        t.final_rss as f64 / 1024.0,
        t.tracebacks
    );
    if let Some(m) = m {
        println!(
            "\nMemory, {} requests held by a silent resource: VmRSS {:.1} -> {:.1} MiB, {:.0} bytes per request; Lua heap {:.0} bytes per request",
            m.requests, m.rss_before_mib, m.rss_after_mib, m.rss_bytes, m.heap_bytes
        );
        println!(
            "one whole stanza of the held shape (iq get + <query/>; the module holds its payload): {:.0} bytes of Lua heap as util.stanza, {:.0} bytes as its {:.0}-byte serialization",
            m.stanza_bytes, m.text_bytes, m.text_length
        );
    }
    println!(
        "\nSUMMARY e2e: median of {} rounds, Prosody CPU per round trip: direct {:.1} us, floor {:.1} us, proxied {:.1} us; round trips/s: direct {:.0}, floor {:.0}, proxied {:.0}; proxied/floor CPU per round trip {cpu_pf:.3}x (target <= {CPU_TARGET}: {}), round trips/s {rate_pf:.3}x",
        t.rounds.len(),
        med(d, Round::cpu_us),
        med(f, Round::cpu_us),
        med(p, Round::cpu_us),
        med(d, Round::rate),
        med(f, Round::rate),
        med(p, Round::rate),
        if cpu_pf <= CPU_TARGET { "met" } else { "NOT met" },
    );
    // For bench/run.sh.
    println!(
        "RATIO e2e {cpu_pf:.4} {rate_pf:.4} {:.1} {:.1} {:.1} {:.0} {:.0} {:.0}",
        med(d, Round::cpu_us),
        med(f, Round::cpu_us),
        med(p, Round::cpu_us),
        med(d, Round::rate),
        med(f, Round::rate),
        med(p, Round::rate)
    );
    if let Some(m) = m {
        println!(
            "RATIO memory {} {:.0} {:.0} {:.0} {:.0}",
            m.requests, m.rss_bytes, m.heap_bytes, m.stanza_bytes, m.text_bytes
        );
        println!(
            "SUMMARY memory: {} requests held: {:.0} bytes of RSS per request (target <= {MEMORY_TARGET:.0}: {}), of which Lua heap {:.0} bytes (a whole stanza of the held shape {:.0} bytes, serialized {:.0}; the module holds its payload)",
            m.requests,
            m.rss_bytes,
            if m.rss_bytes <= MEMORY_TARGET { "met" } else { "NOT met" },
            m.heap_bytes,
            m.stanza_bytes,
            m.text_bytes
        );
    }
}
