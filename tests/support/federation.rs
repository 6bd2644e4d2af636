//! Two Prosody servers federated over s2s (dialback, no TLS) on the loopback interface.
//!
//! - Server A ([`FAR`] = `a.localhost`, on 127.0.0.2) hosts the component
//!   [`FAR_PROXY`] = `proxy.a.localhost` and its own users.
//! - Server B (`localhost`, on 127.0.0.1: the standard test domain, so that
//!   [`super::implementer::Implementer`] and [`super::setup::TARGET`] work unchanged) hosts
//!   the implementing client's account `service@localhost` and users who are remote to A.
//!
//! Each server has its s2s port (free, not 5269) and its own resolver setup: Prosody
//! resolves with libunbound and does not read /etc/hosts, so each config gets an
//! `unbound = { ... }` that answers only the peer's names, from a private hosts file and
//! a local SRV record (`_xmpp-server._tcp` of every name under the peer's domain points
//! to the peer's s2s port), and forwards nothing off the loopback interface. No system
//! file is touched.
//!
//! Start order: B, then A (the component sends its subscription once A has started, and
//! B must be there to take it), then the implementing client on B, which approves the
//! subscription as usual. Both servers are stopped by pid on drop, also when a test panics.

use std::fs;
use std::time::Duration;

use super::client::Xmpp;
use super::setup::{PASSWORD, TARGET, TARGET_USER};
use super::{free_port_at, ComponentSpec, Prosody, Site};

/// Server A's domain (the component's server).
pub const FAR: &str = "a.localhost";
/// Server A's loopback address.
pub const FAR_IP: &str = "127.0.0.2";
/// The component, on server A, in front of `service@localhost` on server B.
pub const FAR_PROXY: &str = "proxy.a.localhost";
/// Server B's loopback address (its domain is `localhost`, [`super::DOMAIN`]).
pub const HOME_IP: &str = "127.0.0.1";

/// Server A (component, users `user`/`other`/`local<n>` of [`FAR`]) and server B (the
/// target `service`, users `user`/`other`/`remote<n>` of `localhost`); all with
/// [`PASSWORD`].
pub struct Federation {
    /// Server A: the component's.
    pub a: Prosody,
    /// Server B: the implementing client's.
    pub b: Prosody,
}

/// How many `local<n>`/`remote<n>` users each server has (n = 1..=USERS).
pub const USERS: usize = 6;

/// Starts B, then A with the component [`FAR_PROXY`] -> [`TARGET`] (plus `extra` option
/// lines), both with s2s and resolvers that find each other.
pub fn federation(extra: &[&str]) -> Federation {
    let mut fed = configure(extra);
    fed.b.start();
    fed.a.start();
    fed
}

/// Like [`federation`], but starts only A: B (the target's server) is down when the
/// component first asks for the subscription; start it with `fed.b.start()`.
pub fn federation_b_later(extra: &[&str]) -> Federation {
    let mut fed = configure(extra);
    fed.a.start();
    fed
}

fn configure(extra: &[&str]) -> Federation {
    let a_site = Site {
        domain: FAR.to_string(),
        interface: FAR_IP.to_string(),
        s2s: Some(free_port_at(FAR_IP)),
    };
    let b_site = Site {
        s2s: Some(free_port_at(HOME_IP)),
        ..Site::default()
    };
    let a = Prosody::at_site(&a_site, &[ComponentSpec::new(FAR_PROXY, TARGET, extra)]);
    let b = Prosody::at_site(&b_site, &[]);
    resolve_peer(&a, &b_site);
    resolve_peer(&b, &a_site);
    for server in [&a, &b] {
        server.add_globals(&["admin_shell"], &[]);
        for user in ["user", "other"] {
            server.register(user, PASSWORD);
        }
    }
    for n in 1..=USERS {
        a.register(&format!("local{n}"), PASSWORD);
        b.register(&format!("remote{n}"), PASSWORD);
    }
    b.register(TARGET_USER, PASSWORD);
    Federation { a, b }
}

/// Lets `server` resolve every name under `peer`'s domain to the peer's interface and
/// s2s port: a private hosts file with the peer's address, a `redirect` zone for the
/// peer's domain (every name under it gets the apex records) and an SRV record at the
/// apex. Forwarding goes to a closed loopback port: nothing else resolves, and no query
/// leaves the machine.
fn resolve_peer(server: &Prosody, peer: &Site) {
    let port = peer.s2s.expect("the peer has s2s");
    let hosts = server.dir().join("hosts");
    fs::write(&hosts, format!("{} {}\n", peer.interface, peer.domain)).expect("write hosts");
    let domain = &peer.domain;
    let unbound = format!(
        "unbound = {{ hoststxt = {:?}, resolvconf = false, forward = \"127.0.0.1@9\", \
         options = {{ [\"local-zone:\"] = \"{domain}. redirect\", \
         [\"local-data:\"] = \"{domain}. 60 IN SRV 0 0 {port} {domain}.\" }} }}",
        hosts.to_string_lossy()
    );
    server.add_globals(&[], &[unbound]);
}

impl Federation {
    /// A logged-in client `full_jid` (of either domain) on the server that hosts it,
    /// without presence.
    pub async fn login(&self, full_jid: &str) -> Xmpp {
        let server = if full_jid.contains(&format!("@{FAR}/")) {
            &self.a
        } else {
            &self.b
        };
        Xmpp::login(&server.addr(), full_jid, PASSWORD).await
    }

    /// Panics if either server logged a Lua traceback.
    pub fn assert_no_tracebacks(&self) {
        self.a.assert_no_tracebacks();
        self.b.assert_no_tracebacks();
    }
}

/// Generous bound for one stanza that crosses the federation (a new s2s connection and
/// its dialback included).
pub const FAR_ANSWER: Duration = Duration::from_secs(15);
