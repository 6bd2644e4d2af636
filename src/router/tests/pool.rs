//! The target's resources: who is online and eligible, priorities, ejection, stickiness.

use super::*;

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
