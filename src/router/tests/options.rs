//! Options: a reload with a new target, and the switches that restore the original's answers.

use super::*;

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
