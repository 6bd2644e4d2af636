//! The component's options, checked once at load so that a bad value is an error that
//! names the option instead of a failure at the first stanza.

use crate::affinity::Rules;
use crate::jat::Mode;
use crate::resources::{Ejection, Strategy};
use std::collections::HashSet;
use std::fmt;

/// Validated options of one `client_proxy` component.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The component host (`proxy.example`).
    pub host: String,
    /// The implementing client's bare JID, normalised as Prosody prepares JIDs.
    pub target: String,
    /// How requesters are written into resources.
    pub jat: Mode,
    /// How the resource for a request is chosen.
    pub strategy: Strategy,
    /// Proxy messages both ways (`client_proxy_messages`).
    pub messages: bool,
    /// Let the implementing client start requests to users (`client_proxy_outbound`).
    pub outbound: bool,
    /// Let users subscribe to the service's availability (`client_proxy_presence`).
    pub presence: bool,
    /// Keep the component on a local target's roster, and keep asking a remote one for
    /// the subscription (`client_proxy_manage_roster`; the shim does both).
    pub manage_roster: bool,
    /// Seconds before an unanswered request gets remote-server-timeout.
    pub timeout: f64,
    /// Most requests outstanding at once.
    pub max_pending: usize,
    /// Most requests one requester may have outstanding.
    pub max_pending_per_requester: u32,
    /// When a failing resource leaves the rotation (`client_proxy_eject_after`,
    /// `client_proxy_eject_for`).
    pub ejection: Ejection,
    /// Most requests one user (bare JID) may have outstanding.
    pub max_pending_per_user: u32,
    /// Most requests one domain this server does not host may have outstanding.
    pub max_pending_per_domain: u32,
    /// Who may use the service (`client_proxy_allow`); None: everyone.
    pub allow: Option<Allow>,
    /// Which payload attribute keeps requests on one resource (`client_proxy_affinity`);
    /// empty: none.
    pub affinity: Rules,
    /// Seconds without a request after which an affinity key is forgotten
    /// (`client_proxy_affinity_idle`).
    pub affinity_idle: f64,
}

/// The domains and accounts allowed to use the service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow {
    domains: HashSet<String>,
    users: HashSet<String>,
}

impl Allow {
    /// Whether `user` (a bare JID) on `domain` is allowed.
    pub fn admits(&self, user: &str, domain: &str) -> bool {
        self.domains.contains(domain) || self.users.contains(user)
    }
}

/// A bad option: which one and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The option's name as written in the config file.
    pub option: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn bad(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        option,
        reason: reason.into(),
    }
}

/// Default of `client_proxy_timeout`, in seconds.
pub const DEFAULT_TIMEOUT: f64 = 60.0;
/// Default of `client_proxy_max_pending`.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// Default of `client_proxy_max_pending_per_requester`.
pub const DEFAULT_MAX_PER_REQUESTER: u32 = 64;
/// Default of `client_proxy_max_pending_per_user`.
pub const DEFAULT_MAX_PER_USER: u32 = 256;
/// Default of `client_proxy_max_pending_per_domain`.
pub const DEFAULT_MAX_PER_DOMAIN: u32 = 1000;
/// Default of `client_proxy_eject_after`.
pub const DEFAULT_EJECT_AFTER: u32 = 3;
/// Default of `client_proxy_eject_for`, in seconds.
pub const DEFAULT_EJECT_FOR: f64 = 30.0;
/// Default of `client_proxy_affinity_idle`, in seconds: a room without a request for an
/// hour is over.
pub const DEFAULT_AFFINITY_IDLE: f64 = 3600.0;

/// The names an enum option takes and what each means, by position; the first is the
/// default.
pub struct Choices<T: 'static> {
    names: &'static [&'static str],
    values: &'static [T],
}

/// `client_proxy_jat`.
pub const JAT_MODES: Choices<Mode> = Choices {
    names: &["plain", "base64"],
    values: &[Mode::Plain, Mode::Base64],
};

/// `client_proxy_strategy`.
pub const STRATEGIES: Choices<Strategy> = Choices {
    names: &["random", "round_robin", "least_pending", "sticky"],
    values: &[
        Strategy::Random,
        Strategy::RoundRobin,
        Strategy::LeastPending,
        Strategy::Sticky,
    ],
};

impl<T: Copy> Choices<T> {
    /// The value a name stands for.
    pub fn get(&self, name: &str) -> Option<T> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values.get(i).copied()
    }

    /// The value when the option is not set.
    fn default(&self) -> T {
        self.values[0]
    }

    /// `"a", "b"`: the allowed names, for an error message.
    fn listed(&self) -> String {
        let names: Vec<String> = self.names.iter().map(|n| format!("{n:?}")).collect();
        names.join(", ")
    }
}

/// What kind of value an option takes: tells the shim how Prosody reads it from the
/// config file (Prosody 13 parses periods and logs the allowed values of an enum).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A bare JID.
    Jid,
    /// One of these names; the first is the default.
    Enum(&'static [&'static str]),
    /// Seconds, or on Prosody 13 a period such as "2 minutes".
    Period(f64),
    /// A whole number, with its default.
    Count(f64),
    /// A boolean, with its default.
    Switch(bool),
    /// A list of strings (or one string); unset means none.
    List,
}

/// One option of the component section: the names and defaults are written here once,
/// and the binding hands this table to the shim so that Lua spells none of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionSpec {
    /// The option's name in the config file.
    pub name: &'static str,
    /// Its kind and default.
    pub kind: Kind,
}

const fn spec(name: &'static str, kind: Kind) -> OptionSpec {
    OptionSpec { name, kind }
}

/// Every option of the component section, in the README's order.
/// `client_proxy_resources` (Lua patterns) and `client_proxy_require_caps` (caps nodes, seen
/// only in the presence stanza) are read by the shim alone: it tells the core, with each
/// presence, whether the sender is eligible.
pub const OPTIONS: &[OptionSpec] = &[
    spec("target_address", Kind::Jid),
    spec("client_proxy_jat", Kind::Enum(JAT_MODES.names)),
    spec("client_proxy_strategy", Kind::Enum(STRATEGIES.names)),
    spec("client_proxy_resources", Kind::List),
    spec("client_proxy_require_caps", Kind::List),
    spec("client_proxy_timeout", Kind::Period(DEFAULT_TIMEOUT)),
    spec(
        "client_proxy_max_pending_per_requester",
        Kind::Count(DEFAULT_MAX_PER_REQUESTER as f64),
    ),
    spec(
        "client_proxy_max_pending_per_user",
        Kind::Count(DEFAULT_MAX_PER_USER as f64),
    ),
    spec(
        "client_proxy_max_pending_per_domain",
        Kind::Count(DEFAULT_MAX_PER_DOMAIN as f64),
    ),
    spec(
        "client_proxy_max_pending",
        Kind::Count(DEFAULT_MAX_PENDING as f64),
    ),
    spec("client_proxy_allow", Kind::List),
    spec(
        "client_proxy_eject_after",
        Kind::Count(DEFAULT_EJECT_AFTER as f64),
    ),
    spec("client_proxy_eject_for", Kind::Period(DEFAULT_EJECT_FOR)),
    spec("client_proxy_messages", Kind::Switch(true)),
    spec("client_proxy_outbound", Kind::Switch(true)),
    spec("client_proxy_presence", Kind::Switch(true)),
    spec("client_proxy_affinity", Kind::List),
    spec(
        "client_proxy_affinity_idle",
        Kind::Period(DEFAULT_AFFINITY_IDLE),
    ),
    spec("client_proxy_manage_roster", Kind::Switch(true)),
];

/// The options as the operator wrote them (None: not set), by name. The binding fills it
/// from the config file's values after checking each one's type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// `target_address`.
    pub target_address: Option<String>,
    /// `client_proxy_jat`.
    pub jat: Option<String>,
    /// `client_proxy_strategy`.
    pub strategy: Option<String>,
    /// `client_proxy_timeout`, in seconds.
    pub timeout: Option<f64>,
    /// `client_proxy_max_pending`.
    pub max_pending: Option<f64>,
    /// `client_proxy_max_pending_per_requester`.
    pub max_pending_per_requester: Option<f64>,
    /// `client_proxy_messages`.
    pub messages: Option<bool>,
    /// `client_proxy_outbound`.
    pub outbound: Option<bool>,
    /// `client_proxy_presence`.
    pub presence: Option<bool>,
    /// `client_proxy_eject_after`.
    pub eject_after: Option<f64>,
    /// `client_proxy_eject_for`, in seconds.
    pub eject_for: Option<f64>,
    /// `client_proxy_max_pending_per_user`.
    pub max_pending_per_user: Option<f64>,
    /// `client_proxy_max_pending_per_domain`.
    pub max_pending_per_domain: Option<f64>,
    /// `client_proxy_allow`: domains and bare JIDs.
    pub allow: Option<Vec<String>>,
    /// `client_proxy_affinity`: rules `{namespace}element@attribute`.
    pub affinity: Option<Vec<String>>,
    /// `client_proxy_affinity_idle`, in seconds.
    pub affinity_idle: Option<f64>,
    /// `client_proxy_manage_roster`.
    pub manage_roster: Option<bool>,
}

impl Config {
    /// Checks and normalises the options of the component `host`.
    pub fn new(host: &str, options: &Options) -> Result<Config, ConfigError> {
        let target = options.target_address.as_deref().ok_or_else(|| {
            bad(
                "target_address",
                "is required (the implementing client's bare JID)",
            )
        })?;
        let parsed = jid::Jid::new(target).map_err(|e| {
            bad(
                "target_address",
                format!("{target:?} is not a valid JID ({e})"),
            )
        })?;
        if !parsed.is_bare() {
            return Err(bad(
                "target_address",
                format!("{target:?} must be a bare JID (no resource)"),
            ));
        }
        let bare = parsed;
        if bare.node().is_none() {
            return Err(bad(
                "target_address",
                format!("{target:?} must be an account (user@host), not a host"),
            ));
        }
        if bare.domain().as_str() == host {
            return Err(bad(
                "target_address",
                format!("{target:?} is on the component's own host"),
            ));
        }
        let jat = one_of("client_proxy_jat", &JAT_MODES, options.jat.as_deref())?;
        let strategy = one_of(
            "client_proxy_strategy",
            &STRATEGIES,
            options.strategy.as_deref(),
        )?;
        let timeout = match options.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) if t.is_finite() && t > 0.0 => t,
            Some(t) => {
                return Err(bad(
                    "client_proxy_timeout",
                    format!("{t} is not a positive number of seconds"),
                ))
            }
        };
        let max_pending = count(
            "client_proxy_max_pending",
            options.max_pending,
            DEFAULT_MAX_PENDING as f64,
        )?;
        let max_per = count(
            "client_proxy_max_pending_per_requester",
            options.max_pending_per_requester,
            DEFAULT_MAX_PER_REQUESTER as f64,
        )?;
        let eject_after = match options.eject_after {
            None => DEFAULT_EJECT_AFTER as f64,
            Some(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 => n,
            Some(n) => {
                return Err(bad(
                    "client_proxy_eject_after",
                    format!("{n} is not a whole number (0 turns ejection off)"),
                ))
            }
        };
        let eject_for = match options.eject_for {
            None => DEFAULT_EJECT_FOR,
            Some(t) if t.is_finite() && t > 0.0 => t,
            Some(t) => {
                return Err(bad(
                    "client_proxy_eject_for",
                    format!("{t} is not a positive number of seconds"),
                ))
            }
        };
        let max_per_user = count(
            "client_proxy_max_pending_per_user",
            options.max_pending_per_user,
            DEFAULT_MAX_PER_USER as f64,
        )?;
        let max_per_domain = count(
            "client_proxy_max_pending_per_domain",
            options.max_pending_per_domain,
            DEFAULT_MAX_PER_DOMAIN as f64,
        )?;
        let allow = options.allow.as_deref().map(allow_list).transpose()?;
        let affinity = Rules::parse(options.affinity.as_deref().unwrap_or_default())
            .map_err(|reason| bad("client_proxy_affinity", reason))?;
        let affinity_idle = match options.affinity_idle {
            None => DEFAULT_AFFINITY_IDLE,
            Some(t) if t.is_finite() && t > 0.0 => t,
            Some(t) => {
                return Err(bad(
                    "client_proxy_affinity_idle",
                    format!("{t} is not a positive number of seconds"),
                ))
            }
        };
        Ok(Config {
            host: host.to_owned(),
            target: bare.to_string(),
            jat,
            strategy,
            messages: options.messages.unwrap_or(true),
            outbound: options.outbound.unwrap_or(true),
            presence: options.presence.unwrap_or(true),
            manage_roster: options.manage_roster.unwrap_or(true),
            timeout,
            max_pending: max_pending as usize,
            max_pending_per_requester: max_per.min(u32::MAX as u64) as u32,
            ejection: Ejection {
                after: eject_after.min(u32::MAX as f64) as u32,
                seconds: eject_for,
            },
            max_pending_per_user: max_per_user.min(u32::MAX as u64) as u32,
            max_pending_per_domain: max_per_domain.min(u32::MAX as u64) as u32,
            allow,
            affinity,
            affinity_idle,
        })
    }
}

/// `client_proxy_allow`: each entry a domain or a bare JID, normalised as Prosody
/// prepares JIDs.
fn allow_list(entries: &[String]) -> Result<Allow, ConfigError> {
    let mut allow = Allow::default();
    for entry in entries {
        let jid = jid::Jid::new(entry).map_err(|e| {
            bad(
                "client_proxy_allow",
                format!("{entry:?} is not a domain or a bare JID ({e})"),
            )
        })?;
        if !jid.is_bare() {
            return Err(bad(
                "client_proxy_allow",
                format!("{entry:?} has a resource: list domains and bare JIDs"),
            ));
        }
        if jid.node().is_some() {
            allow.users.insert(jid.to_string());
        } else {
            allow.domains.insert(jid.domain().to_string());
        }
    }
    Ok(allow)
}

/// An enum option's value; the first of `values` when unset.
fn one_of<T: Copy>(
    option: &'static str,
    choices: &Choices<T>,
    value: Option<&str>,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(choices.default()),
        Some(name) => choices.get(name).ok_or_else(|| {
            bad(
                option,
                format!("{name:?} is not one of {}", choices.listed()),
            )
        }),
    }
}

fn count(option: &'static str, value: Option<f64>, default: f64) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if v.is_finite() && v >= 1.0 && v.fract() == 0.0 {
        Ok(v as u64)
    } else {
        Err(bad(option, format!("{v} is not a positive whole number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(target: Option<&str>) -> Result<Config, ConfigError> {
        let options = Options {
            target_address: target.map(str::to_owned),
            ..Options::default()
        };
        Config::new("proxy.example", &options)
    }

    fn with(f: impl FnOnce(&mut Options)) -> Result<Config, ConfigError> {
        let mut options = Options {
            target_address: Some("a@b".into()),
            ..Options::default()
        };
        f(&mut options);
        Config::new("h", &options)
    }

    #[test]
    fn target_is_required_and_normalised() {
        assert_eq!(cfg(None).unwrap_err().option, "target_address");
        let c = cfg(Some("Service@Example.ORG")).unwrap();
        assert_eq!(c.target, "service@example.org");
        assert_eq!(c.jat, Mode::Plain);
        assert_eq!(c.strategy, Strategy::Random);
        assert_eq!(c.timeout, 60.0);
        assert_eq!((c.max_pending, c.max_pending_per_requester), (100_000, 64));
        assert!(c.messages && c.outbound && c.presence && c.manage_roster);
        assert_eq!(
            (c.max_pending_per_user, c.max_pending_per_domain, c.allow),
            (256, 1000, None)
        );
        assert!(c.affinity.is_empty());
        assert_eq!(c.affinity_idle, 3600.0);
        assert_eq!(
            c.ejection,
            Ejection {
                after: 3,
                seconds: 30.0
            }
        );
    }

    #[test]
    fn every_choice_has_a_value_and_every_option_one_entry() {
        assert_eq!(JAT_MODES.names.len(), JAT_MODES.values.len());
        assert_eq!(STRATEGIES.names.len(), STRATEGIES.values.len());
        for (i, name) in STRATEGIES.names.iter().enumerate() {
            assert_eq!(STRATEGIES.get(name), Some(STRATEGIES.values[i]));
        }
        let names: HashSet<&str> = OPTIONS.iter().map(|o| o.name).collect();
        assert_eq!(names.len(), OPTIONS.len());
        let e = with(|o| o.strategy = Some("fastest".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "client_proxy_strategy: \"fastest\" is not one of \"random\", \"round_robin\", \"least_pending\", \"sticky\""
        );
    }

    #[test]
    fn malformed_targets_name_the_option() {
        for bad in ["", "a@b/c", "example.org", "@x", "a@proxy.example", "a b@c"] {
            let err = cfg(Some(bad)).unwrap_err();
            assert_eq!(err.option, "target_address", "{bad:?}");
            assert!(err.to_string().starts_with("target_address: "));
        }
    }

    #[test]
    fn other_options_are_checked() {
        let e = with(|o| o.jat = Some("rot13".into())).unwrap_err();
        assert_eq!(e.option, "client_proxy_jat");
        let e = with(|o| o.timeout = Some(0.0)).unwrap_err();
        assert_eq!(e.option, "client_proxy_timeout");
        let e = with(|o| o.max_pending = Some(1.5)).unwrap_err();
        assert_eq!(e.option, "client_proxy_max_pending");
        let e = with(|o| o.max_pending_per_requester = Some(-1.0)).unwrap_err();
        assert_eq!(e.option, "client_proxy_max_pending_per_requester");
        let e = with(|o| o.strategy = Some("fastest".into())).unwrap_err();
        assert_eq!(e.option, "client_proxy_strategy");
        let e = with(|o| o.eject_after = Some(-1.0)).unwrap_err();
        assert_eq!(e.option, "client_proxy_eject_after");
        let e = with(|o| o.eject_for = Some(0.0)).unwrap_err();
        assert_eq!(e.option, "client_proxy_eject_for");
        let e = with(|o| o.max_pending_per_user = Some(0.0)).unwrap_err();
        assert_eq!(e.option, "client_proxy_max_pending_per_user");
        let e = with(|o| o.max_pending_per_domain = Some(0.5)).unwrap_err();
        assert_eq!(e.option, "client_proxy_max_pending_per_domain");
        for entry in ["a@b/c", "", "@x"] {
            let e = with(|o| o.allow = Some(vec![entry.into()])).unwrap_err();
            assert_eq!(e.option, "client_proxy_allow", "{entry:?}");
        }
        let c = with(|o| o.allow = Some(vec!["Example.ORG".into(), "Boss@Elsewhere.net".into()]))
            .unwrap();
        let allow = c.allow.unwrap();
        assert!(allow.admits("anyone@example.org", "example.org"));
        assert!(allow.admits("boss@elsewhere.net", "elsewhere.net"));
        assert!(!allow.admits("other@elsewhere.net", "elsewhere.net"));
        let e = with(|o| o.affinity = Some(vec!["{ns}conference".into()])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "client_proxy_affinity: \"{ns}conference\" is not {namespace}element@attribute (e.g. \"{http://jitsi.org/protocol/focus}conference@room\")"
        );
        for idle in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = with(|o| o.affinity_idle = Some(idle)).unwrap_err();
            assert_eq!(e.option, "client_proxy_affinity_idle");
        }
        let c = with(|o| {
            o.affinity = Some(vec![
                "{http://jitsi.org/protocol/focus}conference@room".into()
            ]);
            o.affinity_idle = Some(600.0);
        })
        .unwrap();
        assert_eq!((c.affinity.len(), c.affinity_idle), (1, 600.0));
        let c = with(|o| o.eject_after = Some(0.0)).unwrap();
        assert_eq!(c.ejection.after, 0, "0 turns ejection off");
        let c = with(|o| {
            o.jat = Some("base64".into());
            o.timeout = Some(2.5);
            o.max_pending = Some(10.0);
            o.max_pending_per_requester = Some(3.0);
            o.strategy = Some("least_pending".into());
            o.messages = Some(false);
            o.manage_roster = Some(false);
        })
        .unwrap();
        assert_eq!(
            (c.jat, c.timeout, c.max_pending, c.max_pending_per_requester),
            (Mode::Base64, 2.5, 10, 3)
        );
        assert_eq!(c.strategy, Strategy::LeastPending);
        assert!(!c.messages && c.outbound && c.presence && !c.manage_roster);
    }
}
