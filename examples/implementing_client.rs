//! An implementing client for mod_client_proxy: an ordinary XMPP client that answers the
//! requests users send to the proxy component.
//!
//! How it works (see the module's README, "JAT format"):
//!
//! 1. Log in as one resource of the target account (`target_address` in the component's
//!    configuration) and send presence: the component routes requests to the account's
//!    online resources.
//! 2. The component subscribes to the account's presence. Approve that subscription once
//!    (`<presence type='subscribed' to='proxy.example'/>`); Prosody remembers it.
//! 3. Each request arrives from `proxy.example/<resource>`, where the resource encodes who
//!    asked (the requester). Answer with the same id, to exactly that address.
//! 4. Messages work the same way (README, "Messages"): a user's message to the proxy
//!    arrives from `proxy.example/<resource>`; a message to that address reaches the user.
//!    This client answers each chat message with a reply.
//! 5. The client may ask users too (README, "Requests from the implementing client"): an
//!    iq get/set to `proxy.example/<resource>` reaches the user; the answer comes back from
//!    that address with the id this client used. When a user writes "ping me", this client
//!    pings the user (XEP-0199) that way and tells the user how long the answer took. No
//!    timer is needed: the proxy answers remote-server-timeout if the user does not.
//!
//! Run it against a server that has the component:
//!
//! ```text
//! cargo run --example implementing_client -- \
//!     --jid service@localhost/a --password secret \
//!     --server 127.0.0.1:5222 --proxy proxy.localhost [--jat plain|base64]
//! ```
//!
//! Each option can also come from the environment: CLIENT_PROXY_JID,
//! CLIENT_PROXY_PASSWORD, CLIENT_PROXY_SERVER, CLIENT_PROXY_HOST, CLIENT_PROXY_JAT.
//! The connection is plain TCP (no TLS), as for a local test server; stop with Ctrl-C.
//!
//! `examples/demo.rs` runs this same code (`connect`, `serve`) against a throwaway server.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id as MessageId, Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

/// Namespace of the example's answer payload.
pub const ANSWER_NS: &str = "urn:example:client-proxy";

/// What the program needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Full JID to log in as: the target account plus a resource, e.g. service@localhost/a.
    pub jid: String,
    /// The account's password.
    pub password: String,
    /// Server address, host:port (no DNS SRV lookup), e.g. 127.0.0.1:5222.
    pub server: String,
    /// The proxy component's host, e.g. proxy.localhost.
    pub proxy: String,
    /// The component's `client_proxy_jat` setting: "plain" (default) or "base64".
    pub jat: String,
}

impl Config {
    /// Reads `--name value` arguments, falling back to CLIENT_PROXY_* variables.
    pub fn from_args() -> Result<Config, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let get = |flag: &str, var: &str, default: Option<&str>| -> Result<String, String> {
            if let Some(i) = args.iter().position(|a| a == flag) {
                return args
                    .get(i + 1)
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"));
            }
            if let Ok(v) = std::env::var(var) {
                return Ok(v);
            }
            default
                .map(str::to_string)
                .ok_or_else(|| format!("missing {flag} (or {var})"))
        };
        Ok(Config {
            jid: get("--jid", "CLIENT_PROXY_JID", None)?,
            password: get("--password", "CLIENT_PROXY_PASSWORD", None)?,
            server: get("--server", "CLIENT_PROXY_SERVER", Some("127.0.0.1:5222"))?,
            proxy: get("--proxy", "CLIENT_PROXY_HOST", None)?,
            jat: get("--jat", "CLIENT_PROXY_JAT", Some("plain"))?,
        })
    }
}

/// Who sent a request, as far as the address tells.
#[derive(Clone, Debug, PartialEq)]
pub enum Requester {
    /// The requester's full JID, decoded from the resource.
    Known(Jid),
    /// An opaque token (resource starting with '@'): the requester's address was too long
    /// to encode. Do not decode it; just answer to the address the request came from.
    Opaque(String),
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requester::Known(jid) => write!(f, "{jid}"),
            Requester::Opaque(token) => write!(f, "(opaque token {token})"),
        }
    }
}

/// Decodes the requester from the address a request came from (`proxy/<resource>`).
/// Returns None when the request did not come from the proxy (or cannot be decoded).
pub fn requester_of(from: &Jid, proxy: &str, jat: &str) -> Option<Requester> {
    if from.node().is_some() || from.domain().as_str() != proxy {
        return None;
    }
    let resource = from.resource()?.as_str();
    if resource.starts_with('@') {
        return Some(Requester::Opaque(resource.to_string()));
    }
    let full_jid = match jat {
        // "plain": the resource is the requester's full JID as it is.
        "plain" => resource.to_string(),
        // "base64": base64url without padding of the full JID.
        "base64" => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(resource)
                .ok()?;
            String::from_utf8(bytes).ok()?
        }
        _ => return None,
    };
    Jid::new(&full_jid).ok().map(Requester::Known)
}

/// The answer to one incoming stanza, if it is a request (iq get/set).
///
/// A request from the proxy gets a result with `<answer xmlns='urn:example:client-proxy'
/// requester='...' resource='...'/>`: who asked, and which of our resources answered.
/// Requests from anyone else are refused with service-unavailable.
pub fn answer(request: &Iq, me: &FullJid, proxy: &str, jat: &str) -> Option<Iq> {
    if !matches!(request, Iq::Get { .. } | Iq::Set { .. }) {
        return None; // results and errors are never answered
    }
    let from = request.from()?.clone();
    let id = request.id().to_string();
    // Sending `from` explicitly is optional (the server sets it); it makes the printout
    // show the whole exchange.
    let Some(requester) = requester_of(&from, proxy, jat) else {
        return Some(Iq::Error {
            from: Some(me.clone().into()),
            to: Some(from),
            id,
            error: StanzaError::new(
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "en",
                "This client only answers requests from its proxy",
            ),
            payload: None,
        });
    };
    let payload = Element::builder("answer", ANSWER_NS)
        .attr(xml_ncname!("requester").to_owned(), requester.to_string())
        .attr(xml_ncname!("resource").to_owned(), me.resource().as_str())
        .build();
    Some(Iq::Result {
        from: Some(me.clone().into()),
        // Answer to exactly the address the request came from: proxy/<resource>.
        to: Some(from),
        id,
        payload: Some(payload),
    })
}

/// Logs in and sends initial presence. Gives up after 15 s (tokio-xmpp itself would retry
/// a wrong password or an unreachable server forever).
pub async fn connect(config: &Config) -> Result<Client, String> {
    let jid = Jid::new(&config.jid).map_err(|e| format!("bad JID {:?}: {e}", config.jid))?;
    let mut client = Client::new_plaintext(
        jid,
        config.password.clone(),
        DnsConfig::addr(&config.server),
        Timeouts::tight(),
    );
    let online = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = client.next().await {
            if let Event::Online { .. } = event {
                return true;
            }
        }
        false
    })
    .await;
    if online != Ok(true) {
        return Err(format!(
            "could not log in as {} at {} (wrong password? server down?)",
            config.jid, config.server
        ));
    }
    client
        .send_stanza(Presence::available().into())
        .await
        .map_err(|e| format!("sending presence: {e}"))?;
    Ok(client)
}

/// The body that makes this client ping the writer.
pub const PING_ME: &str = "ping me";

/// What to do about one incoming message.
#[derive(Clone, Debug, PartialEq)]
pub enum OnMessage {
    /// A chat message from a user: send this reply.
    Reply(Message),
    /// The user wrote "ping me": send this reply, then ping the user at `at` (the address
    /// the message came from, `proxy.example/<resource>`).
    Ping { reply: Message, at: Jid },
    /// A bounce (type error) of a message this client sent: never answered.
    Bounce,
}

/// What to do about one incoming message (None: ignore it). Only messages with a body from
/// the proxy are answered: to exactly the address they came from, with the same type.
pub fn on_message(message: &Message, me: &FullJid, proxy: &str, jat: &str) -> Option<OnMessage> {
    let from = message.from.as_ref()?;
    let requester = requester_of(from, proxy, jat)?;
    if message.type_ == MessageType::Error {
        return Some(OnMessage::Bounce);
    }
    if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
        return None; // groupchat, headline: not a conversation with this client
    }
    let body = message.bodies.values().next()?; // e.g. a chat state notification
    let text = if body.trim().eq_ignore_ascii_case(PING_ME) {
        "Pinging you through the proxy...".to_string()
    } else {
        format!("{} ({}) got your message: {body}", me.resource(), requester)
    };
    let mut reply = Message::new_with_type(message.type_.clone(), Some(from.clone()))
        .with_body(Lang::default(), text);
    // As for iq answers, `from` is optional (the server sets it); it shows in the printout.
    reply.from = Some(me.clone().into());
    reply.id = message
        .id
        .as_ref()
        .map(|id| MessageId(format!("re-{}", id.0)));
    reply.thread = message.thread.clone();
    if body.trim().eq_ignore_ascii_case(PING_ME) {
        Some(OnMessage::Ping {
            reply,
            at: from.clone(),
        })
    } else {
        Some(OnMessage::Reply(reply))
    }
}

/// An XEP-0199 ping to `to` (a user's address at the proxy).
pub fn ping(me: &FullJid, to: &Jid, id: &str) -> Iq {
    Iq::Get {
        from: Some(me.clone().into()),
        to: Some(to.clone()),
        id: id.to_string(),
        payload: Element::builder("ping", PING_NS).build(),
    }
}

/// What the user is told once its answer to the ping is back.
pub fn ping_report(answer: &Iq, me: &FullJid, took: Duration) -> Option<Message> {
    let text = match answer {
        Iq::Result { .. } => format!("Your client answered the ping in {} ms.", took.as_millis()),
        Iq::Error { error, .. } => {
            let condition = Element::from(error.defined_condition.clone())
                .name()
                .to_string();
            format!("The ping came back with an error: {condition}.")
        }
        _ => return None,
    };
    let mut m = Message::chat(answer.from().cloned()).with_body(Lang::default(), text);
    m.from = Some(me.clone().into());
    m.id = Some(MessageId(format!("report-{}", answer.id())));
    Some(m)
}

/// Namespace of XEP-0199 pings.
pub const PING_NS: &str = "urn:xmpp:ping";

/// What [`serve`] did, for the caller to print or check.
#[derive(Debug)]
pub enum Activity<'a> {
    /// A request through the proxy and the answer this client sent.
    Request { request: &'a Iq, answer: &'a Iq },
    /// A user's message and this client's reply.
    Chat {
        message: &'a Message,
        reply: &'a Message,
    },
    /// This client asked a user something (a ping after "ping me").
    Asked { request: &'a Iq },
    /// The user's answer came back (through the proxy, with this client's id), after `took`.
    Answered {
        request: &'a Iq,
        answer: &'a Iq,
        took: Duration,
    },
    /// A bounce of a message this client sent (not answered).
    Bounce { message: &'a Message },
}

/// A request this client sent and is waiting for.
struct Asked {
    request: Iq,
    sent: Instant,
}

/// Serves requests and messages until `stop` completes or the connection ends for good.
/// `on_activity` is called for everything done (see [`Activity`]).
pub async fn serve(
    client: &mut Client,
    config: &Config,
    mut on_activity: impl FnMut(Activity<'_>),
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let me = client
        .bound_jid()
        .cloned()
        .ok_or("serve() needs a connected client")?;
    // Our requests to users, by id. The proxy answers every one (the user's answer, or an
    // error such as remote-server-timeout), so each entry goes away in time.
    let mut asked: HashMap<String, Asked> = HashMap::new();
    let mut pings = 0u64;
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            event = client.next() => event,
        };
        match event {
            None => return Err("the connection ended".into()),
            // tokio-xmpp reconnects by itself; a new session needs presence again.
            Some(Event::Online { .. }) => {
                let _ = client.send_stanza(Presence::available().into()).await;
            }
            Some(Event::Disconnected(e)) => eprintln!("{me}: disconnected ({e}), reconnecting"),
            // The proxy asks to see our presence: approve, or it cannot route to us.
            Some(Event::Stanza(Stanza::Presence(p)))
                if p.type_ == PresenceType::Subscribe
                    && p.from.as_ref().map(|f| f.to_string()) == Some(config.proxy.clone()) =>
            {
                let approve = Presence::subscribed().with_to(Jid::new(&config.proxy).unwrap());
                send(client, approve).await?;
            }
            Some(Event::Stanza(Stanza::Iq(iq))) => match &iq {
                Iq::Get { .. } | Iq::Set { .. } => {
                    if let Some(reply) = answer(&iq, &me, &config.proxy, &config.jat) {
                        on_activity(Activity::Request {
                            request: &iq,
                            answer: &reply,
                        });
                        send(client, reply).await?;
                    }
                }
                Iq::Result { .. } | Iq::Error { .. } => {
                    // An answer to one of our requests: same id, from the address we asked.
                    let ours = asked
                        .get(iq.id())
                        .is_some_and(|a| a.request.to() == iq.from());
                    let Some(a) = ours.then(|| asked.remove(iq.id())).flatten() else {
                        continue; // not ours (e.g. the server's answer to something else)
                    };
                    let took = a.sent.elapsed();
                    on_activity(Activity::Answered {
                        request: &a.request,
                        answer: &iq,
                        took,
                    });
                    if let Some(report) = ping_report(&iq, &me, took) {
                        send(client, report).await?;
                    }
                }
            },
            Some(Event::Stanza(Stanza::Message(message))) => {
                match on_message(&message, &me, &config.proxy, &config.jat) {
                    None => {}
                    Some(OnMessage::Bounce) => on_activity(Activity::Bounce { message: &message }),
                    Some(OnMessage::Reply(reply)) => {
                        on_activity(Activity::Chat {
                            message: &message,
                            reply: &reply,
                        });
                        send(client, reply).await?;
                    }
                    Some(OnMessage::Ping { reply, at }) => {
                        on_activity(Activity::Chat {
                            message: &message,
                            reply: &reply,
                        });
                        send(client, reply).await?;
                        pings += 1;
                        let request = ping(&me, &at, &format!("ping-{pings}"));
                        on_activity(Activity::Asked { request: &request });
                        send(client, request.clone()).await?;
                        asked.insert(
                            request.id().to_string(),
                            Asked {
                                request,
                                sent: Instant::now(),
                            },
                        );
                    }
                }
            }
            Some(Event::Stanza(_)) => {} // other presences: not our business here
        }
    }
    let _ = client.send_stanza(Presence::unavailable().into()).await;
    Ok(())
}

/// Sends a stanza; the error names what could not be sent.
async fn send(client: &mut Client, stanza: impl Into<Stanza>) -> Result<(), String> {
    let stanza = stanza.into();
    let what = match stanza {
        Stanza::Iq(_) => "an iq",
        Stanza::Message(_) => "a message",
        Stanza::Presence(_) => "a presence",
    };
    client
        .send_stanza(stanza)
        .await
        .map(|_| ())
        .map_err(|e| format!("sending {what}: {e}"))
}

/// An iq as XML text, for printing.
pub fn xml(iq: &Iq) -> String {
    String::from(&Element::from(iq.clone()))
}

/// A message as XML text, for printing.
pub fn message_xml(message: &Message) -> String {
    String::from(&Element::from(message.clone()))
}

// Current-thread runtime: tokio-xmpp 6.0.0 clients were seen to stop delivering received
// stanzas on a loaded multi-thread runtime.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = match Config::from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nusage: implementing_client --jid USER@HOST/RESOURCE --password PW --proxy PROXY_HOST [--server HOST:PORT] [--jat plain|base64]");
            std::process::exit(2);
        }
    };
    let mut client = match connect(&config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!(
        "online as {}, answering requests and messages from {}",
        config.jid, config.proxy
    );
    let who = |from: Option<&Jid>| {
        from.and_then(|f| requester_of(f, &config.proxy, &config.jat))
            .map(|r| r.to_string())
            .unwrap_or_else(|| "someone else".into())
    };
    let print = |activity: Activity<'_>| match activity {
        Activity::Request { request, answer } => println!(
            "request from {}:\n    {}\nanswer:\n    {}",
            who(request.from()),
            xml(request),
            xml(answer)
        ),
        Activity::Chat { message, reply } => println!(
            "message from {}:\n    {}\nreply:\n    {}",
            who(message.from.as_ref()),
            message_xml(message),
            message_xml(reply)
        ),
        Activity::Asked { request } => {
            println!("asking {}:\n    {}", who(request.to()), xml(request))
        }
        Activity::Answered {
            request,
            answer,
            took,
        } => println!(
            "{} answered {} in {took:?}:\n    {}",
            who(answer.from()),
            request.id(),
            xml(answer)
        ),
        Activity::Bounce { message } => {
            println!("bounced (not answered):\n    {}", message_xml(message))
        }
    };
    if let Err(e) = serve(&mut client, &config, print, std::future::pending()).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_base64_and_opaque() {
        let plain = Jid::new("proxy.localhost/user@localhost/abc").unwrap();
        assert_eq!(
            requester_of(&plain, "proxy.localhost", "plain"),
            Some(Requester::Known(Jid::new("user@localhost/abc").unwrap()))
        );
        let b64 = Jid::new("proxy.localhost/dXNlckBsb2NhbGhvc3QvYWJj").unwrap();
        assert_eq!(
            requester_of(&b64, "proxy.localhost", "base64"),
            Some(Requester::Known(Jid::new("user@localhost/abc").unwrap()))
        );
        let token = Jid::new("proxy.localhost/@x1").unwrap();
        assert_eq!(
            requester_of(&token, "proxy.localhost", "plain"),
            Some(Requester::Opaque("@x1".into()))
        );
        let other = Jid::new("elsewhere.localhost/user@localhost/abc").unwrap();
        assert_eq!(requester_of(&other, "proxy.localhost", "plain"), None);
    }

    fn me() -> FullJid {
        FullJid::new("service@localhost/a").unwrap()
    }

    fn incoming(body: &str) -> Message {
        let mut m = Message::chat(Some(Jid::new("service@localhost/a").unwrap()))
            .with_body(Lang::default(), body.into());
        m.from = Some(Jid::new("proxy.localhost/user@localhost/abc").unwrap());
        m.id = Some(MessageId("m1".into()));
        m
    }

    #[test]
    fn replies_to_the_address_a_message_came_from() {
        let Some(OnMessage::Reply(reply)) =
            on_message(&incoming("hello"), &me(), "proxy.localhost", "plain")
        else {
            panic!("a reply expected");
        };
        assert_eq!(
            reply.to,
            Some(Jid::new("proxy.localhost/user@localhost/abc").unwrap())
        );
        assert_eq!(reply.type_, MessageType::Chat);
        assert_eq!(
            reply.bodies.values().next().map(String::as_str),
            Some("a (user@localhost/abc) got your message: hello")
        );
    }

    #[test]
    fn ping_me_pings_the_writer_and_bounces_are_not_answered() {
        let Some(OnMessage::Ping { at, .. }) =
            on_message(&incoming(" Ping me "), &me(), "proxy.localhost", "plain")
        else {
            panic!("a ping expected");
        };
        assert_eq!(at.to_string(), "proxy.localhost/user@localhost/abc");
        let mut bounce = incoming("x");
        bounce.type_ = MessageType::Error;
        assert_eq!(
            on_message(&bounce, &me(), "proxy.localhost", "plain"),
            Some(OnMessage::Bounce)
        );
        let mut stranger = incoming("hi");
        stranger.from = Some(Jid::new("user@localhost/abc").unwrap());
        assert_eq!(
            on_message(&stranger, &me(), "proxy.localhost", "plain"),
            None
        );
    }
}
