-- LuaRocks package of mod_client_proxy: the Lua shim and the native library built with cargo.
--
--   luarocks make --tree=DIR               build this checkout and install it into DIR
--   luarocks make --pack-binary-rock       build a binary rock for prosodyctl install
--   make rock                              the same binary rock, in target/rock/
--
-- A Prosody whose plugin_paths lists DIR (or prosodyctl install, which installs into
-- Prosody's own tree) finds share/lua/5.x/mod_client_proxy.lua; the shim finds the
-- library in lib/lua/5.x/ of the same tree. Building needs cargo and make.
rockspec_format = "3.0"
package = "mod_client_proxy"
version = "dev-1"
source = {
	-- luarocks make builds the checkout it runs in: nothing is fetched.
	url = "git+file://.",
}
description = {
	summary = "Prosody component: requests to it are answered by an online resource of a client account",
	detailed = [[
A drop-in replacement for prosody-modules' mod_client_proxy with a Rust core: tracked
requests answered exactly once, timeouts, resource strategies, messages, outbound
requests and presence. Load it with Component "proxy.example" "client_proxy" and
target_address = "service@example.org".]],
	license = "MIT",
	labels = { "prosody", "xmpp" },
}
dependencies = {
	"lua >= 5.1",
}
build_dependencies = {}
build = {
	type = "command",
	-- Builds for the Lua luarocks runs for (make LUA=5.4, 5.3, 5.2, 5.1 or jit) and
	-- leaves the library at target/rock/client_proxy.so.
	build_command = "make rock-build LUA_INTERPRETER=$(LUA)",
	install = {
		-- The shim's libraries become share/lua/5.x/mod_client_proxy/<name>.lua, where
		-- Prosody's module:require finds them (it falls back from <name>.lib.lua to
		-- <name>.lua and looks in share/lua/5.x/mod_<module>/ of each plugin path).
		lua = {
			["mod_client_proxy"] = "lua/mod_client_proxy.lua",
			["mod_client_proxy.native"] = "lua/native.lib.lua",
			["mod_client_proxy.compat"] = "lua/compat.lib.lua",
			["mod_client_proxy.outbox"] = "lua/outbox.lib.lua",
			["mod_client_proxy.resources"] = "lua/resources.lib.lua",
			["mod_client_proxy.affinity"] = "lua/affinity.lib.lua",
			["mod_client_proxy.roster"] = "lua/roster.lib.lua",
			["mod_client_proxy.shell"] = "lua/shell.lib.lua",
			["mod_client_proxy.hibernation"] = "lua/hibernation.lib.lua",
		},
		lib = { ["client_proxy"] = "target/rock/client_proxy.so" },
	},
	copy_directories = {},
}
