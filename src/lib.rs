//! mod_client_proxy's native core. This file is the only one that knows Lua: it turns the
//! options table into `Options`, stanza heads into `Head`, and verdicts, outbox items and
//! status snapshots into Lua values. The boundary is described in docs/INTERNALS.md.

pub mod address;
pub mod config;
pub mod jat;
pub mod pending;
pub mod resources;
pub mod router;
pub mod verdict;

use config::{Config, Options};
use mlua::prelude::*;
use once_cell::sync::Lazy;
use router::{Proxy, Status};
use verdict::{Head, OutItem, Verdict, INTERNAL};

use mlua::ffi;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// State per component host, kept in the library so that a `module:reload` (which builds
/// a new shim but finds the same loaded library) keeps online resources, outstanding
/// requests and subscribers. `close` removes a host unloaded for good.
static PROXIES: Lazy<Mutex<HashMap<String, Arc<Mutex<Proxy>>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// The core's clock starts here: seconds since the library was loaded (a reload keeps it
/// loaded), monotonic. Read here for each stanza (`route` without `now`) and by the shim
/// (`now()`, for `tick` and the status), so that a stanza costs the shim no call into
/// Lua's clock.
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn clock() -> f64 {
    EPOCH.elapsed().as_secs_f64()
}

/// A poisoned lock (a panic while held) still holds consistent-enough state to go on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The Lua handle on one component's state.
struct LuaProxy {
    proxy: Arc<Mutex<Proxy>>,
    /// The per-stanza entry point (a C closure over this state, see `route_raw`).
    route: LuaFunction,
}

/// Keeps a proxy's state alive for as long as its `route` closure lives (its upvalue).
struct Holder(#[allow(dead_code)] Arc<Mutex<Proxy>>);

impl LuaUserData for Holder {}

/// Upvalues of the `route` closure: the state, its holder, then the strings every verdict
/// repeats, made once (creating a Lua string costs about as much as a routing decision).
const UP_PROXY: c_int = 1;
const UP_SEND: c_int = 3;
const UP_ERROR: c_int = 4;
const UP_DROP: c_int = 5;
const UP_HOST: c_int = 6;
/// A table: the requester (the stanza's `from`, as Lua has it) of each request forwarded,
/// by its hold number, pushed again as the `to` of its answer instead of a new string
/// (hashing and interning it); let go of there. An answer sent from the outbox (a timeout,
/// a lost resource) leaves its entry, until the number is handed out again.
const UP_REQUESTERS: c_int = 7;
/// Upvalues from here on: addresses of resources requests went to, each in the slot a
/// cheap hash of its text picks. Pushing one again is a compare instead of making a Lua
/// string (hashing and interning it); a request goes to one of a few resources.
const UP_TO_CACHE: c_int = 8;
const TO_CACHE_SLOTS: c_int = 8;
const UPVALUES: c_int = UP_TO_CACHE + TO_CACHE_SLOTS - 1;

/// Argument `i` as bytes, when it is a string (or a number, which Lua turns into one in
/// its stack slot: no caller passes one). One C API call: `lua_tolstring` says NULL for
/// anything else, nil and none included.
///
/// # Safety
/// `state` is the running function's state; the slice lives while the argument is on
/// the stack (the whole call).
unsafe fn arg_bytes<'a>(state: *mut ffi::lua_State, i: c_int) -> Option<&'a [u8]> {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(state, i, &mut len);
    (!p.is_null()).then(|| std::slice::from_raw_parts(p as *const u8, len))
}

/// Bytes as text: borrowed when UTF-8 (always, from Prosody's parser), else a lossy copy,
/// so that odd bytes get the answer any odd address gets instead of an error. ASCII, what
/// nearly every address and id is, is checked a word at a time: `from_utf8_lossy` walks
/// it in chunks at ~130 instructions a field, six fields a stanza (callgrind).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        String::from_utf8_lossy(bytes)
    }
}

unsafe fn push_str(state: *mut ffi::lua_State, s: &str) {
    ffi::lua_pushlstring(state, s.as_ptr() as *const c_char, s.len());
}

/// Pushes the address of a resource a request goes to, from its cache slot when the slot
/// holds it, else new (and then kept in the slot).
unsafe fn push_resource_address(state: *mut ffi::lua_State, to: &str) {
    let mix = to.len() + usize::from(to.as_bytes().last().copied().unwrap_or(0));
    let slot = ffi::lua_upvalueindex(UP_TO_CACHE + (mix % TO_CACHE_SLOTS as usize) as c_int);
    ffi::lua_pushvalue(state, slot);
    if arg_bytes(state, -1) == Some(to.as_bytes()) {
        return;
    }
    ffi::lua_pop(state, 1);
    push_str(state, to);
    ffi::lua_pushvalue(state, -1);
    ffi::lua_replace(state, slot);
}

/// Pushes the requester a request held under `held` came from, as the forward found it in
/// `from`, when it is `to`; else `to` as a new string. Either way the entry goes.
unsafe fn push_requester(state: *mut ffi::lua_State, held: u64, to: &str) {
    let requesters = ffi::lua_upvalueindex(UP_REQUESTERS);
    let n = held as ffi::lua_Integer;
    ffi::lua_rawgeti(state, requesters, n);
    if arg_bytes(state, -1) != Some(to.as_bytes()) {
        ffi::lua_pop(state, 1);
        push_str(state, to);
    }
    ffi::lua_pushnil(state);
    ffi::lua_rawseti(state, requesters, n);
}

/// Keeps the stanza's `from` (argument 4), the requester of the request now held under
/// `held`, for its answer (`push_requester`).
unsafe fn keep_requester(state: *mut ffi::lua_State, held: u64) {
    if ffi::lua_type(state, 4) == ffi::LUA_TSTRING {
        ffi::lua_pushvalue(state, 4);
        ffi::lua_rawseti(
            state,
            ffi::lua_upvalueindex(UP_REQUESTERS),
            held as ffi::lua_Integer,
        );
    }
}

unsafe fn push_seq(state: *mut ffi::lua_State, n: Option<u64>) {
    match n {
        Some(n) => ffi::lua_pushinteger(state, n as ffi::lua_Integer),
        None => ffi::lua_pushnil(state),
    }
}

/// Pushes a verdict's values (docs/INTERNALS.md) and returns how many.
unsafe fn push_verdict(state: *mut ffi::lua_State, verdict: &Verdict) -> c_int {
    let up = |k| ffi::lua_upvalueindex(k);
    match verdict {
        Verdict::Send(send) => {
            ffi::lua_pushvalue(state, up(UP_SEND));
            match (send.hold, send.release) {
                (Some(held), _) => {
                    keep_requester(state, held);
                    push_resource_address(state, &send.to); // a request, to a resource
                }
                (None, Some(held)) => push_requester(state, held, &send.to), // its answer
                (None, None) => push_str(state, &send.to),
            }
            ffi::lua_pushvalue(state, up(UP_HOST));
            if arg_bytes(state, -1) != Some(send.from.as_bytes()) {
                ffi::lua_pop(state, 1);
                push_str(state, &send.from);
            }
            match &send.id {
                Some(id) => push_str(state, id),
                None => ffi::lua_pushnil(state),
            }
            push_seq(state, send.hold);
            push_seq(state, send.release);
            6
        }
        Verdict::Error(e) => {
            ffi::lua_pushvalue(state, up(UP_ERROR));
            push_str(state, e.error_type);
            push_str(state, e.condition);
            push_str(state, e.text);
            4
        }
        Verdict::Drop { reason, drain } => {
            ffi::lua_pushvalue(state, up(UP_DROP));
            push_str(state, reason);
            ffi::lua_pushboolean(state, c_int::from(*drain));
            3
        }
    }
}

/// `route(proxy, name, type, from, to, id, now, priority, eligible, condition, lang)` ->
/// verdict. `now` nil: the core's clock (`now()`).
///
/// The hot path, written against the raw C API: mlua's userdata method machinery cost
/// more instructions than the routing decision itself (callgrind). Reads the arguments in
/// place, routes, pushes the verdict. A failure (a panic in the core, `now` not a number)
/// is a verdict too, `"fail", message`, so that the shim needs no `pcall` per stanza (its
/// cost was a twentieth of the shim's). Pushing a string can only fail when Lua is out of
/// memory, which raises past this frame and leaks the verdict's strings: accepted.
unsafe extern "C-unwind" fn route_raw(state: *mut ffi::lua_State) -> c_int {
    let proxy = ffi::lua_touserdata(state, ffi::lua_upvalueindex(UP_PROXY)) as *const Mutex<Proxy>;
    let routed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let now = if ffi::lua_type(state, 7) <= ffi::LUA_TNIL {
            clock()
        } else {
            let mut is_number = 0;
            let now = ffi::lua_tonumberx(state, 7, &mut is_number);
            if is_number == 0 {
                return Err("route: now (argument 7) must be a number or nil");
            }
            now
        };
        let name = text(arg_bytes(state, 2).unwrap_or_default());
        let field = |i| arg_bytes(state, i).map(text);
        let (stanza_type, from, to, id) = (field(3), field(4), field(5), field(6));
        let priority =
            (ffi::lua_type(state, 8) == ffi::LUA_TNUMBER).then(|| ffi::lua_tonumber(state, 8));
        let eligible =
            ffi::lua_type(state, 9) <= ffi::LUA_TNIL || ffi::lua_toboolean(state, 9) != 0;
        // A condition that is not UTF-8 is no condition this proxy knows.
        let condition = arg_bytes(state, 10).and_then(|c| std::str::from_utf8(c).ok());
        let lang = field(11);
        let head = Head {
            name: &name,
            stanza_type: stanza_type.as_deref(),
            from: from.as_deref(),
            to: to.as_deref(),
            id: id.as_deref(),
            priority,
            eligible,
            condition,
            lang: lang.as_deref(),
        };
        Ok(lock(&*proxy).route(head, now))
    }));
    ffi::luaL_checkstack(state, 7, std::ptr::null());
    let failure: &'static str = match routed {
        Ok(Ok(verdict)) => {
            let pushed = push_verdict(state, &verdict);
            return pushed;
        }
        Ok(Err(message)) => message,
        Err(panic) => {
            drop(panic);
            "the native core panicked while routing a stanza"
        }
    };
    push_str(state, "fail");
    push_str(state, failure);
    2
}

/// An option's value as the config file gave it, for an error message.
fn shown(value: &LuaValue) -> String {
    match value {
        LuaValue::String(s) => format!("{:?}", s.to_string_lossy()),
        LuaValue::Integer(i) => i.to_string(),
        LuaValue::Number(n) => n.to_string(),
        LuaValue::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_name()),
    }
}

fn option_error(option: &'static str, value: &LuaValue, expected: &str) -> LuaError {
    LuaError::external(config::ConfigError {
        option,
        reason: format!("{} is not {expected}", shown(value)),
    })
}

fn string_option(t: &LuaTable, option: &'static str) -> LuaResult<Option<String>> {
    match t.raw_get::<LuaValue>(option)? {
        LuaValue::Nil => Ok(None),
        LuaValue::String(s) => match s.to_str() {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(option_error(option, &LuaValue::String(s), "UTF-8 text")),
        },
        other => Err(option_error(option, &other, "a string")),
    }
}

fn number_option(t: &LuaTable, option: &'static str) -> LuaResult<Option<f64>> {
    match t.raw_get::<LuaValue>(option)? {
        LuaValue::Nil => Ok(None),
        LuaValue::Integer(i) => Ok(Some(i as f64)),
        LuaValue::Number(n) => Ok(Some(n)),
        LuaValue::String(s) => match s.to_str().ok().and_then(|s| s.trim().parse().ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(option_error(option, &LuaValue::String(s), "a number")),
        },
        other => Err(option_error(option, &other, "a number")),
    }
}

/// A list of strings (an array table; a single string is a list of one, as Prosody's
/// get_option_array reads it).
fn list_option(t: &LuaTable, option: &'static str) -> LuaResult<Option<Vec<String>>> {
    match t.raw_get::<LuaValue>(option)? {
        LuaValue::Nil => Ok(None),
        LuaValue::String(s) => match s.to_str() {
            Ok(s) => Ok(Some(vec![s.to_owned()])),
            Err(_) => Err(option_error(option, &LuaValue::String(s), "UTF-8 text")),
        },
        LuaValue::Table(list) => {
            let mut out = Vec::new();
            for value in list.sequence_values::<LuaValue>() {
                match value? {
                    LuaValue::String(s) if s.to_str().is_ok() => out.push(s.to_str()?.to_owned()),
                    other => return Err(option_error(option, &other, "a domain or a bare JID")),
                }
            }
            Ok(Some(out))
        }
        other => Err(option_error(
            option,
            &other,
            "a list of domains and bare JIDs",
        )),
    }
}

/// A switch: a boolean, or one of the spellings Prosody's get_option_boolean accepts.
fn switch_option(t: &LuaTable, option: &'static str) -> LuaResult<Option<bool>> {
    let value = t.raw_get::<LuaValue>(option)?;
    let parsed = match &value {
        LuaValue::Nil => return Ok(None),
        LuaValue::Boolean(b) => Some(*b),
        LuaValue::Integer(1) => Some(true),
        LuaValue::Integer(0) => Some(false),
        LuaValue::Number(n) if *n == 1.0 => Some(true),
        LuaValue::Number(n) if *n == 0.0 => Some(false),
        LuaValue::String(s) => match s.as_bytes().as_ref() {
            b"true" | b"yes" | b"on" | b"1" => Some(true),
            b"false" | b"no" | b"off" | b"0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| option_error(option, &value, "true or false"))
}

/// The options table of `open`, each value checked for its type (errors name the option).
fn options_from(t: &LuaTable) -> LuaResult<Options> {
    Ok(Options {
        target_address: string_option(t, "target_address")?,
        jat: string_option(t, "client_proxy_jat")?,
        strategy: string_option(t, "client_proxy_strategy")?,
        timeout: number_option(t, "client_proxy_timeout")?,
        max_pending: number_option(t, "client_proxy_max_pending")?,
        max_pending_per_requester: number_option(t, "client_proxy_max_pending_per_requester")?,
        messages: switch_option(t, "client_proxy_messages")?,
        outbound: switch_option(t, "client_proxy_outbound")?,
        presence: switch_option(t, "client_proxy_presence")?,
        eject_after: number_option(t, "client_proxy_eject_after")?,
        eject_for: number_option(t, "client_proxy_eject_for")?,
        max_pending_per_user: number_option(t, "client_proxy_max_pending_per_user")?,
        max_pending_per_domain: number_option(t, "client_proxy_max_pending_per_domain")?,
        allow: list_option(t, "client_proxy_allow")?,
    })
}

fn item_to_lua(lua: &Lua, item: OutItem) -> LuaResult<LuaTable> {
    let t = lua.create_table()?;
    match item {
        OutItem::Error {
            to,
            from,
            id,
            error,
            release,
        } => {
            t.raw_set("kind", "error")?;
            t.raw_set("to", to)?;
            t.raw_set("from", from)?;
            t.raw_set("id", id)?;
            t.raw_set("type", error.error_type)?;
            t.raw_set("condition", error.condition)?;
            t.raw_set("text", error.text)?;
            t.raw_set("release", release)?;
        }
        OutItem::Resend {
            held,
            to,
            from,
            stanza_type,
            id,
            lang,
        } => {
            t.raw_set("kind", "resend")?;
            t.raw_set("held", held)?;
            t.raw_set("to", to)?;
            t.raw_set("from", from)?;
            t.raw_set("type", stanza_type)?;
            t.raw_set("id", id)?;
            t.raw_set("lang", lang)?;
        }
        OutItem::Presence {
            to,
            from,
            presence_type,
        } => {
            t.raw_set("kind", "presence")?;
            t.raw_set("to", to)?;
            t.raw_set("from", from)?;
            t.raw_set("type", presence_type)?;
        }
        OutItem::Subscribers(list) => {
            t.raw_set("kind", "subscribers")?;
            t.raw_set("list", list)?;
        }
        OutItem::Log(text) => {
            t.raw_set("kind", "log")?;
            t.raw_set("text", text)?;
        }
        OutItem::Status { level, text } => {
            t.raw_set("kind", "status")?;
            t.raw_set("level", level.as_str())?;
            t.raw_set("text", text)?;
        }
    }
    Ok(t)
}

fn outbox_to_lua(lua: &Lua, items: Vec<OutItem>) -> LuaResult<LuaTable> {
    let list = lua.create_table_with_capacity(items.len(), 0)?;
    for item in items {
        list.raw_push(item_to_lua(lua, item)?)?;
    }
    Ok(list)
}

fn status_to_lua(lua: &Lua, s: Status) -> LuaResult<LuaTable> {
    let t = lua.create_table()?;
    t.raw_set("host", s.host)?;
    t.raw_set("target", s.target)?;
    t.raw_set("pending", s.pending)?;
    t.raw_set("outbound_pending", s.outbound_pending)?;
    t.raw_set("eligible", s.eligible)?;
    t.raw_set("ejected", s.ejected)?;
    t.raw_set("ejections", s.ejections)?;
    t.raw_set("revoked", s.revoked)?;
    t.raw_set("level", s.level.as_str())?;
    t.raw_set("text", s.text)?;
    let counts = |pairs: &[(&'static str, u64)]| -> LuaResult<LuaTable> {
        let t = lua.create_table()?;
        for (name, value) in pairs {
            t.raw_set(*name, *value)?;
        }
        Ok(t)
    };
    t.raw_set("requests", counts(&s.requests)?)?;
    t.raw_set("messages", counts(&s.messages)?)?;
    let list = lua.create_table_with_capacity(s.resources.len(), 0)?;
    for r in s.resources {
        let row = lua.create_table()?;
        row.raw_set("name", r.name)?;
        row.raw_set("priority", r.priority)?;
        row.raw_set("pool", r.pool)?;
        row.raw_set("pending", r.pending)?;
        row.raw_set("ejected_until", r.ejected_until)?;
        list.raw_push(row)?;
    }
    t.raw_set("resources", list)?;
    Ok(t)
}

impl LuaUserData for LuaProxy {
    fn add_fields<F: LuaUserDataFields<Self>>(fields: &mut F) {
        // route: the raw entry point, one call per stanza (see route_raw)
        fields.add_field_method_get("route", |_, this| Ok(this.route.clone()));
    }

    fn add_methods<M: LuaUserDataMethods<Self>>(methods: &mut M) {
        // drain() -> { item, ... }
        methods.add_method("drain", |lua, this, ()| {
            let items = lock(&this.proxy).drain();
            outbox_to_lua(lua, items)
        });
        // tick(now) -> { item, ... }: deadlines passed, then whatever else is queued
        methods.add_method("tick", |lua, this, now: f64| {
            let items = lock(&this.proxy).tick(now);
            outbox_to_lua(lua, items)
        });
        // stopping() -> { item, ... }: unavailable to subscribers
        methods.add_method("stopping", |lua, this, ()| {
            let items = lock(&this.proxy).stopping();
            outbox_to_lua(lua, items)
        });
        // set_local_domains({ domain, ... }): the hosts this server has now
        methods.add_method("set_local_domains", |_, this, domains: Vec<String>| {
            lock(&this.proxy).set_local_domains(domains.iter().map(String::as_str));
            Ok(())
        });
        // status() -> snapshot table (INTERNALS.md)
        methods.add_method("status", |lua, this, ()| {
            let status = lock(&this.proxy).status();
            status_to_lua(lua, status)
        });
    }
}

/// open{ host=, target_address=, client_proxy_*=, subscribers=, local_domains= } -> proxy
fn open(lua: &Lua, opts: LuaTable) -> LuaResult<LuaProxy> {
    let host = string_option(&opts, "host")?.ok_or_else(|| {
        LuaError::external(config::ConfigError {
            option: "host",
            reason: "is required (the component host)".into(),
        })
    })?;
    let config = Config::new(&host, &options_from(&opts)?).map_err(LuaError::external)?;
    let subscribers = list_option(&opts, "subscribers")?.unwrap_or_default();
    let local_domains = list_option(&opts, "local_domains")?;
    let host_name = host.clone();
    let mut all = lock(&PROXIES);
    let proxy = all
        .entry(host)
        .or_insert_with(|| Arc::new(Mutex::new(Proxy::new(config.clone()))))
        .clone();
    drop(all);
    let mut p = lock(&proxy);
    p.reconfigure(config);
    p.add_subscribers(subscribers.iter().map(String::as_str));
    if let Some(domains) = &local_domains {
        p.set_local_domains(domains.iter().map(String::as_str));
    }
    p.announce_status();
    drop(p);
    let holder = lua.create_userdata(Holder(proxy.clone()))?;
    let state_ptr = LuaLightUserData(Arc::as_ptr(&proxy) as *mut std::ffi::c_void);
    let upvalues = (
        state_ptr,
        holder,
        "send",
        "error",
        "drop",
        host_name.as_str(),
        lua.create_table()?,
    );
    // SAFETY: pushes a C closure over the seven upvalues just pushed and the empty cache
    // slots; the pointer stays valid while the closure lives, because its holder
    // (upvalue 2) owns the Arc.
    let route: LuaFunction = unsafe {
        lua.exec_raw(upvalues, |state| {
            ffi::luaL_checkstack(state, TO_CACHE_SLOTS, std::ptr::null());
            for _ in 0..TO_CACHE_SLOTS {
                ffi::lua_pushboolean(state, 0); // an empty cache slot
            }
            ffi::lua_pushcclosure(state, route_raw, UPVALUES);
        })?
    };
    Ok(LuaProxy { proxy, route })
}

/// close(host): the component is unloaded for good; its state goes.
fn close(_: &Lua, host: String) -> LuaResult<bool> {
    Ok(lock(&PROXIES).remove(&host).is_some())
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
