//! Whatever a stanza head holds, the router answers with a verdict.

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
                affinity: None,
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
