-- lua/resources.lib.lua: client_proxy_resources, the Lua patterns a resource of the target
-- must match to get requests, checked at load and matched per presence. Run in the fake
-- Prosody module (spec/helpers/fake_module.lua).

local fake = require "helpers.fake_module";

local TARGET = "service@example.org";

-- resources.lib.lua run with client_proxy_resources = patterns; returns ok, the lib (or the
-- load error) and the module.
local function resources(patterns)
	local m = fake.new({ options = { client_proxy_resources = patterns } });
	local ok, lib = pcall(fake.run, fake.LIB_DIR .. "/resources.lib.lua", m);
	return ok, lib, m;
end

describe("client_proxy_resources", function ()
	it("names the option it keeps (the shim does not give it to the core); unset: every resource is eligible", function ()
		local ok, r = resources(nil);
		assert.is_true(ok, r);
		assert.are.equal("client_proxy_resources", r.option);
		assert.are.same({ true, true, true }, { r.is_eligible(TARGET .. "/phone"), r.is_eligible(TARGET .. "/"), r.is_eligible(nil) });
	end);

	it("a resource is eligible when it matches one of the patterns; a list or one string", function ()
		local ok, r = resources({ "^focus%d+$", "^jicofo" });
		assert.is_true(ok, r);
		assert.are.same({ true, true, false, false }, { r.is_eligible(TARGET .. "/focus12"), r.is_eligible(TARGET .. "/jicofo-b"),
			r.is_eligible(TARGET .. "/focus"), r.is_eligible(TARGET .. "/phone") });
		assert.is_true(r.is_eligible(TARGET), "no resource: nothing to match");
		ok, r = resources("^focus");
		assert.is_true(ok, r);
		assert.are.same({ true, false }, { r.is_eligible(TARGET .. "/focus1"), r.is_eligible(TARGET .. "/phone") });
		assert.is_true(r.is_eligible(TARGET .. "/focus/with/slashes"), "the resource is everything after the first /");
	end);

	it("refuses at load what is not a Lua pattern, naming the option and the pattern", function ()
		for _, bad in ipairs({ "[a", "(a", "%", "b[", 5, true }) do
			local ok, err = resources({ "^ok", bad });
			assert.is_false(ok, tostring(bad));
			assert.matches("^client_proxy_resources: \"" .. tostring(bad):gsub("%p", "%%%0") .. "\" is not a Lua pattern: ", err);
		end
	end);

	it("a fault only some resources reach: logged, that pattern matches nothing, the others still apply", function ()
		local ok, r, m = resources({ "^z(a)%2", "^phone" });
		assert.is_true(ok, r);
		assert.is_false(r.is_eligible(TARGET .. "/za"));
		assert.is_string(fake.logged(m, "error", "client_proxy_resources: pattern \"^z(a)%2\" failed on \"za\""));
		assert.is_true(r.is_eligible(TARGET .. "/phone"));
	end);
end);
