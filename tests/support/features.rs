//! Helpers for the end-to-end tests of the features beyond the original's iq proxying
//! (messages, requests from the implementing client, presence subscriptions):
//! tests/e2e_features.rs.
//!
//! - [`Inbox`]: waits for the stanzas an [`Implementer`] received that were not proxied
//!   requests (messages, answers to its own requests, presence), keeping the others.
//! - small stanza accessors: who sent it, a message's body, the `<error/>` of a message or
//!   presence, presence from the component.
//! - [`subscriber`]: a user that fetches its roster before its initial presence, as real
//!   clients do (Prosody delivers `subscribed` and roster pushes only to such sessions).

use std::time::Duration;

use tokio::time::{sleep, Instant};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::StanzaError;
use tokio_xmpp::Stanza;

use super::client::{as_presence, iq_xml, xml, Xmpp};
use super::implementer::Implementer;

/// How often an [`Inbox`] looks at what its implementer received.
const POLL: Duration = Duration::from_millis(20);

/// The stanzas an implementing resource received besides proxied requests, in order.
/// [`Implementer::others`] hands each stanza out once; an inbox keeps the ones no wait
/// has asked for yet.
#[derive(Default)]
pub struct Inbox {
    kept: Vec<Stanza>,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Inbox::default()
    }

    fn pull(&mut self, imp: &Implementer) {
        self.kept.extend(imp.others());
    }

    /// Waits (at most `wait`) for a stanza matching `pred`, and takes it out.
    pub async fn wait_for(
        &mut self,
        imp: &Implementer,
        wait: Duration,
        mut pred: impl FnMut(&Stanza) -> bool,
    ) -> Option<Stanza> {
        let deadline = Instant::now() + wait;
        loop {
            self.pull(imp);
            if let Some(pos) = self.kept.iter().position(&mut pred) {
                return Some(self.kept.remove(pos));
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL).await;
        }
    }

    /// Waits `wait`, then takes everything received (kept ones first).
    pub async fn collect(&mut self, imp: &Implementer, wait: Duration) -> Vec<Stanza> {
        sleep(wait).await;
        self.pull(imp);
        std::mem::take(&mut self.kept)
    }

    /// Forgets everything received so far.
    pub fn clear(&mut self, imp: &Implementer) {
        self.pull(imp);
        self.kept.clear();
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
    match s {
        Stanza::Iq(iq) => iq.from().is_some_and(|f| f.domain().as_str() == host),
        Stanza::Message(m) => m.from.as_ref().is_some_and(|f| f.domain().as_str() == host),
        Stanza::Presence(p) => p.from.as_ref().is_some_and(|f| f.domain().as_str() == host),
    }
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
