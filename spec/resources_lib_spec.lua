-- lua/resources.lib.lua: which resources of the target may get requests:
-- client_proxy_resources, the Lua patterns a resource's name must match (checked at load),
-- and client_proxy_require_caps, the XEP-0115 caps nodes one of which its presence must
-- advertise; both matched per presence. Run in the fake Prosody module
-- (spec/helpers/fake_module.lua).

local fake = require "helpers.fake_module";
local st = require "util.stanza";

local TARGET = "service@example.org";
local CAPS_NS = "http://jabber.org/protocol/caps";
local JICOFO = "http://jitsi.org/jicofo";

-- resources.lib.lua run with client_proxy_resources = patterns and client_proxy_require_caps
-- = nodes; returns ok, the lib (or the load error) and the module.
local function resources(patterns, nodes)
	local m = fake.new({ options = { client_proxy_resources = patterns, client_proxy_require_caps = nodes } });
	local ok, lib = pcall(fake.run, fake.LIB_DIR .. "/resources.lib.lua", m);
	return ok, lib, m;
end

-- An available presence from `from`, with a caps element for `node` when given (node
-- true: a caps element without a node attribute).
local function presence(from, node)
	local p = st.presence({ from = from, to = "proxy.example" });
	p:text_tag("priority", "0");
	if node then
		p:tag("c", { xmlns = CAPS_NS, hash = "sha-1", node = node ~= true and node or nil, ver = "q07IKJEyjvHSyhy//CH0CxmKi8w=" }):up();
	end
	return p;
end

-- Whether the sender of a presence from TARGET/resource (with caps node `node`) is eligible.
local function eligible(r, resource, node)
	return r.is_eligible(presence(resource and TARGET .. "/" .. resource or TARGET, node));
end

describe("client_proxy_resources", function ()
	it("names the options it keeps (the shim does not give them to the core); unset: every resource is eligible", function ()
		local ok, r = resources(nil);
		assert.is_true(ok, r);
		assert.are.same({ client_proxy_resources = true, client_proxy_require_caps = true }, r.options);
		assert.are.same({ true, true, true, true }, { eligible(r, "phone"), eligible(r, ""), eligible(r, nil),
			r.is_eligible(st.presence({})) });
	end);

	it("a resource is eligible when it matches one of the patterns; a list or one string", function ()
		local ok, r = resources({ "^focus%d+$", "^jicofo" });
		assert.is_true(ok, r);
		assert.are.same({ true, true, false, false }, { eligible(r, "focus12"), eligible(r, "jicofo-b"),
			eligible(r, "focus"), eligible(r, "phone") });
		assert.is_true(eligible(r, nil), "no resource: nothing to match");
		ok, r = resources("^focus");
		assert.is_true(ok, r);
		assert.are.same({ true, false }, { eligible(r, "focus1"), eligible(r, "phone") });
		assert.is_true(eligible(r, "focus/with/slashes"), "the resource is everything after the first /");
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
		assert.is_false(eligible(r, "za"));
		assert.is_string(fake.logged(m, "error", "client_proxy_resources: pattern \"^z(a)%2\" failed on \"za\""));
		assert.is_true(eligible(r, "phone"));
	end);
end);

describe("client_proxy_require_caps", function ()
	it("a resource is eligible when its presence advertises a listed caps node; a list or one string", function ()
		local ok, r = resources(nil, { JICOFO, "urn:example:other-focus" });
		assert.is_true(ok, r);
		assert.is_true(eligible(r, "a", JICOFO), "the node listed");
		assert.is_true(eligible(r, "b", "urn:example:other-focus"), "the other node listed");
		assert.is_false(eligible(r, "jvb", "http://jitsi.org/jitsi-videobridge"), "another node");
		assert.is_false(eligible(r, "phone", nil), "no <c/> element");
		assert.is_false(eligible(r, "c", true), "a <c/> element without a node");
		assert.is_false(eligible(r, "d", JICOFO .. "/"), "nodes are compared exactly");
		ok, r = resources(nil, JICOFO);
		assert.is_true(ok, r);
		assert.are.same({ true, false }, { eligible(r, "a", JICOFO), eligible(r, "a", nil) });
	end);

	it("only the caps namespace counts, and the node is read from that element", function ()
		local ok, r = resources(nil, { JICOFO });
		assert.is_true(ok, r);
		local p = presence(TARGET .. "/a");
		p:tag("c", { xmlns = "urn:example:not-caps", node = JICOFO }):up();
		assert.is_false(r.is_eligible(p), "a <c/> of another namespace");
		p = presence(TARGET .. "/a");
		p:tag("x", { xmlns = "vcard-temp:x:update" }):up();
		p:tag("c", { xmlns = CAPS_NS, hash = "sha-1", node = JICOFO, ver = "x" }):up();
		assert.is_true(r.is_eligible(p), "after other payloads");
	end);

	it("combined with client_proxy_resources: both must admit the resource", function ()
		local ok, r = resources({ "^focus" }, { JICOFO });
		assert.is_true(ok, r);
		assert.are.same({ true, false, false, false }, { eligible(r, "focus1", JICOFO), eligible(r, "focus1", nil),
			eligible(r, "phone", JICOFO), eligible(r, "phone", nil) });
	end);

	it("an empty list admits no resource", function ()
		local ok, r = resources(nil, {});
		assert.is_true(ok, r);
		assert.is_false(eligible(r, "a", JICOFO));
	end);

	it("refuses at load what is not a caps node, naming the option and the value", function ()
		for _, bad in ipairs({ "", 5, true }) do
			local ok, err = resources(nil, { JICOFO, bad });
			assert.is_false(ok, tostring(bad));
			assert.matches("^client_proxy_require_caps: \"" .. tostring(bad):gsub("%p", "%%%0") .. "\" is not a caps node", err);
		end
	end);
end);
