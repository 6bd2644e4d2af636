//! What crosses the boundary between the core and the shim: the parts of a stanza the core
//! reads, the verdict on it, the items it queues for the shim to send later, and every
//! stanza error text the proxy writes (here, so that they read as one list).

/// A stanza error the proxy sends: RFC 6120 type, defined condition and a human text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StanzaError {
    /// The RFC 6120 error type: "cancel", "wait", "modify" or "auth".
    pub error_type: &'static str,
    /// The defined condition element name.
    pub condition: &'static str,
    /// Explanation for the human reading the client's log.
    pub text: &'static str,
}

const fn err(error_type: &'static str, condition: &'static str, text: &'static str) -> StanzaError {
    StanzaError {
        error_type,
        condition,
        text,
    }
}

/// No implementing resource is online (the original's answer, with a text).
pub const NO_RESOURCE: StanzaError = err(
    "cancel",
    "service-unavailable",
    "No implementing resource is online",
);
/// Every eligible resource's stream hibernates (stream management): none can answer until
/// one resumes, which is usually a matter of seconds, hence `wait`.
pub const ALL_HIBERNATING: StanzaError = err(
    "wait",
    "service-unavailable",
    "The implementing client is reconnecting (its stream hibernates): try again shortly",
);
/// No eligible resource to take a user's message.
pub const NO_RESOURCE_FOR_MESSAGE: StanzaError = err(
    "cancel",
    "service-unavailable",
    "No implementing resource is online to take this message",
);
/// The resource holding the request went offline before answering.
pub const RESOURCE_GONE: StanzaError = err(
    "wait",
    "recipient-unavailable",
    "The implementing resource went offline before answering",
);
/// Nobody answered in time.
pub const TIMED_OUT: StanzaError = err(
    "wait",
    "remote-server-timeout",
    "The implementing client did not answer in time",
);
/// Presence to the proxy with `client_proxy_presence = false` (the original's answer).
pub const NO_PRESENCE: StanzaError = err("cancel", "bad-request", "This service takes no presence");
/// Messages with `client_proxy_messages = false` (the original's answer).
pub const NO_MESSAGES: StanzaError = err(
    "cancel",
    "feature-not-implemented",
    "This service does not proxy messages",
);
/// Requests started by the implementing client with `client_proxy_outbound = false`.
pub const NO_OUTBOUND: StanzaError = err(
    "cancel",
    "feature-not-implemented",
    "Requests from the implementing client are not proxied",
);
/// The implementing client addressed the component without a JAT resource.
pub const NOT_ADDRESSED: StanzaError = err(
    "cancel",
    "bad-request",
    "Address a requester through its translated resource",
);
/// The implementing client addressed a translated address the proxy cannot map back.
pub const UNKNOWN_JAT: StanzaError = err(
    "cancel",
    "item-not-found",
    "No user behind this translated address (unknown or expired)",
);
/// An iq without an id cannot be answered properly.
pub const NO_ID: StanzaError = err("modify", "bad-request", "An iq request needs an id");
/// Same requester, same id, still outstanding.
pub const DUPLICATE_ID: StanzaError = err(
    "modify",
    "bad-request",
    "A request with this id from you is still outstanding",
);
/// Too many outstanding requests from this requester.
pub const REQUESTER_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests from you",
);
/// Too many outstanding requests from this account (all its resources).
pub const ACCOUNT_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests from your account",
);
/// Too many outstanding requests from this server (a domain the proxy's server does not host).
pub const DOMAIN_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests from your server",
);
/// The sender is not on `client_proxy_allow`.
pub const FORBIDDEN: StanzaError = err(
    "auth",
    "forbidden",
    "You are not allowed to use this service",
);
/// Too many requests of the implementing client to one user are outstanding.
pub const USER_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests to this user",
);
/// Too many outstanding requests in all.
pub const TABLE_FULL: StanzaError = err(
    "wait",
    "resource-constraint",
    "Too many outstanding requests",
);
/// The native core failed: the shim's answer to a get/set when a native call raised.
pub const INTERNAL: StanzaError = err(
    "cancel",
    "internal-server-error",
    "The proxy failed to handle this request",
);

/// What arrived: the parts of a stanza the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// "iq", "message" or "presence".
    pub name: &'a str,
    /// The type attribute.
    pub stanza_type: Option<&'a str>,
    /// The from attribute (prepped by Prosody).
    pub from: Option<&'a str>,
    /// The to attribute (prepped by Prosody).
    pub to: Option<&'a str>,
    /// The id attribute.
    pub id: Option<&'a str>,
    /// Presence priority as the stanza wrote it (the core floors and clamps it).
    pub priority: Option<f64>,
    /// For presence: whether the shim admits the sender (`client_proxy_resources`,
    /// `client_proxy_require_caps`).
    pub eligible: bool,
    /// For a stanza of type error: its defined condition.
    pub condition: Option<&'a str>,
    /// The xml:lang attribute (kept with a request, for a retry).
    pub lang: Option<&'a str>,
    /// For an iq get/set: its affinity key, the value of the payload attribute a
    /// `client_proxy_affinity` rule names (`Rules::key`); requests with one key go to one
    /// resource. None: routed by the strategy alone.
    pub affinity: Option<&'a str>,
}

/// Readdress the stanza that arrived and send it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    /// New to.
    pub to: String,
    /// New from.
    pub from: String,
    /// New id (outbound requests and their answers carry ids of the proxy's own).
    pub id: Option<String>,
    /// Keep the stanza under this number: the core may ask for it again (a retry).
    pub hold: Option<u64>,
    /// Let go of the stanza kept under this number: its request is answered.
    pub release: Option<u64>,
}

/// What to do with the stanza that arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Readdress it and send it on.
    Send(Send),
    /// Answer the sender with this error (never produced for a stanza of type error).
    Error(StanzaError),
    /// Nothing to send for it. `reason` is for a debug log line; `drain` says that the
    /// outbox has stanzas to send now (a presence that lost requests, a subscription).
    Drop {
        /// Why, in a few words.
        reason: &'static str,
        /// The outbox is not empty.
        drain: bool,
    },
}

impl Verdict {
    /// A drop with the outbox flag still to be set by the router.
    pub fn drop(reason: &'static str) -> Verdict {
        Verdict::Drop {
            reason,
            drain: false,
        }
    }
}

/// The module's health, as `module:set_status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Working: an eligible resource is online.
    Ok,
    /// No eligible resource is online: requests get service-unavailable.
    Warn,
    /// The target revoked the subscription (or its presence errored).
    Error,
}

impl Level {
    /// The name Prosody's `module:set_status` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "core",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Something the core wants sent that is not the stanza being routed: owed answers,
/// retries, presence notices, what to store, a status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutItem {
    /// An iq error to a requester whose request can no longer be answered otherwise.
    Error {
        /// The requester.
        to: String,
        /// The component host, or a user's JAT address (an outbound request).
        from: String,
        /// The request's id.
        id: String,
        /// Why.
        error: StanzaError,
        /// The held stanza to let go of.
        release: Option<u64>,
    },
    /// Send the request held under `held` again, readdressed (a retry on another
    /// resource). With its type and id, so that the shim may keep only its payload.
    Resend {
        /// Number the request is held under.
        held: u64,
        /// New to.
        to: String,
        /// New from.
        from: String,
        /// "get" or "set".
        stanza_type: &'static str,
        /// The id, as the requester sent it.
        id: String,
        /// The xml:lang it carried.
        lang: Option<String>,
    },
    /// A presence from the component: subscription answers and availability notices.
    Presence {
        /// The user.
        to: String,
        /// The component host.
        from: String,
        /// None: available; else "subscribed", "unsubscribed" or "unavailable".
        presence_type: Option<&'static str>,
    },
    /// The subscriber set changed: the bare JIDs to store.
    Subscribers(Vec<String>),
    /// A line for the operator's log, at info (a resource ejected or back in rotation).
    Log(String),
    /// The module's health changed.
    Status {
        /// How bad.
        level: Level,
        /// For the operator.
        text: String,
    },
}
