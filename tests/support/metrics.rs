//! Statistics through mod_http_openmetrics: the global config lines, a minimal HTTP/1.0
//! GET, OpenMetrics sample parsing, and a poll until the module's samples show what a
//! test expects.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::time::{sleep, Instant};

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

/// Prefix of the module's OpenMetrics names.
pub const METRIC: &str = "prosody_mod_client_proxy";

/// Fetches /metrics and returns the body (asserting 200).
pub async fn fetch_metrics(port: u16) -> String {
    let resp = http_get(port, "/metrics").await;
    assert_eq!(resp.status, 200, "GET /metrics: {resp:?}");
    resp.body
}

/// The module's metric lines for proxy.localhost (for failure messages).
pub fn our_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains(METRIC))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expected values of the module's samples for proxy.localhost: (name, label, value).
pub type Expect<'a> = &'a [(&'a str, Option<(&'a str, &'a str)>, f64)];

/// The mismatches between `expect` and the metrics text, for component `host`.
pub fn metric_mismatches(text: &str, host: &str, expect: Expect<'_>) -> Vec<String> {
    let samples = parse_samples(text);
    let mut out = Vec::new();
    for (name, label, want) in expect {
        let mut labels = vec![("host", host)];
        labels.extend(label.iter().copied());
        let got = sample_value(&samples, name, &labels);
        if got != Some(*want) {
            out.push(format!("{name}{labels:?}: got {got:?}, want {want}"));
        }
    }
    out
}

/// Fetches /metrics until it shows `expect` for component `host` (the proxy processes
/// stanzas after they are sent); panics with the module's lines after 5 s.
pub async fn wait_metrics(port: u16, host: &str, expect: Expect<'_>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fetch_metrics(port).await;
        let wrong = metric_mismatches(&text, host, expect);
        if wrong.is_empty() {
            return text;
        }
        if Instant::now() >= deadline {
            panic!(
                "metrics differ:\n{}\n---- {METRIC} lines ----\n{}",
                wrong.join("\n"),
                our_lines(&text)
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}
