-- mod_client_proxy: requests to this component are answered by an online resource of an
-- ordinary client account (the "implementing client"). The native core (client_proxy.so)
-- decides; this shim applies its verdicts and does the I/O (the boundary: docs/INTERNALS.md).

if module:get_host_type() ~= "component" then
	error("mod_client_proxy must be loaded as a component, e.g. Component \"proxy.example\" \"client_proxy\"", 0);
end

-- The native interface this shim is written for. A module reload keeps the library the
-- process loaded first (dlopen): a shim and a core that do not match refuse to run.
local INTERFACE = 3;
local native, native_path = module:require "native";
if native.interface ~= INTERFACE then
	error(("client_proxy.so %s does not match this mod_client_proxy.lua (interface %s, expected %d): a module reload keeps the library loaded at start; restart Prosody")
		:format(tostring(native.version or "?"), tostring(native.interface), INTERFACE), 0);
end
local compat = module:require "compat";
local outbox = module:require "outbox";
local resources = module:require "resources";
local affinity = module:require "affinity";
local add_shell_host = module:require "shell";
local watch_hibernation = module:require "hibernation";
local keep_subscription = module:require "roster";

local host = module.host;
local hold, release, send_error = outbox.hold, outbox.release, outbox.send_error;
local is_eligible = resources.is_eligible;

local function keys(t)
	local list = {};
	for k in pairs(t or {}) do list[#list + 1] = k; end
	return list;
end

local function loaded(ok, result) -- a failure at load is a load error, the core's first line
	if not ok then error(outbox.first_line(result), 0); end
	return result;
end

-- The options, one per entry of native.options, as the config gives them: the core checks
-- them (naming the option), and knows their allowed values and defaults. The options that
-- decide which resources are eligible stay here (resources.lib.lua).
local options = { host = host, subscribers = outbox.subscribers(), local_domains = keys(prosody.hosts) };
for _, option in ipairs(native.options) do
	if not resources.options[option.name] then options[option.name] = compat.option(option); end
end
local proxy = loaded(pcall(native.open, options));
local status = loaded(pcall(proxy.status, proxy));
local affinity_key = affinity.matcher(loaded(pcall(proxy.affinity_rules, proxy))); -- nil: no rules

-- Statistics: the core counts; copied at each collection, by the names the core gives them.
local requests = module:metric("counter", "requests", "", "Requests by what became of them", { "outcome" });
local ejections = module:metric("counter", "ejections", "", "Resources taken out of rotation", {});
local eligible_resources = module:metric("gauge", "eligible_resources", "", "Eligible implementing resources online", {});
local ejected_resources = module:metric("gauge", "ejected_resources", "", "Eligible resources out of rotation", {});
local pending = module:metric("gauge", "pending", "", "Requests waiting for their answer", {});
local messages = module:metric("counter", "messages", "", "Messages proxied", { "direction" });
local affinity_keys = module:metric("gauge", "affinity_keys", "", "Affinity keys remembered", {});
local affinity_moves = module:metric("counter", "affinity_moves", "", "Affinity keys given another resource", {});

local function update_metrics()
	local ok, s = pcall(proxy.status, proxy);
	if not ok then return; end
	for outcome, n in pairs(s.requests) do requests:with_labels(outcome):set(n); end
	for direction, n in pairs(s.messages) do messages:with_labels(direction):set(n); end
	ejections:with_labels():set(s.ejections);
	eligible_resources:with_labels():set(s.eligible);
	ejected_resources:with_labels():set(s.ejected);
	pending:with_labels():set(s.pending);
	affinity_keys:with_labels():set(s.keys);
	affinity_moves:with_labels():set(s.moves);
end

local route = proxy.route; -- a closure over the proxy; now nil: the core's clock
local function handle_stanza(event)
	local stanza = event.stanza;
	local attr, name = stanza.attr, stanza.name;
	local stanza_type = attr.type;
	local priority, eligible, condition, rule, key;
	if name == "presence" then
		priority, eligible = tonumber(stanza:get_child_text("priority")), is_eligible(stanza);
	elseif stanza_type == "error" then
		condition = select(2, stanza:get_error()); -- a decline?
	elseif affinity_key and (stanza_type == "get" or stanza_type == "set") and name == "iq" then
		rule, key = affinity_key(stanza);
	end
	-- route never raises (a failure is the verdict "fail"): no pcall on the hot path.
	local verdict, a, b, c, d, e = route(name, stanza_type, attr.from, attr.to, attr.id, nil,
		priority, eligible, condition, attr["xml:lang"], rule, key);
	if verdict == "send" then -- to, from, id, hold, release
		attr.to, attr.from = a, b;
		if c ~= nil then attr.id = c; end
		if d ~= nil then hold(d, stanza); end
		if e ~= nil then release(e); end
		module:send(stanza);
	elseif verdict == "drop" then -- reason, drain
		module:log("debug", "Dropped %s/%s from %s: %s", name, stanza_type or "normal", tostring(attr.from), tostring(a));
		if b then outbox.send(proxy, "drain"); end
	elseif verdict == "error" then -- type, condition, text (never for a stanza of type error)
		send_error(stanza, a, b, c);
	else -- "fail", message: the core failed; a get/set still gets its one answer
		module:log("error", "Native core failed on %s from %s: %s", name, tostring(attr.from), tostring(a or verdict));
		if name == "iq" and (stanza_type == "get" or stanza_type == "set") then
			local err = native.INTERNAL_ERROR;
			send_error(stanza, err.type, err.condition, err.text);
		end
		outbox.send(proxy, "drain"); -- what the core owes for a request it could not hand over
	end
	return true;
end

local function tick()
	outbox.send(proxy, "tick", native.now());
	return 1;
end

local function set_local_domains() -- the per-domain cap spares this server's hosts
	outbox.call(proxy, "set_local_domains", keys(prosody.hosts));
end

local remove_shell_host = add_shell_host(host, function () return proxy:status(), native.now(); end);

function module.save() return outbox.save(); end

-- After a reload: the held requests, then what the core owes (which may release them).
function module.restore(data)
	outbox.restore(data);
	outbox.send(proxy, "drain");
end

function module.unload()
	remove_shell_host();
	if not module.reloading then pcall(native.close, host); end
end

for _, event in ipairs({ "iq/host", "iq/bare", "iq/full", "message/host", "message/bare", "message/full",
		"presence/host", "presence/bare", "presence/full" }) do
	module:hook(event, handle_stanza, -1);
end
module:add_timer(1, tick);
module:hook_global("stats-update", update_metrics);
module:hook_global("server-stopping", function () outbox.send(proxy, "stopping"); end);
module:hook_global("host-activated", set_local_domains);
module:hook_global("host-deactivated", set_local_domains);
-- Stream management on the target's host, when it is a host of this server.
watch_hibernation(status.target, function (method, resource) outbox.send(proxy, method, resource); end);

-- Ask for the target's presence once the server has started (its host may not be active
-- at load); with client_proxy_manage_roster, keep the component on its roster (roster.lib.lua).
keep_subscription(status.target, status.manage_roster == true);

if not module.reloading then outbox.send(proxy, "drain"); end -- the status first; a reload drains in restore
module:log("info", "Proxying %s to %s (native core %s, %s)", host, status.target, native.version, native_path);
