//! `make demo`: the README exchange, live.
//!
//! Starts a throwaway Prosody on loopback (temp dir, free port) with
//!
//! ```text
//! Component "proxy.localhost" "client_proxy"
//!     target_address = "service@localhost"
//! ```
//!
//! runs the implementing client of `examples/implementing_client.rs` as two resources
//! (service@localhost/a and /b), and prints each exchange leg by leg as the README shows
//! it (user -> component, component -> implementing client, ...):
//!
//! 1. user@localhost/abc sends a few iq requests (README, "What it does");
//! 2. it chats with the service: its messages go to one resource, whose replies reach it
//!    from the component (README, "Messages");
//! 3. it writes "ping me": the implementing client pings it through the component, which
//!    gives the request an id of its own and hands the answer back with the client's id
//!    (README, "Requests from the implementing client").
//!
//! Stops Prosody at the end. Exits non-zero if anything does not go as described.
//!
//! Needs the release library (`make build`) and Prosody installed.

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "implementing_client.rs"]
mod implementing_client;

use std::collections::HashMap;
use std::time::Duration;

use implementing_client::{Activity, Config, Requester};
use support::client::{as_iq, as_message, get, iq_xml, stanza_xml, test_payload, xml, Xmpp};
use support::{ComponentSpec, Prosody};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tokio_xmpp::minidom::{Element, Node};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::Stanza;

const PROXY: &str = "proxy.localhost";
const PASSWORD: &str = "secret";
const REQUESTS: usize = 4;

/// What an implementing resource did (an owned [`Activity`]).
#[derive(Debug)]
enum Seen {
    /// A request it got and the answer it sent.
    Request(Iq, Iq),
    /// A message it got and its reply.
    Chat(Message, Message),
    /// A request it sent to a user.
    Asked(Iq),
    /// Its request and the answer that came back.
    Answered(Iq, Iq),
    /// A bounce of one of its messages (none expected here).
    Bounce,
}

impl Seen {
    fn of(activity: Activity<'_>) -> Seen {
        match activity {
            Activity::Request { request, answer } => Seen::Request(request.clone(), answer.clone()),
            Activity::Chat { message, reply } => Seen::Chat(message.clone(), reply.clone()),
            Activity::Asked { request } => Seen::Asked(request.clone()),
            Activity::Answered {
                request, answer, ..
            } => Seen::Answered(request.clone(), answer.clone()),
            Activity::Bounce { .. } => Seen::Bounce,
        }
    }
}

/// Waits (at most 10 s) for the implementing clients to report something matching `pick`;
/// earlier reports that do not match are dropped.
async fn seen<T>(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    mut pick: impl FnMut(Seen) -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let s = tokio::time::timeout(left, rx.recv())
            .await
            .map_err(|_| format!("no implementing client reported {what}"))?
            .ok_or("implementing clients gone")?;
        if let Some(t) = pick(s) {
            return Ok(t);
        }
    }
}

/// Waits (at most 10 s) for the user to receive a stanza matching `pred`.
async fn received(
    user: &mut Xmpp,
    what: &str,
    pred: impl FnMut(&Stanza) -> bool,
) -> Result<Stanza, String> {
    user.wait_for(Duration::from_secs(10), pred)
        .await
        .ok_or_else(|| format!("the user did not receive {what}"))
}

fn jid_text(j: Option<&tokio_xmpp::jid::Jid>) -> String {
    j.map(|j| j.to_string()).unwrap_or_default()
}

fn body(m: &Message) -> &str {
    m.bodies
        .values()
        .next()
        .map(String::as_str)
        .unwrap_or_default()
}

fn message_id(m: &Message) -> &str {
    m.id.as_ref().map(|i| i.0.as_str()).unwrap_or_default()
}

/// A chat message from the user (with its from, for the printout; the server sets the same).
fn user_chat(user: &Xmpp, id: &str, text: &str) -> Message {
    let mut m = Message::chat(Some(tokio_xmpp::jid::Jid::new(PROXY).unwrap()))
        .with_body(Default::default(), text.to_string());
    m.from = Some(user.jid.clone().into());
    m.id = Some(tokio_xmpp::parsers::message::Id(id.to_string()));
    m
}

fn main() {
    // Current-thread runtime: see tests/support/mod.rs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `run` owns the server: it is stopped when `run` returns (or panics).
    match runtime.block_on(run()) {
        Ok(()) => println!("\ndemo: ok"),
        Err(e) => {
            eprintln!("\ndemo: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

async fn run() -> Result<(), String> {
    println!("Starting a throwaway Prosody with the component {PROXY} -> service@localhost ...");
    let prosody = Prosody::start_with_users(
        &[ComponentSpec::new(PROXY, "service@localhost", &[])],
        &[("service", PASSWORD), ("user", PASSWORD)],
    );
    println!(
        "Prosody is listening on {} (files in {})",
        prosody.addr(),
        prosody.dir().display()
    );

    // Two resources of the implementing client, each in its own task, reporting what
    // they see on one channel.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for resource in ["a", "b"] {
        let config = Config {
            jid: format!("service@localhost/{resource}"),
            password: PASSWORD.into(),
            server: prosody.addr(),
            proxy: PROXY.into(),
            jat: "plain".into(),
        };
        let mut client = implementing_client::connect(&config).await?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let seen_tx = seen_tx.clone();
        tasks.push(tokio::spawn(async move {
            let report = |activity: Activity<'_>| {
                let _ = seen_tx.send(Seen::of(activity));
            };
            let stop = async {
                let _ = stop_rx.await;
            };
            let result = implementing_client::serve(&mut client, &config, report, stop).await;
            let _ = client.send_end().await;
            result
        }));
        stops.push(stop_tx);
        println!("Implementing client service@localhost/{resource} is online.");
    }

    let mut user = Xmpp::login(&prosody.addr(), "user@localhost/abc", PASSWORD).await;
    user.presence(None).await;
    println!("Requester user@localhost/abc is online.");

    // The component learns the implementing client's presence once it has approved the
    // subscription (it does so on its first login): wait until requests get through.
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("wait-{n}");
        let answer = user
            .request(get(PROXY, &id, test_payload(&id)), Duration::from_secs(5))
            .await;
        if matches!(answer, Some(Iq::Result { .. })) {
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "requests were not routed within 15 s; last answer: {}",
                answer.as_ref().map(iq_xml).unwrap_or_else(|| "none".into())
            ));
        }
        sleep(Duration::from_millis(100)).await;
    }
    while seen_rx.try_recv().is_ok() {} // forget the warm-up exchanges
    println!(
        "The component routes requests (after {:?}).\n",
        started.elapsed()
    );

    let mut used: HashMap<String, usize> = HashMap::new();
    for i in 0..REQUESTS {
        let id = (1234 + i).to_string();
        let payload = xml(&format!(
            "<query xmlns='urn:example:demo'>request {}</query>",
            i + 1
        ));
        let mut request = get(PROXY, &id, payload);
        // Only for the printout: the server would set the same from.
        *request.from_mut() = Some(user.jid.clone().into());
        let sent = request.clone();
        let answer = user
            .request(request, Duration::from_secs(10))
            .await
            .ok_or_else(|| format!("no answer to id {id}"))?;
        let (forwarded, reply) = seen(&mut seen_rx, &format!("request {id}"), |s| match s {
            Seen::Request(req, rep) if req.id() == id => Some((req, rep)),
            _ => None,
        })
        .await?;
        println!("Request {} (id {id}):", i + 1);
        println!("  user -> component:\n    {}", readme_xml(&sent));
        println!(
            "  component -> implementing client:\n    {}",
            readme_xml(&forwarded)
        );
        println!(
            "  implementing client -> component:\n    {}",
            readme_xml(&reply)
        );
        println!("  component -> user:\n    {}\n", readme_xml(&answer));

        // Check it is what the README promises.
        let resource = forwarded
            .to()
            .and_then(|t| t.resource().map(|r| r.to_string()))
            .unwrap_or_default();
        *used.entry(resource).or_default() += 1;
        let requester = forwarded
            .from()
            .and_then(|f| implementing_client::requester_of(f, PROXY, "plain"));
        if requester != Some(Requester::Known(user.jid.clone().into())) {
            return Err(format!(
                "the forwarded request does not name the requester: {requester:?}"
            ));
        }
        if !matches!(answer, Iq::Result { .. })
            || answer.from().map(|f| f.to_string()).as_deref() != Some(PROXY)
            || answer.id() != id
        {
            return Err(format!("unexpected answer: {}", iq_xml(&answer)));
        }
    }
    println!("Requests per implementing resource: {used:?}");

    chat(&mut user, &mut seen_rx).await?;
    ping_me(&mut user, &mut seen_rx).await?;

    for stop in stops {
        let _ = stop.send(());
    }
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(format!("implementing client: {e}")),
            Ok(Err(e)) => return Err(format!("implementing client task: {e}")),
            Err(_) => return Err("implementing client did not stop".into()),
        }
    }
    user.close().await;

    let tracebacks = prosody.traceback_count();
    if tracebacks > 0 {
        return Err(format!(
            "{tracebacks} Traceback line(s) in the Prosody log:\n{}",
            prosody.log_lines("Traceback").join("\n")
        ));
    }
    println!("Stopping Prosody.");
    Ok(())
}

/// Messages: the user chats with the service; one resource takes the conversation.
async fn chat(user: &mut Xmpp, seen_rx: &mut mpsc::UnboundedReceiver<Seen>) -> Result<(), String> {
    println!("\nMessages: the user chats with the service.\n");
    let mut resources = Vec::new();
    for (n, text) in ["Hello, service!", "Still there?"].iter().enumerate() {
        let id = format!("chat-{}", n + 1);
        let sent = user_chat(user, &id, text);
        user.send(sent.clone()).await;
        let (forwarded, reply) = seen(seen_rx, &format!("message {id}"), |s| match s {
            Seen::Chat(m, r) if message_id(&m) == id => Some((m, r)),
            _ => None,
        })
        .await?;
        let reply_id = message_id(&reply).to_string();
        let got = received(user, &format!("the reply {reply_id}"), |s| {
            as_message(s).is_some_and(|m| message_id(m) == reply_id)
        })
        .await?;
        let got = as_message(&got).unwrap().clone();
        println!("Message {} (id {id}):", n + 1);
        println!("  user -> component:\n    {}", readme_message(&sent));
        println!(
            "  component -> implementing client:\n    {}",
            readme_message(&forwarded)
        );
        println!(
            "  implementing client -> component:\n    {}",
            readme_message(&reply)
        );
        println!("  component -> user:\n    {}\n", readme_message(&got));

        let user_at_proxy = format!("{PROXY}/{}", user.jid);
        if jid_text(forwarded.from.as_ref()) != user_at_proxy || body(&forwarded) != *text {
            return Err(format!(
                "the message reached the implementing client as {}",
                readme_message(&forwarded)
            ));
        }
        if jid_text(got.from.as_ref()) != PROXY
            || body(&got) != body(&reply)
            || got.type_ != MessageType::Chat
        {
            return Err(format!(
                "the reply reached the user as {}",
                readme_message(&got)
            ));
        }
        resources.push(jid_text(forwarded.to.as_ref()));
    }
    if resources.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!(
            "the conversation moved between resources: {resources:?}"
        ));
    }
    println!(
        "Both messages went to {} (a user stays with one resource).",
        resources[0]
    );
    Ok(())
}

/// Requests from the implementing client: "ping me" makes it ping the user.
async fn ping_me(
    user: &mut Xmpp,
    seen_rx: &mut mpsc::UnboundedReceiver<Seen>,
) -> Result<(), String> {
    println!("\nRequests from the implementing client: the user writes \"ping me\".\n");
    let sent = user_chat(user, "chat-ping", implementing_client::PING_ME);
    user.send(sent.clone()).await;
    let asked = seen(seen_rx, "its ping", |s| match s {
        Seen::Asked(iq) => Some(iq),
        _ => None,
    })
    .await?;
    // The user's side: a ping from the component, under the component's own id.
    let request = received(user, "the ping", |s| {
        as_iq(s).is_some_and(|iq| matches!(iq, Iq::Get { .. }))
    })
    .await?;
    let request = as_iq(&request).unwrap().clone();
    let answer = Iq::Result {
        from: Some(user.jid.clone().into()),
        to: request.from().cloned(),
        id: request.id().to_string(),
        payload: None,
    };
    user.send(answer.clone()).await;
    let (asked_again, returned) = seen(seen_rx, "the answer to its ping", |s| match s {
        Seen::Answered(req, ans) => Some((req, ans)),
        _ => None,
    })
    .await?;
    let report_id = format!("report-{}", asked.id());
    let report = received(user, "the ping report", |s| {
        as_message(s).is_some_and(|m| message_id(m) == report_id)
    })
    .await?;
    let report = as_message(&report).unwrap().clone();
    // The reply to "ping me" itself arrived before the request; show it too.
    let ack = user
        .take_queued()
        .into_iter()
        .filter_map(|s| as_message(&s).cloned())
        .find(|m| message_id(m) == "re-chat-ping");

    println!("  user -> component:\n    {}", readme_message(&sent));
    if let Some(ack) = &ack {
        println!(
            "  component -> user (the client's reply):\n    {}",
            readme_message(ack)
        );
    }
    println!(
        "  implementing client -> component:\n    {}",
        readme_xml(&asked)
    );
    println!("  component -> user:\n    {}", readme_xml(&request));
    println!("  user -> component:\n    {}", readme_xml(&answer));
    println!(
        "  component -> implementing client:\n    {}",
        readme_xml(&returned)
    );
    println!(
        "  component -> user (the client's report):\n    {}\n",
        readme_message(&report)
    );

    let user_at_proxy = format!("{PROXY}/{}", user.jid);
    if jid_text(asked.to()) != user_at_proxy {
        return Err(format!(
            "the ping was not sent to the user's address at the proxy: {}",
            iq_xml(&asked)
        ));
    }
    if jid_text(request.from()) != PROXY
        || request.id() == asked.id()
        || !request.id().starts_with("cp")
    {
        return Err(format!("the user got the ping as {}", iq_xml(&request)));
    }
    if asked_again.id() != asked.id()
        || returned.id() != asked.id()
        || jid_text(returned.from()) != user_at_proxy
        || !matches!(returned, Iq::Result { .. })
    {
        return Err(format!("the answer came back as {}", iq_xml(&returned)));
    }
    if jid_text(report.from.as_ref()) != PROXY || !body(&report).contains("answered the ping") {
        return Err(format!(
            "the report reached the user as {}",
            stanza_xml(&Stanza::Message(report))
        ));
    }
    println!(
        "The component sent the ping as id {} and gave the answer back as id {}.",
        request.id(),
        returned.id()
    );
    Ok(())
}

/// A message printed like the README: `<message type=.. id=.. to=.. from=..>` then children.
fn readme_message(m: &Message) -> String {
    readme(Element::from(m.clone()))
}

/// An iq printed like the README: `<iq type=.. id=.. to=.. from=..>` then the payload.
fn readme_xml(iq: &Iq) -> String {
    readme(Element::from(iq.clone()))
}

/// A stanza printed like the README: name and type, id, to, from; then its children.
/// (Prosody adds xml:lang to what it delivers, e.g. on message bodies.)
fn readme(e: Element) -> String {
    let mut out = format!("<{}", e.name());
    for name in ["type", "id", "to", "from"] {
        if let Some(value) = e.attr(name) {
            let value = value
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('\'', "&apos;");
            out += &format!(" {name}='{value}'");
        }
    }
    let mut inner = String::new();
    for node in e.nodes() {
        match node {
            // Children in the stanza's own namespace (a message's <body/>) need no xmlns.
            Node::Element(child) => {
                inner += &String::from(child).replacen(" xmlns='jabber:client'", "", 1)
            }
            Node::Text(text) => inner += &text.replace('&', "&amp;").replace('<', "&lt;"),
        }
    }
    if inner.is_empty() {
        out + "/>"
    } else {
        format!("{out}>{inner}</{}>", e.name())
    }
}
