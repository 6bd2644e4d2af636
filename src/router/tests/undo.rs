//! `Proxy::undo`: a verdict the binding could not hand to Lua, and exactly one answer still.

use super::*;

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
