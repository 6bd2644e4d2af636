-- lua/shell.lib.lua: the shell command client_proxy:resources([host]) on Prosody 0.12
-- (the admin shell's shared environment) and 13 (a shell-command item in the global
-- context, once started), listing what each component's status() gives.

local fake = require "helpers.fake_module";

local STATUS = { host = "proxy.example", target = "service@example.org", pending = 1, eligible = 1, hibernating = 1, revoked = false,
	keys = 0, moves = 0,
	resources = { -- sorted by name, as the core gives them
		{ name = "focus1", priority = 5, pool = "active", pending = 1, keys = 0 },
		{ name = "focus2", priority = 0, pool = "active", pending = 0, hibernating = true, keys = 0 },
		{ name = "old", priority = -1, pool = "draining", pending = 0, ejected_until = 1090, keys = 0 },
		{ name = "phone", priority = 10, pool = "ineligible", pending = 0, keys = 0 },
	} };
local LISTING = {
	"proxy.example -> service@example.org: 1 eligible, 1 hibernating, 1 pending",
	"  focus1                         priority    5  active      1 pending",
	"  focus2                         priority    0  active      0 pending  hibernating",
	"  old                            priority   -1  draining    0 pending  ejected until " .. os.date("%H:%M:%S", os.time() + 90),
	"  phone                          priority   10  ineligible  0 pending",
};

-- Runs shell.lib.lua for a module; returns add(host, status) and the module.
local function shell(opts)
	local m = fake.new(opts);
	return fake.run(fake.LIB_DIR .. "/shell.lib.lua", m), m;
end

-- Calls a command as mod_admin_shell does; returns its results and the lines printed.
local function call(command, ...)
	local lines = {};
	local ok, text = command({ session = { print = function (line) lines[#lines + 1] = line; end } }, ...);
	return ok, text, lines;
end

describe("client_proxy:resources", function ()
	it("with affinity keys: the keys in all and the moves, then each resource's keys", function ()
		local add, m = shell({ shared = {} });
		local status = { host = "proxy.example", target = "service@example.org", pending = 0, eligible = 2, revoked = false,
			keys = 3, moves = 1, resources = {
				{ name = "jicofo1", priority = 0, pool = "active", pending = 0, keys = 2 },
				{ name = "jicofo2", priority = -1, pool = "draining", pending = 0, keys = 0 },
			} };
		add("proxy.example", function () return status, 1000; end);
		local _, _, lines = call(m:shared("/*/admin_shell/env").client_proxy.resources, "proxy.example");
		assert.are.same({
			"proxy.example -> service@example.org: 2 eligible, 0 pending, 3 affinity keys (1 moved)",
			"  jicofo1                        priority    0  active      0 pending, 2 keys",
			"  jicofo2                        priority   -1  draining    0 pending, 0 keys",
		}, lines);
	end);

	it("Prosody 0.12: in the admin shell's environment; one host, all, or an unknown one", function ()
		local shared = {};
		local add, m = shell({ shared = shared });
		local remove = add("proxy.example", function () return STATUS, 1000; end);
		local add2 = shell({ shared = shared, host = "other.example" });
		add2("other.example", function () error("the core failed\nstack traceback:\n\t[C]: in ?", 0); end);
		local command = m:shared("/*/admin_shell/env").client_proxy.resources;
		assert.are.same({ true, "4 resource(s)", LISTING }, { call(command, "proxy.example") });

		local ok, _, lines = call(command);
		assert.is_true(ok);
		assert.are.equal(6, #lines);
		-- the first line of the error only (mlua's carry a traceback)
		assert.are.equal("other.example: the native core failed: the core failed", lines[1] == LISTING[1] and lines[6] or lines[1]);

		assert.are.same({ false, "No client_proxy component nowhere.example", {} }, { call(command, "nowhere.example") });
		remove();
		assert.are.same({ false, "No client_proxy component proxy.example", {} }, { call(command, "proxy.example") });
		assert.is_nil(m.items["shell-command"]);
	end);

	it("Prosody 13: a shell-command item in the global context once started, same listing", function ()
		local prosody = { version = "13.0.1" };
		local add, m = shell({ api13 = true, prosody = prosody });
		add("proxy.example", function () return STATUS, 1000; end);
		assert.are.same({}, m.global_items);
		fake.server_started(m);
		assert.are.equal(1, #m.global_items);
		local item = m.global_items[1].item;
		assert.are.same({ "shell-command", "client_proxy", "resources", { { name = "host", type = "string" } } },
			{ m.global_items[1].key, item.section, item.name, item.args });
		assert.are.same({ true, "4 resource(s)", LISTING }, { call(item.handler, "proxy.example") });
		assert.is_nil(m:shared("/*/admin_shell/env").client_proxy);
	end);
end);
