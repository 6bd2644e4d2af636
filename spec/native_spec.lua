-- The native core's Lua API (docs/INTERNALS.md), called from Lua 5.4 the way the shim
-- calls it. The library is found through CLIENT_PROXY_SO (exported by the Makefile),
-- else ./target/release/libclient_proxy.so (run `cargo build --release` first).
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

-- Unique per test and per run, so that state kept in the library from an earlier
-- test (or an earlier `busted --repeat` round) never leaks in.
local run_nonce = ("%x%x"):format(os.time() % 0x10000, math.random(0, 0xffffff));
local host_counter = 0;
local function fresh_host()
	host_counter = host_counter + 1;
	return ("native-%d-%s.test"):format(host_counter, run_nonce);
end

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

describe("native library", function ()
	it("exports version and the four functions", function ()
		assert.are.equal("string", type(native.version));
		local cargo = assert(io.open("Cargo.toml")):read("a");
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
			"<>@x", "a@[::1", "user@exa mple.org", "\u{202E}@x",
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
	it("target presence brings a resource online (verdict presence)", function ()
		local p, host = new_proxy();
		local action, reason, b, c = p:route("presence", nil, T .. "/a", host, nil, 0, nil);
		assert.are.equal("presence", action);
		assert.are.equal("resource online", reason);
		assert.is_nil(b);
		assert.is_nil(c);
		assert.are.same({ "presence", "resource updated" },
			{ p:route("presence", nil, T .. "/a", host, nil, 0, 5) });
		assert.are.equal(0, #p:take_answers());
	end);

	it("forwards an iq get to the online resource from host/JAT (the README exchange)", function ()
		local p, host = new_proxy();
		online(p, "a");
		local action, to, from, extra = p:route("iq", "get", R, host, "1234", 0, nil);
		assert.are.equal("send", action);
		assert.are.equal(T .. "/a", to);
		assert.are.equal(host .. "/" .. R, from);
		assert.is_nil(extra);
		-- iq set and the other addresses of the component are forwarded too
		assert.are.same({ "send", T .. "/a", host .. "/" .. R },
			{ p:route("iq", "set", R, host .. "/x", "s1", 0, nil) });
		assert.are.same({ "send", T .. "/a", host .. "/" .. R },
			{ p:route("iq", "get", R, "node@" .. host, "n1", 0, nil) });
		assert.are.equal(3, p:status().pending);
	end);

	it("sends the reply to the requester from the host, once", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, _, jat_from = p:route("iq", "get", R, host, "1234", 0, nil);
		local action, to, from = p:route("iq", "result", T .. "/a", jat_from, "1234", 1, nil);
		assert.are.equal("send", action);
		assert.are.equal(R, to);
		assert.are.equal(host, from);
		assert.are.equal(0, p:status().pending);
		-- the same reply again answers nothing
		local again, why = p:route("iq", "result", T .. "/a", jat_from, "1234", 2, nil);
		assert.are.equal("drop", again);
		assert.is_string(why);
	end);

	it("sends an error reply of the implementing client back the same way", function ()
		local p, host = new_proxy();
		online(p, "a");
		local _, _, jat_from = p:route("iq", "get", R, host, "e1", 0, nil);
		assert.are.same({ "send", R, host },
			{ p:route("iq", "error", T .. "/a", jat_from, "e1", 1, nil) });
	end);

	it("drops replies nobody asked for", function ()
		local p, host = new_proxy();
		online(p, "a");
		online(p, "b");
		-- unknown id
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", host .. "/" .. R, "nope", 0, nil)));
		-- known id, but from a resource the request was not sent to
		local _, to = p:route("iq", "get", R, host, "q1", 0, nil);
		local other = (to == T .. "/a") and "b" or "a";
		assert.are.equal("drop", (p:route("iq", "result", T .. "/" .. other, host .. "/" .. R, "q1", 0, nil)));
		-- to an address this proxy did not produce
		assert.are.equal("drop", (p:route("iq", "result", to, host .. "/@deadbeefdeadbeef", "q1", 0, nil)));
		-- to the bare component
		assert.are.equal("drop", (p:route("iq", "result", to, host, "q1", 0, nil)));
		-- the request is still outstanding and its real reply still goes through
		assert.are.same({ "send", R, host }, { p:route("iq", "result", to, host .. "/" .. R, "q1", 0, nil) });
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

	it("refuses an iq without id, messages and presence from requesters", function ()
		local p, host = new_proxy();
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

	it("never answers a stanza of type error", function ()
		local p, host = new_proxy();
		online(p, "a");
		for _, name in ipairs({ "iq", "message", "presence" }) do
			for _, from in ipairs({ R, T .. "/a", T .. "/unknown", "other.example" }) do
				for _, to in ipairs({ host, host .. "/" .. R, "node@" .. host }) do
					local action = p:route(name, "error", from, to, "e", 0, nil);
					assert.are_not.equal("error", action, ("%s error from %s to %s"):format(name, from, to));
					assert.is_true(action == "drop" or action == "presence" or action == "send",
						("%s error from %s to %s: %s"):format(name, from, to, tostring(action)));
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
		assert.are.equal("send", (p:route("iq", "get", R, host, "1", 0, nil)));
		local a, etype, cond, text = p:route("iq", "get", R, host, "1", 0, nil);
		assert.are.same({ "error", "modify", "bad-request", "A request with this id from you is still outstanding" },
			{ a, etype, cond, text });
		a, etype, cond = p:route("iq", "get", R, host, "2", 0, nil);
		assert.are.same({ "error", "wait", "resource-constraint" }, { a, etype, cond });
		assert.are.equal("send", (p:route("iq", "get", "b@example.org/x", host, "1", 0, nil)));
		a, etype, cond = p:route("iq", "get", "c@example.org/x", host, "1", 0, nil);
		assert.are.same({ "error", "wait", "resource-constraint" }, { a, etype, cond });
	end);

	it("base64 mode writes the requester as base64url and maps the reply back", function ()
		local p, host = new_proxy({ jat = "base64" });
		online(p, "a");
		local _, _, from = p:route("iq", "get", R, host, "b1", 0, nil);
		assert.are.equal(host .. "/dXNlckBleGFtcGxlLm9yZy9hYmM", from);
		assert.are.same({ "send", R, host }, { p:route("iq", "result", T .. "/a", from, "b1", 1, nil) });
	end);

	it("gives an overlong requester a short token that maps back", function ()
		local p, host = new_proxy();
		online(p, "a");
		local long = "user@example.org/" .. ("r"):rep(1023);
		local action, _, from = p:route("iq", "get", long, host, "t1", 0, nil);
		assert.are.equal("send", action);
		local res = from:sub(#host + 2);
		assert.are.equal(host .. "/", from:sub(1, #host + 1));
		assert.matches("^@", res);
		assert.is_true(#res < 64);
		assert.are.same({ "send", long, host }, { p:route("iq", "result", T .. "/a", from, "t1", 1, nil) });
	end);
end);

describe("lost requests", function ()
	it("a resource going offline owes recipient-unavailable for its requests (take_answers)", function ()
		local p, host = new_proxy();
		online(p, "a");
		p:route("iq", "get", R, host, "r1", 0, nil);
		p:route("iq", "set", "other@example.org/x", host, "r2", 0, nil);
		assert.are.same({}, p:take_answers());
		local action, reason = p:route("presence", "unavailable", T .. "/a", host, nil, 1, nil);
		assert.are.equal("presence", action);
		assert.are.equal("resource offline", reason);
		local list = p:take_answers();
		assert.are.equal(10, #list);
		local got = {};
		for i = 1, #list, 5 do
			got[list[i + 1]] = { list[i], list[i + 1], list[i + 2], list[i + 3], list[i + 4] };
		end
		local text = "The implementing resource went offline before answering";
		assert.are.same({ R, "r1", "wait", "recipient-unavailable", text }, got.r1);
		assert.are.same({ "other@example.org/x", "r2", "wait", "recipient-unavailable", text }, got.r2);
		-- drained
		assert.are.same({}, p:take_answers());
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
			p:route("iq", "get", R, host, "1", 0, nil);
			assert.are.equal("presence", (p:route("presence", kind, T, host, nil, 0, nil)));
			local list = p:take_answers();
			assert.are.same({ R, "1", "wait", "recipient-unavailable" }, { list[1], list[2], list[3], list[4] });
			assert.are.equal(5, #list);
			assert.are.same({}, p:status().resources);
		end
	end);

	it("expire(now) answers remote-server-timeout after the timeout, once", function ()
		local p, host = new_proxy({ timeout = 10 });
		online(p, "a", nil, 100);
		local _, _, from = p:route("iq", "get", R, host, "slow", 100, nil);
		assert.are.same({}, p:expire(100));
		assert.are.same({}, p:expire(109.5));
		assert.are.equal(1, p:status().pending);
		assert.are.same({ R, "slow", "wait", "remote-server-timeout", "The implementing client did not answer in time" },
			p:expire(110));
		assert.are.same({}, p:expire(200));
		assert.are.equal(0, p:status().pending);
		-- a late answer is not delivered
		assert.are.equal("drop", (p:route("iq", "result", T .. "/a", from, "slow", 201, nil)));
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
		local _, _, from = p1:route("iq", "get", R, host, "keep", 0, nil);
		-- the reloaded module builds a new handle with the same options (a changed
		-- timeout is applied, the state stays)
		local p2 = new_proxy({ host = host, timeout = 60 });
		local s = p2:status();
		assert.are.equal(1, s.pending);
		assert.are.equal(1, #s.resources);
		assert.are.equal("a", s.resources[1].name);
		-- the reply to the request made before the reload is delivered through the new handle
		assert.are.same({ "send", R, host }, { p2:route("iq", "result", T .. "/a", from, "keep", 1, nil) });
		-- both handles see the same state
		assert.are.equal(0, p1:status().pending);
		-- and the resource is still used without a new presence
		assert.are.equal("send", (p2:route("iq", "get", R, host, "after", 2, nil)));
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
		assert.are.same({ "send", T .. "/a", host_a .. "/" .. R }, { pa:route("iq", "get", R, host_a, "1", 0, nil) });
		local action, _, cond = pb:route("iq", "get", R, host_b, "1", 0, nil);
		assert.are.equal("error", action);
		assert.are.equal("service-unavailable", cond);
		-- the same requester and id on the other host is a separate request
		assert.are.equal(1, pa:status().pending);
		assert.are.equal(0, pb:status().pending);
	end);
end);
