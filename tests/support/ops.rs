//! Operations helpers for the end-to-end tests: global config lines and modules (the
//! harness writes a fixed global section; [`add_globals`] edits the written config before
//! start, leaving [`Prosody`] itself unchanged), `prosodyctl shell`, a minimal HTTP/1.0
//! GET for mod_http_openmetrics, OpenMetrics parsing, log waits, and late echo replies.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};
use tokio_xmpp::parsers::iq::Iq;

use super::implementer::{echo_payload, Exchange};
use super::Prosody;

/// The config file the harness writes.
pub fn config_path(prosody: &Prosody) -> std::path::PathBuf {
    prosody.dir().join("prosody.cfg.lua")
}

/// Adds global `modules` to `modules_enabled` and global option `lines` (Lua) to the
/// config written by [`Prosody::new`]; call before [`Prosody::start`]. Panics if the
/// config does not look as expected (so that a harness change shows here).
pub fn add_globals(prosody: &Prosody, modules: &[&str], lines: &[String]) {
    let path = config_path(prosody);
    let cfg = fs::read_to_string(&path).expect("read the prosody config");
    let marker = "modules_enabled = { ";
    assert!(
        cfg.contains(marker),
        "no `{marker}` in the harness config:\n{cfg}"
    );
    let added: String = modules.iter().map(|m| format!("{m:?}, ")).collect();
    let cfg = cfg.replacen(marker, &format!("{marker}{added}"), 1);
    let host = "\nVirtualHost ";
    let at = cfg
        .find(host)
        .unwrap_or_else(|| panic!("no VirtualHost in the harness config:\n{cfg}"));
    let mut globals = String::from("-- Added by tests/support/ops.rs\n");
    for line in lines {
        globals += line;
        globals += "\n";
    }
    let cfg = format!("{}{globals}{}", &cfg[..at], &cfg[at..]);
    fs::write(&path, cfg).expect("write the prosody config");
}

/// Global lines for statistics and mod_http_openmetrics on 127.0.0.1:`port` (no https).
pub fn metrics_globals(port: u16) -> Vec<String> {
    vec![
        "statistics = \"internal\"".to_string(),
        "statistics_interval = \"manual\"".to_string(),
        format!("http_ports = {{ {port} }}"),
        "http_interfaces = { \"127.0.0.1\" }".to_string(),
        "https_ports = { }".to_string(),
        "openmetrics_allow_ips = { \"127.0.0.1\" }".to_string(),
    ]
}

/// Output of one `prosodyctl shell` command.
#[derive(Debug)]
pub struct ShellOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `prosodyctl --config <cfg> shell <command>` without blocking the runtime
/// (implementing clients keep answering meanwhile). Bounded to 20 s.
pub async fn shell(prosody: &Prosody, command: &str) -> ShellOutput {
    let mut cmd = tokio::process::Command::new("prosodyctl");
    cmd.arg("--config")
        .arg(config_path(prosody))
        .arg("shell")
        .arg(command)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("prosodyctl shell {command:?} did not end within 20 s"))
        .expect("run prosodyctl");
    ShellOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET <path>` over HTTP/1.0 to 127.0.0.1:`port` (on the blocking pool; bounded).
pub async fn http_get(port: u16, path: &str) -> HttpResponse {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get_blocking(port, &path))
        .await
        .expect("http task")
}

fn http_get_blocking(port: u16, path: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("set_write_timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpResponse {
        status,
        body: body.to_string(),
    }
}

/// One OpenMetrics sample line: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the sample lines of an OpenMetrics text (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_at(line.find(' ')?),
    };
    let (labels, rest) = if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find('}')?;
        (parse_labels(&inner[..end]), &inner[end + 1..])
    } else {
        (Vec::new(), rest)
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values without escapes, as the test's labels are).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.push((key, after[..end].to_string()));
        rest = &after[end + 1..];
    }
    out
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Has every (key, value) of `wanted`?
    pub fn has_labels(&self, wanted: &[(&str, &str)]) -> bool {
        wanted.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// The value of the one sample named `name` with these labels (None if absent; panics
/// if several match).
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .collect();
    assert!(
        found.len() <= 1,
        "several samples {name}{labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

/// Waits (bounded) until the log has at least `count` lines containing `needle`.
pub async fn wait_log(prosody: &Prosody, needle: &str, count: usize, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let n = prosody.log_lines(needle).len();
        if n >= count {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{n} log line(s) with {needle:?} after {wait:?}, expected {count}; log tail:\n{}",
                prosody.log_tail(30)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The echo result the implementer would have sent for `ex` (for a resource that is
/// `Silent` and answers later through [`super::implementer::Implementer::send`]).
pub fn late_echo(ex: &Exchange) -> Iq {
    let own = ex
        .request
        .to()
        .and_then(|j| j.clone().try_into_full().ok())
        .expect("the request was addressed to a full JID");
    let payload = match &ex.request {
        Iq::Get { payload, .. } | Iq::Set { payload, .. } => payload,
        other => panic!("not a request: {other:?}"),
    };
    Iq::Result {
        from: None,
        to: ex.request.from().cloned(),
        id: ex.request.id().to_string(),
        payload: Some(echo_payload(&own, payload)),
    }
}

/// Answers the requests a `Silent` implementer received, each `delay` after it arrived
/// (call [`LateAnswers::answer_due`] often).
pub struct LateAnswers {
    delay: Duration,
    answered: HashSet<String>,
}

impl LateAnswers {
    pub fn new(delay: Duration) -> Self {
        LateAnswers {
            delay,
            answered: HashSet::new(),
        }
    }

    /// Sends the echo result of every request that has waited `delay`.
    pub fn answer_due(&mut self, imp: &super::implementer::Implementer) {
        for ex in imp.exchanges() {
            let id = ex.request.id().to_string();
            if ex.at.elapsed() >= self.delay && !self.answered.contains(&id) {
                imp.send(late_echo(&ex));
                self.answered.insert(id);
            }
        }
    }
}
