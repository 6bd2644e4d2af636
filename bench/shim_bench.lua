-- `make bench`, part 2: per-stanza cost of the Prosody shim + native core, in Lua 5.4,
-- with Prosody's real util.stanza objects.
--
-- The shim (lua/mod_client_proxy.lua) is loaded as spec/shim_spec.lua does it: loadfile
-- with an environment holding a minimal fake `module` whose get_directory() is a temp
-- dir with client_proxy.so in it. One target resource is online. Then, in batches:
--   shim:   an iq get from a user through the recorded iq/host handler (forwarded), and
--           the implementing resource's result through the iq/full handler (delivered);
--           module:send is a no-op.
--   native: the same two decisions as bare proxy:route() calls from Lua, no shim.
-- Stanzas and event tables are built before each timed batch (Prosody's parser builds
-- them in a server); that building is timed separately, for scale. CPU time (os.clock),
-- full garbage collection before each batch, so the garbage a batch makes is paid
-- inside it.
--
-- Run from the repository root:  lua5.4 bench/shim_bench.lua [pairs]
-- Environment: CLIENT_PROXY_SO (default ./target/release/libclient_proxy.so),
-- CLIENT_PROXY_LUA (default lua/mod_client_proxy.lua), SHIM_BENCH_PAIRS (default 200000).

package.path = "/usr/lib/prosody/?.lua;" .. package.path;
package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath;

local st = require "util.stanza";
local util_time = require "util.time";

local PAIRS = tonumber(arg and arg[1] or os.getenv("SHIM_BENCH_PAIRS") or "") or 200000;
local BATCH = 10000;
local HOST = "proxy.example";
local NATIVE_HOST = "native.example";
local TARGET = "service@example.org";
local RESOURCE = TARGET .. "/a";
local USER = "user@example.org/abc";
local NS = "urn:example:client-proxy-bench";

local function env_or(name, default)
	local v = os.getenv(name);
	if v == nil or v == "" then return default; end
	return v;
end

local function read_line(command)
	local p = assert(io.popen(command));
	local line = p:read("l");
	p:close();
	return line;
end

local function sh_quote(s)
	return "'" .. s:gsub("'", "'\\''") .. "'";
end

local SO = env_or("CLIENT_PROXY_SO", "./target/release/libclient_proxy.so");
if SO:sub(1, 1) ~= "/" then
	SO = read_line("pwd") .. "/" .. SO:gsub("^%./", "");
end
local SHIM = env_or("CLIENT_PROXY_LUA", "lua/mod_client_proxy.lua");
assert(io.open(SO, "rb"), "native library " .. SO .. " not found: run `make build` first"):close();

-- The installed layout: client_proxy.so next to the shim, found via get_directory().
local plugin_dir = read_line("mktemp -d");
assert(plugin_dir and plugin_dir:match("^/tmp/"), "mktemp -d failed");
assert(os.execute("ln -s " .. sh_quote(SO) .. " " .. sh_quote(plugin_dir .. "/client_proxy.so")));

-- The least of Prosody's module API the shim uses while loading and routing.
local function fake_module(host, options)
	local noop = function () end;
	local metric = { set = noop, add = noop };
	local family = { with_labels = function () return metric; end };
	local m = { host = host, name = "client_proxy", handlers = {}, timers = {} };
	function m:get_host_type() return "component"; end
	function m:get_directory() return plugin_dir; end
	function m:get_option_scalar(name) return options[name]; end
	function m:get_option_string(name) local v = options[name]; return v ~= nil and tostring(v) or nil; end
	function m:get_option_number(name) return tonumber(options[name]); end
	function m:get_option_boolean(name, default) local v = options[name]; if v == nil then return default; end return v; end
	function m:get_option_array(name) return options[name]; end
	function m:open_store() return { get = function () return nil; end, set = function () return true; end }; end
	function m:hook(event, handler) self.handlers[event] = handler; end
	function m:hook_global() end
	function m:metric() return family; end
	function m:shared() return {}; end
	function m:add_item() end
	function m:set_status() end
	function m:add_timer(delay, f) table.insert(self.timers, f); end
	function m:log() end
	m.send = noop;
	return m;
end

local function load_shim()
	local m = fake_module(HOST, { target_address = TARGET });
	local env = setmetatable({ module = m, prosody = { start_time = os.time(), version = "0.12.3" } }, { __index = _G });
	local chunk = assert(loadfile(SHIM, "t", env));
	chunk();
	return m;
end

local m = load_shim();
local on_host, on_full = assert(m.handlers["iq/host"]), assert(m.handlers["iq/full"]);
local origin = { type = "component", host = HOST };
m.handlers["presence/host"]({ stanza = st.presence({ from = RESOURCE, to = HOST }), origin = origin });

local native = assert(package.loadlib(SO, "luaopen_client_proxy"))();
local proxy = native.new_proxy({ host = NATIVE_HOST, target = TARGET });
assert(proxy:route("presence", nil, RESOURCE, NATIVE_HOST, nil, util_time.now(), 0, true) == "consumed");

local batch_no = 0;
-- Builds one batch: request and reply stanzas, their event tables, and the ids.
local function build(n)
	batch_no = batch_no + 1;
	local prefix = ("b%d-"):format(batch_no);
	local requests, replies, ids = {}, {}, {};
	local jat_address = HOST .. "/" .. USER;
	for i = 1, n do
		local id = prefix .. i;
		ids[i] = id;
		requests[i] = { origin = origin, stanza = st.iq({ type = "get", id = id, from = USER, to = HOST })
			:tag("query", { xmlns = NS }):up() };
		replies[i] = { origin = origin, stanza = st.iq({ type = "result", id = id, from = RESOURCE, to = jat_address }) };
	end
	return requests, replies, ids;
end

-- Checks the shim's decisions once (module:send records), then makes it a no-op again.
do
	local sent = {};
	m.send = function (_, s) sent[#sent + 1] = s; end;
	local requests, replies = build(100);
	for i = 1, 100 do
		on_host(requests[i]);
		on_full(replies[i]);
	end
	assert(#sent == 200, "the shim sent " .. #sent .. " stanzas for 100 pairs");
	for i = 1, 200, 2 do
		local fwd, dlv = sent[i], sent[i + 1];
		assert(fwd.attr.to == RESOURCE and fwd.attr.from == HOST .. "/" .. USER, "forwarded: " .. tostring(fwd));
		assert(dlv.attr.to == USER and dlv.attr.from == HOST and dlv.attr.type == "result", "delivered: " .. tostring(dlv));
	end
	m.send = function () end;
	local _, pending = proxy:health();
	assert(pending == 0);
end

local clock = os.clock;
local route = proxy.route;
local native_jat = NATIVE_HOST .. "/" .. USER;

local function shim_batch(n)
	local requests, replies = build(n);
	collectgarbage("collect");
	local t0 = clock();
	for i = 1, n do
		on_host(requests[i]);
		on_full(replies[i]);
	end
	return clock() - t0;
end

local function native_batch(n)
	local _, _, ids = build(n);
	collectgarbage("collect");
	local t0 = clock();
	local now = util_time.now();
	for i = 1, n do
		local id = ids[i];
		local a = route(proxy, "iq", "get", USER, NATIVE_HOST, id, now);
		local b = route(proxy, "iq", "result", RESOURCE, native_jat, id, now);
		if a ~= "forward" or b ~= "deliver" then
			error(("native route: %s, %s"):format(tostring(a), tostring(b)));
		end
	end
	return clock() - t0;
end

local function build_batch(n)
	collectgarbage("collect");
	local t0 = clock();
	build(n);
	return clock() - t0;
end

-- Warm-up, then the batches in turn (shim, native, build), so that a slow spell of the
-- machine spreads over all three.
shim_batch(BATCH); native_batch(BATCH); build_batch(BATCH);
local totals = { shim = 0, native = 0, build = 0 };
local per_batch = { shim = {}, native = {}, build = {} };
local done = 0;
while done < PAIRS do
	local n = math.min(BATCH, PAIRS - done);
	for name, f in pairs({ shim = shim_batch, native = native_batch, build = build_batch }) do
		local t = f(n);
		totals[name] = totals[name] + t;
		table.insert(per_batch[name], t / n * 1e6);
	end
	done = done + n;
end

local _, pending = proxy:health();
assert(pending == 0, "native: requests left pending");
-- The shim's proxy: the same library (dlopen finds the one already loaded), so the same
-- per-host state.
local shim_status = native.new_proxy({ host = HOST, target = TARGET }):status();
assert(shim_status.pending == 0, "shim: requests left pending");
assert(shim_status.counters.delivered == shim_status.counters.forwarded
	and shim_status.counters.delivered >= PAIRS, "shim: not every request was forwarded and delivered");

local function median(list)
	table.sort(list);
	local n = #list;
	if n % 2 == 1 then return list[(n + 1) / 2]; end
	return (list[n / 2] + list[n / 2 + 1]) / 2;
end

local us = {};
for name, total in pairs(totals) do us[name] = total / PAIRS * 1e6; end
local med = {};
for name, list in pairs(per_batch) do med[name] = median(list); end

print(("Shim + native per stanza (%s, Prosody's util.stanza, CPU time): %d request+reply pairs in batches of %d"):format(_VERSION, PAIRS, BATCH));
print("one target resource online; iq get through the iq/host handler, result through iq/full; module:send a no-op\n");
print(("%-58s %12s %14s"):format("", "us per pair", "median batch"));
print(("%-58s %12.2f %14.2f"):format("shim handler (util.stanza in, readdressed stanza out)", us.shim, med.shim));
print(("%-58s %12.2f %14.2f"):format("bare native proxy:route() x2 from Lua (no shim)", us.native, med.native));
print(("%-58s %12.2f %14.2f"):format("  shim's own share (difference)", us.shim - us.native, med.shim - med.native));
print(("%-58s %12.2f %14.2f"):format("for scale: building the two stanzas + event tables", us.build, med.build));
print(("\nnative route() is %.0f%% of the shim path; %.0f request+reply pairs/s per core through the shim"):format(
	us.native / us.shim * 100, 1e6 / us.shim));
print(("\nSUMMARY shim_bench: %.2f us per request+reply pair through the shim, %.2f us of it in bare native route() calls (%.0f%%), shim's own %.2f us"):format(
	us.shim, us.native, us.native / us.shim * 100, us.shim - us.native));

os.execute("rm -rf " .. sh_quote(plugin_dir));
