//! Test harness: a throwaway Prosody with the module installed, and XMPP clients for it.
//!
//! Used by the end-to-end tests and by `examples/demo.rs`, `examples/bench.rs` (through
//! `#[path]`), so not every item is used by every user. One module per kind of thing:
//!
//! - [`server`]: [`Prosody`] (config, install, users, start/stop by pid, log polling).
//! - [`setup`]: the standard setup every e2e file uses (H = proxy.localhost in front of
//!   T = service@localhost, the users, implementers, requesters, the wait until routable).
//! - [`client`]: a logged-in client ([`client::Xmpp`]), stanza builders and accessors, the
//!   one `expect_error`.
//! - [`implementer`]: an implementing resource answering with a [`implementer::Behaviour`],
//!   and an [`implementer::Inbox`] of what else it received.
//! - [`gate`]: a TCP relay that resets a client's connection and holds its reconnects
//!   until reopened (stream management: the session hibernates, then resumes).
//! - [`traffic`]: fault injection (TCP relay, resources with a reply policy) and the
//!   traffic generator with its per-request tallies.
//! - [`shell`]: `prosodyctl shell`, and waits on `client_proxy:resources(host)` output.
//! - [`metrics`]: HTTP GET of mod_http_openmetrics and waits on the module's samples.
//!
//! Waits for Prosody poll a condition with a deadline (never a fixed sleep), and never on
//! debug log wording: on the wire, the shell's resource list, metrics, or operator-facing
//! log lines.
//!
//! Use a current-thread tokio runtime (plain `#[tokio::test]`, `#[tokio::main(flavor =
//! "current_thread")]`): on a multi-thread runtime under CPU load, tokio-xmpp 6.0.0 clients
//! were seen to stop delivering received stanzas for good (the server's log shows them
//! sent; the client never yields them). [`Prosody::start`]/[`Prosody::stop`] block the
//! thread for a moment, which is fine there.
#![allow(dead_code)]

pub mod client;
pub mod federation;
pub mod gate;
pub mod implementer;
pub mod metrics;
pub mod server;
pub mod setup;
pub mod shell;
pub mod traffic;

pub use server::*;
