-- Hostile Lua against the native library's binding (issue #22, "A sound binding"): every
-- export and method with wrong types, missing and extra arguments (to 8,000), 1 MB, NUL and
-- invalid UTF-8 strings; finalizers that re-enter the library and that raise while route,
-- status, drain and tick run; route after close and after its proxy is collected and
-- resurrected; debug.setupvalue on route's upvalues.
--
-- The contract (docs/INTERNALS.md, "The boundary"):
--   * route(name, type, from, to, id, now, priority, eligible, condition, lang), a C closure,
--     NEVER raises: it answers a verdict ("send", "error", "drop") or "fail", message, where
--     a bad argument type gives "fail" and a one-line message naming the argument;
--   * every other export and method either returns or raises a clean Lua error (a one-line
--     string); none crashes or aborts the process.
--   * a route closure whose upvalues were replaced (debug.setupvalue) returns nil
--     (docs/INTERNALS.md), or a verdict or "fail" when the value put there is of the right
--     kind: never a raise, never a crash.
-- A crash here kills busted: run the suite under valgrind memcheck too (make test-memcheck).
--
-- Runs under every Lua of the matrix (5.4, 5.3, 5.2, 5.1, LuaJIT) against the library built
-- for it (CLIENT_PROXY_SO). Each test uses hosts of its own (support.host_namer).
--
-- What is not the binding's, and so not asserted (see each place):
--   * Lua 5.1 and LuaJIT: finalizers that re-enter the library's mlua-based functions while
--     an mlua-based call runs can crash, in mlua 0.12.2 itself (every protected call keeps
--     its two C functions in two registry slots shared by all calls; a finalizer run by
--     the GC check at the end of that lua_cpcall re-enters mlua and overwrites them):
--     those tests are pending there. Finalizers that call route (no mlua) stay tested.
--   * Lua 5.1 runs a GC check after a C function called by lua_pcall has returned (at the
--     end of luaD_call): pcall(route, ...) can return false with a finalizer's error that
--     route never raised. So route is called from a Lua function that keeps its results
--     before anything else runs (call_route): route returned iff they were kept. A
--     finalizer may also raise in the call machinery before route is entered (5.3 and
--     5.4: a GC check when the stack grows for a C call): the finalizers note whether
--     route was on the stack when they raised.
--   * Lua 5.1 and LuaJIT: about 8,000 arguments to an mlua-based function raise "stack
--     overflow", a clean error (the shim pcalls those); route itself must still answer.
--   * LuaJIT 2.1.0-beta3 (Debian's) crashes when a __gc metamethod raises during a GC step
--     inside any C function called from JIT-compiled code (reproduced with a 10-line C
--     module, not with `luajit -joff`): the raising-finalizer tests run with the JIT off.
--   * The proxy object's own __gc (mlua's userdata metatable) called by hand: mlua's
--     internals (a double free in mlua 0.12.2), not tested; the debug library can break
--     any C module's objects. route's own anchor's finalizer is tested.

local support = require "support";
local gc = require "helpers.gc_window";

local SO = os.getenv("CLIENT_PROXY_SO");
if SO == nil or SO == "" then SO = "./target/release/libclient_proxy.so"; end
local native = assert(package.loadlib(SO, "luaopen_client_proxy"))();

local unpack = table.unpack or unpack;
local pack = table.pack or function (...) return { n = select("#", ...), ... }; end
local IS_JIT = rawget(_G, "jit") ~= nil;
-- Lua 5.1 and LuaJIT: mlua 0.12.2's protected calls share two registry slots (see above).
local MLUA_REENTRY_UNSAFE = _VERSION == "Lua 5.1" or IS_JIT;
local MLUA_REENTRY_REASON = "mlua 0.12.2 on Lua 5.1/LuaJIT: a finalizer re-entering mlua during an mlua call "
	.. "overwrites the registry slots of the outer call's protected functions (src/util/error.rs)";
local fresh_host = support.host_namer("hostile", "test");

local T, R = "service@example.org", "user@example.org/abc";
local VERDICT = { send = true, error = true, drop = true, fail = true };
local ARG_NAMES = { "name", "type", "from", "to", "id", "now", "priority", "eligible", "condition", "lang" };
local STRING_ARGS = { 1, 2, 3, 4, 5, 9, 10 };

local NUL = "a\0b@example.org/\0";
local BAD_UTF8 = "\255\254\192\128\237\160\128\244\144\128\128"; -- not UTF-8: lone bytes, overlong, surrogate, > U+10FFFF
local BIG = ("x"):rep(1048576); -- 1 MB
local BIG_ODD = ("a\0\255@/"):rep(209715); -- 1 MB of NUL, invalid UTF-8 and address separators
local ODD_STRINGS = { "", NUL, BAD_UTF8, BIG, BIG_ODD };

-- Values of every type, for arguments that expect something else.
local function values_of_every_type(p)
	return { false, true, 0, -1, 0.5, 0 / 0, 1 / 0, -1 / 0, 2 ^ 63, "", NUL, BAD_UTF8, BIG, {}, print,
		coroutine.create(function () end), io.stdout, p };
end

local function open_host(options)
	options = options or {};
	options.host = options.host or fresh_host();
	if options.target_address == nil then options.target_address = T; end
	local p = native.open(options);
	return p, options.host, p.route;
end

-- A value for a message (never its __tostring, which may raise).
local function show(v)
	if type(v) == "string" then
		if #v > 60 then return ("%q"):format(v:sub(1, 40)) .. ("...(%d bytes)"):format(#v); end
		return ("%q"):format(v);
	end
	if type(v) == "table" or type(v) == "userdata" then
		local mt = debug.getmetatable(v);
		if mt and mt.__tostring then return "a " .. type(v) .. " with __tostring"; end
	end
	return tostring(v);
end

-- An error value as text: its __tostring when it has one that works (mlua's errors are
-- userdata), else show.
local function error_text(err)
	local ok, text = pcall(tostring, err);
	if ok and type(text) == "string" then return text; end
	return show(err);
end

local function show_args(args, n)
	local out = {};
	for i = 1, math.min(n, 12) do out[i] = show(args[i]); end
	if n > 12 then out[#out + 1] = ("...(%d arguments)"):format(n); end
	return table.concat(out, ", ");
end

-- A clean error: a string, or a value whose tostring is one (mlua raises userdata), with
-- a first line that says something (what the shim logs: mlua appends a traceback) and no
-- Rust panic.
local function unclean(err)
	local ok, text = pcall(tostring, err);
	if not ok or type(text) ~= "string" then return "tostring fails on it: " .. show(err); end
	if not text:match("^[^\n]*%w") then return "an empty first line: " .. show(text:sub(1, 300)); end
	if text:find("panicked") then return "a Rust panic: " .. show(text); end
	return nil;
end

-- route called from a Lua function that keeps its results in upvalues before anything
-- else runs (assignments allocate nothing): `got` is true iff route returned. pcall may
-- still return false after that (Lua 5.1's GC check at the end of luaD_call runs
-- finalizers once the call has returned): that error is not route's. Returns
-- got, ok, err and route's first four results; allocates nothing after the call (for
-- gc.window). Finalizers must not use it (they call pcall(route, ...)).
local target, got, g1, g2, g3, g4, g5, g6, g7;
local function invoke(...)
	g1, g2, g3, g4, g5, g6, g7 = target(...);
	got = true;
end
local function call_route(route, ...)
	target, got, g1, g2, g3, g4, g5, g6, g7 = route, false, nil, nil, nil, nil, nil, nil, nil;
	local ok, err = pcall(invoke, ...);
	return got, ok, err, g1, g2, g3, g4;
end

-- route checked against its contract: it returns (never raises), a verdict. With
-- `tampered` (its upvalues replaced), nil is an answer too, and so is any string: the
-- verdicts' names are upvalues, a string put there is answered as one. Returns route's
-- results (up to 7), or nil after adding to problems.
local function check_route(problems, what, tampered, route, ...)
	local returned, _, err = call_route(route, ...);
	local r = { n = 7, g1, g2, g3, g4, g5, g6, g7 };
	if not returned then
		problems[#problems + 1] = what .. ": route raised " .. show(error_text(err));
		return nil;
	end
	if tampered and (r[1] == nil or type(r[1]) == "string") then return nil; end
	if not VERDICT[r[1]] then
		problems[#problems + 1] = what .. ": not a verdict: " .. show(r[1]);
		return nil;
	end
	if r[1] == "fail" and type(r[2]) ~= "string" then
		problems[#problems + 1] = what .. ": fail without a message: " .. show(r[2]);
	end
	return r;
end

local function routed(problems, what, route, ...)
	return check_route(problems, what, false, route, ...);
end

-- A call of another export or method: it returns, or raises a clean error.
local function returns_or_raises(problems, what, f, ...)
	local r = pack(pcall(f, ...));
	if not r[1] then
		local bad = unclean(r[2]);
		if bad then problems[#problems + 1] = what .. ": raised an unclean error: " .. bad; end
	end
	return r;
end

-- The host routes: a resource comes online, a get goes to it.
local trips = 0;
local function round_trip(problems, what, route, host)
	trips = trips + 1;
	local res, asker = "ok" .. trips, ("asker%d@example.org/abc"):format(trips);
	local on = routed(problems, what .. " (presence)", route, "presence", nil, T .. "/" .. res, host, nil, 0);
	local fwd = routed(problems, what .. " (get)", route, "iq", "get", asker, host, "id" .. trips, 0);
	if on and on[1] ~= "drop" then problems[#problems + 1] = what .. ": presence: " .. show(on[1]) .. " " .. show(on[2]); end
	if fwd and fwd[1] ~= "send" then problems[#problems + 1] = what .. ": get: " .. show(fwd[1]) .. " " .. show(fwd[2]); end
	return fwd;
end

-- Ordinary arguments of a get.
local function get_args(host, id)
	return { "iq", "get", R, host, id or "g1", 0, nil, nil, nil, nil };
end

describe("the exports", function ()
	it("version, interface, options, INTERNAL_ERROR, open, close, now, jat_encode, jat_decode", function ()
		assert.is_string(native.version);
		assert.are.equal("integer", support.number_type(native.interface), "interface");
		assert.is_table(native.options, "options");
		for i, option in ipairs(native.options) do
			assert.is_string(option.name, "options[" .. i .. "].name");
			assert.is_string(option.kind, "options[" .. i .. "].kind");
		end
		assert.is_table(native.INTERNAL_ERROR);
		for _, name in ipairs({ "open", "close", "now", "jat_encode", "jat_decode" }) do
			assert.is_function(native[name], name);
		end
		local p, host, route = open_host();
		assert.is_function(route);
		local problems = {};
		round_trip(problems, "ordinary", route, host);
		assert.are.same({}, problems);
	end);
end);

describe("route: arguments", function ()
	it("a string argument given a number, a table, a boolean, a function, a userdata: fail, one line naming it", function ()
		local p, host, route = open_host();
		local problems = {};
		local bad_values = { 5, 0.5, 0 / 0, {}, setmetatable({}, { __tostring = error }), true, false, print,
			coroutine.create(function () end), io.stdout, p };
		for _, i in ipairs(STRING_ARGS) do
			for _, bad in ipairs(bad_values) do
				local args = get_args(host);
				args[i] = bad;
				local what = ("route(%s)"):format(show_args(args, 10));
				local v = routed(problems, what, route, unpack(args, 1, 10));
				if v then
					local name = ARG_NAMES[i];
					if v[1] ~= "fail" then
						problems[#problems + 1] = what .. ": " .. show(v[1]) .. ", not fail";
					elseif type(v[2]) == "string" and (v[2]:find("\n")
						or not (v[2]:find("%f[%w]" .. name .. "%f[%W]") or v[2]:find("argument " .. i, 1, true))) then
						problems[#problems + 1] = what .. ": the message does not name " .. name .. " on one line: " .. show(v[2]);
					end
				end
			end
		end
		assert.are.same({}, problems);
	end);

	it("now: NaN, inf, -inf, a string, a table, a boolean: fail naming now; finite extremes: a verdict", function ()
		local p, host, route = open_host();
		local problems = {};
		for _, bad in ipairs({ 0 / 0, -(0 / 0), 1 / 0, -1 / 0, "5", "soon", {}, true, false, print, p }) do
			local args = get_args(host);
			args[6] = bad;
			local what = ("route(..., now = %s)"):format(show(bad));
			local v = routed(problems, what, route, unpack(args, 1, 10));
			if v and (v[1] ~= "fail" or not tostring(v[2]):find("now", 1, true) or tostring(v[2]):find("\n")) then
				problems[#problems + 1] = what .. ": " .. show(v[1]) .. " " .. show(v[2]);
			end
		end
		local extremes = { 0, -0.0, 1e308, -1e308, 2 ^ 53, 2 ^ 63, -2 ^ 63, 4.9e-324 };
		if math.maxinteger then extremes[#extremes + 1] = math.maxinteger; extremes[#extremes + 1] = math.mininteger; end
		for k, now in ipairs(extremes) do
			local args = get_args(host, "e" .. k);
			args[6] = now;
			routed(problems, ("route(..., now = %s)"):format(show(now)), route, unpack(args, 1, 10));
			args = { "presence", nil, T .. "/e" .. k, host, nil, now };
			routed(problems, ("route(presence, now = %s)"):format(show(now)), route, unpack(args, 1, 6));
			returns_or_raises(problems, "tick(" .. show(now) .. ")", p.tick, p, now);
		end
		assert.are.same({}, problems);
	end);

	it("priority that is not a number, eligible that is not a boolean: fail naming them", function ()
		local p, host, route = open_host();
		local problems = {};
		local function presence(priority, eligible)
			return { "presence", nil, T .. "/res", host, nil, 0, priority, eligible, nil, nil };
		end
		for _, bad in ipairs({ "5", "", {}, true, false, print, p }) do
			local v = routed(problems, "priority = " .. show(bad), route, unpack(presence(bad, nil), 1, 10));
			if v and (v[1] ~= "fail" or not tostring(v[2]):find("priority", 1, true)) then
				problems[#problems + 1] = "priority = " .. show(bad) .. ": " .. show(v[1]) .. " " .. show(v[2]);
			end
		end
		for _, bad in ipairs({ 0, 1, "yes", "", {}, print, p }) do
			local v = routed(problems, "eligible = " .. show(bad), route, unpack(presence(nil, bad), 1, 10));
			if v and (v[1] ~= "fail" or not tostring(v[2]):find("eligible", 1, true)) then
				problems[#problems + 1] = "eligible = " .. show(bad) .. ": " .. show(v[1]) .. " " .. show(v[2]);
			end
		end
		for _, odd in ipairs({ 0 / 0, 1 / 0, -1 / 0, 1e308, -1e308, 2 ^ 63, -129, 128 }) do
			routed(problems, "priority = " .. show(odd), route, unpack(presence(odd, true), 1, 10));
		end
		assert.are.same({}, problems);
	end);

	it("missing arguments are nil: route() and every prefix of a stanza's arguments get a verdict", function ()
		local p, host, route = open_host();
		local problems = {};
		routed(problems, "route()", route);
		for _, args in ipairs({ get_args(host), { "presence", nil, T .. "/a", host, nil, 0, 1, true, nil, nil },
			{ "iq", "error", T .. "/a", host .. "/" .. R, "x", 0, nil, nil, "feature-not-implemented", "en" },
			{ "message", "chat", R, host, "m", 0, nil, nil, nil, "de" } }) do
			for k = 0, 10 do
				routed(problems, ("route(%s)"):format(show_args(args, k)), route, unpack(args, 1, k));
			end
		end
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);

	it("extra arguments up to 8,000 are ignored", function ()
		local p, host, route = open_host();
		local problems = {};
		round_trip(problems, "before", route, host);
		local pad = { "x", {}, 1, true, BIG, print };
		local tried = {};
		for _, total in ipairs({ 11, 12, 20, 100, 255, 256, 257, 1000, 4000, 7900, 7950, 7970, 7975, 7980,
			7985, 7990, 7995, 7997, 7998, 7999, 8000 }) do
			local args = get_args(host, "x" .. total);
			for i = 13, total do args[i] = pad[i % #pad + 1]; end
			-- What the Lua at hand can pass at all (5.1 and LuaJIT: about 8,000 values on a C stack).
			if pcall(function () return select("#", unpack(args, 1, total)); end) then
				tried[#tried + 1] = total;
				local r = pack(pcall(function () return route(unpack(args, 1, total)); end));
				local what = ("route with %d arguments"):format(total);
				if not r[1] then
					problems[#problems + 1] = what .. ": raised " .. show(error_text(r[2]));
				elseif r[2] ~= "send" then
					problems[#problems + 1] = what .. ": " .. show(r[2]) .. " " .. show(r[3]) .. ", not send";
				end
				local presence = { "presence", nil, T .. "/x" .. total, host, nil, 0, nil, nil, nil, nil };
				for i = 13, total do presence[i] = args[i]; end
				r = pack(pcall(function () return route(unpack(presence, 1, total)); end));
				if not r[1] or r[2] ~= "drop" then
					problems[#problems + 1] = what .. " (presence): " .. show(r[1]) .. " " .. show(r[2]) .. " " .. show(r[3]);
				end
			end
		end
		assert.is_true(#tried >= 15, "could pass only " .. #tried .. " of the argument counts");
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);

	it("strings of any bytes: empty, NUL, invalid UTF-8, 1 MB, in every string argument", function ()
		local p, host, route = open_host();
		local problems = {};
		round_trip(problems, "before", route, host);
		local shapes = { get_args(host), { "iq", "result", T .. "/a", host .. "/" .. R, "r", 0, nil, nil, nil, nil },
			{ "presence", nil, T .. "/a", host, nil, 0, nil, nil, nil, nil },
			{ "iq", "error", T .. "/a", host .. "/" .. R, "r", 0, nil, nil, "service-unavailable", nil },
			{ "message", "chat", R, host, nil, 0, nil, nil, nil, "en" } };
		for k, shape in ipairs(shapes) do
			for _, i in ipairs(STRING_ARGS) do
				for _, s in ipairs(ODD_STRINGS) do
					local args = { unpack(shape, 1, 10) };
					args[i] = s;
					routed(problems, ("shape %d: route(%s)"):format(k, show_args(args, 10)), route, unpack(args, 1, 10));
				end
			end
		end
		-- A round trip with NUL and invalid UTF-8 in the id and the requester's resource.
		for _, odd in ipairs({ NUL, BAD_UTF8, "\0" }) do
			local asker = "odd@example.org/r" .. odd;
			local fwd = routed(problems, "odd get", route, "iq", "get", asker, host, odd, 0);
			if fwd and fwd[1] == "send" then
				routed(problems, "odd result", route, "iq", "result", fwd[2], fwd[3], odd, 0);
			end
		end
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);

	it("the proxy as a first argument (the old signature) is a name of the wrong type: fail", function ()
		local p, host, route = open_host();
		local other = open_host();
		local problems = {};
		round_trip(problems, "before", route, host);
		for _, first in ipairs({ p, other }) do
			local v = routed(problems, "route(proxy, ...)", route, first, "presence", nil, T .. "/old", host, nil, 0);
			if v and v[1] ~= "fail" then problems[#problems + 1] = "route(proxy, ...): " .. show(v[1]); end
		end
		assert.are.same({}, problems);
	end);
end);

describe("the other exports: wrong types, missing and extra arguments", function ()
	it("open raises a clean error or opens; an opened host routes", function ()
		local problems, opened = {}, {};
		local p0 = open_host();
		local values = values_of_every_type(p0);
		returns_or_raises(problems, "open()", native.open);
		for _, v in ipairs(values) do
			returns_or_raises(problems, "open(" .. show(v) .. ")", native.open, v);
			returns_or_raises(problems, "open{host = " .. show(v) .. "}", native.open, { host = v, target_address = T });
			returns_or_raises(problems, "open{target_address = " .. show(v) .. "}", native.open, { host = fresh_host(), target_address = v });
		end
		local names = {};
		for _, option in ipairs(type(native.options) == "table" and native.options or {}) do
			if type(option) == "table" and type(option.name) == "string" then names[#names + 1] = option.name; end
		end
		if #names == 0 then -- a library without the options export: the options of DESIGN.md
			names = { "client_proxy_jat", "client_proxy_strategy", "client_proxy_resources", "client_proxy_timeout",
				"client_proxy_max_pending_per_requester", "client_proxy_max_pending_per_user",
				"client_proxy_max_pending_per_domain", "client_proxy_max_pending", "client_proxy_allow",
				"client_proxy_eject_after", "client_proxy_eject_for", "client_proxy_messages", "client_proxy_outbound",
				"client_proxy_presence", "client_proxy_affinity", "client_proxy_affinity_idle",
				"client_proxy_require_caps", "client_proxy_manage_roster" };
		end
		for _, extra in ipairs({ "subscribers", "local_domains" }) do names[#names + 1] = extra; end
		local lists = { {}, { BIG }, { NUL }, { BAD_UTF8 }, { true }, { {} }, { 1, 2, 3 }, { [1] = "a", [3] = "c" },
			setmetatable({}, { __index = function () error("boom from __index"); end, __len = function () return 1e9; end }) };
		for _, name in ipairs(names) do
			for _, v in ipairs(values) do
				local host = fresh_host();
				local r = returns_or_raises(problems, name .. " = " .. show(v), native.open, { host = host, target_address = T, [name] = v });
				if r[1] then opened[#opened + 1] = { host, r[2] }; end
			end
			for k, list in ipairs(lists) do
				local host = fresh_host();
				local r = returns_or_raises(problems, name .. " = list " .. k, native.open, { host = host, target_address = T, [name] = list });
				if r[1] then opened[#opened + 1] = { host, r[2] }; end
			end
		end
		-- Options tables whose reads raise, or collect garbage.
		local raising = setmetatable({ host = fresh_host(), target_address = T }, { __index = function () error("boom from __index"); end });
		returns_or_raises(problems, "open{__index raises}", native.open, raising);
		local collecting = setmetatable({ host = fresh_host(), target_address = T }, { __index = function () collectgarbage(); end });
		returns_or_raises(problems, "open{__index collects}", native.open, collecting);
		-- Extra arguments.
		local args = { { host = fresh_host(), target_address = T } };
		for i = 2, 7990 do args[i] = i % 2 == 0 and "x" or {}; end
		returns_or_raises(problems, "open with 7,990 arguments", native.open, unpack(args));
		for _, o in ipairs(opened) do
			if type(o[2]) == "userdata" then
				local ok, route = pcall(function () return o[2].route; end);
				if ok and type(route) == "function" then
					routed(problems, "route of " .. show(o[1]), route, "presence", nil, T .. "/a", o[1], nil, 0);
					routed(problems, "route of " .. show(o[1]), route, "iq", "get", R, o[1], "x", 0);
				else
					problems[#problems + 1] = "open returned a proxy without a route: " .. show(route);
				end
			else
				problems[#problems + 1] = "open returned " .. show(o[2]) .. ", not a proxy";
			end
			pcall(native.close, o[1]);
		end
		assert.are.same({}, problems);
	end);

	it("close, now, jat_encode, jat_decode raise a clean error or return", function ()
		local problems = {};
		local p, host, route = open_host();
		local values = values_of_every_type(p);
		values[#values + 1] = BIG_ODD;
		local extras = {};
		for i = 1, 7990 do extras[i] = i % 2 == 0 and "x" or i; end
		returns_or_raises(problems, "close()", native.close);
		returns_or_raises(problems, "now()", native.now);
		returns_or_raises(problems, "now(...7,990)", native.now, unpack(extras));
		returns_or_raises(problems, "jat_encode()", native.jat_encode);
		returns_or_raises(problems, "jat_decode()", native.jat_decode);
		for _, v in ipairs(values) do
			returns_or_raises(problems, "close(" .. show(v) .. ")", native.close, v);
			for _, mode in ipairs({ "plain", "base64" }) do
				for _, f in ipairs({ "jat_encode", "jat_decode" }) do
					returns_or_raises(problems, f .. "(" .. mode .. ", " .. show(v) .. ")", native[f], mode, v);
					returns_or_raises(problems, f .. "(" .. show(v) .. ", R)", native[f], v, R);
				end
			end
		end
		-- Extra arguments: a clean error is allowed (Lua 5.1 and LuaJIT: mlua raises "stack
		-- overflow" with about 8,000 values; the shim pcalls these exports).
		for _, f in ipairs({ "jat_encode", "jat_decode" }) do
			returns_or_raises(problems, f .. "(...7,990)", native[f], "plain", R, unpack(extras));
		end
		returns_or_raises(problems, "close(host, ...7,990)", native.close, host, unpack(extras));
		assert.are.same({}, problems);
	end);

	it("drain, tick, stopping, status, set_local_domains: wrong self, wrong types, extra arguments", function ()
		local problems = {};
		local p, host, route = open_host();
		local other = open_host();
		round_trip(problems, "before", route, host);
		local values = values_of_every_type(other);
		local extras = {};
		for i = 1, 7990 do extras[i] = i % 2 == 0 and "x" or {}; end
		local domains = {};
		for i = 1, 8000 do domains[i] = "d" .. i .. ".example"; end
		for _, m in ipairs({ "drain", "tick", "stopping", "status", "set_local_domains" }) do
			local ok, f = pcall(function () return p[m]; end);
			if not ok or type(f) ~= "function" then
				problems[#problems + 1] = "p." .. m .. ": " .. show(f);
			else
				returns_or_raises(problems, m .. "()", f);
				for _, v in ipairs(values) do
					returns_or_raises(problems, m .. "(self = " .. show(v) .. ")", f, v);
					returns_or_raises(problems, m .. "(p, " .. show(v) .. ")", f, p, v);
					returns_or_raises(problems, m .. "(p, " .. show(v) .. ", 0)", f, p, v, 0);
				end
				returns_or_raises(problems, m .. "(route)", f, route);
				local first = m == "tick" and 0 or m == "set_local_domains" and { "example.org" } or nil;
				-- A clean error is allowed (5.1 and LuaJIT: mlua's "stack overflow").
				returns_or_raises(problems, m .. "(p, x, ...7,990)", f, p, first, unpack(extras));
			end
		end
		for k, list in ipairs({ domains, { BIG }, { NUL, BAD_UTF8 }, { 1, true, {} }, { [1] = "a", [5] = "b" },
			setmetatable({}, { __index = function () error("boom from __index"); end, __len = function () return 2 ^ 40; end }) }) do
			returns_or_raises(problems, "set_local_domains(list " .. k .. ")", p.set_local_domains, p, list);
		end
		for _, now in ipairs({ 0 / 0, 1 / 0, -1 / 0, 1e308, -1e308, "5", "soon" }) do
			returns_or_raises(problems, "tick(" .. show(now) .. ")", p.tick, p, now);
		end
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);

	it("the proxy: odd keys, assignments, length, tostring, comparisons, concatenation", function ()
		local problems = {};
		local p, host, route = open_host();
		local other = open_host();
		for _, key in ipairs({ 1, 0.5, true, {}, "", NUL, BIG, "nope", "__gc", "__index", "route", print }) do
			returns_or_raises(problems, "p[" .. show(key) .. "]", function () return p[key]; end);
			returns_or_raises(problems, "p[" .. show(key) .. "] = 1", function () p[key] = 1; end);
		end
		for _, f in ipairs({ function () return #p; end, function () return tostring(p); end, function () return p == other; end,
			function () return p < other; end, function () return p .. "x"; end, function () return p(); end,
			function () return -p; end, function () for _ in pairs(p) do end end, function () return getmetatable(p); end }) do
			returns_or_raises(problems, "an operation on the proxy", f);
		end
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);
end);

describe("finalizers while the library runs", function ()
	-- Each round: garbage with finalizers (5.1 and LuaJIT: newproxy; 5.2+: tables with
	-- __gc), the collector with no pause and a small step (so that it runs at every
	-- allocation check and finalizers wait in a backlog), then one call under test; the
	-- finalizers act (re-enter the library, raise) only while the call runs or is about to.
	-- gc.window counts the finalizers that ran during the call.
	local ROUNDS = 60;

	local function reentries(p, host, route)
		local k = 0;
		local scratch = {};
		return {
			function () pcall(route, "iq", "get", "fin@example.org/x", host, "f", 0); end,
			function () pcall(route, "presence", nil, T .. "/fin", host, nil, 0); end,
			function () pcall(route, "presence", "unavailable", T .. "/fin", host, nil, 0); end,
			function () pcall(route, "iq", "get", 5, host, {}, 0); end,
			-- (1-4 and the last call route and its upvalues only: no mlua)
			function () pcall(p.status, p); end,
			function () pcall(p.drain, p); end,
			function () pcall(p.tick, p, 1e6); end,
			function () pcall(p.stopping, p); end,
			function () pcall(p.set_local_domains, p, { "example.org" }); end,
			function () pcall(native.open, { host = host, target_address = T }); end,
			function ()
				k = k + 1;
				local h = host .. ".fin" .. k;
				local ok, q = pcall(native.open, { host = h, target_address = T });
				if ok then pcall(q.route, "presence", nil, T .. "/q", h, nil, 0); scratch[#scratch + 1] = q; end
				pcall(native.close, h);
			end,
			function () pcall(native.jat_encode, "plain", R); end,
			function () pcall(native.jat_decode, "base64", "dXNlckBleGFtcGxlLm9yZy9hYmM"); end,
			function () pcall(native.now); end,
			function () -- reads the slots of the C functions running (debug.getlocal), calls route's
				-- function upvalues with them, now and later
				for level = 2, 40 do
					local info = debug.getinfo(level, "S");
					if not info then break; end
					if info.what == "C" then
						for i = 1, 12 do
							local ok, name, value = pcall(debug.getlocal, level, i);
							if not ok or name == nil then break; end
							if value ~= nil and #scratch < 200 then scratch[#scratch + 1] = value; end
						end
					end
				end
				for i = 1, 20 do
					local name, f = debug.getupvalue(route, i);
					if name == nil then break; end
					if type(f) == "function" then
						for j = math.max(1, #scratch - 6), #scratch do
							pcall(f, scratch[j], "send", host);
							pcall(f, scratch[j]);
						end
					end
				end
			end,
		};
	end

	-- The re-entries that call route (the raw C closure) and its function upvalues only.
	local function route_only(actions)
		return { actions[1], actions[2], actions[3], actions[4], actions[#actions] };
	end

	-- The calls under test: route's return call_route's results (got, ok, err, results),
	-- the methods' pcall's.
	local function calls(p, host, route)
		local n = 0;
		return {
			route_get = function () n = n + 1; return call_route(route, "iq", "get", R, host, "w" .. n, 0); end,
			route_presence = function () return call_route(route, "presence", nil, T .. "/w", host, nil, 0, 1, true); end,
			route_result = function () return call_route(route, "iq", "result", T .. "/w", host .. "/" .. R, "w" .. n, 0); end,
			route_bad_types = function () return call_route(route, "iq", "get", 5, host, 7, 0); end,
			route_big = function () return call_route(route, "iq", "get", R, host, BIG_ODD, 0, nil, nil, nil, BIG); end,
			status = function () return pcall(p.status, p); end,
			drain = function () return pcall(p.drain, p); end,
			tick = function () return pcall(p.tick, p, 30 + n); end,
		};
	end
	local ROUTE_CALLS = { "route_get", "route_presence", "route_result", "route_bad_types", "route_big" };
	local METHOD_CALLS = { "status", "drain", "tick" };
	local ALL_CALLS = { "route_get", "route_presence", "route_result", "route_bad_types", "route_big", "status", "drain", "tick" };

	-- What raising finalizers raise: a string, and (mode "raise-odd") values that are not.
	local odd_errors = { {}, false, setmetatable({}, { __tostring = function () error("no"); end }), 42 };
	local function boom(mode, k)
		if mode == "raise-odd" then error(odd_errors[k % #odd_errors + 1]); end
		error("boom from __gc", 0);
	end

	-- Runs ROUNDS rounds of each of call_names with finalizers doing `mode` (re-entering
	-- through route only when `only_route`); checks each result.
	local function run(mode, call_names, only_route)
		local problems, hits = {}, {};
		for _, call_name in ipairs(call_names) do
			local p, host, route = open_host({ client_proxy_timeout = 5 });
			local actions = reentries(p, host, route);
			if only_route then actions = route_only(actions); end
			local call = calls(p, host, route)[call_name];
			local k = 0;
			-- Whether route was on the stack when a finalizer last raised (nil: none raised):
			-- route did not return (call_route's `got` unset) only because it raised if so.
			-- Otherwise the raise came from the call machinery before route was entered (5.3
			-- and 5.4 run a GC check when a C function's stack grows, before its frame exists).
			local raised_in_route;
			local function route_on_stack()
				for level = 2, 200 do
					local info = debug.getinfo(level, "f");
					if not info then return false; end
					if info.func == route then return true; end
				end
				return false;
			end
			local function act()
				k = k + 1;
				if mode == "reenter" or mode == "reenter-raise" then actions[k % #actions + 1](); end
				if mode ~= "reenter" then
					raised_in_route = route_on_stack();
					boom(mode, k);
				end
			end
			round_trip(problems, call_name .. ": before", route, host);
			hits[call_name] = 0;
			local before_route = 0;
			for round = 1, ROUNDS do
				raised_in_route = nil;
				local r, during = gc.window(round, act, call);
				hits[call_name] = hits[call_name] + during;
				if r then
					local what = ("%s, finalizers that %s, round %d"):format(call_name, mode, round);
					if call_name:match("^route") then
						-- r: got, ok, err, route's results (a pcall failure once route returned
						-- is the call machinery's: see call_route)
						if not r[1] and raised_in_route == false then
							before_route = before_route + 1;
						elseif not r[1] then
							problems[#problems + 1] = what .. ": route raised " .. show(error_text(r[3]));
						elseif not VERDICT[r[4]] then
							problems[#problems + 1] = what .. ": not a verdict: " .. show(r[4]);
						end
					elseif r[1] then
						if type(r[2]) ~= "table" then problems[#problems + 1] = what .. ": returned " .. show(r[2]); end
					elseif mode == "reenter" then
						problems[#problems + 1] = what .. ": raised " .. show(error_text(r[2]));
					elseif mode ~= "raise-odd" and not error_text(r[2]):find("__gc", 1, true) then
						problems[#problems + 1] = what .. ": raised another error: " .. show(error_text(r[2]));
					end
				end
			end
			round_trip(problems, call_name .. " (" .. mode .. "): after", route, host);
			if before_route > 0 then hits[call_name .. "/raised before route"] = before_route; end
		end
		return problems, hits;
	end

	-- LuaJIT 2.1.0-beta3 (Debian's) crashes when a __gc metamethod raises during a GC step
	-- inside any C function called from JIT-compiled code: reproduced without this library
	-- (a C module that pushes five strings, pcalled in a loop), not with `luajit -joff`. So
	-- the tests whose finalizers raise run with the JIT off there.
	local function without_jit()
		if not IS_JIT then return; end
		jit.off();
		jit.flush();
		finally(function () jit.on(); end);
	end

	local function check(label, mode, call_names, only_route)
		local problems, hits = run(mode, call_names, only_route);
		gc.report(label, hits);
		assert.are.same({}, problems);
	end

	it("that re-enter the library (route, status, drain, tick, open, close, jat_*) while route runs", function ()
		check("reenter, route", "reenter", ROUTE_CALLS, false);
	end);

	it("that call route while status, drain, tick run", function ()
		check("reenter with route, methods", "reenter", METHOD_CALLS, true);
	end);

	it("that re-enter the mlua-based functions (status, drain, tick, open, close, jat_*) while status, drain, tick run", function ()
		if MLUA_REENTRY_UNSAFE then pending(MLUA_REENTRY_REASON); return; end
		check("reenter, methods", "reenter", METHOD_CALLS, false);
	end);

	it("that raise: route still answers (fail or a verdict); the others raise or return, and the host still works", function ()
		without_jit();
		check("raise", "raise", ALL_CALLS, false);
	end);

	it("that re-enter, then raise, while route runs", function ()
		without_jit();
		check("reenter-raise, route", "reenter-raise", ROUTE_CALLS, false);
	end);

	it("that call route, then raise, while status, drain, tick run", function ()
		without_jit();
		check("reenter-raise with route, methods", "reenter-raise", METHOD_CALLS, true);
	end);

	it("that re-enter the mlua-based functions, then raise, while status, drain, tick run", function ()
		if MLUA_REENTRY_UNSAFE then pending(MLUA_REENTRY_REASON); return; end
		without_jit();
		check("reenter-raise, methods", "reenter-raise", METHOD_CALLS, false);
	end);

	it("that raise values that are not strings (a table, false, a number): route answers fail with a message", function ()
		without_jit();
		check("raise-odd", "raise-odd", ALL_CALLS, false);
	end);

	it("that close the host while route runs: route answers, then fails", function ()
		local problems = {};
		for round = 1, 20 do
			local p, host, route = open_host();
			round_trip(problems, "before", route, host);
			local r = gc.window(round, function () native.close(host); end, function ()
				return call_route(route, "iq", "get", R, host, "c" .. round, 0);
			end);
			if r and (not r[1] or not VERDICT[r[4]]) then
				problems[#problems + 1] = "round " .. round .. ": " .. show(r[4]) .. " " .. show(r[5]) .. " " .. show(r[3]);
			end
			native.close(host);
			local v = routed(problems, "after close", route, "presence", nil, T .. "/late", host, nil, 0);
			if v and v[1] ~= "fail" then problems[#problems + 1] = "after close: " .. show(v[1]) .. ", not fail"; end
		end
		assert.are.same({}, problems);
	end);
end);

describe("route outliving its proxy", function ()
	it("after close(host): fail; a host opened again under the name is not touched", function ()
		local problems = {};
		local p, host, route = open_host();
		round_trip(problems, "before", route, host);
		assert.is_true(native.close(host));
		local v = routed(problems, "after close", route, "presence", nil, T .. "/ghost", host, nil, 0);
		if v and v[1] ~= "fail" then problems[#problems + 1] = "after close: " .. show(v[1]) .. ", not fail"; end
		local again = native.open({ host = host, target_address = T });
		v = routed(problems, "after reopen", route, "presence", nil, T .. "/ghost", host, nil, 0);
		if v and v[1] ~= "fail" then problems[#problems + 1] = "old route after reopen: " .. show(v[1]) .. ", not fail"; end
		assert.are.same({}, again:status().resources);
		returns_or_raises(problems, "old proxy's status after close", p.status, p);
		returns_or_raises(problems, "old proxy's drain after close", p.drain, p);
		returns_or_raises(problems, "old proxy's tick after close", p.tick, p, 100);
		round_trip(problems, "the new one", again.route, host);
		assert.are.same({}, problems);
	end);

	it("after its proxy is collected (route kept): a verdict or fail; fail once the host is closed", function ()
		local problems = {};
		local host, route;
		do
			local p;
			p, host, route = open_host();
		end
		collectgarbage(); collectgarbage();
		routed(problems, "proxy collected", route, "presence", nil, T .. "/kept", host, nil, 0);
		routed(problems, "proxy collected", route, "iq", "get", R, host, "kept", 0);
		native.close(host);
		collectgarbage(); collectgarbage();
		local v = routed(problems, "closed", route, "presence", nil, T .. "/ghost", host, nil, 0);
		if v and v[1] ~= "fail" then problems[#problems + 1] = "after close: " .. show(v[1]) .. ", not fail"; end
		assert.are.same({}, problems);
	end);

	-- A finalizer keeps route (and the proxy) after both were found garbage: the proxy's and
	-- route's own finalizers have run by the time they are used again.
	local function resurrected(close_first)
		local saved = {};
		local host;
		do
			local p, h, route = open_host();
			host = h;
			local problems = {};
			round_trip(problems, "before", route, host);
			assert.are.same({}, problems);
			if close_first then native.close(host); end
			gc.finalizable(function () saved.route, saved.proxy = route, p; end);
		end
		for _ = 1, 4 do collectgarbage(); end
		return saved, host;
	end

	for _, closed in ipairs({ true, false }) do
		it(("resurrected by a finalizer%s: fail (or a verdict), touching nothing freed, not another host"):format(
			closed and " after close" or ""), function ()
			local problems = {};
			local saved, host = resurrected(closed);
			assert.is_function(saved.route, "resurrected");
			-- Hosts opened now may reuse the memory of the one just freed.
			local others = {};
			for i = 1, 8 do
				local p, h = open_host();
				others[i] = { p, h };
			end
			for i = 1, 20 do
				local v = routed(problems, "resurrected route", saved.route, "presence", nil, T .. "/ghost", host, nil, i);
				if v and closed and v[1] ~= "fail" then problems[#problems + 1] = "resurrected after close: " .. show(v[1]) .. ", not fail"; end
				routed(problems, "resurrected route", saved.route, "iq", "get", R, host, "g" .. i, i);
				routed(problems, "resurrected route", saved.route, "presence", nil, T .. "/ghost", others[i % 8 + 1][2], nil, i);
			end
			for _, m in ipairs({ "status", "drain", "stopping" }) do
				returns_or_raises(problems, "resurrected proxy's " .. m, function () return saved.proxy[m](saved.proxy); end);
			end
			returns_or_raises(problems, "resurrected proxy's tick", function () return saved.proxy:tick(1e6); end);
			returns_or_raises(problems, "resurrected proxy's route", function () return saved.proxy.route; end);
			for _, o in ipairs(others) do
				local ok, s = pcall(o[1].status, o[1]);
				if not ok then
					problems[#problems + 1] = "another host's status raised " .. show(error_text(s));
				elseif #s.resources ~= 0 then
					problems[#problems + 1] = "another host " .. o[2] .. " got resources from the resurrected route";
				end
				native.close(o[2]);
			end
			native.close(host);
			assert.are.same({}, problems);
		end);
	end
end);

describe("debug.setupvalue on route's upvalues", function ()
	local function upvalues(route)
		local list = {};
		for i = 1, 255 do
			local name, value = debug.getupvalue(route, i);
			if name == nil then break; end
			list[i] = { value = value };
		end
		return list;
	end
	-- Lua 5.1's debug library does not reach a C closure's upvalues (getupvalue and
	-- setupvalue return nothing for C functions; LuaJIT's do): nothing to tamper with.
	local function unreachable(route)
		if debug.getupvalue(route, 1) ~= nil then return false; end
		pending("Lua 5.1's debug.getupvalue/setupvalue do not reach a C closure's upvalues");
		return true;
	end

	-- Sets upvalue i of route to v, calls route (nil is an answer then: docs/INTERNALS.md),
	-- puts the upvalue back, calls again (a verdict).
	local function tamper(problems, what, route, host, i, v, original)
		debug.setupvalue(route, i, v);
		check_route(problems, what, true, route, "presence", nil, T .. "/t", host, nil, 0);
		check_route(problems, what, true, route, "iq", "get", R, host, "t", 0);
		check_route(problems, what, true, route, "iq", "result", T .. "/t", host .. "/" .. R, "t", 0);
		check_route(problems, what, true, route, "iq", "get", 5, host, "t", 0);
		debug.setupvalue(route, i, original);
		routed(problems, what .. ", put back", route, "iq", "get", R, host, "t2", 0);
	end

	it("any value in any upvalue: a verdict or fail, never a raise, never a crash", function ()
		local problems = {};
		local p, host, route = open_host();
		if unreachable(route) then return; end
		local list = upvalues(route);
		local values = values_of_every_type(p);
		values[#values + 1] = setmetatable({}, { __index = error, __len = error });
		values[#values + 1] = route;
		values[#values + 1] = p.drain;
		values[#values + 1] = -0.0;
		values[#values + 1] = 2 ^ 53;
		for i, up in ipairs(list) do
			for _, v in ipairs(values) do
				tamper(problems, ("upvalue %d = %s"):format(i, show(v)), route, host, i, v, up.value);
			end
			tamper(problems, ("upvalue %d = nil"):format(i), route, host, i, nil, up.value);
			for j, other in ipairs(list) do -- another upvalue's value: the wrong one of the right kinds
				if j ~= i then tamper(problems, ("upvalue %d = upvalue %d"):format(i, j), route, host, i, other.value, up.value); end
			end
		end
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);

	it("route's function upvalues and its upvalues' metamethods called by hand, then route", function ()
		local problems = {};
		local p, host, route = open_host();
		if unreachable(route) then return; end
		local other = open_host();
		round_trip(problems, "before", route, host);
		local list = upvalues(route);
		local args = values_of_every_type(other);
		for _, up in ipairs(list) do args[#args + 1] = up.value; end
		local function hammer(what, f)
			returns_or_raises({}, what, f);
			for _, a in ipairs(args) do
				pcall(f, a);
				pcall(f, a, "send", host);
				for _, b in ipairs(list) do pcall(f, a, b.value, host); end
			end
		end
		for i, up in ipairs(list) do
			if type(up.value) == "function" then hammer("upvalue " .. i, up.value); end
			local mt = debug.getmetatable(up.value);
			if type(mt) == "table" and type(up.value) ~= "string" then
				for key, f in pairs(mt) do
					if type(f) == "function" then hammer(("upvalue %d's %s"):format(i, tostring(key)), f); end
				end
			end
			routed(problems, "after upvalue " .. i .. "'s functions", route, "iq", "get", R, host, "h" .. i, 0);
		end
		-- The upvalues' finalizers called by hand (twice), on their own values: route fails or answers.
		for i, up in ipairs(list) do
			local mt = debug.getmetatable(up.value);
			if type(up.value) ~= "string" and type(mt) == "table" and type(mt.__gc) == "function" then
				pcall(mt.__gc, up.value);
				pcall(mt.__gc, up.value);
				routed(problems, "after upvalue " .. i .. "'s __gc", route, "iq", "get", R, host, "gc" .. i, 0);
			end
		end
		routed(problems, "at the end", route, "presence", nil, T .. "/end", host, nil, 0);
		assert.are.same({}, problems);
	end);

	-- Not tested: the proxy object's own __gc (mlua's userdata metatable, reachable with
	-- debug.getmetatable) called by hand. That is mlua's internals (a double free inside
	-- mlua 0.12.2, the newest release), not this binding: the debug library can break any C
	-- module's objects. What route owns is tested: its upvalues (above) and its anchor's
	-- finalizer (here).
	it("the anchor's finalizer called by hand (on other values, on another anchor, twice on its own): no crash, then fail", function ()
		local problems = {};
		local p, host, route = open_host();
		if unreachable(route) then return; end
		local other_p, other_host, other_route = open_host();
		round_trip(problems, "before", route, host);
		round_trip(problems, "before (the other host)", other_route, other_host);
		local function anchor_of(r)
			for i = 1, 255 do
				local name, value = debug.getupvalue(r, i);
				if name == nil then break; end
				local mt = debug.getmetatable(value);
				if type(value) == "userdata" and type(mt) == "table" and type(mt.__gc) == "function" then
					return value, mt.__gc;
				end
			end
		end
		local anchor, finalize = anchor_of(route);
		local other_anchor = anchor_of(other_route);
		assert.is_not_nil(anchor, "route has no upvalue with a finalizer");
		assert.is_not_nil(other_anchor, "the other route has no upvalue with a finalizer");
		-- Values that are not this anchor: it keeps its count, route still routes.
		pcall(finalize);
		for _, v in ipairs(values_of_every_type(other_p)) do pcall(finalize, v); end
		for _, v in ipairs({ route, other_route, p, io.stderr, finalize, NUL }) do pcall(finalize, v); end
		round_trip(problems, "after foreign values", route, host);
		-- Another host's anchor: that host's route fails, this one still routes.
		pcall(finalize, other_anchor);
		pcall(finalize, other_anchor);
		local v = routed(problems, "the other route, its anchor finalized", other_route, "iq", "get", R, other_host, "o", 0);
		if v and v[1] ~= "fail" then problems[#problems + 1] = "the other route, its anchor finalized: " .. show(v[1]) .. ", not fail"; end
		round_trip(problems, "after the other anchor", route, host);
		-- Its own anchor, twice: route fails.
		pcall(finalize, anchor);
		pcall(finalize, anchor);
		for _, args in ipairs({ { "presence", nil, T .. "/gone", host, nil, 0 }, { "iq", "get", R, host, "gone", 0 } }) do
			v = routed(problems, "its anchor finalized", route, unpack(args, 1, 6));
			if v and v[1] ~= "fail" then problems[#problems + 1] = "its anchor finalized: " .. show(v[1]) .. ", not fail"; end
		end
		for _, m in ipairs({ "status", "drain", "stopping" }) do
			returns_or_raises(problems, "the proxy's " .. m, function () return p[m](p); end);
		end
		returns_or_raises(problems, "the proxy's tick", function () return p:tick(5); end);
		native.close(host);
		native.close(other_host);
		-- The anchors' own finalizers, when collected, find them empty.
		p, route, anchor, other_p, other_route, other_anchor = nil, nil, nil, nil, nil, nil;
		collectgarbage(); collectgarbage();
		local _, fresh, fresh_route = open_host();
		round_trip(problems, "a new host", fresh_route, fresh);
		native.close(fresh);
		assert.are.same({}, problems);
	end);

	it("values of another host's route, of a closed one and of a collected one", function ()
		local problems = {};
		local p, host, route = open_host();
		if unreachable(route) then return; end
		local list = upvalues(route);
		local live_p, live_host, live_route = open_host();
		local live = upvalues(live_route);
		local closed_p, closed_host, closed_route = open_host();
		local closed = upvalues(closed_route);
		native.close(closed_host);
		-- Of a collected host: each upvalue value kept alone (keeping them all would keep
		-- the state alive through its holder), the rest collected.
		local gone = {};
		for i = 1, #list do
			local gp, gh, groute = open_host();
			gone[i] = upvalues(groute)[i];
			native.close(gh);
		end
		collectgarbage(); collectgarbage();
		for i, up in ipairs(list) do
			tamper(problems, ("upvalue %d from a live host"):format(i), route, host, i, live[i] and live[i].value, up.value);
			tamper(problems, ("upvalue %d from a closed host"):format(i), route, host, i, closed[i] and closed[i].value, up.value);
			tamper(problems, ("upvalue %d from a collected host"):format(i), route, host, i, gone[i] and gone[i].value, up.value);
			-- Every upvalue of the live host's route at once, then put back.
			for j, other in ipairs(live) do debug.setupvalue(route, j, other.value); end
			check_route(problems, "all upvalues of another host", true, route, "presence", nil, T .. "/all", host, nil, 0);
			for j, orig in ipairs(list) do debug.setupvalue(route, j, orig.value); end
		end
		round_trip(problems, "after", route, host);
		assert.are.same({}, problems);
	end);
end);
