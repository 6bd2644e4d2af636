-- The native library's Lua binding (docs/INTERNALS.md, "The boundary"): the SHAPES of its
-- arguments and results, called from Lua as the shim calls it, under every Debian Lua
-- against the library built for it (CLIENT_PROXY_SO). What the core decides is tested
-- by the Rust unit tests: here, one example of each shape.
--
-- State is kept per host inside the library, once per process: every test uses a host
-- of its own (support.host_namer).

local support = require "support";
local fake = require "helpers.fake_module";

local native = assert(package.loadlib(fake.SO, "luaopen_client_proxy"))();
local fresh_host = support.host_namer("native", "test");
local unpack = table.unpack or unpack;
local pack = table.pack or function (...) return { n = select("#", ...), ... }; end

local T, R = "service@example.org", "user@example.org/abc";

local function open(options)
	options = options or {};
	options.host = options.host or fresh_host();
	if options.target_address == nil then options.target_address = T; end
	return native.open(options), options.host;
end

-- The first line of the error a call raised.
local function raised(f, ...)
	local ok, err = pcall(f, ...);
	assert.is_false(ok, "expected an error");
	return (tostring(err):match("^[^\n]*"));
end

local function online(p, host, resource, now)
	return p.route("presence", nil, T .. "/" .. resource, host, nil, now or 0, nil, nil);
end

local function get(p, host, id, now)
	return pack(p.route("iq", "get", R, host, id, now or 0, nil, nil));
end

-- The items of an outbox of one kind.
local function of_kind(items, kind)
	local out = {};
	for _, item in ipairs(items) do
		if item.kind == kind then out[#out + 1] = item; end
	end
	return out;
end

describe("the exports", function ()
	it("version (Cargo.toml's), INTERNAL_ERROR, open, close, jat_encode, jat_decode", function ()
		local cargo = assert(io.open("Cargo.toml")):read("*a");
		assert.are.equal(cargo:match('\nversion%s*=%s*"([^"]+)"'), native.version);
		local e = native.INTERNAL_ERROR;
		assert.are.same({ "cancel", "internal-server-error", "string" }, { e.type, e.condition, type(e.text) });
		for _, name in ipairs({ "open", "close", "now", "jat_encode", "jat_decode" }) do
			assert.is_function(native[name], name);
		end
	end);

	it("interface: a number, the shim's INTERFACE (the one check at load)", function ()
		assert.are.equal("integer", support.number_type(native.interface));
		local shim = assert(io.open(fake.SHIM)):read("*a");
		assert.are.equal(tonumber(shim:match("\nlocal INTERFACE = (%d+);")), native.interface);
	end);

	it("options: name and kind each; an enum's values and default, which open takes (and nothing else)", function ()
		local kinds = { jid = true, enum = true, period = true, count = true, switch = true, list = true };
		local names = {};
		for i, option in ipairs(native.options) do
			assert.is_string(option.name, "options[" .. i .. "].name");
			assert.is_nil(names[option.name], option.name .. " twice");
			names[option.name] = option.kind;
			assert.is_true(kinds[option.kind] or false, option.name .. ": kind " .. tostring(option.kind));
			if option.kind == "enum" then
				assert.is_true(#option.values > 0, option.name .. ": values");
				local default_listed = false;
				for _, value in ipairs(option.values) do
					assert.is_string(value);
					assert.is_userdata((open({ [option.name] = value })), option.name .. " = " .. value);
					default_listed = default_listed or value == option.default;
				end
				assert.is_true(default_listed, option.name .. ": default " .. tostring(option.default));
				assert.are.equal(option.name .. ": ", raised(open, { [option.name] = "no-such-value" }):sub(1, #option.name + 2));
			end
		end
		assert.are.same({ "jid", "enum", "enum", "period", "list", "list", "list" }, { names.target_address, names.client_proxy_jat,
			names.client_proxy_strategy, names.client_proxy_timeout, names.client_proxy_allow, names.client_proxy_resources,
			names.client_proxy_require_caps });
	end);

	it("jat_encode/jat_decode: a string, or nil and a message; decode never raises", function ()
		assert.are.equal(R, native.jat_encode("plain", R));
		assert.are.equal("dXNlckBleGFtcGxlLm9yZy9hYmM", native.jat_encode("base64", R));
		assert.are.equal(R, native.jat_decode("base64", "dXNlckBleGFtcGxlLm9yZy9hYmM"));
		local res, err = native.jat_encode("plain", R .. ("x"):rep(1100));
		assert.are.same({ nil, "string" }, { res, type(err) });
		for _, garbage in ipairs({ "", "\255\254", "@token", "a b@c", ("a"):rep(100000) }) do
			local ok, r, e = pcall(native.jat_decode, "plain", garbage);
			assert.are.same({ true, nil, "string" }, { ok, r, type(e) });
		end
		assert.is_false(pcall(native.jat_encode, "rot13", R));
	end);
end);

describe("open", function ()
	it("raises \"<option>: <reason>\" for a missing, bad or wrongly typed value", function ()
		local cases = {
			{ "host", { host = false } }, { "host", { host = 5 } },
			{ "target_address", { target_address = false } }, { "target_address", { target_address = 5 } },
			{ "target_address", { target_address = "service@example.org/res" } },
			{ "client_proxy_jat", { client_proxy_jat = "rot13" } }, { "client_proxy_jat", { client_proxy_jat = 5 } },
			{ "client_proxy_strategy", { client_proxy_strategy = "nope" } }, { "client_proxy_strategy", { client_proxy_strategy = true } },
			{ "client_proxy_timeout", { client_proxy_timeout = 0 } }, { "client_proxy_timeout", { client_proxy_timeout = "soon" } },
			{ "client_proxy_timeout", { client_proxy_timeout = {} } },
			{ "client_proxy_max_pending", { client_proxy_max_pending = 2.5 } }, { "client_proxy_max_pending", { client_proxy_max_pending = true } },
			{ "client_proxy_max_pending_per_requester", { client_proxy_max_pending_per_requester = -1 } },
			{ "client_proxy_max_pending_per_requester", { client_proxy_max_pending_per_requester = {} } },
			{ "client_proxy_eject_after", { client_proxy_eject_after = -1 } }, { "client_proxy_eject_after", { client_proxy_eject_after = "x" } },
			{ "client_proxy_eject_for", { client_proxy_eject_for = 0 } }, { "client_proxy_eject_for", { client_proxy_eject_for = {} } },
			{ "client_proxy_max_pending_per_user", { client_proxy_max_pending_per_user = 0 } },
			{ "client_proxy_max_pending_per_user", { client_proxy_max_pending_per_user = true } },
			{ "client_proxy_max_pending_per_domain", { client_proxy_max_pending_per_domain = 2.5 } },
			{ "client_proxy_max_pending_per_domain", { client_proxy_max_pending_per_domain = {} } },
			{ "client_proxy_allow", { client_proxy_allow = 5 } }, { "client_proxy_allow", { client_proxy_allow = { "a b" } } },
			{ "client_proxy_affinity", { client_proxy_affinity = "conference@room" } },
			{ "client_proxy_affinity", { client_proxy_affinity = { "{urn:x}a@b", "{urn:x}a@b" } } },
			{ "client_proxy_affinity", { client_proxy_affinity = { 5 } } }, { "client_proxy_affinity", { client_proxy_affinity = true } },
			{ "client_proxy_affinity_idle", { client_proxy_affinity_idle = 0 } },
			{ "subscribers", { subscribers = 5 } }, { "subscribers", { subscribers = { true } } },
			{ "local_domains", { local_domains = 5 } }, { "local_domains", { local_domains = { true } } },
		};
		for _, switch in ipairs({ "client_proxy_messages", "client_proxy_outbound", "client_proxy_presence",
				"client_proxy_manage_roster" }) do
			table.insert(cases, { switch, { [switch] = "maybe" } });
			table.insert(cases, { switch, { [switch] = {} } });
		end
		local wrong = {};
		for _, case in ipairs(cases) do
			local options = case[2];
			if options.host == false then options.host = nil; else options.host = options.host or fresh_host(); end
			if options.target_address == false then options.target_address = nil; else options.target_address = options.target_address or T; end
			local err = raised(native.open, options);
			if err:sub(1, #case[1] + 2) ~= case[1] .. ": " then wrong[#wrong + 1] = err; end
		end
		assert.are.same({}, wrong);
	end);

	it("takes Prosody's spellings of switches and numbers written as strings", function ()
		for _, v in ipairs({ true, false, "yes", "no", "on", "off", "true", "false", 1, 0 }) do
			assert.is_userdata((open({ client_proxy_messages = v, client_proxy_outbound = v, client_proxy_presence = v })));
		end
		assert.is_userdata((open({ client_proxy_timeout = "30", client_proxy_max_pending = "10" })));
		assert.is_userdata((open({ client_proxy_allow = "example.org", local_domains = { "localhost" } })));
		assert.is_userdata((open({ client_proxy_allow = { "example.org", "u@example.net" } })));
	end);
end);

describe("proxy.route(name, type, from, to, id, now, priority, eligible, condition, lang, affinity_rule, affinity): a closure over its proxy", function ()
	it("send: to, from, id (nil: keep it), hold, release (integers or nil)", function ()
		local p, host = open();
		online(p, host, "a");
		local fwd = get(p, host, "r1");
		assert.are.same({ n = 6, "send", T .. "/a", host .. "/" .. R }, { n = fwd.n, fwd[1], fwd[2], fwd[3] });
		assert.is_nil(fwd[4]);
		assert.are.equal("integer", support.number_type(fwd[5]));
		assert.is_nil(fwd[6]);
		local back = pack(p.route("iq", "result", T .. "/a", host .. "/" .. R, "r1", 0, nil, nil));
		assert.are.same({ n = 6, "send", R, host, nil, nil, fwd[5] }, back);
	end);

	it("addresses beyond ASCII go through as they came; bytes that are not UTF-8 get a verdict, not an error", function ()
		local p, host = open();
		online(p, host, "a");
		local requester = "jos\195\169@example.org/t\195\169l\195\169phone"; -- josé, téléphone
		local fwd = pack(p.route("iq", "get", requester, host, "\226\156\147", 0));
		assert.are.same({ "send", T .. "/a", host .. "/" .. requester }, { fwd[1], fwd[2], fwd[3] });
		local back = pack(p.route("iq", "result", T .. "/a", host .. "/" .. requester, "\226\156\147", 0));
		assert.are.same({ "send", requester, host }, { back[1], back[2], back[3] });
		local odd = pack(p.route("iq", "get", "u\255@example.org/r", host, "x\128", 0));
		assert.is_true(odd[1] == "send" or odd[1] == "error", tostring(odd[1]));
	end);

	it("send: the resource address is the one chosen, also when addresses share a cache slot", function ()
		local p, host = open({ client_proxy_strategy = "round_robin" });
		online(p, host, "a1");
		online(p, host, "b1"); -- as long, the same last byte: the binding's cache slot of a1
		local seen = {};
		for i = 1, 6 do
			local v = get(p, host, "r" .. i);
			assert.are.equal("send", v[1]);
			seen[#seen + 1] = v[2];
		end
		for i = 3, 6 do assert.are.equal(seen[i - 2], seen[i]); end
		assert.are_not.equal(seen[1], seen[2]);
		table.sort(seen);
		assert.are.same({ T .. "/a1", T .. "/a1", T .. "/a1", T .. "/b1", T .. "/b1", T .. "/b1" }, seen);
	end);

	it("send: an answer goes to its requester, also when its number served another request before, or after a reopen", function ()
		local p, host = open({ client_proxy_timeout = 5 });
		online(p, host, "a", 100);
		local long = "a-requester-longer-than-forty-bytes@example.org/device";
		local function forward(requester, id, now)
			local v = pack(p.route("iq", "get", requester, host, id, now, nil, nil));
			assert.are.equal("send", v[1]);
			return v[5];
		end
		local function answer(requester, id, now)
			return pack(p.route("iq", "result", T .. "/a", host .. "/" .. requester, id, now, nil, nil));
		end
		local first = forward(R, "t1", 100);
		p:drain();
		assert.are.equal(first, p:tick(106)[1].release, "timed out: answered from the outbox");
		assert.are.equal(first, forward(long, "l1", 106), "the number handed out again");
		local other = forward(R, "r2", 106);
		assert.are.same({ "send", R, host }, { unpack(answer(R, "r2", 106), 1, 3) });
		assert.are.same({ "send", long, host }, { unpack(answer(long, "l1", 106), 1, 3) });
		assert.are_not.equal(first, other);
		-- A module reload opens the host again: a new route closure; the answers to the
		-- requests forwarded before still go to their requesters (the core's record).
		local before = forward(long, "l2", 106);
		local again = native.open({ host = host, target_address = T, client_proxy_timeout = 5 });
		local back = pack(again.route("iq", "result", T .. "/a", host .. "/" .. long, "l2", 106, nil, nil));
		assert.are.same({ "send", long, host, nil, nil, before }, { unpack(back, 1, 6) });
	end);

	it("affinity_rule (1-based) and affinity: one key, one resource; a rule there is not is no key", function ()
		local p, host = open({ client_proxy_strategy = "round_robin",
			client_proxy_affinity = { "{urn:x}a@k", "{urn:x}b@k" } });
		assert.are.same({ { namespace = "urn:x", element = "a", attribute = "k" },
			{ namespace = "urn:x", element = "b", attribute = "k" } }, p:affinity_rules());
		online(p, host, "a");
		online(p, host, "b");
		local n = 0;
		local function to(rule, key)
			n = n + 1;
			local v = pack(p.route("iq", "get", R, host, "k" .. n, 0, nil, nil, nil, nil, rule, key));
			assert.are.equal("send", v[1]);
			p.route("iq", "result", v[2], host .. "/" .. R, "k" .. n, 0);
			return v[2];
		end
		local room = to(1, "room");
		for _ = 1, 4 do assert.are.equal(room, to(1, "room")); end
		-- rule 2's "room" is another key: round robin gives it the other resource
		assert.are_not.equal(room, to(2, "room"));
		-- not a rule: no key, so round robin alternates
		for _, rule in ipairs({ 0, 3, 1.5, -1 }) do
			assert.are_not.equal(to(rule, "room"), to(rule, "room"), tostring(rule));
		end
		local s = p:status();
		assert.are.same({ 2, 0, 1, 1 }, { s.keys, s.moves, s.resources[1].keys, s.resources[2].keys });
		for i, bad in ipairs({ { "1", "room" }, { 1, 5 }, { true, "room" } }) do
			local v = pack(p.route("iq", "get", R, host, "bad" .. i, 0, nil, nil, nil, nil, bad[1], bad[2]));
			assert.are.same({ 2, "fail", "string" }, { v.n, v[1], type(v[2]) });
		end
		local none = open();
		assert.are.same({}, none:affinity_rules());
	end);

	it("error: type, condition, text", function ()
		local p, host = open();
		local v = get(p, host, "r1");
		assert.are.same({ "error", "cancel", "service-unavailable", "string" }, { v[1], v[2], v[3], type(v[4]) });
	end);

	it("fail: a message, instead of raising (a now that is not a finite number)", function ()
		local p, host = open();
		for _, now in ipairs({ "soon", 0 / 0, math.huge }) do
			local v = pack(p.route("iq", "get", R, host, "r1", now, nil, nil));
			assert.are.same({ 2, "fail", "string" }, { v.n, v[1], type(v[2]) }, tostring(now));
		end
	end);

	it("drop: reason, drain (a boolean); priority and eligible are optional", function ()
		local p, host = open();
		local v = pack(p.route("presence", nil, T .. "/a", host, nil, 0, 7.9, false));
		assert.are.same({ "drop", "string", "boolean" }, { v[1], type(v[2]), type(v[3]) });
		v = pack(p.route("iq", "result", R, host, "nobody-asked", 0));
		assert.are.same({ "drop", "string", "boolean" }, { v[1], type(v[2]), type(v[3]) });
	end);
end);

describe("the outbox", function ()
	it("status items at open: kind, level, text, as status() says", function ()
		local p = open();
		local items = p:drain();
		local status = of_kind(items, "status")[1];
		assert.are.same({ "warn", p:status().text }, { status.level, status.text });
		assert.are.same({}, p:drain());
	end);

	it("tick: error items with to, from, id, type, condition, text, release", function ()
		local p, host = open({ client_proxy_timeout = 5 });
		online(p, host, "a", 100);
		local hold = get(p, host, "r1", 100)[5];
		p:drain();
		assert.are.same({}, p:tick(104));
		local items = p:tick(106);
		assert.are.same({ { kind = "error", to = R, from = host, id = "r1", type = "wait", condition = "remote-server-timeout",
			text = items[1].text, release = hold } }, items);
		assert.is_string(items[1].text);
	end);

	it("now(): the core's clock, which route reads when given no time", function ()
		local t0 = native.now();
		assert.is_number(t0);
		assert.is_true(native.now() >= t0, "monotonic");
		local p, host = open({ client_proxy_timeout = 5 });
		online(p, host, "a", nil);
		local hold = pack(p.route("iq", "get", R, host, "r1", nil, nil, nil))[5];
		assert.is_number(hold);
		p:drain();
		assert.are.same({}, p:tick(native.now() + 4), "not due 4 s after the core's now");
		local items = p:tick(native.now() + 6);
		assert.are.same({ "error", "r1", hold }, { items[1] and items[1].kind, items[1] and items[1].id, items[1] and items[1].release });
	end);

	it("drain after a resource went: resend items with held, to, from, type, id, lang", function ()
		local p, host = open();
		online(p, host, "a");
		online(p, host, "b");
		local fwd = pack(p.route("iq", "get", R, host, "r1", 0, nil, nil, nil, "de"));
		local gone = pack(p.route("presence", "unavailable", fwd[2], host, nil, 0, nil, nil));
		assert.are.same({ "drop", true }, { gone[1], gone[3] });
		local resend = of_kind(p:drain(), "resend");
		assert.are.same({ { kind = "resend", held = fwd[5], to = fwd[2] == T .. "/a" and T .. "/b" or T .. "/a", from = host .. "/" .. R,
			type = "get", id = "r1", lang = "de" } }, resend);
	end);

	it("a decline (condition of an error): log items with text; resend to another resource", function ()
		local p, host = open({ client_proxy_eject_after = 1 });
		online(p, host, "a");
		online(p, host, "b");
		p:drain();
		local fwd = get(p, host, "r1", 100);
		local v = pack(p.route("iq", "error", fwd[2], host .. "/" .. R, "r1", 101, nil, nil, "feature-not-implemented"));
		assert.are.same({ "drop", true }, { v[1], v[3] });
		local items = p:drain();
		assert.are.same({ "log", "string" }, { of_kind(items, "log")[1].kind, type(of_kind(items, "log")[1].text) });
		assert.are.equal(fwd[5], of_kind(items, "resend")[1].held);
		local ejected = 0;
		for _, r in ipairs(p:status().resources) do
			if r.ejected_until ~= nil then ejected = ejected + 1; assert.is_true(r.ejected_until > 101); end
		end
		assert.are.same({ 1, 1, 1 }, { ejected, p:status().ejected, p:status().ejections });
	end);

	it("hibernating(resource[, now]) and resumed(resource): outboxes (resend, log, status); the status shows it", function ()
		local p, host = open();
		online(p, host, "a");
		local fwd = get(p, host, "g");
		online(p, host, "b");
		p:drain();
		local items = p:hibernating(fwd[2]:match("/(.*)$"), 1);
		assert.are.same({ fwd[5], "get", "g" }, { of_kind(items, "resend")[1].held, of_kind(items, "resend")[1].type, of_kind(items, "resend")[1].id });
		assert.are.equal("string", type(of_kind(items, "log")[1].text));
		local s = p:status();
		assert.are.same({ 1, 1 }, { s.eligible, s.hibernating });
		assert.are.same({ true, false }, { s.resources[1].hibernating, s.resources[2].hibernating });
		assert.are.same({}, p:hibernating("a")); -- now nil: the core's clock; already hibernating
		assert.are.equal(1, #of_kind(p:resumed("a"), "log"));
		assert.are.same({}, p:resumed("nobody"));
		assert.matches("hibernating: now must be a finite number", raised(p.hibernating, p, "a", 0 / 0), 1, true);
	end);

	it("subscribers and presence items; stopping() tells every subscriber", function ()
		local p, host = open();
		online(p, host, "a");
		local v = pack(p.route("presence", "subscribe", "u@example.org/x", host, nil, 0, nil, nil));
		assert.are.same({ "drop", true }, { v[1], v[3] });
		local items = p:drain();
		assert.are.same({ { kind = "subscribers", list = { "u@example.org" } } }, of_kind(items, "subscribers"));
		assert.are.same({ kind = "presence", to = "u@example.org", from = host, type = "subscribed" }, of_kind(items, "presence")[1]);
		assert.are.same({ kind = "presence", to = "u@example.org", from = host, type = "unavailable" }, p:stopping()[1]);
	end);
end);

describe("status()", function ()
	it("host, target, counts, level and text, requests and messages by name, resources", function ()
		local p, host = open({ target_address = "Service@Example.org" });
		online(p, host, "a");
		get(p, host, "r1");
		local s = p:status();
		assert.are.same({ host, T, 1, 0, 1, 0, 0, false, "core", "string" }, { s.host, s.target, s.pending,
			s.outbound_pending, s.eligible, s.ejected, s.ejections, s.revoked, s.level, type(s.text) });
		assert.is_true(s.manage_roster, "client_proxy_manage_roster: on unless set");
		for _, v in ipairs({ false, "no", "off", 0 }) do
			assert.is_false(open({ client_proxy_manage_roster = v }):status().manage_roster, tostring(v));
		end
		assert.are.same({ "delivered", "forwarded", "lost", "outbound", "refused", "retried", "timed_out", "unsolicited" },
			(function () local k = {}; for name in pairs(s.requests) do k[#k + 1] = name; end table.sort(k); return k; end)());
		assert.are.equal(1, s.requests.forwarded);
		assert.are.same({ to_service = 0, to_user = 0 }, s.messages);
		assert.are.same({ { name = "a", priority = 0, pool = "active", pending = 1, hibernating = false, keys = 0 } }, s.resources);
		assert.are.same({ 0, 0, 0 }, { s.hibernating, s.keys, s.moves });
	end);

	it("resources sorted by name (the shell lists them as they come)", function ()
		local p, host = open();
		for _, resource in ipairs({ "c", "a", "b" }) do online(p, host, resource); end
		local names = {};
		for _, r in ipairs(p:status().resources) do names[#names + 1] = r.name; end
		assert.are.same({ "a", "b", "c" }, names);
	end);
end);

describe("state per host", function ()
	it("open again keeps resources, requests and subscribers (merged); close forgets", function ()
		local p, host = open({ subscribers = { "a@example.org" } });
		online(p, host, "a");
		local hold = get(p, host, "r1")[5];
		local again = open({ host = host, subscribers = { "b@example.org" } });
		assert.are.same({ 1, 1 }, { again:status().pending, #again:status().resources });
		local back = pack(again.route("iq", "result", T .. "/a", host .. "/" .. R, "r1", 0, nil, nil));
		assert.are.equal(hold, back[6]);
		local told = {};
		for _, item in ipairs(again:stopping()) do
			if item.type == "unavailable" then told[#told + 1] = item.to; end
		end
		table.sort(told);
		assert.are.same({ "a@example.org", "b@example.org" }, told);

		local other = open();
		assert.are.same({}, other:status().resources);
		assert.are.equal(0, select("#", other:set_local_domains({ "localhost", "example.org" })));
		assert.is_true(native.close(host));
		assert.is_false(native.close(host));
		assert.are.same({ 0, {} }, { open({ host = host }):status().pending, open({ host = host }):status().resources });
	end);
end);
