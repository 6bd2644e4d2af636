-- lua/mod_client_proxy.lua, the glue: the interface check, options in, verdicts applied,
-- which event calls which core method, metrics, reload and unload. Loaded in the fake
-- Prosody of spec/helpers/fake_module.lua with Prosody's real util.stanza, against the
-- scripted native core of spec/helpers/fake_native.lua (what the core decides is tested in
-- Rust; the outbox items in outbox_lib_spec.lua, the resource patterns in
-- resources_lib_spec.lua); the last block runs it against the real library (CLIENT_PROXY_SO).

local st = require "util.stanza";
local fake = require "helpers.fake_module";
local fake_native = require "helpers.fake_native";
local support = require "support";

local unpack = table.unpack or unpack;
local TARGET, USER, HOST = "service@example.org", "user@example.org/abc", "proxy.example";
local JAT = HOST .. "/" .. USER;

-- Loads the shim against a scripted core (opts.script(native, proxy) first); opts as fake.new's.
local function load(opts)
	opts = opts or {};
	local native, proxy = fake_native.new({ host = HOST, target = TARGET, affinity_rules = opts.affinity_rules });
	if opts.script then opts.script(native, proxy); end
	opts.host = opts.host or HOST;
	opts.options = opts.options or { target_address = TARGET };
	opts.libs = { native = function () return native, "/fake/client_proxy.so"; end };
	local m, ok, err = fake.load(opts);
	return m, ok, err, native, proxy;
end

local function loaded(opts)
	local m, ok, err, native, proxy = load(opts);
	assert(ok, err);
	m.sent = {}; -- the subscription to the target
	return m, native, proxy;
end

local function request(id, payload)
	return st.iq({ type = "get", id = id, from = USER, to = HOST }):tag("query", { xmlns = payload or "urn:example" }):up();
end

local count_logs, assert_error = support.count_logs, support.assert_error;

-- No log line carries a traceback (mlua's errors do: the shim logs their first line).
local function assert_no_traceback(m)
	for _, line in ipairs(m.logs) do assert.is_nil(line.text:find("traceback", 1, true), line.text); end
end

describe("loading", function ()
	it("hooks the nine stanza events at priority -1, a 1 s timer; status and the load line", function ()
		local m, ok, err = load();
		assert.is_true(ok, err);
		local events = {};
		for _, h in ipairs(m.hooks) do
			if h.event:match("^iq/") or h.event:match("^message/") or h.event:match("^presence/") then
				assert.are.equal(-1, h.priority);
				assert.are.equal(fake.handlers(m, "iq/host")[1], h.handler);
				events[#events + 1] = h.event;
			end
		end
		table.sort(events);
		assert.are.same({ "iq/bare", "iq/full", "iq/host", "message/bare", "message/full", "message/host",
			"presence/bare", "presence/full", "presence/host" }, events);
		assert.are.equal(1, #m.timers);
		assert.are.equal(1, m.timers[1].delay);
		assert.are.same({ { type = "warn", message = "No eligible resource of " .. TARGET .. " is online", override = true } }, m.status_calls);
		assert.is_string(fake.logged(m, "warn", "No eligible resource"));
		assert.is_string(fake.logged(m, "info", "Proxying proxy.example to service@example.org (native core 9.9.9, /fake/client_proxy.so)"));
	end);

	it("refuses a core of another interface (a reload keeps the library loaded first): restart", function ()
		local _, ok, err, native = load({ script = function (native) native.interface = 1; end });
		assert.is_false(ok);
		assert.are.equal("client_proxy.so 9.9.9 does not match this mod_client_proxy.lua (interface 1, expected 3): "
			.. "a module reload keeps the library loaded at start; restart Prosody", err);
		assert.are.same({}, native.opened);
		-- a core from before the interface number, without a version either
		_, ok, err = load({ script = function (native) native.interface, native.version = nil, nil; end });
		assert.is_false(ok);
		assert.matches("^client_proxy%.so %? does not match this mod_client_proxy%.lua %(interface nil, expected 3%):.*restart Prosody$", err);
	end);

	it("passes one option per entry of native.options, raw; the stored subscribers and the server's hosts", function ()
		local options = { target_address = TARGET, client_proxy_jat = "base64", client_proxy_colour = "green",
			client_proxy_timeout = "30", client_proxy_eject_for = "2 min", client_proxy_max_pending = "12",
			client_proxy_max_pending_per_requester = { 3, 4 }, client_proxy_allow = { "example.org", "x@example.net" },
			client_proxy_messages = "no", client_proxy_resources = { "^focus" }, client_proxy_strategy = "sticky",
			client_proxy_require_caps = { "http://jitsi.org/jicofo" } };
		local storage = { client_proxy_subscribers = { [""] = { ["a@example.org"] = true, ["b@example.org"] = true } } };
		local prosody = { start_time = 1, hosts = { ["localhost"] = {}, [HOST] = {} } };
		local m, ok, err, native, proxy = load({ options = options, storage = storage, prosody = prosody });
		assert.is_true(ok, err);
		local opened = native.opened[1];
		table.sort(opened.subscribers);
		table.sort(opened.local_domains);
		-- not the resource patterns nor the caps nodes (the shim's), nor an option native.options does not list
		assert.are.same({ host = HOST, target_address = TARGET, client_proxy_jat = "base64", client_proxy_colour = "green",
			client_proxy_timeout = "30", client_proxy_eject_for = "2 min", client_proxy_max_pending = "12",
			client_proxy_max_pending_per_requester = { 3, 4 }, client_proxy_allow = { "example.org", "x@example.net" },
			client_proxy_messages = "no", subscribers = { "a@example.org", "b@example.org" }, local_domains = { "localhost", HOST } }, opened);
		assert.are.equal(0, count_logs(m, "error", "")); -- 0.12: no checks in Lua
		-- hosts come and go: the core is told the new set
		prosody.hosts["new.example"] = {};
		fake.fire(m, "host-activated", "new.example");
		table.sort(proxy.local_domains);
		assert.are.same({ "localhost", "new.example", HOST }, proxy.local_domains);
		prosody.hosts["localhost"] = nil;
		fake.fire(m, "host-deactivated", "localhost");
		table.sort(proxy.local_domains);
		assert.are.same({ "new.example", HOST }, proxy.local_domains);
		proxy.status_raises = true;
		fake.fire(m, "host-activated", "other.example");
		assert.is_string(fake.logged(m, "error", "set_local_domains failed"));
		assert_no_traceback(m);
	end);

	it("Prosody 13: periods as strings reach the core in seconds; enums are checked against the core's values", function ()
		local m, ok, err, native = load({ api13 = true, options = { target_address = TARGET, client_proxy_timeout = "2 min",
			client_proxy_eject_for = "soon", client_proxy_jat = "rot13", client_proxy_colour = "blue", client_proxy_max_pending = "7" } });
		assert.is_true(ok, err);
		local opened = native.opened[1];
		-- "soon" is no period: Prosody says so, the core gets it raw (and refuses it, naming the option)
		assert.are.same({ 120, "soon", "rot13", "blue", "7" }, { opened.client_proxy_timeout, opened.client_proxy_eject_for,
			opened.client_proxy_jat, opened.client_proxy_colour, opened.client_proxy_max_pending });
		assert.is_string(fake.logged(m, "error", "Config option 'client_proxy_eject_for' not understood"));
		assert.is_string(fake.logged(m, "error", "Config option 'client_proxy_jat' not in set of allowed values (one of: base64, plain)"));
		assert.is_nil(fake.logged(m, "error", "client_proxy_colour")); -- "blue": one of the core's values, spelled nowhere in Lua
		-- unset: nothing, not the default (the core has it)
		_, ok, err, native = load({ api13 = true });
		assert.is_true(ok, err);
		assert.are.same({ nil, nil }, { native.opened[1].client_proxy_jat, native.opened[1].client_proxy_timeout });
	end);

	it("fails with the first line of the core's error, which names the option", function ()
		local _, ok, err = load({ script = function (native) native.open_error = "client_proxy_jat: \"rot13\" is not plain or base64\nmore"; end });
		assert.is_false(ok);
		assert.are.equal("client_proxy_jat: \"rot13\" is not plain or base64", err);
	end);

	it("refuses a host that is not a component, and resource patterns that are not Lua patterns", function ()
		local _, ok, err = load({ host_type = "local" });
		assert.is_false(ok);
		assert.matches("must be loaded as a component", err, 1, true);
		_, ok, err = load({ options = { target_address = TARGET, client_proxy_resources = { "^ok", "[a" } } });
		assert.is_false(ok);
		assert.matches("^client_proxy_resources: ", err);
	end);

	it("subscribes to the target once the server has started (0.12: server-started; 13: on_ready)", function ()
		for _, api13 in ipairs({ false, true }) do
			local m, ok, err = load({ api13 = api13, prosody = { version = api13 and "13.0.1" or "0.12.3" } });
			assert.is_true(ok, err);
			assert.are.same({}, m.sent);
			fake.server_started(m);
			assert.are.equal(1, #m.sent);
			assert.are.same({ type = "subscribe", from = HOST, to = TARGET }, m.sent[1].attr);
		end
		local m = load();
		assert.are.same({ type = "subscribe", from = HOST, to = TARGET }, m.sent[1].attr);
	end);

	it("gives roster.lib.lua the core's checked client_proxy_manage_roster (the status's manage_roster)", function ()
		-- on, for a target on no host of this server: asked again 10 s later (roster_lib_spec.lua)
		local m, ok, err = load({ script = function (_, proxy) proxy.status_table.manage_roster = true; end });
		assert.is_true(ok, err);
		assert.are.same({ 1, 10 }, { #m.sent, m.timers[2] and m.timers[2].delay });
		-- off (or a status without it): the one subscribe, no timer but the tick
		m, ok, err = load({ script = function (_, proxy) proxy.status_table.manage_roster = false; end });
		assert.is_true(ok, err);
		assert.are.same({ 1, 1 }, { #m.sent, #m.timers });
	end);
end);

describe("a stanza", function ()
	it("reaches route (a closure: no proxy argument) as name, type, from, to, id, now (nil: the core's clock), priority (raw), eligible (presence only), condition (errors only), xml:lang", function ()
		local m, _, proxy = loaded({ options = { target_address = TARGET, client_proxy_resources = "^focus" } });
		local r1 = request("r1");
		r1.attr["xml:lang"] = "de";
		fake.deliver(m, r1);
		local function presence(resource, priority)
			local p = st.presence({ from = TARGET .. "/" .. resource, to = HOST });
			if priority then p:text_tag("priority", priority); end
			fake.deliver(m, p);
		end
		presence("focus1", "-200.5");
		presence("phone", "x");
		presence("focus2");
		fake.deliver(m, st.error_reply(st.iq({ type = "get", id = "d1", from = "proxy.example/" .. USER, to = TARGET .. "/focus1" }),
			"cancel", "feature-not-implemented"));
		local r = proxy.routed;
		assert.are.same({ 12, "iq", "get", USER, HOST, "r1" }, { r[1].n, unpack(r[1], 1, 5) });
		assert.are.same({ nil, nil, nil, nil, "de", nil, nil }, { r[1][6], r[1][7], r[1][8], r[1][9], r[1][10], r[1][11], r[1][12] });
		assert.are.same({ "presence", nil, TARGET .. "/focus1", HOST, nil, nil }, { unpack(r[2], 1, 6) });
		assert.are.same({ -200.5, true }, { r[2][7], r[2][8] });
		assert.are.same({ nil, false }, { r[3][7], r[3][8] });
		assert.are.same({ nil, true, nil }, { r[4][7], r[4][8], r[4][9] });
		assert.are.same({ "iq", "error", "d1", "feature-not-implemented" }, { r[5][1], r[5][2], r[5][5], r[5][9] });
	end);

	it("eligible: client_proxy_require_caps reads the caps node of each presence (both options must admit)", function ()
		local m, _, proxy = loaded({ options = { target_address = TARGET, client_proxy_resources = "^focus",
			client_proxy_require_caps = "http://jitsi.org/jicofo" } });
		local function presence(resource, node)
			local p = st.presence({ from = TARGET .. "/" .. resource, to = HOST });
			if node then p:tag("c", { xmlns = "http://jabber.org/protocol/caps", hash = "sha-1", node = node, ver = "v" }):up(); end
			fake.deliver(m, p);
			return proxy.routed[#proxy.routed][8];
		end
		assert.are.same({ true, false, false, false }, { presence("focus1", "http://jitsi.org/jicofo"), presence("focus1"),
			presence("focus2", "http://jitsi.org/jitsi-videobridge"), presence("phone", "http://jitsi.org/jicofo") });
	end);

	it("affinity: a get/set whose payload a rule names gives route the rule and the value; nothing else does", function ()
		local rules = { { namespace = "http://jitsi.org/protocol/focus", element = "conference", attribute = "room" },
			{ namespace = "urn:example:b", element = "q", attribute = "k" } };
		local m, _, proxy = loaded({ affinity_rules = rules });
		local function keyed(stanza)
			fake.deliver(m, stanza);
			local r = proxy.routed[#proxy.routed];
			return { r[11], r[12] };
		end
		local function iq(type, name, attr)
			return st.iq({ type = type, id = "x", from = USER, to = HOST }):tag(name, attr):up();
		end
		local room = { xmlns = "http://jitsi.org/protocol/focus", room = "r1@conference.example" };
		assert.are.same({ 1, "r1@conference.example" }, keyed(iq("set", "conference", room)));
		assert.are.same({ 2, "v" }, keyed(iq("get", "q", { xmlns = "urn:example:b", k = "v" })));
		assert.are.same({}, keyed(iq("get", "q", { xmlns = "urn:example:b" }))); -- no attribute
		assert.are.same({}, keyed(iq("get", "conference", { xmlns = "urn:other", room = "r" }))); -- other namespace
		assert.are.same({}, keyed(iq("get", "other", { xmlns = "http://jitsi.org/protocol/focus", room = "r" })));
		assert.are.same({}, keyed(st.iq({ type = "get", id = "x", from = USER, to = HOST }))); -- no payload
		-- the payload is the first child: a matching second one is not it
		assert.are.same({}, keyed(iq("get", "query", { xmlns = "urn:x" }):tag("conference", room):up()));
		assert.are.same({}, keyed(iq("result", "conference", room)));
		assert.are.same({}, keyed(st.message({ from = USER, to = HOST }):tag("conference", room):up()));
		-- without rules nothing is looked for
		local m2, _, proxy2 = loaded();
		fake.deliver(m2, iq("set", "conference", room));
		assert.are.same({ 12 }, { proxy2.routed[1].n, proxy2.routed[1][11], proxy2.routed[1][12] });
	end);

	it("send: readdressed (id when given), held and released by number", function ()
		local m, _, proxy = loaded();
		proxy.verdicts = { { "send", TARGET .. "/a", JAT, nil, 7, nil }, { "send", USER, HOST, "orig", nil, 7 },
			{ "send", TARGET .. "/a", JAT, "cp1", nil, nil } };
		fake.deliver(m, request("r1", "urn:x"));
		assert.are.same({ type = "get", id = "r1", to = TARGET .. "/a", from = JAT }, m.sent[1].attr);
		assert.are.equal("<query xmlns='urn:x'/>", tostring(m.sent[1].tags[1]));
		assert.are.equal("<query xmlns='urn:x'/>", tostring(m.save().held[7]));
		fake.deliver(m, st.iq({ type = "result", id = "r1", from = TARGET .. "/a", to = JAT }));
		assert.are.same({ type = "result", id = "orig", to = USER, from = HOST }, m.sent[2].attr);
		assert.is_nil(next(m.save().held));
		fake.deliver(m, request("r2"));
		assert.are.equal("cp1", m.sent[3].attr.id);
	end);

	it("error: an error reply, counted by condition", function ()
		local m, _, proxy = loaded();
		proxy.verdicts = { { "error", "cancel", "service-unavailable", "No resource" } };
		fake.deliver(m, request("r1"));
		assert_error(m.sent[1], USER, HOST, "r1", "cancel", "service-unavailable", "No resource");
		assert.are.equal(1, m.metrics.errors.values["service-unavailable"]);
	end);

	it("drop: nothing sent; with drain, the outbox is applied at once", function ()
		local m, _, proxy = loaded();
		proxy.verdicts = { { "drop", "unsolicited", false }, { "drop", "resource online", true } };
		proxy.outbox.drain = { { kind = "presence", to = "u@example.org", from = HOST } };
		fake.deliver(m, st.iq({ type = "result", id = "x", from = TARGET .. "/a", to = JAT }));
		assert.are.same({}, m.sent);
		assert.is_string(fake.logged(m, "debug", "unsolicited"));
		fake.deliver(m, st.presence({ from = TARGET .. "/a", to = HOST }));
		assert.are.equal(1, #m.sent);
		assert.are.same({ to = "u@example.org", from = HOST }, m.sent[1].attr);
	end);

	it("fail: a get/set gets the core's INTERNAL_ERROR, anything else nothing; then the outbox is drained; never raises", function ()
		local m, _, proxy = loaded();
		local stanzas = { request("r1"), st.iq({ type = "set", id = "r2", from = USER, to = HOST }),
			st.iq({ type = "result", id = "r3", from = USER, to = HOST }), st.message({ from = USER, to = HOST }),
			st.presence({ from = USER, to = HOST }), st.error_reply(request("r4"), "cancel", "gone") };
		local drains = fake_native.calls(proxy, "drain");
		for _, s in ipairs(stanzas) do
			proxy.verdicts = { { "fail", "route failed" } };
			assert.is_true(fake.deliver(m, s));
		end
		assert.are.equal(2, #m.sent);
		assert_error(m.sent[1], USER, HOST, "r1", "cancel", "internal-server-error", "The proxy failed");
		assert_error(m.sent[2], USER, HOST, "r2", "cancel", "internal-server-error", "The proxy failed");
		assert.are.equal(2, m.metrics.errors.values["internal-server-error"]);
		assert.are.equal(6, count_logs(m, "error", "route failed"));
		assert.are.equal(drains + 6, fake_native.calls(proxy, "drain"));
		-- what the core queued for a request it could not hand over goes out after the answer
		proxy.verdicts = { { "fail", "route failed" } };
		proxy.outbox.drain = { { kind = "error", to = "other@example.org/x", from = HOST, id = "o1", type = "wait",
			condition = "remote-server-timeout", release = 3 } };
		fake.deliver(m, request("r5"));
		assert_error(m.sent[3], USER, HOST, "r5", "cancel", "internal-server-error", "The proxy failed");
		assert_error(m.sent[4], "other@example.org/x", HOST, "o1", "wait", "remote-server-timeout", nil);
	end);
end);

describe("the core's other calls", function ()
	it("the timer: tick(native.now()) each second, its outbox applied; a failure logged (first line), the timer goes on", function ()
		local m, native, proxy = loaded();
		native.clock = 1234.5;
		proxy.outbox.tick = { { kind = "presence", to = "u@example.org", from = HOST, type = "unavailable" } };
		assert.are.equal(1, m.timers[1].callback());
		assert.are.same({ "tick", 1234.5 }, proxy.calls[#proxy.calls]);
		assert.are.same({ to = "u@example.org", from = HOST, type = "unavailable" }, m.sent[1].attr);
		proxy.outbox.tick = "raise";
		assert.are.equal(1, m.timers[1].callback());
		assert.is_string(fake.logged(m, "error", "tick failed"));
		assert_no_traceback(m);
	end);

	it("server-stopping sends proxy:stopping()'s outbox; a failure is logged", function ()
		local m, _, proxy = loaded();
		proxy.outbox.stopping = { { kind = "presence", to = "u@example.org", from = HOST, type = "unavailable" } };
		fake.fire(m, "server-stopping");
		assert.are.equal(1, #m.sent);
		assert.are.same({ to = "u@example.org", from = HOST, type = "unavailable" }, m.sent[1].attr);
		proxy.outbox.stopping = "raise";
		fake.fire(m, "server-stopping");
		assert.are.equal(1, count_logs(m, "error", "stopping failed"));
	end);

	it("the target's stream hibernating and resumed: proxy:hibernating/resumed(resource), their outbox applied", function ()
		local events = {};
		local hosts = { ["example.org"] = { type = "local", events = events }, [HOST] = { type = "component" } };
		local m, _, proxy = loaded({ prosody = { start_time = 1, version = "0.12.3", hosts = hosts } });
		local function fire(event, data)
			for _, h in ipairs(m.hooks) do
				if h.host == "example.org" and h.event == event then h.handler(data); end
			end
		end
		proxy.outbox.hibernating = { { kind = "resend", held = 1, to = TARGET .. "/b", from = JAT, type = "get", id = "g" } };
		fire("smacks-hibernation-start", { origin = { username = "service", host = "example.org", resource = "a" } });
		assert.are.same({ "hibernating", "a" }, proxy.calls[#proxy.calls]);
		assert.is_string(fake.logged(m, "warn", "Request 1 to resend is no longer held")); -- applied as any resend
		fire("smacks-hibernation-end", { origin = {}, resumed = { username = "service", host = "example.org", resource = "a" } });
		assert.are.same({ "resumed", "a" }, proxy.calls[#proxy.calls]);
		proxy.outbox.resumed = "raise";
		fire("smacks-hibernation-end", { origin = {}, resumed = { username = "service", host = "example.org", resource = "a" } });
		assert.are.equal(1, count_logs(m, "error", "resumed failed"));
		assert_no_traceback(m);
	end);

	it("the outbox is drained at load: what a reconfigured core owes", function ()
		local m = load({ script = function (_, proxy)
			proxy.outbox.drain = { { kind = "error", to = USER, from = HOST, id = "old", type = "cancel", condition = "recipient-unavailable" } };
		end });
		assert.are.equal(2, #m.sent); -- the subscription, then the answer
		assert_error(m.sent[2], USER, HOST, "old", "cancel", "recipient-unavailable", nil);
	end);

	it("the shell lists the core's status with its clock", function ()
		local m, native = loaded();
		native.clock = 77;
		local status, now = m:shared("/*/client_proxy/shell_hosts")[HOST]();
		assert.are.same({ HOST, 77 }, { status.host, now });
	end);
end);

describe("metrics", function ()
	it("copy the core's requests and messages by their names, the gauges, at stats-update", function ()
		local m, _, proxy = loaded();
		fake.fire(m, "stats-update");
		assert.are.same({ forwarded = 3, timed_out = 1 }, m.metrics.requests.values);
		assert.are.same({ to_service = 4, to_user = 5 }, m.metrics.messages.values);
		assert.are.same({ 1, 2, 6, 1 }, { m.metrics.eligible_resources.values[""], m.metrics.pending.values[""],
			m.metrics.ejections.values[""], m.metrics.ejected_resources.values[""] });
		assert.are.same({ 7, 2, "gauge", "counter" }, { m.metrics.affinity_keys.values[""], m.metrics.affinity_moves.values[""],
			m.metrics.affinity_keys.type, m.metrics.affinity_moves.type });
		assert.are.same({ "counter", "counter", "gauge", "gauge", "counter", "counter", "gauge" }, { m.metrics.requests.type,
			m.metrics.errors.type, m.metrics.eligible_resources.type, m.metrics.pending.type, m.metrics.messages.type,
			m.metrics.ejections.type, m.metrics.ejected_resources.type });
		proxy.status_raises = true;
		fake.fire(m, "stats-update");
	end);
end);

describe("reload and unload", function ()
	it("a reload keeps held requests (save/restore), reopens the host, drains after restoring", function ()
		local m, native, proxy = loaded();
		proxy.verdicts = { { "send", TARGET .. "/a", JAT, nil, 5 },
			{ "send", TARGET .. "/a", JAT, nil, 6 } };
		fake.deliver(m, request("r1", "urn:held"));
		fake.deliver(m, st.iq({ type = "set", id = "r2", from = USER, to = HOST }):tag("a"):up():tag("b"):up());
		local m2, ok, err = fake.reload(m);
		assert.is_true(ok, err);
		assert.are.same({}, native.closed);
		assert.are.same({ HOST, HOST }, { native.opened[1].host, native.opened[2].host });
		-- one drain at the first load, the next in restore (none at the reload's load)
		assert.are.equal(2, fake_native.calls(proxy, "drain"));
		proxy.outbox.tick = { { kind = "resend", held = 5, to = TARGET .. "/b", from = JAT, type = "get", id = "r1" },
			{ kind = "resend", held = 6, to = TARGET .. "/b", from = JAT, type = "set", id = "r2" } };
		m2.sent = {};
		m2.timers[1].callback();
		assert.are.equal("<query xmlns='urn:held'/>", tostring(m2.sent[1].tags[1]));
		assert.are.equal(TARGET .. "/b", m2.sent[1].attr.to);
		assert.are.same({ "set", "r2", TARGET .. "/b", 2 }, { m2.sent[2].attr.type, m2.sent[2].attr.id, m2.sent[2].attr.to, #m2.sent[2].tags });
	end);

	it("an unload for good closes the host and leaves the shell", function ()
		local m, native = loaded();
		assert.is_function(m:shared("/*/client_proxy/shell_hosts")[HOST]);
		fake.unload(m);
		assert.are.same({ HOST }, native.closed);
		assert.is_nil(m:shared("/*/client_proxy/shell_hosts")[HOST]);
	end);
end);

describe("against the real library", function ()
	local fresh_host = support.host_namer("shim", "example");

	it("the README exchange, then unload forgets the host", function ()
		local host = fresh_host();
		local m, ok, err = fake.load({ host = host, options = { target_address = TARGET } });
		assert.is_true(ok, err); -- the library's native.interface is the shim's
		assert.is_string(fake.logged(m, "info", "(native core "));
		assert.is_string(fake.logged(m, "info", fake.plugin_dir() .. "/client_proxy.so)"));
		m.sent = {};
		fake.deliver(m, st.presence({ from = TARGET .. "/a", to = host }));
		local jat = host .. "/" .. USER;
		local sent_before = #m.sent;
		fake.deliver(m, st.iq({ type = "get", id = "1234", from = USER, to = host }):tag("query", { xmlns = "urn:example" }):up());
		local fwd = m.sent[sent_before + 1];
		assert.are.same({ type = "get", id = "1234", to = TARGET .. "/a", from = jat }, fwd.attr);
		fake.deliver(m, st.iq({ type = "result", id = "1234", from = TARGET .. "/a", to = jat }):tag("query", { xmlns = "urn:example" }):up());
		assert.are.same({ type = "result", id = "1234", to = USER, from = host }, m.sent[sent_before + 2].attr);
		assert.are.equal("<query xmlns='urn:example'/>", tostring(m.sent[sent_before + 2].tags[1]));

		-- a request held across a reload is answered after it
		fake.deliver(m, st.iq({ type = "get", id = "5678", from = USER, to = host }));
		local m2, ok2, err2 = fake.reload(m);
		assert.is_true(ok2, err2);
		fake.deliver(m2, st.iq({ type = "result", id = "5678", from = TARGET .. "/a", to = jat }));
		assert.are.same({ type = "result", id = "5678", to = USER, from = host }, m2.sent[#m2.sent].attr);

		fake.unload(m2);
		local m3 = assert(fake.load({ host = host, options = { target_address = TARGET } }));
		m3.sent = {};
		fake.deliver(m3, st.iq({ type = "get", id = "9", from = USER, to = host }));
		assert.are.equal("service-unavailable", select(2, m3.sent[1]:get_error()));
	end);
end);
