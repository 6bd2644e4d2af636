-- A helper for `make bench` (examples/bench.rs), loaded on the throwaway Prosody's
-- VirtualHost only (global modules_enabled): what the Lua heap holds, and requests from
-- many distinct requesters without as many client connections. Not for production.
--
-- iq get <heap xmlns="urn:example:client-proxy-bench:heap"/> to the host:
--   two full collectgarbage("collect"), then a result <heap kib="collectgarbage('count')"/>;
--   with cost="1" in the request also (measured after kib, so its garbage is not in kib;
--   ask last: the memory it frees stays in the process) stanza="bytes one held-shape
--   stanza takes as util.stanza" text="... as a string" length="its serialized length".
-- iq set <inject xmlns="urn:example:client-proxy-bench:heap" to="hold.localhost"
--   first="1" count="5000"/> to the host:
--   sends `count` iq gets to `to`, each from a distinct requester u<k>@<host>/r (k from
--   `first`), id "m<k>", with <query xmlns="urn:example:client-proxy-bench"/> (the bench's
--   payload), as module:send; answers a result when done.

local st = require "util.stanza";

local NS = "urn:example:client-proxy-bench:heap";
local PAYLOAD_NS = "urn:example:client-proxy-bench";
local MAX_INJECT = 100000; -- per iq
local host = module.host;

local function full_collect()
	collectgarbage("collect");
	collectgarbage("collect");
	return collectgarbage("count");
end

-- What a stanza of the shape mod_client_proxy holds (an iq get with the bench's payload,
-- readdressed) takes in the heap, as an object and serialized. Measured once.
local stanza_bytes, text_bytes, text_length;
local function stanza_cost()
	if stanza_bytes then return; end
	local n = 20000;
	local keep = {};
	for i = 1, n do keep[i] = false; end
	local before = full_collect();
	for i = 1, n do
		keep[i] = st.iq({ type = "get", id = "m" .. (1000000 + i), from = "hold." .. host .. "/u" .. (1000000 + i) .. "@" .. host .. "/r",
			to = "silent@" .. host .. "/s" }):tag("query", { xmlns = PAYLOAD_NS }):up();
	end
	stanza_bytes = (full_collect() - before) * 1024 / n;
	for i = 1, n do keep[i] = tostring(keep[i]); end
	text_bytes = (full_collect() - before) * 1024 / n;
	text_length = #keep[1];
	keep = nil; -- luacheck: ignore
	full_collect();
end

module:hook("iq-get/host/" .. NS .. ":heap", function (event)
	local kib = full_collect();
	local heap = { xmlns = NS, kib = ("%.1f"):format(kib) };
	if event.stanza.tags[1].attr.cost then -- after kib: its garbage is not in it
		stanza_cost();
		heap.stanza, heap.text, heap.length = ("%.0f"):format(stanza_bytes), ("%.0f"):format(text_bytes), tostring(text_length);
	end
	event.origin.send(st.reply(event.stanza):tag("heap", heap));
	return true;
end);

module:hook("iq-set/host/" .. NS .. ":inject", function (event)
	local request = event.stanza.tags[1];
	local to = request.attr.to;
	local first, count = tonumber(request.attr.first), tonumber(request.attr.count);
	if not (to and first and count and count >= 0 and count <= MAX_INJECT) then
		event.origin.send(st.error_reply(event.stanza, "modify", "bad-request", "to, first, count (<= " .. MAX_INJECT .. ")"));
		return true;
	end
	for k = first, first + count - 1 do
		module:send(st.iq({ type = "get", id = "m" .. k, from = "u" .. k .. "@" .. host .. "/r", to = to })
			:tag("query", { xmlns = PAYLOAD_NS }):up());
	end
	event.origin.send(st.reply(event.stanza));
	return true;
end);
