-- Which resources of the target may get requests, for mod_client_proxy (module:require
-- "resources"): client_proxy_resources, a list of Lua patterns the resource's name must
-- match, and client_proxy_require_caps, a list of XEP-0115 caps nodes one of which its
-- latest available presence must advertise (<c xmlns='http://jabber.org/protocol/caps'
-- node='...'/>). Both must admit it; an option not set admits every resource. The core
-- never sees either option: the shim tells it, with each presence, whether the sender is
-- eligible (a presence without the node makes a resource ineligible until one with it).
-- Returns { options = the set of the options' names (the shim does not give them to the
-- core), is_eligible = function (presence stanza) -> boolean }.

local RESOURCES, CAPS = "client_proxy_resources", "client_proxy_require_caps";
local CAPS_NS = "http://jabber.org/protocol/caps";

local patterns = module:get_option_array(RESOURCES);
for _, pattern in ipairs(patterns or {}) do
	-- A malformed pattern fails only where matching reaches the fault: try "" and itself.
	local valid, err = type(pattern) == "string", "not a string";
	if valid then valid, err = pcall(string.match, "", pattern); end
	if valid then valid, err = pcall(string.match, pattern, pattern); end
	if not valid then
		error(("%s: %q is not a Lua pattern: %s"):format(RESOURCES, tostring(pattern), tostring(err)), 0);
	end
end

-- The caps nodes as a set (nil: not set, every resource admitted).
local nodes;
local node_list = module:get_option_array(CAPS);
if node_list then
	nodes = {};
	for _, node in ipairs(node_list) do
		if type(node) ~= "string" or node == "" then
			error(("%s: %q is not a caps node (a URI such as \"http://jitsi.org/jicofo\")"):format(CAPS, tostring(node)), 0);
		end
		nodes[node] = true;
	end
end

-- Whether the resource of a full JID (a presence's from) matches client_proxy_resources.
local function name_admitted(from)
	local resource = from and from:match("/(.*)$");
	if not patterns or not resource then return true; end
	for _, pattern in ipairs(patterns) do
		-- A fault the load-time check could not reach is logged; the pattern matches nothing.
		local matched, result = pcall(string.match, resource, pattern);
		if not matched then
			module:log("error", "%s: pattern %q failed on %q: %s", RESOURCES, pattern, resource, tostring(result));
		elseif result then
			return true;
		end
	end
	return false;
end

-- Whether the sender of this presence may get requests.
local function is_eligible(presence)
	if nodes then
		local caps = presence:get_child("c", CAPS_NS);
		if not (caps and nodes[caps.attr.node]) then return false; end
	end
	return name_admitted(presence.attr.from);
end

return { options = { [RESOURCES] = true, [CAPS] = true }, is_eligible = is_eligible };
