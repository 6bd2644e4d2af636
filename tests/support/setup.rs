//! The standard end-to-end setup, used by every e2e file: H = proxy.localhost in front of
//! T = service@localhost, the users service, user and other (all with [`PASSWORD`]),
//! `admin_shell` enabled (for [`wait_online`] and the shell tests), implementing
//! resources, requesters, and the waits until the proxy routes or knows a resource.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::client::{get, iq_xml, test_payload, Xmpp};
use super::implementer::{answered_by, Behaviour, Implementer};
use super::shell::wait_resources;
use super::{ComponentSpec, Prosody};

/// The component host of the standard setup.
pub const PROXY: &str = "proxy.localhost";
/// The implementing client's account (bare JID) of the standard setup.
pub const TARGET: &str = "service@localhost";
/// The implementing client's account (localpart) of the standard setup.
pub const TARGET_USER: &str = "service";
/// Every test user's password.
pub const PASSWORD: &str = "secret";
/// Generous bound for one stanza that should come at once.
pub const ANSWER: Duration = Duration::from_secs(10);
/// How long "nothing (more) comes" is watched.
pub const QUIET: Duration = Duration::from_millis(1500);

/// A started Prosody with H -> T (plus `extra` option lines) and the standard users.
pub fn server(extra: &[&str]) -> Prosody {
    server_with(extra, &[], &[])
}

/// Like [`server`], with global `modules` and option lines `globals` added.
pub fn server_with(extra: &[&str], modules: &[&str], globals: &[String]) -> Prosody {
    let mut prosody = Prosody::new(&[ComponentSpec::new(PROXY, TARGET, extra)]);
    let mut all = vec!["admin_shell"];
    all.extend_from_slice(modules);
    prosody.add_globals(&all, globals);
    for user in [TARGET_USER, "user", "other"] {
        prosody.register(user, PASSWORD);
    }
    prosody.start();
    prosody
}

/// A started echoing implementing resource `service@localhost/<resource>` for H.
pub async fn implementer(prosody: &Prosody, resource: &str) -> Implementer {
    implementer_with(prosody, resource, None, Behaviour::Echo).await
}

/// A started implementing resource of T for H with a priority and a behaviour.
pub async fn implementer_with(
    prosody: &Prosody,
    resource: &str,
    priority: Option<i8>,
    behaviour: Behaviour,
) -> Implementer {
    let mut i = Implementer::new(&prosody.addr(), TARGET_USER, PASSWORD, resource, PROXY)
        .behaviour(behaviour);
    if let Some(p) = priority {
        i = i.priority(p);
    }
    i.start().await;
    i
}

/// A logged-in client `full_jid` without presence (it only sends requests).
pub async fn login(prosody: &Prosody, full_jid: &str) -> Xmpp {
    Xmpp::login(&prosody.addr(), full_jid, PASSWORD).await
}

/// A logged-in requester `full_jid` with initial presence.
pub async fn requester_jid(prosody: &Prosody, full_jid: &str) -> Xmpp {
    let mut r = login(prosody, full_jid).await;
    r.presence(None).await;
    r
}

/// A logged-in requester `user@localhost/<resource>` with initial presence.
pub async fn requester(prosody: &Prosody, resource: &str) -> Xmpp {
    requester_jid(prosody, &format!("user@localhost/{resource}")).await
}

/// Waits until H lists each of `resources` of T as online (shell, no stanza sent: the
/// routing strategies do not move).
pub async fn wait_online(prosody: &Prosody, resources: &[&str]) {
    wait_resources(prosody, PROXY, resources, &[]).await;
}

/// Waits until H no longer lists any of `resources` of T.
pub async fn wait_offline(prosody: &Prosody, resources: &[&str]) {
    wait_resources(prosody, PROXY, &[], resources).await;
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
