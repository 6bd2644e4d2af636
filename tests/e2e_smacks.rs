//! End-to-end tests of stream management (README: "Stream management"): the target's
//! host runs `smacks` (XEP-0198), and an implementing resource whose connection drops
//! hibernates. It leaves the rotation at once, its held gets are answered by another
//! resource, its held sets wait; when it resumes it serves again, and when the hibernation
//! ends without a resumption, what it held is answered once.
//!
//! The implementing resource `a` is a real client library with stream management and
//! resumption (tokio-xmpp 6's stanza stream), connected through a [`Gate`]: closing the gate
//! resets its connection (Prosody sees it drop: the session hibernates) and holds the
//! client's reconnects; opening it lets the client resume. The session's state, the
//! hibernation and the resumption are Prosody's own (mod_smacks, 0.12 and 13).
//!
//! H = proxy.localhost (the component), T = service@localhost. Every test starts its own
//! Prosody and ends by checking the log for Lua tracebacks. Plain `#[tokio::test]`
//! (current-thread runtime): see tests/support/mod.rs.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::time::Duration;

use support::client::*;
use support::gate::Gate;
use support::implementer::*;
use support::setup::*;
use support::shell::*;
use support::traffic::request;
use support::Prosody;
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;

/// The standard setup with `smacks` on the users' host and this hibernation time (s).
fn smacks_server(hibernation: u32) -> Prosody {
    server_with(
        &[],
        &["smacks"],
        &[format!("smacks_hibernation_time = {hibernation}")],
    )
}

/// The implementing resource `a`, echoing, connected through `gate`.
async fn through(gate: &Gate) -> Implementer {
    let mut a = Implementer::new(&gate.addr, TARGET_USER, PASSWORD, "a", PROXY);
    a.start().await;
    a
}

/// Waits until H's status shows resource `res` hibernating (or no longer); the listing.
async fn wait_hibernating(prosody: &Prosody, res: &str, hibernating: bool) -> String {
    shell_until(
        prosody,
        &format!("client_proxy:resources({PROXY:?})"),
        |out| resource_line(out, res).is_some_and(|l| l.ends_with("hibernating") == hibernating),
    )
    .await
}

/// Polls (bounded by `wait`) until `cond` holds.
async fn until(what: &str, wait: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + wait;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {wait:?}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Sends requests (gets, or sets) until H's status shows `a` holding `pending` requests
/// (`a`'s gate stalled: it never sees them); those that reach `b` are answered by it at
/// once. The id of the one `a` holds.
async fn stuck_at_a(
    r: &mut Xmpp,
    prosody: &Prosody,
    set: bool,
    tag: &str,
    pending: usize,
) -> String {
    let cmd = format!("client_proxy:resources({PROXY:?})");
    let holds = |out: &str| {
        resource_line(out, "a").is_some_and(|l| l.contains(&format!(" {pending} pending")))
    };
    for i in 0..40 {
        let id = format!("{tag}-{i}");
        r.send(request(&id, set)).await;
        let deadline = Instant::now() + ANSWER;
        loop {
            if let Some(answer) = r.wait_answer(&id, Duration::from_millis(100)).await {
                assert_eq!(
                    answered_by(&answer).as_deref(),
                    Some("b"),
                    "{}",
                    iq_xml(&answer)
                );
                break;
            }
            if holds(&shell_ok(prosody, &cmd).await) {
                return id;
            }
            assert!(Instant::now() < deadline, "{id}: neither at a nor answered");
        }
    }
    panic!("no {tag} request reached a in 40 tries");
}

/// A server with `smacks` (this hibernation time, s), `a` through a gate, `b` direct, a
/// requester; `a` holds one get and one set it never saw when its connection drops, and
/// the get is answered by `b` within `within` of the drop.
struct Dropped {
    prosody: Prosody,
    gate: Gate,
    a: Implementer,
    b: Implementer,
    r: Xmpp,
    /// The ids of the get and the set `a` held.
    get: String,
    set: String,
}

async fn drop_with_a_get_and_a_set(hibernation: u32, within: Duration) -> Dropped {
    let prosody = smacks_server(hibernation);
    let gate = Gate::start(&prosody.addr()).await;
    let a = through(&gate).await;
    let b = implementer(&prosody, "b").await;
    let mut r = requester(&prosody, "r").await;
    wait_routable(&mut r, PROXY, &["a", "b"]).await;
    // What H sends a from now on never reaches it: unacknowledged, kept by mod_smacks.
    gate.stall();
    let get = stuck_at_a(&mut r, &prosody, false, "g", 1).await;
    let set = stuck_at_a(&mut r, &prosody, true, "s", 2).await;

    // The connection drops: the session hibernates, still online to everyone else.
    let cut = Instant::now();
    gate.close();
    let answer = r
        .wait_answer(&get, ANSWER)
        .await
        .expect("the get a held is answered elsewhere");
    assert_answered_by(&answer, "b");
    assert!(
        cut.elapsed() < within,
        "answered {:?} after the cut, not within {within:?}",
        cut.elapsed()
    );
    Dropped {
        prosody,
        gate,
        a,
        b,
        r,
        get,
        set,
    }
}

/// Asserts `answer` is an echo result from `resource`.
fn assert_answered_by(answer: &Iq, resource: &str) {
    assert_eq!(
        answered_by(answer).as_deref(),
        Some(resource),
        "{}",
        iq_xml(answer)
    );
}

/// `a` serves again, and no second answer to the get or the set came meanwhile (the
/// exactly-once check).
async fn routable_and_answered_once(r: &mut Xmpp, get: &str, set: &str) {
    wait_routable(r, PROXY, &["a"]).await;
    let twice: Vec<String> = r
        .collect(QUIET)
        .await
        .iter()
        .filter_map(as_iq)
        .filter(|iq| iq.id() == get || iq.id() == set)
        .map(iq_xml)
        .collect();
    assert_eq!(twice, Vec::<String>::new(), "answered twice");
}

#[tokio::test]
async fn hibernating_resource_gets_no_request_its_get_goes_elsewhere_and_it_serves_after_resuming()
{
    let Dropped {
        prosody,
        gate,
        a,
        b,
        mut r,
        get: g,
        set: s,
    } = drop_with_a_get_and_a_set(60, Duration::from_secs(5)).await;
    let listing = wait_hibernating(&prosody, "a", true).await;
    let line = resource_line(&listing, "a").unwrap();
    assert!(
        line.contains(" 1 pending"),
        "the set waits for a: {listing}"
    );
    assert!(listing.contains("1 eligible, 1 hibernating"), "{listing}");
    // New requests, gets and sets: b answers each at once; nothing queues behind a.
    for i in 0..10 {
        let id = format!("new-{i}");
        let answer = r.must_request(request(&id, i % 2 == 1), ANSWER).await;
        assert_answered_by(&answer, "b");
    }

    // The client comes back and resumes its stream: mod_smacks sends it what it never
    // acknowledged, the get and the set, and it answers both. The set's answer is the
    // one; the get's comes after b's and is dropped.
    gate.open();
    until("a resumes its stream", ANSWER, || a.resumes() > 0).await;
    let answer = r
        .wait_answer(&s, ANSWER)
        .await
        .expect("the set is answered");
    assert_answered_by(&answer, "a");
    until("a gets the get again", ANSWER, || a.exchange(&g).is_some()).await;
    assert_eq!(a.reconnects(), 0, "the same session, resumed");
    wait_hibernating(&prosody, "a", false).await;
    routable_and_answered_once(&mut r, &g, &s).await;
    assert!(
        b.exchange(&s).is_none(),
        "a set is never sent to a second resource"
    );
    prosody.assert_no_tracebacks();
}

#[tokio::test]
async fn hibernation_that_ends_without_resumption_answers_the_held_set_once() {
    // The get is answered during the hibernation (5 s), not after it.
    let Dropped {
        prosody,
        gate,
        a,
        b: _b,
        mut r,
        get: g,
        set: s,
    } = drop_with_a_get_and_a_set(5, Duration::from_secs(3)).await;
    // Five seconds after the cut Prosody ends the session: mod_smacks bounces the get and
    // the set it never delivered (recipient-unavailable, from a's full JID), then a goes
    // offline. The set gets one answer, from H; the get's bounce is not a second one.
    let answer = r
        .wait_answer(&s, Duration::from_secs(20))
        .await
        .expect("the set is answered when the hibernation ends");
    expect_error(&answer, PROXY, "wait", "recipient-unavailable");
    wait_offline(&prosody, &["a"]).await;

    // The client comes back too late to resume: a new session, which serves.
    gate.open();
    until("a logs in anew", Duration::from_secs(20), || {
        a.reconnects() > 0
    })
    .await;
    assert_eq!(a.resumes(), 0);
    routable_and_answered_once(&mut r, &g, &s).await;
    assert!(a.exchange(&s).is_none() && a.exchange(&g).is_none());
    prosody.assert_no_tracebacks();
}

#[tokio::test]
async fn the_only_resource_hibernating_is_refused_at_once_until_it_resumes() {
    let prosody = smacks_server(60);
    let gate = Gate::start(&prosody.addr()).await;
    let a = through(&gate).await;
    let mut r = requester(&prosody, "r").await;
    wait_routable(&mut r, PROXY, &["a"]).await;

    gate.close();
    let listing = wait_hibernating(&prosody, "a", true).await;
    assert!(listing.contains("0 eligible, 1 hibernating"), "{listing}");
    let asked = Instant::now();
    let answer = r.must_request(request("while-away", false), ANSWER).await;
    expect_error(&answer, PROXY, "wait", "service-unavailable");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "refused at once, not queued: {:?}",
        asked.elapsed()
    );

    gate.open();
    until("a resumes its stream", ANSWER, || a.resumes() > 0).await;
    wait_hibernating(&prosody, "a", false).await;
    let answer = r.must_request(request("after", true), ANSWER).await;
    assert_answered_by(&answer, "a");
    assert_eq!(
        a.exchange("while-away").map(|e| e.request.id().to_owned()),
        None
    );
    prosody.assert_no_tracebacks();
}
