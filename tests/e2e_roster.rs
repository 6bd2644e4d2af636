//! End-to-end tests of the zero-step setup against a real Prosody (see tests/support): the
//! module keeps the component on the roster of a target on this server
//! (`client_proxy_manage_roster`, on by default; lua/roster.lib.lua), so that requests route
//! on a fresh server with no roster command, also when the implementing client answers
//! every subscription request `unsubscribed` as Smack 4.2+ (and so Jicofo) does; and with
//! the option off, the module changes no roster (the client's answer decides, as before).
//! A target on another server is asked again until it approves.
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account). Every test starts its own Prosody (fresh data: nothing prepares a roster) and
//! ends by checking the log for Lua tracebacks. Plain `#[tokio::test]` (current-thread
//! runtime): see tests/support/mod.rs.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::time::Duration;

use support::client::*;
use support::federation::*;
use support::implementer::*;
use support::setup::*;
use support::Prosody;
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

/// The info line the module logs when it puts H on T's roster (operator-facing).
fn added_line() -> String {
    format!("Put {PROXY} on the roster of {TARGET}")
}

/// A started implementing resource of T that answers every subscription request
/// `unsubscribed`, as Smack 4.2+ does.
async fn smack_like(prosody: &Prosody, resource: &str) -> Implementer {
    let mut i = Implementer::new(&prosody.addr(), TARGET_USER, PASSWORD, resource, PROXY)
        .refuses_subscriptions();
    i.start().await;
    i
}

/// Sends requests (ids `<prefix>-<n>`) until one is answered by `resource`; panics after
/// `wait`. Returns how long it took.
async fn routed_within(r: &mut Xmpp, prefix: &str, resource: &str, wait: Duration) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("{prefix}-{n}");
        let answer = r
            .request(get(PROXY, &id, test_payload(&id)), Duration::from_secs(2))
            .await;
        if answer.as_ref().and_then(answered_by).as_deref() == Some(resource) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < wait,
            "{prefix}: no request routed to /{resource} within {wait:?}; last answer: {:?}",
            answer.as_ref().map(iq_xml)
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// H's subscription on T's roster ("from", "both", ...; None: no entry), as another
/// session of T (without presence: no resource of the proxy) fetches it.
async fn roster_entry(prosody: &Prosody, session: &str) -> Option<String> {
    let mut check = login(prosody, &format!("{TARGET}/{session}")).await;
    let roster = fetch_roster(&mut check, session).await;
    check.close().await;
    roster_subscription(&roster, PROXY)
}

/// A fresh server, no roster preparation, a client that refuses every subscription
/// request: the module put H on T's roster at start, so requests route within seconds of
/// the client's login and the client never sees a subscription request; after a restart
/// of Prosody they route again, with the entry as stored (not added again).
#[tokio::test]
async fn fresh_server_routes_with_a_client_that_refuses_subscriptions() {
    let mut prosody = server(&[]);
    let added = prosody.wait_log(&added_line(), 1, ANSWER).await;
    assert!(
        added[0].contains("\tinfo\t") && added[0].contains("\"from\""),
        "{added:?}"
    );
    let mut r = requester(&prosody, "abc").await;
    let a = smack_like(&prosody, "a").await;
    let took = routed_within(&mut r, "login", "a", Duration::from_secs(10)).await;
    eprintln!(
        "Prosody {}: routed {took:?} after the client's login",
        prosody.version().unwrap_or_default()
    );
    assert_eq!(
        roster_entry(&prosody, "check-1").await.as_deref(),
        Some("from")
    );

    // Blocks this (single) runtime thread for the restart; tokio-xmpp reconnects the
    // clients by itself afterwards.
    prosody.restart();
    let took = routed_within(&mut r, "restart", "a", Duration::from_secs(30)).await;
    eprintln!("routed {took:?} after the restart");
    assert_eq!(
        prosody.log_lines(&added_line()).len(),
        1,
        "the stored entry is kept, not added again"
    );
    assert_eq!(
        a.refused(),
        0,
        "the client saw a subscription request: Prosody should answer it"
    );
    prosody.assert_no_tracebacks();
}

/// The entry goes missing while the server runs: removed from T's roster by another of T's
/// sessions, then the subscription revoked by the client (`unsubscribed`): each time H is
/// put back (logged) and requests route again; the client never sees a request.
#[tokio::test]
async fn a_removed_or_revoked_entry_is_put_back() {
    let prosody = server(&[]);
    let a = smack_like(&prosody, "a").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["a"]).await;

    let mut admin = login(&prosody, &format!("{TARGET}/admin")).await;
    let remove = Iq::Set {
        from: None,
        to: None,
        id: "remove".to_string(),
        payload: xml(&format!(
            "<query xmlns='jabber:iq:roster'><item jid='{PROXY}' subscription='remove'/></query>"
        )),
    };
    let answer = admin.must_request(remove, ANSWER).await;
    assert_eq!(iq_type(&answer), "result", "{}", iq_xml(&answer));
    prosody.wait_log(&added_line(), 2, ANSWER).await;
    routed_within(&mut r, "removed", "a", Duration::from_secs(10)).await;
    let roster = fetch_roster(&mut admin, "after-remove").await;
    assert_eq!(roster_subscription(&roster, PROXY).as_deref(), Some("from"));

    // A second repair soon after the first waits (10 s): a client that kept revoking
    // would not make a loop.
    a.send(Presence::new(PresenceType::Unsubscribed).with_to(jid(PROXY)));
    prosody
        .wait_log(&added_line(), 3, Duration::from_secs(30))
        .await;
    routed_within(&mut r, "revoked", "a", Duration::from_secs(10)).await;
    let roster = fetch_roster(&mut admin, "after-revoke").await;
    assert_eq!(roster_subscription(&roster, PROXY).as_deref(), Some("from"));
    assert_eq!(a.refused(), 0, "the client saw a subscription request");
    admin.close().await;
    prosody.assert_no_tracebacks();
}

/// `client_proxy_manage_roster = false`: today's behaviour. The module changes no roster;
/// its subscription request reaches the client, which refuses it, and nothing routes.
#[tokio::test]
async fn manage_roster_off_changes_no_roster() {
    let prosody = server(&["client_proxy_manage_roster = false"]);
    let a = smack_like(&prosody, "a").await;
    let deadline = Instant::now() + ANSWER;
    while a.refused() == 0 {
        assert!(
            Instant::now() < deadline,
            "the subscription request did not reach the client"
        );
        sleep(Duration::from_millis(50)).await;
    }
    prosody
        .wait_log(&format!("{TARGET} revoked the subscription"), 1, ANSWER)
        .await;
    let mut r = requester(&prosody, "abc").await;
    let iq = r
        .must_request(get(PROXY, "refused", test_payload("refused")), ANSWER)
        .await;
    expect_error(&iq, PROXY, "cancel", "service-unavailable");
    assert_eq!(roster_entry(&prosody, "check").await, None);
    assert!(
        prosody.log_lines(&added_line()).is_empty(),
        "the module changed a roster"
    );
    assert!(
        prosody.log_lines("on the roster of").is_empty(),
        "the module spoke of a roster"
    );
    prosody.assert_no_tracebacks();
}

/// A target on another server that is down when the component first asks: the component
/// asks again (10 s after the first, doubling) until approved, so requests route once that
/// server and the implementing client are up, with no reload. (With
/// `client_proxy_manage_roster = false` nothing routes: the one subscribe at start is lost.)
#[tokio::test]
async fn remote_target_is_asked_again_until_approved() {
    let mut fed = federation_b_later(&[]);
    let mut r = fed.login(&format!("user@{FAR}/abc")).await;
    r.presence(None).await;
    fed.b.start();
    let mut a = Implementer::new(&fed.b.addr(), TARGET_USER, PASSWORD, "a", FAR_PROXY);
    a.start().await;
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("late-{n}");
        let answer = r
            .request(get(FAR_PROXY, &id, test_payload(&id)), FAR_ANSWER)
            .await;
        if answer.as_ref().and_then(answered_by).as_deref() == Some("a") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "not routed within 40 s of the target's server start; last answer: {:?}",
            answer.as_ref().map(iq_xml)
        );
        sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "routed {:?} after the target's server started",
        started.elapsed()
    );
    assert_eq!(a.approved(), 1, "approved once; no request after that");
    fed.assert_no_tracebacks();
}
