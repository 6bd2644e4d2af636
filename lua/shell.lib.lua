-- The shell command client_proxy:resources([host]) (module:require "shell"): lists the
-- implementing client's resources of one client_proxy component, or of all of them.
-- Returns add(host, status), where status() gives the proxy's status table (its resources
-- sorted by name, by the core) and the time in the clock of its ejected_until; add returns
-- a function that removes the host again.

local compat = module:require "compat";

-- Every client_proxy component of the server, for the one command that lists them.
local hosts = module:shared("/*/client_proxy/shell_hosts");

local function describe(print_line, status, now)
	local keys = status.keys > 0 and (", %d affinity keys (%d moved)"):format(status.keys, status.moves) or "";
	local hibernating = (status.hibernating or 0) > 0 and (", %d hibernating"):format(status.hibernating) or "";
	print_line(("%s -> %s: %d eligible%s, %d pending%s%s"):format(status.host, status.target,
		status.eligible, hibernating, status.pending, keys, status.revoked and ", subscription revoked" or ""));
	for _, r in ipairs(status.resources) do
		local ejected = "";
		if r.ejected_until and now then -- in the core's clock (native.now): shown on the wall clock
			ejected = os.date("  ejected until %H:%M:%S", os.time() + math.floor(r.ejected_until - now + 0.5));
		end
		local keys = status.keys > 0 and (", %d keys"):format(r.keys) or "";
		-- stream management: the session waits to be resumed, out of rotation
		local asleep = r.hibernating and "  hibernating" or "";
		print_line(("  %-30s priority %4d  %-10s  %d pending%s%s%s"):format(r.name, r.priority, r.pool, r.pending, keys, ejected, asleep));
	end
	return #status.resources;
end

local function resources(self, wanted)
	local shown, count = false, 0;
	local function print_line(line) self.session.print(line); end
	for h, status_of in pairs(hosts) do
		if not wanted or wanted == h then
			shown = true;
			local ok, status, now = pcall(status_of);
			if ok then
				count = count + describe(print_line, status, now);
			else
				-- the first line: mlua's errors carry a traceback
				print_line(("%s: the native core failed: %s"):format(h, (tostring(status):match("^[^\n]*"))));
			end
		end
	end
	if not shown then return false, "No client_proxy component " .. tostring(wanted); end
	return true, ("%d resource(s)"):format(count);
end

local function add_command()
	if prosody.version and not prosody.version:match("^0%.") then
		-- Prosody 13: commands are items. mod_admin_shell only watches the global context
		-- and VirtualHosts, not components, so the item goes to the global context, once
		-- the server has started (mod_admin_shell may load after this component).
		compat.when_started(function ()
			module:context("*"):add_item("shell-command", {
				section = "client_proxy"; section_desc = "mod_client_proxy";
				name = "resources"; desc = "List the implementing client's resources of a proxy host (or of all)";
				args = { { name = "host"; type = "string" } };
				handler = resources;
			});
		end);
	else
		-- Prosody 0.12: the shell's shared environment.
		local env = module:shared("/*/admin_shell/env");
		env.client_proxy = env.client_proxy or {};
		env.client_proxy.resources = resources;
	end
end

return function (host, status)
	hosts[host] = status;
	add_command();
	return function ()
		if hosts[host] == status then hosts[host] = nil; end
	end;
end;
