//! Presence: the target revoking, users subscribed to the service's availability, and the status.

use super::*;

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
