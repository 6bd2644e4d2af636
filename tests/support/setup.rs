//! The standard end-to-end setup shared by the test files: proxy.localhost in front of
//! service@localhost, the usual users, and the wait until the proxy routes.

use super::client::{get, iq_xml, test_payload, Xmpp};
use super::implementer::{answered_by, Implementer};
use super::{ComponentSpec, Prosody};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_xmpp::Stanza;

/// The component host of the standard setup.
pub const PROXY: &str = "proxy.localhost";
/// The implementing client's account (localpart) of the standard setup.
pub const TARGET_USER: &str = "service";
/// Every test user's password.
pub const PASSWORD: &str = "secret";

/// A Prosody with proxy.localhost -> service@localhost (plus `extra` option lines) and the
/// users service, user and other, all with [`PASSWORD`].
pub fn server(extra: &[&str]) -> Prosody {
    Prosody::start_with_users(
        &[ComponentSpec::new(PROXY, "service@localhost", extra)],
        &[
            (TARGET_USER, PASSWORD),
            ("user", PASSWORD),
            ("other", PASSWORD),
        ],
    )
}

/// A started implementing resource `service@localhost/<resource>` for proxy.localhost.
pub async fn implementer(prosody: &Prosody, resource: &str) -> Implementer {
    let mut i = Implementer::new(&prosody.addr(), TARGET_USER, PASSWORD, resource, PROXY);
    i.start().await;
    i
}

/// A logged-in requester `user@localhost/<resource>` with initial presence.
pub async fn requester(prosody: &Prosody, resource: &str) -> Xmpp {
    let mut r = Xmpp::login(
        &prosody.addr(),
        &format!("user@localhost/{resource}"),
        PASSWORD,
    )
    .await;
    r.presence(None).await;
    r
}

/// Sends warm-up requests (ids `warm-<n>`) to `to` until each of `resources` has answered
/// one (the proxy learns the target's presences asynchronously, after the subscription
/// is approved).
pub async fn wait_routable(r: &mut Xmpp, to: &str, resources: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = HashSet::new();
    let mut n = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        n += 1;
        let id = format!("warm-{n}");
        let answer = r
            .request(get(to, &id, test_payload(&id)), Duration::from_secs(5))
            .await;
        match answer {
            Some(iq) => {
                if let Some(res) = answered_by(&iq) {
                    seen.insert(res);
                    if resources.iter().all(|x| seen.contains(*x)) {
                        return;
                    }
                } else {
                    last = iq_xml(&iq);
                    sleep(Duration::from_millis(100)).await;
                }
            }
            None => last = format!("no answer to {id}"),
        }
    }
    panic!(
        "{to}: resources {resources:?} not all routable within 20 s; seen {seen:?}; last answer: {last}"
    );
}

/// Stanzas among `got` that came from the component host (any resource) or a node at it.
pub fn from_host<'a>(got: &'a [Stanza], host: &str) -> Vec<&'a Stanza> {
    got.iter()
        .filter(|s| {
            let from = match s {
                Stanza::Iq(iq) => iq.from().cloned(),
                Stanza::Message(m) => m.from.clone(),
                Stanza::Presence(p) => p.from.clone(),
            };
            from.is_some_and(|f| f.domain().as_str() == host)
        })
        .collect()
}
