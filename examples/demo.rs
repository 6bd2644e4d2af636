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
//! (service@localhost/a and /b), lets user@localhost/abc send a few requests, and prints
//! each exchange as the README shows it: user -> component, component -> implementing
//! client, implementing client -> component, component -> user. Stops Prosody at the end.
//! Exits non-zero if anything does not go as described.
//!
//! Needs the release library (`make build`) and Prosody installed.

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "implementing_client.rs"]
mod implementing_client;

use std::collections::HashMap;
use std::time::Duration;

use implementing_client::{Config, Requester};
use support::client::{get, iq_xml, test_payload, xml, Xmpp};
use support::{ComponentSpec, Prosody};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tokio_xmpp::minidom::{Element, Node};
use tokio_xmpp::parsers::iq::Iq;

const PROXY: &str = "proxy.localhost";
const PASSWORD: &str = "secret";
const REQUESTS: usize = 4;

/// One exchange as the implementing client saw it: the request it got, the answer it sent.
type Seen = (Iq, Iq);

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
            let report = |request: &Iq, reply: &Iq| {
                let _ = seen_tx.send((request.clone(), reply.clone()));
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
        let (forwarded, reply) = loop {
            let (req, rep) = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
                .await
                .map_err(|_| format!("no implementing client saw id {id}"))?
                .ok_or("implementing clients gone")?;
            if req.id() == id {
                break (req, rep);
            }
        };
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

/// An iq printed like the README: `<iq type=.. id=.. to=.. from=..>` then the payload.
fn readme_xml(iq: &Iq) -> String {
    let e = Element::from(iq.clone());
    let mut out = String::from("<iq");
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
            Node::Element(child) => inner += &String::from(child),
            Node::Text(text) => inner += &text.replace('&', "&amp;").replace('<', "&lt;"),
        }
    }
    if inner.is_empty() {
        out + "/>"
    } else {
        format!("{out}>{inner}</iq>")
    }
}
