-- `make bench`, part 2: the cost per stanza of the shim + native core in process, against
-- a readdress-only floor, with many requests outstanding. Lua 5.4, Prosody's util.stanza.
--
-- Loaded in the specs' fake Prosody module (spec/helpers/fake_module.lua), module:send a
-- no-op after a first check:
--   shim:   lua/mod_client_proxy.lua (client_proxy.so next to it), one implementing
--           resource online, timeout and caps raised so that nothing expires or is refused;
--   floor:  bench/mod_readdress_floor.lua, the least a proxy does: readdress to a fixed
--           resource, and back to the requester decoded from the resource; no tracking;
--   call floor: the same floor with `readdress_floor_call`: each stanza's head also goes
--           through one call to C and back (`select`), the least any native core adds
--           before it decides anything (for scale: what is left for the module's own work);
--   native: the shim's two decisions as bare proxy.route() calls from Lua (no shim), on a
--           proxy of its own with the same requests outstanding (for scale only).
-- First FILL requests (default 200,000) from distinct requesters are forwarded through
-- the shim (and the native proxy) and never answered. Then, in rounds, each of the three
-- in turn (the order rotating): a batch of BATCH requests from new distinct requesters, forwarded in chunks of 100, each chunk built (not timed)
-- just before its forwards are timed (a stanza reaches the handler fresh from the parser,
-- still in cache); then the replies to the whole batch, built from what was forwarded,
-- in chunks the same way. CPU time (os.clock) summed over the chunks; the collector runs
-- incrementally as it does in Prosody (no full collection between batches: with 200,000
-- held requests one takes longer than a batch), its work charged to what allocates. Outstanding
-- requests stay between FILL and FILL + BATCH. Medians over the rounds, in ns per
-- forward and per reply; the figure that counts is (forward + reply) shim / floor.
--
-- Also the Lua heap an outstanding request costs the shim (collectgarbage("count") before
-- and after the fill, the bench's own references dropped): the payload held for a retry,
-- its slot in the held table; and for scale what one whole stanza of that shape costs
-- alone and as a serialized string.
--
-- Run from the repository root:  lua5.4 bench/shim_bench.lua
-- Environment: CLIENT_PROXY_SO (default ./target/release/libclient_proxy.so),
-- CLIENT_PROXY_SHIM (default lua/mod_client_proxy.lua), SHIM_BENCH_FILL (default 200000),
-- SHIM_BENCH_BATCH (default 5000), SHIM_BENCH_ROUNDS (default 9).

package.path = "/usr/lib/prosody/?.lua;./spec/?.lua;" .. package.path;
package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath;

local st = require "util.stanza";
local util_time = require "util.time";
-- The specs' fake Prosody: the same module API the specs check the shim against.
local fake = require "helpers.fake_module";

local function env_number(name, default)
	local v = tonumber(os.getenv(name) or "");
	if v == nil then return default; end
	return math.floor(v);
end

local FILL = env_number("SHIM_BENCH_FILL", 200000);
local BATCH = math.max(1, env_number("SHIM_BENCH_BATCH", 5000));
local ROUNDS = math.max(1, env_number("SHIM_BENCH_ROUNDS", 9));
local HOST = "proxy.example";
local FLOOR_HOST = "floor.example";
local CALL_FLOOR_HOST = "callfloor.example";
local NATIVE_HOST = "native.example";
local DOMAIN = "example.org";
local TARGET = "service@" .. DOMAIN;
local RESOURCE = TARGET .. "/a";
local NS = "urn:example:client-proxy-bench";
local FLOOR_MODULE = "bench/mod_readdress_floor.lua";
-- SHIM_BENCH_UNTRACKED=1: the shim under test keeps no state in the native core (the
-- original module, given as CLIENT_PROXY_SHIM): its outstanding count is not checked.
local UNTRACKED = os.getenv("SHIM_BENCH_UNTRACKED") == "1";

assert(io.open(fake.SO, "rb"), "native library " .. fake.SO .. " not found: run `make build` first"):close();

-- The users are of this server (as Jitsi's are): no per-domain cap applies.
local prosody_global = { start_time = os.time(), version = "0.12.3", hosts = { [DOMAIN] = {}, [HOST] = {} } };
local big = 10 * (FILL + 2 * BATCH) + 1000;
local options = {
	target_address = TARGET, client_proxy_timeout = 86400, client_proxy_max_pending = big,
	client_proxy_max_pending_per_requester = big, client_proxy_max_pending_per_user = big,
	client_proxy_max_pending_per_domain = big,
};

-- The shim, in the installed layout (client_proxy.so next to it via get_directory()).
local m, loaded, err = fake.load({ host = HOST, options = options, prosody = prosody_global });
assert(loaded, err);
-- Debug logging off, as on a production server (the original logs three debug lines a
-- stanza; the fake module would keep them all).
function m.log() end
local origin = { type = "component", host = HOST };
local shim_handler = assert(fake.handlers(m, "iq/host")[1], "the shim hooks iq/host");
fake.handlers(m, "presence/host")[1]({ stanza = st.presence({ from = RESOURCE, to = HOST }), origin = origin });

-- The floor, in a fake module of its own.
local fm = fake.new({ host = FLOOR_HOST, options = { readdress_floor_targets = { RESOURCE } }, prosody = prosody_global });
fake.run(FLOOR_MODULE, fm);
local floor_handler = assert(fake.handlers(fm, "iq/host")[1], "the floor hooks iq/host");
local cm = fake.new({ host = CALL_FLOOR_HOST, options = { readdress_floor_targets = { RESOURCE }, readdress_floor_call = true },
	prosody = prosody_global });
fake.run(FLOOR_MODULE, cm);
local call_floor_handler = assert(fake.handlers(cm, "iq/host")[1], "the call floor hooks iq/host");
assert(call_floor_handler ~= floor_handler, "the call floor is a handler of its own");

-- Bare native calls on a proxy of their own (the same library: dlopen finds it loaded).
local native = assert(package.loadlib(fake.SO, "luaopen_client_proxy"))();
local native_options = { host = NATIVE_HOST, local_domains = { DOMAIN, NATIVE_HOST } };
for k, v in pairs(options) do native_options[k] = v; end
local proxy = native.open(native_options);
assert(proxy.route("presence", nil, RESOURCE, NATIVE_HOST, nil, util_time.now(), 0, true) == "drop");
proxy:drain();
local route = proxy.route;

local requester_no = 0;
-- n requests from new distinct requesters, as Prosody's parser builds them (with the
-- xml:lang Prosody writes from the client's stream on each stanza), with their event
-- tables; `to` the component.
local function build_requests(n, to, event_origin)
	local events = {};
	for i = 1, n do
		requester_no = requester_no + 1;
		local from = ("u%d@%s/r%d"):format(requester_no, DOMAIN, requester_no % 7);
		events[i] = { origin = event_origin, stanza = st.iq({ type = "get", id = "q" .. requester_no, from = from, to = to, ["xml:lang"] = "en" })
			:tag("query", { xmlns = NS }):up() };
	end
	return events;
end

-- The implementing resource's results to what was forwarded (the forwarded stanzas were
-- readdressed in place: attr.from is the JAT address, attr.id the id it was sent with).
local function build_replies(requests, event_origin)
	local events = {};
	for i = 1, #requests do
		local fwd = requests[i].stanza.attr;
		assert(fwd.to == RESOURCE, "not forwarded to the resource");
		events[i] = { origin = event_origin,
			stanza = st.iq({ type = "result", id = fwd.id, from = RESOURCE, to = fwd.from }) };
	end
	return events;
end

-- Checks the decisions once, with the fake module:send recording copies.
local function check(handler, mod, to)
	mod.sent = {};
	local requests = build_requests(100, to, origin);
	local froms = {};
	for i = 1, #requests do froms[i] = requests[i].stanza.attr.from; handler(requests[i]); end
	local replies = build_replies(requests, origin);
	for i = 1, #replies do handler(replies[i]); end
	local sent = mod.sent;
	assert(#sent == 200, ("%s: sent %d stanzas for 100 pairs"):format(to, #sent));
	for i = 1, 100 do
		local fwd, dlv = sent[i], sent[100 + i];
		assert(fwd.attr.to == RESOURCE and fwd.attr.from == to .. "/" .. froms[i], "forwarded: " .. tostring(fwd));
		assert(dlv.attr.to == froms[i] and dlv.attr.from == to and dlv.attr.type == "result", "delivered: " .. tostring(dlv));
	end
	mod.sent = {};
	mod.send = function () end;
end
check(shim_handler, m, HOST);
check(floor_handler, fm, FLOOR_HOST);
check(call_floor_handler, cm, CALL_FLOOR_HOST);

-- The shim's proxy: native.open of its host gives its state back, reconfigured with the
-- options given (so the same options, or the caps fall back to their defaults).
local shim_options = { host = HOST, local_domains = { DOMAIN, HOST } };
for k, v in pairs(options) do shim_options[k] = v; end
local shim_status = function ()
	if UNTRACKED then return { pending = FILL, requests = { refused = 0 } }; end
	return native.open(shim_options):status();
end;
assert(UNTRACKED or shim_status().pending == 0, "shim: requests left pending after the check");

-- What one stanza of the forwarded shape costs in the Lua heap, as an object and as text.
local function stanza_cost()
	local n = 20000;
	local keep = {};
	collectgarbage("collect"); collectgarbage("collect");
	local before = collectgarbage("count");
	for i = 1, n do
		keep[i] = st.iq({ type = "get", id = "q" .. (1000000 + i), from = HOST .. "/u" .. (1000000 + i) .. "@" .. DOMAIN .. "/r1",
			to = RESOURCE }):tag("query", { xmlns = NS }):up();
	end
	collectgarbage("collect"); collectgarbage("collect");
	local object = (collectgarbage("count") - before) * 1024 / n;
	for i = 1, n do keep[i] = tostring(keep[i]); end
	collectgarbage("collect"); collectgarbage("collect");
	local text = (collectgarbage("count") - before) * 1024 / n;
	local sample = keep[1];
	keep = nil; -- luacheck: ignore
	collectgarbage("collect");
	-- Each `keep` slot is 16 bytes of array part: not the stanza's.
	return object - 16, text - 16, #sample;
end
-- SHIM_BENCH_COST=shim|floor|callfloor: instead of timing, run SHIM_BENCH_PAIRS (default
-- 20000) requests and replies through that handler, each batch of CHUNK inside a
-- coroutine, and exit: bench/callgrind_cost.sh counts what runs inside lua_resume (the
-- handlers, as the timed runs time them) with callgrind's cache model. Counts do not
-- change with the machine's load, as timings do.
-- The fill: `count` requests from distinct requesters through the shim, never answered.
local function fill_shim(count)
	local left = count;
	while left > 0 do
		local n = math.min(left, 10000);
		local requests = build_requests(n, HOST, origin);
		for i = 1, n do shim_handler(requests[i]); end
		left = left - n;
	end
end

local function cost_run(kind)
	fill_shim(FILL);
	local handler = ({ floor = floor_handler, callfloor = call_floor_handler })[kind] or shim_handler;
	local to = ({ floor = FLOOR_HOST, callfloor = CALL_FLOOR_HOST })[kind] or HOST;
	local run = coroutine.wrap(function (events)
		while true do
			for i = 1, #events do handler(events[i]); end
			events = coroutine.yield();
		end
	end);
	local pairs_left = env_number("SHIM_BENCH_PAIRS", 20000);
	while pairs_left > 0 do
		local n, sent = math.min(pairs_left, BATCH), {};
		for first = 1, n, 100 do
			local requests = build_requests(math.min(100, n - first + 1), to, origin);
			run(requests);
			sent[#sent + 1] = requests;
		end
		for c = 1, #sent do
			local replies = build_replies(sent[c], origin);
			sent[c] = nil;
			run(replies);
		end
		pairs_left = pairs_left - n;
	end
	fake.remove_dir(fake.plugin_dir());
	os.exit(0);
end
local cost_kind = os.getenv("SHIM_BENCH_COST");
if cost_kind == "shim" or cost_kind == "floor" or cost_kind == "callfloor" then cost_run(cost_kind); end

local stanza_object, stanza_text, text_length = stanza_cost();

-- The fill, measured: the Lua heap it takes, and the time.
local clock = os.clock;
collectgarbage("collect"); collectgarbage("collect");
local heap_before = collectgarbage("count");
local fill_started = clock();
fill_shim(FILL);
collectgarbage("collect"); collectgarbage("collect");
local heap_per_request = (collectgarbage("count") - heap_before) * 1024 / math.max(FILL, 1);
local fill_seconds = clock() - fill_started;
do local s = shim_status(); assert(s.pending == FILL, ("shim: %d of the fill outstanding; refused %d; %s"):format(s.pending, s.requests.refused, tostring(s.text))); end
do
	local now = util_time.now();
	local left = FILL;
	while left > 0 do
		local n = math.min(left, 10000);
		local requests = build_requests(n, NATIVE_HOST, origin);
		for i = 1, n do
			local a = requests[i].stanza.attr;
			assert(route("iq", "get", a.from, NATIVE_HOST, a.id, now) == "send");
		end
		left = left - n;
	end
	assert(proxy:status().pending == FILL, "native: the fill is not all outstanding");
end

-- One timed batch of each kind: returns seconds for the forwards and for the replies.
-- Timed in chunks of CHUNK stanzas built just before (as Prosody's parser hands a
-- stanza it has just built, still in cache, to the handler); the replies come after the
-- whole batch was forwarded.
local CHUNK = 100;
local function handler_batch(handler, to)
	return function (n)
		local forwarded, forwards, replies = {}, 0, 0;
		for first = 1, n, CHUNK do
			local requests = build_requests(math.min(CHUNK, n - first + 1), to, origin);
			local t0 = clock();
			for i = 1, #requests do handler(requests[i]); end
			forwards = forwards + (clock() - t0);
			forwarded[#forwarded + 1] = requests;
		end
		for c = 1, #forwarded do
			local answers = build_replies(forwarded[c], origin);
			forwarded[c] = nil;
			local t0 = clock();
			for i = 1, #answers do handler(answers[i]); end
			replies = replies + (clock() - t0);
		end
		return forwards, replies;
	end
end

local native_jat = NATIVE_HOST .. "/";
local function native_batch(n)
	local now = util_time.now();
	local sent, forwards, replies = {}, 0, 0;
	for first = 1, n, CHUNK do
		local requests = build_requests(math.min(CHUNK, n - first + 1), NATIVE_HOST, origin);
		local froms, ids = {}, {};
		for i = 1, #requests do
			local a = requests[i].stanza.attr;
			froms[i], ids[i] = a.from, a.id;
		end
		local t0 = clock();
		for i = 1, #froms do
			local verdict = route("iq", "get", froms[i], NATIVE_HOST, ids[i], now);
			if verdict ~= "send" then error("native forward: " .. tostring(verdict)); end
		end
		forwards = forwards + (clock() - t0);
		sent[#sent + 1] = { froms, ids };
	end
	for c = 1, #sent do
		local froms, ids = sent[c][1], sent[c][2];
		sent[c] = nil;
		local jats = {};
		for i = 1, #froms do jats[i] = native_jat .. froms[i]; end
		local t0 = clock();
		for i = 1, #froms do
			local verdict = route("iq", "result", RESOURCE, jats[i], ids[i], now);
			if verdict ~= "send" then error("native reply: " .. tostring(verdict)); end
		end
		replies = replies + (clock() - t0);
	end
	return forwards, replies;
end

local kinds = {
	{ name = "shim", run = handler_batch(shim_handler, HOST) },
	{ name = "floor", run = handler_batch(floor_handler, FLOOR_HOST) },
	{ name = "callfloor", run = handler_batch(call_floor_handler, CALL_FLOOR_HOST) },
	{ name = "native", run = native_batch },
};
for _, k in ipairs(kinds) do k.run(math.min(BATCH, 2000)); k.forward, k.reply = {}, {}; end -- warm-up

for round = 1, ROUNDS do
	for j = 0, #kinds - 1 do
		local k = kinds[(round + j - 1) % #kinds + 1];
		local f, r = k.run(BATCH);
		table.insert(k.forward, f / BATCH * 1e9);
		table.insert(k.reply, r / BATCH * 1e9);
	end
end

local s = shim_status();
assert(s.pending == FILL, ("shim: %d outstanding at the end, expected %d"):format(s.pending, FILL));
assert(proxy:status().pending == FILL, "native: outstanding requests changed");

local function median(list)
	local sorted = {};
	for i, v in ipairs(list) do sorted[i] = v; end
	table.sort(sorted);
	local n = #sorted;
	if n % 2 == 1 then return sorted[(n + 1) / 2]; end
	return (sorted[n / 2] + sorted[n / 2 + 1]) / 2;
end
local function range(list)
	local lo, hi = math.huge, -math.huge;
	for _, v in ipairs(list) do lo, hi = math.min(lo, v), math.max(hi, v); end
	return ("%.0f-%.0f"):format(lo, hi);
end

local med = {};
for _, k in ipairs(kinds) do
	med[k.name] = { forward = median(k.forward), reply = median(k.reply) };
	med[k.name].pair = med[k.name].forward + med[k.name].reply;
end
local ratio = med.shim.pair / med.floor.pair;

print(("In process (%s, Prosody's util.stanza, the specs' fake module; CPU time): %d requests outstanding (from distinct requesters), then %d rounds x {shim, floor, call floor, native} x %d forwards + their replies"):format(
	_VERSION, FILL, ROUNDS, BATCH));
print(("fill: %d requests through the shim in %.2f s\n"):format(FILL, fill_seconds));
print(("%-44s %12s %12s %12s %14s %14s"):format("median over rounds, ns", "forward", "reply", "pair", "forward range", "reply range"));
local labels = {
	shim = "shim + core (lua/mod_client_proxy.lua)",
	floor = "floor (bench/mod_readdress_floor.lua)",
	callfloor = "  call floor: floor + one call to C",
	native = "  bare proxy.route() x2 from Lua",
};
for _, k in ipairs(kinds) do
	local x = med[k.name];
	print(("%-44s %12.0f %12.0f %12.0f %14s %14s"):format(labels[k.name], x.forward, x.reply, x.pair, range(k.forward), range(k.reply)));
end
print(("\n(forward + reply) shim / floor: %.2fx; forward %.2fx, reply %.2fx"):format(
	ratio, med.shim.forward / med.floor.forward, med.shim.reply / med.floor.reply));
local call_ratio = med.callfloor.pair / med.floor.pair;
print(("call floor / floor: %.2fx: a call to C per stanza, doing nothing"):format(call_ratio));
print(("Lua heap per outstanding request (shim): %.0f bytes; one stanza of that shape alone: %.0f bytes as util.stanza, %.0f bytes as its %d-byte serialization"):format(
	heap_per_request, stanza_object, stanza_text, text_length));
print(("\nSUMMARY shim_bench: ns per forward/reply with %d outstanding: shim %.0f/%.0f, floor %.0f/%.0f, bare route() %.0f/%.0f; (forward+reply) shim/floor %.2fx, call floor/floor %.2fx; Lua heap per outstanding request %.0f B (a whole stanza of that shape %.0f B)"):format(
	FILL, med.shim.forward, med.shim.reply, med.floor.forward, med.floor.reply, med.native.forward, med.native.reply,
	ratio, call_ratio, heap_per_request, stanza_object));
-- For bench/run.sh: the ratio, then ns per forward and reply, shim and floor, the heap,
-- the call floor's ratio.
print(("RATIO shim %.4f %.0f %.0f %.0f %.0f %.0f %.4f"):format(ratio, med.shim.forward, med.shim.reply, med.floor.forward,
	med.floor.reply, heap_per_request, call_ratio));

fake.remove_dir(fake.plugin_dir());
