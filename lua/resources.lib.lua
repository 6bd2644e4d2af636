-- client_proxy_resources for mod_client_proxy (module:require "resources"): a list of Lua
-- patterns; a resource of the target is eligible when its name matches one of them (all
-- are, when the option is not set). The core never sees the patterns: the shim tells it,
-- with each presence, whether the sender is eligible.
-- Returns { option = the option's name, is_eligible = function (from) -> boolean }.

local OPTION = "client_proxy_resources";

local patterns = module:get_option_array(OPTION);
for _, pattern in ipairs(patterns or {}) do
	-- A malformed pattern fails only where matching reaches the fault: try "" and itself.
	local valid, err = type(pattern) == "string", "not a string";
	if valid then valid, err = pcall(string.match, "", pattern); end
	if valid then valid, err = pcall(string.match, pattern, pattern); end
	if not valid then
		error(("%s: %q is not a Lua pattern: %s"):format(OPTION, tostring(pattern), tostring(err)), 0);
	end
end

-- Whether the resource of a full JID (a presence's from) may get requests.
local function is_eligible(from)
	local resource = from and from:match("/(.*)$");
	if not patterns or not resource then return true; end
	for _, pattern in ipairs(patterns) do
		-- A fault the load-time check could not reach is logged; the pattern matches nothing.
		local matched, result = pcall(string.match, resource, pattern);
		if not matched then
			module:log("error", "%s: pattern %q failed on %q: %s", OPTION, pattern, resource, tostring(result));
		elseif result then
			return true;
		end
	end
	return false;
end

return { option = OPTION, is_eligible = is_eligible };
