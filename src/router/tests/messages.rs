//! Messages both ways, and their bounces.

use super::*;

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
