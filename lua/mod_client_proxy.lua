-- mod_client_proxy: requests to this component are answered by an online resource of an
-- ordinary client account (the "implementing client"). The native core (client_proxy.so)
-- decides; this shim applies its verdicts and does the I/O (the boundary: docs/INTERNALS.md).

local st = require "util.stanza";
local util_time = require "util.time";

if module:get_host_type() ~= "component" then
	error("mod_client_proxy must be loaded as a component, e.g. Component \"proxy.example\" \"client_proxy\"", 0);
end

local native, native_path = module:require "native";
local compat = module:require "compat";
local add_shell_host = module:require "shell";

local host = module.host;
-- The core's clock, which route reads itself when given no time (one call less per
-- stanza). A core older than this shim (reloaded, not restarted) has none: then
-- util.time's, given to route with each stanza (`stanza_now`).
local now = native.now or util_time.monotonic or util_time.now;
local stanza_now = native.now == nil and now or nil;

-- client_proxy_resources: Lua patterns; a resource is eligible when its name matches one.
local patterns = module:get_option_array("client_proxy_resources");
for _, pattern in ipairs(patterns or {}) do
	-- A malformed pattern fails only where matching reaches the fault: try "" and itself.
	local valid, err = type(pattern) == "string", "not a string";
	if valid then valid, err = pcall(string.match, "", pattern); end
	if valid then valid, err = pcall(string.match, pattern, pattern); end
	if not valid then error(("client_proxy_resources: %q is not a Lua pattern: %s"):format(tostring(pattern), tostring(err)), 0); end
end

local function is_eligible(from)
	local resource = from and from:match("/(.*)$");
	if not patterns or not resource then return true; end
	for _, pattern in ipairs(patterns) do
		local matched, result = pcall(string.match, resource, pattern);
		if not matched then
			module:log("error", "client_proxy_resources: pattern %q failed on %q: %s", pattern, resource, tostring(result));
		elseif result then return true; end
	end
	return false;
end

local function keys(t)
	local list = {};
	for k in pairs(t or {}) do list[#list + 1] = k; end
	return list;
end

local function loaded(ok, result) -- a failure at load is a load error, the core's first line
	if not ok then error((tostring(result):match("^[^\n]*")), 0); end
	return result;
end

-- Users subscribed to the service's availability: the core's set, stored (bare JID -> true).
local subscriber_store = module:open_store("client_proxy_subscribers");
-- The options as the config gives them: the core checks them, naming the option.
local options = { host = host, subscribers = keys(subscriber_store:get(nil)), local_domains = keys(prosody.hosts),
	client_proxy_allow = module:get_option("client_proxy_allow"),
	client_proxy_jat = compat.option_enum("client_proxy_jat", "plain", "base64"),
	client_proxy_strategy = compat.option_enum("client_proxy_strategy", "random", "round_robin", "least_pending", "sticky") };
for _, name in ipairs({ "client_proxy_timeout", "client_proxy_eject_for" }) do options[name] = compat.option_period(name); end
for _, name in ipairs({ "target_address", "client_proxy_max_pending", "client_proxy_max_pending_per_requester",
		"client_proxy_max_pending_per_user", "client_proxy_max_pending_per_domain", "client_proxy_eject_after",
		"client_proxy_messages", "client_proxy_outbound", "client_proxy_presence" }) do
	options[name] = module:get_option_scalar(name);
end
local proxy = loaded(pcall(native.open, options));
local status = loaded(pcall(proxy.status, proxy));

-- Statistics: the core counts; copied at each collection, by the names the core gives them.
local requests = module:metric("counter", "requests", "", "Requests by what became of them", { "outcome" });
local errors_sent = module:metric("counter", "errors", "", "Errors the proxy sent to requesters", { "condition" });
local ejections = module:metric("counter", "ejections", "", "Resources taken out of rotation", {});
local eligible_resources = module:metric("gauge", "eligible_resources", "", "Eligible implementing resources online", {});
local ejected_resources = module:metric("gauge", "ejected_resources", "", "Eligible resources out of rotation", {});
local pending = module:metric("gauge", "pending", "", "Requests waiting for their answer", {});
local messages = module:metric("counter", "messages", "", "Messages proxied", { "direction" });

module:hook_global("stats-update", function ()
	local ok, s = pcall(proxy.status, proxy);
	if not ok then return; end
	for outcome, n in pairs(s.requests) do requests:with_labels(outcome):set(n); end
	for direction, n in pairs(s.messages) do messages:with_labels(direction):set(n); end
	ejections:with_labels():set(s.ejections);
	eligible_resources:with_labels():set(s.eligible);
	ejected_resources:with_labels():set(s.ejected);
	pending:with_labels():set(s.pending);
end);

-- Requests forwarded and not yet answered, by the core's number, so that one can be sent
-- again to another resource (a retry): the iq's one child element (a third of the memory
-- of the whole stanza; the core's resend item has the type, id, xml:lang, to and from to
-- rebuild it with), or the whole stanza, marked in held_whole, when it has more than one
-- child. Carried across module:reload.
local held, held_whole = {}, {};

local function release(key)
	held[key], held_whole[key] = nil, nil;
end

local function send_error(stanza, etype, condition, text) -- counted by condition
	errors_sent:with_labels(condition):add(1);
	module:send(st.error_reply(stanza, etype, condition, text));
end

local apply = {}; -- what to do with each kind of item of the core's outbox
function apply.error(item)
	if item.release ~= nil then release(item.release); end
	send_error(st.iq({ type = "get", id = item.id, from = item.to, to = item.from }), item.type, item.condition, item.text);
end
function apply.resend(item)
	local kept = held[item.held];
	if not kept then return module:log("warn", "Request %s to resend is no longer held", tostring(item.held)); end
	if held_whole[item.held] then
		kept.attr.to, kept.attr.from = item.to, item.from;
		return module:send(kept);
	end
	if item.type == nil or item.id == nil then -- a core older than this shim (reloaded, not restarted)
		return module:log("error", "Cannot resend request %s: the native core is older than the module; restart Prosody", tostring(item.held));
	end
	module:send(st.iq({ type = item.type, id = item.id, to = item.to, from = item.from, ["xml:lang"] = item.lang })
		:add_child(kept));
end
function apply.presence(item) module:send(st.presence({ to = item.to, from = item.from, type = item.type })); end
function apply.subscribers(item)
	local data = {};
	for _, bare in ipairs(item.list) do data[bare] = true; end
	local ok, err = subscriber_store:set(nil, data);
	if not ok then module:log("error", "Could not store the subscribers of %s: %s", host, tostring(err)); end
end
function apply.log(item) module:log("info", "%s", item.text); end
local last_status;
function apply.status(item) -- the module's status, as the core words it; each text logged once
	if module.set_status then module:set_status(item.level, item.text, true); end
	if item.text == last_status then return; end
	last_status = item.text;
	module:log(item.level == "core" and "info" or item.level, "%s", item.text);
end

-- Calls proxy:drain(), tick(now) or stopping() and applies the outbox it returns.
local function send_outbox(method, ...)
	local ok, items = pcall(method, proxy, ...);
	if not ok then return module:log("error", "Native core failed: %s", tostring(items)); end
	for _, item in ipairs(items) do
		local f = apply[item.kind];
		if f then f(item); else module:log("warn", "Unknown outbox item %s", tostring(item.kind)); end
	end
end

local route = proxy.route;
local function handle_stanza(event)
	local stanza = event.stanza;
	local attr, name = stanza.attr, stanza.name;
	local stanza_type = attr.type;
	local priority, eligible, condition;
	if name == "presence" then
		priority, eligible = tonumber(stanza:get_child_text("priority")), is_eligible(attr.from);
	elseif stanza_type == "error" then
		condition = select(2, stanza:get_error()); -- a decline?
	end
	-- route never raises (a failure is the verdict "fail"): no pcall on the hot path.
	local verdict, a, b, c, d, e = route(proxy, name, stanza_type, attr.from, attr.to, attr.id, stanza_now and stanza_now(),
		priority, eligible, condition, attr["xml:lang"]);
	if verdict == "send" then -- to, from, id, hold, release
		attr.to, attr.from = a, b;
		if c ~= nil then attr.id = c; end
		if d ~= nil then -- held for a retry (see `held` above)
			local child = stanza.tags[1];
			if child ~= nil and stanza[1] == child and stanza[2] == nil then held[d] = child;
			else held[d], held_whole[d] = stanza, true; end
		end
		if e ~= nil then held[e], held_whole[e] = nil, nil; end
		module:send(stanza);
	elseif verdict == "drop" then -- reason, drain
		module:log("debug", "Dropped %s/%s from %s: %s", name, stanza_type or "normal", tostring(attr.from), tostring(a));
		if b then send_outbox(proxy.drain); end
	elseif verdict == "error" then -- type, condition, text (never for a stanza of type error)
		send_error(stanza, a, b, c);
	else -- "fail", message: the core failed; a get/set still gets its one answer
		module:log("error", "Native core failed on %s from %s: %s", name, tostring(attr.from), tostring(a or verdict));
		if name == "iq" and (stanza_type == "get" or stanza_type == "set") then
			local err = native.INTERNAL_ERROR;
			send_error(stanza, err.type, err.condition, err.text);
		end
	end
	return true;
end

for _, event in ipairs({ "iq/host", "iq/bare", "iq/full", "message/host", "message/bare", "message/full",
		"presence/host", "presence/bare", "presence/full" }) do
	module:hook(event, handle_stanza, -1);
end

module:add_timer(1, function () send_outbox(proxy.tick, now()); return 1; end);
module:hook_global("server-stopping", function () send_outbox(proxy.stopping); end);
local function set_local_domains() -- the per-domain cap spares this server's hosts
	local ok, err = pcall(proxy.set_local_domains, proxy, keys(prosody.hosts));
	if not ok then module:log("error", "Native core failed: %s", tostring(err)); end
end
module:hook_global("host-activated", set_local_domains);
module:hook_global("host-deactivated", set_local_domains);

local remove_shell_host = add_shell_host(host, function () return proxy:status(), now(); end);

function module.save() return { held = held, held_whole = held_whole }; end

-- After a reload: the held requests, then what the core owes (which may release them).
function module.restore(data)
	for key, kept in pairs(data.held or {}) do held[key] = kept; end
	-- A shim from before held_whole kept whole stanzas only.
	for key in pairs(data.held_whole or data.held or {}) do held_whole[key] = true; end
	send_outbox(proxy.drain);
end

function module.unload()
	remove_shell_host();
	if not module.reloading then pcall(native.close, host); end
end

-- Ask for the target's presence once the server has started (its host may not be active
-- at load). A subscribe it already approved makes Prosody send its current presences.
compat.when_started(function () module:send(st.presence({ type = "subscribe", from = host, to = status.target })); end);

if not module.reloading then send_outbox(proxy.drain); end -- the status first; a reload drains in restore
module:log("info", "Proxying %s to %s (native core %s, %s)", host, status.target, native.version, native_path);
