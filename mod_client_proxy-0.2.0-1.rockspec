-- LuaRocks package of mod_client_proxy 0.2.0: the release tarball, built with cargo.
--
--   make dist                     the tarball (dist/mod_client_proxy-0.2.0.tar.gz) and,
--                                 from it, a binary rock per Lua (dist/lua5.x/)
--   luarocks --lua-version=5.4 --tree=DIR build /path/to/mod_client_proxy-0.2.0-1.rockspec
--                                 in a directory holding the tarball: what make dist does
--
-- The source is a local file: a URL without a protocol is a path, relative to the
-- directory luarocks runs in, where luarocks also unpacks it (make dist runs it in a
-- scratch directory with a copy of the tarball, target/dist/src-5.x/). Building
-- needs cargo, make and the Lua headers (e.g. liblua5.4-dev); the binary rocks need none.
-- The installed layout is the one of mod_client_proxy-dev-1.rockspec: share/lua/5.x/
-- mod_client_proxy.lua and mod_client_proxy/{native,compat,outbox,resources,roster,shell}.lua,
-- and the stripped library lib/lua/5.x/client_proxy.so.
rockspec_format = "3.0"
package = "mod_client_proxy"
version = "0.2.0-1"
source = {
	url = "mod_client_proxy-0.2.0.tar.gz",
	dir = "mod_client_proxy-0.2.0",
}
description = {
	summary = "Prosody component: requests to it are answered by an online resource of a client account",
	detailed = [[
A drop-in replacement for prosody-modules' mod_client_proxy with a Rust core: tracked
requests answered exactly once, timeouts, retries and a pool that heals itself, resource
strategies, messages, outbound requests and presence. Load it with
Component "proxy.example" "client_proxy" and target_address = "service@example.org".]],
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
	-- leaves the stripped library at target/rock/client_proxy.so.
	build_command = "make rock-build LUA_INTERPRETER=$(LUA)",
	install = {
		-- As in mod_client_proxy-dev-1.rockspec: the shim's libraries become modules
		-- mod_client_proxy.<name>, which Prosody's module:require finds.
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
