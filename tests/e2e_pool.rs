//! End-to-end tests of the pool that heals itself (README: "A pool that heals itself"),
//! against a real Prosody with real clients (see tests/support): a declined request goes
//! to another resource, a resource that keeps failing is ejected for a doubling while (and
//! still serves when nothing else is online), a set is sent again only when it was
//! declined, and the sticky strategy keeps a user (bare JID, all its devices) on one
//! resource.
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
use tokio_xmpp::Stanza;

/// The operator-facing (info) line of an ejection: "<T>/<resource> ejected for <n> s".
fn ejected_line(resource: &str, seconds: u32) -> String {
    format!("{TARGET}/{resource} ejected for {seconds} s")
}

/// The operator-facing (info) line of a return: "<T>/<resource> is back in rotation".
fn back_line(resource: &str) -> String {
    format!("{TARGET}/{resource} is back in rotation after its ejection")
}

/// The shell command that lists H's resources.
fn resources_cmd() -> String {
    format!("client_proxy:resources({PROXY:?})")
}

/// Does the shell listing show `resource` as ejected?
fn shows_ejected(out: &str, resource: &str) -> bool {
    resource_line(out, resource).is_some_and(|l| l.contains("ejected until"))
}

/// An iq set addressed to `to` with this id and the test payload.
fn set(to: &str, id: &str) -> Iq {
    Iq::Set {
        from: None,
        to: Some(jid(to)),
        id: id.to_string(),
        payload: test_payload(id),
    }
}

/// How often each resource got the request `id`.
fn received(imp: &Implementer, id: &str) -> usize {
    imp.exchanges()
        .iter()
        .filter(|e| e.request.id() == id)
        .count()
}

/// A request as an implementer got it, but for `to` (the resource): from, id, type, payload.
fn shape(iq: &Iq) -> (Option<String>, Option<String>, &'static str, Vec<String>) {
    let e: tokio_xmpp::minidom::Element = iq.clone().into();
    (
        e.attr("from").map(str::to_owned),
        e.attr("id").map(str::to_owned),
        iq_type(iq),
        e.children().map(to_xml).collect(),
    )
}

/// Counts the answers (iq result/error from H) among `stanzas`, by id.
fn count_answers(stanzas: &[Stanza], answers: &mut HashMap<String, usize>) {
    for s in stanzas {
        if let Some(iq) = as_iq(s) {
            if matches!(iq, Iq::Result { .. } | Iq::Error { .. }) && is_from_host(s, PROXY) {
                *answers.entry(iq.id().to_string()).or_default() += 1;
            }
        }
    }
}

/// After the requests `ids` were each answered once (by `wait_answer`), watches for
/// [`QUIET`] and asserts that nothing more from H answers any of them.
async fn assert_no_second_answer(r: &mut Xmpp, ids: &[String]) {
    let mut answers = HashMap::new();
    count_answers(&r.collect(QUIET).await, &mut answers);
    let again: Vec<_> = answers.iter().filter(|(id, _)| ids.contains(id)).collect();
    assert!(again.is_empty(), "answered more than once: {again:?}");
}

/// Waits (bounded) until the request `id` reached `a` or `b`; which one did.
async fn landed_on<'a>(id: &str, a: &'a Implementer, b: &'a Implementer) -> &'a Implementer {
    let deadline = Instant::now() + ANSWER;
    loop {
        if a.exchange(id).is_some() {
            return a;
        }
        if b.exchange(id).is_some() {
            return b;
        }
        assert!(Instant::now() < deadline, "{id} reached neither resource");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Sends requests `<prefix>-<n>` without waiting for their answers until the silent
/// resource `silent` has received `count` of them (the others go to `serving`), then waits
/// for every answer: remote-server-timeout for the silent one's, an echo result from
/// `serving` for the rest. The silent one's requests are outstanding together, so they
/// time out together: about one `client_proxy_timeout` for the whole batch.
async fn let_time_out(
    r: &mut Xmpp,
    prefix: &str,
    silent: &Implementer,
    serving: &Implementer,
    count: usize,
) {
    let mut ids = Vec::new();
    let mut on_silent = 0;
    while on_silent < count {
        let id = format!("{prefix}-{}", ids.len());
        assert!(
            ids.len() < 100,
            "{count} requests never reached /{}",
            silent.resource
        );
        r.send(get(PROXY, &id, test_payload(&id))).await;
        if landed_on(&id, silent, serving).await.resource == silent.resource {
            on_silent += 1;
        }
        ids.push(id);
    }
    for id in &ids {
        let iq = r
            .wait_answer(id, ANSWER)
            .await
            .unwrap_or_else(|| panic!("no answer to {id} within {ANSWER:?}"));
        if silent.exchange(id).is_some() {
            expect_error(&iq, PROXY, "wait", "remote-server-timeout");
        } else {
            assert_eq!(
                answered_by(&iq).as_deref(),
                Some(serving.resource.as_str()),
                "{id}: {}",
                iq_xml(&iq)
            );
        }
    }
}

// 1. A login that declines everything (an ordinary client on the target account) costs
// nothing: each declined request goes to the resource that serves, and the declining one
// is ejected after 3 declines in a row (default options).
#[tokio::test]
async fn declining_login_is_bypassed_and_ejected() {
    let prosody = server(&[]);
    let focus = implementer(&prosody, "focus").await;
    let phone = implementer_with(&prosody, "phone", None, Behaviour::Decline).await;
    wait_online(&prosody, &["focus", "phone"]).await;
    let mut r = requester(&prosody, "abc").await;

    let ids: Vec<String> = (0..20).map(|n| format!("decl-{n}")).collect();
    for id in &ids {
        let iq = r
            .must_request(get(PROXY, id, test_payload(id)), ANSWER)
            .await;
        assert_eq!(
            answered_by(&iq).as_deref(),
            Some("focus"),
            "{id}: every request should get focus's result: {}",
            iq_xml(&iq)
        );
        assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
        assert_eq!(received(&focus, id), 1, "{id} should reach focus once");
    }
    assert_no_second_answer(&mut r, &ids).await;
    let declined = phone.request_count();
    eprintln!("phone declined {declined} of 20 requests");
    assert!(
        declined <= 3,
        "the declining resource should be ejected after 3 declines, got {declined} requests"
    );
    if declined == 3 {
        prosody
            .wait_log(&ejected_line("phone", 30), 1, ANSWER)
            .await;
    }
    assert_eq!(r.disconnects, 0);
    prosody.assert_no_tracebacks();
}

// 2. A silent login (timeout 2 s) costs at most 3 requests their timeout; every request is
// answered exactly once. Once the serving resource logs off, the ejected silent one still
// gets the requests (they time out, which shows they reached it).
#[tokio::test]
async fn silent_login_is_ejected_and_serves_when_alone() {
    let prosody = server(&["client_proxy_timeout = 2"]);
    let mut focus = implementer(&prosody, "focus").await;
    let quiet = implementer_with(&prosody, "quiet", None, Behaviour::Silent).await;
    wait_online(&prosody, &["focus", "quiet"]).await;
    let mut r = requester(&prosody, "abc").await;

    let ids: Vec<String> = (0..20).map(|n| format!("sil-{n}")).collect();
    let (mut results, mut timeouts) = (0, 0);
    for id in &ids {
        let iq = r
            .must_request(get(PROXY, id, test_payload(id)), ANSWER)
            .await;
        match answered_by(&iq) {
            Some(res) => {
                assert_eq!(res, "focus", "{id}: {}", iq_xml(&iq));
                results += 1;
            }
            None => {
                expect_error(&iq, PROXY, "wait", "remote-server-timeout");
                assert!(
                    quiet.exchange(id).is_some(),
                    "{id} timed out but /quiet never got it"
                );
                timeouts += 1;
            }
        }
    }
    assert_no_second_answer(&mut r, &ids).await;
    eprintln!("silent login: {results} results, {timeouts} timeouts");
    assert!(
        results >= 17 && quiet.request_count() <= 3,
        "the silent resource should be ejected after 3 timeouts: {results} results from focus, \
         {} requests to /quiet",
        quiet.request_count()
    );
    assert_eq!(results + timeouts, 20);

    // Only the ejected resource is left: it gets the requests.
    focus.stop().await;
    wait_offline(&prosody, &["focus"]).await;
    let alone: Vec<String> = (0..2).map(|n| format!("alone-{n}")).collect();
    for id in &alone {
        let iq = r
            .must_request(get(PROXY, id, test_payload(id)), ANSWER)
            .await;
        expect_error(&iq, PROXY, "wait", "remote-server-timeout");
        assert_eq!(
            received(&quiet, id),
            1,
            "{id}: the only online resource (ejected) should get it"
        );
    }
    assert_no_second_answer(&mut r, &alone).await;
    prosody.assert_no_tracebacks();
}

// 3. An ejection ends (client_proxy_eject_for = 2): the resource is back in rotation, and
// its next ejection lasts twice as long. Seen in the shell, the metrics and the log.
#[tokio::test]
async fn ejection_expires_and_doubles() {
    let http = free_port();
    let prosody = server_with(
        &["client_proxy_timeout = 1", "client_proxy_eject_for = 2"],
        &["http_openmetrics"],
        &metrics_globals(http),
    );
    let ejections = format!("{METRIC}__ejections_total");
    let ejected = format!("{METRIC}__ejected_resources");
    let serving = implementer(&prosody, "serving").await;
    let silent = implementer_with(&prosody, "silent", None, Behaviour::Silent).await;
    wait_online(&prosody, &["serving", "silent"]).await;
    let mut r = requester(&prosody, "abc").await;
    let started = Instant::now();
    eprintln!("Prosody {}", prosody.version().unwrap_or_default());

    // First ejection: 2 s.
    let_time_out(&mut r, "first", &silent, &serving, 3).await;
    let out = shell_until(&prosody, &resources_cmd(), |out| {
        shows_ejected(out, "silent")
    })
    .await;
    eprintln!("after the first ejection:\n{out}");
    assert!(
        !shows_ejected(&out, "serving"),
        "only /silent is ejected:\n{out}"
    );
    prosody
        .wait_log(&ejected_line("silent", 2), 1, ANSWER)
        .await;
    wait_metrics(http, PROXY, &[(&ejections, None, 1.0)]).await;

    // It comes back by itself.
    let lines = prosody.wait_log(&back_line("silent"), 1, ANSWER).await;
    assert!(lines[0].contains("\tinfo\t"), "{lines:?}");
    let out = shell_until(&prosody, &resources_cmd(), |out| {
        resource_line(out, "silent").is_some() && !shows_ejected(out, "silent")
    })
    .await;
    eprintln!("after its return:\n{out}");
    wait_metrics(
        http,
        PROXY,
        &[(&ejections, None, 1.0), (&ejected, None, 0.0)],
    )
    .await;

    // Second ejection: twice as long.
    let_time_out(&mut r, "second", &silent, &serving, 3).await;
    let lines = prosody
        .wait_log(&ejected_line("silent", 4), 1, ANSWER)
        .await;
    assert!(lines[0].contains("\tinfo\t"), "{lines:?}");
    shell_until(&prosody, &resources_cmd(), |out| {
        shows_ejected(out, "silent")
    })
    .await;
    wait_metrics(
        http,
        PROXY,
        &[(&ejections, None, 2.0), (&ejected, None, 1.0)],
    )
    .await;
    assert_eq!(
        prosody
            .log_lines(&format!("{TARGET}/silent ejected for "))
            .len(),
        2,
        "two ejections"
    );
    prosody.wait_log(&back_line("silent"), 2, ANSWER).await;
    wait_metrics(
        http,
        PROXY,
        &[(&ejections, None, 2.0), (&ejected, None, 0.0)],
    )
    .await;
    eprintln!("two ejections and returns in {:?}", started.elapsed());
    assert!(serving.is_running());
    prosody.assert_no_tracebacks();
}

/// Sends requests `<prefix>-<n>` one at a time until `resource` answers one (bounded).
async fn until_answered_by(r: &mut Xmpp, prefix: &str, resource: &str) {
    for n in 0..30 {
        let id = format!("{prefix}-{n}");
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        if answered_by(&iq).as_deref() == Some(resource) {
            return;
        }
    }
    panic!("/{resource} answered none of 30 requests");
}

// 3d. A resource that goes offline and comes back starts clean: ejected (default 30 s),
// it logs off and on again, and is in rotation at once.
#[tokio::test]
async fn offline_and_back_starts_clean() {
    let prosody = server(&["client_proxy_timeout = 1"]);
    let serving = implementer(&prosody, "serving").await;
    let mut quiet = implementer_with(&prosody, "quiet", None, Behaviour::Silent).await;
    wait_online(&prosody, &["serving", "quiet"]).await;
    let mut r = requester(&prosody, "abc").await;

    let_time_out(&mut r, "t", &quiet, &serving, 3).await;
    prosody
        .wait_log(&ejected_line("quiet", 30), 1, ANSWER)
        .await;
    shell_until(&prosody, &resources_cmd(), |out| {
        shows_ejected(out, "quiet")
    })
    .await;

    quiet.stop().await;
    wait_offline(&prosody, &["quiet"]).await;
    quiet.set_behaviour(Behaviour::Echo);
    quiet.start().await;
    let out = shell_until(&prosody, &resources_cmd(), |out| {
        resource_line(out, "quiet").is_some()
    })
    .await;
    assert!(
        !shows_ejected(&out, "quiet"),
        "back online, /quiet should start clean:\n{out}"
    );
    // In rotation: it gets requests while /serving is online (an ejected one would not,
    // for 30 s).
    until_answered_by(&mut r, "back", "quiet").await;
    assert_eq!(prosody.log_lines(&back_line("quiet")).len(), 0);
    prosody.assert_no_tracebacks();
}

// 3b. client_proxy_eject_for = "3 seconds": Prosody 13's get_option_period reads it (an
// ejection of 3 s, not the default 30); Prosody 0.12 has no periods, and the module refuses
// to load with an error naming the option.
#[tokio::test]
async fn eject_for_as_a_period() {
    let prosody = server(&[
        "client_proxy_timeout = 1",
        "client_proxy_eject_for = \"3 seconds\"",
    ]);
    let version = prosody.version().expect("Prosody logged no version");
    if version.starts_with("0.") {
        let needle = "client_proxy_eject_for: \"3 seconds\" is not a number of seconds";
        let refused = prosody.wait_log(needle, 1, ANSWER).await;
        assert_eq!(refused.len(), 1, "Prosody {version}: {refused:?}");
        assert!(refused[0].contains("\terror\t"), "{refused:?}");
        prosody.assert_no_tracebacks();
        return;
    }
    let serving = implementer(&prosody, "serving").await;
    let silent = implementer_with(&prosody, "silent", None, Behaviour::Silent).await;
    wait_online(&prosody, &["serving", "silent"]).await;
    let mut r = requester(&prosody, "abc").await;
    let_time_out(&mut r, "p", &silent, &serving, 3).await;
    prosody
        .wait_log(&ejected_line("silent", 3), 1, ANSWER)
        .await;
    prosody.wait_log(&back_line("silent"), 1, ANSWER).await;
    prosody.assert_no_tracebacks();
}

// 4. A set is sent again only when it was declined: one that timed out is not (it may have
// been done), one that was declined goes to the other resource, once.
#[tokio::test]
async fn declined_set_is_retried_timed_out_set_is_not() {
    let prosody = server(&["client_proxy_timeout = 5"]);
    // /slow alone: both sets go to it.
    let slow = implementer_with(&prosody, "slow", None, Behaviour::Silent).await;
    wait_online(&prosody, &["slow"]).await;
    let mut r = requester(&prosody, "abc").await;
    let sent = Instant::now();
    r.send(set(PROXY, "set-timeout")).await;
    r.send(set(PROXY, "set-declined")).await;
    slow.wait_request("set-timeout", ANSWER)
        .await
        .expect("/slow got set-timeout");
    let to_decline = slow
        .wait_request("set-declined", ANSWER)
        .await
        .expect("/slow got set-declined");

    // Another resource comes online while both are outstanding.
    let other = implementer(&prosody, "other").await;
    wait_online(&prosody, &["slow", "other"]).await;
    let online = sent.elapsed();
    assert!(
        online < Duration::from_secs(4),
        "/other took {online:?} to come online: set-timeout may have timed out before"
    );

    // /slow declines one: it goes to /other, which does it; the requester gets that result.
    slow.send(declined(&to_decline));
    let iq = r
        .wait_answer("set-declined", ANSWER)
        .await
        .expect("an answer to set-declined");
    assert_eq!(
        answered_by(&iq).as_deref(),
        Some("other"),
        "the declined set should be done by /other: {}",
        iq_xml(&iq)
    );
    let ex = other.exchange("set-declined").expect("/other got it");
    assert_eq!(iq_type(&ex.request), "set");
    assert_eq!(
        shape(&ex.request),
        shape(&to_decline.request),
        "the retry should reach /other as the set reached /slow"
    );
    assert_eq!(received(&other, "set-declined"), 1);

    // The other one times out and is sent nowhere else.
    let iq = r
        .wait_answer("set-timeout", Duration::from_secs(15))
        .await
        .expect("an answer to set-timeout");
    expect_error(&iq, PROXY, "wait", "remote-server-timeout");
    let ids = ["set-timeout".to_string(), "set-declined".to_string()];
    assert_no_second_answer(&mut r, &ids).await;
    assert_eq!(received(&slow, "set-timeout"), 1, "a set is sent once");
    assert_eq!(received(&slow, "set-declined"), 1);
    assert_eq!(
        received(&other, "set-timeout"),
        0,
        "a set that timed out may have been done: never sent again"
    );
    prosody.assert_no_tracebacks();
}

// 5. sticky keys on the user (bare JID): requests from two devices of one user, taking
// turns, reach one resource (of 4); so do a second user's, and both devices' messages.
#[tokio::test]
async fn sticky_keeps_a_users_devices_on_one_resource() {
    let prosody = server(&["client_proxy_strategy = \"sticky\""]);
    let names = ["a", "b", "c", "d"];
    let mut imps = Vec::new();
    for name in names {
        imps.push(implementer(&prosody, name).await);
    }
    wait_online(&prosody, &names).await;

    let mut kept = Vec::new();
    for user in ["user", "other"] {
        let mut devices = [
            requester_jid(&prosody, &format!("{user}@localhost/phone")).await,
            requester_jid(&prosody, &format!("{user}@localhost/laptop")).await,
        ];
        let mut by = Vec::new();
        for n in 0..10 {
            let id = format!("{user}-{n}");
            let iq = devices[n % 2]
                .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
                .await;
            let res =
                answered_by(&iq).unwrap_or_else(|| panic!("{id}: not a result: {}", iq_xml(&iq)));
            by.push(res);
        }
        let distinct: HashSet<&String> = by.iter().collect();
        eprintln!("{user}'s two devices -> {by:?}");
        assert_eq!(
            distinct.len(),
            1,
            "{user}'s devices should share one resource: {by:?}"
        );

        // Messages from both devices go to the same resource.
        let mut inboxes: Vec<Inbox> = imps.iter().map(|_| Inbox::new()).collect();
        for (k, device) in devices.iter_mut().enumerate() {
            let id = format!("{user}-msg-{k}");
            device.send(chat(PROXY, &id, "hello")).await;
        }
        let mut got = Vec::new();
        for k in 0..2 {
            let id = format!("{user}-msg-{k}");
            let deadline = Instant::now() + ANSWER;
            'wait: loop {
                for (imp, inbox) in imps.iter().zip(inboxes.iter_mut()) {
                    let found = inbox
                        .wait_for(imp, Duration::ZERO, |s| {
                            as_message(s).is_some_and(|m| message_id(m) == Some(id.as_str()))
                        })
                        .await;
                    if found.is_some() {
                        got.push(imp.resource.clone());
                        break 'wait;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "message {id} reached no resource"
                );
                sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(
            got[0], got[1],
            "{user}'s devices' messages should reach one resource"
        );
        kept.push(by[0].clone());
    }
    eprintln!("sticky: user -> {}, other -> {}", kept[0], kept[1]);
    prosody.assert_no_tracebacks();
}
