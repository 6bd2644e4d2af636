-- What differs between Prosody 0.12 and 13 for mod_client_proxy (module:require "compat").
-- 13 adds module:get_option_period, module:get_option_enum and module:on_ready; 0.12 has
-- none of them.

local compat = {};

local unpack = table.unpack or unpack;

-- The value for the core of one option of native.options ({ name, kind, values, default }):
-- the config's, raw. The core checks it once and names the option when it refuses it.
-- Prosody 13 reads two kinds itself: an enum goes through module:get_option_enum, for the
-- error line it writes when the value is not allowed (the values and the default are the
-- core's); a period written as a string ("2 min") through module:get_option_period, which
-- turns it into seconds (when it cannot, the raw string goes to the core, which refuses it).
function compat.option(spec)
	local raw = module:get_option(spec.name);
	if spec.kind == "enum" and module.get_option_enum then
		module:get_option_enum(spec.name, spec.default, unpack(spec.values or {}));
	elseif spec.kind == "period" and type(raw) == "string" and module.get_option_period then
		local seconds = module:get_option_period(spec.name);
		if type(seconds) == "number" then return seconds; end
	end
	return raw;
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
