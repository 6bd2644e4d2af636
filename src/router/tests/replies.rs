//! Replies from the target: delivered only for a tracked request, from the right resource.

use super::*;

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
