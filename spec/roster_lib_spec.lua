-- lua/roster.lib.lua: the component's subscription to the target's presence. For a target
-- on this server (client_proxy_manage_roster on): its roster entry for the component, put
-- there with Prosody's rostermanager at start, at the host's activation, at the target's
-- login and after a removal or a revocation (with a back-off when repairs come fast); for
-- a remote target, the subscribe again until approved (10 s doubling to 10 min). Run in the
-- fake Prosody module (spec/helpers/fake_module.lua) with a fake rostermanager, usermanager
-- and clock; what Prosody does with the roster is the end-to-end tests' (tests/e2e_roster.rs).

local fake = require "helpers.fake_module";
local st = require "util.stanza";
local support = require "support";

local HOST, NODE, DOMAIN = "proxy.example", "service", "example.org";
local TARGET = NODE .. "@" .. DOMAIN;

-- A rostermanager over in-memory rosters (as Prosody keeps them: [false] = { pending = {} }),
-- recording saves and pushes; save fails while rm.failing.
local function fake_rostermanager()
	local rm = { rosters = {}, saves = {}, pushes = {}, loads = 0 };
	function rm.roster(username)
		rm.rosters[username] = rm.rosters[username] or { [false] = { pending = {} } };
		return rm.rosters[username];
	end
	function rm.load_roster(username, host)
		assert(host == DOMAIN, "load_roster on " .. tostring(host));
		rm.loads = rm.loads + 1;
		return rm.roster(username);
	end
	function rm.save_roster(username, host, roster, jid)
		assert(roster == rm.roster(username), "save_roster: the roster load_roster gave");
		table.insert(rm.saves, { username, host, jid });
		if rm.failing then return nil, "disk full"; end
		return true;
	end
	function rm.roster_push(username, host, jid) table.insert(rm.pushes, { username, host, jid }); end
	return rm;
end

-- roster.lib.lua's start in a fake module. opts: started (default true), local_target
-- (default true: example.org a local host), account (default true), api13.
local function setup(opts)
	opts = opts or {};
	local rm = fake_rostermanager();
	local clock = { now = 1000 };
	local accounts = { [NODE] = opts.account ~= false };
	local prosody = { hosts = { [HOST] = { type = "component", events = {} } } };
	if opts.started ~= false then prosody.start_time = 1; end
	if opts.local_target ~= false then prosody.hosts[DOMAIN] = { type = "local", events = {} }; end
	local m = fake.new({ host = HOST, prosody = prosody, api13 = opts.api13, require = {
		["core.rostermanager"] = rm,
		["core.usermanager"] = { user_exists = function (username, host) return host == DOMAIN and accounts[username]; end },
		["util.time"] = { now = function () return clock.now; end },
	} });
	local start = fake.run(fake.LIB_DIR .. "/roster.lib.lua", m);
	return { m = m, rm = rm, clock = clock, accounts = accounts, prosody = prosody, start = start };
end

-- The stanzas sent, as { type, from, to } each; forgets them.
local function sent(m)
	local out = {};
	for _, s in ipairs(m.sent) do out[#out + 1] = { s.name, s.attr.type, s.attr.from, s.attr.to }; end
	m.sent = {};
	return out;
end
local SUBSCRIBE = { "presence", "subscribe", HOST, TARGET };

-- Runs the timers due now, in order (those they add wait for the next call); their delays.
local function run_timers(m)
	local due = m.timers;
	m.timers = {};
	local delays = {};
	for _, t in ipairs(due) do
		delays[#delays + 1] = t.delay;
		assert.is_nil(t.callback(), "a timer that returns nothing (Prosody would reschedule it)");
	end
	return delays;
end

-- Fires an event hooked on `host` (nil: the module's own and global hooks).
local function fire_on(m, host, event, data)
	local ran = 0;
	for _, h in ipairs(m.hooks) do
		if h.event == event and (h.host == (host or HOST) or h.global) then
			ran = ran + 1;
			assert.is_nil(h.handler(data), "a watcher: never takes the event");
		end
	end
	return ran;
end

local function presence_from(from, type_)
	return { stanza = st.presence({ from = from, to = HOST, type = type_ }), origin = {} };
end

describe("client_proxy_manage_roster off", function ()
	it("one subscribe once the server has started, nothing else (0.12 and 13)", function ()
		for _, api13 in ipairs({ false, true }) do
			local t = setup({ started = false, api13 = api13 });
			t.start(TARGET, false);
			assert.are.same({}, sent(t.m));
			fake.server_started(t.m);
			assert.are.same({ SUBSCRIBE }, sent(t.m));
			fire_on(t.m, nil, "presence/host", presence_from(TARGET, "unsubscribed"));
			fire_on(t.m, nil, "host-activated", DOMAIN);
			assert.are.same({ {}, {}, 0, {} }, { t.m.timers, t.rm.saves, t.rm.loads, sent(t.m) });
			assert.are.equal(0, support.count_logs(t.m, "info", ""));
		end
	end);
end);

describe("a target on this server", function ()
	it("no entry: added with \"from\" (stored, pushed, logged at info), then one subscribe", function ()
		local t = setup();
		t.start(TARGET, true);
		assert.are.same({ subscription = "from", groups = {} }, t.rm.roster(NODE)[HOST]);
		assert.are.same({ { NODE, DOMAIN, HOST } }, t.rm.saves);
		assert.are.same({ { NODE, DOMAIN, HOST } }, t.rm.pushes);
		assert.is_string(fake.logged(t.m, "info",
			'Put proxy.example on the roster of service@example.org with subscription "from" (was "none")'));
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		assert.are.same({}, t.m.timers, "nothing more to ask for");
	end);

	it("\"none\" becomes \"from\", \"to\" \"both\"; name, groups and ask kept; our unanswered subscribe dropped", function ()
		for was, becomes in pairs({ none = "from", to = "both" }) do
			local t = setup();
			local roster = t.rm.roster(NODE);
			roster[HOST] = { subscription = was, name = "Focus", groups = { admins = true }, ask = "subscribe" };
			roster[false].pending[HOST] = true;
			roster[false].pending["other@example.org"] = true;
			t.start(TARGET, true);
			assert.are.same({ subscription = becomes, name = "Focus", groups = { admins = true }, ask = "subscribe" }, roster[HOST]);
			assert.are.same({ ["other@example.org"] = true }, roster[false].pending);
			assert.are.same({ 1, 1 }, { #t.rm.saves, #t.rm.pushes });
			assert.is_string(fake.logged(t.m, "info", ('with subscription "%s" (was "%s")'):format(becomes, was)));
			assert.are.same({ SUBSCRIBE }, sent(t.m));
		end
	end);

	it("\"from\" and \"both\" kept as they are: not stored, not pushed, not logged; still one subscribe", function ()
		for _, kept in ipairs({ "from", "both" }) do
			local t = setup();
			t.rm.roster(NODE)[HOST] = { subscription = kept, groups = {} };
			t.start(TARGET, true);
			assert.are.same({ { subscription = kept, groups = {} }, {}, {} }, { t.rm.roster(NODE)[HOST], t.rm.saves, t.rm.pushes });
			assert.are.equal(0, support.count_logs(t.m, "info", "on the roster"));
			assert.are.same({ SUBSCRIBE }, sent(t.m));
		end
	end);

	it("a failed save is undone and logged as an error; the subscribe goes anyway", function ()
		local t = setup();
		local roster = t.rm.roster(NODE);
		roster[HOST] = { subscription = "to", groups = {} };
		roster[false].pending[HOST] = "stanza";
		t.rm.failing = true;
		t.start(TARGET, true);
		assert.are.same({ subscription = "to", groups = {} }, roster[HOST]);
		assert.are.equal("stanza", roster[false].pending[HOST]);
		assert.are.same({}, t.rm.pushes);
		assert.is_string(fake.logged(t.m, "error", "Could not put proxy.example on the roster of service@example.org: disk full"));
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		-- no entry at all: nothing left behind either
		t = setup();
		t.rm.failing = true;
		t.start(TARGET, true);
		assert.is_nil(t.rm.roster(NODE)[HOST]);
	end);

	it("no account yet: said once at info, the roster untouched; done at the account's first login", function ()
		local t = setup({ account = false });
		t.start(TARGET, true);
		assert.are.same({ 0, {} }, { t.rm.loads, t.rm.saves });
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		fire_on(t.m, DOMAIN, "resource-bind", { session = { username = NODE } });
		assert.are.equal(1, support.count_logs(t.m, "info", "service@example.org has no account yet"));
		t.accounts[NODE] = true;
		fire_on(t.m, DOMAIN, "resource-bind", { session = { username = NODE } });
		assert.are.equal("from", t.rm.roster(NODE)[HOST].subscription);
		assert.are.same({ SUBSCRIBE }, sent(t.m));
	end);

	it("waits for the server to start (hosts activate in any order), then for the target's host if it comes later", function ()
		local t = setup({ started = false });
		local target_host = t.prosody.hosts[DOMAIN];
		t.prosody.hosts[DOMAIN] = nil;
		t.start(TARGET, true);
		fire_on(t.m, nil, "host-activated", DOMAIN);
		assert.are.same({ {}, 0 }, { sent(t.m), t.rm.loads });
		fake.server_started(t.m);
		-- not (yet) a local host: asked as a remote target would be
		assert.are.same({ { SUBSCRIBE }, 0 }, { sent(t.m), t.rm.loads });
		assert.are.equal(0, fire_on(t.m, DOMAIN, "resource-bind", { session = { username = NODE } }));
		t.prosody.hosts[DOMAIN] = target_host;
		fire_on(t.m, nil, "host-activated", "elsewhere.example");
		assert.are.same({}, sent(t.m));
		fire_on(t.m, nil, "host-activated", DOMAIN);
		assert.are.equal("from", t.rm.roster(NODE)[HOST].subscription);
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		-- the retries for a remote target stop: the host is local now
		assert.are.same({ 10 }, run_timers(t.m));
		assert.are.same({ {}, {} }, { sent(t.m), t.m.timers });
		-- hooked once on that host, also when it is activated again with the same events
		fire_on(t.m, nil, "host-activated", DOMAIN);
		assert.are.equal(1, fire_on(t.m, DOMAIN, "resource-bind", { session = { username = "nobody" } }));
	end);

	it("the entry removed (roster-item-removed fires before the removal): put back after it", function ()
		local t = setup();
		t.start(TARGET, true);
		sent(t.m);
		local roster = t.rm.roster(NODE);
		fire_on(t.m, DOMAIN, "roster-item-removed", { username = "other", jid = HOST });
		fire_on(t.m, DOMAIN, "roster-item-removed", { username = NODE, jid = "friend@example.org" });
		assert.are.same({}, t.m.timers);
		fire_on(t.m, DOMAIN, "roster-item-removed", { username = NODE, jid = HOST, item = roster[HOST] });
		-- Prosody's mod_presence tells the component "unsubscribed" in the same event
		fire_on(t.m, nil, "presence/host", presence_from(TARGET, "unsubscribed"));
		assert.is_not_nil(roster[HOST], "not before the removal has happened");
		roster[HOST] = nil;
		assert.are.same({ 0 }, run_timers(t.m), "one repair, at once");
		assert.are.equal("from", roster[HOST].subscription);
		assert.are.equal(2, support.count_logs(t.m, "info", "Put proxy.example on the roster"));
		assert.are.same({ SUBSCRIBE }, sent(t.m));
	end);

	it("the target revokes (\"unsubscribed\") or its presence errs: repaired; fast repeats back off 10 s doubling to 10 min", function ()
		local t = setup();
		t.start(TARGET, true);
		sent(t.m);
		local roster = t.rm.roster(NODE);
		local function revoke(kind)
			roster[HOST].subscription = "none";
			fire_on(t.m, nil, "presence/host", presence_from(TARGET .. "/a", kind));
		end
		local delays = {};
		for _ = 1, 9 do
			revoke("unsubscribed");
			assert.are.equal(1, #t.m.timers);
			t.clock.now = t.clock.now + t.m.timers[1].delay;
			delays[#delays + 1] = run_timers(t.m)[1];
			t.clock.now = t.clock.now + 1; -- the next revocation a second after the repair
			assert.are.equal("from", roster[HOST].subscription);
			assert.are.same({ SUBSCRIBE }, sent(t.m));
		end
		assert.are.same({ 0, 10, 20, 40, 80, 160, 320, 600, 600 }, delays);
		-- quiet for a while: at once again
		t.clock.now = t.clock.now + 60;
		revoke("unsubscribed");
		assert.are.same({ 0 }, run_timers(t.m));
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		-- a presence error with the entry in place: its presences asked for again, nothing changed
		t.clock.now = t.clock.now + 60;
		local saves = #t.rm.saves;
		fire_on(t.m, nil, "presence/host", presence_from(TARGET, "error"));
		assert.are.same({ 0 }, run_timers(t.m));
		assert.are.same({ { SUBSCRIBE }, saves }, { sent(t.m), #t.rm.saves });
		-- repeated events before the repair ran: one repair
		t.clock.now = t.clock.now + 60;
		revoke("unsubscribed");
		revoke("error");
		assert.are.equal(1, #t.m.timers);
	end);

	it("the target's login finds the entry missing: put back at once; others' logins and other presences change nothing", function ()
		local t = setup();
		t.start(TARGET, true);
		sent(t.m);
		local roster = t.rm.roster(NODE);
		roster[HOST] = nil;
		fire_on(t.m, DOMAIN, "resource-bind", { session = { username = "other" } });
		for _, p in ipairs({ { TARGET .. "/a", nil }, { TARGET .. "/a", "unavailable" }, { TARGET, "subscribed" },
				{ "other@example.org/x", "unsubscribed" }, { "other@example.org", "error" } }) do
			fire_on(t.m, nil, "presence/host", presence_from(p[1], p[2]));
		end
		assert.are.same({ nil, {}, {} }, { roster[HOST], t.m.timers, sent(t.m) });
		fire_on(t.m, DOMAIN, "resource-bind", { session = { username = NODE } });
		assert.are.equal("from", roster[HOST].subscription);
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		fire_on(t.m, DOMAIN, "resource-bind", { session = { username = NODE } });
		assert.are.same({}, sent(t.m), "nothing to do at a login that finds it");
	end);
end);

describe("a remote target", function ()
	it("asked again 10 s after the first subscribe, doubling to 10 min, until it approves; anew after a revocation", function ()
		local t = setup({ local_target = false });
		t.start(TARGET, true);
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		assert.are.same({ 0, {} }, { t.rm.loads, t.rm.saves });
		local delays = {};
		for _ = 1, 9 do
			delays[#delays + 1] = run_timers(t.m)[1];
			assert.are.same({ SUBSCRIBE }, sent(t.m));
		end
		assert.are.same({ 10, 20, 40, 80, 160, 320, 600, 600, 600 }, delays);
		-- its refusals change nothing (the next ask is already due)
		fire_on(t.m, nil, "presence/host", presence_from(TARGET, "unsubscribed"));
		assert.are.equal(1, #t.m.timers);
		-- approved: the ask due does nothing and none follows
		fire_on(t.m, nil, "presence/host", presence_from(TARGET, "subscribed"));
		run_timers(t.m);
		assert.are.same({ {}, {} }, { sent(t.m), t.m.timers });
		-- revoked: asked again after 10 s (the wait reset by the approval), until approved
		fire_on(t.m, nil, "presence/host", presence_from(TARGET .. "/a", "unsubscribed"));
		assert.are.same({ 10 }, run_timers(t.m));
		assert.are.same({ SUBSCRIBE }, sent(t.m));
		assert.are.same({ 20 }, run_timers(t.m));
		sent(t.m);
		-- an available presence is an approval too
		fire_on(t.m, nil, "presence/host", presence_from(TARGET .. "/a", nil));
		run_timers(t.m);
		assert.are.same({ {}, {} }, { sent(t.m), t.m.timers });
		assert.are.equal(0, support.count_logs(t.m, "info", "on the roster"));
	end);
end);
