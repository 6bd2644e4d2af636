//! A logged-in XMPP client for tests: send stanzas, await the ones you want, keep the rest;
//! stanza builders and accessors (who sent it, a message's body, an `<error/>`), the one
//! [`expect_error`], and roster helpers for subscribers.
//!
//! tokio-xmpp retries failed connections and bad passwords forever, so every wait here is
//! bounded by a timeout.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{timeout, Instant};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::StanzaError;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

/// How long a login may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses a JID, panicking with the text on failure (test input is trusted).
pub fn jid(s: &str) -> Jid {
    Jid::new(s).unwrap_or_else(|e| panic!("bad JID {s:?}: {e}"))
}

/// Parses XML, panicking with the text on failure (test input is trusted).
pub fn xml(s: &str) -> Element {
    s.parse().unwrap_or_else(|e| panic!("bad XML {s:?}: {e:?}"))
}

/// Serializes an element (for messages and the demo's printout).
pub fn to_xml(e: &Element) -> String {
    String::from(e)
}

/// A canonical text form of an element for comparisons: namespace, name, sorted
/// attributes and children, with adjacent text nodes merged and prefixes ignored (the
/// parser may split text and keep prefix declarations that do not change the meaning).
pub fn canonical(e: &Element) -> String {
    let mut attrs: Vec<String> = e
        .attrs()
        .iter()
        .map(|((ns, name), value)| format!("{{{}}}{}={value:?}", ns.as_str(), name.as_str()))
        .collect();
    attrs.sort();
    let mut out = format!("<{{{}}}{} {}>", e.ns(), e.name(), attrs.join(" "));
    let mut text = String::new();
    for node in e.nodes() {
        match node {
            tokio_xmpp::minidom::Node::Text(t) => text.push_str(t),
            tokio_xmpp::minidom::Node::Element(child) => {
                if !text.is_empty() {
                    out += &format!("{text:?}");
                    text.clear();
                }
                out += &canonical(child);
            }
        }
    }
    if !text.is_empty() {
        out += &format!("{text:?}");
    }
    out + "</>"
}

/// Same XML meaning (see [`canonical`])?
pub fn same_xml(a: &Element, b: &Element) -> bool {
    canonical(a) == canonical(b)
}

/// Serializes a stanza.
pub fn stanza_xml(s: &Stanza) -> String {
    let e: Element = match s {
        Stanza::Iq(iq) => iq.clone().into(),
        Stanza::Message(m) => m.clone().into(),
        Stanza::Presence(p) => p.clone().into(),
    };
    to_xml(&e)
}

/// Serializes an iq.
pub fn iq_xml(iq: &Iq) -> String {
    to_xml(&iq.clone().into())
}

/// `"get"`, `"set"`, `"result"` or `"error"`.
pub fn iq_type(iq: &Iq) -> &'static str {
    match iq {
        Iq::Get { .. } => "get",
        Iq::Set { .. } => "set",
        Iq::Result { .. } => "result",
        Iq::Error { .. } => "error",
    }
}

/// The payload of a get/set, or of a result (if any).
pub fn iq_payload(iq: &Iq) -> Option<&Element> {
    match iq {
        Iq::Get { payload, .. } | Iq::Set { payload, .. } => Some(payload),
        Iq::Result { payload, .. } => payload.as_ref(),
        Iq::Error { .. } => None,
    }
}

/// The error of an iq of type error.
pub fn iq_error(iq: &Iq) -> Option<&StanzaError> {
    match iq {
        Iq::Error { error, .. } => Some(error),
        _ => None,
    }
}

/// The defined condition of an error as its element name, e.g. `"service-unavailable"`.
pub fn condition(error: &StanzaError) -> String {
    let e: Element = error.defined_condition.clone().into();
    e.name().to_string()
}

/// The error type as its attribute value, e.g. `"cancel"`.
pub fn error_type(error: &StanzaError) -> String {
    let e: Element = error.clone().into();
    e.attr("type").unwrap_or_default().to_string()
}

/// The (first) text of an error.
pub fn error_text(error: &StanzaError) -> Option<String> {
    error.texts.values().next().cloned()
}

/// An iq get addressed to `to` with this id and payload.
pub fn get(to: &str, id: &str, payload: Element) -> Iq {
    Iq::Get {
        from: None,
        to: Some(jid(to)),
        id: id.to_string(),
        payload,
    }
}

/// A small test payload: `<query xmlns='urn:example:client-proxy-test' n='..'>text</query>`.
pub fn test_payload(n: &str) -> Element {
    Element::builder("query", "urn:example:client-proxy-test")
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("n").to_owned(), n)
        .append(format!("payload {n}"))
        .build()
}

/// A logged-in client. Stanzas that arrive while waiting for something else are queued
/// and returned by later waits (in order).
pub struct Xmpp {
    client: Client,
    /// The bound full JID.
    pub jid: FullJid,
    queue: VecDeque<Stanza>,
    /// Stream disconnects seen after login (tokio-xmpp reconnects by itself; a test that
    /// sees one has usually sent or received something the other side refused, or the
    /// server was restarted).
    pub disconnects: usize,
    /// Sessions started after the login one (automatic reconnects). A new session has
    /// sent no presence yet.
    pub reconnects: usize,
    /// Streams resumed after a disconnect (XEP-0198, when the server runs `smacks`): the
    /// same session, its presence kept.
    pub resumes: usize,
}

impl Xmpp {
    /// Connects to `addr` (`127.0.0.1:port`) as `full_jid` with `password` and waits for
    /// the session (bounded). Sends no presence.
    pub async fn login(addr: &str, full_jid: &str, password: &str) -> Xmpp {
        Self::try_login(addr, full_jid, password)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Xmpp::login`], returning an error instead of panicking.
    pub async fn try_login(addr: &str, full_jid: &str, password: &str) -> Result<Xmpp, String> {
        let mut client = Client::new_plaintext(
            jid(full_jid),
            password.to_string(),
            DnsConfig::addr(addr),
            Timeouts::tight(),
        );
        let online = timeout(LOGIN_TIMEOUT, async {
            while let Some(event) = client.next().await {
                match event {
                    Event::Online { bound_jid, .. } => return Some(bound_jid),
                    Event::Disconnected(e) => eprintln!("login {full_jid}: disconnected: {e}"),
                    Event::Stanza(_) => {}
                }
            }
            None
        })
        .await;
        match online {
            Ok(Some(bound)) => {
                let jid = bound
                    .try_into_full()
                    .map_err(|b| format!("server bound a bare JID {b}"))?;
                Ok(Xmpp {
                    client,
                    jid,
                    queue: VecDeque::new(),
                    disconnects: 0,
                    reconnects: 0,
                    resumes: 0,
                })
            }
            Ok(None) => Err(format!("login {full_jid} at {addr}: stream ended")),
            Err(_) => Err(format!(
                "login {full_jid} at {addr}: not online within {LOGIN_TIMEOUT:?} (wrong password? server down?)"
            )),
        }
    }

    /// The bare JID.
    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// Sends a stanza (waits until written).
    pub async fn send(&mut self, stanza: impl Into<Stanza>) {
        let stanza = stanza.into();
        let text = stanza_xml(&stanza);
        timeout(Duration::from_secs(10), self.client.send_stanza(stanza))
            .await
            .unwrap_or_else(|_| panic!("{}: sending timed out: {text}", self.jid))
            .unwrap_or_else(|e| panic!("{}: sending failed ({e}): {text}", self.jid));
    }

    /// Sends raw XML (must parse as a stanza).
    pub async fn send_xml(&mut self, text: &str) {
        let stanza =
            Stanza::try_from(xml(text)).unwrap_or_else(|e| panic!("not a stanza: {text}: {e:?}"));
        self.send(stanza).await;
    }

    /// Sends initial presence (optionally with a priority).
    pub async fn presence(&mut self, priority: Option<i8>) {
        let mut p = Presence::available();
        if let Some(prio) = priority {
            p = p.with_priority(prio);
        }
        self.send(p).await;
    }

    /// The next stanza from the server (queued ones first), or None after `wait`.
    pub async fn next_stanza(&mut self, wait: Duration) -> Option<Stanza> {
        if let Some(s) = self.queue.pop_front() {
            return Some(s);
        }
        self.receive(wait).await
    }

    /// Reads the stream directly (not the queue) for at most `wait`.
    async fn receive(&mut self, wait: Duration) -> Option<Stanza> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.client.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("{}: client stream ended", self.jid),
                Ok(Some(Event::Stanza(s))) => return Some(s),
                Ok(Some(Event::Online { resumed: true, .. })) => {
                    self.resumes += 1;
                    eprintln!("{}: resumed its stream (stream management)", self.jid);
                }
                Ok(Some(Event::Online { .. })) => {
                    self.reconnects += 1;
                    eprintln!("{}: reconnected (a new session)", self.jid);
                }
                Ok(Some(Event::Disconnected(e))) => {
                    self.disconnects += 1;
                    eprintln!("{}: disconnected: {e}", self.jid);
                }
            }
        }
    }

    /// Waits (at most `wait`) for a stanza matching `pred`; others are queued.
    pub async fn wait_for(
        &mut self,
        wait: Duration,
        mut pred: impl FnMut(&Stanza) -> bool,
    ) -> Option<Stanza> {
        if let Some(pos) = self.queue.iter().position(&mut pred) {
            return self.queue.remove(pos);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let s = self.receive(left).await?;
            if pred(&s) {
                return Some(s);
            }
            self.queue.push_back(s);
        }
    }

    /// Waits for the iq result/error with this id.
    pub async fn wait_answer(&mut self, id: &str, wait: Duration) -> Option<Iq> {
        let s = self
            .wait_for(wait, |s| match s {
                Stanza::Iq(iq) => {
                    iq.id() == id && matches!(iq, Iq::Result { .. } | Iq::Error { .. })
                }
                _ => false,
            })
            .await?;
        match s {
            Stanza::Iq(iq) => Some(iq),
            _ => unreachable!(),
        }
    }

    /// Sends a request and waits for its answer (result or error with the same id).
    pub async fn request(&mut self, iq: Iq, wait: Duration) -> Option<Iq> {
        let id = iq.id().to_string();
        self.send(iq).await;
        self.wait_answer(&id, wait).await
    }

    /// Like [`Xmpp::request`], panicking when no answer comes.
    pub async fn must_request(&mut self, iq: Iq, wait: Duration) -> Iq {
        let text = iq_xml(&iq);
        self.request(iq, wait)
            .await
            .unwrap_or_else(|| panic!("{}: no answer within {wait:?} to {text}", self.jid))
    }

    /// Everything that arrives within `wait` (after the queued stanzas).
    pub async fn collect(&mut self, wait: Duration) -> Vec<Stanza> {
        let mut out: Vec<Stanza> = self.queue.drain(..).collect();
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receive(left).await {
                Some(s) => out.push(s),
                None => return out,
            }
        }
    }

    /// Takes the queued stanzas (received earlier, not yet returned).
    pub fn take_queued(&mut self) -> Vec<Stanza> {
        self.queue.drain(..).collect()
    }

    /// Sends unavailable presence and closes the stream (bounded).
    pub async fn close(mut self) {
        let _ = timeout(
            Duration::from_secs(5),
            self.client.send_stanza(Presence::unavailable().into()),
        )
        .await;
        let _ = timeout(Duration::from_secs(5), self.client.send_end()).await;
    }
}

/// The iq in a stanza, if it is one.
pub fn as_iq(s: &Stanza) -> Option<&Iq> {
    match s {
        Stanza::Iq(iq) => Some(iq),
        _ => None,
    }
}

/// The message in a stanza, if it is one.
pub fn as_message(s: &Stanza) -> Option<&Message> {
    match s {
        Stanza::Message(m) => Some(m),
        _ => None,
    }
}

/// The presence in a stanza, if it is one.
pub fn as_presence(s: &Stanza) -> Option<&Presence> {
    match s {
        Stanza::Presence(p) => Some(p),
        _ => None,
    }
}

/// The `from` of any stanza, as a string.
pub fn from_of(s: &Stanza) -> Option<String> {
    match s {
        Stanza::Iq(iq) => iq.from().map(|j| j.to_string()),
        Stanza::Message(m) => m.from.as_ref().map(|j| j.to_string()),
        Stanza::Presence(p) => p.from.as_ref().map(|j| j.to_string()),
    }
}

/// The `to` of any stanza, as a string.
pub fn to_of(s: &Stanza) -> Option<String> {
    match s {
        Stanza::Iq(iq) => iq.to().map(|j| j.to_string()),
        Stanza::Message(m) => m.to.as_ref().map(|j| j.to_string()),
        Stanza::Presence(p) => p.to.as_ref().map(|j| j.to_string()),
    }
}

/// Did it come from `host` itself or an address at it (`host/...`, `node@host`)?
pub fn is_from_host(s: &Stanza, host: &str) -> bool {
    let from = match s {
        Stanza::Iq(iq) => iq.from(),
        Stanza::Message(m) => m.from.as_ref(),
        Stanza::Presence(p) => p.from.as_ref(),
    };
    from.is_some_and(|f| f.domain().as_str() == host)
}

/// The stanzas among `got` that came from `host` or an address at it, as XML.
pub fn from_host(got: &[Stanza], host: &str) -> Vec<String> {
    got.iter()
        .filter(|s| is_from_host(s, host))
        .map(stanza_xml)
        .collect()
}

/// Asserts `iq` is an error from `from` with this type and condition; the error.
pub fn expect_error<'a>(iq: &'a Iq, from: &str, etype: &str, cond: &str) -> &'a StanzaError {
    let e = iq_error(iq).unwrap_or_else(|| panic!("expected an error, got {}", iq_xml(iq)));
    assert_eq!(condition(e), cond, "condition of {}", iq_xml(iq));
    assert_eq!(error_type(e), etype, "error type of {}", iq_xml(iq));
    let sender = iq.from().map(|j| j.to_string());
    assert_eq!(sender.as_deref(), Some(from), "sender of {}", iq_xml(iq));
    e
}

/// The (first) body of a message.
pub fn body(m: &Message) -> Option<&str> {
    m.bodies.values().next().map(String::as_str)
}

/// The message's id.
pub fn message_id(m: &Message) -> Option<&str> {
    m.id.as_ref().map(|i| i.0.as_str())
}

/// The `<error/>` child among a message's or presence's payloads, parsed.
pub fn error_child(payloads: &[Element]) -> Option<StanzaError> {
    payloads
        .iter()
        .find(|e| e.name() == "error")
        .cloned()
        .and_then(|e| StanzaError::try_from(e).ok())
}

/// A presence from exactly `from` (e.g. the component's bare host), if `s` is one.
pub fn presence_from<'a>(s: &'a Stanza, from: &str) -> Option<&'a Presence> {
    as_presence(s).filter(|p| p.from.as_ref().is_some_and(|f| f.to_string() == from))
}

/// A presence's type as its attribute value ("available" for none).
pub fn presence_kind(p: &Presence) -> &'static str {
    match p.type_ {
        PresenceType::None => "available",
        PresenceType::Error => "error",
        PresenceType::Probe => "probe",
        PresenceType::Subscribe => "subscribe",
        PresenceType::Subscribed => "subscribed",
        PresenceType::Unavailable => "unavailable",
        PresenceType::Unsubscribe => "unsubscribe",
        PresenceType::Unsubscribed => "unsubscribed",
    }
}

/// `<message type='chat' to=.. id=..><body>..</body></message>` as a stanza (the body is
/// escaped here).
pub fn chat(to: &str, id: &str, text: &str) -> Stanza {
    let text = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let e = xml(&format!(
        "<message xmlns='jabber:client' type='chat' to='{to}' id='{id}'><body>{text}</body></message>"
    ));
    Stanza::try_from(e).expect("a message stanza")
}

/// Is it `<message type='chat'>`?
pub fn is_chat(m: &Message) -> bool {
    m.type_ == MessageType::Chat
}

/// Fetches the roster (so that the session is "interested": Prosody sends `subscribed`
/// and roster pushes only to sessions that did), waiting for the answer.
pub async fn fetch_roster(x: &mut Xmpp, id: &str) -> Iq {
    let query = xml("<query xmlns='jabber:iq:roster'/>");
    let iq = Iq::Get {
        from: None,
        to: None,
        id: id.to_string(),
        payload: query,
    };
    let answer = x
        .request(iq, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{}: no roster", x.jid));
    assert!(
        matches!(answer, Iq::Result { .. }),
        "roster get: {}",
        iq_xml(&answer)
    );
    answer
}

/// The subscription of `contact` in a roster result (`none`, `to`, `from`, `both`), or
/// None when it is not in the roster.
pub fn roster_subscription(roster: &Iq, contact: &str) -> Option<String> {
    let Iq::Result {
        payload: Some(query),
        ..
    } = roster
    else {
        return None;
    };
    query
        .children()
        .find(|item| item.attr("jid") == Some(contact))
        .map(|item| item.attr("subscription").unwrap_or("none").to_string())
}

/// A logged-in user that fetched its roster, then sent initial presence.
pub async fn subscriber(addr: &str, full_jid: &str, password: &str) -> Xmpp {
    let mut x = Xmpp::login(addr, full_jid, password).await;
    fetch_roster(&mut x, "roster-login").await;
    x.presence(None).await;
    x
}

/// Waits until `x` has reconnected (tokio-xmpp does it by itself after a server restart)
/// more often than `before`; whatever arrives meanwhile stays queued.
pub async fn await_reconnect(x: &mut Xmpp, before: usize, wait: Duration) {
    let deadline = Instant::now() + wait;
    while x.reconnects <= before {
        assert!(
            Instant::now() < deadline,
            "{}: no reconnect within {wait:?}",
            x.jid
        );
        let _ = x.wait_for(Duration::from_millis(200), |_| false).await;
    }
}
