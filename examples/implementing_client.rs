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

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
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

/// Serves requests until `stop` completes or the connection ends for good.
/// `on_exchange(request, answer)` is called for every answered request.
pub async fn serve(
    client: &mut Client,
    config: &Config,
    mut on_exchange: impl FnMut(&Iq, &Iq),
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let me = client
        .bound_jid()
        .cloned()
        .ok_or("serve() needs a connected client")?;
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
                client
                    .send_stanza(approve.into())
                    .await
                    .map_err(|e| format!("approving the subscription: {e}"))?;
            }
            Some(Event::Stanza(Stanza::Iq(request))) => {
                if let Some(reply) = answer(&request, &me, &config.proxy, &config.jat) {
                    on_exchange(&request, &reply);
                    client
                        .send_stanza(reply.into())
                        .await
                        .map_err(|e| format!("sending an answer: {e}"))?;
                }
            }
            Some(Event::Stanza(_)) => {} // other presences, messages: not our business here
        }
    }
    let _ = client.send_stanza(Presence::unavailable().into()).await;
    Ok(())
}

/// An iq as XML text, for printing.
pub fn xml(iq: &Iq) -> String {
    String::from(&Element::from(iq.clone()))
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
        "online as {}, answering requests from {}",
        config.jid, config.proxy
    );
    let print = |request: &Iq, reply: &Iq| {
        let who = request
            .from()
            .and_then(|f| requester_of(f, &config.proxy, &config.jat))
            .map(|r| r.to_string())
            .unwrap_or_else(|| "someone else".into());
        println!(
            "request from {who}:\n    {}\nanswer:\n    {}",
            xml(request),
            xml(reply)
        );
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
}
