-- mod_client_proxy: requests to this component are answered by an online resource of an
-- ordinary client account (the "implementing client"). The decisions are made by the
-- native core (client_proxy.so, next to this file); this shim reads the options, applies
-- the core's verdicts, keeps the time and talks to Prosody.

local st = require "util.stanza";
local util_time = require "util.time";

if module:get_host_type() ~= "component" then
	error("mod_client_proxy must be loaded as a component, e.g. Component \"proxy.example\" \"client_proxy\"", 0);
end

local now = util_time.monotonic or util_time.now;

local function load_native()
	local path = module:get_directory() .. "/client_proxy.so";
	local open, err = package.loadlib(path, "luaopen_client_proxy");
	if not open then
		error(("cannot load the native library %s (build it and install it next to mod_client_proxy.lua): %s")
			:format(path, tostring(err)), 0);
	end
	return open();
end

local native = load_native();

local ok, proxy = pcall(native.new_proxy, {
	host = module.host;
	target = module:get_option_string("target_address");
	jat = module:get_option_string("client_proxy_jat");
	timeout = module:get_option_number("client_proxy_timeout");
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

-- Gets forwarded and not yet answered, by request number, so that a get whose resource
-- went away can be sent to another one. Carried across module:reload.
local held = {};

-- Errors for requests whose answer can no longer come (resource gone, timed out):
-- flat list of seq, to, id, error type, condition, text.
local function send_answers(list)
	for i = 1, #list, 6 do
		local seq, to, id, etype, condition, text = list[i], list[i+1], list[i+2], list[i+3], list[i+4], list[i+5];
		held[seq] = nil;
		module:log("debug", "Answering %s (id %s) with %s: %s", to, id, condition, text);
		local request = st.iq({ type = "get", id = id, from = to, to = host });
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
	local priority;
	if stanza.name == "presence" then
		priority = tonumber(stanza:get_child_text("priority"));
		if priority then
			priority = math.max(-128, math.min(127, math.floor(priority)));
		end
	end
	local ran, action, a, b, c = pcall(route, proxy, stanza.name, attr.type, attr.from, attr.to, attr.id, now(), priority);
	if not ran then
		module:log("error", "Native router failed on %s from %s: %s", stanza.name, attr.from, tostring(action));
		if is_request(stanza) then
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
	elseif action == "error" then
		module:log("debug", "Refusing %s/%s from %s: %s", stanza.name, attr.type or "normal", attr.from, c);
		module:send(st.error_reply(stanza, a, b, c));
	elseif action == "consumed" then
		module:log("debug", "%s from %s: %s", stanza.name, attr.from, a);
		local answers, retries = proxy:take_answers();
		send_retries(retries);
		send_answers(answers);
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

-- A reload that changed target_address answers what the old target still held.
send_answers((proxy:take_answers()));

function module.save()
	return { held = held };
end

function module.restore(data)
	for seq, stanza in pairs(data.held or {}) do
		held[seq] = stanza;
	end
end

if prosody.start_time then
	subscribe();
else
	module:hook_global("server-started", subscribe);
end

module:log("info", "Proxying %s to %s (native core %s)", host, target, native.version);
