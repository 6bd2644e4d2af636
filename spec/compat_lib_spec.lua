-- lua/compat.lib.lua: an option's value for the core (raw; Prosody 13's get_option_period
-- and get_option_enum where present), on_ready or its 0.12 fallback. Run in the fake
-- Prosody module (spec/helpers/fake_module.lua; api13 gives it 13's methods).

local fake = require "helpers.fake_module";

local function compat(opts)
	local m = fake.new(opts);
	return fake.run(fake.LIB_DIR .. "/compat.lib.lua", m), m;
end

describe("compat.option", function ()
	local JAT = { name = "client_proxy_jat", kind = "enum", values = { "plain", "base64" }, default = "plain" };
	local TIMEOUT = { name = "client_proxy_timeout", kind = "period", default = 60 };

	-- option(spec) with the config { [spec.name] = value }; returns its value and the module.
	local function option(api13, spec, value)
		local c, m = compat({ api13 = api13, options = { [spec.name] = value } });
		return c.option(spec), m;
	end

	it("0.12: every kind raw, as the config gives it (the core checks and names the option); nothing logged", function ()
		for _, value in ipairs({ 30, "45", "5 seconds", true }) do
			assert.are.equal(value, (option(false, TIMEOUT, value)));
		end
		local list = { 3, 4 };
		assert.are.equal(list, (option(false, { name = "client_proxy_max_pending", kind = "count" }, list)));
		local v, m = option(false, JAT, "rot13");
		assert.are.same({ "rot13", {} }, { v, m.logs });
		assert.is_nil((option(false, JAT, nil)), "unset: nil (the core has the default)");
	end);

	it("13: a period as a string in seconds; one 13 does not understand raw (13 logs it); numbers as they are", function ()
		assert.are.equal(5, (option(true, TIMEOUT, "5 seconds")));
		assert.are.equal(120, (option(true, TIMEOUT, "2min")));
		assert.are.equal(2.5, (option(true, TIMEOUT, 2.5)));
		local v, m = option(true, TIMEOUT, "soon");
		assert.are.equal("soon", v);
		assert.is_string(fake.logged(m, "error", "Config option 'client_proxy_timeout' not understood"));
		assert.is_nil((option(true, TIMEOUT, nil)));
	end);

	it("13: an enum through get_option_enum with the core's values and default, for its error line; the value raw", function ()
		local v, m = option(true, JAT, "rot13");
		assert.are.equal("rot13", v);
		assert.is_string(fake.logged(m, "error", "Config option 'client_proxy_jat' not in set of allowed values (one of: base64, plain)"));
		v, m = option(true, JAT, "base64");
		assert.are.same({ "base64", {} }, { v, m.logs });
		assert.is_nil((option(true, JAT, nil)), "unset: nil, not get_option_enum's default");
	end);
end);

describe("compat.when_started", function ()
	local function run(opts)
		local c, m = compat(opts);
		local ran = 0;
		c.when_started(function () ran = ran + 1; end);
		return function () return ran; end, m;
	end

	it("on a running server at once; while starting, at server-started (0.12)", function ()
		local ran = run({ prosody = { start_time = 1 } });
		assert.are.equal(1, ran());
		local m;
		ran, m = run({ prosody = {} });
		assert.are.equal(0, ran());
		fake.server_started(m);
		assert.are.equal(1, ran());
	end);

	it("13: through module:on_ready", function ()
		local ran, m = run({ api13 = true, prosody = {} });
		assert.are.equal(0, ran());
		assert.are.same({}, fake.handlers(m, "server-started"));
		fake.server_started(m);
		assert.are.equal(1, ran());
	end);
end);
