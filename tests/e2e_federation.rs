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
/// `r`'s get `id` to the far proxy is answered, by the implementing resource /a.
async fn served_by_a(r: &mut Xmpp, id: &str) {
    let answer = r
        .must_request(get(FAR_PROXY, id, test_payload(id)), FAR_ANSWER)
        .await;
    assert_eq!(
        answered_by(&answer).as_deref(),
        Some("a"),
        "{}",
        iq_xml(&answer)
    );
}

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

// b. Users of server B (remote to the component's server) are served: their requests
// cross s2s to the component, go on to the implementing client, and the answers come back
// to each of them.
#[tokio::test]
async fn users_of_another_server_are_served() {
    let fed = federation(&[]);
    let imp = far_implementer(&fed, "a", Behaviour::Echo).await;
    let mut r = requester(&fed, "user@localhost/phone").await;
    wait_routable(&mut r, FAR_PROXY, &["a"]).await;
    let mut o = requester(&fed, "other@localhost/desk").await;

    for (x, id, set) in [(&mut r, "b-get", false), (&mut o, "b-set", true)] {
        let payload = test_payload(id);
        let iq = if set {
            Iq::Set {
                from: None,
                to: Some(jid(FAR_PROXY)),
                id: id.to_string(),
                payload: payload.clone(),
            }
        } else {
            get(FAR_PROXY, id, payload.clone())
        };
        let answer = x.must_request(iq, FAR_ANSWER).await;
        assert_eq!(
            answer.from().map(|j| j.to_string()).as_deref(),
            Some(FAR_PROXY),
            "{}",
            iq_xml(&answer)
        );
        assert_eq!(
            answered_by(&answer).as_deref(),
            Some("a"),
            "{}",
            iq_xml(&answer)
        );
        let ex = imp.exchange(id).expect("forwarded");
        assert_eq!(
            addresses(&ex).0,
            format!("{FAR_PROXY}/{}", x.jid),
            "the JAT carries the remote requester's full JID"
        );
    }
    fed.assert_no_tracebacks();
}

// c. client_proxy_allow = { A's domain, one bare JID of B }: a user of B not on the list
// gets forbidden (auth) for requests, messages and subscriptions, and the implementing
// client (itself on B: the target is always allowed) never sees any of it; a local user
// and the listed JID are served.
#[tokio::test]
async fn allow_list_keeps_other_servers_out() {
    let fed = federation(&[&format!(
        "client_proxy_allow = {{ {FAR:?}, \"other@localhost\" }}"
    )]);
    let imp = far_implementer(&fed, "a", Behaviour::Echo).await;
    let mut local = requester(&fed, &format!("user@{FAR}/abc")).await;
    // The target's presence came through although its domain is not on the list.
    wait_routable(&mut local, FAR_PROXY, &["a"]).await;
    let mut listed = requester(&fed, "other@localhost/x").await;
    served_by_a(&mut listed, "listed-1").await;

    let mut stranger = requester(&fed, "user@localhost/x").await;
    let seen_before = imp.request_count();
    let refused = stranger
        .must_request(
            get(FAR_PROXY, "deny-get", test_payload("deny-get")),
            FAR_ANSWER,
        )
        .await;
    let error = expect_error(&refused, FAR_PROXY, "auth", "forbidden");
    eprintln!("forbidden text: {:?}", error_text(error));
    let set = Iq::Set {
        from: None,
        to: Some(jid(&format!("{FAR_PROXY}/anything"))),
        id: "deny-set".to_string(),
        payload: test_payload("deny-set"),
    };
    let refused = stranger.must_request(set, FAR_ANSWER).await;
    // An error reply comes from the address the request was sent to.
    expect_error(
        &refused,
        &format!("{FAR_PROXY}/anything"),
        "auth",
        "forbidden",
    );

    stranger.send(chat(FAR_PROXY, "deny-msg", "hello?")).await;
    let bounce = stranger
        .wait_for(FAR_ANSWER, |s| {
            as_message(s).is_some_and(|m| message_id(m) == Some("deny-msg"))
        })
        .await
        .expect("the message is refused");
    let m = as_message(&bounce).unwrap();
    let e = error_child(&m.payloads).expect("an error in the bounce");
    assert_eq!(
        (condition(&e), error_type(&e)),
        ("forbidden".to_string(), "auth".to_string()),
        "{}",
        stanza_xml(&bounce)
    );

    stranger
        .send_xml(&format!(
            "<presence xmlns='jabber:client' to='{FAR_PROXY}' type='subscribe' id='deny-sub'/>"
        ))
        .await;
    let refused = stranger
        .wait_for(FAR_ANSWER, |s| {
            presence_from(s, FAR_PROXY).is_some_and(|p| presence_kind(p) != "available")
        })
        .await
        .expect("an answer to the subscription");
    let p = as_presence(&refused).unwrap();
    assert_eq!(presence_kind(p), "error", "{}", stanza_xml(&refused));
    let e = error_child(&p.payloads).expect("an error in the presence");
    assert_eq!(condition(&e), "forbidden", "{}", stanza_xml(&refused));

    // The local user is still served, and nothing of the stranger's reached the target.
    served_by_a(&mut local, "local-1").await;
    assert_eq!(
        imp.request_count(),
        seen_before + 1,
        "only local-1 was forwarded"
    );
    let stranger_jat = format!("{FAR_PROXY}/user@localhost/x");
    for ex in imp.exchanges() {
        assert_ne!(
            addresses(&ex).0,
            stranger_jat,
            "forwarded: {:?}",
            ex.request
        );
    }
    for s in imp.others() {
        assert_ne!(
            from_of(&s).as_deref(),
            Some(stranger_jat.as_str()),
            "the target got {}",
            stanza_xml(&s)
        );
        assert!(
            !stanza_xml(&s).contains("deny-"),
            "the target got {}",
            stanza_xml(&s)
        );
    }
    fed.assert_no_tracebacks();
}

// d. client_proxy_max_pending_per_domain = 3 with a silent implementing resource: three
// users of server B (three bare JIDs) fill their server's share, the fourth gets
// resource-constraint (wait) at once and is not forwarded, while a local user of A is
// still forwarded; once the three time out, B's users get through again.
#[tokio::test]
async fn per_domain_cap_for_other_servers() {
    const TIMEOUT: u64 = 4;
    let fed = federation(&[
        &format!("client_proxy_timeout = {TIMEOUT}"),
        "client_proxy_max_pending_per_domain = 3",
    ]);
    let imp = far_implementer(&fed, "a", Behaviour::Echo).await;
    let mut local = requester(&fed, &format!("local1@{FAR}/x")).await;
    wait_routable(&mut local, FAR_PROXY, &["a"]).await;
    imp.set_behaviour(Behaviour::Silent);

    let mut remote = Vec::new();
    for n in 1..=4 {
        remote.push(fed.login(&format!("remote{n}@localhost/r")).await);
    }
    for (n, x) in remote.iter_mut().enumerate().take(3) {
        let id = format!("dom-{}", n + 1);
        x.send(get(FAR_PROXY, &id, test_payload(&id))).await;
        assert!(
            imp.wait_request(&id, FAR_ANSWER).await.is_some(),
            "{id} was forwarded"
        );
    }
    let t0 = Instant::now();
    remote[3]
        .send(get(FAR_PROXY, "dom-4", test_payload("dom-4")))
        .await;
    let refused = remote[3]
        .wait_answer("dom-4", FAR_ANSWER)
        .await
        .expect("the fourth is refused");
    let e = expect_error(&refused, FAR_PROXY, "wait", "resource-constraint");
    eprintln!(
        "dom-4 refused after {:?}: {:?}",
        t0.elapsed(),
        error_text(e)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(TIMEOUT),
        "refused at once, not at the timeout"
    );
    assert!(
        imp.exchange("dom-4").is_none(),
        "dom-4 must not be forwarded"
    );

    // A local user is not capped by the remote domain's share.
    local
        .send(get(FAR_PROXY, "local-1", test_payload("local-1")))
        .await;
    assert!(
        imp.wait_request("local-1", FAR_ANSWER).await.is_some(),
        "local-1 was forwarded while B's domain is full"
    );

    // The three time out (each answered once) and free the domain's share.
    for (n, x) in remote.iter_mut().enumerate().take(3) {
        let id = format!("dom-{}", n + 1);
        let late = x
            .wait_answer(&id, Duration::from_secs(TIMEOUT) + FAR_ANSWER)
            .await
            .unwrap_or_else(|| panic!("{id} answered at its timeout"));
        expect_error(&late, FAR_PROXY, "wait", "remote-server-timeout");
    }
    remote[3]
        .send(get(FAR_PROXY, "dom-5", test_payload("dom-5")))
        .await;
    assert!(
        imp.wait_request("dom-5", FAR_ANSWER).await.is_some(),
        "B's users get through again once their requests are answered"
    );
    fed.assert_no_tracebacks();
}
