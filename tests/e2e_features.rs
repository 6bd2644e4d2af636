//! End-to-end tests of what the module adds to the original (README: "Messages",
//! "Requests from the implementing client", "Presence", the switches that restore the
//! original's answers, and admission by capability), against a real Prosody with real
//! clients (see tests/support).
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account), U = user@localhost/abc. Every test starts its own Prosody and ends by
//! checking the log for Lua tracebacks.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::client::*;
use support::implementer::*;
use support::setup::*;
use support::shell::*;
use support::{ComponentSpec, Prosody};
use tokio::time::{sleep, Instant};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::Stanza;

/// U's JAT address at the proxy (plain JAT).
const U_AT_PROXY: &str = "proxy.localhost/user@localhost/abc";

/// A logged-in `user@localhost/<resource>` that fetched its roster and sent presence.
async fn user(prosody: &Prosody, resource: &str) -> Xmpp {
    subscriber(
        &prosody.addr(),
        &format!("user@localhost/{resource}"),
        PASSWORD,
    )
    .await
}

/// Waits for a presence from the bare component host, panicking with `what` if none comes.
async fn presence_from_proxy(u: &mut Xmpp, what: &str) -> (String, Stanza) {
    let s = u
        .wait_for(ANSWER, |s| presence_from(s, PROXY).is_some())
        .await
        .unwrap_or_else(|| panic!("{what}: no presence from {PROXY} within {ANSWER:?}"));
    (
        presence_kind(presence_from(&s, PROXY).unwrap()).to_string(),
        s,
    )
}

/// Asserts the next presence from H is of `kind` (what the user sees in order).
async fn expect_presence(u: &mut Xmpp, kind: &str, what: &str) {
    let (got, s) = presence_from_proxy(u, what).await;
    assert_eq!(got, kind, "{what}: {}", stanza_xml(&s));
}

/// Asserts no presence from H arrives within [`QUIET`] (others stay queued).
async fn expect_no_presence(u: &mut Xmpp, what: &str) {
    if let Some(s) = u
        .wait_for(QUIET, |s| presence_from(s, PROXY).is_some())
        .await
    {
        panic!("{what}: unexpected {}", stanza_xml(&s));
    }
}

// 1. A chat conversation: 5 messages from U land on one resource (of 3), from H/<U>, with
// their bodies; that resource's replies to H/<U> reach U from H.
#[tokio::test]
async fn chat_conversation_sticks_to_one_resource() {
    let prosody = server(&[]);
    let imps = [
        implementer(&prosody, "a").await,
        implementer(&prosody, "b").await,
        implementer(&prosody, "c").await,
    ];
    let mut u = user(&prosody, "abc").await;
    wait_routable(&mut u, PROXY, &["a", "b", "c"]).await;
    let mut inboxes: Vec<Inbox> = imps.iter().map(|_| Inbox::new()).collect();
    for (imp, inbox) in imps.iter().zip(inboxes.iter_mut()) {
        inbox.clear(imp);
    }

    let bodies: Vec<String> = (1..=5)
        .map(|n| format!("message {n}: x & y <z> \"q\" 'a' ünïcödé ✓"))
        .collect();
    for (n, text) in bodies.iter().enumerate() {
        u.send(chat(PROXY, &format!("m-{}", n + 1), text)).await;
    }

    // Collect the five where they landed.
    let deadline = Instant::now() + ANSWER;
    let mut got: Vec<(usize, Stanza)> = Vec::new();
    while got.len() < 5 && Instant::now() < deadline {
        for (k, (imp, inbox)) in imps.iter().zip(inboxes.iter_mut()).enumerate() {
            while let Some(s) = inbox
                .wait_for(imp, Duration::ZERO, |s| as_message(s).is_some())
                .await
            {
                got.push((k, s));
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    let texts: Vec<String> = got.iter().map(|(_, s)| stanza_xml(s)).collect();
    assert_eq!(got.len(), 5, "5 messages should arrive: {texts:#?}");
    let holders: std::collections::BTreeSet<usize> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        holders.len(),
        1,
        "a conversation must stay on one resource: {texts:#?}"
    );
    let k = *holders.iter().next().unwrap();
    let holder = &imps[k];
    for (n, (_, s)) in got.iter().enumerate() {
        let m = as_message(s).unwrap();
        assert_eq!(
            m.from.as_ref().map(|j| j.to_string()).as_deref(),
            Some(U_AT_PROXY),
            "{}",
            stanza_xml(s)
        );
        assert_eq!(
            m.to.as_ref().map(|j| j.to_string()),
            Some(holder.full_jid()),
            "{}",
            stanza_xml(s)
        );
        assert_eq!(m.type_, MessageType::Chat, "{}", stanza_xml(s));
        assert_eq!(body(m), Some(bodies[n].as_str()), "in order, intact");
        assert_eq!(message_id(m), Some(format!("m-{}", n + 1).as_str()));
    }

    // The resource answers each, to U's JAT address.
    for n in 1..=3 {
        holder.send(chat(
            U_AT_PROXY,
            &format!("r-{n}"),
            &format!("reply {n} & <ok>"),
        ));
    }
    for n in 1..=3 {
        let id = format!("r-{n}");
        let s = u
            .wait_for(ANSWER, |s| {
                as_message(s).is_some_and(|m| message_id(m) == Some(id.as_str()))
            })
            .await
            .unwrap_or_else(|| panic!("U got no reply {id}"));
        let m = as_message(&s).unwrap();
        assert_eq!(
            m.from.as_ref().map(|j| j.to_string()).as_deref(),
            Some(PROXY),
            "{}",
            stanza_xml(&s)
        );
        assert_eq!(
            m.to.as_ref().map(|j| j.to_string()).as_deref(),
            Some("user@localhost/abc")
        );
        assert_eq!(body(m), Some(format!("reply {n} & <ok>").as_str()));
        assert!(is_chat(m));
    }
    // Nothing else: no duplicate deliveries to U, nothing to the other resources.
    let extra = from_host(&u.collect(QUIET).await, PROXY);
    assert!(extra.is_empty(), "U got more: {:?}", extra);
    for (j, (imp, inbox)) in imps.iter().zip(inboxes.iter_mut()).enumerate() {
        let more: Vec<String> = inbox
            .collect(imp, Duration::ZERO)
            .await
            .iter()
            .filter(|s| as_message(s).is_some())
            .map(stanza_xml)
            .collect();
        assert!(more.is_empty(), "resource {j} got more messages: {more:?}");
    }
    assert_eq!(u.disconnects, 0);
    prosody.assert_no_tracebacks();
}

// 2. Requests from the implementing client: /a and /b use the same id towards U; U sees two
// requests from H with different ids, answers both, and each answer goes back to the
// resource that asked, with its own id, from H/<U>.
#[tokio::test]
async fn outbound_requests_with_the_same_id_return_to_their_resource() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let b = implementer(&prosody, "b").await;
    let mut u = user(&prosody, "abc").await;
    wait_routable(&mut u, PROXY, &["a", "b"]).await;
    let (mut inbox_a, mut inbox_b) = (Inbox::new(), Inbox::new());
    inbox_a.clear(&a);
    inbox_b.clear(&b);

    a.send(get(U_AT_PROXY, "same", test_payload("from-a")));
    b.send(get(U_AT_PROXY, "same", test_payload("from-b")));

    // U sees two requests from H, with ids of the proxy's own.
    let mut requests = Vec::new();
    for _ in 0..2 {
        let s = u
            .wait_for(ANSWER, |s| {
                as_iq(s).is_some_and(|iq| matches!(iq, Iq::Get { .. }) && is_from_host(s, PROXY))
            })
            .await
            .expect("U should get two requests from H");
        requests.push(as_iq(&s).unwrap().clone());
    }
    let ids: Vec<String> = requests.iter().map(|iq| iq.id().to_string()).collect();
    assert_ne!(ids[0], ids[1], "two requests, two ids: {ids:?}");
    for iq in &requests {
        assert_eq!(iq.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
        assert_eq!(
            iq.to().map(|j| j.to_string()).as_deref(),
            Some("user@localhost/abc")
        );
        assert!(
            iq.id().starts_with("cp") && iq.id()[2..].chars().all(|c| c.is_ascii_hexdigit()),
            "the proxy's own id (cp + hex): {}",
            iq_xml(iq)
        );
    }
    // U answers each with a result that names the request it answers (its payload's n).
    let mut n_of_id = HashMap::new();
    for iq in requests.iter().rev() {
        let payload = iq_payload(iq).expect("payload").clone();
        let n = payload.attr("n").expect("test payload n").to_string();
        n_of_id.insert(iq.id().to_string(), n.clone());
        let answer = xml(&format!(
            "<answered xmlns='urn:example:client-proxy-test' n='{n}'/>"
        ));
        u.send(Iq::Result {
            from: None,
            to: iq.from().cloned(),
            id: iq.id().to_string(),
            payload: Some(answer),
        })
        .await;
    }

    for (imp, inbox, n) in [(&a, &mut inbox_a, "from-a"), (&b, &mut inbox_b, "from-b")] {
        let s = inbox
            .wait_for(imp, ANSWER, |s| {
                as_iq(s).is_some_and(|iq| matches!(iq, Iq::Result { .. } | Iq::Error { .. }))
            })
            .await
            .unwrap_or_else(|| panic!("{} got no answer", imp.full_jid()));
        let iq = as_iq(&s).unwrap();
        assert_eq!(iq.id(), "same", "its own id back: {}", iq_xml(iq));
        assert_eq!(
            iq.from().map(|j| j.to_string()).as_deref(),
            Some(U_AT_PROXY),
            "{}",
            iq_xml(iq)
        );
        assert_eq!(
            iq.to().map(|j| j.to_string()),
            Some(imp.full_jid()),
            "{}",
            iq_xml(iq)
        );
        let answered = iq_payload(iq).expect("the result's payload");
        assert_eq!(
            answered.attr("n"),
            Some(n),
            "{} got the answer to another resource's request: {}",
            imp.full_jid(),
            iq_xml(iq)
        );
        // Exactly one answer each.
        let more: Vec<String> = inbox
            .collect(imp, QUIET)
            .await
            .iter()
            .filter(|s| as_iq(s).is_some())
            .map(stanza_xml)
            .collect();
        assert!(more.is_empty(), "{} got more: {more:?}", imp.full_jid());
    }
    // An answer a second time (already answered): nobody gets it.
    let (id, _) = n_of_id.iter().next().unwrap();
    u.send(Iq::Result {
        from: None,
        to: Some(jid(PROXY)),
        id: id.clone(),
        payload: None,
    })
    .await;
    for (imp, inbox) in [(&a, &mut inbox_a), (&b, &mut inbox_b)] {
        let more: Vec<String> = inbox
            .collect(imp, QUIET)
            .await
            .iter()
            .filter(|s| as_iq(s).is_some())
            .map(stanza_xml)
            .collect();
        assert!(
            more.is_empty(),
            "a repeated answer reached {}: {more:?}",
            imp.full_jid()
        );
    }
    let extra = from_host(&u.collect(Duration::ZERO).await, PROXY);
    assert!(extra.is_empty(), "{:?}", extra);
    prosody.assert_no_tracebacks();
}

// 3. A user subscribes to H: subscribed, then available (a resource is online); the last
// resource going offline makes it unavailable, a resource coming back available again.
#[tokio::test]
async fn subscriber_follows_the_service_availability() {
    let prosody = server(&[]);
    let mut a = implementer(&prosody, "a").await;
    let mut b = implementer(&prosody, "b").await;
    let mut u = user(&prosody, "abc").await;
    wait_routable(&mut u, PROXY, &["a", "b"]).await;

    u.send_xml("<presence xmlns='jabber:client' type='subscribe' to='proxy.localhost'/>")
        .await;
    expect_presence(&mut u, "subscribed", "after subscribe").await;
    expect_presence(&mut u, "available", "after subscribed").await;
    let roster = fetch_roster(&mut u, "roster-after").await;
    assert_eq!(
        roster_subscription(&roster, PROXY).as_deref(),
        Some("to"),
        "U's roster: {}",
        iq_xml(&roster)
    );

    // One of two resources leaves: still available, nothing to tell.
    a.stop().await;
    expect_no_presence(&mut u, "one resource left, one online").await;
    // The last one leaves.
    b.stop().await;
    expect_presence(&mut u, "unavailable", "the last resource went offline").await;
    expect_no_presence(&mut u, "after unavailable").await;
    // One comes back.
    a.start().await;
    expect_presence(&mut u, "available", "a resource came back").await;
    b.start().await;
    expect_no_presence(&mut u, "a second resource came back").await;

    // A probe from the subscriber is answered with the availability.
    u.send_xml("<presence xmlns='jabber:client' type='probe' to='proxy.localhost'/>")
        .await;
    let (kind, s) = presence_from_proxy_any(&mut u, "after probe").await;
    assert_eq!(kind, "available", "{}", stanza_xml(&s));

    // Unsubscribe: unavailable, and no more news.
    u.send_xml("<presence xmlns='jabber:client' type='unsubscribe' to='proxy.localhost'/>")
        .await;
    let (kind, s) = presence_from_proxy_any(&mut u, "after unsubscribe").await;
    assert_eq!(kind, "unavailable", "{}", stanza_xml(&s));
    a.stop().await;
    b.stop().await;
    let extra = u.collect(QUIET).await;
    let from_proxy: Vec<String> = extra
        .iter()
        .filter(|s| as_presence(s).is_some() && is_from_host(s, PROXY))
        .map(stanza_xml)
        .collect();
    assert!(
        from_proxy.is_empty(),
        "an unsubscribed user is still told: {from_proxy:?}"
    );
    assert_eq!(u.disconnects, 0);
    prosody.assert_no_tracebacks();
}

/// Waits for a presence from the component host or a full JID at it (a probe is answered
/// to the prober's full JID, from the host).
async fn presence_from_proxy_any(u: &mut Xmpp, what: &str) -> (String, Stanza) {
    let s = u
        .wait_for(ANSWER, |s| {
            as_presence(s).is_some() && is_from_host(s, PROXY)
        })
        .await
        .unwrap_or_else(|| panic!("{what}: no presence from {PROXY} within {ANSWER:?}"));
    (presence_kind(as_presence(&s).unwrap()).to_string(), s)
}

// 4. The subscriber list survives a restart. Deterministic order first: the resource is
// offline across the restart, U reconnects and its server probes H (answered
// "unavailable", not "unsubscribed"); then the resource comes online and U is told
// "available". Then a restart with everyone reconnecting by themselves: U ends up told
// "available" (which way is printed).
#[tokio::test]
async fn subscribers_survive_a_restart() {
    let mut prosody = server(&[]);
    let mut a = implementer(&prosody, "a").await;
    let mut u = user(&prosody, "abc").await;
    wait_routable(&mut u, PROXY, &["a"]).await;
    u.send_xml("<presence xmlns='jabber:client' type='subscribe' to='proxy.localhost'/>")
        .await;
    expect_presence(&mut u, "subscribed", "after subscribe").await;
    expect_presence(&mut u, "available", "after subscribed").await;
    a.stop().await;
    expect_presence(&mut u, "unavailable", "a went offline").await;

    // Restart with the resource offline. U reconnects by itself; a new session needs its
    // roster and presence again, and its initial presence makes its server probe H.
    let before = u.reconnects;
    prosody.restart();
    await_reconnect(&mut u, before, Duration::from_secs(30)).await;
    let _ = u.take_queued();
    let roster = fetch_roster(&mut u, "roster-restart-1").await;
    assert_eq!(
        roster_subscription(&roster, PROXY).as_deref(),
        Some("to"),
        "U's roster after the restart: {}",
        iq_xml(&roster)
    );
    u.presence(None).await;
    let (kind, s) = presence_from_proxy_any(&mut u, "probe at U's login after restart").await;
    assert_eq!(
        kind,
        "unavailable",
        "H answers the probe of a subscriber with its availability: {}",
        stanza_xml(&s)
    );
    // The answer "unsubscribed" (a non-subscriber's) would have ended U's subscription.
    let roster = fetch_roster(&mut u, "roster-restart-2").await;
    assert_eq!(
        roster_subscription(&roster, PROXY).as_deref(),
        Some("to"),
        "{}",
        iq_xml(&roster)
    );
    // The resource comes online: the restored list is told.
    a.start().await;
    expect_presence(&mut u, "available", "a came online after the restart").await;

    // Restart again, everyone online: both reconnect by themselves, in either order.
    let before = u.reconnects;
    prosody.restart();
    await_reconnect(&mut u, before, Duration::from_secs(30)).await;
    let queued: Vec<String> = u.take_queued().iter().map(stanza_xml).collect();
    fetch_roster(&mut u, "roster-restart-3").await;
    u.presence(None).await;
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        let Some(s) = u
            .wait_for(left, |s| as_presence(s).is_some() && is_from_host(s, PROXY))
            .await
        else {
            panic!("U was not told available within 20 s of its login; saw {seen:?}; queued before login {queued:?}");
        };
        let kind = presence_kind(as_presence(&s).unwrap()).to_string();
        seen.push(format!("{kind} to {}", to_of(&s).unwrap_or_default()));
        assert_ne!(kind, "unsubscribed", "{}", stanza_xml(&s));
        if kind == "available" {
            break;
        }
    }
    eprintln!(
        "second restart: U saw {seen:?} ({})",
        if seen.len() == 1 {
            "the probe at login was answered available"
        } else {
            "the probe was answered unavailable, then the resource came online"
        }
    );
    assert!(a.is_running());
    prosody.assert_no_tracebacks();
}

// 5. Each switch off restores the original's answer: messages -> feature-not-implemented,
// presence (subscribe) -> bad-request, outbound -> feature-not-implemented.
#[tokio::test]
async fn switches_off_restore_the_original_answers() {
    const NO_MSG: &str = "nomsg.localhost";
    const NO_PRES: &str = "nopres.localhost";
    const NO_OUT: &str = "noout.localhost";
    let prosody = Prosody::start_with_users(
        &[
            ComponentSpec::new(
                NO_MSG,
                "service@localhost",
                &["client_proxy_messages = false"],
            ),
            ComponentSpec::new(
                NO_PRES,
                "service@localhost",
                &["client_proxy_presence = false"],
            ),
            ComponentSpec::new(
                NO_OUT,
                "service@localhost",
                &["client_proxy_outbound = false"],
            ),
        ],
        &[(TARGET_USER, PASSWORD), ("user", PASSWORD)],
    );
    // One resource, online for NO_OUT (it approves that subscription; the others stay
    // pending, which these answers do not need).
    let mut a = Implementer::new(&prosody.addr(), TARGET_USER, PASSWORD, "a", NO_OUT);
    a.start().await;
    let mut u = user(&prosody, "abc").await;
    wait_routable(&mut u, NO_OUT, &["a"]).await;
    let mut inbox = Inbox::new();
    inbox.clear(&a);

    // messages = false
    u.send(chat(NO_MSG, "m-off", "hello")).await;
    let s = u
        .wait_for(ANSWER, |s| {
            as_message(s).is_some_and(|m| m.type_ == MessageType::Error) && is_from_host(s, NO_MSG)
        })
        .await
        .expect("an error message from the component with messages off");
    let m = as_message(&s).unwrap();
    let e = error_child(&m.payloads).unwrap_or_else(|| panic!("no <error/>: {}", stanza_xml(&s)));
    assert_eq!(
        condition(&e),
        "feature-not-implemented",
        "{}",
        stanza_xml(&s)
    );
    assert_eq!(message_id(m), Some("m-off"));
    assert_eq!(
        m.from.as_ref().map(|j| j.to_string()).as_deref(),
        Some(NO_MSG)
    );

    // presence = false
    u.send_xml(
        "<presence xmlns='jabber:client' type='subscribe' id='s-off' to='nopres.localhost'/>",
    )
    .await;
    let s = u
        .wait_for(ANSWER, |s| {
            as_presence(s).is_some_and(|p| p.type_ == PresenceType::Error)
                && is_from_host(s, NO_PRES)
        })
        .await
        .expect("an error presence from the component with presence off");
    let p = as_presence(&s).unwrap();
    let e = error_child(&p.payloads).unwrap_or_else(|| panic!("no <error/>: {}", stanza_xml(&s)));
    assert_eq!(condition(&e), "bad-request", "{}", stanza_xml(&s));
    assert_eq!(error_type(&e), "cancel", "{}", stanza_xml(&s));
    assert_eq!(p.id.as_deref(), Some("s-off"));
    let others: Vec<String> = u
        .collect(QUIET)
        .await
        .iter()
        .filter(|s| is_from_host(s, NO_PRES))
        .map(stanza_xml)
        .collect();
    assert!(
        others.is_empty(),
        "nothing but the error with presence off: {others:?}"
    );

    // outbound = false
    let to = format!("{NO_OUT}/user@localhost/abc");
    a.send(get(&to, "o-off", test_payload("o-off")));
    let s = inbox
        .wait_for(&a, ANSWER, |s| {
            as_iq(s).is_some_and(|iq| iq.id() == "o-off" && !matches!(iq, Iq::Get { .. }))
        })
        .await
        .expect("an answer to the outbound request with outbound off");
    let iq = as_iq(&s).unwrap();
    let e = iq_error(iq).unwrap_or_else(|| panic!("not an error: {}", iq_xml(iq)));
    assert_eq!(condition(e), "feature-not-implemented", "{}", iq_xml(iq));
    assert_eq!(iq.from().map(|j| j.to_string()), Some(to.clone()));
    let leaked: Vec<String> = u
        .collect(QUIET)
        .await
        .iter()
        .filter(|s| as_iq(s).is_some() && is_from_host(s, NO_OUT))
        .map(stanza_xml)
        .collect();
    assert!(leaked.is_empty(), "the request reached U: {leaked:?}");
    prosody.assert_no_tracebacks();
}

// 6. The implementing client writes to H/<a user who does not exist>: the server bounces
// it; the bounce comes back to the resource at most once, is not answered, and nothing
// loops, also when the resource answers the bounce with an error of its own.
#[tokio::test]
async fn bounce_of_a_message_to_nobody_does_not_loop() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let mut u = user(&prosody, "abc").await;
    wait_routable(&mut u, PROXY, &["a"]).await;
    let mut inbox = Inbox::new();
    inbox.clear(&a);
    let log_before = prosody.log_text().lines().count();

    const NOBODY: &str = "proxy.localhost/nobody@localhost/x";
    a.send(chat(NOBODY, "to-nobody", "anyone there?"));
    let got = inbox.collect(&a, Duration::from_secs(2)).await;
    let messages: Vec<&Stanza> = got.iter().filter(|s| as_message(s).is_some()).collect();
    let texts: Vec<String> = messages.iter().map(|s| stanza_xml(s)).collect();
    assert!(
        messages.len() <= 1,
        "the resource should get at most the bounce: {texts:#?}"
    );
    if let Some(s) = messages.first() {
        let m = as_message(s).unwrap();
        assert_eq!(m.type_, MessageType::Error, "{}", stanza_xml(s));
        assert_eq!(message_id(m), Some("to-nobody"), "{}", stanza_xml(s));
        assert_eq!(
            m.from.as_ref().map(|j| j.to_string()).as_deref(),
            Some(NOBODY),
            "the bounce comes from the JAT address written to: {}",
            stanza_xml(s)
        );
        let e = error_child(&m.payloads);
        eprintln!(
            "bounce at the resource: {} ({:?})",
            stanza_xml(s),
            e.as_ref().map(condition)
        );
        // The resource answers the bounce with an error (a careless client): still no loop.
        a.send(
            Stanza::try_from(xml(
                "<message xmlns='jabber:client' type='error' id='to-nobody' \
                 to='proxy.localhost/nobody@localhost/x'><error type='cancel'>\
                 <undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            ))
            .unwrap(),
        );
        let again: Vec<String> = inbox
            .collect(&a, Duration::from_secs(2))
            .await
            .iter()
            .filter(|s| as_message(s).is_some())
            .map(stanza_xml)
            .collect();
        assert!(
            again.is_empty(),
            "an error to a bounce came back: {again:?}"
        );
    } else {
        eprintln!("no bounce reached the resource");
    }
    // The user saw nothing of it.
    let extra = from_host(&u.collect(QUIET).await, PROXY);
    assert!(extra.is_empty(), "{:?}", extra);
    // Nothing kept going: the log grows no more once things have settled.
    let settled = prosody.log_text().lines().count();
    sleep(Duration::from_secs(2)).await;
    let later = prosody.log_text();
    let nobody_lines = later
        .lines()
        .skip(settled)
        .filter(|l| l.contains("nobody@localhost"))
        .count();
    assert_eq!(
        nobody_lines,
        0,
        "stanzas for nobody@localhost still flow:\n{}",
        later.lines().skip(settled).collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "log lines about nobody@localhost: {}",
        later
            .lines()
            .skip(log_before)
            .filter(|l| l.contains("nobody@localhost"))
            .count()
    );
    // The component still works.
    let iq = u
        .must_request(get(PROXY, "after", test_payload("after")), ANSWER)
        .await;
    assert_eq!(answered_by(&iq).as_deref(), Some("a"));
    prosody.assert_no_tracebacks();
}

/// Polls `client_proxy:resources(H)` until each `(resource, pool)` of `want` is listed in
/// that pool ("active", "draining", "ineligible"); the output.
async fn wait_pools(prosody: &Prosody, want: &[(&str, &str)]) -> String {
    shell_until(
        prosody,
        &format!("client_proxy:resources({PROXY:?})"),
        |out| {
            want.iter().all(|(name, pool)| {
                resource_line(out, name).is_some_and(|l| l.split_whitespace().nth(3) == Some(*pool))
            })
        },
    )
    .await
}

/// Sends `n` requests one after the other; each must be an echo result from `resource`.
async fn all_answered_by(r: &mut Xmpp, prefix: &str, n: usize, resource: &str) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        assert_eq!(
            answered_by(&iq).as_deref(),
            Some(resource),
            "{id} should be answered by /{resource}: {}",
            iq_xml(&iq)
        );
    }
}

/// Sends `n` requests; each must get service-unavailable (cancel) from H at once (well
/// within the 60 s timeout a forwarded request would wait for).
async fn all_unavailable_at_once(r: &mut Xmpp, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let sent = Instant::now();
        let iq = r
            .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
            .await;
        expect_error(&iq, PROXY, "cancel", "service-unavailable");
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "{id}: answered after {:?}, not at once",
            sent.elapsed()
        );
    }
}

// 7. client_proxy_require_caps = { "http://jitsi.org/jicofo" }: of three resources of T,
// /jicofo advertises that caps node (XEP-0115 <c/> in its presence), /jvb another node,
// /phone none: only /jicofo gets requests, the others are listed as ineligible. /jicofo
// re-sends presence without the node: ineligible at once, requests get service-unavailable
// at once; with the node again it serves; when it leaves, service-unavailable again.
#[tokio::test]
async fn require_caps_admits_only_resources_advertising_the_node() {
    let prosody = server(&[&format!(
        "client_proxy_require_caps = {{ {JICOFO_NODE:?} }}"
    )]);
    let start = |resource: &str, caps: Option<&str>| {
        let mut i = Implementer::new(&prosody.addr(), TARGET_USER, PASSWORD, resource, PROXY);
        if let Some(node) = caps {
            i = i.caps(node);
        }
        async move {
            i.start().await;
            i
        }
    };
    let mut jicofo = start("jicofo", Some(JICOFO_NODE)).await;
    let jvb = start("jvb", Some("http://jitsi.org/jitsi-videobridge")).await;
    let phone = start("phone", None).await;
    let out = wait_pools(
        &prosody,
        &[
            ("jicofo", "active"),
            ("jvb", "ineligible"),
            ("phone", "ineligible"),
        ],
    )
    .await;
    eprintln!("{out}");
    assert!(
        out.contains(&format!("{PROXY} -> {TARGET}: 1 eligible")),
        "summary:\n{out}"
    );

    let mut r = requester(&prosody, "abc").await;
    all_answered_by(&mut r, "caps", 20, "jicofo").await;

    // The latest presence counts: /jicofo without the node is out, at once.
    jicofo.set_caps(None);
    jicofo.announce();
    wait_pools(&prosody, &[("jicofo", "ineligible")]).await;
    all_unavailable_at_once(&mut r, "nocaps", 3).await;

    // The node again: /jicofo serves again.
    jicofo.set_caps(Some(JICOFO_NODE));
    jicofo.announce();
    wait_pools(&prosody, &[("jicofo", "active")]).await;
    all_answered_by(&mut r, "back", 5, "jicofo").await;

    // /jicofo leaves: only resources without the node are online.
    jicofo.stop().await;
    wait_offline(&prosody, &["jicofo"]).await;
    all_unavailable_at_once(&mut r, "gone", 3).await;

    assert_eq!(jvb.request_count(), 0, "/jvb got requests");
    assert_eq!(phone.request_count(), 0, "/phone got requests");
    assert_eq!(jicofo.request_count(), 25);
    prosody.assert_no_tracebacks();
}
