//! The router's decisions, one behaviour per test, in a file per flow, and a model test of
//! the promise that every forwarded request is answered exactly once (`model`). The
//! helpers every flow uses are here.

mod affinity;
mod arbitrary_input;
mod hibernation;
mod limits;
mod loss;
mod messages;
mod model;
mod options;
mod outbound;
mod pool;
mod presence;
mod replies;
mod requests;
mod undo;

use super::*;
use crate::config::Options;
use crate::verdict::*;

const H: &str = "proxy.example";
const T: &str = "service@example.org";
const R: &str = "user@example.org/abc";
const R_JAT: &str = "proxy.example/user@example.org/abc";

/// The options of a test proxy: target T on host H, changed by `f`.
fn config(f: impl FnOnce(&mut Options)) -> Config {
    let mut options = Options {
        target_address: Some(T.into()),
        ..Options::default()
    };
    f(&mut options);
    Config::new(H, &options).unwrap()
}

fn proxy() -> Proxy {
    let mut p = Proxy::new(config(|o| o.timeout = Some(10.0)));
    p.seed(1);
    p
}

fn head<'a>(
    name: &'a str,
    stanza_type: Option<&'a str>,
    from: &'a str,
    to: &'a str,
    id: &'a str,
) -> Head<'a> {
    Head {
        name,
        stanza_type,
        from: Some(from),
        to: Some(to),
        id: Some(id),
        priority: None,
        eligible: true,
        condition: None,
        lang: None,
        affinity: None,
    }
}

/// An answer the outbox owes: (to, from, id, error, held stanza released).
#[derive(Debug, PartialEq)]
struct Answer {
    to: String,
    from: String,
    id: String,
    error: StanzaError,
    seq: Option<u64>,
}

/// A held stanza to send again.
#[derive(Debug, PartialEq)]
struct Retry {
    seq: u64,
    to: String,
    from: String,
    /// The request's type, id and xml:lang: what the shim rebuilds it with around its
    /// payload.
    stanza_type: &'static str,
    id: String,
    lang: Option<String>,
}

/// The outbox's answers and retries (presence notices and status are left out).
fn split(items: Vec<OutItem>) -> (Vec<Answer>, Vec<Retry>) {
    let (mut answers, mut retries) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            OutItem::Error {
                to,
                from,
                id,
                error,
                release,
            } => answers.push(Answer {
                to,
                from,
                id,
                error,
                seq: release,
            }),
            OutItem::Resend {
                held,
                to,
                from,
                stanza_type,
                id,
                lang,
            } => retries.push(Retry {
                seq: held,
                to,
                from,
                stanza_type,
                id,
                lang,
            }),
            _ => {}
        }
    }
    (answers, retries)
}

/// The answers a tick at `now` owes.
fn expire(p: &mut Proxy, now: f64) -> Vec<Answer> {
    split(p.tick(now)).0
}

fn send(v: Verdict) -> Send {
    match v {
        Verdict::Send(s) => s,
        other => panic!("not sent: {other:?}"),
    }
}

/// The number a forwarded get is held under.
fn hold_of(v: Verdict) -> u64 {
    send(v).hold.expect("a forwarded get is held")
}

/// (to, from) of a forwarded request.
fn forwarded(v: Verdict) -> (String, String) {
    let s = send(v);
    assert!(s.release.is_none() && s.id.is_none(), "{s:?}");
    (s.to, s.from)
}

/// (to, from) of a delivered answer.
fn delivered(v: Verdict) -> (String, String) {
    let s = send(v);
    assert!(s.hold.is_none() && s.id.is_none(), "{s:?}");
    (s.to, s.from)
}

/// A send verdict with these addresses, id, held and released numbers.
fn sent(
    to: &str,
    from: &str,
    id: Option<&str>,
    hold: Option<u64>,
    release: Option<u64>,
) -> Verdict {
    Verdict::Send(Send {
        to: to.into(),
        from: from.into(),
        id: id.map(str::to_owned),
        hold,
        release,
    })
}

fn presence(p: &mut Proxy, res: &str, kind: Option<&str>) {
    let from = format!("{T}/{res}");
    let v = p.route(head("presence", kind, &from, H, ""), 0.0);
    assert!(matches!(v, Verdict::Drop { .. }), "{v:?}");
}

fn online(p: &mut Proxy, res: &str) {
    presence(p, res, None);
}

fn offline(p: &mut Proxy, res: &str) -> (Vec<Answer>, Vec<Retry>) {
    presence(p, res, Some("unavailable"));
    split(p.drain())
}

fn request(p: &mut Proxy, from: &str, id: &str, to: &str) -> Verdict {
    p.route(head("iq", Some("get"), from, to, id), 0.0)
}

fn set(p: &mut Proxy, from: &str, id: &str) -> Verdict {
    p.route(head("iq", Some("set"), from, H, id), 0.0)
}

fn reply(p: &mut Proxy, res: &str, kind: &str, to: &str, id: &str) -> Verdict {
    let from = format!("{T}/{res}");
    p.route(head("iq", Some(kind), &from, to, id), 1.0)
}

fn message(p: &mut Proxy, from: &str, to: &str, kind: &str) -> Verdict {
    p.route(head("message", Some(kind), from, to, ""), 0.0)
}

/// The presence items the outbox holds: (to, type).
fn notices(items: &[OutItem]) -> Vec<(String, Option<&'static str>)> {
    items
        .iter()
        .filter_map(|item| match item {
            OutItem::Presence {
                to,
                from,
                presence_type,
            } => {
                assert_eq!(from, H);
                Some((to.clone(), *presence_type))
            }
            _ => None,
        })
        .collect()
}

/// The subscriber lists the outbox asks to store.
fn stored(items: &[OutItem]) -> Vec<Vec<String>> {
    items
        .iter()
        .filter_map(|item| match item {
            OutItem::Subscribers(list) => Some(list.clone()),
            _ => None,
        })
        .collect()
}

fn user_presence(p: &mut Proxy, from: &str, kind: &str) -> Vec<OutItem> {
    let v = p.route(head("presence", Some(kind), from, H, ""), 0.0);
    assert!(matches!(v, Verdict::Drop { drain: true, .. }), "{v:?}");
    p.drain()
}

fn decline(p: &mut Proxy, res: &str, id: &str, now: f64) -> Verdict {
    let from = format!("{T}/{res}");
    let mut h = head("iq", Some("error"), &from, R_JAT, id);
    h.condition = Some("service-unavailable");
    p.route(h, now)
}

/// The resource a forwarded request went to.
fn resource_of(v: Verdict) -> String {
    let to = forwarded(v).0;
    to.rsplit('/').next().unwrap().to_owned()
}

/// Lets `res` time out once (a request to it from its own requester, then the clock).
fn time_out_on(p: &mut Proxy, res: &str, now: &mut f64) -> Vec<OutItem> {
    for i in 0..100 {
        let who = format!("u{i}@example.org/{res}");
        let v = p.route(head("iq", Some("get"), &who, H, "t"), *now);
        let to = forwarded(v).0;
        if to.ends_with(&format!("/{res}")) {
            *now += 11.0;
            return p.tick(*now);
        }
        // Went elsewhere: answer it at once.
        let other = to.rsplit('/').next().unwrap().to_owned();
        let jat = format!("{H}/{who}");
        let reply_from = format!("{T}/{other}");
        p.route(head("iq", Some("result"), &reply_from, &jat, "t"), *now);
    }
    panic!("{res} never chosen");
}

fn logs(items: &[OutItem]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            OutItem::Log(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}
