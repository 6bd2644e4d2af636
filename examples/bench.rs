//! `make bench`, part 1: load generator against a real Prosody on 127.0.0.1.
//!
//! Starts a throwaway Prosody with the harness of tests/support (read-only here), with
//!
//! ```text
//! Component "proxy.localhost" "client_proxy"
//!     target_address = "service@localhost"
//! ```
//!
//! one implementing client resource, service@localhost/a, that answers every iq get at
//! once with an empty result, and C requesters (user@localhost/r1..rC), each sending one
//! iq get at a time and waiting for its answer. Two modes, interleaved in rounds (the
//! first mode alternates between rounds):
//!
//! - proxied: the requester sends the iq to proxy.localhost; the module forwards it to
//!   service@localhost/a and delivers the answer back;
//! - direct: the requester sends the same iq straight to service@localhost/a.
//!
//! Per mode: round trips/s, p50/p99 latency, Prosody CPU seconds (utime+stime of its pid,
//! /proc/<pid>/stat) per 1000 round trips, the load generator's own CPU per 1000 round
//! trips (to see which side is the bottleneck), Prosody's VmRSS; then the ratios.
//!
//! The harness writes `log = { debug = ... }`; debug logging dominates Prosody's CPU, so
//! this bench rewrites that line of the config to `info` before starting the server (the
//! harness waits for an info line, "Activated service 'c2s'", so info is the lowest
//! level that still lets it start).
//!
//! Environment: BENCH_ROUNDS (default 5), BENCH_REQUESTS (round trips per mode per round,
//! default 20000), BENCH_CONCURRENCY (requesters, default 32: enough to keep Prosody's one
//! thread busy on 2 cores), BENCH_WARMUP (round trips per mode before measuring, default
//! 2000), CLIENT_PROXY_SO (default the release build).
//! Two threads besides Prosody: one for the requesters, one for the implementing client,
//! each a current-thread tokio runtime (see tests/support/mod.rs for why not
//! multi-thread).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
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
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

const PROXY: &str = "proxy.localhost";
const SERVICE: &str = "service";
const USER: &str = "user";
const PASSWORD: &str = "secret";
const PAYLOAD_NS: &str = "urn:example:client-proxy-bench";
/// A round trip that takes longer than this is a failure (no answer).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

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

/// VmRSS of a process, in KiB.
fn rss_kib(pid: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
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

/// The implementing client: answers every iq get/set at once with an empty result and
/// approves the proxy's subscription. Runs until `stop` fires.
async fn implementer(
    addr: String,
    ready: std_mpsc::Sender<()>,
    mut stop: oneshot::Receiver<()>,
    served: Arc<AtomicU64>,
) {
    let mut client = login(&addr, &format!("{SERVICE}@{DOMAIN}/a")).await;
    send(&mut client, Presence::available()).await;
    let _ = ready.send(());
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            event = client.next() => event,
        };
        match event {
            None => panic!("implementing client: stream ended"),
            Some(Event::Stanza(Stanza::Iq(
                Iq::Get { from, id, .. } | Iq::Set { from, id, .. },
            ))) => {
                let reply = Iq::Result {
                    from: None,
                    to: from,
                    id,
                    payload: None,
                };
                send(&mut client, reply).await;
                served.fetch_add(1, Ordering::Relaxed);
            }
            Some(Event::Stanza(Stanza::Presence(p)))
                if p.type_ == PresenceType::Subscribe
                    && p.from.as_ref().is_some_and(|f| f.to_string() == PROXY) =>
            {
                send(&mut client, Presence::subscribed().with_to(jid(PROXY))).await;
            }
            Some(Event::Disconnected(e)) => eprintln!("implementing client: disconnected: {e}"),
            Some(Event::Online { .. }) => {
                eprintln!("implementing client: reconnected; sending presence again");
                send(&mut client, Presence::available()).await;
            }
            Some(Event::Stanza(_)) => {}
        }
    }
    let _ = timeout(Duration::from_secs(5), client.send_end()).await;
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

/// `n` round trips to `to`, one at a time.
async fn requester(client: &mut Client, to: &Jid, n: usize, tag: &str) -> Outcome {
    let mut out = Outcome {
        latencies: Vec::with_capacity(n),
        ..Outcome::default()
    };
    let payload = payload();
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let iq = Iq::Get {
            from: None,
            to: Some(to.clone()),
            id: id.clone(),
            payload: payload.clone(),
        };
        let started = Instant::now();
        send(client, iq).await;
        loop {
            let event = timeout(ANSWER_TIMEOUT, client.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {id} within {ANSWER_TIMEOUT:?}"));
            match event {
                Some(Event::Stanza(Stanza::Iq(Iq::Result { id: got, .. }))) if got == id => break,
                Some(Event::Stanza(Stanza::Iq(iq @ Iq::Error { .. }))) if iq.id() == id => {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error = Some(String::from(&Element::from(iq)));
                    }
                    break;
                }
                Some(Event::Stanza(_)) => {}
                Some(Event::Disconnected(e)) => eprintln!("requester: disconnected: {e}"),
                Some(Event::Online { .. }) => eprintln!("requester: reconnected"),
                None => panic!("requester: stream ended"),
            }
        }
        out.latencies
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Proxied,
    Direct,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Proxied => "proxied",
            Mode::Direct => "direct",
        }
    }

    fn target(self) -> Jid {
        match self {
            Mode::Proxied => jid(PROXY),
            Mode::Direct => jid(&format!("{SERVICE}@{DOMAIN}/a")),
        }
    }
}

/// Totals of one mode over the measured rounds.
#[derive(Default)]
struct Totals {
    round_trips: usize,
    seconds: f64,
    prosody_ticks: u64,
    own_ticks: u64,
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
    rss_kib: u64,
    per_round: Vec<f64>,
}

struct Bench {
    clients: Vec<Client>,
    prosody_pid: String,
    ticks_per_second: f64,
    run: usize,
}

impl Bench {
    /// `n` round trips in `mode` spread over the requesters; returns the totals of this
    /// one round (rss at its end).
    async fn round(&mut self, mode: Mode, n: usize) -> Totals {
        self.run += 1;
        let to = mode.target();
        let c = self.clients.len();
        let shares: Vec<usize> = (0..c).map(|i| n / c + usize::from(i < n % c)).collect();
        let tag = format!("{}{}", &mode.name()[..1], self.run);
        let prosody_before = cpu_ticks(&self.prosody_pid);
        let own_before = cpu_ticks("self");
        let started = Instant::now();
        let outcomes = join_all(self.clients.iter_mut().zip(&shares).enumerate().map(
            |(i, (client, &share))| {
                let to = to.clone();
                let tag = format!("{tag}-r{i}");
                async move { requester(client, &to, share, &tag).await }
            },
        ))
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut totals = Totals {
            round_trips: n,
            seconds,
            prosody_ticks: cpu_ticks(&self.prosody_pid) - prosody_before,
            own_ticks: cpu_ticks("self") - own_before,
            rss_kib: rss_kib(&self.prosody_pid),
            ..Totals::default()
        };
        for o in outcomes {
            totals.latencies.extend(o.latencies);
            totals.errors += o.errors;
            if totals.first_error.is_none() {
                totals.first_error = o.first_error;
            }
        }
        totals
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

/// Rewrites the harness's debug log line to info (see the module comment).
fn quiet_logging(prosody: &Prosody) -> String {
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
    fs::write(&path, rewritten.join("\n") + "\n").expect("write the Prosody config");
    rewritten
        .iter()
        .find(|l| l.starts_with("log = "))
        .cloned()
        .unwrap_or_default()
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

fn main() {
    let rounds = env_number("BENCH_ROUNDS", 5).max(1);
    let per_round = env_number("BENCH_REQUESTS", 20_000).max(1);
    let concurrency = env_number("BENCH_CONCURRENCY", 32).max(1);
    let warmup = env_number("BENCH_WARMUP", 2000);

    let component = ComponentSpec::new(PROXY, &format!("{SERVICE}@{DOMAIN}"), &[]);
    let mut prosody = Prosody::new(std::slice::from_ref(&component));
    let log_line = quiet_logging(&prosody);
    prosody.register(SERVICE, PASSWORD);
    prosody.register(USER, PASSWORD);
    prosody.start();
    let pid = prosody_pid(&prosody);
    let addr = prosody.addr();
    let ticks_per_second = clock_ticks();
    let prosody_version = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "prosody"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into());

    println!("End-to-end: tokio-xmpp load generator against Prosody {prosody_version} (pid {pid}) on {addr}");
    println!(
        "component {PROXY} -> {SERVICE}@{DOMAIN}; implementing client {SERVICE}@{DOMAIN}/a answers every get at once (empty result)"
    );
    println!(
        "Prosody config: {log_line}  (the harness's debug log rewritten to info for the bench)"
    );
    println!(
        "{rounds} rounds x {{proxied, direct}} x {per_round} round trips, {concurrency} concurrent requesters ({USER}@{DOMAIN}/r1..r{concurrency}, one outstanding get each), warm-up {warmup} per mode"
    );
    println!("CPU: utime+stime from /proc/<pid>/stat, {ticks_per_second} ticks/s\n");

    // The implementing client on a thread (and runtime) of its own.
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let served = Arc::new(AtomicU64::new(0));
    let implementer_thread = {
        let addr = addr.clone();
        let served = served.clone();
        thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(implementer(addr, ready_tx, stop_rx, served))
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the implementing client did not come online");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (proxied, direct) = runtime.block_on(async {
        let clients = join_all((1..=concurrency).map(|i| {
            let addr = addr.clone();
            async move { login(&addr, &format!("{USER}@{DOMAIN}/r{i}")).await }
        }))
        .await;
        let mut bench = Bench {
            clients,
            prosody_pid: pid.clone(),
            ticks_per_second,
            run: 0,
        };
        // The proxy routes once it has seen the implementer's presence (after the
        // subscription is approved): until then it answers service-unavailable.
        let ready_by = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = bench.round(Mode::Proxied, 1).await;
            if probe.errors == 0 {
                break;
            }
            assert!(
                Instant::now() < ready_by,
                "the proxy does not route: {}",
                probe.first_error.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if warmup > 0 {
            for mode in [Mode::Proxied, Mode::Direct] {
                let w = bench.round(mode, warmup).await;
                assert_eq!(w.errors, 0, "warm-up {}: {:?}", mode.name(), w.first_error);
            }
        }
        println!(
            "Prosody RSS after warm-up: {:.1} MiB",
            rss_kib(&pid) as f64 / 1024.0
        );
        println!(
            "\n{:>5}  {:>8}  {:>10}  {:>8}  {:>8}  {:>14}",
            "round", "mode", "rt/s", "p50 ms", "p99 ms", "Prosody CPU s"
        );
        let mut proxied = Totals::default();
        let mut direct = Totals::default();
        for round in 1..=rounds {
            let order = if round % 2 == 1 {
                [Mode::Proxied, Mode::Direct]
            } else {
                [Mode::Direct, Mode::Proxied]
            };
            for mode in order {
                let mut r = bench.round(mode, per_round).await;
                r.latencies.sort_unstable();
                println!(
                    "{:>5}  {:>8}  {:>10.0}  {:>8.2}  {:>8.2}  {:>14.2}",
                    round,
                    mode.name(),
                    r.round_trips as f64 / r.seconds,
                    percentile(&r.latencies, 50.0) / 1000.0,
                    percentile(&r.latencies, 99.0) / 1000.0,
                    r.prosody_ticks as f64 / bench.ticks_per_second
                );
                let t = if mode == Mode::Proxied {
                    &mut proxied
                } else {
                    &mut direct
                };
                t.per_round.push(r.round_trips as f64 / r.seconds);
                t.round_trips += r.round_trips;
                t.seconds += r.seconds;
                t.prosody_ticks += r.prosody_ticks;
                t.own_ticks += r.own_ticks;
                t.latencies.extend(r.latencies);
                t.errors += r.errors;
                t.rss_kib = r.rss_kib;
                if t.first_error.is_none() {
                    t.first_error = r.first_error;
                }
            }
        }
        for client in bench.clients.drain(..) {
            let _ = timeout(Duration::from_secs(5), client.send_end()).await;
        }
        (proxied, direct)
    });
    let _ = stop_tx.send(());
    let _ = implementer_thread.join();
    let tracebacks = prosody.traceback_count();
    let final_rss = rss_kib(&pid);
    prosody.stop();

    report(
        &proxied,
        &direct,
        ticks_per_second,
        concurrency,
        served.load(Ordering::Relaxed),
        tracebacks,
        final_rss,
    );
}

fn report(
    proxied: &Totals,
    direct: &Totals,
    ticks_per_second: f64,
    concurrency: usize,
    served: u64,
    tracebacks: usize,
    final_rss: u64,
) {
    struct Row {
        rate: f64,
        p50: f64,
        p99: f64,
        prosody_cpu: f64,
        own_cpu: f64,
        rss: f64,
        min_rate: f64,
        max_rate: f64,
    }
    let row = |t: &Totals| {
        let mut lat = t.latencies.clone();
        lat.sort_unstable();
        let k = t.round_trips as f64 / 1000.0;
        Row {
            rate: t.round_trips as f64 / t.seconds,
            p50: percentile(&lat, 50.0) / 1000.0,
            p99: percentile(&lat, 99.0) / 1000.0,
            prosody_cpu: t.prosody_ticks as f64 / ticks_per_second / k,
            own_cpu: t.own_ticks as f64 / ticks_per_second / k,
            rss: t.rss_kib as f64 / 1024.0,
            min_rate: t.per_round.iter().copied().fold(f64::MAX, f64::min),
            max_rate: t.per_round.iter().copied().fold(f64::MIN, f64::max),
        }
    };
    let (p, d) = (row(proxied), row(direct));
    println!(
        "\nTotals over all rounds ({} round trips per mode, {concurrency} concurrent requesters):",
        proxied.round_trips
    );
    println!(
        "{:>8}  {:>10}  {:>15}  {:>8}  {:>8}  {:>17}  {:>19}  {:>15}",
        "mode",
        "rt/s",
        "rt/s per round",
        "p50 ms",
        "p99 ms",
        "Prosody CPU s/1k",
        "load gen CPU s/1k",
        "Prosody RSS MiB"
    );
    for (name, r) in [("proxied", &p), ("direct", &d)] {
        println!(
            "{:>8}  {:>10.0}  {:>15}  {:>8.2}  {:>8.2}  {:>17.3}  {:>19.3}  {:>15.1}",
            name,
            r.rate,
            format!("{:.0}-{:.0}", r.min_rate, r.max_rate),
            r.p50,
            r.p99,
            r.prosody_cpu,
            r.own_cpu,
            r.rss
        );
    }
    println!(
        "(RSS: VmRSS after each mode's last round; at the end: {:.1} MiB)",
        final_rss as f64 / 1024.0
    );
    let throughput_ratio = p.rate / d.rate;
    let cpu_ratio = p.prosody_cpu / d.prosody_cpu;
    println!(
        "\nproxied/direct: throughput {:.2}x, Prosody CPU per round trip {:.2}x, p50 latency {:.2}x",
        throughput_ratio,
        cpu_ratio,
        p.p50 / d.p50
    );
    println!(
        "errors: proxied {}, direct {}{}; implementing client answered {served} requests; Prosody log tracebacks: {tracebacks}",
        proxied.errors,
        direct.errors,
        proxied
            .first_error
            .as_ref()
            .or(direct.first_error.as_ref())
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "\nSUMMARY e2e: proxied {:.0} rt/s (p50 {:.2} ms, p99 {:.2} ms, {:.3} Prosody CPU s/1k), direct {:.0} rt/s (p50 {:.2} ms, p99 {:.2} ms, {:.3} Prosody CPU s/1k); proxied/direct throughput {:.2}x, CPU per round trip {:.2}x; Prosody RSS {:.1} MiB",
        p.rate, p.p50, p.p99, p.prosody_cpu, d.rate, d.p50, d.p99, d.prosody_cpu, throughput_ratio, cpu_ratio, final_rss as f64 / 1024.0
    );
}
