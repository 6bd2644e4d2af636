-- The component's subscription to the target's presence, for mod_client_proxy
-- (module:require "roster"): returns start(target, manage), called once at load.
--
-- Always: once the server has started, a subscribe from the component to the target (a
-- subscription it already approved makes its server send its current presences).
-- With manage (client_proxy_manage_roster, the core's checked value):
-- - A target on this server (its domain a local host): the component is put on the
--   target's roster with subscription "from" (the target's presence goes to it) at start,
--   when the target's host is activated, at the target's login and whenever the entry is
--   found missing (removed, or the subscription revoked: the target's "unsubscribed" or a
--   presence error), each change logged at info. Prosody then sends the target's presence
--   to the component and answers its subscribe itself, so a client that refuses every
--   subscription request (Smack 4.2+, hence Jicofo) never sees one. A repair needed again
--   within REPAIR_QUIET seconds of the last one waits, doubling up to RETRY_MAX.
-- - A remote target: the subscribe is sent again, RETRY_FIRST seconds after the last,
--   doubling up to RETRY_MAX, until the target approves (its "subscribed" or an available
--   presence); the wait starts at RETRY_FIRST again once approved.

local st = require "util.stanza";
local jid = require "util.jid";
local time_now = require "util.time".now;
local compat = module:require "compat";

local RETRY_FIRST, RETRY_MAX, REPAIR_QUIET = 10, 600, 10; -- seconds

local host = module.host;

-- The roster entry of the component on the target's roster: added with "from", "to"
-- made "both", "none" made "from"; "from" and "both" kept; name, groups and ask kept. A
-- subscribe of the component the target has not answered (pending) is dropped: it is
-- approved now. Returns the subscription it had ("none" for no entry) when it changed it.
local function add_from(roster)
	local item = roster[host];
	local was = item and item.subscription or "none";
	if was == "from" or was == "both" then return nil; end
	local pending = roster[false] and roster[false].pending;
	local saved = { item = item, subscription = item and item.subscription, pending = pending and pending[host] };
	if not item then
		item = { subscription = "none", groups = {} };
		roster[host] = item;
	end
	item.subscription = was == "to" and "both" or "from";
	if pending then pending[host] = nil; end
	return was, function () -- undo
		if saved.item then saved.item.subscription = saved.subscription; else roster[host] = nil; end
		if pending then pending[host] = saved.pending; end
	end;
end

local function start(target, manage)
	local node, domain = jid.split(target);
	local function subscribe()
		module:send(st.presence({ type = "subscribe", from = host, to = target }));
	end
	if not manage then return compat.when_started(subscribe); end

	local function local_host()
		local h = prosody.hosts and prosody.hosts[domain];
		if h and h.type == "local" then return h; end
	end
	local function is_local() return local_host() ~= nil; end

	-- A target on this server: the entry, changed when needed; true when it was (and the
	-- subscribe sent, which its server answers with its presences).
	local told_no_account;
	local function ensure()
		if not is_local() then return false; end
		local rostermanager, usermanager = require "core.rostermanager", require "core.usermanager";
		if not usermanager.user_exists(node, domain) then
			if not told_no_account then
				told_no_account = true;
				module:log("info", "%s has no account yet: %s goes on its roster at its first login", target, host);
			end
			return false;
		end
		local roster, err = rostermanager.load_roster(node, domain);
		if not roster or err then
			module:log("error", "Could not load the roster of %s: %s", target, tostring(err));
			return false;
		end
		local was, undo = add_from(roster);
		if not was then return false; end
		local saved, save_err = rostermanager.save_roster(node, domain, roster, host);
		if not saved then
			undo();
			module:log("error", "Could not put %s on the roster of %s: %s", host, target, tostring(save_err or "not saved"));
			return false;
		end
		rostermanager.roster_push(node, domain, host);
		module:log("info", "Put %s on the roster of %s with subscription %q (was %q), so that its presence reaches the proxy",
			host, target, roster[host].subscription, was);
		subscribe();
		return true;
	end

	-- The entry may be missing: a repair, after the event that said so has run its course
	-- (roster-item-removed fires before the removal); one needed again within
	-- REPAIR_QUIET seconds of the last waits, RETRY_FIRST doubling up to RETRY_MAX (a
	-- target whose answer is always a revocation or an error is not a loop).
	local repair_due, last_repair, repair_delay = false, nil, 0;
	local function repair()
		if repair_due then return; end
		repair_due = true;
		if last_repair and time_now() - last_repair < REPAIR_QUIET then
			repair_delay = math.min(math.max(repair_delay * 2, RETRY_FIRST), RETRY_MAX);
		else
			repair_delay = 0;
		end
		module:add_timer(repair_delay, function ()
			repair_due, last_repair = false, time_now();
			-- The entry there: its presences again (after a presence error).
			if not ensure() and is_local() then subscribe(); end
		end);
	end

	-- Hooks on the target's host (again after it is activated anew).
	local watched;
	local function watch()
		local h = local_host();
		if not h or h.events == watched then return; end
		watched = h.events;
		local there = module:context(domain);
		there:hook("roster-item-removed", function (event)
			if event.username == node and event.jid == host then repair(); end
		end);
		there:hook("resource-bind", function (event)
			if event.session and event.session.username == node then ensure(); end
		end);
	end

	-- A remote target: the subscribe again until approved.
	local approved, retry_delay, retry_due = false, RETRY_FIRST, false;
	local function ask_again()
		if approved or retry_due or is_local() then return; end
		retry_due = true;
		module:add_timer(retry_delay, function ()
			retry_due = false;
			if approved or is_local() then return; end
			module:log("debug", "%s has not approved the subscription of %s: asking again", target, host);
			subscribe();
			retry_delay = math.min(retry_delay * 2, RETRY_MAX);
			ask_again();
		end);
	end

	module:hook("presence/host", function (event) -- watched, not taken: the core routes it
		local attr = event.stanza.attr;
		if jid.bare(attr.from) ~= target then return; end
		local kind = attr.type;
		if kind == nil or kind == "subscribed" then
			approved, retry_delay = true, RETRY_FIRST;
		elseif kind == "unsubscribed" or kind == "error" then
			approved = false;
			if is_local() then repair(); else ask_again(); end
		end
	end, 1);

	module:hook_global("host-activated", function (activated)
		if activated == domain and prosody.start_time then
			watch();
			if not ensure() then subscribe(); end
		end
	end);

	compat.when_started(function ()
		watch();
		if not ensure() then subscribe(); end
		ask_again();
	end);
end

return start;
