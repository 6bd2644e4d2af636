//! Messages through the proxy: a user's message goes to one eligible target resource
//! (the same one while it stays online), the implementing client's message to a user's
//! JAT address goes to the user, and bounces find their way back to the sender.

use super::{bare, Proxy};
use crate::resources::Strategy;
use crate::verdict::{Send, Verdict, NO_MESSAGES, NO_RESOURCE_FOR_MESSAGE, UNKNOWN_JAT};

/// Most users remembered as addressed by a resource, for bounces; past it memory starts over.
const ORIGINS_CAPACITY: usize = 100_000;

impl Proxy {
    /// A message (not an error) from user `user` to the component.
    pub(super) fn message_from_user(&mut self, user: &str, now: f64) -> Verdict {
        if !self.config.messages {
            return Verdict::Error(NO_MESSAGES);
        }
        let Some(resource) =
            self.resources
                .choose_by(Strategy::Sticky, &mut self.rng, bare(user), &[])
        else {
            return Verdict::Error(NO_RESOURCE_FOR_MESSAGE);
        };
        self.counters.messages_in += 1;
        Verdict::Send(Send {
            to: self.target_jid(&resource),
            from: self.jat_address(user, now),
            id: None,
            hold: None,
            release: None,
        })
    }

    /// A message of type error from a user: the bounce of a message a resource sent.
    pub(super) fn message_bounce_from_user(&mut self, user: &str, now: f64) -> Verdict {
        if !self.config.messages {
            return Verdict::drop("error stanza from a requester");
        }
        match self.message_origins.get(user).cloned() {
            Some(resource) if self.resources.contains(&resource) => Verdict::Send(Send {
                to: self.target_jid(&resource),
                from: self.jat_address(user, now),
                id: None,
                hold: None,
                release: None,
            }),
            _ => Verdict::drop("bounce of a message whose sender is unknown or offline"),
        }
    }

    /// A message from target resource `resource` to JAT address `jat` (an error: the
    /// bounce of a user's message, which goes back to that user).
    pub(super) fn message_from_target(
        &mut self,
        resource: Option<&str>,
        jat: &str,
        is_error: bool,
        now: f64,
    ) -> Verdict {
        if !self.config.messages {
            return if is_error {
                Verdict::drop("error from the target")
            } else {
                Verdict::Error(NO_MESSAGES)
            };
        }
        let Ok(user) = self.jat.decode(jat, now) else {
            return if is_error {
                Verdict::drop("bounce to an address this proxy did not produce")
            } else {
                Verdict::Error(UNKNOWN_JAT)
            };
        };
        if !is_error {
            if let Some(resource) = resource.and_then(|r| self.resources.name_of(r)) {
                if self.message_origins.len() >= ORIGINS_CAPACITY {
                    self.message_origins.clear();
                }
                self.message_origins.insert(user.clone(), resource);
            }
            self.counters.messages_out += 1;
        }
        Verdict::Send(Send {
            to: user,
            from: self.config.host.clone(),
            id: None,
            hold: None,
            release: None,
        })
    }
}
