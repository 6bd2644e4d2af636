-- The floor `make bench` compares mod_client_proxy against: a component that does the
-- least a proxy must do and nothing else. No tracking, no checks, no errors, no timeout.
--
--   Component "floor.localhost" "readdress_floor"
--       readdress_floor_targets = { "service@localhost/a", "service@localhost/b" }
--
-- An iq get/set to the component goes to the next target in turn (round robin), from
-- <host>/<requester's full JID> (the plain JAT of mod_client_proxy); any other iq (a
-- result or an error, to <host>/<requester>) goes back to the requester decoded from the
-- resource, from <host>. Used in process by bench/shim_bench.lua (the specs' fake module)
-- and end to end by examples/bench.rs (installed in the throwaway Prosody's plugins).
-- Not for production: it forwards anything to the targets and delivers anything back.
--
-- With `readdress_floor_call = true` (the in-process bench's "call floor"), each stanza's
-- head also goes through one call to a C function and six values come back, as they must
-- for any core in native code: the function is `select`, the cheapest C function Lua has
-- (it hands its arguments back). What that adds to the floor is what calling native code
-- per stanza costs at the least, before the code called does anything.

local targets = module:get_option_array("readdress_floor_targets");
assert(targets and #targets > 0, "readdress_floor_targets: a list of full JIDs");
local count = #targets;
local host = module.host;
local prefix = host .. "/";
local skip = #prefix + 1;
local turn = 0;
local call = module:get_option("readdress_floor_call") == true;
local select = select;

local function readdress(event)
	local stanza = event.stanza;
	local attr = stanza.attr;
	local kind = attr.type;
	if kind == "get" or kind == "set" then
		turn = turn % count + 1;
		attr.to, attr.from = targets[turn], prefix .. attr.from;
	else
		attr.to, attr.from = attr.to:sub(skip), host;
	end
	module:send(stanza);
	return true;
end

-- `readdress` after handing the head to C and taking six values back (see above); written
-- out again, so that neither handler pays a call or a test for the other.
local function call_and_readdress(event)
	local stanza = event.stanza;
	local attr = stanza.attr;
	local kind = attr.type;
	local verdict, _, from, to, _, _ = select(1, "send", kind, attr.from, attr.to, attr.id, attr["xml:lang"]);
	if verdict ~= "send" then return; end
	if kind == "get" or kind == "set" then
		turn = turn % count + 1;
		attr.to, attr.from = targets[turn], prefix .. from;
	else
		attr.to, attr.from = to:sub(skip), host;
	end
	module:send(stanza);
	return true;
end

-- As mod_client_proxy hooks them (to the host and to host/anything fire */host).
for _, name in ipairs({ "iq/host", "iq/bare", "iq/full" }) do
	module:hook(name, call and call_and_readdress or readdress, -1);
end
