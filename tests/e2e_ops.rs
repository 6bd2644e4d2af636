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
use support::free_port;
use support::implementer::*;
use support::metrics::*;
use support::setup::*;
use support::shell::*;
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

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
    wait_online(&prosody, &["a", "b"]).await;
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
    wait_online(&prosody, &["a", "b", "c"]).await;
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
    wait_online(&prosody, &["slow", "fast"]).await;
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
    wait_offline(&prosody, &["fast"]).await;
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
    wait_online(&prosody, &["a", "b", "c"]).await;
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
    wait_offline(&prosody, &[gone.as_str()]).await;

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
    wait_online(&prosody, &["focus1", "phone"]).await;
    let mut r = requester(&prosody, "abc").await;

    let order = ask_sequentially(&mut r, "pat", 20).await;
    assert!(
        order.iter().all(|res| res == "focus1"),
        "every request should go to /focus1: {order:?}"
    );
    assert_eq!(phone.request_count(), 0, "/phone got requests");

    focus.stop().await;
    wait_offline(&prosody, &["focus1"]).await;
    for n in 0..3 {
        let id = format!("only-phone-{n}");
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        expect_error(&iq, PROXY, "cancel", "service-unavailable");
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
    wait_online(&prosody, &["old", "new"]).await;
    let mut r = requester(&prosody, "abc").await;

    let order = ask_sequentially(&mut r, "dr1", 10).await;
    assert!(
        order.iter().all(|res| res == "new"),
        "all new requests should go to /new while /old drains: {order:?}"
    );
    assert_eq!(old.request_count(), 0);

    // /new goes offline: the draining /old serves.
    new.stop().await;
    wait_offline(&prosody, &["new"]).await;
    let order = ask_sequentially(&mut r, "dr2", 5).await;
    assert!(
        order.iter().all(|res| res == "old"),
        "with /new gone /old should serve: {order:?}"
    );

    // /old takes a request and holds it; /new comes back; /old drains and still answers.
    old.set_behaviour(Behaviour::Silent);
    r.send(get(PROXY, "held", test_payload("held"))).await;
    let held = old.wait_request("held", ANSWER).await;
    let held = held.expect("/old never got the held request");
    new.start().await;
    wait_online(&prosody, &["new"]).await;
    let order = ask_sequentially(&mut r, "dr3", 5).await;
    assert!(
        order.iter().all(|res| res == "new"),
        "with /new back, new requests go to /new: {order:?}"
    );
    old.send(late_echo(&held));
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
    expect_error(&iq, PROXY, "cancel", "service-unavailable");
    wait_metrics(
        http,
        PROXY,
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
    wait_online(&prosody, &["a"]).await;
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
        PROXY,
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
    expect_error(&iq, PROXY, "wait", "remote-server-timeout");
    let text = wait_metrics(
        http,
        PROXY,
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

// 5. Module status (log lines, module:list) and client_proxy:resources in prosodyctl shell.
#[tokio::test]
async fn status_and_shell() {
    let prosody = server(&["client_proxy_resources = { \"^a$\", \"^b$\" }"]);
    let warn_text = format!("No eligible resource of {TARGET} is online");
    let status_cmd = format!("module:list({PROXY:?})");
    let resources_cmd = format!("client_proxy:resources({PROXY:?})");

    // No resource: a warning, logged once and shown by module:list.
    let warned = prosody.wait_log(&warn_text, 1, ANSWER).await;
    assert!(
        warned.len() == 1 && warned[0].contains("\twarn\t"),
        "one warning should be logged at start: {warned:?}"
    );
    let shows_status = |kind: &'static str, text: String| {
        move |out: &str| {
            out.lines()
                .any(|l| l.contains("client_proxy") && l.contains(kind) && l.contains(&text))
        }
    };
    let out = shell_until(
        &prosody,
        &status_cmd,
        shows_status("warn", warn_text.clone()),
    )
    .await;
    eprintln!("{status_cmd} with nothing online:\n{out}");
    let summary =
        |eligible, pending| format!("{PROXY} -> {TARGET}: {eligible} eligible, {pending} pending");
    let out = shell_until(&prosody, &resources_cmd, |out| out.contains(&summary(0, 0))).await;
    eprintln!("{resources_cmd} with nothing online:\n{out}");

    // /a active holding one request, /b draining, /x ineligible.
    let a = implementer_with(&prosody, "a", Some(5), Behaviour::Silent).await;
    let _b = implementer_with(&prosody, "b", Some(-1), Behaviour::Echo).await;
    let x = implementer_with(&prosody, "x", Some(0), Behaviour::Echo).await;
    wait_online(&prosody, &["a", "b", "x"]).await;
    // Logged with the count at the change (the first eligible resource).
    let online_text = format!("eligible resource(s) of {TARGET} online");
    let mut r = requester(&prosody, "abc").await;
    r.send(get(PROXY, "held", test_payload("held"))).await;
    let out = shell_until(&prosody, &resources_cmd, |out| {
        resource_line(out, "a").is_some_and(|l| l.contains("1 pending"))
    })
    .await;
    eprintln!("{resources_cmd}:\n{out}");
    assert!(out.contains(&summary(2, 1)), "summary line:\n{out}");
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
    let info = prosody.wait_log(&online_text, 1, ANSWER).await;
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
    expect_error(&held, PROXY, "wait", "recipient-unavailable");
    let revoked = format!("{TARGET} revoked the subscription");
    prosody.wait_log(&revoked, 1, ANSWER).await;
    let out = shell_until(
        &prosody,
        &status_cmd,
        shows_status("error", revoked.clone()),
    )
    .await;
    eprintln!("{status_cmd} after the revocation:\n{out}");
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
    let prosody = server(&["client_proxy_timeout = \"2 seconds\""]);
    let version = prosody.version().expect("Prosody logged no version");
    if version.starts_with("0.") {
        // The load error is written a moment after the start: poll for it.
        let needle = "client_proxy_timeout: \"2 seconds\" is not a number of seconds";
        let refused = prosody.wait_log(needle, 1, ANSWER).await;
        assert_eq!(refused.len(), 1, "Prosody {version}: {refused:?}");
        assert!(refused[0].contains("\terror\t"), "{refused:?}");
        prosody.assert_no_tracebacks();
        return;
    }
    let service = implementer(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;
    service.set_behaviour(Behaviour::Silent);
    let started = Instant::now();
    let answer = r
        .must_request(
            get(PROXY, "slow", test_payload("slow")),
            Duration::from_secs(30),
        )
        .await;
    let waited = started.elapsed();
    expect_error(&answer, PROXY, "wait", "remote-server-timeout");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "Prosody {version}: timed out after {waited:?}, expected about 2 s"
    );
    prosody.assert_no_tracebacks();
}
