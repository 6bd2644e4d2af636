//! End-to-end tests of the core wire contract against a real Prosody (see tests/support).
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account), R = a requester such as user@localhost/abc. Every test starts its own Prosody
//! with its own port and data, and ends by checking the log for Lua tracebacks.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::client::*;
use support::implementer::*;
use support::setup::*;
use support::{ComponentSpec, Prosody};
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::presence::Type as PresenceType;

// a. The README exchange, exactly, with two implementing resources; both get used.
#[tokio::test]
async fn readme_example_two_resources() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let b = implementer(&prosody, "b").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a", "b"]).await;

    // user -> component
    let payload =
        xml("<query xmlns='urn:example:readme'><item n='1'>x &amp; y</item><empty/></query>");
    r.send(get(PROXY, "1234", payload.clone())).await;
    // component -> user
    let answer = r
        .wait_answer("1234", ANSWER)
        .await
        .expect("an answer to id 1234");

    // component -> implementing client: exactly one resource got it.
    let (res, ex) = match (a.exchange("1234"), b.exchange("1234")) {
        (Some(ex), None) => ("a", ex),
        (None, Some(ex)) => ("b", ex),
        other => panic!("id 1234 should reach exactly one resource, got {other:?}"),
    };
    match &ex.request {
        Iq::Get {
            from,
            to,
            id,
            payload: got,
        } => {
            assert_eq!(id, "1234");
            assert_eq!(
                to.as_ref().map(|j| j.to_string()),
                Some(format!("service@localhost/{res}"))
            );
            assert_eq!(
                from.as_ref().map(|j| j.to_string()).as_deref(),
                Some("proxy.localhost/user@localhost/abc"),
                "plain JAT: the requester's full JID is the resource"
            );
            assert_eq!(
                canonical(got),
                canonical(&payload),
                "payload forwarded intact"
            );
        }
        other => panic!("implementing client got {}", iq_xml(other)),
    }
    // implementing client -> component
    let reply = ex.reply.as_ref().expect("echo reply");
    assert_eq!(
        reply.to().map(|j| j.to_string()).as_deref(),
        Some("proxy.localhost/user@localhost/abc")
    );
    // component -> user
    match &answer {
        Iq::Result {
            from,
            to,
            id,
            payload: got,
        } => {
            assert_eq!(id, "1234");
            assert_eq!(from.as_ref().map(|j| j.to_string()).as_deref(), Some(PROXY));
            assert_eq!(
                to.as_ref().map(|j| j.to_string()).as_deref(),
                Some("user@localhost/abc")
            );
            let got = got.as_ref().expect("result payload");
            let sent = iq_payload(reply).expect("reply payload");
            assert_eq!(canonical(got), canonical(sent), "result payload intact");
            let echoed = got
                .get_child("query", "urn:example:readme")
                .expect("echoed query");
            assert_eq!(canonical(echoed), canonical(&payload));
        }
        other => panic!("expected a result, got {}", iq_xml(other)),
    }

    // Over 40 requests both resources are used.
    let mut by: HashMap<String, usize> = HashMap::new();
    for n in 0..40 {
        let id = format!("spread-{n}");
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        let res = answered_by(&iq).unwrap_or_else(|| panic!("not a result: {}", iq_xml(&iq)));
        *by.entry(res).or_default() += 1;
    }
    assert!(
        by.get("a").copied().unwrap_or(0) > 0 && by.get("b").copied().unwrap_or(0) > 0,
        "both resources should be used over 40 requests: {by:?}"
    );
    assert_eq!(r.disconnects, 0);
    prosody.assert_no_tracebacks();
}

// b. No implementing resource online: service-unavailable (cancel), same id, from H.
#[tokio::test]
async fn no_resource_online_is_service_unavailable() {
    let prosody = server(&[]);
    let mut r = requester(&prosody, "abc").await;
    for (n, to) in [PROXY, "proxy.localhost/x", "node@proxy.localhost"]
        .into_iter()
        .enumerate()
    {
        let id = format!("none-{n}");
        let iq = r
            .must_request(get(to, &id, test_payload(&id)), ANSWER)
            .await;
        expect_error(&iq, to, "cancel", "service-unavailable");
        assert_eq!(iq.id(), id);
        assert_eq!(
            iq.to().map(|j| j.to_string()).as_deref(),
            Some("user@localhost/abc")
        );
    }
    prosody.assert_no_tracebacks();
}

// c. The implementing client's error reaches the requester with condition, text and the
// application-specific child.
#[tokio::test]
async fn error_passthrough() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;
    a.set_behaviour(Behaviour::Error(app_error()));

    let iq = r
        .must_request(get(PROXY, "err-1", test_payload("err-1")), ANSWER)
        .await;
    assert_eq!(iq.id(), "err-1");
    assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
    let e = expect_error(&iq, PROXY, "modify", "bad-request");
    assert_eq!(error_text(e).as_deref(), Some("nope"), "{}", iq_xml(&iq));
    let app = e
        .other
        .as_ref()
        .unwrap_or_else(|| panic!("no application-specific child: {}", iq_xml(&iq)));
    assert!(app.is("oops", "urn:example:app"), "{}", iq_xml(&iq));
    prosody.assert_no_tracebacks();
}

/// What one request in the churn test got.
#[derive(Debug)]
enum Outcome {
    Result(String),
    Error(String),
    Missing,
}

// d. A resource goes offline and comes back while requests keep coming: every request gets
// exactly one answer, and afterwards both resources are used again.
#[tokio::test]
async fn resource_churn_every_request_answered_once() {
    let prosody = server(&["client_proxy_timeout = 5"]);
    let mut a = implementer(&prosody, "a").await;
    let b = implementer(&prosody, "b").await;
    {
        let mut r = requester(&prosody, "warmup").await;
        wait_routable(&mut r, PROXY, &["a", "b"]).await;
        r.close().await;
    }

    const REQUESTERS: usize = 3;
    const AT_LEAST: usize = 100;
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for k in 0..REQUESTERS {
        let mut r = requester(&prosody, &format!("churn{k}")).await;
        let (answered, stop) = (answered.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while i < AT_LEAST || !stop.load(Ordering::SeqCst) {
                let id = format!("c{k}-{i}");
                let sent = Instant::now();
                // The module times out after 5 s: an answer must come well within 9 s.
                let outcome = match r
                    .request(get(PROXY, &id, test_payload(&id)), Duration::from_secs(9))
                    .await
                {
                    Some(iq) => match (answered_by(&iq), iq_error(&iq)) {
                        (Some(res), _) => Outcome::Result(res),
                        (None, Some(e)) => Outcome::Error(condition(e)),
                        (None, None) => Outcome::Error(format!("odd answer {}", iq_xml(&iq))),
                    },
                    None => Outcome::Missing,
                };
                answered.fetch_add(1, Ordering::SeqCst);
                outcomes.push((id, sent, outcome));
                i += 1;
                sleep(Duration::from_millis(15)).await;
            }
            // Anything else that arrives from the proxy now is a duplicate or stray answer
            // (the requesters' own presences are broadcast among them: not counted).
            let mut extra = r.collect(QUIET).await;
            extra.retain(|s| is_from_host(s, PROXY));
            let disconnects = r.disconnects;
            r.close().await;
            (outcomes, extra, disconnects)
        }));
    }

    fn unanswered(i: &Implementer) -> usize {
        i.exchanges().iter().filter(|e| e.reply.is_none()).count()
    }

    async fn wait_answered(answered: &AtomicUsize, target: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "requests stalled");
            sleep(Duration::from_millis(20)).await;
        }
    }

    wait_answered(&answered, 60).await;
    // /a stops answering, so it goes offline while holding requests: each of those must
    // still get exactly one answer (retried on /b, or an error), and at once.
    a.set_behaviour(Behaviour::Silent);
    let held_since = Instant::now();
    while unanswered(&a) < 2 && held_since.elapsed() < Duration::from_secs(2) {
        sleep(Duration::from_millis(10)).await;
    }
    let held = unanswered(&a);
    a.stop().await;
    a.set_behaviour(Behaviour::Echo);
    let stopped_at = answered.load(Ordering::SeqCst);
    wait_answered(&answered, stopped_at + 90).await;
    a.start().await;
    let restarted = Instant::now();
    // Keep the requests coming until the restarted /a has answered a few.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.exchanges().iter().filter(|e| e.session == 1).count() < 5 {
        assert!(
            Instant::now() < deadline,
            "the restarted resource /a got no requests within 20 s"
        );
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    let mut errors: HashMap<String, usize> = HashMap::new();
    let mut after_restart: HashMap<String, usize> = HashMap::new();
    let mut problems = Vec::new();
    for handle in loops {
        let (outcomes, extra, disconnects) = handle.await.expect("requester task");
        assert!(outcomes.len() >= AT_LEAST);
        total += outcomes.len();
        if disconnects > 0 {
            problems.push(format!(
                "a requester was disconnected {disconnects} time(s)"
            ));
        }
        for (id, sent, outcome) in &outcomes {
            match outcome {
                Outcome::Missing => problems.push(format!("{id}: no answer")),
                Outcome::Error(c) => *errors.entry(c.clone()).or_default() += 1,
                Outcome::Result(res) => {
                    if *sent > restarted {
                        *after_restart.entry(res.clone()).or_default() += 1;
                    }
                }
            }
        }
        for s in extra {
            problems.push(format!("duplicate or stray: {}", stanza_xml(&s)));
        }
    }
    eprintln!(
        "churn: {total} requests, {held} held by /a when it left, errors {errors:?}, \
         results after restart {after_restart:?}"
    );
    assert!(held > 0, "/a held no request when it went offline");
    assert!(
        problems.is_empty(),
        "{} problem(s): {problems:#?}",
        problems.len()
    );
    // The contract: a resource that goes offline has its outstanding requests answered at
    // once (or retried on another resource), not left to the timeout.
    assert!(
        !errors.contains_key("remote-server-timeout"),
        "requests held by the resource that left waited for the timeout: {errors:?}"
    );
    assert!(
        after_restart.get("a").is_some_and(|n| *n > 0)
            && after_restart.get("b").is_some_and(|n| *n > 0),
        "after /a is back both resources should be used: {after_restart:?}"
    );
    assert!(b.is_running());
    prosody.assert_no_tracebacks();
}

// e. A requester whose full JID is too long for a resource (1023-byte resource) gets its
// answer; the implementing client sees an opaque '@' token and answers to it.
#[tokio::test]
async fn overlong_requester_gets_opaque_token() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let mut warm = requester(&prosody, "warm").await;
    wait_routable(&mut warm, PROXY, &["a"]).await;

    let long = "r".repeat(1023);
    let mut r = requester(&prosody, &long).await;
    assert_eq!(
        r.jid.resource().as_str(),
        long,
        "the server bound the long resource"
    );
    let iq = r
        .must_request(get(PROXY, "long-1", test_payload("long-1")), ANSWER)
        .await;
    assert_eq!(answered_by(&iq).as_deref(), Some("a"), "{}", iq_xml(&iq));
    assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));

    let ex = a.exchange("long-1").expect("/a got the request");
    let from = ex.request.from().expect("from").to_string();
    let token = from
        .strip_prefix("proxy.localhost/")
        .unwrap_or_else(|| panic!("from {from:?} is not at the proxy"));
    assert!(
        token.starts_with('@'),
        "opaque token expected, got {token:?}"
    );
    assert!(token.len() < 1024, "token too long: {} bytes", token.len());
    assert!(!token.contains(&long), "token must not carry the full JID");
    assert_eq!(
        ex.reply
            .as_ref()
            .and_then(|i| i.to())
            .map(|j| j.to_string()),
        Some(from),
        "answered to the same address"
    );
    prosody.assert_no_tracebacks();
}

// f. Fresh data, the target has never approved: it logs in only after the server started,
// gets the subscription request, approves, and requests route to it within seconds. With
// the module's roster keeping off: the client's approval is what this is about (with it
// on, Prosody answers the subscription itself: e2e_roster).
#[tokio::test]
async fn fresh_server_subscription_approved_at_runtime() {
    let prosody = server(&["client_proxy_manage_roster = false"]);
    let mut r = requester(&prosody, "abc").await;
    // Routing cannot work yet: nobody is online.
    let iq = r
        .must_request(get(PROXY, "early", test_payload("early")), ANSWER)
        .await;
    expect_error(&iq, PROXY, "cancel", "service-unavailable");

    let a = implementer(&prosody, "a").await;
    let started = Instant::now();
    let mut n = 0;
    let answered = loop {
        n += 1;
        let id = format!("poll-{n}");
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        if answered_by(&iq).is_some() {
            break iq;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no request routed within 10 s of the target's login; last: {}; approved {}",
            iq_xml(&iq),
            a.approved()
        );
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answered_by(&answered).as_deref(), Some("a"));
    assert!(
        a.approved() >= 1,
        "the target never saw the subscription request"
    );
    eprintln!("routable {:?} after login ({n} polls)", started.elapsed());
    prosody.assert_no_tracebacks();
}

// g. Stanzas of type error are never answered (and not passed on).
#[tokio::test]
async fn error_stanzas_are_never_answered() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;
    let _ = a.others();

    r.send_xml(
        "<iq xmlns='jabber:client' type='error' id='e-1' to='proxy.localhost'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    )
    .await;
    r.send_xml(
        "<message xmlns='jabber:client' type='error' id='e-2' to='proxy.localhost'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    )
    .await;
    r.send_xml(
        "<iq xmlns='jabber:client' type='error' id='e-3' to='proxy.localhost/user@localhost/abc'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    )
    .await;
    let got = r.collect(QUIET).await;
    let back = from_host(&got, PROXY);
    assert!(back.is_empty(), "error stanzas were answered: {back:?}");
    let passed: Vec<String> = a.others().iter().map(stanza_xml).collect();
    assert!(
        passed
            .iter()
            .all(|s| !s.contains("type=\"error\"") && !s.contains("type='error'")),
        "error stanzas were passed to the implementing client: {passed:?}"
    );
    // The component still works.
    let iq = r
        .must_request(get(PROXY, "after", test_payload("after")), ANSWER)
        .await;
    assert_eq!(answered_by(&iq).as_deref(), Some("a"));
    prosody.assert_no_tracebacks();
}

// h. Presence from R -> bad-request error presence; message -> feature-not-implemented
// error message: the original's answers, which the two switches restore.
#[tokio::test]
async fn presence_and_message_from_requester_are_refused() {
    let prosody = server(&[
        "client_proxy_messages = false",
        "client_proxy_presence = false",
    ]);
    let _a = implementer(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;

    r.send_xml("<presence xmlns='jabber:client' id='p-1' to='proxy.localhost'/>")
        .await;
    let p = r
        .wait_for(ANSWER, |s| {
            as_presence(s).is_some_and(|p| {
                p.type_ == PresenceType::Error
                    && p.from
                        .as_ref()
                        .is_some_and(|f| f.domain().as_str() == PROXY)
            })
        })
        .await
        .expect("an error presence from the proxy");
    let p = as_presence(&p).unwrap();
    let e = error_child(&p.payloads).expect("a parsable <error/> child");
    assert_eq!(condition(&e), "bad-request");
    assert_eq!(p.id.as_deref(), Some("p-1"));

    r.send_xml(
        "<message xmlns='jabber:client' type='chat' id='m-1' to='proxy.localhost'><body>hi</body></message>",
    )
    .await;
    let m = r
        .wait_for(ANSWER, |s| {
            as_message(s).is_some_and(|m| {
                m.type_ == MessageType::Error
                    && m.from
                        .as_ref()
                        .is_some_and(|f| f.domain().as_str() == PROXY)
            })
        })
        .await
        .expect("an error message from the proxy");
    let m = as_message(&m).unwrap();
    let e = error_child(&m.payloads).expect("a parsable <error/> child");
    assert_eq!(condition(&e), "feature-not-implemented");
    assert_eq!(m.id.as_ref().map(|i| i.0.as_str()), Some("m-1"));
    prosody.assert_no_tracebacks();
}

// i. Two components in one server keep separate routing.
#[tokio::test]
async fn two_components_route_separately() {
    const PROXY2: &str = "proxy2.localhost";
    let prosody = Prosody::start_with_users(
        &[
            ComponentSpec::new(PROXY, "service@localhost", &[]),
            ComponentSpec::new(PROXY2, "other@localhost", &[]),
        ],
        &[
            ("service", PASSWORD),
            ("other", PASSWORD),
            ("user", PASSWORD),
        ],
    );
    let one = implementer(&prosody, "one").await;
    let mut two = Implementer::new(&prosody.addr(), "other", PASSWORD, "two", PROXY2);
    two.start().await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["one"]).await;
    wait_routable(&mut r, PROXY2, &["two"]).await;

    for n in 0..10 {
        for (host, jid) in [
            (PROXY, "service@localhost/one"),
            (PROXY2, "other@localhost/two"),
        ] {
            let id = format!("{host}-{n}");
            let iq = r
                .must_request(get(host, &id, test_payload(&id)), ANSWER)
                .await;
            assert_eq!(
                answered_by_jid(&iq).as_deref(),
                Some(jid),
                "{}",
                iq_xml(&iq)
            );
            assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(host));
        }
    }
    for ex in one.exchanges() {
        let from = ex.request.from().unwrap().to_string();
        assert!(from.starts_with("proxy.localhost/"), "service got {from}");
    }
    for ex in two.exchanges() {
        let from = ex.request.from().unwrap().to_string();
        assert!(from.starts_with("proxy2.localhost/"), "other got {from}");
    }
    prosody.assert_no_tracebacks();
}

// j. A silent implementing client: remote-server-timeout (wait) after client_proxy_timeout.
#[tokio::test]
async fn silent_implementer_times_out() {
    let prosody = server(&["client_proxy_timeout = 2"]);
    let a = implementer(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;
    a.set_behaviour(Behaviour::Silent);

    let sent = Instant::now();
    let iq = r
        .must_request(get(PROXY, "slow-1", test_payload("slow-1")), ANSWER)
        .await;
    let took = sent.elapsed();
    expect_error(&iq, PROXY, "wait", "remote-server-timeout");
    assert_eq!(iq.id(), "slow-1");
    assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
    assert!(a.exchange("slow-1").is_some(), "/a got the request");
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(5),
        "timeout 2 s, answered after {took:?}"
    );
    // Exactly one answer.
    let extra = from_host(&r.collect(QUIET).await, PROXY);
    assert!(extra.is_empty(), "more than one answer: {extra:?}");
    prosody.assert_no_tracebacks();
}

// l. A server restart: the (already approved) implementing client reconnects and requests
// route again, without any new approval.
#[tokio::test]
async fn routing_resumes_after_server_restart() {
    let mut prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;
    let approved = a.approved();

    // Blocks this (single) runtime thread for the restart; the clients notice afterwards,
    // and tokio-xmpp reconnects them by itself.
    prosody.restart();
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("after-restart-{n}");
        let answer = r
            .request(get(PROXY, &id, test_payload(&id)), Duration::from_secs(2))
            .await;
        if answer.as_ref().and_then(answered_by).as_deref() == Some("a") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no request routed within 30 s of the restart; last: {:?}",
            answer.as_ref().map(iq_xml)
        );
        sleep(Duration::from_millis(200)).await;
    }
    eprintln!("routable again {:?} after the restart", started.elapsed());
    assert_eq!(
        a.approved(),
        approved,
        "no new approval needed after a restart"
    );
    prosody.assert_no_tracebacks();
}

// The harness itself against a plain server (no proxy involved): login, iq, restart.
#[tokio::test]
async fn harness_login_and_restart() {
    let mut prosody = Prosody::new(&[]);
    prosody.register("user", PASSWORD);
    prosody.start();
    let mut user = requester(&prosody, "abc").await;
    let ping = xml("<ping xmlns='urn:xmpp:ping'/>");
    let answer = user
        .must_request(get("localhost", "p1", ping), ANSWER)
        .await;
    assert_eq!(iq_type(&answer), "result");
    user.close().await;
    prosody.restart();
    let user = requester(&prosody, "abc").await;
    user.close().await;
    // Accounts can also be created while the server runs.
    prosody.register("late", PASSWORD);
    let late = Xmpp::login(&prosody.addr(), "late@localhost/x", PASSWORD).await;
    late.close().await;
    prosody.assert_no_tracebacks();
}
