//! Presence: the target's resources coming and going (which decides who gets requests),
//! and users subscribed to the service's availability (`client_proxy_presence`): the
//! subscriber set, what they were last told, and the notices owed when that changes.

use super::{bare, Proxy};
use crate::verdict::{Head, Level, OutItem, Verdict, NO_PRESENCE};
use std::collections::BTreeSet;

/// Presence priorities are -128..127 (RFC 6121 4.7.2.3); anything else is clamped.
fn clamp_priority(priority: Option<f64>) -> i32 {
    match priority {
        Some(p) if !p.is_nan() => p.floor().clamp(-128.0, 127.0) as i32,
        _ => 0,
    }
}

/// Users subscribed to the service's availability, by bare JID.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    subscribers: BTreeSet<String>,
    /// What subscribers were last told: true = available.
    told_available: bool,
    /// The health last reported to the shim (the status it shows).
    reported: Option<Level>,
}

impl Proxy {
    /// Presence of the target to the component host.
    pub(super) fn target_presence(
        &mut self,
        head: Head<'_>,
        from_res: Option<&str>,
        now: f64,
    ) -> Verdict {
        let verdict = match (head.stanza_type, from_res) {
            (None, Some(res)) => {
                self.revoked = false;
                let priority = clamp_priority(head.priority);
                if !head.eligible {
                    // No longer eligible: its keys go elsewhere (a draining one keeps them).
                    self.keys.lost(res);
                }
                if self.resources.upsert(res, priority, head.eligible) {
                    Verdict::drop("resource online")
                } else {
                    Verdict::drop("resource updated")
                }
            }
            (Some("unavailable"), Some(res)) => {
                if self.resources.remove(res) {
                    // Before its requests are retried: a retried get takes its key along.
                    self.keys.lost(res);
                    self.outbound_forget(res);
                    let lost = self.pending.take_resource(res);
                    self.lose(lost, now);
                    Verdict::drop("resource offline")
                } else {
                    Verdict::drop("unknown resource offline")
                }
            }
            (Some("error"), _) | (Some("unsubscribed"), _) => {
                self.revoked = true;
                self.resources.clear();
                self.keys.lost_all();
                let lost = self.pending.take_all();
                self.lose(lost, now);
                if head.stanza_type == Some("error") {
                    Verdict::drop("presence error from the target: all resources dropped")
                } else {
                    Verdict::drop("target revoked the subscription: all resources dropped")
                }
            }
            (Some("subscribed"), _) => {
                self.revoked = false;
                Verdict::drop("target approved the subscription")
            }
            _ => Verdict::drop("ignored target presence"),
        };
        self.health_changed();
        verdict
    }

    /// A user's presence to the component: subscriptions to the service's availability.
    pub(super) fn user_presence(&mut self, user: &str, presence_type: Option<&str>) -> Verdict {
        if !self.config.presence {
            return Verdict::Error(NO_PRESENCE);
        }
        let bare = bare(user);
        match presence_type {
            Some("subscribe") => {
                if self.subscriptions.subscribers.insert(bare.to_owned()) {
                    self.subscribers_changed();
                }
                self.notice(bare, Some("subscribed"));
                self.notice(bare, self.availability());
                Verdict::drop("subscription")
            }
            Some("unsubscribe") => {
                if self.subscriptions.subscribers.remove(bare) {
                    self.subscribers_changed();
                }
                self.notice(bare, Some("unavailable"));
                Verdict::drop("unsubscription")
            }
            Some("probe") if self.subscriptions.subscribers.contains(bare) => {
                self.notice(user, self.availability());
                Verdict::drop("probe from a subscriber")
            }
            Some("probe") => {
                self.notice(user, Some("unsubscribed"));
                Verdict::drop("probe from a user who is not subscribed")
            }
            _ => Verdict::drop("directed presence or subscription answer from a user"),
        }
    }

    /// Adds subscribers kept in storage (at load; a reload keeps the ones already known).
    pub fn add_subscribers<'a>(&mut self, subscribers: impl IntoIterator<Item = &'a str>) {
        for jid in subscribers {
            self.subscriptions.subscribers.insert(bare(jid).to_owned());
        }
    }

    /// The server is stopping: subscribers are told the service is unavailable, so that
    /// after a restart nobody believes it available until a resource is online again.
    pub fn stopping(&mut self) -> Vec<OutItem> {
        self.tell_subscribers(false);
        self.drain()
    }

    /// After anything that may change who is online: availability notices to the
    /// subscribers and the module's status, each only when it changed.
    pub(super) fn health_changed(&mut self) {
        self.tell_subscribers(self.resources.eligible() > 0);
        let (level, text) = self.health();
        if self.subscriptions.reported != Some(level) {
            self.subscriptions.reported = Some(level);
            self.outbox.push(OutItem::Status { level, text });
        }
    }

    /// Queues the current status for a shim that just loaded (it shows only what the
    /// outbox tells it), replacing any status change queued before.
    pub fn announce_status(&mut self) {
        self.outbox
            .retain(|item| !matches!(item, OutItem::Status { .. }));
        let (level, text) = self.health();
        self.subscriptions.reported = Some(level);
        self.outbox.push(OutItem::Status { level, text });
    }

    fn tell_subscribers(&mut self, available: bool) {
        if self.subscriptions.told_available == available {
            return;
        }
        self.subscriptions.told_available = available;
        let notice = self.availability();
        let host = &self.config.host;
        self.outbox.extend(
            self.subscriptions
                .subscribers
                .iter()
                .map(|user| OutItem::Presence {
                    to: user.clone(),
                    from: host.clone(),
                    presence_type: notice,
                }),
        );
    }

    /// The presence type that tells what subscribers were last told.
    fn availability(&self) -> Option<&'static str> {
        (!self.subscriptions.told_available).then_some("unavailable")
    }

    fn notice(&mut self, to: &str, presence_type: Option<&'static str>) {
        self.outbox.push(OutItem::Presence {
            to: to.to_owned(),
            from: self.config.host.clone(),
            presence_type,
        });
    }

    fn subscribers_changed(&mut self) {
        let list = self.subscriptions.subscribers.iter().cloned().collect();
        self.outbox.push(OutItem::Subscribers(list));
    }
}
