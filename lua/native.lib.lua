-- Finds and loads the native core, client_proxy.so, for mod_client_proxy
-- (module:require "native" -> the library's export table and the path it was loaded from).
--
-- Where it may be, in order: next to the shim (`make install`, a plugin directory); in the
-- luarocks tree the shim was installed into (share/lua/5.x/ holds the shim, lib/lua/5.x/
-- the library: `luarocks make`, `prosodyctl install`, for which module:get_directory() is
-- the rock's directory lib/luarocks/rocks-5.x/<name>/<version>/ of the tree); on
-- package.cpath. Loaded by explicit path: a luarocks tree is not on package.cpath.

local function library_candidates()
	local candidates, seen = {}, {};
	local function add(path)
		if not seen[path] then
			seen[path] = true;
			candidates[#candidates + 1] = path;
		end
	end
	local dirs = { module:get_directory() };
	if type(module.path) == "string" then
		dirs[#dirs + 1] = module.path:match("^(.*)/[^/]*$");
	end
	for _, dir in ipairs(dirs) do
		add(dir .. "/client_proxy.so");
		local tree, version = dir:match("^(.*)/share/lua/(%d+%.%d+)/?$");
		if not tree then
			tree, version = dir:match("^(.*)/lib/luarocks/rocks%-(%d+%.%d+)/");
		end
		if tree then
			add(tree .. "/lib/lua/" .. version .. "/client_proxy.so");
		end
	end
	for template in package.cpath:gmatch("[^;]+") do
		add((template:gsub("%?", "client_proxy")));
	end
	return candidates;
end

local function load_native()
	local tried = {};
	for _, path in ipairs(library_candidates()) do
		local file = io.open(path, "rb");
		if file then
			file:close();
			local open, err = package.loadlib(path, "luaopen_client_proxy");
			if open then return open(), path; end
			local hint = "rebuild it with make and install it again";
			if tostring(err):match("undefined symbol") then
				-- e.g. lua_newuserdatauv: a library built for Lua 5.4 loaded by an older Lua.
				local version = _VERSION:match("%d+%.%d+") or "?";
				hint = ("it was built for another Lua than this Prosody's %s: rebuild with make LUA=%s"):format(_VERSION, rawget(_G, "jit") and "jit" or version);
			end
			error(("cannot load the native library %s (%s): %s"):format(path, hint, tostring(err)), 0);
		end
		tried[#tried + 1] = path;
	end
	error(("cannot find the native library client_proxy.so: build it (make) and install it next to mod_client_proxy.lua; looked in %s"):format(table.concat(tried, ", ")), 0);
end

return load_native();
