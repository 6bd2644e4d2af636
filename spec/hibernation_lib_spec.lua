-- lua/hibernation.lib.lua: mod_smacks' hibernation events on the target's host (when it
-- is a host of this server, once it is active) told to the core as hibernating(resource)
-- and resumed(resource); other accounts' sessions ignored.

local fake = require "helpers.fake_module";

local TARGET = "service@example.org";

-- Runs hibernation.lib.lua with these hosts; returns the module and what it told.
local function watch(hosts)
	local m = fake.new({ prosody = { start_time = os.time(), version = "0.12.3", hosts = hosts } });
	local told = {};
	fake.run(fake.LIB_DIR .. "/hibernation.lib.lua", m)(TARGET, function (method, resource)
		told[#told + 1] = { method, resource };
	end);
	return m, told;
end

-- The handlers of an event hooked on this host (module:context), in hook order.
local function on(m, host, event)
	local out = {};
	for _, h in ipairs(m.hooks) do
		if h.host == host and h.event == event and not h.global then out[#out + 1] = h.handler; end
	end
	return out;
end

local function session(user, host, resource)
	return { username = user, host = host, resource = resource, full_jid = user .. "@" .. host .. "/" .. resource };
end

describe("stream management of the target", function ()
	it("tells the core when its session hibernates and when it is resumed", function ()
		local m, told = watch({ ["example.org"] = { type = "local", events = {} } });
		local start = on(m, "example.org", "smacks-hibernation-start");
		local stop = on(m, "example.org", "smacks-hibernation-end");
		assert.are.equal(1, #start);
		assert.are.equal(1, #stop);
		start[1]({ origin = session("service", "example.org", "focus1"), queue = {} });
		start[1]({ origin = session("user", "example.org", "phone"), queue = {} }); -- another account
		-- a resumption: origin is the new stream's session (no resource bound), resumed the old one
		stop[1]({ origin = { username = "service", host = "example.org" }, resumed = session("service", "example.org", "focus1"), queue = {} });
		stop[1]({ origin = {}, resumed = session("user", "example.org", "phone"), queue = {} });
		assert.are.same({ { "hibernating", "focus1" }, { "resumed", "focus1" } }, told);
	end);

	it("waits for the target's host to be activated, and hooks it again after a reactivation", function ()
		local hosts = {};
		local m = watch(hosts);
		assert.are.same({}, on(m, "example.org", "smacks-hibernation-start"));
		hosts["other.example"] = { type = "local", events = {} };
		fake.fire(m, "host-activated", "other.example");
		assert.are.same({}, on(m, "other.example", "smacks-hibernation-start"));
		hosts["example.org"] = { type = "local", events = {} };
		fake.fire(m, "host-activated", "example.org");
		assert.are.equal(1, #on(m, "example.org", "smacks-hibernation-start"));
		fake.fire(m, "host-activated", "example.org"); -- the same host: hooked once
		assert.are.equal(1, #on(m, "example.org", "smacks-hibernation-start"));
		hosts["example.org"] = { type = "local", events = {} }; -- deactivated and activated again
		fake.fire(m, "host-activated", "example.org");
		assert.are.equal(2, #on(m, "example.org", "smacks-hibernation-start"));
	end);

	it("does nothing for a target that is not on a VirtualHost of this server", function ()
		local m = watch({ ["example.org"] = { type = "component", events = {} } });
		assert.are.same({}, on(m, "example.org", "smacks-hibernation-start"));
		m = watch(nil);
		assert.are.same({}, on(m, "example.org", "smacks-hibernation-start"));
	end);
end);
