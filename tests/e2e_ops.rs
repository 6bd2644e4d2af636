//! End-to-end tests of the operational features against a real Prosody (see tests/support):
//! the routing strategies, the resource pattern filter, draining, the metrics served by
//! mod_http_openmetrics, the module status and the `prosodyctl shell` command.
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account). Every test starts its own Prosody and ends by checking the log for Lua
//! tracebacks. Plain `#[tokio::test]` (current-thread runtime): see tests/support/mod.rs.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::client::*;
use support::implementer::*;
use support::ops::*;
use support::{free_port, ComponentSpec, Prosody};
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::StanzaError;

const PROXY: &str = "proxy.localhost";
const TARGET: &str = "service@localhost";
const TARGET_USER: &str = "service";
const PASSWORD: &str = "secret";
/// Generous bound for one answer that should come at once.
const ANSWER: Duration = Duration::from_secs(10);
/// How long the proxy gets to learn of a presence change.
const PRESENCE: Duration = Duration::from_secs(10);

/// Users of every test server.
const USERS: &[(&str, &str)] = &[
    (TARGET_USER, PASSWORD),
    ("user", PASSWORD),
    ("other", PASSWORD),
];

/// A Prosody with proxy.localhost -> service@localhost (plus `extra` option lines), the
/// global `modules` and option `globals` added, and the users of [`USERS`]; returns once
/// the component has loaded.
fn server_with(extra: &[&str], modules: &[&str], globals: &[String]) -> Prosody {
    let mut prosody = Prosody::new(&[ComponentSpec::new(PROXY, TARGET, extra)]);
    add_globals(&prosody, modules, globals);
    for (user, password) in USERS {
        prosody.register(user, password);
    }
    prosody.start();
    // start() returns once c2s listens; the component loads a moment later.
    let loaded = format!("Proxying {PROXY} to {TARGET}");
    let deadline = std::time::Instant::now() + PRESENCE;
    while prosody.log_lines(&loaded).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the component did not load; log tail:\n{}",
            prosody.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    prosody
}

/// A Prosody with proxy.localhost -> service@localhost plus `extra` option lines.
fn server(extra: &[&str]) -> Prosody {
    server_with(extra, &[], &[])
}

/// A started implementing resource `service@localhost/<resource>` with a priority and
/// a behaviour.
async fn implementer_with(
    prosody: &Prosody,
    resource: &str,
    priority: Option<i8>,
    behaviour: Behaviour,
) -> Implementer {
    let mut i = Implementer::new(&prosody.addr(), TARGET_USER, PASSWORD, resource, PROXY)
        .behaviour(behaviour);
    if let Some(p) = priority {
        i = i.priority(p);
    }
    i.start().await;
    i
}

/// A started echoing implementing resource `service@localhost/<resource>`.
async fn implementer(prosody: &Prosody, resource: &str) -> Implementer {
    implementer_with(prosody, resource, None, Behaviour::Echo).await
}

/// A logged-in requester `<full_jid>` with initial presence.
async fn requester_jid(prosody: &Prosody, full_jid: &str) -> Xmpp {
    let mut r = Xmpp::login(&prosody.addr(), full_jid, PASSWORD).await;
    r.presence(None).await;
    r
}

/// A logged-in requester `user@localhost/<resource>` with initial presence.
async fn requester(prosody: &Prosody, resource: &str) -> Xmpp {
    requester_jid(prosody, &format!("user@localhost/{resource}")).await
}

/// The proxy's debug line for a presence of the target's `resource`, e.g. "resource online".
fn presence_line(resource: &str, what: &str) -> String {
    format!("presence from {TARGET}/{resource}: {what}")
}

/// Waits until the proxy has taken each of `resources` online `times` times in all
/// (its debug log line), without sending requests (which would move the strategies).
async fn wait_online(prosody: &Prosody, resources: &[&str], times: usize) {
    for res in resources {
        wait_log(
            prosody,
            &presence_line(res, "resource online"),
            times,
            PRESENCE,
        )
        .await;
    }
}

/// Waits until the proxy has taken `resource` offline `times` times in all.
async fn wait_offline(prosody: &Prosody, resource: &str, times: usize) {
    wait_log(
        prosody,
        &presence_line(resource, "resource offline"),
        times,
        PRESENCE,
    )
    .await;
}

/// Asserts `iq` is an error with this type and condition, and returns the error.
fn expect_error<'a>(iq: &'a Iq, etype: &str, cond: &str) -> &'a StanzaError {
    let e = iq_error(iq).unwrap_or_else(|| panic!("expected an error, got {}", iq_xml(iq)));
    assert_eq!(condition(e), cond, "condition of {}", iq_xml(iq));
    assert_eq!(error_type(e), etype, "error type of {}", iq_xml(iq));
    e
}

/// Sends one request and returns the resource that answered it (panics on anything else
/// than an echo result).
async fn ask(r: &mut Xmpp, id: &str) -> String {
    let iq = r
        .must_request(get(PROXY, id, test_payload(id)), ANSWER)
        .await;
    answered_by(&iq).unwrap_or_else(|| panic!("{id}: not an echo result: {}", iq_xml(&iq)))
}

/// Sends `n` requests one after the other; the answering resources in order.
async fn ask_sequentially(r: &mut Xmpp, prefix: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(ask(r, &format!("{prefix}-{i}")).await);
    }
    out
}

/// How often each resource appears.
fn tally(resources: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in resources {
        *counts.entry(r.clone()).or_default() += 1;
    }
    counts
}

// 1a. random: both of two resources get requests.
#[tokio::test]
async fn strategy_random_uses_both_resources() {
    let prosody = server(&["client_proxy_strategy = \"random\""]);
    let _a = implementer(&prosody, "a").await;
    let _b = implementer(&prosody, "b").await;
    wait_online(&prosody, &["a", "b"], 1).await;
    let mut r = requester(&prosody, "abc").await;

    let order = ask_sequentially(&mut r, "rnd", 40).await;
    let counts = tally(&order);
    eprintln!("random: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 40);
    assert!(
        counts.get("a").is_some_and(|n| *n > 0) && counts.get("b").is_some_and(|n| *n > 0),
        "both resources should be used over 40 requests: {counts:?}"
    );
    prosody.assert_no_tracebacks();
}

// 1b. round_robin: 30 sequential requests over 3 resources, exactly 10 each, in rotation.
#[tokio::test]
async fn strategy_round_robin_rotates_exactly() {
    let prosody = server(&["client_proxy_strategy = \"round_robin\""]);
    let _a = implementer(&prosody, "a").await;
    let _b = implementer(&prosody, "b").await;
    let _c = implementer(&prosody, "c").await;
    wait_online(&prosody, &["a", "b", "c"], 1).await;
    let mut r = requester(&prosody, "abc").await;

    let order = ask_sequentially(&mut r, "rr", 30).await;
    let counts = tally(&order);
    eprintln!("round_robin: {order:?}");
    for res in ["a", "b", "c"] {
        assert_eq!(
            counts.get(res).copied(),
            Some(10),
            "each resource should get exactly 10 of 30: {counts:?}; order {order:?}"
        );
    }
    for i in 3..order.len() {
        assert_eq!(
            order[i],
            order[i - 3],
            "not a rotation at request {i}: {order:?}"
        );
    }
    prosody.assert_no_tracebacks();
}

// 1c. least_pending: /slow answers after ~1 s. Streams of overlapping requests (one
// every 50 ms, 40 in all, answers read at the end; random or round_robin would give /slow
// about half):
// - /fast answers at once: at least 80% go to /fast;
// - /fast answers after ~150 ms: /fast still gets most, /slow takes some of the overflow;
// - /fast is gone: /slow, eligible all along, serves.
#[tokio::test]
async fn strategy_least_pending_prefers_the_fast_resource() {
    let prosody = server(&["client_proxy_strategy = \"least_pending\""]);
    // /slow is silent and answered from here through its own connection, ~1 s late.
    let slow = implementer_with(&prosody, "slow", None, Behaviour::Silent).await;
    let mut fast = implementer(&prosody, "fast").await;
    wait_online(&prosody, &["slow", "fast"], 1).await;
    let mut r = requester(&prosody, "abc").await;
    let mut slow_late = LateAnswers::new(Duration::from_secs(1));
    let mut fast_late = LateAnswers::new(Duration::from_millis(150));

    let order = stream(&mut r, "lp1", 40, &mut [(&slow, &mut slow_late)]).await;
    let (to_fast, to_slow) = fast_slow(&order);
    eprintln!("least_pending, /fast at once: fast {to_fast}, slow {to_slow}: {order:?}");
    assert_eq!(to_fast, fast.request_count(), "/fast's own count");
    assert_eq!(to_slow, slow.request_count(), "/slow's own count");
    assert!(
        to_fast >= 32,
        "least_pending should send at least 80% to /fast: fast {to_fast}, slow {to_slow}; {order:?}"
    );

    fast.set_behaviour(Behaviour::Silent);
    let order = stream(
        &mut r,
        "lp2",
        40,
        &mut [(&slow, &mut slow_late), (&fast, &mut fast_late)],
    )
    .await;
    let (to_fast, to_slow) = fast_slow(&order);
    eprintln!("least_pending, /fast after 150 ms: fast {to_fast}, slow {to_slow}: {order:?}");
    assert!(
        to_fast >= 28 && to_slow >= 1,
        "least_pending: /fast should get at least 70%, /slow some: fast {to_fast}, slow {to_slow}; {order:?}"
    );

    // /slow was eligible: with /fast gone it gets the request (and answers late).
    fast.stop().await;
    wait_offline(&prosody, "fast", 1).await;
    let order = stream(&mut r, "lp3", 1, &mut [(&slow, &mut slow_late)]).await;
    assert_eq!(order, ["slow"]);
    prosody.assert_no_tracebacks();
}

/// /fast's and /slow's shares of `order`.
fn fast_slow(order: &[String]) -> (usize, usize) {
    let counts = tally(order);
    (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    )
}

/// Sends `n` requests 50 ms apart without waiting for answers, then reads them all
/// (bounded), while `late` answers for silent implementers; the answering resource of each
/// request in order. Panics on a missing, duplicate or non-echo answer.
async fn stream(
    r: &mut Xmpp,
    prefix: &str,
    n: usize,
    late: &mut [(&Implementer, &mut LateAnswers)],
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        r.send(get(PROXY, &id, test_payload(&id))).await;
        ids.push(id);
        for (imp, answers) in late.iter_mut() {
            answers.answer_due(imp);
        }
        sleep(Duration::from_millis(50)).await;
    }
    let mut by: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while by.len() < ids.len() && Instant::now() < deadline {
        for (imp, answers) in late.iter_mut() {
            answers.answer_due(imp);
        }
        for s in r.collect(Duration::from_millis(50)).await {
            let Some(iq) = as_iq(&s) else { continue };
            let res =
                answered_by(iq).unwrap_or_else(|| panic!("not an echo result: {}", iq_xml(iq)));
            assert!(
                by.insert(iq.id().to_string(), res).is_none(),
                "two answers to {}",
                iq.id()
            );
        }
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !by.contains_key(*id)).collect();
    assert!(missing.is_empty(), "no answer to {missing:?}");
    ids.iter().map(|id| by[id].clone()).collect()
}

// 1d. sticky: each requester keeps its resource; it moves when that resource leaves, and
// keeps the new one.
#[tokio::test]
async fn strategy_sticky_keeps_and_moves() {
    let prosody = server(&["client_proxy_strategy = \"sticky\""]);
    let mut imps = HashMap::new();
    for res in ["a", "b", "c"] {
        imps.insert(res.to_string(), implementer(&prosody, res).await);
    }
    wait_online(&prosody, &["a", "b", "c"], 1).await;
    let jids = [
        "user@localhost/s1",
        "other@localhost/s2",
        "user@localhost/s3",
    ];
    let mut requesters = Vec::new();
    for j in jids {
        requesters.push(requester_jid(&prosody, j).await);
    }

    // 10 rounds, each requester one request per round.
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); jids.len()];
    for round in 0..10 {
        for (i, r) in requesters.iter_mut().enumerate() {
            seen[i].push(ask(r, &format!("st-{i}-{round}")).await);
        }
    }
    let mut kept = Vec::new();
    for (i, got) in seen.iter().enumerate() {
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{} should keep one resource: {got:?}",
            jids[i]
        );
        kept.push(got[0].clone());
    }
    eprintln!("sticky: {jids:?} -> {kept:?}");

    // The first requester's resource goes offline.
    let gone = kept[0].clone();
    imps.get_mut(&gone).unwrap().stop().await;
    wait_offline(&prosody, &gone, 1).await;

    let mut after: Vec<Vec<String>> = vec![Vec::new(); jids.len()];
    for round in 0..10 {
        for (i, r) in requesters.iter_mut().enumerate() {
            after[i].push(ask(r, &format!("st2-{i}-{round}")).await);
        }
    }
    eprintln!("sticky after {gone} left: {after:?}");
    for (i, got) in after.iter().enumerate() {
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{} should keep one resource after {gone} left: {got:?}",
            jids[i]
        );
        if kept[i] == gone {
            assert_ne!(got[0], gone, "{} must move off {gone}", jids[i]);
        } else {
            assert_eq!(
                got[0], kept[i],
                "{} was not on {gone} and should not move",
                jids[i]
            );
        }
    }
    prosody.assert_no_tracebacks();
}

// 2. client_proxy_resources = { "^focus" }: /phone never gets a request; with only /phone
// online the service is unavailable.
#[tokio::test]
async fn resource_patterns_filter() {
    let prosody = server(&["client_proxy_resources = { \"^focus\" }"]);
    let mut focus = implementer(&prosody, "focus1").await;
    let phone = implementer(&prosody, "phone").await;
    wait_online(&prosody, &["focus1", "phone"], 1).await;
    let mut r = requester(&prosody, "abc").await;

    let order = ask_sequentially(&mut r, "pat", 20).await;
    assert!(
        order.iter().all(|res| res == "focus1"),
        "every request should go to /focus1: {order:?}"
    );
    assert_eq!(phone.request_count(), 0, "/phone got requests");

    focus.stop().await;
    wait_offline(&prosody, "focus1", 1).await;
    for n in 0..3 {
        let id = format!("only-phone-{n}");
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        expect_error(&iq, "cancel", "service-unavailable");
        assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
    }
    assert_eq!(phone.request_count(), 0, "/phone got requests");
    prosody.assert_no_tracebacks();
}

// 3. Draining: /old (priority -1) gets nothing while /new (0) is online; serves when /new
// is gone; a request /old holds when /new comes back is still answered.
#[tokio::test]
async fn draining_resource() {
    let prosody = server(&[]);
    let old = implementer_with(&prosody, "old", Some(-1), Behaviour::Echo).await;
    let mut new = implementer_with(&prosody, "new", Some(0), Behaviour::Echo).await;
    wait_online(&prosody, &["old", "new"], 1).await;
    let mut r = requester(&prosody, "abc").await;

    let order = ask_sequentially(&mut r, "dr1", 10).await;
    assert!(
        order.iter().all(|res| res == "new"),
        "all new requests should go to /new while /old drains: {order:?}"
    );
    assert_eq!(old.request_count(), 0);

    // /new goes offline: the draining /old serves.
    new.stop().await;
    wait_offline(&prosody, "new", 1).await;
    let order = ask_sequentially(&mut r, "dr2", 5).await;
    assert!(
        order.iter().all(|res| res == "old"),
        "with /new gone /old should serve: {order:?}"
    );

    // /old takes a request and holds it; /new comes back; /old drains and still answers.
    old.set_behaviour(Behaviour::Silent);
    r.send(get(PROXY, "held", test_payload("held"))).await;
    let deadline = Instant::now() + ANSWER;
    while old.exchange("held").is_none() {
        assert!(Instant::now() < deadline, "/old never got the held request");
        sleep(Duration::from_millis(20)).await;
    }
    new.start().await;
    wait_online(&prosody, &["new"], 2).await;
    let order = ask_sequentially(&mut r, "dr3", 5).await;
    assert!(
        order.iter().all(|res| res == "new"),
        "with /new back, new requests go to /new: {order:?}"
    );
    old.send(late_echo(&old.exchange("held").unwrap()));
    let iq = r
        .wait_answer("held", ANSWER)
        .await
        .expect("the request /old held while draining was answered");
    assert_eq!(
        answered_by(&iq).as_deref(),
        Some("old"),
        "the held request: {}",
        iq_xml(&iq)
    );
    assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
    prosody.assert_no_tracebacks();
}

/// Prefix of the module's OpenMetrics names.
const METRIC: &str = "prosody_mod_client_proxy";

/// Fetches /metrics and returns the body (asserting 200).
async fn fetch_metrics(port: u16) -> String {
    let resp = http_get(port, "/metrics").await;
    assert_eq!(resp.status, 200, "GET /metrics: {resp:?}");
    resp.body
}

/// The module's metric lines for proxy.localhost (for failure messages).
fn our_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains(METRIC))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expected values of the module's samples for proxy.localhost: (name, label, value).
type Expect<'a> = &'a [(&'a str, Option<(&'a str, &'a str)>, f64)];

/// The mismatches between `expect` and the metrics text.
fn metric_mismatches(text: &str, expect: Expect<'_>) -> Vec<String> {
    let samples = parse_samples(text);
    let mut out = Vec::new();
    for (name, label, want) in expect {
        let mut labels = vec![("host", PROXY)];
        labels.extend(label.iter().copied());
        let got = sample_value(&samples, name, &labels);
        if got != Some(*want) {
            out.push(format!("{name}{labels:?}: got {got:?}, want {want}"));
        }
    }
    out
}

/// Fetches /metrics until it shows `expect` (the proxy processes stanzas after they are
/// sent); panics with the module's lines after 5 s.
async fn wait_metrics(port: u16, expect: Expect<'_>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fetch_metrics(port).await;
        let wrong = metric_mismatches(&text, expect);
        if wrong.is_empty() {
            return text;
        }
        if Instant::now() >= deadline {
            panic!(
                "metrics differ:\n{}\n---- {METRIC} lines ----\n{}",
                wrong.join("\n"),
                our_lines(&text)
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

// 4. Metrics through mod_http_openmetrics after known traffic.
#[tokio::test]
async fn metrics_after_known_traffic() {
    let http = free_port();
    let prosody = server_with(
        &["client_proxy_timeout = 2"],
        &["http_openmetrics"],
        &metrics_globals(http),
    );
    let requests = format!("{METRIC}__requests_total");
    let errors = format!("{METRIC}__errors_total");
    let eligible = format!("{METRIC}__eligible_resources");
    let pending = format!("{METRIC}__pending");

    // Nobody online: one refusal.
    let mut r = requester(&prosody, "abc").await;
    let iq = r
        .must_request(get(PROXY, "none", test_payload("none")), ANSWER)
        .await;
    expect_error(&iq, "cancel", "service-unavailable");
    wait_metrics(
        http,
        &[
            (&requests, Some(("outcome", "refused")), 1.0),
            (&requests, Some(("outcome", "forwarded")), 0.0),
            (&errors, Some(("condition", "service-unavailable")), 1.0),
            (&eligible, None, 0.0),
            (&pending, None, 0.0),
        ],
    )
    .await;

    // Five delivered.
    let a = implementer(&prosody, "a").await;
    wait_online(&prosody, &["a"], 1).await;
    ask_sequentially(&mut r, "ok", 5).await;
    // One unsolicited reply.
    a.send(Iq::Result {
        from: None,
        to: Some(jid("proxy.localhost/user@localhost/abc")),
        id: "nobody-sent-this".to_string(),
        payload: None,
    });
    // One held, then timed out.
    a.set_behaviour(Behaviour::Silent);
    r.send(get(PROXY, "slow", test_payload("slow"))).await;
    let text = wait_metrics(
        http,
        &[
            (&requests, Some(("outcome", "forwarded")), 6.0),
            (&requests, Some(("outcome", "delivered")), 5.0),
            (&requests, Some(("outcome", "refused")), 1.0),
            (&requests, Some(("outcome", "unsolicited")), 1.0),
            (&requests, Some(("outcome", "timed_out")), 0.0),
            (&eligible, None, 1.0),
            (&pending, None, 1.0),
        ],
    )
    .await;
    eprintln!("metrics while one request is held:\n{}", our_lines(&text));

    let iq = answer_of(&mut r, "slow").await;
    expect_error(&iq, "wait", "remote-server-timeout");
    let text = wait_metrics(
        http,
        &[
            (&requests, Some(("outcome", "forwarded")), 6.0),
            (&requests, Some(("outcome", "delivered")), 5.0),
            (&requests, Some(("outcome", "refused")), 1.0),
            (&requests, Some(("outcome", "unsolicited")), 1.0),
            (&requests, Some(("outcome", "timed_out")), 1.0),
            (&requests, Some(("outcome", "lost")), 0.0),
            (&requests, Some(("outcome", "retried")), 0.0),
            (&requests, Some(("outcome", "outbound")), 0.0),
            (&errors, Some(("condition", "service-unavailable")), 1.0),
            (&errors, Some(("condition", "remote-server-timeout")), 1.0),
            (&eligible, None, 1.0),
            (&pending, None, 0.0),
        ],
    )
    .await;
    eprintln!("metrics at the end:\n{}", our_lines(&text));
    prosody.assert_no_tracebacks();
}

/// The answer to a request already sent (bounded).
async fn answer_of(r: &mut Xmpp, id: &str) -> Iq {
    r.wait_answer(id, ANSWER)
        .await
        .unwrap_or_else(|| panic!("no answer to {id} within {ANSWER:?}"))
}

/// Runs a shell command, asserting it succeeded; its stdout.
async fn shell_ok(prosody: &Prosody, command: &str) -> String {
    let out = shell(prosody, command).await;
    assert!(
        out.success && out.stderr.trim().is_empty(),
        "prosodyctl shell {command:?} failed: {out:?}"
    );
    out.stdout
}

/// Polls a shell command until its output satisfies `pred` (bounded); the output.
async fn shell_until(prosody: &Prosody, command: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PRESENCE;
    loop {
        let out = shell_ok(prosody, command).await;
        if pred(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "prosodyctl shell {command:?}: unexpected output:\n{out}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// The line of `text` that mentions resource `name` as its first word.
fn resource_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

// 5. Module status (log lines, module:list) and client_proxy:resources in prosodyctl shell.
#[tokio::test]
async fn status_and_shell() {
    let prosody = server_with(
        &["client_proxy_resources = { \"^a$\", \"^b$\" }"],
        &["admin_shell"],
        &[],
    );
    let warn_text = format!("No eligible resource of {TARGET} is online");
    let status_cmd = format!("module:list({PROXY:?})");
    let resources_cmd = format!("client_proxy:resources({PROXY:?})");

    // No resource: a warning, logged once and shown by module:list.
    let warned = prosody.log_lines(&warn_text);
    assert!(
        warned.len() == 1 && warned[0].contains("\twarn\t"),
        "one warning should be logged at start: {warned:?}"
    );
    let out = shell_ok(&prosody, &status_cmd).await;
    eprintln!("{status_cmd} with nothing online:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("client_proxy") && l.contains("warn") && l.contains(&warn_text)),
        "module:list should show the warning status:\n{out}"
    );
    let out = shell_ok(&prosody, &resources_cmd).await;
    eprintln!("{resources_cmd} with nothing online:\n{out}");
    assert!(
        out.contains(&format!("{PROXY} -> {TARGET}: 0 eligible, 0 pending")),
        "{out}"
    );

    // /a active holding one request, /b draining, /x ineligible.
    let a = implementer_with(&prosody, "a", Some(5), Behaviour::Silent).await;
    let _b = implementer_with(&prosody, "b", Some(-1), Behaviour::Echo).await;
    let x = implementer_with(&prosody, "x", Some(0), Behaviour::Echo).await;
    wait_online(&prosody, &["a", "b", "x"], 1).await;
    // Logged with the count at the change (the first eligible resource).
    let online_text = format!("eligible resource(s) of {TARGET} online");
    let mut r = requester(&prosody, "abc").await;
    r.send(get(PROXY, "held", test_payload("held"))).await;
    let out = shell_until(&prosody, &resources_cmd, |out| {
        resource_line(out, "a").is_some_and(|l| l.contains("1 pending"))
    })
    .await;
    eprintln!("{resources_cmd}:\n{out}");
    assert!(
        out.contains(&format!("{PROXY} -> {TARGET}: 2 eligible, 1 pending")),
        "summary line:\n{out}"
    );
    let expect = [
        ("a", "5", "active", "1"),
        ("b", "-1", "draining", "0"),
        ("x", "0", "ineligible", "0"),
    ];
    for (name, priority, pool, pending) in expect {
        let line =
            resource_line(&out, name).unwrap_or_else(|| panic!("no line for /{name}:\n{out}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            [name, "priority", priority, pool, pending, "pending"],
            "line of /{name}: {line:?}"
        );
    }
    assert!(
        out.contains("OK: 3 resource(s)"),
        "result line missing:\n{out}"
    );
    // The status is ok now: logged (info) once, and module:list shows no warning.
    let info = prosody.log_lines(&online_text);
    assert!(
        info.len() == 1 && info[0].contains("\tinfo\t"),
        "status change to ok should be logged once at info: {info:?}"
    );
    let out = shell_ok(&prosody, &status_cmd).await;
    eprintln!("{status_cmd} with resources online:\n{out}");
    let line = out
        .lines()
        .find(|l| l.trim() == "client_proxy" || l.contains("client_proxy"))
        .unwrap_or_else(|| panic!("client_proxy not listed:\n{out}"));
    assert_eq!(
        line.trim(),
        "client_proxy",
        "no warning/error status expected:\n{out}"
    );
    assert_eq!(
        prosody.log_lines(&warn_text).len(),
        warned.len(),
        "the warning should not be logged again"
    );
    // Unknown host: an error result, not a crash.
    let out = shell(&prosody, "client_proxy:resources('nowhere.localhost')").await;
    assert!(
        out.stderr
            .contains("No client_proxy component nowhere.localhost")
            || out
                .stdout
                .contains("No client_proxy component nowhere.localhost"),
        "{out:?}"
    );

    // The target revokes the subscription: error status.
    x.send(Presence::new(PresenceType::Unsubscribed).with_to(jid(PROXY)));
    let held = answer_of(&mut r, "held").await;
    expect_error(&held, "wait", "recipient-unavailable");
    let revoked = format!("{TARGET} revoked the subscription");
    wait_log(&prosody, &revoked, 1, PRESENCE).await;
    let out = shell_ok(&prosody, &status_cmd).await;
    eprintln!("{status_cmd} after the revocation:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("client_proxy") && l.contains("error") && l.contains(&revoked)),
        "module:list should show the error status:\n{out}"
    );
    let out = shell_ok(&prosody, &resources_cmd).await;
    assert!(
        out.contains("subscription revoked"),
        "revocation not shown:\n{out}"
    );
    drop(a);
    prosody.assert_no_tracebacks();
}

/// client_proxy_timeout = "2 seconds": Prosody 13's get_option_period reads it, and a
/// silent resource's request times out after about 2 s (not the default 60); Prosody 0.12
/// has no periods, and the module refuses to load with an error naming the option.
#[tokio::test]
async fn timeout_as_a_period() {
    let prosody = support::setup::server(&["client_proxy_timeout = \"2 seconds\""]);
    let version = prosody.version().expect("Prosody logged no version");
    if version.starts_with("0.") {
        let refused =
            prosody.log_lines("client_proxy_timeout: \"2 seconds\" is not a number of seconds");
        assert_eq!(
            refused.len(),
            1,
            "Prosody {version}: {}",
            prosody.log_tail(30)
        );
        assert!(refused[0].contains("\terror\t"), "{refused:?}");
        prosody.assert_no_tracebacks();
        return;
    }
    let service = support::setup::implementer(&prosody, "a").await;
    let mut r = support::setup::requester(&prosody, "abc").await;
    support::setup::wait_routable(&mut r, PROXY, &["a"]).await;
    service.set_behaviour(Behaviour::Silent);
    let started = Instant::now();
    let answer = r
        .must_request(
            get(PROXY, "slow", test_payload("slow")),
            Duration::from_secs(30),
        )
        .await;
    let waited = started.elapsed();
    expect_error(&answer, "wait", "remote-server-timeout");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "Prosody {version}: timed out after {waited:?}, expected about 2 s"
    );
    prosody.assert_no_tracebacks();
}
