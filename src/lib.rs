//! mod_client_proxy's native core: the router decides, the binding (`binding/`, the only
//! Rust that knows Lua) converts. The boundary is described in docs/INTERNALS.md.

pub mod address;
pub mod affinity;
pub mod config;
pub mod jat;
pub mod pending;
pub mod resources;
pub mod router;
pub mod siphash;
pub mod verdict;

mod binding;

use mlua::prelude::*;

/// Entry point: `package.loadlib(path, "luaopen_client_proxy")()`.
#[mlua::lua_module]
fn client_proxy(lua: &Lua) -> LuaResult<LuaTable> {
    binding::exports(lua)
}
