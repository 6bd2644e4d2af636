-- lua/native.lib.lua: where the shim finds client_proxy.so, in order, and what it says
-- when it cannot (docs/INTERNALS.md, "Installed layouts"). Run in the fake Prosody
-- module (spec/helpers/fake_module.lua) against the real library (CLIENT_PROXY_SO).

local fake = require "helpers.fake_module";
local q = fake.sh_quote;

local LUA_VERSION = _VERSION:match("%d+%.%d+");

-- Runs native.lib.lua for a module whose get_directory() is dir (and path, module.path);
-- returns ok, then the library and its path, or the error.
local function load_lib(dir, path)
	local m = fake.new({ directory = dir, path = path });
	return pcall(fake.run, fake.LIB_DIR .. "/native.lib.lua", m);
end

local function link(so, path)
	assert(os.execute(("mkdir -p %s && ln -s %s %s"):format(q(path:match("^(.*)/")), q(so), q(path))));
end

describe("native.lib.lua", function ()
	local tree, empty, saved_cpath;
	setup(function ()
		-- a luarocks tree as `luarocks make --tree` leaves it: the shim in share/lua/5.x/,
		-- the library in lib/lua/5.x/
		tree, empty = fake.temp_dir(), fake.temp_dir();
		link(fake.SO, tree .. "/lib/lua/" .. LUA_VERSION .. "/client_proxy.so");
		assert(os.execute("mkdir -p " .. q(tree .. "/share/lua/" .. LUA_VERSION)));
	end);
	teardown(function () fake.remove_dir(tree); fake.remove_dir(empty); end);
	before_each(function () saved_cpath = package.cpath; package.cpath = "/nonexistent/?.so"; end);
	after_each(function () package.cpath = saved_cpath; end);

	it("returns the library's exports and its path, next to the shim first (make install)", function ()
		local ok, native, path = load_lib(fake.plugin_dir(), tree .. "/share/lua/" .. LUA_VERSION .. "/mod_client_proxy.lua");
		assert.is_true(ok, native);
		assert.is_function(native.open);
		assert.are.equal(fake.plugin_dir() .. "/client_proxy.so", path);
	end);

	it("next to module.path when get_directory() has none", function ()
		local ok, _, path = load_lib(empty, fake.plugin_dir() .. "/mod_client_proxy.lua");
		assert.is_true(ok, path);
		assert.are.equal(fake.plugin_dir() .. "/client_proxy.so", path);
	end);

	it("in the luarocks tree the shim was installed into (luarocks make, prosodyctl install)", function ()
		local ok, _, path = load_lib(tree .. "/share/lua/" .. LUA_VERSION);
		assert.is_true(ok, path);
		assert.are.equal(tree .. "/lib/lua/" .. LUA_VERSION .. "/client_proxy.so", path);
	end);

	it("in the tree of a rock prosodyctl installed (get_directory() is the rock's directory)", function ()
		local ok, _, path = load_lib(tree .. "/lib/luarocks/rocks-" .. LUA_VERSION .. "/mod_client_proxy/dev-1");
		assert.is_true(ok, path);
		assert.are.equal(tree .. "/lib/lua/" .. LUA_VERSION .. "/client_proxy.so", path);
	end);

	it("on package.cpath, last", function ()
		package.cpath = "/nonexistent/?.so;" .. tree .. "/lib/lua/" .. LUA_VERSION .. "/?.so";
		local ok, _, path = load_lib(empty);
		assert.is_true(ok, path);
		assert.are.equal(tree .. "/lib/lua/" .. LUA_VERSION .. "/client_proxy.so", path);
	end);

	it("says where it looked, in order, when it is nowhere", function ()
		local ok, err = load_lib(empty, "/elsewhere/share/lua/5.4/mod_client_proxy.lua");
		assert.is_false(ok);
		assert.are.equal("cannot find the native library client_proxy.so: build it (make) and install it next to mod_client_proxy.lua; looked in "
			.. empty .. "/client_proxy.so, /elsewhere/share/lua/5.4/client_proxy.so, /elsewhere/lib/lua/5.4/client_proxy.so, /nonexistent/client_proxy.so", err);
	end);

	it("says which file it could not load, and why", function ()
		local dir = fake.temp_dir();
		local f = assert(io.open(dir .. "/client_proxy.so", "wb"));
		f:write("not a shared object\n");
		f:close();
		local ok, err = load_lib(dir);
		fake.remove_dir(dir);
		assert.is_false(ok);
		assert.matches("cannot load the native library " .. dir .. "/client_proxy.so (rebuild it with make and install it again): ", err, 1, true);
	end);

	-- make test-lua sets CLIENT_PROXY_FOREIGN_SO to a build for another Lua: the 5.4 one
	-- under the others, the 5.1 one (when built) under 5.4.
	it("a library built for another Lua: names the make LUA= to use", function ()
		local foreign = os.getenv("CLIENT_PROXY_FOREIGN_SO");
		if not foreign or foreign == "" then
			pending("CLIENT_PROXY_FOREIGN_SO is not set (make test-lua sets it)");
			return;
		end
		assert(io.open(foreign, "rb"), foreign .. " not found"):close();
		local dir = fake.temp_dir();
		link(foreign, dir .. "/client_proxy.so");
		local ok, err = load_lib(dir);
		fake.remove_dir(dir);
		assert.is_false(ok);
		local wanted = rawget(_G, "jit") and "jit" or LUA_VERSION;
		assert.matches("it was built for another Lua than this Prosody's " .. _VERSION
			.. ": rebuild with make LUA=" .. wanted, err, 1, true);
		assert.matches("undefined symbol", err, 1, true);
	end);
end);
