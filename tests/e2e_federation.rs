//! End-to-end tests of the module on the open federation: two real Prosody servers
//! talking s2s (dialback, no TLS) on the loopback interface (see tests/support/federation.rs).
//!
//! Server A (`a.localhost`, 127.0.0.2) hosts the component `proxy.a.localhost` and local
//! users; server B (`localhost`, 127.0.0.1) hosts the implementing client's account
//! `service@localhost` and users who are remote to A. Every request, answer, presence and
//! subscription between the component and B crosses s2s.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::time::Duration;

use support::client::*;
use support::federation::*;
use support::implementer::*;
use support::setup::{wait_routable, PASSWORD, TARGET_USER};
use tokio::time::Instant;
use tokio_xmpp::parsers::iq::Iq;

/// A started implementing resource `service@localhost/<resource>` on server B, serving
/// the component on server A.
async fn far_implementer(fed: &Federation, resource: &str, behaviour: Behaviour) -> Implementer {
    let mut i = Implementer::new(&fed.b.addr(), TARGET_USER, PASSWORD, resource, FAR_PROXY)
        .behaviour(behaviour);
    i.start().await;
    i
}

/// A logged-in requester with initial presence, on the server of its domain.
async fn requester(fed: &Federation, full_jid: &str) -> Xmpp {
    let mut r = fed.login(full_jid).await;
    r.presence(None).await;
    r
}

/// `from` and `to` of a forwarded request, as the implementing client got it.
fn addresses(ex: &Exchange) -> (String, String) {
    let from = ex.request.from().map(|j| j.to_string()).unwrap_or_default();
    let to = ex.request.to().map(|j| j.to_string()).unwrap_or_default();
    (from, to)
}

// a. The implementing client's account lives on server B, the component on server A:
// the subscription, a request of a user of A and its answer, and the answer owed when the
// resource holding a request goes offline all cross the federation.
#[tokio::test]
async fn implementing_client_on_another_server() {
    const TIMEOUT: u64 = 30;
    let fed = federation(&[&format!("client_proxy_timeout = {TIMEOUT}")]);
    let mut imp = far_implementer(&fed, "a", Behaviour::Echo).await;
    let mut r = requester(&fed, &format!("user@{FAR}/abc")).await;
    // Routable only once the subscription went to B, was approved there, and the
    // resource's presence came back to A.
    wait_routable(&mut r, FAR_PROXY, &["a"]).await;
    assert_eq!(
        imp.approved(),
        1,
        "the subscription reached B and was approved once"
    );

    let payload = xml("<query xmlns='urn:example:fed'><item>across</item></query>");
    let answer = r
        .must_request(get(FAR_PROXY, "fed-1", payload.clone()), FAR_ANSWER)
        .await;
    assert_eq!(
        answer.from().map(|j| j.to_string()).as_deref(),
        Some(FAR_PROXY),
        "the answer comes from the component: {}",
        iq_xml(&answer)
    );
    assert_eq!(
        answered_by(&answer).as_deref(),
        Some("a"),
        "{}",
        iq_xml(&answer)
    );
    let ex = imp.exchange("fed-1").expect("the request reached B");
    assert_eq!(
        addresses(&ex),
        (
            format!("{FAR_PROXY}/user@{FAR}/abc"),
            "service@localhost/a".to_string()
        ),
        "JAT-ed from A's component to the resource on B"
    );
    match (&ex.request, iq_payload(&answer)) {
        (Iq::Get { payload: got, .. }, Some(echo)) => {
            assert!(same_xml(got, &payload), "payload intact across s2s");
            let inner = echo.children().next().expect("the echoed payload");
            assert!(
                same_xml(inner, &payload),
                "answer payload intact across s2s"
            );
        }
        other => panic!("unexpected request/answer: {other:?}"),
    }

    // The resource takes a request and goes offline without answering: its unavailable
    // presence crosses s2s and the requester is answered at once, not at the timeout.
    imp.set_behaviour(Behaviour::Silent);
    r.send(get(FAR_PROXY, "gone-1", test_payload("gone-1")))
        .await;
    assert!(
        imp.wait_request("gone-1", FAR_ANSWER).await.is_some(),
        "gone-1 reached B"
    );
    let t0 = Instant::now();
    imp.stop().await;
    let lost = r
        .wait_answer("gone-1", FAR_ANSWER)
        .await
        .expect("an answer to gone-1 once its resource went offline");
    expect_error(&lost, FAR_PROXY, "wait", "recipient-unavailable");
    assert!(
        t0.elapsed() < Duration::from_secs(TIMEOUT),
        "answered by the offline path, not the timeout ({:?})",
        t0.elapsed()
    );
    // No resource is left: the component knows it across the federation.
    let none = r
        .must_request(get(FAR_PROXY, "none-1", test_payload("none-1")), FAR_ANSWER)
        .await;
    expect_error(&none, FAR_PROXY, "cancel", "service-unavailable");
    fed.assert_no_tracebacks();
}
