//! End-to-end tests of the operational features against a real Prosody (see tests/support):
//! the resource pattern filter, draining, the metrics served by
//! mod_http_openmetrics, the module status and the `prosodyctl shell` command.
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account). Every test starts its own Prosody and ends by checking the log for Lua
//! tracebacks. Plain `#[tokio::test]` (current-thread runtime): see tests/support/mod.rs.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::time::Duration;

use support::client::*;
use support::free_port;
use support::implementer::*;
use support::metrics::*;
use support::setup::*;
use support::shell::*;
use tokio::time::Instant;
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
// The roster keeping off: it would undo the revocation at the end (e2e_roster).
#[tokio::test]
async fn status_and_shell() {
    let prosody = server(&[
        "client_proxy_resources = { \"^a$\", \"^b$\" }",
        "client_proxy_manage_roster = false",
    ]);
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
