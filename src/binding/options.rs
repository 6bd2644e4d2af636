//! The options table of `open` -> `Options`, each value's type checked so that an error
//! names the option; and the option list the shim reads the config file by.

use crate::config::{self, Kind, Options, OPTIONS};
use mlua::prelude::*;

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

/// A string option (None when unset).
pub(super) fn string_option(t: &LuaTable, option: &'static str) -> LuaResult<Option<String>> {
    match t.raw_get::<LuaValue>(option)? {
        LuaValue::Nil => Ok(None),
        LuaValue::String(s) => match s.to_str() {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(option_error(option, &LuaValue::String(s), "UTF-8 text")),
        },
        other => Err(option_error(option, &other, "a string")),
    }
}

/// A number option; a numeric string counts (Prosody 0.12 passes config text through).
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

/// A period in seconds: a number (Prosody 13's getter has turned "2 minutes" into one).
fn period_option(t: &LuaTable, option: &'static str) -> LuaResult<Option<f64>> {
    match t.raw_get::<LuaValue>(option)? {
        LuaValue::String(s) => match s.to_str().ok().and_then(|s| s.trim().parse().ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(option_error(
                option,
                &LuaValue::String(s),
                "a number of seconds",
            )),
        },
        _ => number_option(t, option),
    }
}

/// A list of strings (an array table; a single string is a list of one, as Prosody's
/// get_option_array reads it); `item` says what each entry is, for the error.
pub(super) fn list_option(
    t: &LuaTable,
    option: &'static str,
    item: &str,
) -> LuaResult<Option<Vec<String>>> {
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
                    other => return Err(option_error(option, &other, item)),
                }
            }
            Ok(Some(out))
        }
        other => Err(option_error(option, &other, &format!("a list of {item}s"))),
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
pub(super) fn options_from(t: &LuaTable) -> LuaResult<Options> {
    Ok(Options {
        target_address: string_option(t, "target_address")?,
        jat: string_option(t, "client_proxy_jat")?,
        strategy: string_option(t, "client_proxy_strategy")?,
        timeout: period_option(t, "client_proxy_timeout")?,
        max_pending: number_option(t, "client_proxy_max_pending")?,
        max_pending_per_requester: number_option(t, "client_proxy_max_pending_per_requester")?,
        messages: switch_option(t, "client_proxy_messages")?,
        outbound: switch_option(t, "client_proxy_outbound")?,
        presence: switch_option(t, "client_proxy_presence")?,
        eject_after: number_option(t, "client_proxy_eject_after")?,
        eject_for: period_option(t, "client_proxy_eject_for")?,
        max_pending_per_user: number_option(t, "client_proxy_max_pending_per_user")?,
        max_pending_per_domain: number_option(t, "client_proxy_max_pending_per_domain")?,
        allow: list_option(t, "client_proxy_allow", "domain or bare JID")?,
        affinity: list_option(
            t,
            "client_proxy_affinity",
            "rule {namespace}element@attribute",
        )?,
        affinity_idle: period_option(t, "client_proxy_affinity_idle")?,
        manage_roster: switch_option(t, "client_proxy_manage_roster")?,
    })
}

/// `native.options`: `{ { name =, kind =, default =, values = }, ... }`, kinds "jid",
/// "enum" (values; default the first), "period", "count", "switch", "list".
pub(super) fn options_table(lua: &Lua) -> LuaResult<LuaTable> {
    let list = lua.create_table_with_capacity(OPTIONS.len(), 0)?;
    for option in OPTIONS {
        let row = lua.create_table()?;
        row.raw_set("name", option.name)?;
        let kind = match option.kind {
            Kind::Jid => "jid",
            Kind::Enum(values) => {
                row.raw_set("values", values)?;
                row.raw_set("default", values.first().copied())?;
                "enum"
            }
            Kind::Period(default) => {
                row.raw_set("default", default)?;
                "period"
            }
            Kind::Count(default) => {
                row.raw_set("default", default)?;
                "count"
            }
            Kind::Switch(default) => {
                row.raw_set("default", default)?;
                "switch"
            }
            Kind::List => "list",
        };
        row.raw_set("kind", kind)?;
        list.raw_push(row)?;
    }
    Ok(list)
}
