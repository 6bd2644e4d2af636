//! Stream management: a resource whose stream hibernates leaves the rotation at once, its
//! gets go elsewhere (the first result wins), its sets wait for it; it comes back on
//! resume; mod_smacks' bounces when the hibernation ends never answer twice.

use super::*;

const R2: &str = "other@example.org/x";
const R2_JAT: &str = "proxy.example/other@example.org/x";

/// An error from `res` with this condition (what mod_smacks bounces with, or an answer).
fn error_from(p: &mut Proxy, res: &str, to: &str, id: &str, condition: &str) -> Verdict {
    let from = format!("{T}/{res}");
    let mut h = head("iq", Some("error"), &from, to, id);
    h.condition = Some(condition);
    p.route(h, 1.0)
}

/// A proxy where `a` holds a get "g" from R and a set "s" from R2, and `b` is online.
fn a_holds_a_get_and_a_set() -> (Proxy, u64, u64) {
    let mut p = proxy();
    online(&mut p, "a");
    let g = hold_of(request(&mut p, R, "g", H));
    let s = hold_of(set(&mut p, R2, "s"));
    online(&mut p, "b");
    p.drain();
    (p, g, s)
}

fn resource<'a>(status: &'a Status, name: &str) -> &'a ResourceStatus {
    status.resources.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn a_hibernating_resource_gets_no_new_request_and_is_back_on_resume() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    let out = p.hibernating("a", 0.0);
    assert_eq!(logs(&out).len(), 1, "{out:?}");
    let status = p.status();
    assert_eq!((status.eligible, status.hibernating), (1, 1));
    assert!(resource(&status, "a").hibernating && !resource(&status, "b").hibernating);
    for i in 0..30 {
        assert_eq!(resource_of(request(&mut p, R, &i.to_string(), H)), "b");
        reply(&mut p, "b", "result", R_JAT, &i.to_string());
    }
    let out = p.resumed("a");
    assert_eq!(logs(&out).len(), 1, "{out:?}");
    let seen: std::collections::HashSet<_> = (30..70)
        .map(|i| {
            let to = resource_of(request(&mut p, R, &i.to_string(), H));
            reply(&mut p, &to, "result", R_JAT, &i.to_string());
            to
        })
        .collect();
    assert_eq!(seen.len(), 2, "back in rotation");
    assert_eq!(p.status().hibernating, 0);
}

#[test]
fn the_last_resource_hibernating_is_out_of_rotation_too() {
    let mut p = proxy();
    online(&mut p, "a");
    let out = p.hibernating("a", 0.0);
    assert!(
        out.iter().any(|i| matches!(
            i,
            OutItem::Status {
                level: Level::Warn,
                ..
            }
        )),
        "{out:?}"
    );
    assert!(
        p.status().text.contains("1 hibernating"),
        "{}",
        p.status().text
    );
    assert_eq!(
        request(&mut p, R, "1", H),
        Verdict::Error(ALL_HIBERNATING),
        "refused at once, not queued behind a stream that may never resume"
    );
    assert_eq!(
        message(&mut p, R, H, "chat"),
        Verdict::Error(NO_RESOURCE_FOR_MESSAGE)
    );
    p.resumed("a");
    assert_eq!(resource_of(request(&mut p, R, "2", H)), "a");
    assert_eq!(p.status().level, Level::Ok);
}

#[test]
fn an_ineligible_resource_hibernating_does_not_count() {
    let mut p = proxy();
    let mut h = head("presence", None, "service@example.org/phone", H, "");
    h.eligible = false;
    p.route(h, 0.0);
    p.hibernating("phone", 0.0);
    assert_eq!(request(&mut p, R, "1", H), Verdict::Error(NO_RESOURCE));
    assert_eq!(p.status().hibernating, 0);
}

#[test]
fn its_gets_go_elsewhere_at_once_and_its_sets_wait() {
    let (mut p, g, s) = a_holds_a_get_and_a_set();
    let (answers, retries) = split(p.hibernating("a", 0.0));
    assert!(answers.is_empty(), "{answers:?}");
    assert_eq!(
        retries,
        vec![Retry {
            seq: g,
            to: format!("{T}/b"),
            from: R_JAT.into(),
            stanza_type: "get",
            id: "g".into(),
            lang: None,
        }]
    );
    assert_eq!(p.resources.pending_of("a"), 1, "the set");
    assert_eq!(p.resources.pending_of("b"), 1, "the get");
    assert_eq!(p.status().requests[6], ("retried", 1));
    // The set is answered by a, once it resumed.
    p.resumed("a");
    assert_eq!(
        send(reply(&mut p, "a", "result", R2_JAT, "s")).release,
        Some(s)
    );
    assert!(matches!(
        reply(&mut p, "a", "result", R2_JAT, "s"),
        Verdict::Drop { .. }
    ));
}

#[test]
fn a_moved_get_is_answered_by_the_first_result_of_either_resource() {
    for first in ["a", "b"] {
        let (mut p, g, _) = a_holds_a_get_and_a_set();
        p.hibernating("a", 0.0);
        if first == "a" {
            p.resumed("a");
        }
        let v = reply(&mut p, first, "result", R_JAT, "g");
        assert_eq!(delivered(v.clone()), (R.into(), H.into()), "{first}");
        assert_eq!(send(v).release, Some(g));
        let second = if first == "a" { "b" } else { "a" };
        p.resumed("a");
        let before = p.status().requests[3].1;
        assert!(matches!(
            reply(&mut p, second, "result", R_JAT, "g"),
            Verdict::Drop { .. }
        ));
        assert_eq!(p.status().requests[3], ("unsolicited", before + 1));
        assert_eq!(
            p.resources.pending_of("b"),
            0,
            "b's count let go either way"
        );
        assert_eq!(p.pending.len(), 1, "only the set is left");
    }
}

#[test]
fn an_error_from_the_resource_a_get_left_is_not_its_answer() {
    let (mut p, _, _) = a_holds_a_get_and_a_set();
    p.hibernating("a", 0.0);
    // mod_smacks bounces what it queued for a (0.12: from a's full JID).
    assert!(matches!(
        error_from(&mut p, "a", R_JAT, "g", "recipient-unavailable"),
        Verdict::Drop { .. }
    ));
    assert_eq!(p.pending.len(), 2);
    assert_eq!(
        delivered(reply(&mut p, "b", "result", R_JAT, "g")),
        (R.into(), H.into())
    );
}

#[test]
fn a_get_with_nowhere_else_to_go_waits_for_its_resource() {
    let mut p = proxy();
    online(&mut p, "a");
    let g = hold_of(request(&mut p, R, "g", H));
    let (answers, retries) = split(p.hibernating("a", 0.0));
    assert!(answers.is_empty() && retries.is_empty());
    assert_eq!(p.resources.pending_of("a"), 1);
    p.resumed("a");
    assert_eq!(
        send(reply(&mut p, "a", "result", R_JAT, "g")).release,
        Some(g)
    );
    assert!(p.pending.is_empty());
}

#[test]
fn a_waiting_request_still_times_out_once() {
    let mut p = proxy();
    online(&mut p, "a");
    let g = hold_of(request(&mut p, R, "g", H));
    p.hibernating("a", 0.0);
    let gone = expire(&mut p, 10.0);
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].error, gone[0].seq), (TIMED_OUT, Some(g)));
    assert!(matches!(
        reply(&mut p, "a", "result", R_JAT, "g"),
        Verdict::Drop { .. }
    ));
}

#[test]
fn hibernation_ending_answers_a_waiting_set_once_bounce_first() {
    // Prosody 0.12: the bounce from the full JID, then the unavailable presence.
    let (mut p, _, s) = a_holds_a_get_and_a_set();
    p.hibernating("a", 0.0);
    let v = error_from(&mut p, "a", R2_JAT, "s", "recipient-unavailable");
    assert!(matches!(v, Verdict::Drop { drain: true, .. }), "{v:?}");
    let (answers, retries) = split(p.drain());
    assert!(retries.is_empty());
    assert_eq!(
        answers,
        vec![Answer {
            to: R2.into(),
            from: H.into(),
            id: "s".into(),
            error: RESOURCE_GONE,
            seq: Some(s),
        }]
    );
    let (answers, retries) = offline(&mut p, "a");
    assert!(answers.is_empty() && retries.is_empty(), "nothing twice");
    assert_eq!(p.status().requests[5], ("lost", 1));
}

#[test]
fn hibernation_ending_answers_a_waiting_set_once_presence_only() {
    // The client had acknowledged the set (nothing to bounce), or an error comes from the
    // bare JID (no reply at all): the unavailable presence answers it.
    let (mut p, _, s) = a_holds_a_get_and_a_set();
    p.hibernating("a", 0.0);
    let v = p.route(
        {
            let mut h = head("iq", Some("error"), T, R2_JAT, "s");
            h.condition = Some("recipient-unavailable");
            h
        },
        1.0,
    );
    assert!(matches!(v, Verdict::Drop { .. }));
    let (answers, _) = offline(&mut p, "a");
    assert_eq!(answers.len(), 1);
    assert_eq!((answers[0].error, answers[0].seq), (RESOURCE_GONE, Some(s)));
}

#[test]
fn a_bounced_get_goes_to_a_resource_that_came_online_meanwhile() {
    let mut p = proxy();
    online(&mut p, "a");
    let g = hold_of(request(&mut p, R, "g", H));
    p.hibernating("a", 0.0);
    online(&mut p, "b");
    let v = error_from(&mut p, "a", R_JAT, "g", "recipient-unavailable");
    assert!(matches!(v, Verdict::Drop { drain: true, .. }), "{v:?}");
    let (answers, retries) = split(p.drain());
    assert!(answers.is_empty());
    assert_eq!(
        (retries[0].seq, retries[0].to.as_str()),
        (g, "service@example.org/b")
    );
    offline(&mut p, "a");
    assert_eq!(
        delivered(reply(&mut p, "b", "result", R_JAT, "g")),
        (R.into(), H.into())
    );
}

#[test]
fn an_awake_resources_recipient_unavailable_is_an_answer() {
    let (mut p, g, _) = a_holds_a_get_and_a_set();
    let v = error_from(&mut p, "a", R_JAT, "g", "recipient-unavailable");
    assert_eq!(
        send(v).release,
        Some(g),
        "the implementing client's own answer"
    );
}

#[test]
fn hibernation_is_not_a_failure_and_keeps_an_ejection() {
    let mut p = Proxy::new(config(|o| {
        o.timeout = Some(10.0);
        o.eject_after = Some(1.0);
        o.eject_for = Some(30.0);
    }));
    p.seed(1);
    online(&mut p, "a");
    online(&mut p, "b");
    for _ in 0..5 {
        p.hibernating("a", 0.0);
        p.resumed("a");
    }
    assert_eq!(p.status().ejections, 0);
    let mut now = 0.0;
    time_out_on(&mut p, "a", &mut now);
    assert_eq!(p.status().ejected, 1);
    p.hibernating("a", now);
    assert_eq!(p.status().ejected, 0, "hibernating: in no tier");
    p.resumed("a");
    assert_eq!(p.status().ejected, 1, "the ejection still runs");
    p.tick(now + 31.0);
    assert_eq!(p.status().ejected, 0);
}

#[test]
fn unknown_or_repeated_events_change_nothing() {
    let mut p = proxy();
    assert!(p.hibernating("a", 0.0).is_empty());
    assert!(p.resumed("a").is_empty());
    online(&mut p, "a");
    p.drain();
    assert!(p.resumed("a").is_empty(), "not hibernating");
    assert!(!p.hibernating("a", 0.0).is_empty());
    assert!(p.hibernating("a", 0.0).is_empty(), "already");
    // Going offline ends it: back online, it starts awake.
    offline(&mut p, "a");
    online(&mut p, "a");
    assert_eq!(resource_of(request(&mut p, R, "1", H)), "a");
}

#[test]
fn subscribers_hear_the_service_go_and_come_back() {
    let mut p = proxy();
    user_presence(&mut p, R, "subscribe");
    online(&mut p, "a");
    p.drain();
    let out = p.hibernating("a", 0.0);
    assert_eq!(
        notices(&out),
        vec![("user@example.org".into(), Some("unavailable"))]
    );
    let out = p.resumed("a");
    assert_eq!(notices(&out), vec![("user@example.org".into(), None)]);
}
