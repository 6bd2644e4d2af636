//! Requests whose resource goes away, declines or stays silent: retried where that is
//! safe, else answered once.

use super::*;

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
