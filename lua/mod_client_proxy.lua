-- mod_client_proxy: requests to this component are answered by an online resource of an
-- ordinary client account (the "implementing client"). The decisions are made by the
-- native core (client_proxy.so, next to this file); this shim reads the options, applies
-- the core's verdicts, keeps the time and talks to Prosody.

local st = require "util.stanza";
local jid_bare = require "util.jid".bare;
local util_time = require "util.time";

if module:get_host_type() ~= "component" then
	error("mod_client_proxy must be loaded as a component, e.g. Component \"proxy.example\" \"client_proxy\"", 0);
end

local now = util_time.monotonic or util_time.now;

-- Where the native library may be, in order: next to this file (`make install`, a plugin
-- directory); in the luarocks tree this file was installed into (share/lua/5.x/ holds the
-- shim, lib/lua/5.x/ the library: `luarocks make`, `prosodyctl install`, for which
-- module:get_directory() is the rock's directory lib/luarocks/rocks-5.x/<name>/<version>/
-- of the tree); on package.cpath.
local function library_candidates()
	local candidates, seen = {}, {};
	local function add(path)
		if not seen[path] then
			seen[path] = true;
			candidates[#candidates + 1] = path;
		end
	end
	local dirs = { module:get_directory() };
	if type(module.path) == "string" then
		dirs[#dirs + 1] = module.path:match("^(.*)/[^/]*$");
	end
	for _, dir in ipairs(dirs) do
		add(dir .. "/client_proxy.so");
		local tree, version = dir:match("^(.*)/share/lua/(%d+%.%d+)/?$");
		if not tree then
			tree, version = dir:match("^(.*)/lib/luarocks/rocks%-(%d+%.%d+)/");
		end
		if tree then
			add(tree .. "/lib/lua/" .. version .. "/client_proxy.so");
		end
	end
	for template in package.cpath:gmatch("[^;]+") do
		add((template:gsub("%?", "client_proxy")));
	end
	return candidates;
end

local function load_native()
	local tried = {};
	for _, path in ipairs(library_candidates()) do
		local file = io.open(path, "rb");
		if file then
			file:close();
			local open, err = package.loadlib(path, "luaopen_client_proxy");
			if open then return open(), path; end
			local hint = "rebuild it with make and install it again";
			if tostring(err):match("undefined symbol") then
				-- e.g. lua_newuserdatauv: a library built for Lua 5.4 loaded by an older Lua.
				local version = _VERSION:match("%d+%.%d+") or "?";
				hint = ("it was built for another Lua than this Prosody's %s: rebuild with make LUA=%s"):format(_VERSION, rawget(_G, "jit") and "jit" or version);
			end
			error(("cannot load the native library %s (%s): %s"):format(path, hint, tostring(err)), 0);
		end
		tried[#tried + 1] = path;
	end
	error(("cannot find the native library client_proxy.so: build it (make) and install it next to mod_client_proxy.lua; looked in %s"):format(table.concat(tried, ", ")), 0);
end

local native, native_path = load_native();

-- client_proxy_resources: Lua patterns; a resource is eligible when its name matches one.
local patterns = module:get_option_array("client_proxy_resources");
if patterns then
	for _, pattern in ipairs(patterns) do
		-- Lua reports a malformed pattern only when matching reaches the fault: try the
		-- empty string and the pattern's own text, which reaches most of it.
		local valid, err = type(pattern) == "string", "not a string";
		if valid then valid, err = pcall(string.match, "", pattern); end
		if valid then valid, err = pcall(string.match, pattern, pattern); end
		if not valid then
			error(("client_proxy_resources: %q is not a Lua pattern: %s"):format(tostring(pattern), tostring(err)), 0);
		end
	end
end

local function is_eligible(from)
	local resource = from and from:match("/(.*)$");
	if not patterns or not resource then return true; end
	for _, pattern in ipairs(patterns) do
		local matched, result = pcall(string.match, resource, pattern);
		if not matched then
			module:log("error", "client_proxy_resources: pattern %q failed on %q: %s", pattern, resource, tostring(result));
		elseif result then
			return true;
		end
	end
	return false;
end

-- A period in seconds. Prosody 13's module:get_option_period also takes a description
-- ("30 seconds", "2 min"); 0.12 has numbers only. A value neither understands is a load
-- error naming the option, not a silent default.
local function option_period(name)
	local raw = module:get_option_scalar(name);
	if raw == nil or type(raw) == "number" then return raw; end
	local seconds;
	if module.get_option_period then
		seconds = module:get_option_period(name);
	else
		seconds = tonumber(raw);
	end
	if type(seconds) ~= "number" then
		error(("%s: %q is not a number of seconds%s"):format(name, tostring(raw),
			module.get_option_period and " nor a period such as \"30 seconds\"" or ""), 0);
	end
	return seconds;
end

-- One of a set of names. Prosody 13's module:get_option_enum logs the allowed values when
-- the value is not one of them; the core then refuses it, naming the option.
local function option_enum(name, default, ...)
	if module.get_option_enum then
		return module:get_option_enum(name, default, ...);
	end
	return module:get_option_string(name);
end

local ok, proxy = pcall(native.new_proxy, {
	host = module.host;
	target = module:get_option_string("target_address");
	jat = option_enum("client_proxy_jat", "plain", "base64");
	strategy = option_enum("client_proxy_strategy", "random", "round_robin", "least_pending", "sticky");
	messages = module:get_option_boolean("client_proxy_messages", true);
	outbound = module:get_option_boolean("client_proxy_outbound", true);
	presence = module:get_option_boolean("client_proxy_presence", true);
	timeout = option_period("client_proxy_timeout");
	max_pending = module:get_option_number("client_proxy_max_pending");
	max_pending_per_requester = module:get_option_number("client_proxy_max_pending_per_requester");
});
if not ok then
	-- The core names the option ("target_address: is required ..."); keep the first line only.
	error((tostring(proxy):match("^[^\n]*")), 0);
end

local target = proxy:status().target;
local route = proxy.route;
local host = module.host;

-- Statistics (OpenMetrics with Prosody's statistics enabled). The core counts; the values
-- are copied at each collection. Errors the proxy itself sends are counted by condition.
local request_outcomes = module:metric("counter", "requests", "", "Requests by what became of them", { "outcome" });
local errors_sent = module:metric("counter", "errors", "", "Errors the proxy sent to requesters", { "condition" });
local resources_online = module:metric("gauge", "eligible_resources", "", "Eligible implementing resources online", {});
local pending_requests = module:metric("gauge", "pending", "", "Requests waiting for their answer", {});
local messages_relayed = module:metric("counter", "messages", "", "Messages proxied", { "direction" });

local outcomes = { "forwarded", "refused", "delivered", "unsolicited", "timed_out", "lost", "retried", "outbound" };
module:hook_global("stats-update", function ()
	local ran, status = pcall(proxy.status, proxy);
	if not ran then return; end
	for _, outcome in ipairs(outcomes) do
		request_outcomes:with_labels(outcome):set(status.counters[outcome]);
	end
	messages_relayed:with_labels("to_service"):set(status.counters.messages_in);
	messages_relayed:with_labels("to_user"):set(status.counters.messages_out);
	resources_online:with_labels():set(status.eligible);
	pending_requests:with_labels():set(status.pending);
end);

-- Users subscribed to the service's availability (client_proxy_presence), by bare JID,
-- kept in Prosody's storage so that they survive a restart.
local subscriber_store = module:open_store("client_proxy_subscribers");
local subscribers = subscriber_store:get(nil) or {};
-- What subscribers were last told; after a reload, what they were told before it.
local available = (proxy:health()) > 0;

local function availability(to)
	return st.presence({ from = host, to = to, type = not available and "unavailable" or nil });
end

local function save_subscribers()
	local saved, err = subscriber_store:set(nil, subscribers);
	if not saved then
		module:log("error", "Could not store the subscribers of %s: %s", host, tostring(err));
	end
end

local function handle_subscription(kind, stanza)
	local user, bare = stanza.attr.from, jid_bare(stanza.attr.from);
	if kind == "subscribe" then
		if not subscribers[bare] then
			subscribers[bare] = true;
			save_subscribers();
		end
		module:send(st.presence({ from = host, to = bare, type = "subscribed" }));
		module:send(availability(bare));
	elseif kind == "unsubscribe" then
		if subscribers[bare] then
			subscribers[bare] = nil;
			save_subscribers();
		end
		module:send(st.presence({ from = host, to = bare, type = "unavailable" }));
	elseif subscribers[bare] then -- a probe from a subscriber
		module:send(availability(user));
	else
		module:send(st.presence({ from = host, to = user, type = "unsubscribed" }));
	end
end

local function set_available(now_available)
	if now_available == available then return; end
	available = now_available;
	for bare in pairs(subscribers) do
		module:send(availability(bare));
	end
end

-- module:set_status: a warning while no eligible resource is online, an error while the
-- target has revoked the subscription, ok otherwise. Checked after target presence only.
local last_status;
local function update_status()
	local ran, eligible, _, revoked = pcall(proxy.health, proxy);
	if not ran then return; end
	set_available(eligible > 0);
	local kind, text;
	if revoked then
		kind, text = "error", ("%s revoked the subscription or its presence failed: approve the subscription of %s"):format(target, host);
	elseif eligible == 0 then
		kind, text = "warn", ("No eligible resource of %s is online"):format(target);
	else
		kind, text = "core", ("%d eligible resource(s) of %s online"):format(eligible, target);
	end
	if kind ~= last_status then
		last_status = kind;
		-- override: Prosody keeps an error status against anything but another error.
		if module.set_status then module:set_status(kind, text, true); end
		module:log(kind == "core" and "info" or kind, "%s", text);
	end
end

-- Gets forwarded and not yet answered, by request number, so that a get whose resource
-- went away can be sent to another one. Carried across module:reload.
local held = {};

-- Errors for requests whose answer can no longer come (resource gone, timed out):
-- flat list of seq, to, from, id, error type, condition, text.
local function send_answers(list)
	for i = 1, #list, 7 do
		local seq, to, from, id, etype, condition, text = list[i], list[i+1], list[i+2], list[i+3], list[i+4], list[i+5], list[i+6];
		held[seq] = nil;
		module:log("debug", "Answering %s (id %s) with %s: %s", to, id, condition, text);
		errors_sent:with_labels(condition):add(1);
		local request = st.iq({ type = "get", id = id, from = to, to = from });
		module:send(st.error_reply(request, etype, condition, text));
	end
end

-- Gets to send again to another resource: flat list of seq, to, from.
local function send_retries(list)
	for i = 1, #list, 3 do
		local stanza = held[list[i]];
		if stanza then
			module:log("debug", "Retrying request %s on %s", stanza.attr.id, list[i+1]);
			stanza.attr.to, stanza.attr.from = list[i+1], list[i+2];
			module:send(stanza);
		else
			-- Not expected; the request stays tracked and is answered at its timeout.
			module:log("warn", "Request %s to retry on %s is no longer held", list[i], list[i+1]);
		end
	end
end

local function is_request(stanza)
	local t = stanza.attr.type;
	return stanza.name == "iq" and (t == "get" or t == "set");
end

local function handle_stanza(event)
	local stanza = event.stanza;
	local attr = stanza.attr;
	local priority, eligible;
	if stanza.name == "presence" then
		priority = tonumber(stanza:get_child_text("priority"));
		if priority then
			priority = math.max(-128, math.min(127, math.floor(priority)));
		end
		eligible = is_eligible(attr.from);
	end
	local ran, action, a, b, c = pcall(route, proxy, stanza.name, attr.type, attr.from, attr.to, attr.id, now(), priority, eligible);
	if not ran then
		module:log("error", "Native router failed on %s from %s: %s", stanza.name, attr.from, tostring(action));
		if is_request(stanza) then
			errors_sent:with_labels("internal-server-error"):add(1);
			module:send(st.error_reply(stanza, "cancel", "internal-server-error", "The proxy failed to handle this request"));
		end
		return true;
	end
	if action == "forward" then
		if attr.type == "get" then held[c] = stanza; end
		attr.to, attr.from = a, b;
		module:send(stanza);
	elseif action == "deliver" then
		held[c] = nil;
		attr.to, attr.from = a, b;
		module:send(stanza);
	elseif action == "relay" then
		attr.to, attr.from = a, b;
		module:send(stanza);
	elseif action == "rewrite" then
		attr.to, attr.from, attr.id = a, b, c;
		module:send(stanza);
	elseif action == "subscription" then
		handle_subscription(a, stanza);
	elseif action == "error" then
		module:log("debug", "Refusing %s/%s from %s: %s", stanza.name, attr.type or "normal", attr.from, c);
		errors_sent:with_labels(b):add(1);
		module:send(st.error_reply(stanza, a, b, c));
	elseif action == "consumed" then
		module:log("debug", "%s from %s: %s", stanza.name, attr.from, a);
		local answers, retries = proxy:take_answers();
		send_retries(retries);
		send_answers(answers);
		if stanza.name == "presence" then update_status(); end
	else
		module:log("debug", "Dropped %s/%s from %s to %s: %s", stanza.name, attr.type or "normal", attr.from, attr.to, a);
	end
	return true;
end

local function tick()
	local ran, list = pcall(proxy.expire, proxy, now());
	if ran then
		send_answers(list);
	else
		module:log("error", "Native expiry failed: %s", tostring(list));
	end
	return 1;
end

-- Ask for the target's presence. Sent once the server has started: at load time the
-- target's host may not be active yet and the subscription would be lost. A subscribe the
-- target already approved makes Prosody answer subscribed and send its current presences.
-- No probe: to a target that has not approved yet, Prosody answers a probe with
-- unsubscribed on its behalf, which deletes the pending subscription request.
local function subscribe()
	module:log("debug", "Subscribing to %s", target);
	module:send(st.presence({ type = "subscribe", from = host, to = target }));
end

for _, kind in ipairs({ "iq", "message", "presence" }) do
	for _, to in ipairs({ "host", "bare", "full" }) do
		module:hook(kind .. "/" .. to, handle_stanza, -1);
	end
end

module:add_timer(1, tick);

-- Shell command: client_proxy:resources("proxy.example") lists the target's resources.
local function describe(print_line)
	local status = proxy:status();
	print_line(("%s -> %s: %d eligible, %d pending%s"):format(status.host, status.target,
		status.eligible, status.pending, status.revoked and ", subscription revoked" or ""));
	table.sort(status.resources, function (x, y) return x.name < y.name; end);
	for _, r in ipairs(status.resources) do
		print_line(("  %-30s priority %4d  %-10s  %d pending"):format(r.name, r.priority, r.pool, r.pending));
	end
	return #status.resources;
end

-- Every client_proxy component of the server, for the one shell command that lists them.
local shell_hosts = module:shared("/*/client_proxy/shell_hosts");
shell_hosts[host] = describe;

local function shell_resources(self, wanted)
	local shown, count = false, 0;
	for h, show in pairs(shell_hosts) do
		if not wanted or wanted == h then
			shown, count = true, count + show(function (line) self.session.print(line); end);
		end
	end
	if not shown then return false, "No client_proxy component " .. tostring(wanted); end
	return true, ("%d resource(s)"):format(count);
end

module:hook("module-unloaded", function (event)
	if event.module == "client_proxy" and event.host == host then
		shell_hosts[host] = nil;
	end
end);

-- Runs f once the server has started: at once on a running server (a module reload or a
-- component added at runtime), else when it has. Prosody 13's module:on_ready where present.
local function when_started(f)
	if module.on_ready then
		module:on_ready(f);
	elseif prosody.start_time then
		f();
	else
		module:hook_global("server-started", f);
	end
end

if prosody.version and not prosody.version:match("^0%.") then
	-- Prosody 13: commands are items. mod_admin_shell only watches the global context
	-- and VirtualHosts, not components, so the item goes to the global context, once the
	-- server has started (mod_admin_shell may load after this component).
	local function add_shell_command()
		module:context("*"):add_item("shell-command", {
			section = "client_proxy"; section_desc = "mod_client_proxy";
			name = "resources"; desc = "List the implementing client's resources of a proxy host (or of all)";
			args = { { name = "host"; type = "string" } };
			handler = shell_resources;
		});
	end
	when_started(add_shell_command);
else
	-- Prosody 0.12: the shell's shared environment.
	local env = module:shared("/*/admin_shell/env");
	env.client_proxy = env.client_proxy or {};
	env.client_proxy.resources = shell_resources;
end

-- A reload that changed target_address answers what the old target still held.
send_answers((proxy:take_answers()));

function module.save()
	return { held = held, available = available };
end

function module.restore(data)
	for seq, stanza in pairs(data.held or {}) do
		held[seq] = stanza;
	end
	-- What subscribers were told before the reload; tell them if that changed (a new target).
	if data.available ~= nil then
		available = data.available;
		update_status();
	end
end

-- The service goes away with the server: subscribers are told, so that after a restart
-- nobody believes it available until a resource is online again.
module:hook_global("server-stopping", function ()
	set_available(false);
end);

when_started(subscribe);

update_status();
module:log("info", "Proxying %s to %s (native core %s, %s)", host, target, native.version, native_path);
