-- A scripted native core for the specs of the shim and its libraries: the export table of
-- client_proxy.so (docs/INTERNALS.md, "The boundary") with nothing decided, every call
-- recorded.
--
--   local native, proxy = require "helpers.fake_native".new{ host =, target = }
--
-- native: interface (3), version, INTERNAL_ERROR, options (an array as the core gives it;
-- the enum client_proxy_colour is made up, so that a shim that spells values of its own
-- shows), open (recorded in native.opened; raises native.open_error when set), close
-- (native.closed), now (native.clock).
-- proxy.route (a closure over the proxy, as the real one: no proxy argument): returns
-- proxy.verdicts in turn ({ "drop", "unscripted", false } when none is left), records its
-- arguments in proxy.routed ({ n = count, ... }).
-- proxy:drain(), tick(now), stopping(), hibernating(resource), resumed(resource): return proxy.outbox[method] once ("raise": raise
-- "<method> failed" and a traceback, as mlua does); calls in proxy.calls ({ method, args... }).
-- proxy:status() returns proxy.status_table, proxy:set_local_domains(list) keeps
-- proxy.local_domains; both raise when proxy.status_raises. proxy:affinity_rules() returns
-- opts.affinity_rules (none by default).

local fake_native = {};

fake_native.INTERFACE = 3;

-- A multi-line error, as mlua raises them (the message, then a traceback).
fake_native.TRACEBACK = "\nstack traceback:\n\t[C]: in ?";

function fake_native.new(opts)
	opts = opts or {};
	local host, target = opts.host or "proxy.example", opts.target or "service@example.org";
	local native = { interface = fake_native.INTERFACE, version = "9.9.9", opened = {}, closed = {}, clock = 1000,
		INTERNAL_ERROR = { type = "cancel", condition = "internal-server-error", text = "The proxy failed" } };
	native.options = {
		{ name = "target_address", kind = "jid" },
		{ name = "client_proxy_jat", kind = "enum", values = { "plain", "base64" }, default = "plain" },
		{ name = "client_proxy_colour", kind = "enum", values = { "red", "blue" }, default = "red" },
		{ name = "client_proxy_resources", kind = "list" },
		{ name = "client_proxy_require_caps", kind = "list" },
		{ name = "client_proxy_allow", kind = "list" },
		{ name = "client_proxy_timeout", kind = "period", default = 60 },
		{ name = "client_proxy_eject_for", kind = "period", default = 30 },
		{ name = "client_proxy_max_pending", kind = "count", default = 100000 },
		{ name = "client_proxy_max_pending_per_requester", kind = "count", default = 64 },
		{ name = "client_proxy_messages", kind = "switch", default = true },
	};
	local proxy = { verdicts = {}, outbox = {}, calls = {}, routed = {} };
	proxy.status_table = { host = host, target = target, pending = 2, outbound_pending = 0, eligible = 1, ejected = 1,
		ejections = 6, revoked = false, level = "warn", text = "No eligible resource of " .. target .. " is online",
		requests = { forwarded = 3, timed_out = 1 }, messages = { to_service = 4, to_user = 5 }, keys = 7, moves = 2,
		resources = {} };
	function proxy.route(...)
		table.insert(proxy.routed, { n = select("#", ...), ... });
		local v = table.remove(proxy.verdicts, 1) or { "drop", "unscripted", false };
		return (table.unpack or unpack)(v, 1, 6);
	end
	local function outbox_method(name)
		return function (self, ...)
			table.insert(self.calls, { name, ... });
			local items = self.outbox[name] or {};
			self.outbox[name] = nil;
			if items == "raise" then error(name .. " failed" .. fake_native.TRACEBACK, 0); end
			return items;
		end
	end
	proxy.drain, proxy.tick, proxy.stopping = outbox_method("drain"), outbox_method("tick"), outbox_method("stopping");
	proxy.hibernating, proxy.resumed = outbox_method("hibernating"), outbox_method("resumed");
	function proxy:set_local_domains(list)
		if self.status_raises then error("set_local_domains failed" .. fake_native.TRACEBACK, 0); end
		self.local_domains = list;
	end
	function proxy:status()
		if self.status_raises then error("status failed" .. fake_native.TRACEBACK, 0); end
		return self.status_table;
	end
	function proxy:affinity_rules()
		return opts.affinity_rules or {};
	end
	function native.open(options)
		table.insert(native.opened, options);
		if native.open_error then error(native.open_error, 0); end
		-- As the core does: open queues the current status for the shim that just loaded.
		proxy.outbox.drain = proxy.outbox.drain or { { kind = "status", level = proxy.status_table.level, text = proxy.status_table.text } };
		return proxy;
	end
	function native.close(h) table.insert(native.closed, h); end
	function native.now() return native.clock; end
	return native, proxy;
end

-- The number of calls of a method in proxy.calls.
function fake_native.calls(proxy, method)
	local n = 0;
	for _, call in ipairs(proxy.calls) do
		if call[1] == method then n = n + 1; end
	end
	return n;
end

return fake_native;
