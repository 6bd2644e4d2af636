-- The native core's outbox for mod_client_proxy (module:require "outbox"): calls into the
-- core other than route, protected, and the items they return applied in order; the error
-- replies the shim sends (counted by condition); the subscriber store; and the one thing
-- the shim keeps per request, its payload, held for a retry.

local st = require "util.stanza";

local outbox = {};

local errors_sent = module:metric("counter", "errors", "", "Errors the proxy sent to requesters", { "condition" });

-- Users subscribed to the service's availability: the core's set, stored (bare JID -> true).
local subscriber_store = module:open_store("client_proxy_subscribers");

-- Requests forwarded and not yet answered, by the core's hold number, so that one can be
-- sent again to another resource (a retry): the iq's one child element (a third of the
-- memory of the whole stanza; the core's resend item has the type, id, xml:lang, to and
-- from to rebuild it with), or the whole stanza, marked in held_whole, when it has more
-- than one child. Carried across module:reload (save, restore).
local held, held_whole = {}, {};

function outbox.hold(key, stanza)
	local child = stanza.tags[1];
	if child ~= nil and stanza[1] == child and stanza[2] == nil then
		held[key] = child;
	else
		held[key], held_whole[key] = stanza, true;
	end
end

function outbox.release(key)
	held[key], held_whole[key] = nil, nil;
end

function outbox.save() return { held = held, held_whole = held_whole }; end

function outbox.restore(data)
	for key, kept in pairs(data.held or {}) do held[key] = kept; end
	for key in pairs(data.held_whole or {}) do held_whole[key] = true; end
end

-- The stored subscribers, as a list of bare JIDs (for native.open).
function outbox.subscribers()
	local list = {};
	for bare in pairs(subscriber_store:get(nil) or {}) do list[#list + 1] = bare; end
	return list;
end

function outbox.send_error(stanza, etype, condition, text)
	errors_sent:with_labels(condition):add(1);
	module:send(st.error_reply(stanza, etype, condition, text));
end

-- The first line of an error (mlua's errors carry a traceback).
function outbox.first_line(err)
	return (tostring(err):match("^[^\n]*"));
end

-- proxy:<method>(...), protected: its result, or nil after logging the failure.
function outbox.call(proxy, method, ...)
	local ok, result = pcall(proxy[method], proxy, ...);
	if ok then return result; end
	module:log("error", "Native core failed in %s: %s", method, outbox.first_line(result));
end

local apply = {}; -- what to do with each kind of item
function apply.error(item)
	if item.release ~= nil then outbox.release(item.release); end
	outbox.send_error(st.iq({ type = "get", id = item.id, from = item.to, to = item.from }), item.type, item.condition, item.text);
end
function apply.resend(item)
	local kept = held[item.held];
	if not kept then return module:log("warn", "Request %s to resend is no longer held", tostring(item.held)); end
	if held_whole[item.held] then
		kept.attr.to, kept.attr.from = item.to, item.from;
		return module:send(kept);
	end
	module:send(st.iq({ type = item.type, id = item.id, to = item.to, from = item.from, ["xml:lang"] = item.lang })
		:add_child(kept));
end
function apply.presence(item) module:send(st.presence({ to = item.to, from = item.from, type = item.type })); end
function apply.subscribers(item)
	local data = {};
	for _, bare in ipairs(item.list) do data[bare] = true; end
	local ok, err = subscriber_store:set(nil, data);
	if not ok then module:log("error", "Could not store the subscribers of %s: %s", module.host, tostring(err)); end
end
function apply.log(item) module:log("info", "%s", item.text); end
function apply.status(item) -- the core sends one when the level or the text changes
	if module.set_status then module:set_status(item.level, item.text, true); end
	module:log(item.level == "core" and "info" or item.level, "%s", item.text);
end

-- Calls proxy:drain(), tick(now) or stopping() and applies the outbox it returns.
function outbox.send(proxy, method, ...)
	local items = outbox.call(proxy, method, ...);
	for _, item in ipairs(items or {}) do
		local f = apply[item.kind];
		if f then f(item); else module:log("warn", "Unknown outbox item %s", tostring(item.kind)); end
	end
end

return outbox;
