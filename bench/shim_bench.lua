-- `make bench`, part 2: per-stanza cost of the Prosody shim + native core, in Lua 5.4,
-- with Prosody's real util.stanza objects.
--
-- The shim (lua/mod_client_proxy.lua) is loaded in the specs' fake Prosody module
-- (spec/helpers/fake_module.lua), whose get_directory() is a temp dir with
-- client_proxy.so in it. One target resource is online. Then, in batches:
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
-- CLIENT_PROXY_SHIM (default lua/mod_client_proxy.lua), SHIM_BENCH_PAIRS (default 200000).

package.path = "/usr/lib/prosody/?.lua;./spec/?.lua;" .. package.path;
package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath;

local st = require "util.stanza";
local util_time = require "util.time";
-- The specs' fake Prosody: the same module API the specs check the shim against.
local fake = require "helpers.fake_module";

local PAIRS = tonumber(arg and arg[1] or os.getenv("SHIM_BENCH_PAIRS") or "") or 200000;
local BATCH = 10000;
local HOST = "proxy.example";
local NATIVE_HOST = "native.example";
local TARGET = "service@example.org";
local RESOURCE = TARGET .. "/a";
local USER = "user@example.org/abc";
local NS = "urn:example:client-proxy-bench";

assert(io.open(fake.SO, "rb"), "native library " .. fake.SO .. " not found: run `make build` first"):close();

-- The installed layout: client_proxy.so next to the shim, found via get_directory()
-- (fake.plugin_dir(), a temp dir with a link to CLIENT_PROXY_SO).
local m, loaded, err = fake.load({ host = HOST, options = { target_address = TARGET } });
assert(loaded, err);
local on_host, on_full = fake.handlers(m, "iq/host")[1], fake.handlers(m, "iq/full")[1];
local origin = { type = "component", host = HOST };
on_full, on_host = assert(on_full), assert(on_host);
fake.handlers(m, "presence/host")[1]({ stanza = st.presence({ from = RESOURCE, to = HOST }), origin = origin });

local native = assert(package.loadlib(fake.SO, "luaopen_client_proxy"))();
local proxy = native.open({ host = NATIVE_HOST, target_address = TARGET });
assert(proxy:route("presence", nil, RESOURCE, NATIVE_HOST, nil, util_time.now(), 0, true) == "drop");
proxy:drain();

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

-- Checks the shim's decisions once (the fake module:send records copies), then makes
-- module:send a no-op.
do
	m.sent = {};
	local sent = m.sent;
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
	assert(proxy:status().pending == 0);
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
		if a ~= "send" or b ~= "send" then
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

assert(proxy:status().pending == 0, "native: requests left pending");
-- The shim's proxy: the same library (dlopen finds the one already loaded), so the same
-- per-host state.
local shim_status = native.open({ host = HOST, target_address = TARGET }):status();
assert(shim_status.pending == 0, "shim: requests left pending");
assert(shim_status.requests.delivered == shim_status.requests.forwarded
	and shim_status.requests.delivered >= PAIRS, "shim: not every request was forwarded and delivered");

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

fake.remove_dir(fake.plugin_dir());
