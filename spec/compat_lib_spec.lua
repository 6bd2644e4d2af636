-- lua/compat.lib.lua: Prosody 13's get_option_period, get_option_enum and on_ready where
-- present, 0.12's fallbacks otherwise. Run in the fake Prosody module
-- (spec/helpers/fake_module.lua; api13 gives it 13's methods).

local fake = require "helpers.fake_module";

local function compat(opts)
	local m = fake.new(opts);
	return fake.run(fake.LIB_DIR .. "/compat.lib.lua", m), m;
end

describe("compat.option_period", function ()
	local function period(api13, value)
		local c = compat({ api13 = api13, options = { client_proxy_timeout = value } });
		return pcall(c.option_period, "client_proxy_timeout");
	end

	it("a number of seconds (or nothing) as it is, on 0.12 and 13", function ()
		for _, api13 in ipairs({ false, true }) do
			assert.are.same({ true, 30 }, { period(api13, 30) });
			assert.are.same({ true, 2.5 }, { period(api13, 2.5) });
			assert.are.same({ true, nil }, { period(api13, nil) });
		end
	end);

	it("0.12: a number written as a string; anything else is an error naming the option", function ()
		assert.are.same({ true, 45 }, { period(false, "45") });
		assert.are.same({ false, "client_proxy_timeout: \"5 seconds\" is not a number of seconds" }, { period(false, "5 seconds") });
		assert.are.same({ false, "client_proxy_timeout: \"true\" is not a number of seconds" }, { period(false, true) });
	end);

	it("13: a period such as \"5 seconds\" or \"2min\"; what 13 does not understand names the option", function ()
		assert.are.same({ true, 5 }, { period(true, "5 seconds") });
		assert.are.same({ true, 120 }, { period(true, "2min") });
		assert.are.same({ false, "client_proxy_timeout: \"soon\" is not a number of seconds nor a period such as \"30 seconds\"" },
			{ period(true, "soon") });
	end);
end);

describe("compat.option_enum", function ()
	it("0.12: the raw value (a wrong type goes to the core, which names the option)", function ()
		local c = compat({ options = { client_proxy_jat = 5 } });
		assert.are.equal(5, c.option_enum("client_proxy_jat", "plain", "base64"));
		assert.is_nil(c.option_enum("client_proxy_strategy", "random", "sticky"));
	end);

	it("13: get_option_enum, the default when unset, an error line for an unknown value", function ()
		local c, m = compat({ api13 = true, options = { client_proxy_jat = "rot13" } });
		assert.are.equal("random", c.option_enum("client_proxy_strategy", "random", "sticky"));
		assert.are.equal("rot13", c.option_enum("client_proxy_jat", "plain", "base64"));
		assert.is_string(fake.logged(m, "error", "client_proxy_jat"));
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
