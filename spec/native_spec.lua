-- The native core's Lua API (docs/INTERNALS.md), called from Lua the way the shim calls
-- it: Lua 5.4 (Debian's Prosody), and 5.3, 5.2, 5.1 and LuaJIT against the library built
-- for each (the spec matrix; spec/helpers/compat.lua). The library is found through
-- CLIENT_PROXY_SO (exported by the Makefile), else ./target/release/libclient_proxy.so
-- (run `cargo build --release` first).
--
-- State is kept per host inside the library and the library is loaded once per process,
-- so every test uses a host name of its own (see fresh_host).

local SO = os.getenv("CLIENT_PROXY_SO")
if SO == nil or SO == "" then
	SO = "./target/release/libclient_proxy.so";
end

local function load_native()
	local open, err = package.loadlib(SO, "luaopen_client_proxy");
	assert(open, ("cannot load %s (run `cargo build --release`): %s"):format(SO, tostring(err)));
	return open();
end

local native = load_native();

-- Lua 5.1 and LuaJIT have no table.pack, and table.unpack is unpack there.
local pack = table.pack or function (...) return { n = select("#", ...), ... }; end
local unpack = table.unpack or unpack;

local support = require "support";
local number_type = support.number_type;
-- Unique per test and per run (see support.host_namer).
local fresh_host = support.host_namer("native", "test");

local T = "service@example.org";
local R = "user@example.org/abc";

local function new_proxy(opts)
	opts = opts or {};
	local host = opts.host or fresh_host();
	local p = native.new_proxy({
		host = host;
		target = opts.target or T;
		jat = opts.jat;
		timeout = opts.timeout;
		max_pending = opts.max_pending;
		max_pending_per_requester = opts.max_pending_per_requester;
		strategy = opts.strategy;
		messages = opts.messages;
		outbound = opts.outbound;
		presence = opts.presence;
	});
	return p, host;
end

-- The error text a raising native call produced (mlua raises error objects; the shim
-- and Prosody see them through tostring()).
local function raised(f, ...)
	local ok, err = pcall(f, ...);
	assert.is_false(ok, "expected an error to be raised");
	return tostring(err);
end

local function online(p, res, priority, now)
	return p:route("presence", nil, T .. "/" .. res, "ignored.host", nil, now or 0, priority);
end

local function offline(p, res, now)
	return p:route("presence", "unavailable", T .. "/" .. res, "ignored.host", nil, now or 0, nil);
end

-- Request numbers are positive integers (the shim keys held[seq] with them).
local function assert_seq(seq, what)
	assert.are.equal("integer", number_type(seq), (what or "seq") .. " is not an integer: " .. tostring(seq));
	assert.is_true(seq > 0, (what or "seq") .. " is not positive: " .. tostring(seq));
end

-- Routes a request that must be forwarded; returns to, from, seq.
local function forward(p, kind, requester, to, id, now)
	local v = pack(p:route("iq", kind, requester, to, id, now or 0, nil));
	assert.are.equal("forward", v[1], ("%s %s not forwarded: %s %s %s"):format(kind, id,
		tostring(v[1]), tostring(v[2]), tostring(v[3])));
	assert.are.equal(4, v.n);
	assert_seq(v[4], "forward seq");
	return v[2], v[3], v[4];
end

-- The resource (of the target) a forwarded request went to.
local function resource_of(to)
	assert.are.equal(T .. "/", to:sub(1, #T + 1));
	return to:sub(#T + 2);
end

-- Splits a flat answers list (7 per entry: seq, to, from, id, etype, condition, text)
-- into entries keyed by request id.
local function answers_by_id(list)
	assert.are.equal(0, #list % 7, "answers list is not 7 per entry: " .. #list);
	local by_id = {};
	for i = 1, #list, 7 do
		assert_seq(list[i], "answer seq");
		local id = list[i + 3];
		assert.is_nil(by_id[id], "answered twice: " .. tostring(id));
		by_id[id] = { unpack(list, i, i + 6) };
	end
	return by_id;
end

local GONE = "The implementing resource went offline before answering";

describe("native library", function ()
	it("exports version and the four functions", function ()
		assert.are.equal("string", type(native.version));
		local cargo = assert(io.open("Cargo.toml")):read("*a");
		local cargo_version = cargo:match('\nversion%s*=%s*"([^"]+)"');
		assert.are.equal(cargo_version, native.version);
		assert.are.equal("function", type(native.new_proxy));
		assert.are.equal("function", type(native.jat_encode));
		assert.are.equal("function", type(native.jat_decode));
	end);
end);

describe("jat_encode / jat_decode", function ()
	local jids = {
		"user@example.org/abc",
		"user@example.org",
		"example.org",
		"user@example.org/a/b/c",
		"user@example.org/res@with@ats",
		"user@example.org/@leading-at",
		"obrien@example.org/it's 'quoted'",
		"user@example.org/ünïcødé 日本語 ✓",
		"user@example.org/" .. ("r"):rep(1000),
	};

	it("the test JIDs are legal, prepped JIDs as Prosody delivers them", function ()
		local jid_util = require "util.jid";
		for _, jid in ipairs(jids) do
			assert.are.equal(jid, jid_util.prep(jid));
		end
	end);

	it("plain mode is the full JID unchanged (the original's format) and round-trips", function ()
		for _, jid in ipairs(jids) do
			local res, err = native.jat_encode("plain", jid);
			assert.are.equal(jid, res, err);
			assert.is_nil(err);
			local back, derr = native.jat_decode("plain", res);
			assert.are.equal(jid, back, derr);
			assert.is_nil(derr);
		end
	end);

	it("base64 mode is base64url without padding and round-trips", function ()
		assert.are.equal("dXNlckBleGFtcGxlLm9yZy9hYmM", native.jat_encode("base64", R));
		for _, jid in ipairs(jids) do
			if #jid <= 700 then
				local res, err = native.jat_encode("base64", jid);
				assert.is_string(res, err);
				assert.is_nil(res:find("[^A-Za-z0-9_-]"), "not base64url: " .. res);
				local back, derr = native.jat_decode("base64", res);
				assert.are.equal(jid, back, derr);
			end
		end
		-- A JID whose base64url needs both '-' and '_' (where base64 has '+' and '/').
		local odd = "user@example.org/??>>~~";
		local res = assert(native.jat_encode("base64", odd));
		assert.are.equal("dXNlckBleGFtcGxlLm9yZy8_Pz4-fn4", res);
		assert.are.equal(odd, native.jat_decode("base64", res));
	end);

	it("encode refuses (nil, err) what would pass the 1023-byte resource limit", function ()
		local prefix = "user@example.org/";
		local fits = prefix .. ("x"):rep(1023 - #prefix);
		assert.are.equal(fits, native.jat_encode("plain", fits));
		local res, err = native.jat_encode("plain", fits .. "x");
		assert.is_nil(res);
		assert.matches("1023", err);
		-- base64 grows by 4/3: 800 bytes encode to 1067.
		local b, berr = native.jat_encode("base64", prefix .. ("y"):rep(800 - #prefix));
		assert.is_nil(b);
		assert.is_string(berr);
	end);

	it("decode refuses garbage with nil and a message and never raises", function ()
		local garbage = {
			"", "\0", "\255\254\253", "x\0y@z", "user@example.org/a\0b",
			"@token", "@", "@@", "@0123456789abcdef", "@example.org",
			"user@/x", "user@example.org/", "a@b/", "/res", "a b@c", "a@b@c",
			"<>@x", "a@[::1", "user@exa mple.org", "\226\128\174@x" --[[ U+202E ]],
			("a"):rep(1000000), ("\255"):rep(100000), "u@" .. ("d"):rep(5000),
		};
		for _, mode in ipairs({ "plain", "base64" }) do
			for _, s in ipairs(garbage) do
				local ok, res, err = pcall(native.jat_decode, mode, s);
				local shown = ("%s %q"):format(mode, s:sub(1, 40));
				assert.is_true(ok, "raised on " .. shown .. ": " .. tostring(res));
				assert.is_nil(res, "accepted " .. shown);
				assert.is_string(err, "no message for " .. shown);
				assert.is_true(#err > 0 and #err < 200, "odd message for " .. shown);
			end
		end
	end);

	it("base64 decode refuses bad alphabet, padding, non-UTF-8 and non-JIDs", function ()
		local cases = {
			["!!!!"] = "bad base64url",
			["dXNl==="] = "bad base64url",
			["dXNlckBleGFtcGxlLm9yZy9hYmM="] = "bad base64url", -- padded
			["dXNlckBleGFtcGxlLm9yZy9hYmM+"] = "bad base64url", -- '+' is not base64url
			["__4"] = "not UTF%-8", -- 0xff 0xfe
			["YSBiQGM"] = "not a JID", -- "a b@c"
		};
		for input, why in pairs(cases) do
			local res, err = native.jat_decode("base64", input);
			assert.is_nil(res, input);
			assert.matches(why, err, 1, false);
		end
	end);

	it("a token never decodes without the proxy that issued it", function ()
		local res, err = native.jat_decode("plain", "@0123456789abcdef");
		assert.is_nil(res);
		assert.matches("token", err);
	end);
end);

describe("new_proxy", function ()
	local function config_error(opts)
		return raised(native.new_proxy, opts);
	end

	it("requires target_address", function ()
		local msg = config_error({ host = fresh_host() });
		assert.matches("^target_address: ", msg);
		assert.matches("required", msg);
	end);

	it("refuses malformed targets, naming target_address", function ()
		local host = fresh_host();
		for _, bad in ipairs({ "", "not a jid", "a b@c", "@x", "example.org", "a@b/c",
				"service@example.org/res", "a@" .. host }) do
			local msg = config_error({ host = host, target = bad });
			assert.matches("^target_address: ", msg, 1, false);
		end
		assert.matches("bare JID", config_error({ host = host, target = "a@b/c" }));
	end);

	it("refuses a bad client_proxy_jat", function ()
		for _, bad in ipairs({ "rot13", "PLAIN", "" }) do
			local msg = config_error({ host = fresh_host(), target = T, jat = bad });
			assert.matches("^client_proxy_jat: ", msg);
		end
	end);

	it("refuses a bad client_proxy_timeout", function ()
		for _, bad in ipairs({ 0, -1, 0 / 0, math.huge }) do
			local msg = config_error({ host = fresh_host(), target = T, timeout = bad });
			assert.matches("^client_proxy_timeout: ", msg);
		end
	end);

	it("refuses bad limits, naming the option", function ()
		assert.matches("^client_proxy_max_pending: ",
			config_error({ host = fresh_host(), target = T, max_pending = 1.5 }));
		assert.matches("^client_proxy_max_pending: ",
			config_error({ host = fresh_host(), target = T, max_pending = 0 }));
		assert.matches("^client_proxy_max_pending_per_requester: ",
			config_error({ host = fresh_host(), target = T, max_pending_per_requester = -1 }));
	end);

	it("accepts good options and normalises the target", function ()
		local p, host = new_proxy({ target = "Service@Example.ORG", jat = "base64", timeout = 2.5,
			max_pending = 10, max_pending_per_requester = 3 });
		local s = p:status();
		assert.are.equal("service@example.org", s.target);
		assert.are.equal(host, s.host);
		assert.are.equal(0, s.pending);
		assert.are.same({}, s.resources);
	end);
end);

describe("proxy:route", function ()
	it("target presence brings a resource online (verdict consumed)", function ()
		local p, host = new_proxy();
		local action, reason, b, c = p:route("presence", nil, T .. "/a", host, nil, 0, nil);
		assert.are.equal("consumed", action);
		assert.are.equal("resource online", reason);
		assert.is_nil(b);
		assert.is_nil(c);
		assert.are.same({ "consumed", "resource updated" },
			{ p:route("presence", nil, T .. "/a", host, nil, 0, 5) });
		local answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
	end);

	it("forwards an iq get to the online resource from host/JAT (the README exchange)", function ()
		local p, host = new_proxy();
		online(p, "a");
		local action, to, from, seq = p:route("iq", "get", R, host, "1234", 0, nil);
		assert.are.equal("forward", action);
		assert.are.equal(T .. "/a", to);
		assert.are.equal(host .. "/" .. R, from);
		assert_seq(seq);
		-- iq set and the other addresses of the component are forwarded too
		local v2 = { p:route("iq", "set", R, host .. "/x", "s1", 0, nil) };
		assert.are.same({ "forward", T .. "/a", host .. "/" .. R }, { v2[1], v2[2], v2[3] });
		local v3 = { p:route("iq", "get", R, "node@" .. host, "n1", 0, nil) };
		assert.are.same({ "forward", T .. "/a", host .. "/" .. R }, { v3[1], v3[2], v3[3] });
		-- each request has a number of its own
		assert_seq(v2[4]);
		assert_seq(v3[4]);
		assert.are_not.equal(seq, v2[4]);
		assert.are_not.equal(seq, v3[4]);
		assert.are_not.equal(v2[4], v3[4]);
		assert.are.equal(3, p:status().pending);
	end);

	it("sends the reply to the requester from the host, once", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, jat_from, fseq = forward(p, "get", R, host, "1234");
		local action, to, from, seq = p:route("iq", "result", T .. "/a", jat_from, "1234", 1, nil);
		assert.are.equal("deliver", action);
		assert.are.equal(R, to);
		assert.are.equal(host, from);
		assert_seq(seq, "deliver seq");
		assert.are.equal(fseq, seq);
		assert.are.equal(0, p:status().pending);
		-- the same reply again answers nothing
		local again, why = p:route("iq", "result", T .. "/a", jat_from, "1234", 2, nil);
		assert.are.equal("drop", again);
		assert.is_string(why);
	end);

	it("sends an error reply of the implementing client back the same way", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, jat_from, seq = forward(p, "get", R, host, "e1");
		-- a is online: the error is the implementing client's answer, not a loss
		assert.are.same({ "deliver", R, host, seq },
			{ p:route("iq", "error", T .. "/a", jat_from, "e1", 1, nil) });
		local answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
	end);

	it("drops replies nobody asked for", function ()
		local p, host = new_proxy();
		online(p, "a");
		online(p, "b");
		-- unknown id
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", host .. "/" .. R, "nope", 0, nil)));
		-- known id, but from a resource the request was not sent to
		local to, _, seq = forward(p, "get", R, host, "q1");
		local other = (to == T .. "/a") and "b" or "a";
		assert.are.equal("drop", (p:route("iq", "result", T .. "/" .. other, host .. "/" .. R, "q1", 0, nil)));
		-- to an address this proxy did not produce
		assert.are.equal("drop", (p:route("iq", "result", to, host .. "/@deadbeefdeadbeef", "q1", 0, nil)));
		-- to the bare component
		assert.are.equal("drop", (p:route("iq", "result", to, host, "q1", 0, nil)));
		-- the request is still outstanding and its real reply still goes through
		assert.are.same({ "deliver", R, host, seq }, { p:route("iq", "result", to, host .. "/" .. R, "q1", 0, nil) });
	end);

	it("answers service-unavailable when no resource is online", function ()
		local p, host = new_proxy();
		local action, etype, cond, text = p:route("iq", "get", R, host, "1", 0, nil);
		assert.are.equal("error", action);
		assert.are.equal("cancel", etype);
		assert.are.equal("service-unavailable", cond);
		assert.are.equal("No implementing resource is online", text);
		assert.are.equal(0, p:status().pending);
	end);

	it("refuses an iq without id", function ()
		local p, host = new_proxy();
		online(p, "a");
		assert.are.same({ "error", "modify", "bad-request", "An iq request needs an id" },
			{ p:route("iq", "get", R, host, nil, 0, nil) });
	end);

	it("with messages and presence off, refuses messages and presence from requesters (the original)", function ()
		local p, host = new_proxy({ messages = false, presence = false });
		online(p, "a");
		assert.are.same({ "error", "modify", "bad-request", "An iq request needs an id" },
			{ p:route("iq", "get", R, host, nil, 0, nil) });
		assert.are.same({ "error", "cancel", "feature-not-implemented", "This service does not proxy messages" },
			{ p:route("message", "chat", R, host, "m1", 0, nil) });
		assert.are.same({ "error", "cancel", "bad-request", "This service takes no presence" },
			{ p:route("presence", "subscribe", R, host, nil, 0, nil) });
		assert.are.same({ "error", "cancel", "bad-request", "This service takes no presence" },
			{ p:route("presence", nil, R, host, nil, 0, 0) });
	end);

	it("by default, takes messages and subscriptions from requesters", function ()
		local p, host = new_proxy();
		online(p, "a");
		assert.are.same({ "relay", T .. "/a", host .. "/" .. R },
			{ p:route("message", "chat", R, host, "m1", 0, nil) });
		assert.are.same({ "subscription", "subscribe" },
			{ p:route("presence", "subscribe", R, host, nil, 0, nil) });
		assert.are.equal("drop", (p:route("presence", nil, R, host, nil, 0, 0)));
	end);

	it("never answers a stanza of type error (any switches)", function ()
		for _, on in ipairs({ true, false }) do
			local p, host = new_proxy({ messages = on, outbound = on, presence = on });
			online(p, "a");
			for _, name in ipairs({ "iq", "message", "presence" }) do
				for _, from in ipairs({ R, T .. "/a", T .. "/unknown", "other.example" }) do
					for _, to in ipairs({ host, host .. "/" .. R, "node@" .. host }) do
						local what = ("%s error from %s to %s (switches %s)"):format(name, from, to, tostring(on));
						local action = p:route(name, "error", from, to, "e", 0, nil);
						assert.are_not.equal("error", action, what);
						-- a bounce of a user's message goes back to the user: relayed, not answered
						assert.is_true(action == "drop" or action == "consumed" or action == "deliver"
							or (on and name == "message" and action == "relay"), what .. ": " .. tostring(action));
					end
				end
			end
		end
	end);

	it("drops a stanza without from", function ()
		local p, host = new_proxy();
		assert.are.equal("drop", (p:route("iq", "get", nil, host, "1", 0, nil)));
	end);

	it("refuses a duplicate id and over-limit requesters", function ()
		local p, host = new_proxy({ max_pending = 2, max_pending_per_requester = 1 });
		online(p, "a");
		forward(p, "get", R, host, "1");
		local a, etype, cond, text = p:route("iq", "get", R, host, "1", 0, nil);
		assert.are.same({ "error", "modify", "bad-request", "A request with this id from you is still outstanding" },
			{ a, etype, cond, text });
		a, etype, cond = p:route("iq", "get", R, host, "2", 0, nil);
		assert.are.same({ "error", "wait", "resource-constraint" }, { a, etype, cond });
		forward(p, "get", "b@example.org/x", host, "1");
		a, etype, cond = p:route("iq", "get", "c@example.org/x", host, "1", 0, nil);
		assert.are.same({ "error", "wait", "resource-constraint" }, { a, etype, cond });
	end);

	it("base64 mode writes the requester as base64url and maps the reply back", function ()
		local p, host = new_proxy({ jat = "base64" });
		online(p, "a");
		local _, from, seq = forward(p, "get", R, host, "b1");
		assert.are.equal(host .. "/dXNlckBleGFtcGxlLm9yZy9hYmM", from);
		assert.are.same({ "deliver", R, host, seq }, { p:route("iq", "result", T .. "/a", from, "b1", 1, nil) });
	end);

	it("gives an overlong requester a short token that maps back", function ()
		local p, host = new_proxy();
		online(p, "a");
		local long = "user@example.org/" .. ("r"):rep(1023);
		local _, from, seq = forward(p, "get", long, host, "t1");
		local res = from:sub(#host + 2);
		assert.are.equal(host .. "/", from:sub(1, #host + 1));
		assert.matches("^@", res);
		assert.is_true(#res < 64);
		assert.are.same({ "deliver", long, host, seq }, { p:route("iq", "result", T .. "/a", from, "t1", 1, nil) });
	end);
end);

describe("lost requests", function ()
	it("a resource going offline owes recipient-unavailable for its requests (take_answers)", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, _, seq1 = forward(p, "get", R, host, "r1");
		local _, _, seq2 = forward(p, "set", "other@example.org/x", host, "r2");
		local answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
		local action, reason = offline(p, "a", 1);
		assert.are.equal("consumed", action);
		assert.are.equal("resource offline", reason);
		answers, retries = p:take_answers();
		-- no other resource: the get cannot be retried either
		assert.are.same({}, retries);
		assert.are.equal(14, #answers);
		local got = answers_by_id(answers);
		assert.are.same({ seq1, R, host, "r1", "wait", "recipient-unavailable", GONE }, got.r1);
		assert.are.same({ seq2, "other@example.org/x", host, "r2", "wait", "recipient-unavailable", GONE }, got.r2);
		-- drained
		answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
		assert.are.equal(0, p:status().pending);
		assert.are.same({}, p:status().resources);
		-- and nobody is left to answer
		assert.are.equal("error", (p:route("iq", "get", R, host, "r3", 2, nil)));
	end);

	it("presence error or unsubscribed from the target drops everything", function ()
		for _, kind in ipairs({ "error", "unsubscribed" }) do
			local p, host = new_proxy();
			online(p, "a");
			online(p, "b");
			local _, _, seq = forward(p, "get", R, host, "1");
			assert.are.equal("consumed", (p:route("presence", kind, T, host, nil, 0, nil)));
			local answers, retries = p:take_answers();
			-- every resource is gone: the get is answered, not retried
			assert.are.same({}, retries, kind);
			assert.are.same({ seq, R, host, "1", "wait", "recipient-unavailable", GONE }, answers, kind);
			assert.are.same({}, p:status().resources);
			assert.are.equal(0, p:status().pending);
		end
	end);

	it("expire(now) answers remote-server-timeout after the timeout, once", function ()
		local p, host = new_proxy({ timeout = 10 });
		online(p, "a", nil, 100);
		local _, from, seq = forward(p, "get", R, host, "slow", 100);
		assert.are.same({}, p:expire(100));
		assert.are.same({}, p:expire(109.5));
		assert.are.equal(1, p:status().pending);
		assert.are.same({ seq, R, host, "slow", "wait", "remote-server-timeout", "The implementing client did not answer in time" },
			p:expire(110));
		assert.are.same({}, p:expire(200));
		assert.are.equal(0, p:status().pending);
		-- a late answer is not delivered
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", from, "slow", 201, nil)));
	end);

	it("a lost get is retried once on another online resource, same seq, same deadline", function ()
		local R2 = "other@example.org/x";
		local p, host = new_proxy({ timeout = 10 });
		-- only a online: both gets go to a
		online(p, "a");
		local to1, from1, seq1 = forward(p, "get", R, host, "g1", 0);
		local to2, from2, seq2 = forward(p, "get", R2, host, "g2", 0);
		assert.are.equal(T .. "/a", to1);
		assert.are.equal(T .. "/a", to2);
		online(p, "b");
		local action, reason = offline(p, "a", 5);
		assert.are.equal("consumed", action);
		assert.are.equal("resource offline", reason);
		local answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.equal(6, #retries);
		local by_seq = {};
		for i = 1, #retries, 3 do
			assert_seq(retries[i], "retry seq");
			by_seq[retries[i]] = { retries[i + 1], retries[i + 2] };
		end
		-- to the other resource, from the same JAT address as the first forward
		assert.are.same({ T .. "/b", from1 }, by_seq[seq1]);
		assert.are.same({ T .. "/b", from2 }, by_seq[seq2]);
		-- drained
		answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
		-- still outstanding, now held by b
		local s = p:status();
		assert.are.equal(2, s.pending);
		assert.are.equal(1, #s.resources);
		assert.are.equal("b", s.resources[1].name);
		assert.are.equal(2, s.resources[1].pending);
		-- the deadline counts from the arrival (0 + 10), not from the retry (5)
		assert.are.same({}, p:expire(9.9));
		local expired = answers_by_id(p:expire(10));
		local text = "The implementing client did not answer in time";
		assert.are.same({ seq1, R, host, "g1", "wait", "remote-server-timeout", text }, expired.g1);
		assert.are.same({ seq2, R2, host, "g2", "wait", "remote-server-timeout", text }, expired.g2);
		assert.are.equal(0, p:status().pending);
	end);

	it("a lost set is answered recipient-unavailable even with another resource online", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, from, gseq = forward(p, "get", R, host, "g", 0);
		local _, _, sseq = forward(p, "set", R, host, "s", 0);
		online(p, "b");
		assert.are.equal("consumed", (offline(p, "a", 1)));
		local answers, retries = p:take_answers();
		-- in the same batch: the get is retried, the set (side effects) is answered
		assert.are.same({ gseq, T .. "/b", from }, retries);
		assert.are.same({ sseq, R, host, "s", "wait", "recipient-unavailable", GONE }, answers);
		assert.are.equal(1, p:status().pending);
		-- a late answer to the set is not delivered
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", from, "s", 2, nil)));
	end);

	it("a second loss of a retried get is answered, even with another resource online", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, from, seq = forward(p, "get", R, host, "twice", 0);
		online(p, "b");
		assert.are.equal("consumed", (offline(p, "a", 1)));
		local answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({ seq, T .. "/b", from }, retries);
		-- a comes back: a resource to retry on exists, but the get was retried once already
		online(p, "a", nil, 2);
		assert.are.equal("consumed", (offline(p, "b", 3)));
		answers, retries = p:take_answers();
		assert.are.same({}, retries);
		assert.are.same({ seq, R, host, "twice", "wait", "recipient-unavailable", GONE }, answers);
		assert.are.equal(0, p:status().pending);
		-- and it is answered only once: no late reply and no timeout
		assert.are.equal("drop", (p:route("iq", "result", T .. "/b", from, "twice", 4, nil)));
		assert.are.same({}, p:expire(1e9));
	end);

	it("a retried get is answered by its new resource; the old one's reply is dropped", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, from, seq = forward(p, "get", R, host, "moved", 0);
		online(p, "b");
		assert.are.equal("consumed", (offline(p, "a", 1)));
		local _, retries = p:take_answers();
		assert.are.same({ seq, T .. "/b", from }, retries);
		-- a late result or error from a (offline) answers nothing and is no loss
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", from, "moved", 2, nil)));
		assert.are.equal("drop", (p:route("iq", "error", T .. "/a", from, "moved", 2, nil)));
		-- nor once a is back online
		online(p, "a", nil, 3);
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", from, "moved", 3, nil)));
		local answers;
		answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
		assert.are.equal(1, p:status().pending);
		-- b's reply is delivered, with the request's seq
		assert.are.same({ "deliver", R, host, seq },
			{ p:route("iq", "result", T .. "/b", from, "moved", 4, nil) });
		assert.are.equal(0, p:status().pending);
		assert.are.equal("drop", (p:route("iq", "result", T .. "/b", from, "moved", 5, nil)));
	end);
end);

describe("proxy:status", function ()
	it("lists target, host, pending and resources with priority and pending", function ()
		local p, host = new_proxy();
		online(p, "a", 7);
		online(p, "b", -1);
		p:route("iq", "get", R, host, "1", 0, nil);
		local s = p:status();
		assert.are.equal(T, s.target);
		assert.are.equal(host, s.host);
		assert.are.equal(1, s.pending);
		assert.are.equal(2, #s.resources);
		local by_name = {};
		for _, r in ipairs(s.resources) do by_name[r.name] = r; end
		assert.are.equal(7, by_name.a.priority);
		assert.are.equal(-1, by_name.b.priority);
		assert.are.equal(1, by_name.a.pending + by_name.b.pending);
	end);
end);

describe("state per host", function ()
	it("new_proxy with the same host and target again keeps state (module reload)", function ()
		local p1, host = new_proxy({ timeout = 30 });
		online(p1, "a");
		local _, from, seq = forward(p1, "get", R, host, "keep");
		-- the reloaded module builds a new handle with the same options (a changed
		-- timeout is applied, the state stays)
		local p2 = new_proxy({ host = host, timeout = 60 });
		local s = p2:status();
		assert.are.equal(1, s.pending);
		assert.are.equal(1, #s.resources);
		assert.are.equal("a", s.resources[1].name);
		-- the reply to the request made before the reload is delivered through the new handle
		assert.are.same({ "deliver", R, host, seq }, { p2:route("iq", "result", T .. "/a", from, "keep", 1, nil) });
		-- both handles see the same state
		assert.are.equal(0, p1:status().pending);
		-- and the resource is still used without a new presence
		local _, _, after = forward(p2, "get", R, host, "after", 2);
		-- numbering goes on: a number is never handed out twice
		assert.is_true(after > seq);
	end);

	it("a reload with another target starts afresh", function ()
		local p1, host = new_proxy();
		online(p1, "a");
		local p2 = new_proxy({ host = host, target = "other@example.org" });
		assert.are.equal("other@example.org", p2:status().target);
		assert.are.same({}, p2:status().resources);
		assert.are.equal("error", (p2:route("iq", "get", R, host, "1", 0, nil)));
	end);

	it("two hosts keep separate state", function ()
		local pa, host_a = new_proxy();
		local pb, host_b = new_proxy();
		online(pa, "a");
		assert.are.equal(1, #pa:status().resources);
		assert.are.equal(0, #pb:status().resources);
		local to, from = forward(pa, "get", R, host_a, "1");
		assert.are.same({ T .. "/a", host_a .. "/" .. R }, { to, from });
		local action, _, cond = pb:route("iq", "get", R, host_b, "1", 0, nil);
		assert.are.equal("error", action);
		assert.are.equal("service-unavailable", cond);
		-- the same requester and id on the other host is a separate request
		assert.are.equal(1, pa:status().pending);
		assert.are.equal(0, pb:status().pending);
	end);
end);


local TIMED_OUT = "The implementing client did not answer in time";

describe("messages", function ()
	it("a user's messages are relayed to one resource (sticky) from host/JAT, to any component address", function ()
		local p, host = new_proxy();
		online(p, "a");
		online(p, "b");
		online(p, "c");
		local first = { p:route("message", "chat", R, host, "m0", 0, nil) };
		assert.are.equal("relay", first[1]);
		assert.are.equal(3, #first, "relay, to, from (no third value)");
		local res = resource_of(first[2]);
		assert.is_true(res == "a" or res == "b" or res == "c", res);
		assert.are.equal(host .. "/" .. R, first[3]);
		for i, to in ipairs({ host, host .. "/x", "node@" .. host, host, host }) do
			for _, kind in ipairs({ "chat", "normal" }) do
				assert.are.same(first, { p:route("message", kind, R, to, "m" .. i, i, nil) }, "message " .. i .. " moved");
			end
		end
		local nothing = { p:route("message", nil, R, host, nil, 6, nil) };
		assert.are.same(first, nothing, "a message without type or id");
		-- messages are not tracked
		assert.are.equal(0, p:status().pending);
		assert.are.equal(12, p:status().counters.messages_in);
		-- the resource leaves: the user moves on to another one, and stays there
		offline(p, res, 7);
		local moved = { p:route("message", "chat", R, host, "n1", 8, nil) };
		assert.are.equal("relay", moved[1]);
		assert.are_not.equal(first[2], moved[2]);
		for i = 2, 5 do
			assert.are.same(moved, { p:route("message", "chat", R, host, "n" .. i, 8, nil) });
		end
	end);

	it("a user's message without an eligible resource online: service-unavailable", function ()
		local p, host = new_proxy();
		local v = { p:route("message", "chat", R, host, "m", 0, nil) };
		assert.are.same({ "error", "cancel", "service-unavailable" }, { v[1], v[2], v[3] });
		assert.are.equal(0, p:status().counters.messages_in);
	end);

	it("a target resource's message to a JAT address goes to the user from the host", function ()
		local p, host = new_proxy();
		online(p, "a");
		assert.are.same({ "relay", R, host }, { p:route("message", "chat", T .. "/a", host .. "/" .. R, "r1", 0, nil) });
		-- to a bare user too, and from a resource the proxy has not seen
		assert.are.same({ "relay", "user@example.org", host },
			{ p:route("message", "normal", T .. "/z", host .. "/user@example.org", nil, 0, nil) });
		assert.are.equal(2, p:status().counters.messages_out);
		-- an address the proxy cannot map back: item-not-found
		local v = { p:route("message", "chat", T .. "/a", host .. "/@0123456789abcdef", "r2", 0, nil) };
		assert.are.same({ "error", "cancel", "item-not-found" }, { v[1], v[2], v[3] });
		-- to the bare component: bad-request (not addressed to anybody)
		v = { p:route("message", "chat", T .. "/a", host, "r3", 0, nil) };
		assert.are.same({ "error", "cancel", "bad-request" }, { v[1], v[2], v[3] });
		-- base64 mode maps back too
		local q, qhost = new_proxy({ jat = "base64" });
		online(q, "a");
		assert.are.same({ "relay", R, qhost },
			{ q:route("message", "chat", T .. "/a", qhost .. "/dXNlckBleGFtcGxlLm9yZy9hYmM", "r", 0, nil) });
	end);

	it("bounces go back both ways and are never answered", function ()
		local p, host = new_proxy();
		online(p, "a");
		online(p, "b");
		local jat = host .. "/" .. R;
		-- nobody wrote to R yet: the user's bounce has nowhere to go
		assert.are.equal("drop", (p:route("message", "error", R, host, "x", 0, nil)));
		-- /b writes to R; R's server bounces it: back to /b, from R's JAT address
		assert.are.same({ "relay", R, host }, { p:route("message", "chat", T .. "/b", jat, "w1", 0, nil) });
		assert.are.same({ "relay", T .. "/b", jat }, { p:route("message", "error", R, host, "w1", 0, nil) });
		-- /a writes last: the bounce follows the last writer
		p:route("message", "chat", T .. "/a", jat, "w2", 0, nil);
		assert.are.same({ "relay", T .. "/a", jat }, { p:route("message", "error", R, host, "w2", 0, nil) });
		-- another user's bounce does not go to R's writer
		assert.are.equal("drop", (p:route("message", "error", "other@example.org/x", host, "w2", 0, nil)));
		-- a bounce of R's message from a target resource: back to R from the host
		assert.are.same({ "relay", R, host }, { p:route("message", "error", T .. "/a", jat, "u1", 0, nil) });
		-- ... but never to an address the proxy cannot map back, and never answered
		assert.are.equal("drop", (p:route("message", "error", T .. "/a", host .. "/@0123456789abcdef", "u2", 0, nil)));
		-- the writer goes offline: its bounces are dropped
		offline(p, "a");
		assert.are.equal("drop", (p:route("message", "error", R, host, "w3", 0, nil)));
		-- bounces are not counted as messages
		local c = p:status().counters;
		assert.are.same({ 0, 2 }, { c.messages_in, c.messages_out });
	end);
end);

describe("requests from the implementing client (outbound)", function ()
	it("an iq get/set to a JAT address goes to the user from the host, under an id cp<hex> of the proxy's", function ()
		local p, host = new_proxy();
		online(p, "a");
		online(p, "b");
		local jat = host .. "/" .. R;
		local a = { p:route("iq", "get", T .. "/a", jat, "same", 0, nil) };
		assert.are.equal(4, #a);
		assert.are.same({ "rewrite", R, host }, { a[1], a[2], a[3] });
		assert.matches("^cp%x+$", a[4]);
		-- another resource, the same id: another id towards the user
		local b = { p:route("iq", "set", T .. "/b", jat, "same", 0, nil) };
		assert.are.same({ "rewrite", R, host }, { b[1], b[2], b[3] });
		assert.matches("^cp%x+$", b[4]);
		assert.are_not.equal(a[4], b[4]);
		-- the same resource, the same id again (its first is outstanding): yet another id
		local a2 = { p:route("iq", "get", T .. "/a", jat, "same", 0, nil) };
		assert.are.equal("rewrite", a2[1]);
		assert.is_true(a2[4] ~= a[4] and a2[4] ~= b[4]);
		local s = p:status();
		assert.are.equal(3, s.outbound_pending);
		assert.are.equal(3, s.counters.outbound);
		assert.are.equal(0, s.pending, "outbound requests are not requests from users");

		-- the user's results come back to the resource that asked, from the user's JAT
		-- address, with the id it used
		assert.are.same({ "rewrite", T .. "/b", jat, "same" }, { p:route("iq", "result", R, host, b[4], 1, nil) });
		assert.are.same({ "rewrite", T .. "/a", jat, "same" }, { p:route("iq", "result", R, host, a[4], 1, nil) });
		-- answered once
		assert.are.equal("drop", (p:route("iq", "result", R, host, a[4], 1, nil)));
		-- only the user asked may answer
		assert.are.equal("drop", (p:route("iq", "result", "other@example.org/x", host, a2[4], 1, nil)));
		assert.are.equal("drop", (p:route("iq", "result", "user@example.org/other", host, a2[4], 1, nil)));
		-- an id the proxy never gave out
		assert.are.equal("drop", (p:route("iq", "result", R, host, "same", 1, nil)));
		assert.are.equal("drop", (p:route("iq", "result", R, host, "cpffff", 1, nil)));
		assert.are.same({ "rewrite", T .. "/a", jat, "same" }, { p:route("iq", "result", R, host, a2[4], 1, nil) });
		assert.are.equal(0, p:status().outbound_pending);
		-- and nothing times out later
		assert.are.same({}, p:expire(1e9));
	end);

	it("ids stay unique over many requests and resources", function ()
		-- (the per-requester limit counts outbound requests per user: raised here)
		local p, host = new_proxy({ max_pending_per_requester = 1000 });
		local seen = {};
		for _, res in ipairs({ "a", "b", "c" }) do
			online(p, res);
			for i = 1, 50 do
				local v = { p:route("iq", "get", T .. "/" .. res, host .. "/" .. R, "q" .. (i % 3), 0, nil) };
				assert.are.equal("rewrite", v[1]);
				assert.matches("^cp%x+$", v[4]);
				assert.is_nil(seen[v[4]], "id given out twice: " .. v[4]);
				seen[v[4]] = true;
			end
		end
	end);

	it("an unanswered outbound request gets the resource remote-server-timeout from the user's JAT address", function ()
		local p, host = new_proxy({ timeout = 10 });
		online(p, "a", nil, 100);
		local jat = host .. "/" .. R;
		local v = { p:route("iq", "set", T .. "/a", jat, "ask-1", 100, nil) };
		assert.are.equal("rewrite", v[1]);
		assert.are.same({}, p:expire(109.5));
		-- 7 fields; seq 0: the shim holds nothing for it
		assert.are.same({ 0, T .. "/a", jat, "ask-1", "wait", "remote-server-timeout", TIMED_OUT }, p:expire(110));
		assert.are.same({}, p:expire(1000));
		assert.are.equal(0, p:status().outbound_pending);
		-- the late answer goes nowhere
		assert.are.equal("drop", (p:route("iq", "result", R, host, v[4], 111, nil)));
	end);

	it("inbound and outbound timeouts come in one list, each 7 fields", function ()
		local p, host = new_proxy({ timeout = 10 });
		online(p, "a");
		local _, _, seq = forward(p, "get", R, host, "in-1", 0);
		p:route("iq", "get", T .. "/a", host .. "/" .. R, "out-1", 0, nil);
		local got = p:expire(10);
		assert.are.equal(14, #got);
		local by_id = {};
		for i = 1, #got, 7 do by_id[got[i + 3]] = { unpack(got, i, i + 6) }; end
		assert.are.same({ seq, R, host, "in-1", "wait", "remote-server-timeout", TIMED_OUT }, by_id["in-1"]);
		assert.are.same({ 0, T .. "/a", host .. "/" .. R, "out-1", "wait", "remote-server-timeout", TIMED_OUT }, by_id["out-1"]);
	end);

	it("the asking resource going offline: its outbound requests are forgotten, nothing is answered", function ()
		local p, host = new_proxy({ timeout = 10 });
		online(p, "a");
		local v = { p:route("iq", "get", T .. "/a", host .. "/" .. R, "q", 0, nil) };
		offline(p, "a", 1);
		local answers, retries = p:take_answers();
		assert.are.same({}, answers);
		assert.are.same({}, retries);
		assert.are.equal(0, p:status().outbound_pending);
		assert.are.equal("drop", (p:route("iq", "result", R, host, v[4], 2, nil)));
		assert.are.same({}, p:expire(100));
	end);

	it("refuses what it cannot send: unknown JAT, no id, not addressed", function ()
		local p, host = new_proxy();
		online(p, "a");
		local v = { p:route("iq", "get", T .. "/a", host .. "/@0123456789abcdef", "q", 0, nil) };
		assert.are.same({ "error", "cancel", "item-not-found" }, { v[1], v[2], v[3] });
		v = { p:route("iq", "get", T .. "/a", host .. "/" .. R, nil, 0, nil) };
		assert.are.same({ "error", "modify", "bad-request" }, { v[1], v[2], v[3] });
		v = { p:route("iq", "set", T .. "/a", host, "q", 0, nil) };
		assert.are.same({ "error", "cancel", "bad-request", "Address a requester through its translated resource" }, v);
		assert.are.equal(0, p:status().outbound_pending);
	end);

	it("the user's iq error answering an outbound request comes back to the resource", function ()
		-- README: "The user's result or error comes back to the resource that asked, with
		-- the id it used, from the user's JAT address."
		local p, host = new_proxy();
		online(p, "a");
		local v = { p:route("iq", "get", T .. "/a", host .. "/" .. R, "asked", 0, nil) };
		assert.are.equal("rewrite", v[1]);
		assert.are.same({ "rewrite", T .. "/a", host .. "/" .. R, "asked" },
			{ p:route("iq", "error", R, host, v[4], 1, nil) });
	end);
end);

describe("user subscriptions", function ()
	it("subscribe, unsubscribe and probe from a user are subscription verdicts; other presence is dropped", function ()
		local p, host = new_proxy();
		for _, kind in ipairs({ "subscribe", "unsubscribe", "probe" }) do
			for _, to in ipairs({ host, host .. "/x", "node@" .. host }) do
				assert.are.same({ "subscription", kind }, { p:route("presence", kind, "user@example.org", to, nil, 0, nil) });
			end
		end
		for _, kind in ipairs({ "unavailable", "subscribed", "unsubscribed" }) do
			assert.are.equal("drop", (p:route("presence", kind, R, host, nil, 0, nil)), kind);
		end
		assert.are.equal("drop", (p:route("presence", nil, R, host, nil, 0, 0)));
	end);
end);

describe("the switches", function ()
	local NO_MESSAGES = { "error", "cancel", "feature-not-implemented", "This service does not proxy messages" };
	local NO_OUTBOUND = { "error", "cancel", "feature-not-implemented", "Requests from the implementing client are not proxied" };
	local NO_PRESENCE = { "error", "cancel", "bad-request", "This service takes no presence" };

	it("messages = false: the original's feature-not-implemented both ways, bounces dropped", function ()
		local p, host = new_proxy({ messages = false });
		online(p, "a");
		assert.are.same(NO_MESSAGES, { p:route("message", "chat", R, host, "m", 0, nil) });
		assert.are.same(NO_MESSAGES, { p:route("message", nil, R, host, nil, 0, nil) });
		assert.are.same(NO_MESSAGES, { p:route("message", "chat", T .. "/a", host .. "/" .. R, "m", 0, nil) });
		assert.are.equal("drop", (p:route("message", "error", R, host, "m", 0, nil)));
		assert.are.equal("drop", (p:route("message", "error", T .. "/a", host .. "/" .. R, "m", 0, nil)));
		-- the other switches stay on
		assert.are.equal("rewrite", (p:route("iq", "get", T .. "/a", host .. "/" .. R, "q", 0, nil)));
		assert.are.equal("subscription", (p:route("presence", "subscribe", R, host, nil, 0, nil)));
	end);

	it("outbound = false: the original's feature-not-implemented for a request to a JAT address", function ()
		local p, host = new_proxy({ outbound = false });
		online(p, "a");
		assert.are.same(NO_OUTBOUND, { p:route("iq", "get", T .. "/a", host .. "/" .. R, "q", 0, nil) });
		assert.are.same(NO_OUTBOUND, { p:route("iq", "set", T .. "/a", host .. "/" .. R, "q", 0, nil) });
		assert.are.equal(0, p:status().outbound_pending);
		-- an iq result from a user answers nothing
		assert.are.equal("drop", (p:route("iq", "result", R, host, "cp1", 0, nil)));
		-- the other switches stay on
		assert.are.equal("relay", (p:route("message", "chat", R, host, "m", 0, nil)));
		assert.are.equal("subscription", (p:route("presence", "probe", R, host, nil, 0, nil)));
	end);

	it("presence = false: the original's bad-request for any presence from a user", function ()
		local p, host = new_proxy({ presence = false });
		online(p, "a");
		for _, kind in ipairs({ "subscribe", "unsubscribe", "probe", "unavailable" }) do
			assert.are.same(NO_PRESENCE, { p:route("presence", kind, R, host, nil, 0, nil) }, kind);
		end
		assert.are.same(NO_PRESENCE, { p:route("presence", nil, R, host, nil, 0, 0) });
		-- target presence is still the target's
		assert.are.equal("consumed", (online(p, "b")));
		-- the other switches stay on
		assert.are.equal("relay", (p:route("message", "chat", R, host, "m", 0, nil)));
		assert.are.equal("rewrite", (p:route("iq", "get", T .. "/a", host .. "/" .. R, "q", 0, nil)));
	end);
end);
