-- lua/outbox.lib.lua: the payloads held for a retry, the core's calls other than route
-- (protected, the first line of a failure logged), each kind of outbox item applied, the
-- error replies counted, the subscriber store. Run in the fake Prosody module
-- (spec/helpers/fake_module.lua) with a scripted proxy (spec/helpers/fake_native.lua).

local st = require "util.stanza";
local fake = require "helpers.fake_module";
local fake_native = require "helpers.fake_native";

local TARGET, USER, HOST = "service@example.org", "user@example.org/abc", "proxy.example";
local JAT = HOST .. "/" .. USER;

-- outbox.lib.lua run for a fresh module; returns the lib, the module and a scripted proxy.
local function outbox(opts)
	local m = fake.new(opts or {});
	local _, proxy = fake_native.new({ host = HOST, target = TARGET });
	return fake.run(fake.LIB_DIR .. "/outbox.lib.lua", m), m, proxy;
end

local support = require "support";
local count_logs, assert_error = support.count_logs, support.assert_error;

-- A request as the shim holds it: readdressed by the send verdict.
local function forwarded(id, stanza_type)
	return st.iq({ type = stanza_type or "get", id = id, from = JAT, to = TARGET .. "/a" });
end

describe("held requests", function ()
	it("one child element: the child alone; more (or text beside it, or nothing): the whole stanza", function ()
		local o = outbox();
		o.hold(1, forwarded("r1"):tag("query", { xmlns = "urn:one" }):up());
		o.hold(2, forwarded("r2"):tag("a"):up():tag("b"):up());
		o.hold(3, forwarded("r3"):text("x"):tag("a"):up());
		o.hold(4, forwarded("r4"));
		local saved = o.save();
		assert.are.equal("<query xmlns='urn:one'/>", tostring(saved.held[1]));
		assert.are.same({ "iq", "iq", "iq" }, { saved.held[2].name, saved.held[3].name, saved.held[4].name });
		assert.are.same({ [2] = true, [3] = true, [4] = true }, saved.held_whole);
		o.release(1);
		o.release(2);
		assert.are.same({ nil, nil, { [3] = true, [4] = true } }, { o.save().held[1], o.save().held[2], o.save().held_whole });
	end);

	it("save and restore carry them into a fresh load (module:reload)", function ()
		local o = outbox();
		o.hold(1, forwarded("r1"):tag("query", { xmlns = "urn:one" }):up());
		o.hold(2, forwarded("r2"):tag("a"):up():tag("b"):up());
		local o2, m2, proxy = outbox();
		o2.restore(o.save());
		proxy.outbox.drain = { { kind = "resend", held = 1, to = TARGET .. "/b", from = JAT, type = "get", id = "r1" },
			{ kind = "resend", held = 2, to = TARGET .. "/b", from = JAT, type = "get", id = "r2" } };
		o2.send(proxy, "drain");
		assert.are.same({ "<query xmlns='urn:one'/>", 2 }, { tostring(m2.sent[1].tags[1]), #m2.sent[2].tags });
		o2.restore({}); -- nothing saved: nothing restored, no error
	end);
end);

describe("outbox.send(proxy, method, ...)", function ()
	it("calls the method with its arguments and applies the items in order; unknown kinds are logged", function ()
		local o, m, proxy = outbox();
		proxy.outbox.tick = { { kind = "presence", to = "u@example.org", from = HOST }, { kind = "novel" },
			{ kind = "presence", to = "v@example.org", from = HOST, type = "unavailable" } };
		o.send(proxy, "tick", 12.5);
		assert.are.same({ "tick", 12.5 }, proxy.calls[1]);
		assert.are.same({ { to = "u@example.org", from = HOST }, { to = "v@example.org", from = HOST, type = "unavailable" } },
			{ m.sent[1].attr, m.sent[2].attr });
		assert.is_string(fake.logged(m, "warn", "Unknown outbox item novel"));
	end);

	it("error items: an iq error from the item's addresses, counted by condition; release lets the payload go", function ()
		local o, m, proxy = outbox();
		o.hold(2, forwarded("r2"):tag("query"):up());
		proxy.outbox.tick = { { kind = "error", to = USER, from = HOST, id = "r2", type = "wait", condition = "remote-server-timeout",
			text = "Timed out", release = 2 }, { kind = "error", to = USER, from = HOST, id = "r3", type = "cancel", condition = "recipient-unavailable" } };
		o.send(proxy, "tick", 0);
		assert_error(m.sent[1], USER, HOST, "r2", "wait", "remote-server-timeout", "Timed out");
		assert_error(m.sent[2], USER, HOST, "r3", "cancel", "recipient-unavailable", nil);
		assert.are.same({ 1, 1 }, { m.metrics.errors.values["remote-server-timeout"], m.metrics.errors.values["recipient-unavailable"] });
		assert.is_nil(next(o.save().held));
	end);

	it("resend items: the child in an iq of the item's type, id, xml:lang, to, from; a whole stanza readdressed; one no longer held is logged", function ()
		local o, m, proxy = outbox();
		o.hold(1, forwarded("r1"):tag("query", { xmlns = "urn:one" }):up());
		local whole = st.iq({ type = "set", id = "r3", from = JAT, to = TARGET .. "/a", ["xml:lang"] = "de" })
			:tag("a", { xmlns = "urn:a" }):up():tag("b"):up();
		o.hold(3, whole);
		proxy.outbox.drain = {
			{ kind = "resend", held = 1, to = TARGET .. "/b", from = JAT, type = "get", id = "r1", lang = "fr" },
			{ kind = "resend", held = 3, to = TARGET .. "/c", from = JAT, type = "set", id = "r3" },
			{ kind = "resend", held = 9, to = TARGET .. "/b", from = JAT, type = "get", id = "r9" },
		};
		o.send(proxy, "drain");
		assert.are.equal(2, #m.sent);
		assert.are.same({ type = "get", id = "r1", to = TARGET .. "/b", from = JAT, ["xml:lang"] = "fr" }, m.sent[1].attr);
		assert.are.same({ 1, "<query xmlns='urn:one'/>" }, { #m.sent[1], tostring(m.sent[1][1]) });
		assert.are.same({ type = "set", id = "r3", to = TARGET .. "/c", from = JAT, ["xml:lang"] = "de" }, m.sent[2].attr);
		assert.are.same({ "<a xmlns='urn:a'/>", "<b/>" }, { tostring(m.sent[2].tags[1]), tostring(m.sent[2].tags[2]) });
		assert.is_string(fake.logged(m, "warn", "Request 9 to resend is no longer held"));
		assert.is_not_nil(o.save().held[1], "a resent request stays held until the core releases it");
	end);

	it("subscribers items: stored as bare JID -> true (an empty list: nothing); subscribers() lists the stored ones", function ()
		local storage = {};
		local o, m, proxy = outbox({ storage = storage });
		proxy.outbox.drain = { { kind = "subscribers", list = { "u@example.org", "v@example.org" } } };
		o.send(proxy, "drain");
		assert.are.same({ ["u@example.org"] = true, ["v@example.org"] = true }, m.storage.client_proxy_subscribers[""]);
		local o2 = outbox({ storage = storage });
		local list = o2.subscribers();
		table.sort(list);
		assert.are.same({ "u@example.org", "v@example.org" }, list);
		proxy.outbox.drain = { { kind = "subscribers", list = {} } };
		o.send(proxy, "drain");
		assert.is_nil(m.storage.client_proxy_subscribers[""]);
		assert.are.same({}, o.subscribers());
	end);

	it("log items at info; status items: set_status(level, text, true) and a log line for each (the core sends only changes)", function ()
		local o, m, proxy = outbox();
		proxy.outbox.tick = { { kind = "log", text = "service@example.org/a ejected for 30 s" },
			{ kind = "status", level = "error", text = "revoked" }, { kind = "status", level = "error", text = "revoked" },
			{ kind = "status", level = "core", text = "1 online" } };
		o.send(proxy, "tick", 0);
		assert.is_string(fake.logged(m, "info", "service@example.org/a ejected for 30 s"));
		assert.are.same({ { type = "error", message = "revoked", override = true }, { type = "error", message = "revoked", override = true },
			{ type = "core", message = "1 online", override = true } }, m.status_calls);
		assert.are.equal("core", m.status_type); -- 0.12 keeps an error unless overridden
		assert.are.same({ 2, 1 }, { count_logs(m, "error", "revoked"), count_logs(m, "info", "1 online") });
	end);

	it("a method that raises: the first line logged (mlua's errors carry a traceback), nothing applied", function ()
		local o, m, proxy = outbox();
		proxy.outbox.stopping = "raise";
		o.send(proxy, "stopping");
		assert.are.same({ { level = "error", text = "Native core failed in stopping: stopping failed" } }, m.logs);
		assert.are.same({}, m.sent);
	end);
end);

describe("outbox.call(proxy, method, ...)", function ()
	it("the method's result, or nil and the first line of its error logged", function ()
		local o, m, proxy = outbox();
		assert.are.equal(proxy.status_table, o.call(proxy, "status"));
		proxy.status_raises = true;
		assert.is_nil(o.call(proxy, "set_local_domains", { "localhost" }));
		assert.are.same({ { level = "error", text = "Native core failed in set_local_domains: set_local_domains failed" } }, m.logs);
		assert.are.equal("a", o.first_line("a\nb\nc"));
		assert.are.equal("5", o.first_line(5));
	end);
end);

describe("outbox.send_error", function ()
	it("replies to the stanza, counted by condition", function ()
		local o, m = outbox();
		o.send_error(st.iq({ type = "get", id = "r1", from = USER, to = HOST }), "cancel", "service-unavailable", "No resource");
		assert_error(m.sent[1], USER, HOST, "r1", "cancel", "service-unavailable", "No resource");
		assert.are.equal(1, m.metrics.errors.values["service-unavailable"]);
	end);
end);
