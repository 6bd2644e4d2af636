//! Random sequences of requests, replies, presence changes, clock ticks and undone
//! verdicts against a model of RFC 6120's promise: every forwarded get/set ends with
//! exactly one answer.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const RESOURCES: [&str; 3] = ["a", "b", "c"];
const REQUESTERS: [&str; 3] = ["u@example.org/1", "u@example.org/2", "v@example.net/x"];

#[derive(Clone, Debug)]
enum Op {
    Request {
        who: usize,
        id: u8,
        set: bool,
        /// The verdict never reaches the shim (`Proxy::undo`; the shim answers).
        undone: bool,
    },
    Reply {
        res: usize,
        who: usize,
        id: u8,
        /// None: a result; Some(true): an error that declines; Some(false): another error.
        error: Option<bool>,
        /// The verdict never reaches the shim (`Proxy::undo`; the outbox answers).
        undone: bool,
    },
    Online(usize),
    Offline(usize),
    /// Its stream hibernates (stream management).
    Hibernate(usize),
    /// Its hibernating stream was resumed.
    Resume(usize),
    /// mod_smacks bounces a stanza it queued for it: recipient-unavailable from its
    /// full JID.
    Bounce {
        res: usize,
        who: usize,
        id: u8,
    },
    Revoke,
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..6u8, any::<bool>(), proptest::bool::weighted(0.1))
            .prop_map(|(who, id, set, undone)| Op::Request { who, id, set, undone }),
        6 => (0..3usize, 0..3usize, 0..6u8, proptest::option::of(any::<bool>()), proptest::bool::weighted(0.1))
            .prop_map(|(res, who, id, error, undone)| Op::Reply { res, who, id, error, undone }),
        2 => (0..3usize).prop_map(Op::Online),
        2 => (0..3usize).prop_map(Op::Offline),
        2 => (0..3usize).prop_map(Op::Hibernate),
        2 => (0..3usize).prop_map(Op::Resume),
        2 => (0..3usize, 0..3usize, 0..6u8).prop_map(|(res, who, id)| Op::Bounce { res, who, id }),
        1 => Just(Op::Revoke),
        2 => (0..8u8).prop_map(Op::Tick),
    ]
}

/// What the model knows: open requests by (requester, id) with the number their
/// stanza is held under, the held numbers, and counts.
#[derive(Default)]
struct World {
    open: HashMap<(String, String), Option<u64>>,
    held: std::collections::HashSet<u64>,
    forwarded: u64,
    answered: u64,
}

impl World {
    /// An answer to `to` for `id` that lets go of `release`.
    fn answer(&mut self, to: &str, id: &str, release: Option<u64>) {
        let hold = self
            .open
            .remove(&(to.to_owned(), id.to_owned()))
            .expect("answer for a request that is not open");
        assert_eq!(hold, release, "the held stanza is let go with its answer");
        if let Some(n) = release {
            assert!(self.held.remove(&n), "released twice");
        }
        self.answered += 1;
    }

    fn take(&mut self, items: Vec<OutItem>) {
        let (answers, retries) = split(items);
        for r in retries {
            assert!(self.held.contains(&r.seq), "retry of a stanza not held");
            assert!(r.to.starts_with(T));
        }
        for a in answers {
            self.answer(&a.to, &a.id, a.seq);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_request_is_answered_exactly_once(ops in proptest::collection::vec(op(), 1..120)) {
        let config = config(|o| {
            o.timeout = Some(5.0);
            o.max_pending = Some(8.0);
            o.max_pending_per_requester = Some(4.0);
        });
        let mut p = Proxy::new(config);
        p.seed(3);
        let mut w = World::default();
        let mut now = 0.0;
        for op in ops {
            match op {
                Op::Request { who, id, set, undone } => {
                    let id = id.to_string();
                    let kind = if set { "set" } else { "get" };
                    let head = Head { name: "iq", stanza_type: Some(kind), from: Some(REQUESTERS[who]), to: Some(H), id: Some(&id), priority: None, eligible: true, condition: None, lang: None, affinity: None };
                    match p.route(head, now) {
                        verdict @ Verdict::Send(_) if undone => p.undo(&verdict),
                        Verdict::Send(s) => {
                            prop_assert!(s.to.starts_with(T));
                            prop_assert!(s.hold.is_some(), "every forwarded request is held");
                            if let Some(n) = s.hold {
                                prop_assert!(w.held.insert(n));
                            }
                            prop_assert!(w.open.insert((REQUESTERS[who].into(), id), s.hold).is_none());
                            w.forwarded += 1;
                        }
                        Verdict::Error(_) => {}
                        other => prop_assert!(false, "request got {other:?}"),
                    }
                }
                Op::Reply { res, who, id, error, undone } => {
                    let id = id.to_string();
                    let from = format!("{T}/{}", RESOURCES[res]);
                    let to = format!("{H}/{}", REQUESTERS[who]);
                    let kind = if error.is_some() { "error" } else { "result" };
                    let condition = error.map(|declines| if declines { "service-unavailable" } else { "bad-request" });
                    let head = Head { name: "iq", stanza_type: Some(kind), from: Some(&from), to: Some(&to), id: Some(&id), priority: None, eligible: true, condition, lang: None, affinity: None };
                    match p.route(head, now) {
                        verdict @ Verdict::Send(_) if undone => {
                            // The shim drains after a failed verdict: the answer owed.
                            p.undo(&verdict);
                            w.take(p.drain());
                        }
                        Verdict::Send(s) => {
                            prop_assert_eq!(s.from.as_str(), H);
                            w.answer(&s.to, &id, s.release);
                        }
                        Verdict::Drop { drain, .. } => {
                            if drain {
                                w.take(p.drain());
                            }
                        }
                        other => prop_assert!(false, "reply got {other:?}"),
                    }
                }
                Op::Online(res) | Op::Offline(res) => {
                    let from = format!("{T}/{}", RESOURCES[res]);
                    let kind = matches!(op, Op::Offline(_)).then_some("unavailable");
                    let head = Head { name: "presence", stanza_type: kind, from: Some(&from), to: Some(H), id: None, priority: None, eligible: true, condition: None, lang: None, affinity: None };
                    let dropped = matches!(p.route(head, now), Verdict::Drop { .. });
                    prop_assert!(dropped);
                    w.take(p.drain());
                }
                Op::Hibernate(res) => w.take(p.hibernating(RESOURCES[res], now)),
                Op::Resume(res) => w.take(p.resumed(RESOURCES[res])),
                Op::Bounce { res, who, id } => {
                    let id = id.to_string();
                    let from = format!("{T}/{}", RESOURCES[res]);
                    let to = format!("{H}/{}", REQUESTERS[who]);
                    let head = Head { name: "iq", stanza_type: Some("error"), from: Some(&from), to: Some(&to), id: Some(&id), priority: None, eligible: true, condition: Some("recipient-unavailable"), lang: None, affinity: None };
                    match p.route(head, now) {
                        Verdict::Send(s) => w.answer(&s.to, &id, s.release),
                        Verdict::Drop { drain, .. } => {
                            if drain {
                                w.take(p.drain());
                            }
                        }
                        other => prop_assert!(false, "bounce got {other:?}"),
                    }
                }
                Op::Revoke => {
                    let head = Head { name: "presence", stanza_type: Some("unsubscribed"), from: Some(T), to: Some(H), id: None, priority: None, eligible: true, condition: None, lang: None, affinity: None };
                    p.route(head, now);
                    w.take(p.drain());
                }
                Op::Tick(dt) => {
                    now += f64::from(dt);
                    w.take(p.tick(now));
                }
            }
            prop_assert!(p.pending.len() <= 8);
            for r in REQUESTERS {
                prop_assert!(p.pending.of_requester(r) <= 4);
            }
            prop_assert_eq!(p.pending.len(), w.open.len());
            let counted: u32 = p.resources.iter().map(|r| r.pending).sum();
            prop_assert_eq!(counted as usize, p.pending.len(), "the resources' counts");
        }
        w.take(p.tick(now + 5.0));
        prop_assert!(w.open.is_empty(), "never answered: {:?}", w.open);
        prop_assert!(p.pending.is_empty());
        prop_assert!(w.held.is_empty(), "held and never let go: {:?}", w.held);
        prop_assert_eq!(w.answered, w.forwarded);
        let c = p.counters;
        prop_assert_eq!(c.forwarded, w.forwarded);
        prop_assert_eq!(c.delivered + c.timed_out + c.lost, w.forwarded, "{:?}", c);
    }
}
