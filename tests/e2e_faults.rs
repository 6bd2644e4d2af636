//! End-to-end tests of "every request answered exactly once" under faults, against a real
//! Prosody (see tests/support): implementing resources that answer late or never, drop
//! their TCP connection, go unavailable and come back; forged and misdirected replies; a
//! module reload in the middle of traffic; the per-requester limit.
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account). Every test ends by checking the Prosody log for Lua tracebacks.
//!
//! The fault test is sized by `FAULT_REQUESTERS` (default 20), `FAULT_REQUESTS` (per
//! requester, default 500), `FAULT_WINDOW` (outstanding requests per requester, default
//! 8) and seeded by `FAULT_SEED` (default: from the clock; the seed is printed). It runs
//! alone: the other tests of this file wait for it (and it for them).
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::client::*;
use support::implementer::*;
use support::setup::*;
use support::shell::shell;
use support::traffic::*;
use tokio::sync::RwLock;
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::Stanza;

/// The fault test takes this for writing (it runs alone: it loads both cores), the others
/// for reading.
static SERIAL: RwLock<()> = RwLock::const_new(());

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The fault test's implementing resources: per request, 5 % never answered, else answered
/// at once (half) or after up to 400 ms, so that requests are in flight at every fault.
/// Decided by (seed, resource, id): a get retried on another resource draws again.
fn storm_policy(seed: u64, resource: &'static str) -> Policy {
    Arc::new(move |iq: &Iq| {
        let id = iq.id();
        if id.starts_with("warm") {
            return Reply::After(Duration::ZERO);
        }
        let mut rng = Rng::keyed(seed, &format!("{resource}/{id}"));
        if rng.chance(0.05) {
            Reply::Silent
        } else if rng.chance(0.5) {
            Reply::After(Duration::ZERO)
        } else {
            Reply::After(rng.millis(1, 400))
        }
    })
}

// 1. Many requesters while three implementing resources answer (at once or late), stay
// silent, lose their TCP connection and go unavailable and come back (after a calm start),
// and once all three go away together: every request is answered exactly once, by a
// result or a documented error, within the timeout (plus the clock's second and slack).
// Affinity is on (Jitsi's rule): half the requests are for one of 40 rooms, so keys are
// assigned, kept, lost with their resource and taken along by retries meanwhile.
#[tokio::test]
async fn fault_storm_every_request_answered_exactly_once() {
    storm(false).await;
}

// 1b. The same storm with stream management on the users' host (`smacks`, as Jitsi's auth
// host): a cut connection makes the resource's session hibernate (out of rotation, its
// gets moved, its sets waiting) until the client resumes the stream, so hibernation,
// resumption and retries mix with the keys and the unavailable presences.
#[tokio::test]
async fn fault_storm_with_stream_management_every_request_answered_exactly_once() {
    storm(true).await;
}

async fn storm(smacks: bool) {
    let _serial = SERIAL.write().await;
    const TIMEOUT: u64 = 3;
    const ROOMS: u64 = 40;
    let requesters = env_num("FAULT_REQUESTERS", 20) as usize;
    let per = env_num("FAULT_REQUESTS", 500) as usize;
    let window = env_num("FAULT_WINDOW", 8) as usize;
    let seed = env_num(
        "FAULT_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    let total = requesters * per;
    eprintln!(
        "fault storm (stream management: {smacks}): FAULT_SEED={seed}, {requesters} requesters x {per} requests (window {window}, 30 % sets, half for one of {ROOMS} rooms), client_proxy_timeout = {TIMEOUT}, resources a, b, c"
    );
    let begun = Instant::now();
    let extra = [
        &format!("client_proxy_timeout = {TIMEOUT}"),
        "client_proxy_affinity = { \"{http://jitsi.org/protocol/focus}conference@room\" }",
    ];
    let prosody = if smacks {
        server_with(
            &extra,
            &["smacks"],
            &["smacks_hibernation_time = 30".to_string()],
        )
    } else {
        server(&extra)
    };

    const NAMES: [&str; 3] = ["a", "b", "c"];
    let mut relays = Vec::new();
    let mut resources = Vec::new();
    for name in NAMES {
        let relay = Relay::start(&prosody.addr()).await;
        let r = FaultResource::start(
            &relay.addr,
            TARGET_USER,
            PASSWORD,
            name,
            PROXY,
            storm_policy(seed, name),
        )
        .await;
        relays.push(relay);
        resources.push(r);
    }
    {
        let mut warm = login(&prosody, "user@localhost/warm").await;
        wait_routable(&mut warm, PROXY, &NAMES).await;
        warm.close().await;
    }

    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for k in 0..requesters {
        let x = login(&prosody, &format!("user@localhost/r{k}")).await;
        let plan = Plan {
            count: Some(per),
            stop: stop.clone(),
            window,
            sets: 0.3,
            seed: seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9),
            give_up: Duration::from_secs(TIMEOUT + 15),
            linger: Duration::from_secs(TIMEOUT + 2),
            progress: progress.clone(),
            rooms: ROOMS,
        };
        loops.push(tokio::spawn(traffic(x, plan, move |i| format!("f{k}-{i}"))));
    }
    let traffic_begun = Instant::now();

    // The faults, until every request has its first answer (or the requesters gave up).
    let mut rng = Rng::new(seed ^ 0x00c4_a05c_4a05);
    let mut cuts = [0usize; 3];
    let mut unavailable = [0usize; 3];
    let mut back_at: [Option<Instant>; 3] = [None; 3];
    let mut blackout: Option<(Instant, Instant)> = None;
    // No faults for the first seconds: the silent requests of that time reach their
    // timeout (later ones are mostly lost to a fault first).
    const CALM: Duration = Duration::from_secs(TIMEOUT + 1);
    let mut next_fault = traffic_begun + CALM;
    while progress.load(Ordering::SeqCst) < total && !loops.iter().all(|l| l.is_finished()) {
        let now = Instant::now();
        for i in 0..3 {
            if back_at[i].is_some_and(|t| now >= t) {
                resources[i].presence(true);
                back_at[i] = None;
            }
        }
        // Half-way: all three go unavailable for half a second (service-unavailable expected).
        if blackout.is_none()
            && traffic_begun.elapsed() >= CALM
            && progress.load(Ordering::SeqCst) >= total / 2
            && back_at.iter().all(Option::is_none)
            && resources.iter().all(|r| r.online_for().is_some())
        {
            let from = Instant::now();
            for r in &resources {
                r.presence(false);
            }
            sleep(Duration::from_millis(500)).await;
            for r in &resources {
                r.presence(true);
            }
            blackout = Some((from, Instant::now()));
            next_fault = Instant::now() + Duration::from_millis(500);
            continue;
        }
        if now >= next_fault {
            let i = rng.below(3) as usize;
            // Outside the blackout one resource, online for a while, always stays.
            let another_stays = (0..3).any(|j| {
                j != i
                    && back_at[j].is_none()
                    && resources[j]
                        .online_for()
                        .is_some_and(|d| d >= Duration::from_millis(500))
            });
            if back_at[i].is_none() && resources[i].online_for().is_some() && another_stays {
                if rng.chance(0.5) {
                    // Abrupt: the server sees the connection reset; no unavailable sent.
                    relays[i].cut();
                    resources[i].mark_cut();
                    cuts[i] += 1;
                } else {
                    resources[i].presence(false);
                    back_at[i] = Some(now + rng.millis(200, 1000));
                    unavailable[i] += 1;
                }
            }
            next_fault = now + rng.millis(100, 500);
        }
        sleep(Duration::from_millis(20)).await;
    }
    for (i, r) in resources.iter().enumerate() {
        if back_at[i].is_some() {
            r.presence(true);
        }
    }
    let traffic_took = traffic_begun.elapsed();

    let mut tally = Tally::default();
    let mut reports = Vec::new();
    for l in loops {
        let report = l.await.expect("requester task");
        tally.add(&report);
        reports.push(report);
    }

    // service-unavailable is documented for "no eligible resource online": only expected
    // around the blackout (the answer arrives after it began and at most 2 s after the
    // resources were told to come back).
    let mut unavailable_outside = Vec::new();
    for report in &reports {
        for (sent, answers) in report.sent.iter().zip(&report.answers) {
            for got in answers {
                if let What::Error(cond, _) = &got.what {
                    let inside = blackout.is_some_and(|(from, to)| {
                        got.at >= from && got.at <= to + Duration::from_secs(2)
                    });
                    if cond == "service-unavailable" && !inside {
                        unavailable_outside.push(format!(
                            "{} answered service-unavailable {:?} after the start",
                            sent.id,
                            got.at - traffic_begun
                        ));
                    }
                }
            }
        }
    }
    // Answers later than the timeout allows (the clock is checked once a second).
    let late_bound = Duration::from_secs(TIMEOUT + 3);
    let late: Vec<String> = reports
        .iter()
        .flat_map(|r| r.sent.iter().zip(&r.answers))
        .filter_map(|(sent, answers)| {
            let first = answers.first()?;
            (first.at - sent.at > late_bound)
                .then(|| format!("{} ({:?}): {:?}", sent.id, first.at - sent.at, first.what))
        })
        .collect();

    // What the implementing side did.
    let received: Vec<Vec<Received>> = resources.iter().map(|r| r.received()).collect();
    let forwarded: usize = received.iter().map(Vec::len).sum();
    let replied: usize = received
        .iter()
        .flatten()
        .filter(|r| r.replied.is_some())
        .count();
    let silent: usize = received
        .iter()
        .flatten()
        .filter(|r| r.reply == Reply::Silent)
        .count();
    let mut seen_by: HashMap<(String, String), usize> = HashMap::new();
    for r in received.iter().flatten() {
        *seen_by.entry((r.from.clone(), r.id.clone())).or_default() += 1;
    }
    let resent = seen_by.values().filter(|n| **n > 1).count();

    tally.print("fault storm");
    eprintln!(
        "service-unavailable outside the blackout {}; answers later than {late_bound:?}: {}",
        unavailable_outside.len(),
        late.len()
    );
    eprintln!(
        "faults (none in the first {CALM:?}): connection resets {cuts:?} (relay connections {:?}), unavailable+back {unavailable:?}, blackout (start, length) {:?}, reconnects {:?}",
        relays.iter().map(Relay::accepted).collect::<Vec<_>>(),
        blackout.map(|(f, t)| (f - traffic_begun, t - f)),
        resources.iter().map(FaultResource::reconnects).collect::<Vec<_>>()
    );
    eprintln!(
        "implementing side: {forwarded} requests received ({} by a, b, c: {:?}), {silent} left silent, {replied} answered, {} of those answers not delivered (late or lost), {resent} requests received twice (retried gets), send failures {:?}",
        forwarded,
        received.iter().map(Vec::len).collect::<Vec<_>>(),
        replied.saturating_sub(tally.results),
        resources.iter().map(FaultResource::send_failures).collect::<Vec<_>>()
    );
    eprintln!(
        "times: traffic {traffic_took:?}, whole test {:?}",
        begun.elapsed()
    );

    assert_eq!(tally.sent, total, "every requester sent its requests");
    tally.assert_exactly_once();
    let documented = [
        "remote-server-timeout",
        "recipient-unavailable",
        "service-unavailable",
    ];
    let undocumented: Vec<_> = tally
        .errors
        .iter()
        .filter(|((c, _, _), _)| !documented.contains(&c.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "errors other than the documented ones: {undocumented:?}"
    );
    for (cond, etype, _) in tally.errors.keys() {
        let want = if cond == "service-unavailable" {
            "cancel"
        } else {
            "wait"
        };
        assert_eq!(etype, want, "error type of {cond}");
    }
    assert!(
        unavailable_outside.is_empty(),
        "service-unavailable while a resource was online:\n  {}",
        unavailable_outside.join("\n  ")
    );
    assert!(
        late.is_empty(),
        "{} answer(s) later than {late_bound:?}, e.g. {:?}",
        late.len(),
        &late[..late.len().min(10)]
    );
    assert!(
        tally.errors_of("remote-server-timeout") > 0
            && tally.errors_of("recipient-unavailable") > 0,
        "the faults should have produced timeouts and lost requests: {:?}",
        tally.errors
    );
    assert!(blackout.is_some(), "the blackout did not happen");
    assert!(cuts.iter().sum::<usize>() > 0 && unavailable.iter().sum::<usize>() > 0);
    for r in &resources {
        assert!(r.is_running(), "resource {} task ended", r.resource);
    }
    if smacks {
        // The cuts were hibernations (operator lines at info), and the streams resumed.
        let slept = prosody
            .log_lines("is hibernating (stream management)")
            .len();
        let resumed = prosody
            .log_lines("resumed its stream: back in rotation")
            .len();
        assert!(
            slept > 0 && resumed > 0,
            "no hibernation seen: {slept} hibernated, {resumed} resumed"
        );
    }
    // The rooms were keys: every one remembered, some moved by the faults.
    let listing = shell(&prosody, &format!("client_proxy:resources({PROXY:?})")).await;
    let keys = format!(", {ROOMS} affinity keys (");
    assert!(
        listing.stdout.contains(&keys) && !listing.stdout.contains("(0 moved)"),
        "affinity keys after the storm: {}",
        listing.stdout
    );
    prosody.assert_no_tracebacks();
}

// 2. A reply for an id nobody sent is not delivered; nor a reply from a resource the
// request did not go to, from another account, or to another requester, nor a second
// reply; the real answer is, once.
#[tokio::test]
async fn forged_and_misdirected_replies_are_not_delivered() {
    let _serial = SERIAL.read().await;
    let prosody = server(&["client_proxy_timeout = 20"]);
    let a = implementer(&prosody, "a").await;
    let b = implementer(&prosody, "b").await;
    let mut r = login(&prosody, "user@localhost/abc").await;
    wait_routable(&mut r, PROXY, &["a", "b"]).await;
    a.set_behaviour(Behaviour::Silent);
    b.set_behaviour(Behaviour::Silent);
    let mut zzz = login(&prosody, "user@localhost/zzz").await;
    let mut other = login(&prosody, "other@localhost/x").await;
    const JAT: &str = "proxy.localhost/user@localhost/abc";
    let result = |to: &str, id: &str, marker: &str| Iq::Result {
        from: None,
        to: Some(jid(to)),
        id: id.to_string(),
        payload: Some(xml(&format!("<{marker} xmlns='urn:example:app'/>"))),
    };
    async fn nothing(x: &mut Xmpp, what: &str) {
        let got = from_host(&x.collect(QUIET).await, PROXY);
        assert!(got.is_empty(), "{what}: {} received {got:?}", x.jid);
    }

    // An id nobody sent, as a result and as an error, to a real user's full JID.
    a.send(result(JAT, "nobody-sent-this", "forged"));
    b.send(
        xml(&format!(
            "<iq xmlns='jabber:client' type='error' id='nobody-sent-this-either' to='{JAT}'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ))
        .try_into()
        .map(|iq: Iq| Stanza::Iq(iq))
        .expect("an iq"),
    );
    nothing(&mut r, "replies to ids nobody sent").await;

    // Which resource got a request: (holder, the other one).
    async fn holder<'x>(
        id: &str,
        a: &'x Implementer,
        b: &'x Implementer,
    ) -> (&'x Implementer, &'x Implementer) {
        let deadline = Instant::now() + ANSWER;
        loop {
            match (a.exchange(id), b.exchange(id)) {
                (Some(_), None) => return (a, b),
                (None, Some(_)) => return (b, a),
                (Some(_), Some(_)) => panic!("{id} reached both resources"),
                (None, None) => {}
            }
            assert!(Instant::now() < deadline, "{id} reached no resource");
            sleep(Duration::from_millis(20)).await;
        }
    }

    // The wrong resource answers a real outstanding request: not delivered; the right one
    // does: delivered once; the right one answers again: not delivered.
    r.send(get(PROXY, "w1", test_payload("w1"))).await;
    let (right, wrong) = holder("w1", &a, &b).await;
    eprintln!(
        "w1 went to /{}; /{} forges the answer",
        right.resource, wrong.resource
    );
    wrong.send(result(JAT, "w1", "forged"));
    nothing(
        &mut r,
        "a reply from the resource the request did not go to",
    )
    .await;
    right.send(result(JAT, "w1", "real"));
    let iq = r.wait_answer("w1", ANSWER).await.expect("the real answer");
    assert!(
        iq_payload(&iq).is_some_and(|p| p.is("real", "urn:example:app")),
        "the answer delivered is the real one: {}",
        iq_xml(&iq)
    );
    assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
    right.send(result(JAT, "w1", "again"));
    wrong.send(result(JAT, "w1", "forged-again"));
    nothing(&mut r, "a second answer to an answered request").await;

    // The holder answers to another requester's address (a real, online user): neither
    // that user nor the requester gets it; the right address then works.
    r.send(get(PROXY, "w2", test_payload("w2"))).await;
    let (right, _) = holder("w2", &a, &b).await;
    right.send(result(
        "proxy.localhost/user@localhost/zzz",
        "w2",
        "misdirected",
    ));
    nothing(&mut zzz, "a reply addressed to another requester").await;
    nothing(&mut r, "a reply addressed to another requester").await;
    right.send(result(JAT, "w2", "real"));
    let iq = r.wait_answer("w2", ANSWER).await.expect("the real answer");
    assert!(iq_payload(&iq).is_some_and(|p| p.is("real", "urn:example:app")));

    // Another account (not the target) answers an outstanding request: not delivered.
    r.send(get(PROXY, "w3", test_payload("w3"))).await;
    let (right, _) = holder("w3", &a, &b).await;
    other.send(result(JAT, "w3", "forged")).await;
    nothing(&mut r, "a reply from an account that is not the target").await;
    right.send(result(JAT, "w3", "real"));
    let iq = r.wait_answer("w3", ANSWER).await.expect("the real answer");
    assert!(iq_payload(&iq).is_some_and(|p| p.is("real", "urn:example:app")));
    nothing(&mut r, "after the real answers").await;
    nothing(&mut zzz, "after the real answers").await;
    nothing(&mut other, "the other account after its forged reply").await;

    prosody.assert_no_tracebacks();
}

// 3. module:reload through prosodyctl shell in the middle of traffic: requests forwarded
// before a reload and answered after it, requests whose timeout fires after it, requests
// sent around it: each answered exactly once.
#[tokio::test]
async fn reload_mid_traffic_loses_nothing() {
    let _serial = SERIAL.read().await;
    const TIMEOUT: u64 = 3;
    let prosody = server(&[&format!("client_proxy_timeout = {TIMEOUT}")]);
    // slow-*: answered after 1 s; silent-*: never; others at once.
    let policy: Policy = Arc::new(|iq: &Iq| {
        let id = iq.id();
        if id.starts_with("slow-") {
            Reply::After(Duration::from_secs(1))
        } else if id.starts_with("silent-") {
            Reply::Silent
        } else {
            Reply::After(Duration::ZERO)
        }
    });
    let mut resources = Vec::new();
    for name in ["a", "b"] {
        resources.push(
            FaultResource::start(
                &prosody.addr(),
                TARGET_USER,
                PASSWORD,
                name,
                PROXY,
                policy.clone(),
            )
            .await,
        );
    }
    {
        let mut warm = login(&prosody, "user@localhost/warm").await;
        wait_routable(&mut warm, PROXY, &["a", "b"]).await;
        warm.close().await;
    }
    const LOADED: &str = "Proxying proxy.localhost to service@localhost";
    let loaded_before = prosody.wait_log(LOADED, 1, ANSWER).await.len();

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let plan = |k: u64, window: usize| Plan {
        count: None,
        stop: stop.clone(),
        window,
        sets: 0.3,
        seed: k,
        give_up: Duration::from_secs(TIMEOUT + 10),
        linger: Duration::from_secs(TIMEOUT + 2),
        progress: progress.clone(),
        rooms: 0,
    };
    let mut loops = Vec::new();
    for k in 0..3usize {
        let x = login(&prosody, &format!("user@localhost/t{k}")).await;
        loops.push(tokio::spawn(traffic(x, plan(k as u64, 6), move |i| {
            if i % 2 == 0 {
                format!("slow-{k}-{i}")
            } else {
                format!("fast-{k}-{i}")
            }
        })));
    }
    sleep(Duration::from_secs(1)).await;
    // Requests that are never answered: their timeout fires after both reloads.
    let silent_plan = Plan {
        count: Some(4),
        ..plan(99, 4)
    };
    let x = login(&prosody, "user@localhost/silent").await;
    let silent_loop = tokio::spawn(traffic(x, silent_plan, |i| format!("silent-{i}")));
    sleep(Duration::from_secs(1)).await;

    let mut reloads = Vec::new();
    for n in 0..2 {
        let out = shell(&prosody, "module:reload('client_proxy', 'proxy.localhost')").await;
        eprintln!(
            "reload {n}: {:?}, success {}, stdout {:?}, stderr {:?}",
            out.ended - out.started,
            out.success,
            out.stdout.trim(),
            out.stderr.trim()
        );
        assert!(
            out.success && out.stdout.contains("Module reloaded on 1 host"),
            "prosodyctl shell reload failed: {out:?}"
        );
        reloads.push(out);
        sleep(Duration::from_millis(1200)).await;
    }
    sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);

    let mut tally = Tally::default();
    let mut reports = Vec::new();
    for l in loops {
        reports.push(l.await.expect("traffic task"));
    }
    let silent_report = silent_loop.await.expect("silent task");
    for r in reports.iter().chain(std::iter::once(&silent_report)) {
        tally.add(r);
    }
    tally.print("reload mid-traffic");

    // The reloads happened (the module logs this info line at each load).
    let loaded = prosody
        .wait_log(LOADED, loaded_before + 2, ANSWER)
        .await
        .len();
    eprintln!("module loads logged: {loaded_before} before the reloads, {loaded} after");
    assert_eq!(loaded, loaded_before + 2, "two reloads logged");

    tally.assert_exactly_once();
    // Nothing but results, and timeouts for the silent requests.
    let answer_of = |id: &str| -> Got {
        reports
            .iter()
            .chain(std::iter::once(&silent_report))
            .flat_map(|r| r.sent.iter().zip(&r.answers))
            .find(|(s, _)| s.id == id)
            .map(|(_, a)| a[0].clone())
            .unwrap_or_else(|| panic!("{id} not sent"))
    };
    for report in &reports {
        for (sent, answers) in report.sent.iter().zip(&report.answers) {
            assert!(
                matches!(answers[0].what, What::Result(_)),
                "{} ({}) answered {:?}",
                sent.id,
                sent.kind,
                answers[0].what
            );
        }
    }
    let last_reload_end = reloads.last().unwrap().ended;
    for (sent, answers) in silent_report.sent.iter().zip(&silent_report.answers) {
        match &answers[0].what {
            What::Error(c, t) if c == "remote-server-timeout" && t == "wait" => {}
            other => panic!("{} ({}) answered {other:?}", sent.id, sent.kind),
        }
        assert!(
            answers[0].at > last_reload_end,
            "{}: the timeout should fire after the reloads",
            sent.id
        );
        let took = answers[0].at - sent.at;
        assert!(
            took >= Duration::from_millis(TIMEOUT * 1000 - 1000)
                && took <= Duration::from_secs(TIMEOUT + 2),
            "{}: timed out after {took:?}",
            sent.id
        );
    }

    // Requests forwarded before a reload and answered after it.
    let received: Vec<Received> = resources.iter().flat_map(|r| r.received()).collect();
    for (n, reload) in reloads.iter().enumerate() {
        let across: Vec<&Received> = received
            .iter()
            .filter(|r| r.at < reload.started && r.replied.is_some_and(|t| t > reload.ended))
            .collect();
        let sent_during = reports
            .iter()
            .flat_map(|r| r.sent.iter())
            .filter(|s| s.at >= reload.started && s.at <= reload.ended)
            .count();
        eprintln!(
            "reload {n}: {} requests forwarded before it and answered after it ({} gets, {} sets); {sent_during} sent while it ran",
            across.len(),
            across.iter().filter(|r| r.kind == "get").count(),
            across.iter().filter(|r| r.kind == "set").count()
        );
        assert!(
            !across.is_empty(),
            "reload {n}: no request was in flight across it"
        );
        for r in across {
            assert!(
                matches!(answer_of(&r.id).what, What::Result(_)),
                "{} forwarded before reload {n}, answered after it: the requester got {:?}",
                r.id,
                answer_of(&r.id).what
            );
        }
    }
    let held_lost = prosody.log_lines("is no longer held");
    assert!(held_lost.is_empty(), "held requests lost: {held_lost:?}");
    let errors = prosody.log_lines("client_proxy\terror");
    assert!(errors.is_empty(), "errors logged: {errors:?}");
    prosody.assert_no_tracebacks();
}

// 4. client_proxy_max_pending_per_requester = 2, silent implementer: a requester's third
// outstanding request is refused resource-constraint (wait) at once; other requesters
// still get through; once answered, the requester may send again. A second outstanding
// request with the same id: bad-request (modify). Every request answered exactly once.
#[tokio::test]
async fn per_requester_limit() {
    let _serial = SERIAL.read().await;
    const TIMEOUT: u64 = 3;
    let prosody = server(&[
        &format!("client_proxy_timeout = {TIMEOUT}"),
        "client_proxy_max_pending_per_requester = 2",
    ]);
    let a = implementer(&prosody, "a").await;
    let mut r = login(&prosody, "user@localhost/first").await;
    wait_routable(&mut r, PROXY, &["a"]).await;
    a.set_behaviour(Behaviour::Silent);
    let mut s = login(&prosody, "user@localhost/second").await;
    let mut o = login(&prosody, "other@localhost/x").await;
    let mut d = login(&prosody, "user@localhost/dup").await;

    async fn until_forwarded(a: &Implementer, id: &str) {
        let forwarded = a.wait_request(id, Duration::from_secs(5)).await;
        assert!(forwarded.is_some(), "{id} was not forwarded");
    }

    let t0 = Instant::now();
    for id in ["l1", "l2", "l3"] {
        r.send(get(PROXY, id, test_payload(id))).await;
    }
    let third = r
        .wait_answer("l3", Duration::from_secs(TIMEOUT - 1))
        .await
        .expect("the third request is refused at once");
    expect_error(&third, PROXY, "wait", "resource-constraint");
    eprintln!("l3 refused after {:?}", t0.elapsed());
    until_forwarded(&a, "l1").await;
    until_forwarded(&a, "l2").await;
    assert!(a.exchange("l3").is_none(), "l3 must not be forwarded");

    // Other requesters (the same account's other resource, another account) get through
    // while the first is at its limit.
    s.send(get(PROXY, "m1", test_payload("m1"))).await;
    o.send(get(PROXY, "m2", test_payload("m2"))).await;
    until_forwarded(&a, "m1").await;
    until_forwarded(&a, "m2").await;

    // A second outstanding request with the same id.
    d.send(get(PROXY, "d1", test_payload("d1"))).await;
    until_forwarded(&a, "d1").await;
    d.send(get(PROXY, "d1", test_payload("d1-again"))).await;
    let dup = d
        .wait_answer("d1", Duration::from_secs(TIMEOUT - 1))
        .await
        .expect("the duplicate is refused at once");
    expect_error(&dup, PROXY, "modify", "bad-request");
    assert_eq!(
        a.exchanges()
            .iter()
            .filter(|e| e.request.id() == "d1")
            .count(),
        1,
        "the duplicate must not be forwarded"
    );

    // Everything outstanding times out, once.
    let wait = Duration::from_secs(TIMEOUT + 3);
    for (x, ids) in [
        (&mut r, &["l1", "l2"][..]),
        (&mut s, &["m1"]),
        (&mut o, &["m2"]),
        (&mut d, &["d1"]),
    ] {
        for id in ids {
            let iq = x
                .wait_answer(id, wait)
                .await
                .unwrap_or_else(|| panic!("{id}: no answer"));
            expect_error(&iq, PROXY, "wait", "remote-server-timeout");
        }
    }

    // Free again: the first requester's next two requests are forwarded and answered.
    a.set_behaviour(Behaviour::Echo);
    for id in ["l4", "l5"] {
        r.send(get(PROXY, id, test_payload(id))).await;
    }
    for id in ["l4", "l5"] {
        let iq = r.wait_answer(id, ANSWER).await.expect("an answer");
        assert_eq!(answered_by(&iq).as_deref(), Some("a"), "{}", iq_xml(&iq));
    }
    for x in [&mut r, &mut s, &mut o, &mut d] {
        let extra = from_host(&x.collect(QUIET).await, PROXY);
        assert!(extra.is_empty(), "{}: more answers {extra:?}", x.jid);
    }
    prosody.assert_no_tracebacks();
}
