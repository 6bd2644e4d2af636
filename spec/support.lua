-- Small helpers shared by the spec files (require "support"; ./spec is on lpath in .busted).
-- Kept local to the specs on purpose: nothing here is put into the standard library, so a
-- shim that used a 5.3+ function would still fail under the older Luas.
local support = {};

-- math.type where there is one (5.3, 5.4). Lua 5.1, 5.2 and LuaJIT have a single number
-- type (a double): there, an integer is a finite number without a fraction.
function support.number_type(x)
	if math.type then return math.type(x); end
	if type(x) ~= "number" then return nil; end
	if x == math.floor(x) and x > -math.huge and x < math.huge then return "integer"; end
	return "float";
end

-- Unique host names per test and per run (prefix-<n>-<nonce>.<tld>), so that state the
-- library keeps per host from an earlier test (or an earlier `busted --repeat` round)
-- never leaks in.
local run_nonce = ("%x%x"):format(os.time() % 0x10000, math.random(0, 0xffffff));
function support.host_namer(prefix, tld)
	local counter = 0;
	return function ()
		counter = counter + 1;
		return ("%s-%d-%s.%s"):format(prefix, counter, run_nonce, tld);
	end
end

-- How many of a fake module's log lines at `level` contain `needle`.
function support.count_logs(m, level, needle)
	local n = 0;
	for _, line in ipairs(m.logs) do
		if line.level == level and line.text:find(needle, 1, true) then n = n + 1; end
	end
	return n;
end

-- That stanza `s` is an iq error with these addresses, id, type, condition and text.
function support.assert_error(s, to, from, id, etype, condition, text)
	local assert = require "luassert";
	assert.are.same({ "iq", "error", to, from, id }, { s.name, s.attr.type, s.attr.to, s.attr.from, s.attr.id });
	assert.are.same({ etype, condition, text }, { s:get_error() });
end

return support;
