//! The binding: the only Rust that knows Lua. It keeps each component host's state across
//! `module:reload`, turns the options table into `Options`, and hands the shim a proxy
//! object whose `route` is the per-stanza entry point (`route.rs`, the one file written
//! against Lua's C API).
//! The boundary is described in docs/INTERNALS.md.

mod options;
mod outbox;
mod route;

use crate::config::{self, Config};
use crate::jat;
use crate::router::Proxy;
use crate::verdict::{Head, Verdict, INTERNAL};
use mlua::prelude::*;
use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What the shim and this library must agree on (the exports, `route`'s arguments and
/// verdicts, the outbox items). A `module:reload` after an upgrade loads the new shim but
/// keeps the library loaded at start: the shim refuses a library of another interface.
pub const INTERFACE: i64 = 3;

/// One component host's state, shared by its proxy objects and `route` closures.
pub(crate) struct Shared {
    proxy: Mutex<Proxy>,
    /// Set by `close`: the component was unloaded for good; handles still held answer
    /// "fail" (route) or raise (methods) instead of serving a state nobody reaches.
    closed: AtomicBool,
}

/// State per component host, kept in the library so that a `module:reload` (which builds
/// a new shim but finds the same loaded library) keeps online resources, outstanding
/// requests and subscribers. `close` removes a host unloaded for good.
static PROXIES: Lazy<Mutex<HashMap<String, Arc<Shared>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// The core's clock starts here: seconds since the library was loaded (a reload keeps it
/// loaded), monotonic. Read for each stanza (`route` without `now`) and by the shim
/// (`now()`, for `tick` and the status).
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn clock() -> f64 {
    EPOCH.elapsed().as_secs_f64()
}

/// A poisoned lock (a panic while held) still holds consistent-enough state to go on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A stanza's head as `route` found it in its arguments: bytes, not yet text.
pub(crate) struct Stanza<'a> {
    name: &'a [u8],
    stanza_type: Option<&'a [u8]>,
    from: Option<&'a [u8]>,
    to: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    /// None: the core's clock.
    now: Option<f64>,
    priority: Option<f64>,
    eligible: bool,
    condition: Option<&'a [u8]>,
    lang: Option<&'a [u8]>,
    /// The `client_proxy_affinity` rule the payload matched (1-based, as Lua counts) and
    /// its attribute's value.
    affinity_rule: Option<f64>,
    affinity: Option<&'a [u8]>,
}

impl Shared {
    fn new(proxy: Proxy) -> Shared {
        Shared {
            proxy: Mutex::new(proxy),
            closed: AtomicBool::new(false),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The verdict for one stanza; a panic in the core is an error, not an unwind.
    fn route<'a>(&self, stanza: &Stanza<'a>) -> Result<Verdict, &'static str> {
        let decided = catch_unwind(AssertUnwindSafe(|| {
            let now = stanza.now.unwrap_or_else(clock);
            let name = route::text(stanza.name);
            let field = |f: Option<&'a [u8]>| f.map(route::text);
            let (stanza_type, from) = (field(stanza.stanza_type), field(stanza.from));
            let (to, id, lang) = (field(stanza.to), field(stanza.id), field(stanza.lang));
            let head = Head {
                name: &name,
                stanza_type: stanza_type.as_deref(),
                from: from.as_deref(),
                to: to.as_deref(),
                id: id.as_deref(),
                priority: stanza.priority,
                eligible: stanza.eligible,
                // A condition that is not UTF-8 is no condition this proxy knows.
                condition: stanza.condition.and_then(|c| std::str::from_utf8(c).ok()),
                lang: lang.as_deref(),
                affinity: None,
            };
            let mut proxy = lock(&self.proxy);
            let value = stanza.affinity.map(route::text);
            let key = match (stanza.affinity_rule, &value) {
                // A rule that is not a positive integer is a rule there is not.
                (Some(rule), Some(value)) if rule >= 1.0 && rule.fract() == 0.0 => {
                    proxy.affinity_rules().key(rule as usize - 1, value)
                }
                _ => None,
            };
            proxy.route(
                Head {
                    affinity: key.as_deref(),
                    ..head
                },
                now,
            )
        }));
        decided.map_err(|_| "the native core panicked while routing a stanza")
    }

    /// `route` could not hand `verdict` to Lua (Lua raised while its values were made):
    /// the core takes it back so that every request is still answered once.
    fn undo(&self, verdict: &Verdict) {
        let _ = catch_unwind(AssertUnwindSafe(|| lock(&self.proxy).undo(verdict)));
    }
}

/// The Lua handle on one component's state.
struct LuaProxy {
    host: String,
    shared: Arc<Shared>,
    /// The per-stanza entry point, a C closure over the same state (`route.rs`).
    route: LuaFunction,
}

impl LuaProxy {
    /// The core, unless the host was closed.
    fn proxy(&self) -> LuaResult<MutexGuard<'_, Proxy>> {
        if self.shared.is_closed() {
            return Err(LuaError::runtime(format!(
                "the proxy of {} is closed (native.close)",
                self.host
            )));
        }
        Ok(lock(&self.shared.proxy))
    }
}

/// A time given by Lua: finite, or the deadlines it moves would be nonsense.
fn finite(what: &str, now: f64) -> LuaResult<f64> {
    if now.is_finite() {
        Ok(now)
    } else {
        Err(LuaError::runtime(format!(
            "{what}: now must be a finite number"
        )))
    }
}

impl LuaUserData for LuaProxy {
    fn add_fields<F: LuaUserDataFields<Self>>(fields: &mut F) {
        // route: the raw entry point, one call per stanza (route.rs)
        fields.add_field_method_get("route", |_, this| Ok(this.route.clone()));
    }

    fn add_methods<M: LuaUserDataMethods<Self>>(methods: &mut M) {
        // drain() -> { item, ... }
        methods.add_method("drain", |lua, this, ()| {
            let items = this.proxy()?.drain();
            outbox::outbox_to_lua(lua, items)
        });
        // tick(now) -> { item, ... }: deadlines passed, then whatever else is queued
        methods.add_method("tick", |lua, this, now: f64| {
            let now = finite("tick", now)?;
            let items = this.proxy()?.tick(now);
            outbox::outbox_to_lua(lua, items)
        });
        // stopping() -> { item, ... }: unavailable to subscribers
        methods.add_method("stopping", |lua, this, ()| {
            let items = this.proxy()?.stopping();
            outbox::outbox_to_lua(lua, items)
        });
        // hibernating(resource[, now]) -> { item, ... }: the resource's stream hibernates
        // (stream management); now nil: the core's clock
        methods.add_method(
            "hibernating",
            |lua, this, (resource, now): (LuaString, Option<f64>)| {
                let now = finite("hibernating", now.unwrap_or_else(clock))?;
                let resource = resource.to_string_lossy();
                let items = this.proxy()?.hibernating(&resource, now);
                outbox::outbox_to_lua(lua, items)
            },
        );
        // resumed(resource) -> { item, ... }: its hibernating stream was resumed
        methods.add_method("resumed", |lua, this, resource: LuaString| {
            let resource = resource.to_string_lossy();
            let items = this.proxy()?.resumed(&resource);
            outbox::outbox_to_lua(lua, items)
        });
        // set_local_domains({ domain, ... }): the hosts this server has now
        methods.add_method("set_local_domains", |_, this, domains: Vec<String>| {
            this.proxy()?
                .set_local_domains(domains.iter().map(String::as_str));
            Ok(())
        });
        // affinity_rules() -> { { namespace=, element=, attribute= }, ... }, in order
        methods.add_method("affinity_rules", |lua, this, ()| {
            let proxy = this.proxy()?;
            let list = lua.create_table()?;
            for rule in proxy.affinity_rules().iter() {
                let row = lua.create_table()?;
                row.raw_set("namespace", rule.namespace.as_str())?;
                row.raw_set("element", rule.element.as_str())?;
                row.raw_set("attribute", rule.attribute.as_str())?;
                list.raw_push(row)?;
            }
            Ok(list)
        });
        // status() -> snapshot table (INTERNALS.md)
        methods.add_method("status", |lua, this, ()| {
            let status = this.proxy()?.status();
            outbox::status_to_lua(lua, status)
        });
    }
}

/// open{ host=, target_address=, client_proxy_*=, subscribers=, local_domains= } -> proxy
fn open(lua: &Lua, opts: LuaTable) -> LuaResult<LuaProxy> {
    let host = options::string_option(&opts, "host")?.ok_or_else(|| {
        LuaError::external(config::ConfigError {
            option: "host",
            reason: "is required (the component host)".into(),
        })
    })?;
    let config = Config::new(&host, &options::options_from(&opts)?).map_err(LuaError::external)?;
    let subscribers = options::list_option(&opts, "subscribers", "bare JID")?.unwrap_or_default();
    let local_domains = options::list_option(&opts, "local_domains", "domain")?;
    let shared = lock(&PROXIES)
        .entry(host.clone())
        .or_insert_with(|| Arc::new(Shared::new(Proxy::new(config.clone()))))
        .clone();
    let route = route::new_route(lua, &shared, &host)?;
    let mut p = lock(&shared.proxy);
    p.reconfigure(config);
    p.add_subscribers(subscribers.iter().map(String::as_str));
    if let Some(domains) = &local_domains {
        p.set_local_domains(domains.iter().map(String::as_str));
    }
    p.announce_status();
    drop(p);
    Ok(LuaProxy {
        host,
        shared,
        route,
    })
}

/// close(host): the component is unloaded for good; its state goes, and the handles on it
/// still held stop serving it.
fn close(_: &Lua, host: String) -> LuaResult<bool> {
    let removed = lock(&PROXIES).remove(&host);
    if let Some(shared) = &removed {
        shared.closed.store(true, Ordering::Relaxed);
    }
    Ok(removed.is_some())
}

fn jat_mode(mode: &str) -> LuaResult<jat::Mode> {
    config::JAT_MODES
        .get(mode)
        .ok_or_else(|| LuaError::runtime(format!("unknown JAT mode {mode:?}")))
}

/// jat_encode(mode, full_jid) -> resource | nil, err
fn jat_encode(
    _: &Lua,
    (mode, jid): (String, LuaString),
) -> LuaResult<(Option<String>, Option<String>)> {
    let jid = jid.to_str()?;
    Ok(match jat::encode(jat_mode(&mode)?, &jid) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_string())),
    })
}

/// jat_decode(mode, resource) -> full_jid | nil, err
fn jat_decode(
    _: &Lua,
    (mode, resource): (String, LuaString),
) -> LuaResult<(Option<String>, Option<String>)> {
    let mode = jat_mode(&mode)?;
    let Ok(resource) = resource.to_str() else {
        return Ok((None, Some("not a JAT resource: not UTF-8".into())));
    };
    Ok(match jat::decode(mode, &resource) {
        Ok(j) => (Some(j), None),
        Err(e) => (None, Some(e.to_string())),
    })
}

/// The library's export table (`luaopen_client_proxy`).
pub fn exports(lua: &Lua) -> LuaResult<LuaTable> {
    let exports = lua.create_table()?;
    exports.set("version", env!("CARGO_PKG_VERSION"))?;
    exports.set("interface", INTERFACE)?;
    exports.set("options", options::options_table(lua)?)?;
    let internal = lua.create_table()?;
    internal.set("type", INTERNAL.error_type)?;
    internal.set("condition", INTERNAL.condition)?;
    internal.set("text", INTERNAL.text)?;
    exports.set("INTERNAL_ERROR", internal)?;
    exports.set("open", lua.create_function(open)?)?;
    exports.set("now", lua.create_function(|_, ()| Ok(clock()))?)?;
    exports.set("close", lua.create_function(close)?)?;
    exports.set("jat_encode", lua.create_function(jat_encode)?)?;
    exports.set("jat_decode", lua.create_function(jat_decode)?)?;
    Ok(exports)
}
