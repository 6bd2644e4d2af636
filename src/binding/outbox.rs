//! Outbox items and status snapshots -> Lua tables (docs/INTERNALS.md, "The boundary").
//! Built with mlua, whose calls into Lua are protected: a Lua error while a table is made
//! (out of memory, an erroring finalizer) comes back as an `Err` here, never as a jump
//! over these frames.

use crate::router::Status;
use crate::verdict::OutItem;
use mlua::prelude::*;

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

/// The outbox as an array of item tables, in the order to send them.
pub(super) fn outbox_to_lua(lua: &Lua, items: Vec<OutItem>) -> LuaResult<LuaTable> {
    let list = lua.create_table_with_capacity(items.len(), 0)?;
    for item in items {
        list.raw_push(item_to_lua(lua, item)?)?;
    }
    Ok(list)
}

/// A status snapshot as a table (resources in the core's order: sorted by name).
pub(super) fn status_to_lua(lua: &Lua, s: Status) -> LuaResult<LuaTable> {
    let t = lua.create_table()?;
    t.raw_set("host", s.host)?;
    t.raw_set("target", s.target)?;
    t.raw_set("pending", s.pending)?;
    t.raw_set("outbound_pending", s.outbound_pending)?;
    t.raw_set("eligible", s.eligible)?;
    t.raw_set("ejected", s.ejected)?;
    t.raw_set("hibernating", s.hibernating)?;
    t.raw_set("ejections", s.ejections)?;
    t.raw_set("revoked", s.revoked)?;
    t.raw_set("manage_roster", s.manage_roster)?;
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
    t.raw_set("keys", s.keys)?;
    t.raw_set("moves", s.moves)?;
    let list = lua.create_table_with_capacity(s.resources.len(), 0)?;
    for r in s.resources {
        let row = lua.create_table()?;
        row.raw_set("name", r.name)?;
        row.raw_set("priority", r.priority)?;
        row.raw_set("pool", r.pool)?;
        row.raw_set("pending", r.pending)?;
        row.raw_set("ejected_until", r.ejected_until)?;
        row.raw_set("keys", r.keys)?;
        row.raw_set("hibernating", r.hibernating)?;
        list.raw_push(row)?;
    }
    t.raw_set("resources", list)?;
    Ok(t)
}
