-- Affinity keys for mod_client_proxy (module:require "affinity"): the core knows the rules
-- of client_proxy_affinity ({namespace}element@attribute) and keeps each key on its
-- resource; the shim, which has the stanza, finds the key. A request's payload is its
-- first child element (an iq get/set has exactly one, RFC 6120 8.2.3); the first rule
-- that names its namespace and name and whose attribute it carries gives the key.
-- Returns { matcher = function (rules) -> nil (no rules) or function (stanza) -> rule
-- (1-based, in the option's order), value }.

local function matcher(rules)
	if #rules == 0 then return nil; end
	-- by_namespace[namespace][element] = { { rule =, attribute = }, ... } in the option's order
	local by_namespace = {};
	for i, rule in ipairs(rules) do
		local by_element = by_namespace[rule.namespace] or {};
		by_namespace[rule.namespace] = by_element;
		local candidates = by_element[rule.element] or {};
		by_element[rule.element] = candidates;
		candidates[#candidates + 1] = { rule = i, attribute = rule.attribute };
	end
	return function (stanza)
		local payload = stanza.tags[1];
		if payload == nil then return nil; end
		local by_element = by_namespace[payload.attr.xmlns];
		local candidates = by_element and by_element[payload.name];
		if candidates == nil then return nil; end
		for _, candidate in ipairs(candidates) do
			local value = payload.attr[candidate.attribute];
			if value ~= nil then return candidate.rule, value; end
		end
		return nil;
	end;
end

return { matcher = matcher };
