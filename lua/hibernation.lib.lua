-- Stream management (module:require "hibernation"): for a target account on this server,
-- tells the core when one of its sessions hibernates (mod_smacks, 0.12 and 13: the
-- connection dropped and the session waits up to smacks_hibernation_time to be resumed,
-- still online to everyone) and when it is resumed. The core takes a hibernating resource
-- out of rotation and moves its gets; a hibernation that ends without a resumption is an
-- unavailable presence, as any session's end.
--
-- mod_smacks fires on the user's host: "smacks-hibernation-start" { origin = the session }
-- and, on a resumption, "smacks-hibernation-end" { origin = the new stream's session,
-- resumed = the session that hibernated }. The handlers go on the target's host once it is
-- active (hosts activate in any order; a host deactivated and activated again has new
-- events), through module:context, so that Prosody removes them when the module unloads.
--
-- Returns watch(target, tell): tell(method, resource) calls proxy:<method>(resource) and
-- applies its outbox ("hibernating" or "resumed").

local jid_split = require "util.jid".split;

return function (target, tell)
	local username, target_host = jid_split(target);
	if not username then return; end
	local function resource_of(session)
		if type(session) == "table" and session.username == username and session.host == target_host then
			return session.resource;
		end
	end
	local function hibernating(event)
		local resource = resource_of(event.origin);
		if resource then tell("hibernating", resource); end
	end
	local function resumed(event)
		local resource = resource_of(event.resumed);
		if resource then tell("resumed", resource); end
	end
	local hooked; -- the events of the target's host that have the handlers
	local function watch()
		local host = prosody.hosts and prosody.hosts[target_host];
		if not host or host.type ~= "local" or host.events == hooked then return; end
		hooked = host.events;
		local context = module:context(target_host);
		context:hook("smacks-hibernation-start", hibernating);
		context:hook("smacks-hibernation-end", resumed);
	end
	module:hook_global("host-activated", function (host)
		if host == target_host then watch(); end
	end);
	watch();
end;
