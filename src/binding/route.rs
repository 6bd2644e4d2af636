//! `proxy.route`, the per-stanza entry point: a C closure written against Lua's C API
//! (mlua's userdata method machinery costs more than the routing decision). The only file
//! of the crate with `unsafe` code.
//!
//! Why it is sound on Lua 5.1-5.4 and LuaJIT:
//! - Lua errors are `longjmp`s (C++ exceptions on LuaJIT). Any call that allocates can
//!   raise: out of memory, or a GC step whose finalizer errors (5.1-5.3, LuaJIT). So the
//!   closure makes no such call itself: it reads its arguments and upvalues with calls that
//!   never allocate (type tags, `lua_tolstring` on strings only, numbers, booleans), decides
//!   in Rust, and makes every new Lua value inside `lua_pcall` of `push_out`, a function
//!   with no Rust value that has a destructor. A raise there comes back as a status: the
//!   core takes the verdict back (`Shared::undo`) and the closure answers "fail".
//! - No stack check is needed: Lua gives every C function `LUA_MINSTACK` (20) free slots
//!   above its arguments, however many there are, and the closure uses at most 6.
//! - The state a closure routes into is reached through its first upvalue, a userdata
//!   (`Anchor`) that owns a strong count of it until its finalizer runs. After that (the
//!   closure collected and resurrected by another finalizer, or the finalizer called by
//!   hand) the anchor is empty and `route` answers "fail". The closure holds a count of
//!   its own while it runs, so a finalizer that empties the anchor meanwhile frees nothing
//!   in use.
//! - Every upvalue's type is checked on entry (a tag compare; the anchor by size and
//!   magic numbers, the pusher by address): a closure whose upvalues were replaced
//!   (`debug.setupvalue`) returns nil and touches nothing.
//! - A panic in the core is caught in `Shared::route` and is a "fail" verdict; nothing
//!   here can panic (no indexing, no unwrap), so no panic crosses `extern "C"`.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use super::{Shared, Stanza};
use crate::verdict::{Send, Verdict};
use mlua::ffi::{self, lua_State};
use mlua::prelude::*;
use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

/// The userdata block of `route`'s first upvalue: a strong count of its state, taken back
/// by its finalizer (`anchor_gc`).
#[repr(C)]
struct Anchor {
    magic: u64,
    /// `Arc::into_raw` of the state; null before `new_route` binds it and after `anchor_gc`.
    shared: *const Shared,
    guard: u64,
}

/// `magic` and `guard` of every anchor: a userdata of the same size from elsewhere (put
/// in an upvalue by `debug.setupvalue`, or given to the finalizer by hand) is not one.
const MAGIC: u64 = 0x636c_6965_6e74_7072; // "clientpr"
const GUARD: u64 = 0x6f78_795f_616e_6368; // "oxy_anch"

/// `route`'s upvalues.
const UP_ANCHOR: c_int = 1;
const UP_SEND: c_int = 2;
const UP_ERROR: c_int = 3;
const UP_DROP: c_int = 4;
const UP_FAIL: c_int = 5;
const UP_HOST: c_int = 6;
const UP_PUSH: c_int = 7;
const UPVALUES: c_int = 7;

/// `route`'s arguments: `route(name, type, from, to, id, now, priority, eligible,
/// condition, lang, affinity_rule, affinity)`.
const ARG_NAME: c_int = 1;
const ARG_TYPE: c_int = 2;
const ARG_FROM: c_int = 3;
const ARG_TO: c_int = 4;
const ARG_ID: c_int = 5;
const ARG_NOW: c_int = 6;
const ARG_PRIORITY: c_int = 7;
const ARG_ELIGIBLE: c_int = 8;
const ARG_CONDITION: c_int = 9;
const ARG_LANG: c_int = 10;
const ARG_AFFINITY_RULE: c_int = 11;
const ARG_AFFINITY: c_int = 12;

/// `push_out`'s arguments: the `Out` (light userdata), the verdict's name, the host.
const PUSH_OUT: c_int = 1;
const PUSH_NAME: c_int = 2;
const PUSH_HOST: c_int = 3;

/// What `push_out` turns into Lua values.
enum Out<'a> {
    Verdict(&'a Verdict),
    Fail(&'static str),
}

thread_local! {
    /// The `Out` that `route` is handing to `push_out` now: `push_out` reads nothing else,
    /// so that a call from Lua (it is reachable with `debug.getupvalue`) reads no stale
    /// pointer.
    static PUSHING: Cell<*const c_void> = const { Cell::new(ptr::null()) };
}

/// Makes the `route` closure of `shared` (docs/INTERNALS.md, "The boundary").
pub(super) fn new_route(lua: &Lua, shared: &Arc<Shared>, host: &str) -> LuaResult<LuaFunction> {
    // SAFETY: `exec_raw` runs the closure inside a protected call; every call in it that
    // can raise (the allocations) comes before the anchor holds a count, and the closure
    // owns no value with a destructor, so a raise leaks nothing and skips no destructor.
    // The block `lua_newuserdata` returns is as large as an `Anchor`, and stays valid while
    // the userdata is reachable: from the stack, then as the closure's upvalue.
    unsafe {
        lua.exec_raw::<LuaFunction>((), |state| {
            let anchor = ffi::lua_newuserdata(state, std::mem::size_of::<Anchor>()) as *mut Anchor;
            ptr::write_unaligned(
                anchor,
                Anchor {
                    magic: MAGIC,
                    shared: ptr::null(),
                    guard: GUARD,
                },
            );
            ffi::lua_createtable(state, 0, 1);
            ffi::lua_pushcclosure(state, anchor_gc, 0);
            ffi::lua_setfield(state, -2, c"__gc".as_ptr());
            ffi::lua_setmetatable(state, -2);
            for name in ["send", "error", "drop", "fail", host] {
                push_str(state, name);
            }
            ffi::lua_pushcclosure(state, push_out, 0);
            ffi::lua_pushcclosure(state, route_raw, UPVALUES);
            let strong = Arc::into_raw(Arc::clone(shared));
            ptr::addr_of_mut!((*anchor).shared).write_unaligned(strong);
        })
    }
}

/// Bytes of an argument as text: borrowed when ASCII, as nearly every address and id is
/// (checked a word at a time, where `from_utf8` walks short strings a byte at a time: see
/// docs/PERFORMANCE.md); else borrowed when UTF-8 (always, from Prosody's parser); else a
/// lossy copy, so that odd bytes get the answer any odd address gets instead of an error.
pub(super) fn text(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    String::from_utf8_lossy(bytes)
}

/// The anchor at `index`, if the value there is one.
///
/// # Safety
/// `state` is a running Lua state and `index` a valid or acceptable index.
unsafe fn anchor_at(state: *mut lua_State, index: c_int) -> Option<*mut Anchor> {
    // SAFETY: lua_type, lua_rawlen and lua_touserdata read the value without allocating.
    // A full userdata of an anchor's size is an initialized block of that many bytes
    // (Lua code can only come by userdata that C code made and filled), so reading its
    // magic numbers is in bounds.
    unsafe {
        if ffi::lua_type(state, index) != ffi::LUA_TUSERDATA
            || ffi::lua_rawlen(state, index) != std::mem::size_of::<Anchor>()
        {
            return None;
        }
        let anchor = ffi::lua_touserdata(state, index) as *mut Anchor;
        let magic = ptr::addr_of!((*anchor).magic).read_unaligned();
        let guard = ptr::addr_of!((*anchor).guard).read_unaligned();
        (magic == MAGIC && guard == GUARD).then_some(anchor)
    }
}

/// The anchor's finalizer: gives its count of the state back (once; an empty or foreign
/// argument is left alone).
///
/// # Safety
/// Called by Lua as a C function.
unsafe extern "C-unwind" fn anchor_gc(state: *mut lua_State) -> c_int {
    // SAFETY: anchor_at checks argument 1 is an anchor; its `shared`, when not null, is a
    // count `new_route` took with Arc::into_raw and nothing has given back (it is nulled
    // here before the count is dropped). Dropping it calls no Lua function.
    unsafe {
        if let Some(anchor) = anchor_at(state, 1) {
            let field = ptr::addr_of_mut!((*anchor).shared);
            let strong = field.read_unaligned();
            field.write_unaligned(ptr::null());
            if !strong.is_null() {
                let _ = std::panic::catch_unwind(|| drop(Arc::from_raw(strong)));
            }
        }
    }
    0
}

/// Whether the running closure's upvalues are the ones `new_route` gave it.
///
/// # Safety
/// Called from `route_raw` (a C closure with `UPVALUES` upvalues).
unsafe fn upvalues_are_ours(state: *mut lua_State) -> bool {
    let up = ffi::lua_upvalueindex;
    // SAFETY: type tags and C function addresses are read without allocating.
    unsafe {
        anchor_at(state, up(UP_ANCHOR)).is_some()
            && (UP_SEND..=UP_HOST).all(|i| ffi::lua_type(state, up(i)) == ffi::LUA_TSTRING)
            && ffi::lua_tocfunction(state, up(UP_PUSH))
                .is_some_and(|f| f as usize == push_out as ffi::lua_CFunction as usize)
    }
}

/// A strong count of the state the closure's anchor holds, or None once it is empty.
///
/// # Safety
/// `upvalues_are_ours(state)`.
unsafe fn bound_state(state: *mut lua_State) -> Option<Arc<Shared>> {
    // SAFETY: the anchor is checked; a non-null `shared` is a live count the anchor owns
    // (its finalizer nulls it before giving it back), so adding one is valid.
    unsafe {
        let anchor = anchor_at(state, ffi::lua_upvalueindex(UP_ANCHOR))?;
        let strong = ptr::addr_of!((*anchor).shared).read_unaligned();
        if strong.is_null() {
            return None;
        }
        Arc::increment_strong_count(strong);
        Some(Arc::from_raw(strong))
    }
}

/// Argument `i` when it is a string, None when nil or absent.
///
/// # Safety
/// `state` is the running closure's; the slice is read only while the argument is on the
/// stack (the whole call: arguments are never popped).
unsafe fn string_arg<'a>(state: *mut lua_State, i: c_int) -> Result<Option<&'a [u8]>, ()> {
    // SAFETY: lua_tolstring on a string neither converts nor allocates; the bytes belong
    // to the string, which the argument keeps alive.
    unsafe {
        match ffi::lua_type(state, i) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => Ok(None),
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(state, i, &mut len);
                Ok((!p.is_null()).then(|| std::slice::from_raw_parts(p as *const u8, len)))
            }
            _ => Err(()),
        }
    }
}

/// Argument `i` when it is a number, None when nil or absent.
///
/// # Safety
/// `state` is the running closure's.
unsafe fn number_arg(state: *mut lua_State, i: c_int) -> Result<Option<f64>, ()> {
    // SAFETY: reading a number converts nothing.
    unsafe {
        match ffi::lua_type(state, i) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => Ok(None),
            ffi::LUA_TNUMBER => Ok(Some(ffi::lua_tonumber(state, i))),
            _ => Err(()),
        }
    }
}

/// The stanza's head from `route`'s arguments, each of its type; else why not.
///
/// # Safety
/// `state` is the running closure's; the result borrows its arguments (see `string_arg`).
unsafe fn read_stanza<'a>(state: *mut lua_State) -> Result<Stanza<'a>, &'static str> {
    // SAFETY: each read is of this call's own arguments, by the functions above.
    unsafe {
        let text = |i, message| string_arg(state, i).map_err(|()| message);
        let name = text(ARG_NAME, "route: argument 1 (name) must be a string")?
            .ok_or("route: argument 1 (name) must be a string")?;
        let now = match number_arg(state, ARG_NOW) {
            Ok(Some(now)) if !now.is_finite() => Err(()),
            other => other,
        }
        .map_err(|()| "route: argument 6 (now) must be a finite number or nil")?;
        let eligible = match ffi::lua_type(state, ARG_ELIGIBLE) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => true,
            ffi::LUA_TBOOLEAN => ffi::lua_toboolean(state, ARG_ELIGIBLE) != 0,
            _ => return Err("route: argument 8 (eligible) must be a boolean or nil"),
        };
        Ok(Stanza {
            name,
            stanza_type: text(ARG_TYPE, "route: argument 2 (type) must be a string or nil")?,
            from: text(ARG_FROM, "route: argument 3 (from) must be a string or nil")?,
            to: text(ARG_TO, "route: argument 4 (to) must be a string or nil")?,
            id: text(ARG_ID, "route: argument 5 (id) must be a string or nil")?,
            now,
            priority: number_arg(state, ARG_PRIORITY)
                .map_err(|()| "route: argument 7 (priority) must be a number or nil")?,
            eligible,
            condition: text(
                ARG_CONDITION,
                "route: argument 9 (condition) must be a string or nil",
            )?,
            lang: text(
                ARG_LANG,
                "route: argument 10 (lang) must be a string or nil",
            )?,
            affinity_rule: number_arg(state, ARG_AFFINITY_RULE)
                .map_err(|()| "route: argument 11 (affinity rule) must be a number or nil")?,
            affinity: text(
                ARG_AFFINITY,
                "route: argument 12 (affinity key) must be a string or nil",
            )?,
        })
    }
}

/// `route(name, type, from, to, id, now, priority, eligible, condition, lang, affinity_rule, affinity)` -> verdict
/// (docs/INTERNALS.md): decides, then has `push_out` make the verdict's values inside a
/// protected call. Never raises.
///
/// # Safety
/// Called by Lua as the C closure `new_route` made.
unsafe extern "C-unwind" fn route_raw(state: *mut lua_State) -> c_int {
    let up = ffi::lua_upvalueindex;
    // SAFETY: every call below reads or moves values without allocating, except inside
    // lua_pcall, which catches what push_out raises. `held` and `decided` (values with
    // destructors) are dropped after the last Lua call.
    unsafe {
        if !upvalues_are_ours(state) {
            ffi::lua_pushnil(state);
            return 1;
        }
        let held = bound_state(state);
        let decided = match &held {
            None => Err("route: its proxy was collected"),
            Some(shared) if shared.is_closed() => Err("route: its proxy was closed (native.close)"),
            Some(shared) => read_stanza(state).and_then(|stanza| shared.route(&stanza)),
        };
        let (name, out) = match &decided {
            Ok(verdict @ Verdict::Send(_)) => (UP_SEND, Out::Verdict(verdict)),
            Ok(verdict @ Verdict::Error(_)) => (UP_ERROR, Out::Verdict(verdict)),
            Ok(verdict @ Verdict::Drop { .. }) => (UP_DROP, Out::Verdict(verdict)),
            Err(message) => (UP_FAIL, Out::Fail(message)),
        };
        let out_ptr = &out as *const Out as *const c_void;
        let base = ffi::lua_gettop(state);
        ffi::lua_pushvalue(state, up(UP_PUSH));
        ffi::lua_pushlightuserdata(state, out_ptr as *mut c_void);
        ffi::lua_pushvalue(state, up(name));
        ffi::lua_pushvalue(state, up(UP_HOST));
        let outer = PUSHING.replace(out_ptr);
        let status = ffi::lua_pcall(state, 3, ffi::LUA_MULTRET, 0);
        PUSHING.set(outer);
        if status == ffi::LUA_OK {
            return ffi::lua_gettop(state) - base;
        }
        // The error object is on top: "fail", error.
        if let (Some(shared), Ok(verdict)) = (&held, &decided) {
            shared.undo(verdict);
        }
        ffi::lua_pushvalue(state, up(UP_FAIL));
        ffi::lua_insert(state, -2);
        2
    }
}

/// Pushes `s` as a new Lua string (raises on out of memory: only inside `push_out`).
///
/// # Safety
/// A protected context, or one where a raise skips no destructor.
unsafe fn push_str(state: *mut lua_State, s: &str) {
    // SAFETY: the pointer and length are those of `s`.
    unsafe {
        ffi::lua_pushlstring(state, s.as_ptr() as *const c_char, s.len());
    }
}

/// Pushes an optional hold number.
///
/// # Safety
/// `state` has a free slot.
unsafe fn push_number(state: *mut lua_State, n: Option<u64>) {
    // SAFETY: pushing an integer or nil allocates nothing.
    unsafe {
        match n {
            Some(n) => ffi::lua_pushinteger(state, n as ffi::lua_Integer),
            None => ffi::lua_pushnil(state),
        }
    }
}

/// Pushes a send verdict's values after its name: to, from, id, hold, release.
///
/// # Safety
/// Inside `push_out`.
unsafe fn push_send(state: *mut lua_State, send: &Send) {
    // SAFETY: the strings are the verdict's; `from` is the host's upvalue when equal.
    unsafe {
        push_str(state, &send.to);
        if string_arg(state, PUSH_HOST) == Ok(Some(send.from.as_bytes())) {
            ffi::lua_pushvalue(state, PUSH_HOST);
        } else {
            push_str(state, &send.from);
        }
        match &send.id {
            Some(id) => push_str(state, id),
            None => ffi::lua_pushnil(state),
        }
        push_number(state, send.hold);
        push_number(state, send.release);
    }
}

/// `push_out(out, name, host)`, run by `route_raw` in `lua_pcall`: the verdict's values.
/// Owns nothing with a destructor, so that a raise (out of memory, a finalizer's error)
/// jumps over nothing that needed to run. Returns nothing unless `out` is the `Out` that
/// `route_raw` is handing over now.
///
/// # Safety
/// Called by Lua as a C function.
unsafe extern "C-unwind" fn push_out(state: *mut lua_State) -> c_int {
    // SAFETY: the light userdata is compared with PUSHING before it is read: then it is
    // the `Out` in route_raw's frame, alive until lua_pcall returns. Lua gives this
    // function LUA_MINSTACK slots; it pushes at most 6.
    unsafe {
        let out = ffi::lua_touserdata(state, PUSH_OUT) as *const c_void;
        if ffi::lua_type(state, PUSH_OUT) != ffi::LUA_TLIGHTUSERDATA
            || out.is_null()
            || out != PUSHING.get()
        {
            return 0;
        }
        ffi::lua_pushvalue(state, PUSH_NAME);
        match &*(out as *const Out) {
            Out::Fail(message) => {
                push_str(state, message);
                2
            }
            Out::Verdict(Verdict::Send(send)) => {
                push_send(state, send);
                6
            }
            Out::Verdict(Verdict::Error(e)) => {
                push_str(state, e.error_type);
                push_str(state, e.condition);
                push_str(state, e.text);
                4
            }
            Out::Verdict(Verdict::Drop { reason, drain }) => {
                push_str(state, reason);
                ffi::lua_pushboolean(state, c_int::from(*drain));
                3
            }
        }
    }
}
