//! The router's decisions, one behaviour per test, and a model test of the promise that
//! every forwarded request is answered exactly once.

use super::*;
use crate::config::Options;
use crate::verdict::*;

const H: &str = "proxy.example";
const T: &str = "service@example.org";
const R: &str = "user@example.org/abc";
const R_JAT: &str = "proxy.example/user@example.org/abc";

/// The options of a test proxy: target T on host H, changed by `f`.
fn config(f: impl FnOnce(&mut Options)) -> Config {
    let mut options = Options {
        target_address: Some(T.into()),
        ..Options::default()
    };
    f(&mut options);
    Config::new(H, &options).unwrap()
}

fn proxy() -> Proxy {
    let mut p = Proxy::new(config(|o| o.timeout = Some(10.0)));
    p.seed(1);
    p
}

fn head<'a>(
    name: &'a str,
    stanza_type: Option<&'a str>,
    from: &'a str,
    to: &'a str,
    id: &'a str,
) -> Head<'a> {
    Head {
        name,
        stanza_type,
        from: Some(from),
        to: Some(to),
        id: Some(id),
        priority: None,
        eligible: true,
        condition: None,
        lang: None,
    }
}

/// An answer the outbox owes: (to, from, id, error, held stanza released).
#[derive(Debug, PartialEq)]
struct Answer {
    to: String,
    from: String,
    id: String,
    error: StanzaError,
    seq: Option<u64>,
}

/// A held stanza to send again.
#[derive(Debug, PartialEq)]
struct Retry {
    seq: u64,
    to: String,
    from: String,
    /// The request's type, id and xml:lang: what the shim rebuilds it with around its
    /// payload.
    stanza_type: &'static str,
    id: String,
    lang: Option<String>,
}

/// The outbox's answers and retries (presence notices and status are left out).
fn split(items: Vec<OutItem>) -> (Vec<Answer>, Vec<Retry>) {
    let (mut answers, mut retries) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            OutItem::Error {
                to,
                from,
                id,
                error,
                release,
            } => answers.push(Answer {
                to,
                from,
                id,
                error,
                seq: release,
            }),
            OutItem::Resend {
                held,
                to,
                from,
                stanza_type,
                id,
                lang,
            } => retries.push(Retry {
                seq: held,
                to,
                from,
                stanza_type,
                id,
                lang,
            }),
            _ => {}
        }
    }
    (answers, retries)
}

/// The answers a tick at `now` owes.
fn expire(p: &mut Proxy, now: f64) -> Vec<Answer> {
    split(p.tick(now)).0
}

fn send(v: Verdict) -> Send {
    match v {
        Verdict::Send(s) => s,
        other => panic!("not sent: {other:?}"),
    }
}

/// The number a forwarded get is held under.
fn hold_of(v: Verdict) -> u64 {
    send(v).hold.expect("a forwarded get is held")
}

/// (to, from) of a forwarded request.
fn forwarded(v: Verdict) -> (String, String) {
    let s = send(v);
    assert!(s.release.is_none() && s.id.is_none(), "{s:?}");
    (s.to, s.from)
}

/// (to, from) of a delivered answer.
fn delivered(v: Verdict) -> (String, String) {
    let s = send(v);
    assert!(s.hold.is_none() && s.id.is_none(), "{s:?}");
    (s.to, s.from)
}

/// A send verdict with these addresses, id, held and released numbers.
fn sent(
    to: &str,
    from: &str,
    id: Option<&str>,
    hold: Option<u64>,
    release: Option<u64>,
) -> Verdict {
    Verdict::Send(Send {
        to: to.into(),
        from: from.into(),
        id: id.map(str::to_owned),
        hold,
        release,
    })
}

fn presence(p: &mut Proxy, res: &str, kind: Option<&str>) {
    let from = format!("{T}/{res}");
    let v = p.route(head("presence", kind, &from, H, ""), 0.0);
    assert!(matches!(v, Verdict::Drop { .. }), "{v:?}");
}

fn online(p: &mut Proxy, res: &str) {
    presence(p, res, None);
}

fn offline(p: &mut Proxy, res: &str) -> (Vec<Answer>, Vec<Retry>) {
    presence(p, res, Some("unavailable"));
    split(p.drain())
}

fn request(p: &mut Proxy, from: &str, id: &str, to: &str) -> Verdict {
    p.route(head("iq", Some("get"), from, to, id), 0.0)
}

fn set(p: &mut Proxy, from: &str, id: &str) -> Verdict {
    p.route(head("iq", Some("set"), from, H, id), 0.0)
}

fn reply(p: &mut Proxy, res: &str, kind: &str, to: &str, id: &str) -> Verdict {
    let from = format!("{T}/{res}");
    p.route(head("iq", Some(kind), &from, to, id), 1.0)
}

#[test]
fn request_is_forwarded_from_the_jat_address_as_in_the_original_readme() {
    let mut p = proxy();
    online(&mut p, "a");
    for to in [H, "proxy.example/x", "node@proxy.example"] {
        let v = forwarded(request(&mut p, R, to, to));
        assert_eq!(v, ("service@example.org/a".into(), R_JAT.into()));
    }
    assert_eq!(p.pending.len(), 3);
}

#[test]
fn no_resource_is_service_unavailable() {
    let mut p = proxy();
    assert_eq!(request(&mut p, R, "1", H), Verdict::Error(NO_RESOURCE));
    assert_eq!(NO_RESOURCE.condition, "service-unavailable");
    assert!(p.pending.is_empty());
}

#[test]
fn reply_is_delivered_from_the_host_only_for_a_tracked_request() {
    let mut p = proxy();
    online(&mut p, "a");
    let seq = hold_of(request(&mut p, R, "1234", H));
    let v = reply(&mut p, "a", "result", R_JAT, "1234");
    assert_eq!(v, sent(R, H, None, None, Some(seq)));
    assert!(
        matches!(
            reply(&mut p, "a", "result", R_JAT, "1234"),
            Verdict::Drop { .. }
        ),
        "answered once"
    );
    assert!(
        matches!(
            reply(&mut p, "a", "result", R_JAT, "999"),
            Verdict::Drop { .. }
        ),
        "never sent"
    );
}

#[test]
fn error_reply_is_passed_back() {
    let mut p = proxy();
    online(&mut p, "a");
    request(&mut p, R, "7", H);
    assert_eq!(
        delivered(reply(&mut p, "a", "error", R_JAT, "7")),
        (R.into(), H.into())
    );
}

#[test]
fn reply_from_another_resource_is_dropped_and_the_request_stays() {
    let mut p = proxy();
    online(&mut p, "a");
    request(&mut p, R, "1", H);
    online(&mut p, "b");
    assert!(matches!(
        reply(&mut p, "b", "result", R_JAT, "1"),
        Verdict::Drop { .. }
    ));
    delivered(reply(&mut p, "a", "result", R_JAT, "1"));
}

#[test]
fn reply_for_another_requester_is_dropped() {
    let mut p = proxy();
    online(&mut p, "a");
    request(&mut p, R, "1", H);
    let other = "proxy.example/other@example.org/x";
    assert!(matches!(
        reply(&mut p, "a", "result", other, "1"),
        Verdict::Drop { .. }
    ));
    assert_eq!(p.pending.len(), 1);
}

#[test]
fn reply_to_garbage_jat_is_dropped() {
    let mut p = proxy();
    online(&mut p, "a");
    for to in [
        "proxy.example/@deadbeef",
        "proxy.example/not a jid@",
        "proxy.example/",
    ] {
        assert!(
            matches!(reply(&mut p, "a", "result", to, "1"), Verdict::Drop { .. }),
            "{to}"
        );
    }
}

#[test]
fn presence_adds_and_removes_resources() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    online(&mut p, "a");
    assert_eq!(p.resources.len(), 2);
    offline(&mut p, "a");
    assert_eq!(p.resources.len(), 1);
    for i in 0..20 {
        let (to, _) = forwarded(request(&mut p, R, &i.to_string(), H));
        assert_eq!(to, format!("{T}/b"));
    }
}

#[test]
fn resource_coming_back_is_used_again() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    offline(&mut p, "a");
    online(&mut p, "a");
    let seen: std::collections::HashSet<_> = (0..40)
        .map(|i| forwarded(request(&mut p, R, &i.to_string(), H)).0)
        .collect();
    assert_eq!(seen.len(), 2);
}

#[test]
fn resource_going_offline_answers_its_requests_at_once() {
    let mut p = proxy();
    online(&mut p, "a");
    request(&mut p, R, "1", H);
    set(&mut p, "other@example.org/x", "2");
    let (answers, retries) = offline(&mut p, "a");
    assert_eq!(answers.len(), 2, "no other resource: nothing to retry on");
    assert!(retries.is_empty());
    assert!(answers.iter().all(|a| a.error == RESOURCE_GONE));
    assert!(p.pending.is_empty());
}

#[test]
fn a_lost_get_is_retried_once_on_another_resource_and_a_set_is_not() {
    let mut p = proxy();
    online(&mut p, "a");
    let seq = hold_of(request(&mut p, R, "g", H));
    set(&mut p, R, "s");
    online(&mut p, "b");
    let (answers, retries) = offline(&mut p, "a");
    assert_eq!(
        retries,
        vec![Retry {
            seq,
            to: format!("{T}/b"),
            from: R_JAT.into(),
            stanza_type: "get",
            id: "g".into(),
            lang: None,
        }]
    );
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].id.as_str(), answers[0].error),
        ("s", RESOURCE_GONE)
    );
    online(&mut p, "c");
    let (answers, retries) = offline(&mut p, "b");
    assert!(retries.is_empty(), "retried once only");
    assert_eq!((answers[0].id.as_str(), answers[0].seq), ("g", Some(seq)));
}

#[test]
fn a_retried_get_is_answered_by_its_new_resource() {
    let mut p = proxy();
    online(&mut p, "a");
    request(&mut p, R, "g", H);
    online(&mut p, "b");
    offline(&mut p, "a");
    assert!(matches!(
        reply(&mut p, "a", "result", R_JAT, "g"),
        Verdict::Drop { .. }
    ));
    assert_eq!(
        delivered(reply(&mut p, "b", "result", R_JAT, "g")),
        (R.into(), H.into())
    );
}

#[test]
fn reconfigured_target_answers_what_is_outstanding() {
    let mut p = proxy();
    online(&mut p, "a");
    let seq = hold_of(request(&mut p, R, "1", H));
    p.reconfigure(config(|o| o.timeout = Some(5.0)));
    assert_eq!(
        (p.pending.len(), p.resources.len()),
        (1, 1),
        "same target: state kept"
    );
    p.reconfigure(config(|o| {
        o.target_address = Some("other@example.org".into())
    }));
    assert!(p.resources.is_empty() && p.pending.is_empty());
    p.resources.upsert("a", 0, true);
    let next = hold_of(request(&mut p, R, "2", H));
    assert_ne!(
        next, seq,
        "not handed out again before the shim lets go of it"
    );
    let (answers, _) = split(p.drain());
    assert_eq!(
        (answers[0].seq, answers[0].error),
        (Some(seq), RESOURCE_GONE)
    );
    let after = hold_of(request(&mut p, R, "3", H));
    assert_eq!(after, seq, "handed out again once the shim has the answer");
}

#[test]
fn presence_error_or_unsubscribed_drops_all() {
    for kind in ["error", "unsubscribed"] {
        let mut p = proxy();
        assert!(!p.revoked);
        online(&mut p, "a");
        online(&mut p, "b");
        request(&mut p, R, "1", H);
        let v = p.route(head("presence", Some(kind), T, H, ""), 0.0);
        assert!(matches!(v, Verdict::Drop { .. }));
        assert!(p.resources.is_empty());
        let (answers, retries) = split(p.drain());
        assert_eq!((answers.len(), retries.len()), (1, 0));
        assert_eq!(request(&mut p, R, "2", H), Verdict::Error(NO_RESOURCE));
        assert!(p.revoked);
        online(&mut p, "a");
        assert!(!p.revoked, "back when a resource is online again");
    }
}

#[test]
fn ineligible_and_draining_resources() {
    let mut p = proxy();
    let mut h = head("presence", None, "service@example.org/phone", H, "");
    h.eligible = false;
    assert!(matches!(p.route(h, 0.0), Verdict::Drop { .. }));
    assert_eq!(
        request(&mut p, R, "1", H),
        Verdict::Error(NO_RESOURCE),
        "only an ineligible one"
    );
    let mut h = head("presence", None, "service@example.org/old", H, "");
    h.priority = Some(-1.0);
    p.route(h, 0.0);
    assert_eq!(forwarded(request(&mut p, R, "2", H)).0, format!("{T}/old"));
    online(&mut p, "new");
    for i in 3..20 {
        assert_eq!(
            forwarded(request(&mut p, R, &i.to_string(), H)).0,
            format!("{T}/new")
        );
    }
    assert_eq!((p.resources.len(), p.resources.eligible()), (3, 2));
}

fn original() -> Proxy {
    Proxy::new(config(|o| {
        o.timeout = Some(10.0);
        o.messages = Some(false);
        o.outbound = Some(false);
        o.presence = Some(false);
    }))
}

#[test]
fn with_the_switches_off_the_original_answers() {
    let mut p = original();
    online(&mut p, "a");
    assert_eq!(
        reply(&mut p, "a", "get", R_JAT, "q"),
        Verdict::Error(NO_OUTBOUND)
    );
    assert_eq!(
        reply(&mut p, "a", "set", H, "q"),
        Verdict::Error(NOT_ADDRESSED)
    );
    let msg = |p: &mut Proxy, from, to| p.route(head("message", Some("chat"), from, to, ""), 0.0);
    assert_eq!(
        msg(&mut p, "service@example.org/a", R_JAT),
        Verdict::Error(NO_MESSAGES)
    );
    assert_eq!(msg(&mut p, R, H), Verdict::Error(NO_MESSAGES));
    assert_eq!(
        p.route(head("message", None, R, H, ""), 0.0),
        Verdict::Error(NO_MESSAGES)
    );
    for kind in [Some("subscribe"), Some("probe"), None] {
        assert_eq!(
            p.route(head("presence", kind, R, H, ""), 0.0),
            Verdict::Error(NO_PRESENCE)
        );
    }
}

fn message(p: &mut Proxy, from: &str, to: &str, kind: &str) -> Verdict {
    p.route(head("message", Some(kind), from, to, ""), 0.0)
}

#[test]
fn user_messages_stick_to_one_resource_and_replies_reach_the_user() {
    let mut p = proxy();
    assert_eq!(
        message(&mut p, R, H, "chat"),
        Verdict::Error(NO_RESOURCE_FOR_MESSAGE)
    );
    for r in ["a", "b", "c"] {
        online(&mut p, r);
    }
    let first = message(&mut p, R, H, "chat");
    let (to, from) = forwarded(first.clone());
    assert_eq!(from, R_JAT);
    for _ in 0..5 {
        assert_eq!(message(&mut p, R, H, "chat"), first, "sticky");
    }
    let res = to.rsplit('/').next().unwrap().to_owned();
    let from_res = format!("{T}/{res}");
    assert_eq!(
        message(&mut p, &from_res, R_JAT, "chat"),
        sent(R, H, None, None, None)
    );
    // The user's server bounces it: back to the resource that wrote.
    assert_eq!(
        message(&mut p, R, H, "error"),
        sent(&from_res, R_JAT, None, None, None)
    );
    // A bounce of the user's message from the target goes back to the user, unanswered.
    assert_eq!(
        message(&mut p, &from_res, R_JAT, "error"),
        sent(R, H, None, None, None)
    );
    offline(&mut p, &res);
    assert!(
        matches!(message(&mut p, R, H, "error"), Verdict::Drop { .. }),
        "its writer is gone"
    );
    assert_ne!(
        message(&mut p, R, H, "chat"),
        first,
        "moves on when its resource leaves"
    );
    assert_eq!((p.counters.messages_in, p.counters.messages_out), (7, 1));
}

#[test]
fn outbound_request_gets_its_answer_with_its_own_id() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    let ask = |p: &mut Proxy, res: &str| reply(p, res, "get", R_JAT, "same");
    let Send { to, from, id, .. } = send(ask(&mut p, "a"));
    let id_a = id.expect("a proxy id");
    assert_eq!((to.as_str(), from.as_str()), (R, H));
    let id_b = send(ask(&mut p, "b")).id.expect("a proxy id");
    assert_ne!(id_a, id_b, "two resources, one id: unique towards the user");
    let answer = |p: &mut Proxy, id: &str| p.route(head("iq", Some("result"), R, H, id), 1.0);
    assert_eq!(
        answer(&mut p, &id_b),
        sent(&format!("{T}/b"), R_JAT, Some("same"), None, None)
    );
    assert_eq!(
        answer(&mut p, &id_a),
        sent(&format!("{T}/a"), R_JAT, Some("same"), None, None)
    );
    assert!(
        matches!(answer(&mut p, &id_a), Verdict::Drop { .. }),
        "answered once"
    );
    let forged = p.route(
        head("iq", Some("result"), "other@example.org/x", H, &id_b),
        1.0,
    );
    assert!(matches!(forged, Verdict::Drop { .. }));
    assert_eq!(p.outbound.numbers_out(), 0, "answered: numbers given back");
}

#[test]
fn outbound_request_times_out_towards_the_resource() {
    let mut p = proxy();
    online(&mut p, "a");
    send(reply(&mut p, "a", "set", R_JAT, "q"));
    let gone = expire(&mut p, 20.0);
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (
            gone[0].to.as_str(),
            gone[0].from.as_str(),
            gone[0].id.as_str()
        ),
        ("service@example.org/a", R_JAT, "q")
    );
    assert_eq!(gone[0].error, TIMED_OUT);
    send(reply(&mut p, "a", "get", R_JAT, "r"));
    offline(&mut p, "a");
    assert_eq!(
        p.outbound.numbers_out(),
        0,
        "timed out, or its resource gone: numbers given back"
    );
    let bad = reply(&mut p, "a", "get", "proxy.example/@0000000000000000", "q");
    assert_eq!(bad, Verdict::Error(UNKNOWN_JAT));
}

/// The presence items the outbox holds: (to, type).
fn notices(items: &[OutItem]) -> Vec<(String, Option<&'static str>)> {
    items
        .iter()
        .filter_map(|item| match item {
            OutItem::Presence {
                to,
                from,
                presence_type,
            } => {
                assert_eq!(from, H);
                Some((to.clone(), *presence_type))
            }
            _ => None,
        })
        .collect()
}

/// The subscriber lists the outbox asks to store.
fn stored(items: &[OutItem]) -> Vec<Vec<String>> {
    items
        .iter()
        .filter_map(|item| match item {
            OutItem::Subscribers(list) => Some(list.clone()),
            _ => None,
        })
        .collect()
}

fn user_presence(p: &mut Proxy, from: &str, kind: &str) -> Vec<OutItem> {
    let v = p.route(head("presence", Some(kind), from, H, ""), 0.0);
    assert!(matches!(v, Verdict::Drop { drain: true, .. }), "{v:?}");
    p.drain()
}

#[test]
fn users_subscribe_to_the_service_and_hear_of_its_availability() {
    let mut p = proxy();
    let u = "user@example.org";
    // Not subscribed: a probe is answered unsubscribed, to the full JID that asked.
    let out = user_presence(&mut p, R, "probe");
    assert_eq!(notices(&out), vec![(R.into(), Some("unsubscribed"))]);
    // Subscribing (by bare JID): subscribed, then the availability (nothing online).
    let out = user_presence(&mut p, R, "subscribe");
    assert_eq!(
        notices(&out),
        vec![
            (u.into(), Some("subscribed")),
            (u.into(), Some("unavailable"))
        ]
    );
    assert_eq!(stored(&out), vec![vec![u.to_owned()]]);
    let out = user_presence(&mut p, "user@example.org/other", "subscribe");
    assert!(
        stored(&out).is_empty(),
        "already subscribed: nothing to store"
    );
    // A resource comes online: one notice per subscriber; again only on a change.
    online(&mut p, "a");
    assert_eq!(notices(&p.drain()), vec![(u.into(), None)]);
    online(&mut p, "b");
    assert!(notices(&p.drain()).is_empty());
    let out = user_presence(&mut p, R, "probe");
    assert_eq!(notices(&out), vec![(R.into(), None)]);
    offline(&mut p, "a");
    offline(&mut p, "b");
    let out = user_presence(&mut p, R, "probe");
    assert_eq!(notices(&out), vec![(R.into(), Some("unavailable"))]);
    // Unsubscribing: unavailable, and the empty set is stored.
    let out = user_presence(&mut p, R, "unsubscribe");
    assert_eq!(notices(&out), vec![(u.into(), Some("unavailable"))]);
    assert_eq!(stored(&out), vec![Vec::<String>::new()]);
    for kind in [
        None,
        Some("unavailable"),
        Some("subscribed"),
        Some("unsubscribed"),
    ] {
        assert_eq!(
            p.route(head("presence", kind, R, H, ""), 0.0),
            Verdict::drop("directed presence or subscription answer from a user"),
            "{kind:?}"
        );
    }
}

#[test]
fn subscribers_from_storage_are_told_and_told_unavailable_at_stop() {
    let mut p = proxy();
    p.add_subscribers(["a@example.org", "b@example.net/ignored"]);
    online(&mut p, "a");
    assert_eq!(
        notices(&p.drain()),
        vec![
            ("a@example.org".into(), None),
            ("b@example.net".into(), None)
        ]
    );
    let out = p.stopping();
    assert_eq!(
        notices(&out),
        vec![
            ("a@example.org".into(), Some("unavailable")),
            ("b@example.net".into(), Some("unavailable"))
        ]
    );
    assert!(p.stopping().is_empty(), "told once");
}

#[test]
fn status_changes_are_queued_once_each() {
    let status = |items: &[OutItem]| -> Vec<Level> {
        items
            .iter()
            .filter_map(|item| match item {
                OutItem::Status { level, .. } => Some(*level),
                _ => None,
            })
            .collect()
    };
    let mut p = proxy();
    p.announce_status();
    let out = p.drain();
    assert_eq!(status(&out), vec![Level::Warn]);
    assert_eq!(
        out[0],
        OutItem::Status {
            level: Level::Warn,
            text: format!("No eligible resource of {T} is online")
        }
    );
    online(&mut p, "a");
    let out = p.drain();
    assert_eq!(
        out,
        vec![OutItem::Status {
            level: Level::Ok,
            text: format!("1 eligible resource(s) of {T} online")
        }]
    );
    online(&mut p, "b");
    assert!(status(&p.drain()).is_empty(), "same level: nothing new");
    p.route(head("presence", Some("unsubscribed"), T, H, ""), 0.0);
    assert_eq!(status(&p.drain()), vec![Level::Error]);
    assert_eq!(p.status().level, Level::Error);
    assert!(p.status().text.contains("revoked the subscription"));
}

#[test]
fn the_status_reaches_the_shim_only_when_it_changed() {
    // The one place the status is deduplicated: whatever happens, two status items in a
    // row never say the same thing (the shim logs each one it gets).
    let mut p = proxy();
    p.announce_status();
    let mut shown: Vec<(Level, String)> = Vec::new();
    let mut state = 7u64;
    for _ in 0..2_000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let res = ["a", "b", "c"][(state >> 40) as usize % 3];
        match (state >> 33) % 6 {
            0 | 1 => online(&mut p, res),
            2 | 3 => presence(&mut p, res, Some("unavailable")),
            4 => presence(&mut p, "", Some("unsubscribed")),
            _ => p.reconfigure(config(|o| o.timeout = Some(10.0))),
        }
        shown.extend(p.drain().into_iter().filter_map(|item| match item {
            OutItem::Status { level, text } => Some((level, text)),
            _ => None,
        }));
    }
    assert!(shown.len() > 100, "{} changes", shown.len());
    assert!(
        shown.windows(2).all(|w| w[0] != w[1]),
        "a status repeated: {shown:?}"
    );
    assert_eq!(shown.last().map(|s| s.0), Some(p.status().level));
}

#[test]
fn priority_is_floored_and_clamped() {
    let mut p = proxy();
    for (written, kept) in [
        (Some(300.0), 127),
        (Some(-1e9), -128),
        (Some(2.7), 2),
        (Some(f64::NAN), 0),
        (None, 0),
    ] {
        let mut h = head("presence", None, "service@example.org/a", H, "");
        h.priority = written;
        p.route(h, 0.0);
        assert_eq!(p.status().resources[0].priority, kept, "{written:?}");
    }
}

#[test]
fn error_stanzas_are_never_answered() {
    let mut p = proxy();
    for name in ["iq", "message", "presence"] {
        for from in [R, "service@example.org/a"] {
            for to in [H, "proxy.example/u@x/y"] {
                let v = p.route(head(name, Some("error"), from, to, "e"), 0.0);
                assert!(
                    !matches!(v, Verdict::Error(_)),
                    "{name} from {from} to {to}: {v:?}"
                );
            }
        }
    }
}

#[test]
fn unanswered_request_times_out_once() {
    let mut p = proxy();
    online(&mut p, "a");
    let seq = hold_of(request(&mut p, R, "1", H));
    assert!(expire(&mut p, 9.0).is_empty());
    let gone = expire(&mut p, 10.0);
    assert_eq!(
        gone,
        vec![Answer {
            to: R.into(),
            from: H.into(),
            id: "1".into(),
            error: TIMED_OUT,
            seq: Some(seq)
        }]
    );
    assert!(expire(&mut p, 100.0).is_empty());
    let late = reply(&mut p, "a", "result", R_JAT, "1");
    assert!(
        matches!(late, Verdict::Drop { .. }),
        "late reply not delivered"
    );
}

#[test]
fn iq_without_id_or_from() {
    let mut p = proxy();
    online(&mut p, "a");
    let mut h = head("iq", Some("get"), R, H, "");
    h.id = None;
    assert_eq!(p.route(h, 0.0), Verdict::Error(NO_ID));
    h.from = None;
    assert!(matches!(p.route(h, 0.0), Verdict::Drop { .. }));
}

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
fn overlong_requester_gets_a_token_that_maps_back() {
    let mut p = proxy();
    online(&mut p, "a");
    let long = format!("user@example.org/{}", "r".repeat(1023));
    let (_, from) = forwarded(request(&mut p, &long, "1", H));
    let res = from.strip_prefix("proxy.example/").unwrap();
    assert!(res.starts_with('@') && res.len() < 64);
    assert_eq!(
        delivered(reply(&mut p, "a", "result", &from, "1")),
        (long, H.into())
    );
}

#[test]
fn base64_mode_round_trips() {
    let mut p = Proxy::new(config(|o| o.jat = Some("base64".into())));
    online(&mut p, "a");
    let (_, from) = forwarded(request(&mut p, R, "1", H));
    assert_eq!(from, "proxy.example/dXNlckBleGFtcGxlLm9yZy9hYmM");
    assert_eq!(
        delivered(reply(&mut p, "a", "result", &from, "1")),
        (R.into(), H.into())
    );
}

fn decline(p: &mut Proxy, res: &str, id: &str, now: f64) -> Verdict {
    let from = format!("{T}/{res}");
    let mut h = head("iq", Some("error"), &from, R_JAT, id);
    h.condition = Some("service-unavailable");
    p.route(h, now)
}

/// The resource a forwarded request went to.
fn resource_of(v: Verdict) -> String {
    let to = forwarded(v).0;
    to.rsplit('/').next().unwrap().to_owned()
}

#[test]
fn a_declined_request_goes_to_each_other_resource_once_then_back_to_the_user() {
    let mut p = proxy();
    for r in ["a", "b", "c"] {
        online(&mut p, r);
    }
    let first = send(set(&mut p, R, "s"));
    let seq = first.hold.expect("a set is held too");
    let mut seen = vec![first.to.rsplit('/').next().unwrap().to_owned()];
    // The set is held too: declined, nothing happened, so another resource may take it.
    for _ in 0..2 {
        let v = decline(&mut p, seen.last().unwrap(), "s", 1.0);
        assert_eq!(
            v,
            Verdict::Drop {
                reason: "declined: sent to another resource",
                drain: true
            }
        );
        let (answers, retries) = split(p.drain());
        assert!(answers.is_empty());
        assert_eq!(retries.len(), 1);
        assert_eq!(retries[0].seq, seq);
        assert_eq!(
            (retries[0].stanza_type, retries[0].id.as_str()),
            ("set", "s")
        );
        let next = retries[0].to.rsplit('/').next().unwrap().to_owned();
        assert!(!seen.contains(&next), "{next} had it already: {seen:?}");
        seen.push(next);
    }
    // Nobody left: the last answer goes to the requester, and the stanza is let go.
    let last = decline(&mut p, seen.last().unwrap(), "s", 1.0);
    assert_eq!(last, sent(R, H, None, None, Some(seq)));
    assert_eq!((p.counters.retried, p.counters.delivered), (2, 1));
    assert!(p.pending.is_empty());
}

#[test]
fn a_forward_undone_is_forgotten_and_a_late_reply_to_it_is_unsolicited() {
    let mut p = proxy();
    online(&mut p, "a");
    let v = request(&mut p, R, "1", H);
    let held = hold_of(v.clone());
    p.undo(&v);
    p.undo(&v);
    assert!(p.pending.is_empty() && p.pending.numbers_out() == 0);
    assert_eq!(
        (
            p.pending.of_requester(R),
            p.pending.of_user("user@example.org")
        ),
        (0, 0)
    );
    assert_eq!(p.status().resources[0].pending, 0);
    assert_eq!((p.counters.forwarded, p.counters.refused), (0, 1));
    let late = reply(&mut p, "a", "result", R_JAT, "1");
    assert!(matches!(late, Verdict::Drop { .. }), "{late:?}");
    assert_eq!(p.counters.unsolicited, 1);
    assert!(
        expire(&mut p, 100.0).is_empty(),
        "no timeout: the shim answered it"
    );
    assert_eq!(
        hold_of(request(&mut p, R, "2", H)),
        held,
        "its number is free"
    );
}

#[test]
fn an_answer_undone_is_owed_once_as_an_internal_error() {
    let mut p = proxy();
    online(&mut p, "a");
    let held = hold_of(request(&mut p, R, "1", H));
    let v = reply(&mut p, "a", "result", R_JAT, "1");
    assert_eq!(v, sent(R, H, None, None, Some(held)));
    p.undo(&v);
    p.undo(&v);
    let other = hold_of(request(&mut p, "v@example.org/x", "2", H));
    assert_ne!(other, held, "the shim still holds the stanza under {held}");
    assert_eq!(
        split(p.drain()).0,
        vec![Answer {
            to: R.into(),
            from: H.into(),
            id: "1".into(),
            error: INTERNAL,
            seq: Some(held),
        }]
    );
    assert!(p.drain().is_empty(), "owed once");
    assert_eq!(
        hold_of(request(&mut p, R, "3", H)),
        held,
        "free once drained"
    );
    assert_eq!(p.counters.delivered, 1);
}

#[test]
fn undoing_a_message_an_error_or_a_drop_changes_nothing() {
    let mut p = proxy();
    online(&mut p, "a");
    p.drain();
    let verdicts = [
        message(&mut p, R, H, "chat"),
        p.route(
            Head {
                id: None,
                ..head("iq", Some("get"), R, H, "")
            },
            0.0,
        ),
        p.route(head("iq", Some("result"), R, H, "x"), 0.0),
    ];
    assert!(matches!(verdicts[0], Verdict::Send(_)), "{:?}", verdicts[0]);
    assert_eq!(verdicts[1], Verdict::Error(NO_ID));
    let before = p.counters;
    for v in &verdicts {
        p.undo(v);
    }
    assert_eq!(p.counters, before);
    assert!(p.drain().is_empty());
}

#[test]
fn a_retry_carries_the_requests_type_id_and_xml_lang() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    let mut h = head("iq", Some("get"), R, H, "l");
    h.lang = Some("de");
    let first = send(p.route(h, 0.0));
    decline(&mut p, first.to.rsplit('/').next().unwrap(), "l", 1.0);
    let (_, retries) = split(p.drain());
    assert_eq!(retries.len(), 1);
    let r = &retries[0];
    assert_eq!(
        (r.stanza_type, r.id.as_str(), r.lang.as_deref()),
        ("get", "l", Some("de"))
    );
}

#[test]
fn other_errors_and_results_reach_the_user_and_count_as_answers() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    let v = request(&mut p, R, "1", H);
    let res = resource_of(v);
    let from = format!("{T}/{res}");
    let mut h = head("iq", Some("error"), &from, R_JAT, "1");
    h.condition = Some("item-not-found");
    assert!(matches!(p.route(h, 1.0), Verdict::Send(_)));
}

/// Lets `res` time out once (a request to it from its own requester, then the clock).
fn time_out_on(p: &mut Proxy, res: &str, now: &mut f64) -> Vec<OutItem> {
    for i in 0..100 {
        let who = format!("u{i}@example.org/{res}");
        let v = p.route(head("iq", Some("get"), &who, H, "t"), *now);
        let to = forwarded(v).0;
        if to.ends_with(&format!("/{res}")) {
            *now += 11.0;
            return p.tick(*now);
        }
        // Went elsewhere: answer it at once.
        let other = to.rsplit('/').next().unwrap().to_owned();
        let jat = format!("{H}/{who}");
        let reply_from = format!("{T}/{other}");
        p.route(head("iq", Some("result"), &reply_from, &jat, "t"), *now);
    }
    panic!("{res} never chosen");
}

fn logs(items: &[OutItem]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            OutItem::Log(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_resource_that_keeps_failing_is_ejected_for_a_doubling_while_never_the_last() {
    let mut p = proxy();
    online(&mut p, "good");
    online(&mut p, "silent");
    let mut now = 0.0;
    let mut out = Vec::new();
    for _ in 0..3 {
        out = time_out_on(&mut p, "silent", &mut now);
    }
    assert_eq!(
        logs(&out),
        vec![format!(
            "{T}/silent ejected for 30 s: it let 3 requests in a row time out or declined them"
        )]
    );
    assert_eq!((p.status().ejected, p.status().ejections), (1, 1));
    let until = now + 30.0;
    let row = p
        .status()
        .resources
        .into_iter()
        .find(|r| r.name == "silent")
        .unwrap();
    assert_eq!(row.ejected_until, Some(until));
    for i in 0..30 {
        let id = format!("e{i}");
        assert_eq!(resource_of(request(&mut p, R, &id, H)), "good");
        delivered(reply(&mut p, "good", "result", R_JAT, &id));
    }
    // Time's up: back in rotation, logged once.
    out = p.tick(until);
    assert_eq!(
        logs(&out),
        vec![format!("{T}/silent is back in rotation after its ejection")]
    );
    assert_eq!(p.status().ejected, 0);
    now = until;
    for _ in 0..3 {
        out = time_out_on(&mut p, "silent", &mut now);
    }
    assert!(
        logs(&out)[0].contains("ejected for 60 s"),
        "doubled: {out:?}"
    );
    // The good one goes: the ejected one is all there is, and still gets requests.
    offline(&mut p, "good");
    assert_eq!(resource_of(request(&mut p, R, "only", H)), "silent");
    // Offline and back: it starts clean.
    offline(&mut p, "silent");
    online(&mut p, "silent");
    assert_eq!(p.status().ejected, 0);
}

#[test]
fn the_last_resource_in_rotation_is_never_ejected_and_an_answer_resets_the_count() {
    let mut p = proxy();
    online(&mut p, "only");
    let mut now = 0.0;
    for _ in 0..5 {
        assert!(logs(&time_out_on(&mut p, "only", &mut now)).is_empty());
    }
    assert_eq!(p.status().ejected, 0);
    online(&mut p, "b");
    // Two failures, an answer, two failures: never 3 in a row.
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    let mut now = 0.0;
    for _ in 0..2 {
        time_out_on(&mut p, "a", &mut now);
    }
    let who = "x@example.org/a";
    loop {
        let v = p.route(head("iq", Some("get"), who, H, "ok"), now);
        let to = forwarded(v).0;
        let from = to.clone();
        let jat = format!("{H}/{who}");
        p.route(head("iq", Some("result"), &from, &jat, "ok"), now);
        if to.ends_with("/a") {
            break;
        }
    }
    for _ in 0..2 {
        assert!(logs(&time_out_on(&mut p, "a", &mut now)).is_empty());
    }
    assert_eq!(p.status().ejected, 0);
}

#[test]
fn ejection_can_be_turned_off() {
    let mut p = Proxy::new(config(|o| {
        o.timeout = Some(10.0);
        o.eject_after = Some(0.0);
    }));
    online(&mut p, "a");
    online(&mut p, "b");
    let mut now = 0.0;
    for _ in 0..6 {
        time_out_on(&mut p, "a", &mut now);
    }
    assert_eq!(p.status().ejected, 0);
}

#[test]
fn sticky_keeps_a_users_devices_on_one_resource() {
    let mut p = Proxy::new(config(|o| o.strategy = Some("sticky".into())));
    p.seed(5);
    for r in ["a", "b", "c", "d"] {
        online(&mut p, r);
    }
    let first = resource_of(request(&mut p, "user@example.org/phone", "0", H));
    for i in 1..10 {
        let device = if i % 2 == 0 { "phone" } else { "laptop" };
        let v = request(
            &mut p,
            &format!("user@example.org/{device}"),
            &i.to_string(),
            H,
        );
        assert_eq!(resource_of(v), first, "device {device}");
    }
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

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            "[a-z@./\\x00 -]{0,24}",
            Just("service@example.org/a".to_owned()),
            Just("proxy.example/user@example.org/abc".to_owned()),
            Just("proxy.example/@0000".to_owned()),
            Just("x".repeat(10_000)),
            ".{0,40}",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Whatever the fields hold, the router answers with a verdict: no panic, never an
        /// error to a stanza of type error, and addresses only to where it may send.
        #[test]
        fn any_stanza_head_gets_a_verdict(
            heads in proptest::collection::vec(
                (prop_oneof![Just("iq"), Just("message"), Just("presence"), Just("x")],
                 proptest::option::of(prop_oneof![Just("get"), Just("set"), Just("result"), Just("error"), Just("chat"), Just("unavailable"), Just("subscribe"), Just("probe"), Just("bogus")]),
                 field(), field(), field(), proptest::option::of(any::<f64>()), any::<bool>(),
                 proptest::option::of(prop_oneof![Just("service-unavailable"), Just("bad-request")])),
                1..40)
        ) {
            let mut p = proxy();
            online(&mut p, "a");
            let mut now = 0.0;
            for (name, kind, from, to, id, priority, eligible, condition) in &heads {
                let head = Head {
                    name,
                    stanza_type: kind.as_deref(),
                    from: from.as_deref(),
                    to: to.as_deref(),
                    id: id.as_deref(),
                    priority: *priority,
                    eligible: *eligible,
                    condition: condition.as_deref(),
                    lang: None,
                };
                let verdict = p.route(head, now);
                if kind.as_deref() == Some("error") {
                    prop_assert!(!matches!(verdict, Verdict::Error(_)), "{verdict:?}");
                }
                now += 1.0;
                p.tick(now);
            }
            p.tick(now + 100.0);
            prop_assert!(p.pending.is_empty());
        }
    }
}

/// Random sequences of requests, replies, presence changes and clock ticks against a model
/// of RFC 6120's promise: every forwarded get/set ends with exactly one answer.
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const H: &str = "proxy.example";
    const T: &str = "service@example.org";
    const RESOURCES: [&str; 3] = ["a", "b", "c"];
    const REQUESTERS: [&str; 3] = ["u@example.org/1", "u@example.org/2", "v@example.net/x"];

    #[derive(Clone, Debug)]
    enum Op {
        Request {
            who: usize,
            id: u8,
            set: bool,
            /// The verdict never reaches the shim (`Proxy::undo`; the shim answers).
            undone: bool,
        },
        Reply {
            res: usize,
            who: usize,
            id: u8,
            /// None: a result; Some(true): an error that declines; Some(false): another error.
            error: Option<bool>,
            /// The verdict never reaches the shim (`Proxy::undo`; the outbox answers).
            undone: bool,
        },
        Online(usize),
        Offline(usize),
        Revoke,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 0..6u8, any::<bool>(), proptest::bool::weighted(0.1))
                .prop_map(|(who, id, set, undone)| Op::Request { who, id, set, undone }),
            6 => (0..3usize, 0..3usize, 0..6u8, proptest::option::of(any::<bool>()), proptest::bool::weighted(0.1))
                .prop_map(|(res, who, id, error, undone)| Op::Reply { res, who, id, error, undone }),
            2 => (0..3usize).prop_map(Op::Online),
            2 => (0..3usize).prop_map(Op::Offline),
            1 => Just(Op::Revoke),
            2 => (0..8u8).prop_map(Op::Tick),
        ]
    }

    /// What the model knows: open requests by (requester, id) with the number their
    /// stanza is held under, the held numbers, and counts.
    #[derive(Default)]
    struct World {
        open: HashMap<(String, String), Option<u64>>,
        held: std::collections::HashSet<u64>,
        forwarded: u64,
        answered: u64,
    }

    impl World {
        /// An answer to `to` for `id` that lets go of `release`.
        fn answer(&mut self, to: &str, id: &str, release: Option<u64>) {
            let hold = self
                .open
                .remove(&(to.to_owned(), id.to_owned()))
                .expect("answer for a request that is not open");
            assert_eq!(hold, release, "the held stanza is let go with its answer");
            if let Some(n) = release {
                assert!(self.held.remove(&n), "released twice");
            }
            self.answered += 1;
        }

        fn take(&mut self, items: Vec<OutItem>) {
            let (answers, retries) = split(items);
            for r in retries {
                assert!(self.held.contains(&r.seq), "retry of a stanza not held");
                assert!(r.to.starts_with(T));
            }
            for a in answers {
                self.answer(&a.to, &a.id, a.seq);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn every_request_is_answered_exactly_once(ops in proptest::collection::vec(op(), 1..120)) {
            let config = config(|o| {
                o.timeout = Some(5.0);
                o.max_pending = Some(8.0);
                o.max_pending_per_requester = Some(4.0);
            });
            let mut p = Proxy::new(config);
            p.seed(3);
            let mut w = World::default();
            let mut now = 0.0;
            for op in ops {
                match op {
                    Op::Request { who, id, set, undone } => {
                        let id = id.to_string();
                        let kind = if set { "set" } else { "get" };
                        let head = Head { name: "iq", stanza_type: Some(kind), from: Some(REQUESTERS[who]), to: Some(H), id: Some(&id), priority: None, eligible: true, condition: None, lang: None };
                        match p.route(head, now) {
                            verdict @ Verdict::Send(_) if undone => p.undo(&verdict),
                            Verdict::Send(s) => {
                                prop_assert!(s.to.starts_with(T));
                                prop_assert!(s.hold.is_some(), "every forwarded request is held");
                                if let Some(n) = s.hold {
                                    prop_assert!(w.held.insert(n));
                                }
                                prop_assert!(w.open.insert((REQUESTERS[who].into(), id), s.hold).is_none());
                                w.forwarded += 1;
                            }
                            Verdict::Error(_) => {}
                            other => prop_assert!(false, "request got {other:?}"),
                        }
                    }
                    Op::Reply { res, who, id, error, undone } => {
                        let id = id.to_string();
                        let from = format!("{T}/{}", RESOURCES[res]);
                        let to = format!("{H}/{}", REQUESTERS[who]);
                        let kind = if error.is_some() { "error" } else { "result" };
                        let condition = error.map(|declines| if declines { "service-unavailable" } else { "bad-request" });
                        let head = Head { name: "iq", stanza_type: Some(kind), from: Some(&from), to: Some(&to), id: Some(&id), priority: None, eligible: true, condition, lang: None };
                        match p.route(head, now) {
                            verdict @ Verdict::Send(_) if undone => {
                                // The shim drains after a failed verdict: the answer owed.
                                p.undo(&verdict);
                                w.take(p.drain());
                            }
                            Verdict::Send(s) => {
                                prop_assert_eq!(s.from.as_str(), H);
                                w.answer(&s.to, &id, s.release);
                            }
                            Verdict::Drop { drain, .. } => {
                                if drain {
                                    w.take(p.drain());
                                }
                            }
                            other => prop_assert!(false, "reply got {other:?}"),
                        }
                    }
                    Op::Online(res) | Op::Offline(res) => {
                        let from = format!("{T}/{}", RESOURCES[res]);
                        let kind = matches!(op, Op::Offline(_)).then_some("unavailable");
                        let head = Head { name: "presence", stanza_type: kind, from: Some(&from), to: Some(H), id: None, priority: None, eligible: true, condition: None, lang: None };
                        let dropped = matches!(p.route(head, now), Verdict::Drop { .. });
                        prop_assert!(dropped);
                        w.take(p.drain());
                    }
                    Op::Revoke => {
                        let head = Head { name: "presence", stanza_type: Some("unsubscribed"), from: Some(T), to: Some(H), id: None, priority: None, eligible: true, condition: None, lang: None };
                        p.route(head, now);
                        w.take(p.drain());
                    }
                    Op::Tick(dt) => {
                        now += f64::from(dt);
                        w.take(p.tick(now));
                    }
                }
                prop_assert!(p.pending.len() <= 8);
                for r in REQUESTERS {
                    prop_assert!(p.pending.of_requester(r) <= 4);
                }
                prop_assert_eq!(p.pending.len(), w.open.len());
            }
            w.take(p.tick(now + 5.0));
            prop_assert!(w.open.is_empty(), "never answered: {:?}", w.open);
            prop_assert!(p.pending.is_empty());
            prop_assert!(w.held.is_empty(), "held and never let go: {:?}", w.held);
            prop_assert_eq!(w.answered, w.forwarded);
            let c = p.counters;
            prop_assert_eq!(c.forwarded, w.forwarded);
            prop_assert_eq!(c.delivered + c.timed_out + c.lost, w.forwarded, "{:?}", c);
        }
    }
}
