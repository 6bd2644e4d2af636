//! Affinity by request content: requests with one key go to the resource that has it
//! (`client_proxy_affinity`), through joins, drains, losses, retries and idle expiry; and
//! a model test of the promise that a key is never on two resources nor on one that is
//! gone.

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const RULE: &str = "{http://jitsi.org/protocol/focus}conference@room";

fn affine() -> Proxy {
    let mut p = Proxy::new(config(|o| {
        o.timeout = Some(10.0);
        o.affinity = Some(vec![RULE.into()]);
        o.affinity_idle = Some(100.0);
    }));
    p.seed(1);
    p
}

/// A get from `from` with affinity key `key` at `now`.
fn keyed(p: &mut Proxy, from: &str, id: &str, key: &str, now: f64) -> Verdict {
    let mut h = head("iq", Some("get"), from, H, id);
    h.affinity = Some(key);
    p.route(h, now)
}

/// The resource a request for `room` goes to now (answered at once).
fn room(p: &mut Proxy, room: &str, now: f64) -> String {
    let v = keyed(p, R, "q", room, now);
    let res = resource_of(v);
    let from = format!("{T}/{res}");
    let v = p.route(head("iq", Some("result"), &from, R_JAT, "q"), now);
    assert!(matches!(v, Verdict::Send(_)), "{v:?}");
    res
}

fn draining(p: &mut Proxy, res: &str) {
    let from = format!("{T}/{res}");
    let mut h = head("presence", None, &from, H, "");
    h.priority = Some(-1.0);
    p.route(h, 0.0);
}

/// Keys per resource, as the status shows them.
fn keys(p: &Proxy) -> HashMap<String, usize> {
    p.status()
        .resources
        .into_iter()
        .map(|r| (r.name, r.keys))
        .collect()
}

fn rooms(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("room{i}@conference.example.org"))
        .collect()
}

#[test]
fn a_key_goes_to_one_resource_and_keys_spread() {
    let mut p = affine();
    for res in ["a", "b", "c"] {
        online(&mut p, res);
    }
    let names = rooms(30);
    let first: Vec<String> = names.iter().map(|r| room(&mut p, r, 0.0)).collect();
    for _ in 0..3 {
        let again: Vec<String> = names.iter().map(|r| room(&mut p, r, 1.0)).collect();
        assert_eq!(again, first);
    }
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 3);
    let per = keys(&p);
    assert_eq!(per.values().sum::<usize>(), 30);
    for (res, n) in &per {
        assert_eq!(*n, first.iter().filter(|r| *r == res).count());
    }
    let status = p.status();
    assert_eq!((status.keys, status.moves), (30, 0));
}

#[test]
fn without_rules_a_key_is_ignored() {
    let mut p = proxy();
    online(&mut p, "a");
    online(&mut p, "b");
    let seen: HashSet<String> = (0..40)
        .map(|i| resource_of(keyed(&mut p, R, &i.to_string(), "room", 0.0)))
        .collect();
    assert_eq!(seen.len(), 2, "routed by the strategy alone");
    assert_eq!(p.status().keys, 0);
}

#[test]
fn draining_keeps_its_keys_and_gets_no_new_ones() {
    let mut p = affine();
    online(&mut p, "a");
    online(&mut p, "b");
    let names = rooms(20);
    let first: Vec<String> = names.iter().map(|r| room(&mut p, r, 0.0)).collect();
    let on_a = first.iter().filter(|r| *r == "a").count();
    assert!(on_a > 0 && on_a < 20);
    draining(&mut p, "a");
    let again: Vec<String> = names.iter().map(|r| room(&mut p, r, 1.0)).collect();
    assert_eq!(again, first, "a drains: its rooms stay");
    for r in rooms(60).iter().skip(20) {
        assert_eq!(room(&mut p, r, 1.0), "b", "new rooms go to b alone");
    }
    assert_eq!(keys(&p)["a"], on_a);
    assert_eq!(p.status().moves, 0);
}

#[test]
fn a_loss_moves_only_the_lost_resources_keys_and_they_stay_where_they_went() {
    let mut p = affine();
    for res in ["a", "b", "c"] {
        online(&mut p, res);
    }
    let names = rooms(30);
    let first: Vec<String> = names.iter().map(|r| room(&mut p, r, 0.0)).collect();
    let on_b = first.iter().filter(|r| *r == "b").count();
    offline(&mut p, "b");
    let after: Vec<String> = names.iter().map(|r| room(&mut p, r, 1.0)).collect();
    for (before, now) in first.iter().zip(&after) {
        if before == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(now, before, "a room of a resource still online stays");
        }
    }
    assert_eq!(p.status().moves, on_b as u64);
    online(&mut p, "b");
    let later: Vec<String> = names.iter().map(|r| room(&mut p, r, 2.0)).collect();
    assert_eq!(later, after, "b back: it takes none of its old rooms back");
    assert_eq!(keys(&p)["b"], 0);
}

#[test]
fn a_resource_that_comes_online_takes_no_existing_key() {
    let mut p = affine();
    online(&mut p, "a");
    let names = rooms(20);
    for r in &names {
        assert_eq!(room(&mut p, r, 0.0), "a");
    }
    online(&mut p, "b");
    for r in &names {
        assert_eq!(room(&mut p, r, 1.0), "a");
    }
    let new: HashSet<String> = rooms(60)
        .iter()
        .skip(20)
        .map(|r| room(&mut p, r, 1.0))
        .collect();
    assert!(new.contains("b"), "new rooms may go to b");
}

#[test]
fn a_declined_request_takes_its_key_along() {
    let mut p = affine();
    online(&mut p, "a");
    online(&mut p, "b");
    let first = resource_of(keyed(&mut p, R, "1", "room", 0.0));
    let other = if first == "a" { "b" } else { "a" };
    decline(&mut p, &first, "1", 0.0);
    let (_, retries) = split(p.drain());
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].to, format!("{T}/{other}"));
    assert_eq!(
        room(&mut p, "room", 1.0),
        other,
        "the key followed its request"
    );
    assert_eq!(p.status().moves, 1);
}

#[test]
fn lost_gets_of_one_key_are_retried_together_and_the_key_follows() {
    let mut p = affine();
    for res in ["a", "b", "c"] {
        online(&mut p, res);
    }
    let first = resource_of(keyed(&mut p, R, "1", "room", 0.0));
    assert_eq!(resource_of(keyed(&mut p, R, "2", "room", 0.0)), first);
    let (answers, retries) = offline(&mut p, &first);
    assert!(answers.is_empty());
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0].to, retries[1].to, "one key, one resource");
    let went = retries[0].to.rsplit('/').next().unwrap().to_owned();
    assert_eq!(resource_of(keyed(&mut p, R, "3", "room", 1.0)), went);
    assert_eq!(keys(&p)[&went], 1);
}

#[test]
fn an_ejected_resource_loses_its_keys() {
    let mut p = affine();
    online(&mut p, "good");
    online(&mut p, "silent");
    let names = rooms(20);
    let first: Vec<String> = names.iter().map(|r| room(&mut p, r, 0.0)).collect();
    assert!(first.iter().any(|r| r == "silent"));
    let mut now = 0.0;
    for _ in 0..3 {
        time_out_on(&mut p, "silent", &mut now);
    }
    assert!(p
        .status()
        .resources
        .iter()
        .any(|r| r.ejected_until.is_some()));
    for r in &names {
        assert_eq!(room(&mut p, r, now), "good");
    }
    assert_eq!(keys(&p)["silent"], 0);
}

#[test]
fn idle_keys_are_forgotten() {
    let mut p = affine();
    online(&mut p, "a");
    room(&mut p, "old", 0.0);
    room(&mut p, "busy", 0.0);
    room(&mut p, "busy", 50.0);
    p.tick(100.0);
    assert_eq!(p.status().keys, 2, "100 s: not more than the idle time");
    p.tick(101.0);
    assert_eq!(p.status().keys, 1, "more than 100 s without a request");
    p.tick(151.0);
    assert_eq!((p.status().keys, keys(&p)["a"]), (0, 0));
}

#[test]
fn other_rules_forget_the_keys_and_a_new_idle_keeps_them() {
    let mut p = affine();
    online(&mut p, "a");
    room(&mut p, "room", 0.0);
    p.reconfigure(config(|o| {
        o.timeout = Some(10.0);
        o.affinity = Some(vec![RULE.into()]);
        o.affinity_idle = Some(5.0);
    }));
    assert_eq!(p.status().keys, 1);
    p.tick(6.0);
    assert_eq!(p.status().keys, 0, "the new idle applies");
    room(&mut p, "room", 7.0);
    p.reconfigure(config(|o| {
        o.timeout = Some(10.0);
        o.affinity = Some(vec!["{urn:other}x@y".into()]);
    }));
    assert_eq!(p.status().keys, 0);
}

#[derive(Clone, Debug)]
enum Op {
    /// A get or set with key `key` from requester `who`.
    Request {
        who: usize,
        key: u8,
        set: bool,
    },
    /// The resource answers the request `who` sent it last: a result, or a decline.
    Reply {
        who: usize,
        decline: bool,
    },
    /// Online with priority 0 or -1 (draining), or not eligible.
    Online {
        res: usize,
        priority: i8,
        eligible: bool,
    },
    Offline(usize),
    Revoke,
    Tick(u8),
}

const RESOURCES: [&str; 3] = ["a", "b", "c"];
const WHO: [&str; 3] = ["u@example.org/1", "v@example.org/2", "w@example.net/3"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, 0..6u8, proptest::bool::weighted(0.2))
            .prop_map(|(who, key, set)| Op::Request { who, key, set }),
        4 => (0..3usize, proptest::bool::weighted(0.3)).prop_map(|(who, decline)| Op::Reply { who, decline }),
        3 => (0..3usize, -1..1i8, proptest::bool::weighted(0.9))
            .prop_map(|(res, priority, eligible)| Op::Online { res, priority, eligible }),
        2 => (0..3usize).prop_map(Op::Offline),
        1 => Just(Op::Revoke),
        2 => (0..30u8).prop_map(Op::Tick),
    ]
}

/// What the model knows of the keys: which resource has each (while it is in rotation),
/// and when each key was last asked for.
#[derive(Default)]
struct Keys {
    holder: HashMap<String, String>,
    last: HashMap<String, f64>,
    /// The key of each held request, by hold number.
    held: HashMap<u64, String>,
    /// (to, from, key) of the last request each requester sent, if still open.
    open: HashMap<usize, (String, String, u64)>,
}

impl Keys {
    /// A request (or a retry) with `key` went to `res`: the key must be there if it had a
    /// resource in rotation; else it is there now, if `res` is in rotation (else it stays
    /// where it was).
    fn went(&mut self, p: &Proxy, key: &str, res: &str, retry: bool) -> Result<(), TestCaseError> {
        let in_rotation = |r: &str| p.resources.in_rotation(r);
        prop_assert!(
            p.resources.contains(res),
            "{key} sent to {res}, which is offline"
        );
        match self.holder.get(key) {
            Some(h) if in_rotation(h) && !retry => {
                prop_assert_eq!(h, res, "{} has two resources", key)
            }
            // An ejected resource, the last resort, takes no key.
            _ if in_rotation(res) => {
                self.holder.insert(key.to_owned(), res.to_owned());
            }
            _ => {}
        }
        Ok(())
    }

    fn lost(&mut self, res: &str) {
        self.holder.retain(|_, h| h != res);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random requests with keys, replies and declines, presence changes and ticks: a key
    /// is never sent to a resource that is offline, never to two resources while the
    /// first is in rotation, and the status counts the keys each resource has.
    #[test]
    fn a_key_is_on_one_resource_in_rotation(ops in proptest::collection::vec(op(), 1..120)) {
        let mut p = affine();
        let mut m = Keys::default();
        let mut now = 0.0;
        for op in ops {
            match op {
                Op::Request { who, key, set } => {
                    let key = format!("room{key}");
                    if m.open.contains_key(&who) {
                        continue;
                    }
                    let mut h = head("iq", Some(if set { "set" } else { "get" }), WHO[who], H, "q");
                    h.affinity = Some(&key);
                    // Remembered even when no resource takes it (it waits for one).
                    m.last.insert(key.clone(), now);
                    if let Verdict::Send(s) = p.route(h, now) {
                        let res = s.to.rsplit('/').next().unwrap().to_owned();
                        m.went(&p, &key, &res, false)?;
                        let held = s.hold.unwrap();
                        m.held.insert(held, key);
                        m.open.insert(who, (s.to, s.from, held));
                    }
                }
                Op::Reply { who, decline } => {
                    let Some((to, from, _)) = m.open.get(&who).cloned() else { continue };
                    let mut h = head("iq", Some(if decline { "error" } else { "result" }), &to, &from, "q");
                    if decline {
                        h.condition = Some("service-unavailable");
                    }
                    // A decline may eject its resource: the model reads who is in
                    // rotation from the proxy, and the ejected resource's keys are lost.
                    let ejected_before: HashSet<String> = ejected(&p);
                    let v = p.route(h, now);
                    for res in ejected(&p).difference(&ejected_before) {
                        m.lost(res);
                    }
                    if matches!(v, Verdict::Send(_)) {
                        m.open.remove(&who);
                    }
                }
                Op::Online { res, priority, eligible } => {
                    let from = format!("{T}/{}", RESOURCES[res]);
                    let mut h = head("presence", None, &from, H, "");
                    h.priority = Some(f64::from(priority));
                    h.eligible = eligible;
                    p.route(h, now);
                    if !eligible {
                        m.lost(RESOURCES[res]);
                    }
                }
                Op::Offline(res) => {
                    let from = format!("{T}/{}", RESOURCES[res]);
                    p.route(head("presence", Some("unavailable"), &from, H, ""), now);
                    m.lost(RESOURCES[res]);
                }
                Op::Revoke => {
                    p.route(head("presence", Some("unsubscribed"), T, H, ""), now);
                    m.holder.clear();
                }
                Op::Tick(dt) => {
                    now += f64::from(dt);
                    let ejected_before = ejected(&p);
                    let items = p.tick(now);
                    for res in ejected(&p).difference(&ejected_before) {
                        m.lost(res);
                    }
                    let forgotten: Vec<String> = m.last.iter().filter(|(_, t)| now - **t > 100.0).map(|(k, _)| k.clone()).collect();
                    for key in forgotten {
                        m.last.remove(&key);
                        m.holder.remove(&key);
                    }
                    // Timed-out requests are answered: their requesters may ask again.
                    for item in &items {
                        if let OutItem::Error { release: Some(held), .. } = item {
                            m.open.retain(|_, o| o.2 != *held);
                        }
                    }
                    continue;
                }
            }
            // Retries (a decline, a loss) and answers owed, in the outbox.
            for item in p.drain() {
                match item {
                    OutItem::Resend { held, to, from, .. } => {
                        let res = to.rsplit('/').next().unwrap().to_owned();
                        let key = m.held[&held].clone();
                        m.went(&p, &key, &res, true)?;
                        for o in m.open.values_mut().filter(|o| o.2 == held) {
                            *o = (to.clone(), from.clone(), held);
                        }
                    }
                    OutItem::Error { release: Some(held), .. } => {
                        m.open.retain(|_, o| o.2 != held);
                    }
                    _ => {}
                }
            }
            let status = p.status();
            prop_assert_eq!(status.keys, m.last.len());
            for r in &status.resources {
                let held = m.holder.values().filter(|h| **h == r.name).count();
                prop_assert_eq!(r.keys, held, "keys of {}", r.name);
            }
            p.keys.check();
        }
    }
}

/// The resources out of rotation for failing.
fn ejected(p: &Proxy) -> HashSet<String> {
    p.status()
        .resources
        .into_iter()
        .filter(|r| r.ejected_until.is_some())
        .map(|r| r.name)
        .collect()
}
