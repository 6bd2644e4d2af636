//! End-to-end tests of affinity by request content (README: "Behaviour", affinity), as
//! Jitsi Meet needs it with several Jicofos behind one focus address: every request for
//! one room (`<conference xmlns='http://jitsi.org/protocol/focus' room='...'/>`) reaches
//! the resource that has that room, through joins, drains and a loss.
//!
//! H = proxy.localhost (the component), T = service@localhost (the implementing client's
//! account), U = user@localhost/abc. Needs the release library: `make build` first.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::client::*;
use support::implementer::*;
use support::metrics::*;
use support::setup::*;
use support::shell::*;
use support::{free_port, Prosody};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;

/// Jitsi Meet's focus namespace, whose `<conference room='...'/>` names the room.
const FOCUS_NS: &str = "http://jitsi.org/protocol/focus";

/// The rule Jitsi needs: the room of a conference request is its key.
const RULE: &str =
    "client_proxy_affinity = { \"{http://jitsi.org/protocol/focus}conference@room\" }";

/// `<conference xmlns=FOCUS_NS room='<room>@conference.localhost' machine-uid='...'/>`, as
/// Jitsi Meet's clients send it to the focus.
fn conference(room: &str) -> Element {
    Element::builder("conference", FOCUS_NS)
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("room").to_owned(),
            format!("{room}@conference.localhost"),
        )
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("machine-uid").to_owned(),
            "0123456789abcdef",
        )
        .build()
}

/// A set to H for `room`; returns the resource that answered it (an echo result).
async fn ask(r: &mut Xmpp, room: &str, n: &mut usize) -> String {
    *n += 1;
    let id = format!("{room}-{n}");
    let iq = Iq::Set {
        from: None,
        to: Some(jid(PROXY)),
        id: id.clone(),
        payload: conference(room),
    };
    let answer = r.must_request(iq, ANSWER).await;
    answered_by(&answer).unwrap_or_else(|| panic!("{id}: not an echo: {}", iq_xml(&answer)))
}

/// Asks for every room of `holders` twice; each must be answered by its holder.
async fn assert_rooms_stay(
    r: &mut Xmpp,
    holders: &BTreeMap<String, String>,
    n: &mut usize,
    when: &str,
) {
    for _ in 0..2 {
        for (room, holder) in holders {
            let got = ask(r, room, n).await;
            assert_eq!(
                &got, holder,
                "{when}: {room} moved from /{holder} to /{got}"
            );
        }
    }
}

/// Asks for each of `rooms` once (their first request) and records who has each.
async fn open_rooms(
    r: &mut Xmpp,
    rooms: impl IntoIterator<Item = String>,
    holders: &mut BTreeMap<String, String>,
    n: &mut usize,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for room in rooms {
        let got = ask(r, &room, n).await;
        used.insert(got.clone());
        holders.insert(room, got);
    }
    used
}

/// Waits until H's shell listing shows `resource` in `pool` with `keys` affinity keys.
async fn wait_keys(prosody: &Prosody, want: &[(&str, &str, usize)]) -> String {
    shell_until(
        prosody,
        &format!("client_proxy:resources({PROXY:?})"),
        |out| {
            want.iter().all(|(name, pool, keys)| {
                resource_line(out, name).is_some_and(|l| {
                    l.split_whitespace().nth(3) == Some(*pool)
                        && l.contains(&format!(", {keys} keys"))
                })
            })
        },
    )
    .await
}

/// The rooms `holders` gives `resource`.
fn rooms_of(holders: &BTreeMap<String, String>, resource: &str) -> usize {
    holders.values().filter(|h| *h == resource).count()
}

// 1. Three Jicofos (round robin, so that rooms spread): rooms stay on their resource
// when a resource joins (it takes only new rooms), while one drains (negative priority:
// it keeps its rooms, gets no new one) and when one is lost (only its rooms move, once,
// and then stay). Requests without a room are routed by the strategy meanwhile. The
// shell lists keys per resource; the metrics count keys and moves.
#[tokio::test]
async fn rooms_stay_on_their_resource_through_joins_drains_and_a_loss() {
    let http = free_port();
    let prosody = server_with(
        &[RULE, "client_proxy_strategy = \"round_robin\""],
        &["http_openmetrics"],
        &metrics_globals(http),
    );
    let jicofo1 = implementer(&prosody, "jicofo1").await;
    let mut jicofo2 = implementer(&prosody, "jicofo2").await;
    let mut r = requester(&prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["jicofo1", "jicofo2"]).await;
    let mut n = 0;

    // Eight rooms over two resources; each stays where its first request went.
    let mut holders = BTreeMap::new();
    let used = open_rooms(
        &mut r,
        (0..8).map(|i| format!("room{i}")),
        &mut holders,
        &mut n,
    )
    .await;
    assert_eq!(
        used.len(),
        2,
        "round robin gives rooms to both: {holders:?}"
    );
    assert_rooms_stay(&mut r, &holders, &mut n, "two resources").await;
    // Requests without a room still alternate.
    let plain: BTreeSet<String> = {
        let mut seen = BTreeSet::new();
        for i in 0..4 {
            let id = format!("plain-{i}");
            let iq = r
                .must_request(get(PROXY, &id, test_payload(&id)), ANSWER)
                .await;
            seen.insert(answered_by(&iq).expect("echo"));
        }
        seen
    };
    assert_eq!(
        plain.len(),
        2,
        "requests without a key are routed by the strategy"
    );

    // A join: /jicofo3 takes no existing room, and gets a share of new ones.
    let jicofo3 = implementer(&prosody, "jicofo3").await;
    wait_online(&prosody, &["jicofo3"]).await;
    assert_rooms_stay(&mut r, &holders, &mut n, "after /jicofo3 joined").await;
    let used = open_rooms(
        &mut r,
        (8..14).map(|i| format!("room{i}")),
        &mut holders,
        &mut n,
    )
    .await;
    assert!(
        used.contains("jicofo3"),
        "new rooms reach the new resource: {holders:?}"
    );
    let (k1, k2, k3) = (
        rooms_of(&holders, "jicofo1"),
        rooms_of(&holders, "jicofo2"),
        rooms_of(&holders, "jicofo3"),
    );
    eprintln!(
        "{}",
        wait_keys(
            &prosody,
            &[
                ("jicofo1", "active", k1),
                ("jicofo2", "active", k2),
                ("jicofo3", "active", k3)
            ]
        )
        .await
    );

    // /jicofo1 drains (priority -1): it keeps its rooms and gets no new one.
    jicofo1.send(available(Some(-1), None));
    wait_keys(&prosody, &[("jicofo1", "draining", k1)]).await;
    assert_rooms_stay(&mut r, &holders, &mut n, "while /jicofo1 drains").await;
    let mut fresh = BTreeMap::new();
    let used = open_rooms(
        &mut r,
        (14..20).map(|i| format!("room{i}")),
        &mut fresh,
        &mut n,
    )
    .await;
    assert!(
        !used.contains("jicofo1"),
        "a draining resource got a new room: {fresh:?}"
    );
    holders.extend(fresh);

    // /jicofo2 is lost: only its rooms move (to the one active resource left), once.
    let lost: Vec<String> = holders
        .iter()
        .filter(|(_, h)| *h == "jicofo2")
        .map(|(room, _)| room.clone())
        .collect();
    assert!(!lost.is_empty());
    jicofo2.stop().await;
    wait_offline(&prosody, &["jicofo2"]).await;
    for room in &lost {
        let got = ask(&mut r, room, &mut n).await;
        assert_eq!(got, "jicofo3", "{room} of the lost /jicofo2 went to /{got}");
        holders.insert(room.clone(), got);
    }
    assert_rooms_stay(&mut r, &holders, &mut n, "after /jicofo2 was lost").await;
    let (k1, k3) = (rooms_of(&holders, "jicofo1"), rooms_of(&holders, "jicofo3"));
    eprintln!(
        "{}",
        wait_keys(
            &prosody,
            &[("jicofo1", "draining", k1), ("jicofo3", "active", k3)]
        )
        .await
    );

    let keys = format!("{METRIC}__affinity_keys");
    let moves = format!("{METRIC}__affinity_moves_total");
    wait_metrics(
        http,
        PROXY,
        &[
            (&keys, None, holders.len() as f64),
            (&moves, None, lost.len() as f64),
        ],
    )
    .await;
    drop(jicofo3);
    prosody.assert_no_tracebacks();
}
