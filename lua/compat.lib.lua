-- What differs between Prosody 0.12 and 13 for mod_client_proxy (module:require "compat").
-- 13 adds module:get_option_period, module:get_option_enum and module:on_ready; 0.12 has
-- none of them.

local compat = {};

-- A period in seconds. Prosody 13's module:get_option_period also takes a description
-- ("30 seconds", "2 min"); 0.12 numbers only. A value neither understands is a load error
-- naming the option, not a silent default. nil when the option is not set.
function compat.option_period(name)
	local raw = module:get_option_scalar(name);
	if raw == nil or type(raw) == "number" then return raw; end
	local seconds;
	if module.get_option_period then
		seconds = module:get_option_period(name);
	else
		seconds = tonumber(raw);
	end
	if type(seconds) ~= "number" then
		error(("%s: %q is not a number of seconds%s"):format(name, tostring(raw),
			module.get_option_period and " nor a period such as \"30 seconds\"" or ""), 0);
	end
	return seconds;
end

-- One of a set of names. Prosody 13's module:get_option_enum logs the allowed values when
-- the value is not one of them; on 0.12 the raw value. Either way the core refuses a value
-- it does not know (a wrong type included), naming the option.
function compat.option_enum(name, default, ...)
	if module.get_option_enum then
		return module:get_option_enum(name, default, ...);
	end
	return module:get_option_scalar(name);
end

-- Runs f once the server has started: at once on a running server (a module reload or a
-- component added at runtime), else when it has. Prosody 13's module:on_ready where present.
function compat.when_started(f)
	if module.on_ready then
		module:on_ready(f);
	elseif prosody.start_time then
		f();
	else
		module:hook_global("server-started", f);
	end
end

return compat;
