//! mod_client_proxy's native core. This file is the only one that knows Lua: it converts
//! between Lua values and the plain Rust core (`router`, `pending`, `resources`, `jat`).

pub mod config;
pub mod jat;
pub mod messages;
pub mod outbound;
pub mod pending;
pub mod resources;
pub mod router;

use config::Config;
use mlua::prelude::*;
use once_cell::sync::Lazy;
use router::{Answer, Head, Proxy, Verdict};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// State per component host, kept in the library so that a `module:reload` (which builds
/// a new shim but finds the same loaded library) keeps online resources and outstanding
/// requests.
static PROXIES: Lazy<Mutex<HashMap<String, Arc<Mutex<Proxy>>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// A poisoned lock (a panic while held) still holds consistent-enough state to go on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Arguments of `route`: name, type, from, to, id, now, priority, eligible.
type RouteArgs = (
    LuaString,
    Option<LuaString>,
    Option<LuaString>,
    Option<LuaString>,
    Option<LuaString>,
    f64,
    Option<i32>,
    Option<bool>,
);

/// The Lua handle on one component's state.
struct LuaProxy(Arc<Mutex<Proxy>>);

fn opt_str(v: &Option<LuaString>) -> LuaResult<Option<mlua::BorrowedStr>> {
    v.as_ref().map(|s| s.to_str()).transpose()
}

fn answers_to_lua(lua: &Lua, answers: Vec<Answer>) -> LuaResult<LuaTable> {
    let t = lua.create_table_with_capacity(answers.len() * 7, 0)?;
    for a in answers {
        t.raw_push(a.seq as i64)?;
        t.raw_push(a.to)?;
        t.raw_push(a.from)?;
        t.raw_push(a.id)?;
        t.raw_push(a.error.kind)?;
        t.raw_push(a.error.condition)?;
        t.raw_push(a.error.text)?;
    }
    Ok(t)
}

impl LuaUserData for LuaProxy {
    fn add_methods<M: LuaUserDataMethods<Self>>(methods: &mut M) {
        // route(name, type, from, to, id, now, priority) -> action, a, b, c
        methods.add_method(
            "route",
            |lua, this, (name, kind, from, to, id, now, priority, eligible): RouteArgs| {
                let name = name.to_str()?;
                let (kind, from, to, id) = (
                    opt_str(&kind)?,
                    opt_str(&from)?,
                    opt_str(&to)?,
                    opt_str(&id)?,
                );
                let head = Head {
                    name: &name,
                    kind: kind.as_deref(),
                    from: from.as_deref(),
                    to: to.as_deref(),
                    id: id.as_deref(),
                    priority: priority.unwrap_or(0),
                    eligible: eligible.unwrap_or(true),
                };
                let verdict = lock(&this.0).route(head, now);
                let text = |s: &str| lua.create_string(s).map(LuaValue::String);
                Ok(match verdict {
                    Verdict::Forward { to, from, seq } => (
                        "forward",
                        text(&to)?,
                        text(&from)?,
                        LuaValue::Integer(seq as i64),
                    ),
                    Verdict::Deliver { to, from, seq } => (
                        "deliver",
                        text(&to)?,
                        text(&from)?,
                        LuaValue::Integer(seq as i64),
                    ),
                    Verdict::Error(e) => {
                        ("error", text(e.kind)?, text(e.condition)?, text(e.text)?)
                    }
                    Verdict::Drop(why) => ("drop", text(why)?, LuaValue::Nil, LuaValue::Nil),
                    Verdict::Consumed(why) => {
                        ("consumed", text(why)?, LuaValue::Nil, LuaValue::Nil)
                    }
                    Verdict::Relay { to, from } => {
                        ("relay", text(&to)?, text(&from)?, LuaValue::Nil)
                    }
                    Verdict::Rewrite { to, from, id } => {
                        ("rewrite", text(&to)?, text(&from)?, text(&id)?)
                    }
                    Verdict::Subscription(kind) => {
                        ("subscription", text(kind)?, LuaValue::Nil, LuaValue::Nil)
                    }
                })
            },
        );
        // take_answers() -> {seq, to, from, id, etype, condition, text, ...}, {seq, to, from, ...}
        methods.add_method("take_answers", |lua, this, ()| {
            let (answers, retries) = lock(&this.0).take_answers();
            let list = lua.create_table_with_capacity(retries.len() * 3, 0)?;
            for r in retries {
                list.raw_push(r.seq as i64)?;
                list.raw_push(r.to)?;
                list.raw_push(r.from)?;
            }
            Ok((answers_to_lua(lua, answers)?, list))
        });
        // expire(now) -> {seq, to, from, id, etype, condition, text, ...}
        methods.add_method("expire", |lua, this, now: f64| {
            let answers = lock(&this.0).expire(now);
            answers_to_lua(lua, answers)
        });
        // health() -> eligible resources online, pending requests, revoked (cheap: no tables)
        methods.add_method("health", |_, this, ()| {
            let p = lock(&this.0);
            Ok((p.resources.eligible(), p.pending.len(), p.revoked))
        });
        // status() -> { host, target, pending, counters = {forwarded, ...}, resources = { {name, priority, pending}, ... } }
        methods.add_method("status", |lua, this, ()| {
            let p = lock(&this.0);
            let t = lua.create_table()?;
            t.set("host", p.config.host.as_str())?;
            t.set("target", p.config.target.as_str())?;
            t.set("pending", p.pending.len())?;
            t.set("outbound_pending", p.outbound.len())?;
            t.set("revoked", p.revoked)?;
            t.set("eligible", p.resources.eligible())?;
            let c = p.counters;
            let counters = lua.create_table()?;
            for (name, value) in [
                ("forwarded", c.forwarded),
                ("refused", c.refused),
                ("delivered", c.delivered),
                ("unsolicited", c.unsolicited),
                ("timed_out", c.timed_out),
                ("lost", c.lost),
                ("retried", c.retried),
                ("outbound", c.outbound),
                ("messages_in", c.messages_in),
                ("messages_out", c.messages_out),
            ] {
                counters.set(name, value)?;
            }
            t.set("counters", counters)?;
            let list = lua.create_table()?;
            for r in p.resources.iter() {
                let row = lua.create_table()?;
                row.set("name", &*r.name)?;
                row.set("priority", r.priority)?;
                row.set("pending", r.pending)?;
                row.set(
                    "pool",
                    match r.pool {
                        resources::Pool::Active => "active",
                        resources::Pool::Draining => "draining",
                        resources::Pool::Ineligible => "ineligible",
                    },
                )?;
                list.raw_push(row)?;
            }
            t.set("resources", list)?;
            Ok(t)
        });
    }
}

/// new_proxy{ host=, target=, jat=, timeout=, max_pending=, max_pending_per_requester= }
fn new_proxy(_: &Lua, opts: LuaTable) -> LuaResult<LuaProxy> {
    let host: String = opts.get("host")?;
    let target: Option<String> = opts.get("target")?;
    let jat: Option<String> = opts.get("jat")?;
    let strategy: Option<String> = opts.get("strategy")?;
    let config = Config::new(
        &host,
        target.as_deref(),
        jat.as_deref(),
        opts.get("timeout")?,
        opts.get("max_pending")?,
        opts.get("max_pending_per_requester")?,
    )
    .and_then(|c| c.with_strategy(strategy.as_deref()))
    .map(|c| {
        c.with_switches(
            opts.get("messages").ok().flatten(),
            opts.get("outbound").ok().flatten(),
            opts.get("presence").ok().flatten(),
        )
    })
    .map_err(LuaError::external)?;
    let mut all = lock(&PROXIES);
    if let Some(existing) = all.get(&host) {
        lock(existing).reconfigure(config);
        return Ok(LuaProxy(existing.clone()));
    }
    let proxy = Arc::new(Mutex::new(Proxy::new(config)));
    all.insert(host, proxy.clone());
    Ok(LuaProxy(proxy))
}

fn jat_mode(mode: &str) -> LuaResult<jat::Mode> {
    jat::Mode::parse(mode).ok_or_else(|| LuaError::runtime(format!("unknown JAT mode {mode:?}")))
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

/// Entry point: `package.loadlib(path, "luaopen_client_proxy")()`.
#[mlua::lua_module]
fn client_proxy(lua: &Lua) -> LuaResult<LuaTable> {
    let exports = lua.create_table()?;
    exports.set("version", env!("CARGO_PKG_VERSION"))?;
    exports.set("new_proxy", lua.create_function(new_proxy)?)?;
    exports.set("jat_encode", lua.create_function(jat_encode)?)?;
    exports.set("jat_decode", lua.create_function(jat_decode)?)?;
    Ok(exports)
}
