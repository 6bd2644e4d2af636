//! `prosodyctl shell` against a test server (the standard setup enables `admin_shell`), and
//! waits on the module's shell command `client_proxy:resources(host)`, whose output is
//! product surface:
//!
//! ```text
//! proxy.localhost -> service@localhost: 2 eligible, 1 pending
//!   a                               priority    5  active      1 pending
//! ```

use std::process::Stdio;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use super::Prosody;

/// How long a shell condition gets to become true.
const SHELL_WAIT: Duration = Duration::from_secs(20);

/// What `prosodyctl shell` did.
#[derive(Debug)]
pub struct ShellOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// When the command was started and when it ended.
    pub started: Instant,
    pub ended: Instant,
}

/// Runs `prosodyctl --config <config> shell <command>` without blocking the runtime
/// (implementing clients keep answering meanwhile); bounded to 20 s.
pub async fn shell(prosody: &Prosody, command: &str) -> ShellOutput {
    let started = Instant::now();
    let out = timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("prosodyctl")
            .arg("--config")
            .arg(prosody.dir().join("prosody.cfg.lua"))
            .arg("shell")
            .arg(command)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("prosodyctl shell {command:?} did not end within 20 s"))
    .unwrap_or_else(|e| panic!("run prosodyctl shell {command:?}: {e}"));
    ShellOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        started,
        ended: Instant::now(),
    }
}

/// Runs a shell command, asserting it succeeded; its stdout.
pub async fn shell_ok(prosody: &Prosody, command: &str) -> String {
    let out = shell(prosody, command).await;
    assert!(
        out.success && out.stderr.trim().is_empty(),
        "prosodyctl shell {command:?} failed: {out:?}"
    );
    out.stdout
}

/// Polls a shell command until it succeeds with a stdout satisfying `pred` (bounded; a
/// failure meanwhile, e.g. the command not registered yet, is polled again); the stdout.
pub async fn shell_until(prosody: &Prosody, command: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SHELL_WAIT;
    loop {
        let out = shell(prosody, command).await;
        if out.success && out.stderr.trim().is_empty() && pred(&out.stdout) {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "prosodyctl shell {command:?}: no wanted output within {SHELL_WAIT:?}: {out:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// The line of `client_proxy:resources` output that lists resource `name`.
pub fn resource_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

/// Polls `client_proxy:resources(host)` until it lists each of `online` and none of
/// `offline` (without sending stanzas, which would move the
/// routing strategies); the output.
pub async fn wait_resources(
    prosody: &Prosody,
    host: &str,
    online: &[&str],
    offline: &[&str],
) -> String {
    shell_until(
        prosody,
        &format!("client_proxy:resources({host:?})"),
        |out| {
            online.iter().all(|r| resource_line(out, r).is_some())
                && offline.iter().all(|r| resource_line(out, r).is_none())
        },
    )
    .await
}
