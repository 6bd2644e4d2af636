//! Limits: duplicate ids, per requester, per user, per domain, and client_proxy_allow.

use super::*;

#[test]
fn duplicate_id_and_limits() {
    let mut p = Proxy::new(config(|o| {
        o.max_pending = Some(2.0);
        o.max_pending_per_requester = Some(1.0);
    }));
    online(&mut p, "a");
    forwarded(request(&mut p, R, "1", H));
    assert_eq!(request(&mut p, R, "1", H), Verdict::Error(DUPLICATE_ID));
    assert_eq!(request(&mut p, R, "2", H), Verdict::Error(REQUESTER_FULL));
    forwarded(request(&mut p, "b@x/y", "1", H));
    assert_eq!(request(&mut p, "c@x/y", "1", H), Verdict::Error(TABLE_FULL));
}

#[test]
fn only_allowed_senders_use_the_service_and_nothing_of_theirs_reaches_the_target() {
    let mut p = Proxy::new(config(|o| {
        o.allow = Some(vec!["example.org".into(), "boss@elsewhere.net".into()])
    }));
    online(&mut p, "a");
    forwarded(request(&mut p, R, "1", H));
    forwarded(request(&mut p, "boss@elsewhere.net/x", "1", H));
    let stranger = "someone@elsewhere.net/x";
    assert_eq!(request(&mut p, stranger, "1", H), Verdict::Error(FORBIDDEN));
    assert_eq!(FORBIDDEN.error_type, "auth");
    for (name, kind) in [
        ("message", Some("chat")),
        ("message", None),
        ("presence", Some("subscribe")),
        ("presence", Some("probe")),
    ] {
        assert_eq!(
            p.route(head(name, kind, stranger, H, "m"), 0.0),
            Verdict::Error(FORBIDDEN),
            "{name} {kind:?}"
        );
    }
    for (name, kind) in [
        ("message", Some("error")),
        ("presence", None),
        ("iq", Some("error")),
    ] {
        assert!(
            matches!(
                p.route(head(name, kind, stranger, H, "m"), 0.0),
                Verdict::Drop { .. }
            ),
            "{name} {kind:?}"
        );
    }
    assert!(
        p.drain()
            .iter()
            .all(|i| matches!(i, OutItem::Status { .. })),
        "nothing queued for them"
    );
    // The implementing client may still ask a stranger, and gets the answer.
    let jat = format!("{H}/{stranger}");
    let ask = send(reply(&mut p, "a", "get", &jat, "q"));
    let answer = p.route(
        head(
            "iq",
            Some("result"),
            stranger,
            H,
            ask.id.as_deref().unwrap(),
        ),
        1.0,
    );
    assert_eq!(send(answer).to, format!("{T}/a"));
    assert_eq!(p.counters.refused, 1);
}

#[test]
fn a_user_and_a_remote_domain_are_capped_while_local_users_are_served() {
    let mut p = Proxy::new(config(|o| {
        o.max_pending_per_requester = Some(2.0);
        o.max_pending_per_user = Some(3.0);
        o.max_pending_per_domain = Some(4.0);
    }));
    p.set_local_domains(["example.org"]);
    online(&mut p, "a");
    // One user, many devices: 3 in all.
    for (device, id) in [("1", "a"), ("1", "b"), ("2", "c")] {
        forwarded(request(
            &mut p,
            &format!("user@example.org/{device}"),
            id,
            H,
        ));
    }
    assert_eq!(
        request(&mut p, "user@example.org/3", "d", H),
        Verdict::Error(ACCOUNT_FULL)
    );
    // A remote server minting users: 4 in all from its domain.
    for i in 0..4 {
        forwarded(request(&mut p, &format!("u{i}@remote.example/x"), "r", H));
    }
    assert_eq!(
        request(&mut p, "u9@remote.example/x", "r", H),
        Verdict::Error(DOMAIN_FULL)
    );
    forwarded(request(&mut p, "v@other.example/x", "r", H));
    // The local domain is not capped by domain.
    for i in 0..6 {
        forwarded(request(&mut p, &format!("local{i}@example.org/x"), "l", H));
    }
    // Answers free the places.
    delivered(reply(
        &mut p,
        "a",
        "result",
        &format!("{H}/u0@remote.example/x"),
        "r",
    ));
    forwarded(request(&mut p, "u9@remote.example/x", "r", H));
}
