//! `make bench`, part 3: the core's routing cost in Rust, without Lua.
//!
//! For 1, 100 and 10,000 online resources and 0, 10,000 and 100,000 requests already
//! pending (timeout large, so nothing expires), times forward+deliver pairs through
//! `Proxy::route`: one iq get from a requester (a `Forward` verdict), then the
//! implementing resource's result (a `Deliver` verdict). Reports the median over several
//! samples in ns per pair, and whether the cost stays within 20% over all cells.
//!
//! Then, with 200,000 requests pending from distinct requesters, ns per forward and per
//! reply of requests that each come from a requester of its own (the in-process shim
//! bench's shape, without Lua).
//!
//! Then the memory of a pending request: a counting global allocator gives the bytes
//! allocated (and not freed) by inserting 100,000 pending requests from distinct
//! requesters, divided by 100,000.
//!
//! Then affinity (`client_proxy_affinity`): with 10 resources and 100,000 keys assigned
//! (rooms), ns per forward+deliver pair of requests that each carry a key (cycling over
//! all 100,000: each request finds its key in a table of 100,000) against the same pairs
//! without a key (the cost must stay within 10%), and the bytes allocated per key.
//!
//! Environment: `ROUTE_COST_PAIRS` (pairs per sample, default 100000),
//! `ROUTE_COST_SAMPLES` (samples per cell, default 7), `ROUTE_COST_AFFINITY_ONLY` (set:
//! only the affinity figures, e.g. under `perf record`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Instant;

use client_proxy::config::{Config, Options};
use client_proxy::router::Proxy;
use client_proxy::verdict::{Head, Send, Verdict};

/// The system allocator, counting live bytes while `COUNTING` is on (a relaxed load
/// otherwise, so the timings are not skewed by the counting).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
#[allow(unsafe_code)] // a counting allocator for the bench; the library's rule is src/'s
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const HOST: &str = "proxy.example";
const DOMAIN: &str = "example.org";
const TARGET: &str = "service@example.org";
/// The requester whose requests are timed (its ids are distinct within a sample).
const BENCH_REQUESTER: &str = "bench@example.org/load";
const RESOURCE_COUNTS: [usize; 3] = [1, 100, 10_000];
const PENDING_COUNTS: [usize; 3] = [0, 10_000, 100_000];
const MEMORY_REQUESTS: usize = 100_000;
/// Within 20% across all cells.
const TOLERANCE: f64 = 0.20;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A proxy with limits high enough for the largest cell, a timeout long enough that
/// nothing expires, `resources` online, and the requesters' domain local.
fn proxy_with(resources: usize) -> Proxy {
    proxy_from(resources, Options::default())
}

/// Like `proxy_with`, with the other options of `base`.
fn proxy_from(resources: usize, base: Options) -> Proxy {
    let options = Options {
        target_address: Some(TARGET.into()),
        timeout: Some(1.0e9),
        max_pending: Some(300_000.0),
        max_pending_per_requester: Some(1.0e9),
        ..base
    };
    let config = Config::new(HOST, &options).expect("a valid config");
    let mut proxy = Proxy::new(config);
    proxy.seed(7);
    // The requesters are users of this server (as Jitsi Meet's are): the per-domain cap
    // is for other servers' users.
    proxy.set_local_domains([HOST, DOMAIN]);
    for i in 0..resources {
        let from = format!("{TARGET}/res{i}");
        let head = Head {
            name: "presence",
            stanza_type: None,
            from: Some(&from),
            to: Some(HOST),
            id: None,
            priority: None,
            eligible: true,
            condition: None,
            lang: None,
            affinity: None,
        };
        match proxy.route(head, 0.0) {
            Verdict::Drop { .. } => {}
            other => panic!("presence of {from}: {other:?}"),
        }
    }
    assert_eq!(proxy.status().eligible, resources);
    proxy
}

fn iq<'a>(kind: &'a str, from: &'a str, to: &'a str, id: &'a str) -> Head<'a> {
    Head {
        name: "iq",
        stanza_type: Some(kind),
        from: Some(from),
        to: Some(to),
        id: Some(id),
        priority: None,
        eligible: true,
        condition: None,
        lang: None,
        affinity: None,
    }
}

/// Leaves `count` requests pending, each from a requester of its own.
fn fill_pending(proxy: &mut Proxy, count: usize) {
    let before = proxy.status().pending;
    for i in 0..count {
        let requester = format!("user{i}@example.org/r");
        let id = format!("p{i}");
        match proxy.route(iq("get", &requester, HOST, &id), 1.0) {
            Verdict::Send(_) => {}
            other => panic!("pending request {i}: {other:?}"),
        }
    }
    assert_eq!(proxy.status().pending, before + count);
}

/// `ids.len()` forward+deliver pairs; returns the elapsed nanoseconds.
fn run_pairs(proxy: &mut Proxy, ids: &[String]) -> f64 {
    let start = Instant::now();
    for id in ids {
        let (to, from) = match proxy.route(iq("get", BENCH_REQUESTER, HOST, id), 2.0) {
            Verdict::Send(Send { to, from, .. }) => (to, from),
            other => panic!("request {id}: {other:?}"),
        };
        // The implementing resource answers from where it got the request, to the JAT
        // address it came from.
        match proxy.route(iq("result", &to, &from, id), 2.0) {
            Verdict::Send(send) => {
                black_box(send);
            }
            other => panic!("reply {id}: {other:?}"),
        }
    }
    start.elapsed().as_nanos() as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One cell of the table: a proxy with its resources online and its requests pending.
struct Cell {
    resources: usize,
    pending: usize,
    proxy: Proxy,
    /// ns per pair of each sample.
    samples: Vec<f64>,
}

impl Cell {
    fn new(resources: usize, pending: usize, ids: &[String]) -> Cell {
        let mut proxy = proxy_with(resources);
        fill_pending(&mut proxy, pending);
        // Warm-up: caches, and the tables' capacity for the extra entry.
        run_pairs(&mut proxy, &ids[..ids.len().min(10_000)]);
        Cell {
            resources,
            pending,
            proxy,
            samples: Vec::new(),
        }
    }

    fn sample(&mut self, ids: &[String]) {
        let ns = run_pairs(&mut self.proxy, ids) / ids.len() as f64;
        self.samples.push(ns);
        assert_eq!(
            self.proxy.status().pending,
            self.pending,
            "every timed request answered"
        );
    }

    fn median(&self) -> f64 {
        median(self.samples.clone())
    }
}

/// Requests outstanding in the distinct-requesters figure (the in-process shim bench's).
const DISTINCT_PENDING: usize = 200_000;
/// Requests (and replies) per sample of the distinct-requesters figure.
const DISTINCT_BATCH: usize = 5_000;

/// ns per forward and per reply with `DISTINCT_PENDING` outstanding, every request from a
/// requester of its own (as Jitsi Meet's users are): each touches table entries nobody
/// used before, where the requester-of-its-own cells above reuse one. In batches, the
/// forwards timed apart from their replies; medians over `samples` batches.
fn distinct_requesters(samples: usize) -> (f64, f64) {
    let mut proxy = proxy_with(1);
    fill_pending(&mut proxy, DISTINCT_PENDING);
    let mut next = DISTINCT_PENDING;
    let (mut forwards, mut replies) = (Vec::new(), Vec::new());
    for _ in 0..samples + 1 {
        let requests: Vec<(String, String)> = (0..DISTINCT_BATCH)
            .map(|i| {
                (
                    format!("user{}@example.org/r{}", next + i, i % 7),
                    format!("d{i}"),
                )
            })
            .collect();
        next += DISTINCT_BATCH;
        let start = Instant::now();
        let sent: Vec<(String, String)> = requests
            .iter()
            .map(
                |(requester, id)| match proxy.route(iq("get", requester, HOST, id), 2.0) {
                    Verdict::Send(Send { to, from, .. }) => (to, from),
                    other => panic!("request {id}: {other:?}"),
                },
            )
            .collect();
        let forward = start.elapsed().as_nanos() as f64;
        let start = Instant::now();
        for ((to, from), (_, id)) in sent.iter().zip(&requests) {
            match proxy.route(iq("result", to, from, id), 2.0) {
                Verdict::Send(send) => {
                    black_box(send);
                }
                other => panic!("reply {id}: {other:?}"),
            }
        }
        let reply = start.elapsed().as_nanos() as f64;
        // The first batch warms up.
        if next > DISTINCT_PENDING + DISTINCT_BATCH {
            forwards.push(forward / DISTINCT_BATCH as f64);
            replies.push(reply / DISTINCT_BATCH as f64);
        }
    }
    assert_eq!(proxy.status().pending, DISTINCT_PENDING);
    (median(forwards), median(replies))
}

/// Bytes allocated and not freed per pending request, over `MEMORY_REQUESTS` requests.
fn bytes_per_pending() -> (f64, usize) {
    let mut proxy = proxy_with(1);
    // Requester and id strings are built outside the counted span; the table keeps its
    // own copies.
    let requests: Vec<(String, String)> = (0..MEMORY_REQUESTS)
        .map(|i| (format!("user{i}@example.org/r"), format!("p{i}")))
        .collect();
    LIVE_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for (requester, id) in &requests {
        let verdict = proxy.route(iq("get", requester, HOST, id), 1.0);
        // The verdict's strings go to the shim and are freed: not part of what is kept.
        assert!(matches!(verdict, Verdict::Send(_)));
    }
    COUNTING.store(false, Ordering::SeqCst);
    let live = LIVE_BYTES.load(Ordering::SeqCst);
    assert_eq!(proxy.status().pending, MEMORY_REQUESTS);
    let sample_len = requests[0].0.len() + requests[0].1.len();
    (live as f64 / MEMORY_REQUESTS as f64, sample_len)
}

/// Keys in the affinity measurement, and the resources they are spread over.
const AFFINITY_KEYS: usize = 100_000;
const AFFINITY_RESOURCES: usize = 10;
/// Keys of the table that stays in the cache (the cost of a key apart from memory latency).
const SMALL_KEYS: usize = 1_000;
/// Keyed route cost within 10% of the same requests without a key.
const AFFINITY_TOLERANCE: f64 = 0.10;

/// A room JID as Jitsi Meet's focus requests carry it.
fn room(i: usize) -> String {
    format!("room{i}@conference.meet.example.org")
}

/// A proxy with affinity on (Jitsi's rule), `AFFINITY_RESOURCES` online and `keys` rooms
/// assigned (each by one request, answered).
fn affinity_proxy(keys: &[String]) -> Proxy {
    let options = Options {
        affinity: Some(vec![
            "{http://jitsi.org/protocol/focus}conference@room".into()
        ]),
        affinity_idle: Some(1.0e9),
        ..Options::default()
    };
    let mut proxy = proxy_from(AFFINITY_RESOURCES, options);
    run_keyed(&mut proxy, &["k".to_string()], Some(keys), &mut 2.0, 0.0);
    assert_eq!(proxy.status().keys, keys.len());
    proxy
}

/// Like `run_pairs`; request `i` carries key `keys[i % len]` when given (for every
/// request when `ids` is shorter than `keys`: `ids[0]` with each key).
/// The clock moves by `step` seconds per request (a step of 1: each request changes its
/// key's second of last use, as in a deployment whose rooms ask less than once a second).
fn run_keyed(
    proxy: &mut Proxy,
    ids: &[String],
    keys: Option<&[String]>,
    clock: &mut f64,
    step: f64,
) -> f64 {
    let keys = keys.filter(|k| !k.is_empty());
    let n = keys.map_or(ids.len(), |k| k.len().max(ids.len()));
    let start = Instant::now();
    for i in 0..n {
        let id = &ids[i % ids.len()];
        let mut head = iq("get", BENCH_REQUESTER, HOST, id);
        head.affinity = keys.map(|k| k[i % k.len()].as_str());
        *clock += step;
        let now = *clock;
        let (to, from) = match proxy.route(head, now) {
            Verdict::Send(Send { to, from, .. }) => (to, from),
            other => panic!("request {id}: {other:?}"),
        };
        match proxy.route(iq("result", &to, &from, id), now) {
            Verdict::Send(send) => {
                black_box(send);
            }
            other => panic!("reply {id}: {other:?}"),
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns per pair without keys, with keys (100,000 assigned) at a clock that stands still
/// and at one that moves a second per request (every request changes its key's last
/// use), medians over `samples` interleaved samples; and bytes allocated per key.
fn affinity(ids: &[String], samples: usize) -> (f64, f64, f64, f64, f64) {
    // Keys are assigned in one order and asked for in another (a fixed shuffle), so that
    // each request finds its key where the last one did not leave the cache warm. The
    // strings asked with are made in the order they are asked (a stanza's text is in the
    // cache when it is routed): what is timed is the table, not the bench's input.
    let assigned: Vec<String> = (0..AFFINITY_KEYS).map(room).collect();
    let mut order: Vec<usize> = (0..AFFINITY_KEYS).collect();
    let mut x: u64 = 7;
    for i in (1..order.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (x >> 33) as usize % (i + 1));
    }
    let keys: Vec<String> = order.into_iter().map(room).collect();
    // Requests cycle over every key, so a sample is at least one pass over them.
    let ids = &ids[..ids.len().min(AFFINITY_KEYS)];
    let mut keyed = affinity_proxy(&assigned);
    let mut plain = affinity_proxy(&[]);
    // The same requests' cost where the table stays in the cache: 1,000 keys.
    let few = &assigned[..SMALL_KEYS];
    let mut small = affinity_proxy(few);
    let (mut still, mut moving) = (2.0, 2.0);
    // Warm-up.
    run_keyed(&mut keyed, ids, Some(&keys), &mut still, 0.0);
    run_keyed(&mut plain, ids, None, &mut still, 0.0);
    run_keyed(&mut small, ids, Some(few), &mut still, 0.0);
    let (mut with, mut moving_clock, mut without, mut cached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        without.push(run_keyed(&mut plain, ids, None, &mut still, 0.0));
        with.push(run_keyed(&mut keyed, ids, Some(&keys), &mut still, 0.0));
        moving_clock.push(run_keyed(&mut keyed, ids, Some(&keys), &mut moving, 1.0));
        cached.push(run_keyed(&mut small, ids, Some(few), &mut still, 0.0));
    }
    assert_eq!(keyed.status().keys, AFFINITY_KEYS);
    assert_eq!(keyed.status().moves, 0, "no key moved");
    // Memory: live bytes after assigning every key, less a proxy with none.
    drop((keyed, plain));
    let mut fresh = affinity_proxy(&[]);
    LIVE_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run_keyed(&mut fresh, &["m".to_string()], Some(&keys), &mut 2.0, 0.0);
    COUNTING.store(false, Ordering::SeqCst);
    let live = LIVE_BYTES.load(Ordering::SeqCst);
    assert_eq!(fresh.status().keys, AFFINITY_KEYS);
    (
        median(without),
        median(with),
        median(moving_clock),
        median(cached),
        live as f64 / AFFINITY_KEYS as f64,
    )
}

fn main() {
    let pairs = env_number("ROUTE_COST_PAIRS", 100_000).max(1);
    let samples = env_number("ROUTE_COST_SAMPLES", 7).max(1);
    let ids: Vec<String> = (0..pairs).map(|i| format!("b{i}")).collect();
    if std::env::var_os("ROUTE_COST_AFFINITY_ONLY").is_some() {
        let (plain, keyed, _, cached, _) = affinity(&ids, samples);
        println!("affinity only: {plain:.0} ns without a key, {keyed:.0} with ({:+.1}%), 1000 keys {cached:.0}", (keyed / plain - 1.0) * 100.0);
        return;
    }

    println!(
        "Core route cost (Rust, no Lua): ns per forward+deliver pair, median of {samples} samples of {pairs} pairs"
    );
    println!("requester {BENCH_REQUESTER}, JAT plain, strategy random, timeout 1e9 s (nothing expires)\n");
    print!("{:>20}", "online resources");
    for p in PENDING_COUNTS {
        print!("{:>18}", format!("{p} pending"));
    }
    println!();
    // Every cell is set up first, then sampled in turn (sample 1 of every cell, then
    // sample 2, ...), so that a slow spell of the machine spreads over all cells.
    let mut cells: Vec<Cell> = RESOURCE_COUNTS
        .iter()
        .flat_map(|&r| PENDING_COUNTS.iter().map(move |&p| (r, p)))
        .map(|(r, p)| Cell::new(r, p, &ids))
        .collect();
    for _ in 0..samples {
        for cell in &mut cells {
            cell.sample(&ids);
        }
    }
    let all: Vec<(usize, usize, f64)> = cells
        .iter()
        .map(|c| (c.resources, c.pending, c.median()))
        .collect();
    for (row, r) in RESOURCE_COUNTS.iter().enumerate() {
        print!("{r:>20}");
        for col in 0..PENDING_COUNTS.len() {
            print!(
                "{:>18}",
                format!("{:.0} ns", all[row * PENDING_COUNTS.len() + col].2)
            );
        }
        println!();
    }
    let (min, max) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, _, ns)| {
            (lo.min(ns), hi.max(ns))
        });
    let (min_cell, max_cell) = (
        all.iter().find(|c| c.2 == min).expect("a minimum"),
        all.iter().find(|c| c.2 == max).expect("a maximum"),
    );
    let base = all[0].2;
    let spread = (max - min) / min;
    let within = spread <= TOLERANCE;
    println!(
        "\nfastest {min:.0} ns ({} resources, {} pending), slowest {max:.0} ns ({} resources, {} pending)",
        min_cell.0, min_cell.1, max_cell.0, max_cell.1
    );
    println!(
        "spread (slowest - fastest) / fastest = {:.1}%; slowest vs 1 resource/0 pending: {:+.1}%",
        spread * 100.0,
        (max / base - 1.0) * 100.0
    );
    println!(
        "route cost within 20% across resource and pending counts: {}",
        if within { "YES" } else { "NO" }
    );

    let (forward, reply) = distinct_requesters(samples);
    println!(
        "\n{DISTINCT_PENDING} pending, each request from a requester of its own (1 resource), median of {samples} batches of {DISTINCT_BATCH}:\n\
         {forward:.0} ns per forward, {reply:.0} ns per reply"
    );

    let (bytes, sample_len) = bytes_per_pending();
    println!(
        "\nMemory: {bytes:.0} bytes allocated per pending request ({MEMORY_REQUESTS} pending from distinct requesters,\n\
         e.g. \"user0@example.org/r\" id \"p0\": {sample_len} bytes of requester+id; includes the hash tables' spare capacity)"
    );

    let (plain, keyed, moving_clock, cached, per_key) = affinity(&ids, samples);
    let ratio = keyed / plain - 1.0;
    let flat = ratio <= AFFINITY_TOLERANCE;
    println!(
        "\nAffinity: {AFFINITY_RESOURCES} resources, {AFFINITY_KEYS} keys assigned (e.g. {:?}), median of {samples} samples:\n\
         {plain:.0} ns per pair without a key, {keyed:.0} ns with a key (each a different one of the {AFFINITY_KEYS}): {:+.1}% -> within 10%: {}\n\
         the clock moving a second per request (each key's last use changes): {moving_clock:.0} ns ({:+.1}%)\n\
         {SMALL_KEYS} keys (the table in the cache: the cost of a key apart from memory latency): {cached:.0} ns ({:+.1}%)\n\
         Memory: {per_key:.0} bytes allocated per key ({AFFINITY_KEYS} keys of {} bytes; {:.1} MB for all)",
        room(0),
        ratio * 100.0,
        if flat { "YES" } else { "NO" },
        (moving_clock / plain - 1.0) * 100.0,
        (cached / plain - 1.0) * 100.0,
        room(0).len(),
        per_key * AFFINITY_KEYS as f64 / (1 << 20) as f64
    );

    println!(
        "\nSUMMARY route_cost: {:.0}-{:.0} ns per forward+deliver pair (1-10000 resources, 0-100000 pending), spread {:.1}% -> within 20%: {}; {DISTINCT_PENDING} pending from distinct requesters: {forward:.0} ns per forward, {reply:.0} per reply; {:.0} bytes per pending request; affinity with {AFFINITY_KEYS} keys: {plain:.0} -> {keyed:.0} ns per pair ({:+.1}%, within 10%: {}; {SMALL_KEYS} keys: {cached:.0} ns), {per_key:.0} bytes per key",
        min,
        max,
        spread * 100.0,
        if within { "yes" } else { "no" },
        bytes,
        ratio * 100.0,
        if flat { "yes" } else { "no" }
    );
}
