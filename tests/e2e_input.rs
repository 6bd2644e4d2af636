//! End-to-end tests of odd but well-formed input against a real Prosody (issue 12): what
//! reaches the module gets its documented answer or is dropped, and never raises (no Lua
//! traceback in the log).
//!
//! Prosody checks iq stanzas from its own clients before routing them (a type other than
//! get/set/result/error, no id, or a get/set without exactly one child: `bad-request` from
//! the server), but not those from other servers or components. The odd stanzas are sent
//! both ways: by a raw c2s client (the server's answer; the module never sees them) and
//! by an external component `raw.localhost` on the same server, which stands in for a
//! remote server (the module's answer). Raw clients here write and read XML text, so they
//! can send what tokio-xmpp's typed stanzas cannot express, and an implementing client
//! that tokio-xmpp would disconnect for receiving it.
//!
//! Needs the release library: `make build` (or `cargo build --release`) first.

mod support;

use std::collections::VecDeque;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use support::client::*;
use support::implementer::*;
use support::setup::*;
use support::{free_port, ComponentSpec, Prosody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};
use tokio_xmpp::minidom::Element;

/// The external component that stands in for another server.
const RAW_HOST: &str = "raw.localhost";
const RAW_SECRET: &str = "raw-secret";
const STREAMS_NS: &str = "http://etherx.jabber.org/streams";
const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A raw XMPP connection: writes text, reads top-level elements of the stream.
struct Raw {
    io: TcpStream,
    buf: Vec<u8>,
    queue: VecDeque<Element>,
    /// Who this is (for messages).
    name: String,
}

/// The end of the first complete top-level element in `buf` (after leading text), or
/// None while it is incomplete. Prosody escapes `<` and `>` in attribute values and text.
fn element_end(buf: &[u8]) -> Option<usize> {
    let find = |from: usize, b: u8| buf[from..].iter().position(|&c| c == b).map(|p| from + p);
    let mut depth: i64 = 0;
    let mut i = find(0, b'<')?;
    loop {
        let close = find(i, b'>')?;
        match buf.get(i + 1) {
            Some(b'/') => depth -= 1,
            Some(b'?') | Some(b'!') => {}
            _ if buf[close - 1] == b'/' => {}
            _ => depth += 1,
        }
        if depth <= 0 {
            return Some(close + 1);
        }
        i = find(close, b'<')?;
    }
}

/// Parses a top-level element of the stream: the stream's namespaces are declared on it.
fn parse_element(text: &str) -> Element {
    let name_end = text
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(text.len());
    let (head, rest) = text.split_at(name_end);
    let open_tag = &text[..text.find('>').unwrap_or(text.len())];
    let mut decl = format!(" xmlns:stream='{STREAMS_NS}'");
    if !open_tag.contains("xmlns=") {
        decl += " xmlns='jabber:client'";
    }
    let with_ns = format!("{head}{decl}{rest}");
    with_ns
        .parse()
        .unwrap_or_else(|e| panic!("unparsable element from the server: {e:?}: {text}"))
}

impl Raw {
    async fn connect(addr: &str, name: &str) -> Raw {
        let io = timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{name}: connect {addr} timed out"))
            .unwrap_or_else(|e| panic!("{name}: connect {addr}: {e}"));
        Raw {
            io,
            buf: Vec::new(),
            queue: VecDeque::new(),
            name: name.to_string(),
        }
    }

    /// Logs in as `user@localhost/resource` with SASL PLAIN (no TLS), binds, and returns
    /// the connection (no presence sent).
    async fn c2s(addr: &str, user: &str, resource: &str) -> Raw {
        let mut raw = Raw::connect(addr, &format!("{user}/{resource}")).await;
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
        raw.send(header).await;
        raw.read_until("</stream:features>").await;
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
        raw.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        let answer = raw.read_until("/>").await;
        assert!(
            answer.contains("<success"),
            "{}: no SASL success: {answer}",
            raw.name
        );
        raw.send(header).await;
        raw.read_until("</stream:features>").await;
        raw.send(&format!(
            "<iq type='set' id='bind-1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{}</resource></bind></iq>",
            esc(resource)
        ))
        .await;
        let bound = raw
            .wait_for(Duration::from_secs(10), |e| e.attr("id") == Some("bind-1"))
            .await
            .expect("a bind answer");
        assert_eq!(
            bound.attr("type"),
            Some("result"),
            "bind: {}",
            to_xml(&bound)
        );
        raw
    }

    /// Connects as the external component [`RAW_HOST`] (XEP-0114 handshake).
    async fn component(addr: &str) -> Raw {
        let mut raw = Raw::connect(addr, RAW_HOST).await;
        raw.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{RAW_HOST}'>"
        ))
        .await;
        raw.read_until("<stream:stream").await;
        let header = raw.read_until(">").await;
        let id = header
            .split(" id=")
            .nth(1)
            .and_then(|rest| {
                let quote = rest.chars().next()?;
                rest[1..].split(quote).next().map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no stream id in {header}"));
        raw.send(&format!(
            "<handshake>{}</handshake>",
            sha1_hex(&format!("{id}{RAW_SECRET}"))
        ))
        .await;
        let done = raw
            .next(Duration::from_secs(10))
            .await
            .expect("a handshake answer");
        assert_eq!(
            done.name(),
            "handshake",
            "handshake refused: {}",
            to_xml(&done)
        );
        raw
    }

    async fn send(&mut self, text: &str) {
        timeout(Duration::from_secs(10), self.io.write_all(text.as_bytes()))
            .await
            .unwrap_or_else(|_| panic!("{}: write timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
    }

    /// Reads until `needle` and consumes everything up to and including it.
    async fn read_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pos) = self
                .buf
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let taken: Vec<u8> = self.buf.drain(..pos + needle.len()).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                self.fill(left).await,
                "{}: no {needle:?} in {:?}",
                self.name,
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads more bytes (at most `wait`); false on timeout or end of stream.
    async fn fill(&mut self, wait: Duration) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        match timeout(wait, self.io.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Ok(Err(e)) => panic!("{}: read: {e}", self.name),
        }
    }

    /// The next top-level element from the stream (queued ones first), or None after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Element> {
        if let Some(e) = self.queue.pop_front() {
            return Some(e);
        }
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = element_end(&self.buf) {
                let bytes: Vec<u8> = self.buf.drain(..end).collect();
                let text = String::from_utf8(bytes).expect("UTF-8 from the server");
                let text = text.trim_start();
                if text.starts_with("</stream:stream") {
                    return Some(Element::builder("closed", STREAMS_NS).build());
                }
                return Some(parse_element(text));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left).await {
                return None;
            }
        }
    }

    /// Waits (at most `wait`) for an element matching `pred`; others are queued.
    async fn wait_for(
        &mut self,
        wait: Duration,
        mut pred: impl FnMut(&Element) -> bool,
    ) -> Option<Element> {
        if let Some(pos) = self.queue.iter().position(&mut pred) {
            return self.queue.remove(pos);
        }
        let deadline = Instant::now() + wait;
        let mut later = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_unqueued(left).await {
                Some(e) if pred(&e) => break Some(e),
                Some(e) => later.push(e),
                None => break None,
            }
        };
        self.queue.extend(later);
        found
    }

    async fn next_unqueued(&mut self, wait: Duration) -> Option<Element> {
        let queued = std::mem::take(&mut self.queue);
        let got = self.next(wait).await;
        self.queue = queued;
        got
    }

    /// The iq answer (result or error) with this id.
    async fn answer(&mut self, id: &str, wait: Duration) -> Option<Element> {
        self.wait_for(wait, |e| {
            e.name() == "iq"
                && e.attr("id") == Some(id)
                && matches!(e.attr("type"), Some("result") | Some("error"))
        })
        .await
    }

    /// Everything that arrives within `wait` (after the queued elements).
    async fn collect(&mut self, wait: Duration) -> Vec<Element> {
        let mut out: Vec<Element> = self.queue.drain(..).collect();
        let deadline = Instant::now() + wait;
        while let Some(e) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(e);
        }
        out
    }
}

/// Hex SHA-1 of `text` (the component handshake), by coreutils' `sha1sum`.
fn sha1_hex(text: &str) -> String {
    let mut child = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha1sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to sha1sum");
    let out = child.wait_with_output().expect("sha1sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// The defined condition and type of an error stanza (`<error type=..><cond/></error>`).
fn error_of(e: &Element) -> Option<(String, String)> {
    let error = e.children().find(|c| c.name() == "error")?;
    let cond = error
        .children()
        .find(|c| c.ns() == STANZAS_NS && c.name() != "text")?;
    Some((cond.name().to_string(), error.attr("type")?.to_string()))
}

/// The `<text/>` of an error stanza.
fn error_text_of(e: &Element) -> Option<String> {
    let error = e.children().find(|c| c.name() == "error")?;
    error
        .children()
        .find(|c| c.name() == "text")
        .map(|t| t.text())
}

/// Asserts `e` is an iq error from `from` with this type and condition.
fn expect_raw_error(e: &Element, from: &str, etype: &str, cond: &str) {
    assert_eq!(e.attr("type"), Some("error"), "{}", to_xml(e));
    assert_eq!(e.attr("from"), Some(from), "sender of {}", to_xml(e));
    assert_eq!(
        error_of(e),
        Some((cond.to_string(), etype.to_string())),
        "{}",
        to_xml(e)
    );
}

/// A server with H -> T, the standard users, `admin_shell`, the external component
/// [`RAW_HOST`] and extra global lines; started. Returns it and the component port.
fn raw_server(extra: &[&str], globals: &[String]) -> (Prosody, u16) {
    let mut prosody = Prosody::new(&[ComponentSpec::new(PROXY, TARGET, extra)]);
    let component_port = free_port();
    let mut lines = vec![
        format!("component_ports = {{ {component_port} }}"),
        "component_interfaces = { \"127.0.0.1\" }".to_string(),
    ];
    lines.extend_from_slice(globals);
    prosody.add_globals(&["admin_shell"], &lines);
    prosody.add_section(&format!(
        "Component {RAW_HOST:?}\n    component_secret = {RAW_SECRET:?}"
    ));
    for user in [TARGET_USER, "user", "other"] {
        prosody.register(user, PASSWORD);
    }
    prosody.start();
    (prosody, component_port)
}

/// A raw implementing resource `service@localhost/<resource>`: initial presence, online at
/// the proxy (the module put the proxy on the target's roster: no subscription request
/// reaches the client, README "Presence of the implementing client").
async fn raw_implementer(prosody: &Prosody, resource: &str) -> Raw {
    let mut imp = Raw::c2s(&prosody.addr(), TARGET_USER, resource).await;
    imp.send("<presence/>").await;
    wait_online(prosody, &[resource]).await;
    imp
}

/// The request `id` as the raw implementer received it (others stay queued).
async fn received(imp: &mut Raw, id: &str, wait: Duration) -> Option<Element> {
    imp.wait_for(wait, |e| {
        e.name() == "iq"
            && e.attr("id") == Some(id)
            && matches!(e.attr("type"), Some("get") | Some("set"))
    })
    .await
}

/// The raw implementer answers `request` with a result carrying `payload`.
async fn answer_with(imp: &mut Raw, request: &Element, payload: &str) {
    let to = request
        .attr("from")
        .expect("a forwarded request has a from");
    let id = request.attr("id").expect("an id");
    imp.send(&format!(
        "<iq type='result' id='{}' to='{}'>{payload}</iq>",
        esc(id),
        esc(to)
    ))
    .await;
}

/// Warm-up requests from `r` until the raw implementer gets and answers one.
async fn wait_raw_routable(r: &mut Raw, imp: &mut Raw) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 1.. {
        assert!(Instant::now() < deadline, "not routable within 20 s");
        let id = format!("warm-{n}");
        r.send(&format!(
            "<iq type='get' id='{id}' to='{PROXY}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        if let Some(req) = received(imp, &id, Duration::from_millis(500)).await {
            answer_with(imp, &req, "").await;
            let a = r.answer(&id, ANSWER).await.expect("the warm-up answer");
            assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
            return;
        }
        let a = r.answer(&id, ANSWER).await.expect("an answer");
        assert_eq!(
            error_of(&a).map(|e| e.0).as_deref(),
            Some("service-unavailable")
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Nothing with `id` reached the implementer within [`QUIET`].
async fn never_reaches(imp: &mut Raw, id: &str) {
    let got = imp.wait_for(QUIET, |e| e.attr("id") == Some(id)).await;
    assert!(
        got.is_none(),
        "{id} reached the implementer: {}",
        to_xml(&got.unwrap())
    );
}

// a. An iq get with two children, an iq of an unknown type and an iq without an id. From a
// client of the server, Prosody answers bad-request itself and the module never sees
// them; from the component (as from another server) they reach the module: the two
// children are forwarded whole and the answer routed back, the unknown type is dropped
// (no answer, nothing forwarded), the missing id is answered bad-request.
#[tokio::test]
async fn odd_iq_shapes() {
    let (prosody, component_port) = raw_server(&[], &[]);
    let mut imp = raw_implementer(&prosody, "raw").await;
    let mut c = Raw::c2s(&prosody.addr(), "user", "c").await;
    wait_raw_routable(&mut c, &mut imp).await;
    let mut far = Raw::component(&format!("127.0.0.1:{component_port}")).await;
    let requester = format!("someone@{RAW_HOST}/r");

    // Two children.
    let two = "<a xmlns='urn:example:a'>1</a><b xmlns='urn:example:b'>2</b>";
    c.send(&format!(
        "<iq type='get' id='two-c' to='{PROXY}'>{two}</iq>"
    ))
    .await;
    let refused = c.answer("two-c", ANSWER).await.expect("an answer to two-c");
    expect_raw_error(&refused, PROXY, "modify", "bad-request");
    eprintln!("two-c: {:?}", error_text_of(&refused));
    never_reaches(&mut imp, "two-c").await;

    far.send(&format!(
        "<iq type='get' id='two-f' from='{requester}' to='{PROXY}'>{two}</iq>"
    ))
    .await;
    let req = received(&mut imp, "two-f", ANSWER)
        .await
        .expect("two-f is forwarded");
    let names: Vec<&str> = req.children().map(|c| c.name()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "both children forwarded: {}",
        to_xml(&req)
    );
    assert_eq!(
        req.attr("from"),
        Some(format!("{PROXY}/{requester}").as_str())
    );
    answer_with(&mut imp, &req, "<ok xmlns='urn:example:a'/>").await;
    let answer = far
        .answer("two-f", ANSWER)
        .await
        .expect("an answer to two-f");
    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    assert_eq!(answer.attr("from"), Some(PROXY));
    assert_eq!(answer.attr("to"), Some(requester.as_str()));

    // An unknown type.
    c.send(&format!(
        "<iq type='fetch' id='odd-c' to='{PROXY}'><q xmlns='urn:example:q'/></iq>"
    ))
    .await;
    let refused = c.answer("odd-c", ANSWER).await.expect("an answer to odd-c");
    expect_raw_error(&refused, PROXY, "modify", "bad-request");
    never_reaches(&mut imp, "odd-c").await;

    far.send(&format!(
        "<iq type='fetch' id='odd-f' from='{requester}' to='{PROXY}'><q xmlns='urn:example:q'/></iq>"
    ))
    .await;
    never_reaches(&mut imp, "odd-f").await;
    let back: Vec<String> = far
        .collect(Duration::from_millis(200))
        .await
        .iter()
        .filter(|e| e.attr("id") == Some("odd-f"))
        .map(to_xml)
        .collect();
    eprintln!("odd-f answered with: {back:?}");
    for e in &back {
        assert!(
            e.contains("type='error'") || e.contains("type=\"error\""),
            "odd-f: {e}"
        );
    }

    // No id.
    far.send(&format!(
        "<iq type='get' from='{requester}' to='{PROXY}'><q xmlns='urn:example:noid'/></iq>"
    ))
    .await;
    let refused = far
        .wait_for(ANSWER, |e| {
            e.name() == "iq" && e.attr("type") == Some("error")
        })
        .await
        .expect("an answer to the iq without an id");
    assert_eq!(
        error_of(&refused),
        Some(("bad-request".to_string(), "modify".to_string())),
        "{}",
        to_xml(&refused)
    );
    assert_eq!(
        error_text_of(&refused).as_deref(),
        Some("An iq request needs an id"),
        "the module's answer, not the server's: {}",
        to_xml(&refused)
    );
    let got = imp
        .wait_for(QUIET, |e| {
            e.children().any(|c| c.ns() == "urn:example:noid")
        })
        .await;
    assert!(got.is_none(), "the iq without an id was forwarded");
    prosody.assert_no_tracebacks();
}

// b. A 1 MiB payload (the server's c2s_stanza_size_limit raised to 2 MiB; Prosody's
// default, 256 KiB, would close the sender's stream first): forwarded whole, answered
// whole.
#[tokio::test]
async fn one_mib_payload() {
    let (prosody, _) = raw_server(
        &[],
        &["c2s_stanza_size_limit = 2 * 1024 * 1024".to_string()],
    );
    let mut imp = raw_implementer(&prosody, "raw").await;
    let mut r = Raw::c2s(&prosody.addr(), "user", "big").await;
    wait_raw_routable(&mut r, &mut imp).await;

    let unit = "0123456789abcdef-é漢字 &amp; &lt;x&gt;\n";
    let text = unit.repeat((1 << 20) / unit.len() + 1);
    let payload = format!("<blob xmlns='urn:example:big'>{text}</blob>");
    assert!(payload.len() > (1 << 20), "a payload over 1 MiB");
    let expected = xml(&payload).text();
    let t0 = Instant::now();
    r.send(&format!(
        "<iq type='set' id='big-1' to='{PROXY}'>{payload}</iq>"
    ))
    .await;
    let req = received(&mut imp, "big-1", Duration::from_secs(30))
        .await
        .expect("big-1 is forwarded");
    let blob = req.children().next().expect("the payload");
    assert_eq!(blob.text().len(), expected.len(), "payload length intact");
    assert!(blob.text() == expected, "payload intact");
    answer_with(&mut imp, &req, &payload).await;
    let answer = r
        .answer("big-1", Duration::from_secs(30))
        .await
        .expect("an answer to big-1");
    assert_eq!(
        answer.attr("type"),
        Some("result"),
        "{}",
        answer.attr("type").unwrap_or("")
    );
    assert_eq!(answer.attr("from"), Some(PROXY));
    let back = answer.children().next().expect("the answer's payload");
    assert!(back.text() == expected, "answer payload intact");
    eprintln!("1 MiB each way in {:?}", t0.elapsed());
    prosody.assert_no_tracebacks();
}

// c. The implementing client addresses the component without a translated resource, or
// with one the component cannot map back: a request gets bad-request (no resource) or
// item-not-found, from the address it was sent to (README, "Requests from the implementing client"); a result to such an
// address is dropped; nothing reaches any user. (A resource that is a valid bare JID or
// domain is a valid plain JAT: the request goes to that address.)
#[tokio::test]
async fn implementer_addresses_that_are_not_a_jat() {
    let (prosody, _) = raw_server(&[], &[]);
    let mut imp = raw_implementer(&prosody, "raw").await;
    let mut u = Raw::c2s(&prosody.addr(), "user", "u").await;
    u.send("<presence/>").await;
    wait_raw_routable(&mut u, &mut imp).await;

    let q = "<q xmlns='urn:example:out'/>";
    imp.send(&format!("<iq type='get' id='bare' to='{PROXY}'>{q}</iq>"))
        .await;
    let a = imp.answer("bare", ANSWER).await.expect("an answer to bare");
    expect_raw_error(&a, PROXY, "cancel", "bad-request");

    for (id, resource) in [
        ("nojid", "not a jat"),
        ("token", "@0123456789abcdef"),
        ("at-domain", "@localhost/x"),
        ("slash", "/"),
    ] {
        let to = format!("{PROXY}/{resource}");
        imp.send(&format!(
            "<iq type='get' id='{id}' to='{}'>{q}</iq>",
            esc(&to)
        ))
        .await;
        let a = imp
            .answer(id, ANSWER)
            .await
            .unwrap_or_else(|| panic!("an answer to {id}"));
        expect_raw_error(&a, &to, "cancel", "item-not-found");
    }
    // Results and errors to addresses nobody asked from: dropped, never delivered.
    imp.send(&format!(
        "<iq type='result' id='stray' to='{PROXY}/user@localhost/u'>{q}</iq>"
    ))
    .await;
    imp.send(&format!(
        "<iq type='result' id='stray2' to='{}'>{q}</iq>",
        esc(&format!("{PROXY}/not a jat"))
    ))
    .await;
    let got = u.collect(QUIET).await;
    assert!(
        got.iter().all(|e| e.name() != "iq"),
        "the user got {:?}",
        got.iter().map(to_xml).collect::<Vec<_>>()
    );
    let extra = imp.collect(Duration::from_millis(200)).await;
    assert!(
        extra
            .iter()
            .all(|e| !matches!(e.attr("id"), Some("stray") | Some("stray2"))),
        "a stray result was answered: {:?}",
        extra.iter().map(to_xml).collect::<Vec<_>>()
    );
    prosody.assert_no_tracebacks();
}

// d. A requester whose resource has many allowed odd characters (spaces, `@`, `/`, quotes,
// `<&>`, accents, CJK) and an id as odd: the implementing client sees the full JID as the
// JAT (plain), its answer goes back to exactly that resource with that id.
#[tokio::test]
async fn odd_requester_resource_is_routed() {
    let prosody = server(&[]);
    let a = implementer(&prosody, "a").await;
    let resource = "a b @c/d \"q\" 'x' <&> é 漢字 ~!";
    let mut r = requester(&prosody, resource).await;
    assert_eq!(
        r.jid.resource().as_str(),
        resource,
        "the server bound the resource as asked"
    );
    wait_routable(&mut r, PROXY, &["a"]).await;
    let id = "id 'q' \"d\" <&> é 漢 /@";
    let answer = r
        .must_request(get(PROXY, id, test_payload("odd")), ANSWER)
        .await;
    assert_eq!(answer.id(), id);
    assert_eq!(
        answered_by(&answer).as_deref(),
        Some("a"),
        "{}",
        iq_xml(&answer)
    );
    assert_eq!(answer.from().map(|j| j.to_string()).as_deref(), Some(PROXY));
    let ex = a.exchange(id).expect("forwarded with its id");
    assert_eq!(
        ex.request.from().map(|j| j.to_string()),
        Some(format!("{PROXY}/{}", r.jid)),
        "the JAT is the requester's full JID"
    );
    prosody.assert_no_tracebacks();
}

// e. client_proxy_max_pending_per_user = 2 with a silent implementing resource: two
// devices of one user fill the account's share, the third device gets resource-constraint
// (wait) at once and is not forwarded; another user is still forwarded.
#[tokio::test]
async fn per_user_cap_across_devices() {
    const TIMEOUT: u64 = 5;
    let prosody = server(&[
        &format!("client_proxy_timeout = {TIMEOUT}"),
        "client_proxy_max_pending_per_user = 2",
    ]);
    let a = implementer(&prosody, "a").await;
    let mut first = login(&prosody, "user@localhost/first").await;
    wait_routable(&mut first, PROXY, &["a"]).await;
    a.set_behaviour(Behaviour::Silent);

    let mut devices = Vec::new();
    for d in ["d1", "d2", "d3"] {
        devices.push(login(&prosody, &format!("user@localhost/{d}")).await);
    }
    for (n, x) in devices.iter_mut().enumerate().take(2) {
        let id = format!("u{}", n + 1);
        x.send(get(PROXY, &id, test_payload(&id))).await;
        assert!(
            a.wait_request(&id, ANSWER).await.is_some(),
            "{id} forwarded"
        );
    }
    let t0 = Instant::now();
    devices[2].send(get(PROXY, "u3", test_payload("u3"))).await;
    let refused = devices[2]
        .wait_answer("u3", ANSWER)
        .await
        .expect("the third device is refused");
    let e = expect_error(&refused, PROXY, "wait", "resource-constraint");
    eprintln!("u3 refused after {:?}: {:?}", t0.elapsed(), error_text(e));
    assert!(
        t0.elapsed() < Duration::from_secs(TIMEOUT),
        "refused at once"
    );
    assert!(a.exchange("u3").is_none(), "u3 must not be forwarded");

    let mut o = login(&prosody, "other@localhost/x").await;
    o.send(get(PROXY, "o1", test_payload("o1"))).await;
    assert!(
        a.wait_request("o1", ANSWER).await.is_some(),
        "another user is forwarded"
    );
    prosody.assert_no_tracebacks();
}

/// Which of two raw implementers receives the request `id` first, and the request.
async fn received_by_either(a: &mut Raw, b: &mut Raw, id: &str) -> (usize, Element) {
    let deadline = Instant::now() + ANSWER;
    while Instant::now() < deadline {
        for (n, imp) in [(0, &mut *a), (1, &mut *b)] {
            if let Some(req) = received(imp, id, Duration::from_millis(100)).await {
                return (n, req);
            }
        }
    }
    panic!("{id} reached neither implementer");
}

/// The raw implementer declines `request` (service-unavailable): another resource may take it.
async fn decline(imp: &mut Raw, request: &Element) {
    imp.send(&format!(
        "<iq type='error' id='{}' to='{}'><error type='cancel'><service-unavailable xmlns='{STANZAS_NS}'/></error></iq>",
        esc(request.attr("id").expect("an id")),
        esc(request.attr("from").expect("a from"))
    ))
    .await;
}

/// The xml:lang of an element, read from its text (minidom keeps it apart from `attr`).
fn lang_of(e: &Element) -> Option<String> {
    let xml = to_xml(e);
    let head = &xml[..xml.find('>')?];
    let at = head.find("xml:lang='")? + "xml:lang='".len();
    head[at..].split('\'').next().map(str::to_owned)
}

/// A request as the implementer sees it, but for `to` (the resource it went to).
fn request_shape(e: &Element) -> (Vec<Option<String>>, Vec<String>) {
    let mut attrs = ["from", "id", "type"]
        .map(|name| e.attr(name).map(str::to_owned))
        .to_vec();
    attrs.push(lang_of(e));
    (attrs, e.children().map(to_xml).collect())
}

// f. A declined request reaches the other resource as it reached the first: the same type,
// id, xml:lang, from and payload. A plain iq is rebuilt around its payload (the module
// keeps only that); one with two children (from another server: Prosody refuses two
// children from its own clients) is kept and resent whole.
#[tokio::test]
async fn a_retried_request_arrives_as_it_came() {
    let (prosody, component_port) = raw_server(&[], &[]);
    let mut one = raw_implementer(&prosody, "one").await;
    let mut c = Raw::c2s(&prosody.addr(), "user", "c").await;
    wait_raw_routable(&mut c, &mut one).await;
    // The subscription is approved already: the second login only comes online.
    let mut two = Raw::c2s(&prosody.addr(), TARGET_USER, "two").await;
    two.send("<presence/>").await;
    wait_online(&prosody, &["one", "two"]).await;
    let mut far = Raw::component(&format!("127.0.0.1:{component_port}")).await;
    let requester = format!("someone@{RAW_HOST}/r");

    c.send(&format!(
        "<iq type='set' id='plain' to='{PROXY}'><q xmlns='urn:example:q' n='1'>text<x/></q></iq>"
    ))
    .await;
    far.send(&format!(
        "<iq type='get' id='whole' xml:lang='de' from='{requester}' to='{PROXY}'><a xmlns='urn:example:a'>1</a><b xmlns='urn:example:b'>2</b></iq>"
    ))
    .await;
    for (id, whole) in [("plain", false), ("whole", true)] {
        let (first, request) = received_by_either(&mut one, &mut two, id).await;
        let (declining, other) = if first == 0 {
            (&mut one, &mut two)
        } else {
            (&mut two, &mut one)
        };
        decline(declining, &request).await;
        let again = received(other, id, ANSWER)
            .await
            .unwrap_or_else(|| panic!("{id} was not sent to the other resource"));
        assert_eq!(
            request_shape(&again),
            request_shape(&request),
            "{id} again: {} first: {}",
            to_xml(&again),
            to_xml(&request)
        );
        assert_eq!(again.children().count(), if whole { 2 } else { 1 });
        // Prosody writes the client stream's xml:lang ("en") on the plain one.
        let lang = if whole { "de" } else { "en" };
        assert_eq!(lang_of(&again).as_deref(), Some(lang), "{}", to_xml(&again));
        answer_with(other, &again, "").await;
    }
    let plain = c.answer("plain", ANSWER).await.expect("an answer to plain");
    assert_eq!(plain.attr("type"), Some("result"), "{}", to_xml(&plain));
    let whole = far
        .answer("whole", ANSWER)
        .await
        .expect("an answer to whole");
    assert_eq!(whole.attr("type"), Some("result"), "{}", to_xml(&whole));
    prosody.assert_no_tracebacks();
}
