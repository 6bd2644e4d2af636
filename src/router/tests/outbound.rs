//! Requests the implementing client starts towards users.

use super::*;

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
