-- The Prosody shim lua/mod_client_proxy.lua, loaded against a fake `module` object with
-- Prosody's real util.stanza / util.jid / util.time (from /usr/lib/prosody, see .busted)
-- and the real native library (CLIENT_PROXY_SO, else ./target/release/libclient_proxy.so),
-- installed the way `make install` does it: client_proxy.so next to the shim, found
-- through module:get_directory().
--
-- The one thing not taken as is: util.time is handed to the shim wrapped, so that a test
-- can move its clock forward (timeouts) or make it return nothing (a native failure).
-- By default the wrapper returns the real util.time's values.
--
-- State is kept per host inside the library (one per process), so each test uses a host
-- of its own, except the README exchange, which uses proxy.example as written.

local st = require "util.stanza";
local jid_util = require "util.jid";
local real_time = require "util.time";

-- CLIENT_PROXY_SHIM loads another copy of the shim (to check that a spec fails
-- against a broken one).
local SHIM = os.getenv("CLIENT_PROXY_SHIM");
if SHIM == nil or SHIM == "" then
	SHIM = "lua/mod_client_proxy.lua";
end

local function cwd()
	local p = assert(io.popen("pwd"));
	local dir = p:read("*l"); -- "*l": Lua 5.1 and 5.2 know no "l"
	p:close();
	return dir;
end

local SO = os.getenv("CLIENT_PROXY_SO");
if SO == nil or SO == "" then
	SO = "./target/release/libclient_proxy.so";
end
if SO:sub(1, 1) ~= "/" then
	SO = cwd() .. "/" .. SO:gsub("^%./", "");
end

local function sh_quote(s)
	return "'" .. s:gsub("'", "'\\''") .. "'";
end

local function make_temp_dir()
	local p = assert(io.popen("mktemp -d"));
	local dir = p:read("*l");
	p:close();
	assert(dir and dir:match("^/"), "mktemp -d failed");
	return dir;
end

-- A clock the test can move: the shim reads util.time.monotonic (or now).
local clock = { offset = 0, broken = false };
local function shifted(f)
	return function ()
		if clock.broken then return nil; end
		return f() + clock.offset;
	end
end
local time_for_shim = setmetatable({
	now = shifted(real_time.now);
	monotonic = real_time.monotonic and shifted(real_time.monotonic) or nil;
}, { __index = real_time });

local function shim_require(name)
	if name == "util.time" then
		return time_for_shim;
	end
	return require(name);
end

local support = require "support";
local fresh_host = support.host_namer("shim", "example");

local TARGET = "service@example.org";
local USER = "user@example.org/abc";
local STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";

local plugin_dir, empty_dir;

-- A canonical serialisation (attributes sorted) to compare stanzas whatever the order
-- of their attributes.
local function xml_escape(s)
	return (tostring(s):gsub("[&<>'\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ["'"] = "&apos;", ['"'] = "&quot;" }));
end
local function canon(node)
	if type(node) == "string" then return xml_escape(node); end
	local keys = {};
	for k in pairs(node.attr) do keys[#keys + 1] = k; end
	table.sort(keys);
	local out = { "<", node.name };
	for _, k in ipairs(keys) do
		out[#out + 1] = (" %s='%s'"):format(k, xml_escape(node.attr[k]));
	end
	if #node == 0 then
		out[#out + 1] = "/>";
	else
		out[#out + 1] = ">";
		for _, child in ipairs(node) do out[#out + 1] = canon(child); end
		out[#out + 1] = "</" .. node.name .. ">";
	end
	return table.concat(out);
end

-- A fake metric family, as module:metric() returns it for a host module (Prosody
-- prepends a "host" label and pre-sets it with with_partial_label, so the shim passes
-- the remaining labels only). with_labels() checks the number of labels as
-- util.openmetrics does and returns one metric per label tuple, whose set/add calls are
-- recorded: family.calls = { { op=, labels = {...}, value= }, ... } in order, and
-- family:value(...) is the current value for those labels (nil if never set).
local function fake_metric_family(type_, name, unit, description, label_keys)
	local family = {
		type = type_; name = name; unit = unit; description = description;
		label_keys = label_keys;
		calls = {};
		values = {}; -- label key -> value
		labels_of = {}; -- label key -> { labels... }
	};
	local metrics = {};
	local function key_of(...)
		local parts = {};
		for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))); end
		return table.concat(parts, "\0");
	end
	function family:with_labels(...)
		if select("#", ...) ~= #self.label_keys then
			error("number of labels passed to with_labels does not match number of label keys", 2);
		end
		for i = 1, select("#", ...) do
			local v = select(i, ...);
			if type(v) ~= "string" then
				error(("label %s of %s is a %s, not a string"):format(self.label_keys[i], name, type(v)), 2);
			end
		end
		local key = key_of(...);
		local metric = metrics[key];
		if not metric then
			local labels = { ... };
			family.labels_of[key] = labels;
			metric = {};
			function metric:set(value)
				assert(type(value) == "number", ("%s: set(%s)"):format(name, tostring(value)));
				table.insert(family.calls, { op = "set", labels = labels, value = value });
				family.values[key] = value;
			end
			function metric:add(value)
				assert(type(value) == "number", ("%s: add(%s)"):format(name, tostring(value)));
				if type_ == "counter" then
					assert(value >= 0, name .. ": a counter only goes up");
				end
				table.insert(family.calls, { op = "add", labels = labels, value = value });
				family.values[key] = (family.values[key] or 0) + value;
			end
			metrics[key] = metric;
		end
		return metric;
	end
	function family:value(...)
		return self.values[key_of(...)];
	end
	-- label value (the first label) -> value, for one-label families
	function family:by_label()
		local out = {};
		for key, value in pairs(self.values) do
			out[self.labels_of[key][1]] = value;
		end
		return out;
	end
	return family;
end

-- A copy of plain data (tables of strings, numbers, booleans), as serialisation makes it.
local function deep_copy(v)
	if type(v) ~= "table" then return v; end
	local out = {};
	for k, x in pairs(v) do out[deep_copy(k)] = deep_copy(x); end
	return out;
end

-- Prosody 0.12's module status rules (core/moduleapi.lua, api:set_status).
local status_priorities = { error = 3, warn = 2, info = 1, core = 0 };

-- The fake module API: records hooks, timers, log lines, sent stanzas, metrics, items,
-- status changes and shared tables.
local function fake_module(host, opts)
	local m = {
		host = host;
		name = "client_proxy";
		options = opts.options or {};
		hooks = {}; -- { event=, handler=, priority= } in order
		handlers = {}; -- event -> handler
		global_hooks = {}; -- event -> handler
		global_hook_list = {}; -- { event=, handler=, priority= } in order
		metrics = {}; -- name -> fake metric family
		items = {}; -- key -> { item, ... } (module:add_item)
		global_items = {}; -- { key=, item= } added through module:context("*")
		status_calls = {}; -- { type=, message=, override= } (module:set_status), in order
		shared_tables = opts.shared or {}; -- path -> table (module:shared)
		timers = {}; -- { delay=, callback= }
		logs = {}; -- { level=, text= }
		sent = {}; -- stanza objects, in order
		sent_xml = {}; -- canon() of each, taken when it was sent (the shim may readdress
		-- a stanza it holds and send the same object again)
		storage = opts.storage or {}; -- store name -> { [user or ""] = data } (module:open_store)
		store_calls = {}; -- { store=, op=, user=, data= } in order
	};
	function m:get_host_type()
		return opts.host_type or "component";
	end
	function m:get_directory()
		return opts.directory or plugin_dir;
	end
	-- As Prosody 0.12 and 13: the value (the default when nil); of a list, the first item.
	function m:get_option_scalar(name, default)
		local v = self.options[name];
		if v == nil then v = default; end
		if type(v) == "table" then v = v[1]; end
		return v;
	end
	if opts.api13 then
		-- As Prosody 13's get_option_period (util.human.io.parse_duration: a number and a
		-- unit, s/min/h/d/w/mon/y and their long forms), without the bounds.
		local multipliers = { s = 1, min = 60, h = 3600, ho = 3600, d = 86400, w = 604800, mon = 31 * 86400, y = 365.2425 * 86400 };
		function m:get_option_period(name, default)
			local v = self:get_option_scalar(name, default);
			if v == "never" or v == false then return math.huge; end
			if type(v) == "number" then return v < 0 and math.huge or v; end
			if type(v) ~= "string" then
				if v ~= nil then self:log("error", "Config option '%s' expects a number or a period description string (e.g. \"3 hours\"), not %s", name, type(v)); end
				return nil;
			end
			local n, unit = v:lower():match("(%d+)%s*([smhdwy]?[io]?n?)");
			if not n or not multipliers[unit] then
				self:log("error", "Config option '%s' not understood, expecting a period (e.g. \"2 days\")", name);
				return nil;
			end
			return tonumber(n) * multipliers[unit];
		end
		-- As Prosody 13's get_option_enum: the value (default when nil), with an error line
		-- when it is not one of the allowed ones.
		function m:get_option_enum(name, default, ...)
			local v = self:get_option_scalar(name, default);
			if v == nil then return nil; end
			local allowed = false;
			for _, x in ipairs({ default, ... }) do
				if x == v then allowed = true; end
			end
			if not allowed then
				self:log("error", "Config option '%s' not in set of allowed values (one of: %s)", name, table.concat({ default, ... }, ", "));
			end
			return v;
		end
		-- As Prosody 13's on_ready (prosody.started:next(f)): f runs once the server has
		-- started, at once when it already has. m.ready_waiting holds what waits.
		m.ready_waiting = {};
		function m:on_ready(f)
			if opts.prosody_started() then f(); else table.insert(self.ready_waiting, f); end
		end
	end
	-- As Prosody 0.12: strings as they are, numbers made strings, nil -> default.
	function m:get_option_string(name, default)
		local v = self.options[name];
		if v == nil then return default; end
		if type(v) == "table" then v = v[1]; end
		return tostring(v);
	end
	-- As Prosody 0.12: nil -> nil, a table is copied, any other value is a one-item list
	-- ("Assume any non-list is a single-item list").
	function m:get_option_array(name, default)
		local v = self.options[name];
		if v == nil then v = default; end
		if v == nil then return nil; end
		if type(v) ~= "table" then return { v }; end
		local copy = {};
		for i, x in ipairs(v) do copy[i] = x; end
		return copy;
	end
	-- As Prosody 0.12: tonumber(), with an error line for what is not a number.
	function m:get_option_number(name, default)
		local v = self.options[name];
		if v == nil then return default; end
		local n = tonumber(v);
		if n == nil then
			self:log("error", "Config option '%s' not understood, expecting a number", name);
		end
		return n;
	end
	-- As Prosody 0.12 (get_option_scalar, then): nil -> nil (the default when there is
	-- one), true/"true"/1 -> true, false/"false"/0 -> false, anything else: an error line
	-- and nil.
	function m:get_option_boolean(name, default)
		local v = self.options[name];
		if v == nil then v = default; end
		if type(v) == "table" then v = v[1]; end
		if v == nil then return nil; end
		if v == true or v == "true" or v == 1 then return true; end
		if v == false or v == "false" or v == 0 then return false; end
		self:log("error", "Config option '%s' not understood, expecting true/false", name);
		return nil;
	end
	-- As Prosody 0.12's keyval stores (storage "internal"): get(user) -> data or nil,
	-- set(user, data) -> true; user nil is the host's own entry. The data is serialised,
	-- so a get hands out a copy and a set keeps one (changing a table after set() does
	-- not change what is stored); an empty table is stored as nothing (datamanager
	-- removes the file). Backed by opts.storage[store name][user or ""], so that a test
	-- can pass the same storage to two loads (a restart). Every call is recorded in
	-- m.store_calls = { { store=, op=, user=, data= (a copy) }, ... }.
	function m:open_store(name, store_type)
		name = name or self.name;
		assert(type(name) == "string", "open_store: name");
		assert(store_type == nil or store_type == "keyval", "open_store: only keyval stores are faked");
		local backing = self.storage[name];
		if not backing then
			backing = {};
			self.storage[name] = backing;
		end
		local module_self = self;
		local store = { name = name };
		function store:get(user)
			assert(self == store, "store.get called without ':'");
			assert(user == nil or type(user) == "string", "store:get: user");
			local data = deep_copy(backing[user or ""]);
			table.insert(module_self.store_calls, { store = name, op = "get", user = user, data = deep_copy(data) });
			return data;
		end
		function store:set(user, data)
			assert(self == store, "store.set called without ':'");
			assert(user == nil or type(user) == "string", "store:set: user");
			assert(data == nil or type(data) == "table", "store:set: data is a " .. type(data));
			if data ~= nil and next(data) == nil then data = nil; end
			backing[user or ""] = deep_copy(data);
			table.insert(module_self.store_calls, { store = name, op = "set", user = user, data = deep_copy(data) });
			return true;
		end
		return store;
	end
	function m:hook(event, handler, priority)
		assert(type(event) == "string", "hook: event name");
		assert(type(handler) == "function", "hook: handler");
		table.insert(self.hooks, { event = event, handler = handler, priority = priority });
		self.handlers[event] = handler;
	end
	function m:hook_global(event, handler, priority)
		assert(type(event) == "string", "hook_global: event name");
		assert(type(handler) == "function", "hook_global: handler");
		table.insert(self.global_hook_list, { event = event, handler = handler, priority = priority });
		self.global_hooks[event] = handler;
	end
	-- As Prosody 0.12: (type, name, unit, description, label_keys, conf); the family is
	-- also added as a "metric" item.
	function m:metric(type_, name, unit, description, label_keys, conf)
		assert(({ counter = true, gauge = true, histogram = true, summary = true })[type_],
			"unknown metric family type: " .. tostring(type_));
		assert(type(name) == "string", "metric: name");
		assert(label_keys == nil or type(label_keys) == "table", "metric: label_keys");
		assert(self.metrics[name] == nil, "metric: " .. name .. " defined twice");
		local family = fake_metric_family(type_, name, unit, description, label_keys or {});
		family.conf = conf;
		self.metrics[name] = family;
		self:add_item("metric", { name = name, mf = family });
		return family;
	end
	-- As Prosody 0.12: the same table for the same path (shared between modules: a test
	-- can pass the same `shared` store to two loads).
	function m:shared(path)
		assert(type(path) == "string", "shared: path");
		local t = self.shared_tables[path];
		if not t then
			t = {};
			self.shared_tables[path] = t;
		end
		return t;
	end
	function m:add_item(key, value)
		assert(type(key) == "string", "add_item: key");
		self.items[key] = self.items[key] or {};
		table.insert(self.items[key], value);
		if self.host == "*" then table.insert(self.global_items, { key = key, item = value }); end
	end
	-- As Prosody: the module seen from another host ("*": the global context).
	function m:context(host)
		return setmetatable({ host = host or "*" }, { __index = self, __newindex = self });
	end
	-- As Prosody 0.12: every call is recorded; the status it leaves follows Prosody's
	-- rules (an unknown type counts as "info"; an "error" is only replaced by another
	-- "error" unless override is true; override=false keeps a higher status).
	function m:set_status(status_type, status_message, override)
		table.insert(self.status_calls, { type = status_type, message = status_message, override = override });
		local priority = status_priorities[status_type];
		if not priority then
			self:log("error", "set_status: Invalid status type '%s', assuming 'info'", tostring(status_type));
			status_type, priority = "info", status_priorities.info;
		end
		local current_priority = status_priorities[self.status_type] or 0;
		if (current_priority >= status_priorities.error and priority < current_priority and override ~= true)
		or (override == false and current_priority > priority) then
			return;
		end
		self.status_type, self.status_message = status_type, status_message;
	end
	function m:get_status()
		return self.status_type, self.status_message;
	end
	function m:add_timer(delay, callback)
		assert(type(callback) == "function", "add_timer: callback");
		table.insert(self.timers, { delay = delay, callback = callback });
	end
	function m:log(level, fmt, ...)
		local ok, text = pcall(string.format, fmt, ...);
		table.insert(self.logs, { level = level, text = ok and text or fmt });
	end
	function m:send(stanza)
		assert(st.is_stanza(stanza), "module:send given something that is not a stanza: " .. tostring(stanza));
		table.insert(self.sent, stanza);
		self.sent_xml[#self.sent] = canon(stanza);
		return true;
	end
	return m;
end

-- Loads the shim as Prosody would for a component `host`. Returns the fake module,
-- and false + the error when the load failed.
-- opts: host, options (the config), host_type, directory, started/start_time,
-- version (prosody.version, "0.12.3" unless given; false for none), shared (the store
-- behind module:shared, to share it between two loads), storage (the data behind
-- module:open_store, to keep it between two loads: a restart).
local function load_shim(opts)
	opts = opts or {};
	local host = opts.host or fresh_host();
	local options = opts.options;
	if options == nil then
		options = { target_address = TARGET };
	end
	-- prosody.version as util.startup sets it ("0.12.3" is Debian's 0.12).
	local version = opts.version;
	if version == nil then version = "0.12.3"; end
	local prosody = { start_time = opts.start_time, version = version or nil };
	if opts.started ~= false and prosody.start_time == nil then
		prosody.start_time = os.time();
	end
	-- Prosody 13's module API (option getters, on_ready) with a 13 version, unless api13 says.
	local api13 = opts.api13;
	if api13 == nil then api13 = type(version) == "string" and not version:match("^0%."); end
	local m = fake_module(host, { options = options, host_type = opts.host_type, directory = opts.directory,
		shared = opts.shared, storage = opts.storage, api13 = api13,
		prosody_started = function () return prosody.start_time ~= nil; end });
	local env = setmetatable({ module = m, prosody = prosody, require = shim_require }, { __index = _G });
	local chunk = assert(loadfile(SHIM, "t", env));
	if setfenv then setfenv(chunk, env); end -- Lua 5.1's loadfile takes no env
	local ok, err = pcall(chunk);
	if not ok then
		return m, false, tostring(err);
	end
	return m, true;
end

-- The server has started: server-started fires, and (Prosody 13) what waits on on_ready runs.
local function server_started(m)
	for _, h in ipairs(m.global_hook_list) do
		if h.event == "server-started" then h.handler({}); end
	end
	local waiting = m.ready_waiting or {};
	m.ready_waiting = {};
	for _, f in ipairs(waiting) do f(); end
end

-- Delivers a stanza to the component as Prosody would: the event follows the to address.
local function deliver(m, stanza)
	local node, _, resource = jid_util.split(stanza.attr.to);
	local kind = node and (resource and "full" or "bare") or "host";
	local event = stanza.name .. "/" .. kind;
	local handler = assert(m.handlers[event], "nothing hooked on " .. event);
	return handler({ stanza = stanza, origin = { type = "component", host = m.host } });
end

-- Same as deliver, but returns ok + the result instead of raising.
local function try_deliver(m, stanza)
	return pcall(deliver, m, stanza);
end

local function target_online(m, resource, priority)
	local p = st.presence({ from = TARGET .. "/" .. resource, to = m.host });
	if priority then p:text_tag("priority", tostring(priority)); end
	return deliver(m, p);
end

local function target_offline(m, resource)
	return deliver(m, st.presence({ from = TARGET .. "/" .. resource, to = m.host, type = "unavailable" }));
end

local function request(m, from, id, payload_ns)
	return st.iq({ type = "get", id = id, to = m.host, from = from })
		:tag("query", { xmlns = payload_ns or "urn:example" }):up();
end

-- Checks an error reply: addresses, id and the error's type, condition and text.
local function assert_error_reply(s, to, from, id, etype, condition, text)
	assert.is_true(st.is_stanza(s));
	assert.are.equal("error", s.attr.type);
	assert.are.equal(to, s.attr.to);
	assert.are.equal(from, s.attr.from);
	assert.are.equal(id, s.attr.id);
	local got_type, got_condition, got_text = s:get_error();
	assert.are.equal(etype, got_type);
	assert.are.equal(condition, got_condition);
	if text ~= nil then assert.are.equal(text, got_text); end
end

local function logged(m, level, pattern)
	for _, line in ipairs(m.logs) do
		if line.level == level and line.text:find(pattern) then return line.text; end
	end
	return nil;
end

setup(function ()
	local f = io.open(SO, "rb");
	assert(f, ("native library %s not found (run `cargo build --release`)"):format(SO));
	f:close();
	plugin_dir = make_temp_dir();
	empty_dir = make_temp_dir();
	-- make install copies the library as client_proxy.so; a symlink is the same file
	assert(os.execute("ln -s " .. sh_quote(SO) .. " " .. sh_quote(plugin_dir .. "/client_proxy.so")));
end);

teardown(function ()
	for _, dir in ipairs({ plugin_dir, empty_dir }) do
		if dir and dir:match("^/tmp/") then
			os.execute("rm -rf " .. sh_quote(dir));
		end
	end
end);

before_each(function ()
	clock.offset = 0;
	clock.broken = false;
end);

describe("loading", function ()
	it("hooks the nine stanza events at priority -1, adds a timer and logs", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		local expected = {};
		for _, kind in ipairs({ "iq", "message", "presence" }) do
			for _, to in ipairs({ "host", "bare", "full" }) do
				expected[kind .. "/" .. to] = true;
			end
		end
		-- the stanza hooks (other events, e.g. module-unloaded, are checked elsewhere)
		local stanza_hooks = {};
		for _, h in ipairs(m.hooks) do
			if h.event:match("^iq/") or h.event:match("^message/") or h.event:match("^presence/") then
				table.insert(stanza_hooks, h);
			end
		end
		assert.are.equal(9, #stanza_hooks);
		local handler = stanza_hooks[1].handler;
		for _, h in ipairs(stanza_hooks) do
			assert.is_true(expected[h.event], "unexpected hook " .. h.event);
			expected[h.event] = nil;
			assert.are.equal(-1, h.priority);
			assert.are.equal(handler, h.handler);
		end
		assert.are.same({}, expected);
		assert.are.equal(1, #m.timers);
		assert.are.equal("number", type(m.timers[1].delay));
		assert.is_true(m.timers[1].delay > 0);
		assert.is_string(logged(m, "info", "Proxying " .. m.host:gsub("%p", "%%%0") .. " to service@example%.org"));
	end);

	it("refuses to load on a host that is not a component", function ()
		local _, ok, err = load_shim({ host_type = "local" });
		assert.is_false(ok);
		assert.matches("component", err);
	end);

	it("refuses to load without target_address, naming the option", function ()
		local _, ok, err = load_shim({ options = {} });
		assert.is_false(ok);
		assert.matches("^target_address: ", err);
	end);

	it("refuses bad option values, naming the option", function ()
		local cases = {
			{ { target_address = "service@example.org/res" }, "^target_address: " },
			{ { target_address = "example.org" }, "^target_address: " },
			{ { target_address = TARGET, client_proxy_jat = "rot13" }, "^client_proxy_jat: " },
			{ { target_address = TARGET, client_proxy_timeout = 0 }, "^client_proxy_timeout: " },
			{ { target_address = TARGET, client_proxy_max_pending = 2.5 }, "^client_proxy_max_pending: " },
		};
		for _, case in ipairs(cases) do
			local _, ok, err = load_shim({ options = case[1] });
			assert.is_false(ok);
			assert.matches(case[2], err);
		end
	end);

	it("explains a missing native library", function ()
		local _, ok, err = load_shim({ directory = empty_dir });
		assert.is_false(ok);
		assert.matches("cannot find the native library", err, 1, true);
		assert.matches(empty_dir .. "/client_proxy.so", err, 1, true);
	end);
end);

describe("subscription to the target", function ()
	local function assert_subscription(m)
		-- Only a subscribe: Prosody answers a probe to a target that has not approved yet
		-- with unsubscribed, which deletes the pending subscription request.
		assert.are.equal(1, #m.sent);
		local sub = m.sent[1];
		assert.are.equal("presence", sub.name);
		assert.are.equal("subscribe", sub.attr.type);
		assert.are.equal(m.host, sub.attr.from);
		assert.are.equal(TARGET, sub.attr.to);
	end

	it("waits for server-started when the server is starting", function ()
		local m, ok, err = load_shim({ started = false });
		assert.is_true(ok, err);
		assert.are.equal(0, #m.sent);
		local on_started = m.global_hooks["server-started"];
		assert.is_function(on_started);
		on_started({});
		assert_subscription(m);
	end);

	it("is sent at load when the server is running (module reload)", function ()
		local m, ok, err = load_shim({ start_time = os.time() });
		assert.is_true(ok, err);
		assert.is_nil(m.global_hooks["server-started"]);
		assert_subscription(m);
	end);
end);

describe("the README exchange, stanza for stanza", function ()
	it("forwards the request from the JAT address and the result back from the host", function ()
		local m, ok, err = load_shim({ host = "proxy.example" });
		assert.is_true(ok, err);
		m.sent = {}; -- the subscription

		-- the implementing client comes online
		assert.is_true(deliver(m, st.presence({ from = "service@example.org/a", to = "proxy.example" })));
		assert.are.equal(0, #m.sent);

		-- user -> component
		local req = st.iq({ type = "get", id = "1234", to = "proxy.example", from = "user@example.org/abc" })
			:tag("query", { xmlns = "urn:example" }):up();
		assert.is_true(deliver(m, req));
		assert.are.equal(1, #m.sent);
		-- component -> implementing client
		local fwd = m.sent[1];
		assert.is_true(st.is_stanza(fwd));
		local expected = st.iq({ type = "get", id = "1234", to = "service@example.org/a",
			from = "proxy.example/user@example.org/abc" }):tag("query", { xmlns = "urn:example" }):up();
		assert.are.equal(canon(expected), canon(fwd));
		assert.are.equal("<query xmlns='urn:example'/>", tostring(fwd.tags[1]));

		-- implementing client -> component
		local res = st.iq({ type = "result", id = "1234", to = "proxy.example/user@example.org/abc",
			from = "service@example.org/a" }):tag("query", { xmlns = "urn:example" })
			:text_tag("item", "answer"):up();
		assert.is_true(deliver(m, res));
		assert.are.equal(2, #m.sent);
		-- component -> user
		local back = m.sent[2];
		local expected_back = st.iq({ type = "result", id = "1234", to = "user@example.org/abc",
			from = "proxy.example" }):tag("query", { xmlns = "urn:example" })
			:text_tag("item", "answer"):up();
		assert.are.equal(canon(expected_back), canon(back));
		assert.are.equal("<query xmlns='urn:example'><item>answer</item></query>", tostring(back.tags[1]));

		-- the same result again answers nothing
		local again = st.iq({ type = "result", id = "1234", to = "proxy.example/user@example.org/abc",
			from = "service@example.org/a" });
		assert.is_true(deliver(m, again));
		assert.are.equal(2, #m.sent);
	end);
end);

describe("stanza handling", function ()
	local m;
	before_each(function ()
		local ok, err;
		m, ok, err = load_shim();
		assert.is_true(ok, err);
		m.sent = {};
	end);

	it("passes an iq error through with its condition, text and application child", function ()
		target_online(m, "a");
		deliver(m, request(m, USER, "e1"));
		local fwd = assert(m.sent[1]);
		local jat = fwd.attr.from;
		assert.are.equal(m.host .. "/" .. USER, jat);
		local reply = st.iq({ type = "error", id = "e1", to = jat, from = TARGET .. "/a" })
			:tag("error", { type = "modify" })
				:tag("bad-request", { xmlns = STANZAS }):up()
				:text_tag("text", "Your query is wrong", { xmlns = STANZAS })
				:tag("too-many-widgets", { xmlns = "urn:example:errors", max = "3" }):up()
			:up();
		assert.is_true(deliver(m, reply));
		assert.are.equal(2, #m.sent);
		local back = m.sent[2];
		assert_error_reply(back, USER, m.host, "e1", "modify", "bad-request", "Your query is wrong");
		local _, _, _, app = back:get_error();
		assert.is_true(st.is_stanza(app));
		assert.are.equal("too-many-widgets", app.name);
		assert.are.equal("urn:example:errors", app.attr.xmlns);
		assert.are.equal("3", app.attr.max);
	end);

	it("answers service-unavailable when no resource is online", function ()
		assert.is_true(deliver(m, request(m, USER, "n1")));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], USER, m.host, "n1", "cancel", "service-unavailable",
			"No implementing resource is online");
	end);

	-- Stanzas of type error, none of them the bounce of something the proxy sent.
	local function error_stanzas(t)
		local errors = {
			st.iq({ type = "error", id = "x1", to = t.host, from = USER }),
			st.iq({ type = "error", id = "x2", to = t.host .. "/" .. USER, from = TARGET .. "/a" }),
			st.message({ type = "error", to = t.host, from = USER }),
			st.presence({ type = "error", to = "node@" .. t.host, from = USER }),
			st.iq({ type = "error", id = "x3", to = "node@" .. t.host .. "/r", from = USER }),
		};
		for _, s in ipairs(errors) do
			s:tag("error", { type = "cancel" }):tag("service-unavailable", { xmlns = STANZAS }):up():up();
		end
		return errors;
	end

	local function bounce_from_target(t)
		return st.message({ type = "error", id = "b1", to = t.host .. "/" .. USER, from = TARGET .. "/a" })
			:tag("error", { type = "cancel" }):tag("service-unavailable", { xmlns = STANZAS }):up():up();
	end

	it("never answers a stanza of type error, and raises nothing", function ()
		target_online(m, "a");
		for _, s in ipairs(error_stanzas(m)) do
			local ok, handled = try_deliver(m, s);
			assert.is_true(ok, tostring(handled));
			assert.is_true(handled);
		end
		assert.are.equal(0, #m.sent);
		-- a message of type error from the target to a user's JAT address is the bounce
		-- of that user's message: passed back to the user as it is, not answered
		local ok, handled = try_deliver(m, bounce_from_target(m));
		assert.is_true(ok, tostring(handled));
		assert.is_true(handled);
		assert.are.equal(1, #m.sent);
		local expected = st.message({ type = "error", id = "b1", to = USER, from = m.host })
			:tag("error", { type = "cancel" }):tag("service-unavailable", { xmlns = STANZAS }):up():up();
		assert.are.equal(canon(expected), m.sent_xml[1]);
		assert.is_nil(logged(m, "error", ""));
	end);

	it("with the switches off, never answers a stanza of type error and passes no bounce", function ()
		local t, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_messages = false,
			client_proxy_outbound = false, client_proxy_presence = false } });
		assert.is_true(ok, err);
		t.sent = {};
		target_online(t, "a");
		local stanzas = error_stanzas(t);
		table.insert(stanzas, bounce_from_target(t));
		for _, s in ipairs(stanzas) do
			local delivered, handled = try_deliver(t, s);
			assert.is_true(delivered, tostring(handled));
			assert.is_true(handled);
		end
		assert.are.equal(0, #t.sent);
		assert.is_nil(logged(t, "error", ""));
	end);

	it("answers recipient-unavailable when the resource holding a request goes offline", function ()
		target_online(m, "a");
		deliver(m, request(m, USER, "held-1"));
		deliver(m, request(m, "other@example.org/x", "held-2"));
		assert.are.equal(2, #m.sent);
		assert.is_true(target_offline(m, "a"));
		assert.are.equal(4, #m.sent);
		local by_id = {};
		for i = 3, 4 do by_id[m.sent[i].attr.id] = m.sent[i]; end
		local text = "The implementing resource went offline before answering";
		assert_error_reply(by_id["held-1"], USER, m.host, "held-1", "wait", "recipient-unavailable", text);
		assert_error_reply(by_id["held-2"], "other@example.org/x", m.host, "held-2", "wait", "recipient-unavailable", text);
		assert.are.equal("iq", by_id["held-1"].name);
		-- nothing is left to answer them twice
		m.timers[1].callback();
		clock.offset = 3600;
		m.timers[1].callback();
		assert.are.equal(4, #m.sent);
	end);

	it("answers remote-server-timeout from the timer after the timeout", function ()
		local t, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_timeout = 30 } });
		assert.is_true(ok, err);
		t.sent = {};
		target_online(t, "a");
		deliver(t, request(t, USER, "slow"));
		assert.are.equal(1, #t.sent);
		local tick = t.timers[1].callback;
		tick();
		assert.are.equal(1, #t.sent);
		clock.offset = 29;
		tick();
		assert.are.equal(1, #t.sent);
		clock.offset = 31;
		local again = tick();
		assert.are.equal(1, again); -- the timer repeats
		assert.are.equal(2, #t.sent);
		assert_error_reply(t.sent[2], USER, t.host, "slow", "wait", "remote-server-timeout",
			"The implementing client did not answer in time");
		assert.are.equal("iq", t.sent[2].name);
		-- the get is no longer held
		assert.are.same({}, t.save().held);
		tick();
		assert.are.equal(2, #t.sent);
	end);

	it("turns a native failure on an iq get into internal-server-error, logged", function ()
		target_online(m, "a");
		clock.broken = true; -- the native route refuses the missing time: it raises
		local ok, handled = try_deliver(m, request(m, USER, "boom"));
		clock.broken = false;
		assert.is_true(ok, tostring(handled));
		assert.is_true(handled);
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], USER, m.host, "boom", "cancel", "internal-server-error",
			"The proxy failed to handle this request");
		assert.is_string(logged(m, "error", "Native router failed on iq from user@example%.org/abc"));
	end);

	it("a native failure on anything but a request is logged, not answered", function ()
		clock.broken = true;
		local ok, handled = try_deliver(m, st.message({ type = "chat", to = m.host, from = USER }));
		assert.is_true(ok, tostring(handled));
		assert.is_true(handled);
		clock.broken = false;
		assert.are.equal(0, #m.sent);
		assert.is_string(logged(m, "error", "Native router failed on message"));
	end);

	it("a native failure in the timer is logged and the timer goes on", function ()
		clock.broken = true;
		local ok, again = pcall(m.timers[1].callback);
		clock.broken = false;
		assert.is_true(ok, tostring(again));
		assert.are.equal(1, again);
		assert.is_string(logged(m, "error", "Native expiry failed"));
	end);

	it("passes the presence priority to the core, clamped to -128..127", function ()
		-- The state of this host, as the core sees it: new_proxy with the same host and
		-- target hands back the same state (the library behind the symlink is the same).
		local native = package.loadlib(plugin_dir .. "/client_proxy.so", "luaopen_client_proxy")();
		local function priorities()
			local out = {};
			for _, r in ipairs(native.new_proxy({ host = m.host, target = TARGET }):status().resources) do
				out[r.name] = r.priority;
			end
			return out;
		end
		target_online(m, "plain");
		target_online(m, "low", -5);
		target_online(m, "high", 500);
		target_online(m, "lowest", -1000);
		target_online(m, "fraction", 2.7);
		target_online(m, "junk", "abc");
		assert.are.same({ plain = 0, low = -5, high = 127, lowest = -128, fraction = 2, junk = 0 }, priorities());
		-- an update changes it
		target_online(m, "low", 9);
		assert.are.equal(9, priorities().low);
		assert.are.equal(0, #m.sent);
	end);
end);

-- A get with a payload worth checking (attributes, text, a nested child).
local function rich_get(m, from, id)
	return st.iq({ type = "get", id = id, to = m.host, from = from })
		:tag("query", { xmlns = "urn:example:retry", node = "n1" })
			:text_tag("item", "payload of " .. id, { rank = "2" })
			:tag("deep"):tag("deeper", { x = "y" }):up():up()
		:up();
end

-- The same get as rich_get, readdressed the way the proxy forwards it.
local function rich_get_forwarded(to, from, id)
	return st.iq({ type = "get", id = id, to = to, from = from })
		:tag("query", { xmlns = "urn:example:retry", node = "n1" })
			:text_tag("item", "payload of " .. id, { rank = "2" })
			:tag("deep"):tag("deeper", { x = "y" }):up():up()
		:up();
end

local function result_from(resource, to, id, answer)
	return st.iq({ type = "result", id = id, to = to, from = TARGET .. "/" .. resource })
		:tag("query", { xmlns = "urn:example:retry" }):text_tag("item", answer):up();
end

local GONE = "The implementing resource went offline before answering";

describe("resource loss with another resource online", function ()
	local m;
	before_each(function ()
		local ok, err;
		m, ok, err = load_shim();
		assert.is_true(ok, err);
		m.sent = {};
	end);

	it("sends a held get again to the other resource and answers a held set recipient-unavailable", function ()
		local jat = m.host .. "/" .. USER;
		-- only /a online: both requests go to /a
		target_online(m, "a");
		assert.is_true(deliver(m, rich_get(m, USER, "get-1")));
		local set = st.iq({ type = "set", id = "set-1", to = m.host, from = USER })
			:tag("update", { xmlns = "urn:example:retry" }):text_tag("value", "42"):up();
		assert.is_true(deliver(m, set));
		assert.are.equal(2, #m.sent);
		assert.are.equal(canon(rich_get_forwarded(TARGET .. "/a", jat, "get-1")), m.sent_xml[1]);
		assert.are.equal(TARGET .. "/a", m.sent[2].attr.to);
		assert.are.equal("set", m.sent[2].attr.type);

		target_online(m, "b");
		assert.are.equal(2, #m.sent);
		assert.is_true(target_offline(m, "a"));
		assert.are.equal(4, #m.sent);
		local again, refusal;
		for i = 3, 4 do
			if m.sent[i].attr.type == "get" then again = i; else refusal = i; end
		end
		assert.is_number(again, "the get was not sent again");
		assert.is_number(refusal, "the set was not answered");
		-- the get, same id and payload, to /b from the JAT address
		assert.are.equal(canon(rich_get_forwarded(TARGET .. "/b", jat, "get-1")), m.sent_xml[again]);
		-- the set: recipient-unavailable from the host
		assert_error_reply(m.sent[refusal], USER, m.host, "set-1", "wait", "recipient-unavailable", GONE);
		assert.are.equal("iq", m.sent[refusal].name);
		assert.is_nil(logged(m, "warn", "is no longer held")); -- (the status warning at load is expected)

		-- /b answers: delivered to the requester from the host
		assert.is_true(deliver(m, result_from("b", jat, "get-1", "from b")));
		assert.are.equal(5, #m.sent);
		local expected = st.iq({ type = "result", id = "get-1", to = USER, from = m.host })
			:tag("query", { xmlns = "urn:example:retry" }):text_tag("item", "from b"):up();
		assert.are.equal(canon(expected), m.sent_xml[5]);
		-- answered once: no second delivery, no timeout later, nothing held any more
		assert.is_true(deliver(m, result_from("b", jat, "get-1", "again")));
		clock.offset = 3600;
		m.timers[1].callback();
		assert.are.equal(5, #m.sent);
		assert.are.same({}, m.save().held);
	end);

	it("drops the old resource's late reply to a get sent again, and delivers the new one's", function ()
		local jat = m.host .. "/" .. USER;
		target_online(m, "a");
		deliver(m, rich_get(m, USER, "get-2"));
		target_online(m, "b");
		target_offline(m, "a");
		assert.are.equal(2, #m.sent);
		assert.are.equal(canon(rich_get_forwarded(TARGET .. "/b", jat, "get-2")), m.sent_xml[2]);
		-- /a's late result and its bounce answer nothing and send nothing
		assert.is_true(deliver(m, result_from("a", jat, "get-2", "from a")));
		local bounce = st.iq({ type = "error", id = "get-2", to = jat, from = TARGET .. "/a" })
			:tag("error", { type = "cancel" }):tag("service-unavailable", { xmlns = STANZAS }):up():up();
		assert.is_true(deliver(m, bounce));
		assert.are.equal(2, #m.sent);
		assert.is_true(deliver(m, result_from("b", jat, "get-2", "from b")));
		assert.are.equal(3, #m.sent);
		assert.are.equal(USER, m.sent[3].attr.to);
		assert.are.equal(m.host, m.sent[3].attr.from);
		assert.are.equal("result", m.sent[3].attr.type);
		assert.are.equal("from b", m.sent[3].tags[1]:get_child_text("item"));
	end);

	it("answers a get recipient-unavailable when the resource it was sent again to goes too", function ()
		local jat = m.host .. "/" .. USER;
		target_online(m, "a");
		deliver(m, rich_get(m, USER, "get-3"));
		target_online(m, "b");
		target_offline(m, "a");
		assert.are.equal(2, #m.sent);
		assert.are.equal(TARGET .. "/b", m.sent[2].attr.to);
		-- /a is back, but a get is sent again once only
		target_online(m, "a");
		target_offline(m, "b");
		assert.are.equal(3, #m.sent);
		assert_error_reply(m.sent[3], USER, m.host, "get-3", "wait", "recipient-unavailable", GONE);
		-- nothing else later, nothing held any more
		assert.are.same({}, m.save().held);
		assert.is_true(deliver(m, result_from("b", jat, "get-3", "late")));
		clock.offset = 3600;
		m.timers[1].callback();
		assert.are.equal(3, #m.sent);
	end);
end);

describe("module reload", function ()
	it("keeps online resources and outstanding requests", function ()
		local host = fresh_host();
		local m1, ok, err = load_shim({ host = host });
		assert.is_true(ok, err);
		target_online(m1, "a");
		deliver(m1, request(m1, USER, "r1"));
		local jat = m1.sent[#m1.sent].attr.from;

		local m2;
		m2, ok, err = load_shim({ host = host });
		assert.is_true(ok, err);
		m2.sent = {};
		-- the answer to the request made before the reload is delivered
		deliver(m2, st.iq({ type = "result", id = "r1", to = jat, from = TARGET .. "/a" }));
		assert.are.equal(1, #m2.sent);
		assert.are.equal(USER, m2.sent[1].attr.to);
		assert.are.equal(host, m2.sent[1].attr.from);
		assert.are.equal("result", m2.sent[1].attr.type);
		-- and the resource is still known without a new presence
		deliver(m2, request(m2, USER, "r2"));
		assert.are.equal(TARGET .. "/a", m2.sent[2].attr.to);
	end);

	it("module.save()/module.restore() keep a held get retriable; replies reach the new instance", function ()
		local host = fresh_host();
		local OTHER = "other@example.org/x";
		local m1, ok, err = load_shim({ host = host });
		assert.is_true(ok, err);
		m1.sent = {};
		target_online(m1, "a");
		deliver(m1, rich_get(m1, USER, "kept"));
		deliver(m1, request(m1, OTHER, "before"));
		assert.are.equal(2, #m1.sent);
		assert.are.equal(TARGET .. "/a", m1.sent[1].attr.to);
		assert.are.equal(TARGET .. "/a", m1.sent[2].attr.to);
		local jat_user, jat_other = m1.sent[1].attr.from, m1.sent[2].attr.from;
		target_online(m1, "b");

		-- the reload: Prosody saves the old instance's data and restores it into the new one
		assert.is_function(m1.save);
		local data = m1.save();
		assert.is_table(data);
		assert.is_table(data.held);
		local n = 0;
		for seq, stanza in pairs(data.held) do
			n = n + 1;
			-- (Lua 5.1, 5.2, LuaJIT: one number type; an integer has no fraction)
			assert.are.equal("integer", support.number_type(seq));
			assert.is_true(st.is_stanza(stanza));
		end
		assert.are.equal(2, n);
		local m2;
		m2, ok, err = load_shim({ host = host });
		assert.is_true(ok, err);
		assert.is_function(m2.restore);
		m2.restore(data);
		m2.sent = {};
		local sent_by_m1 = #m1.sent;

		-- a reply to a request sent before the reload is delivered by the new instance
		assert.is_true(deliver(m2, st.iq({ type = "result", id = "before", to = jat_other, from = TARGET .. "/a" })));
		assert.are.equal(1, #m2.sent);
		assert.are.same({ "result", "before", OTHER, host },
			{ m2.sent[1].attr.type, m2.sent[1].attr.id, m2.sent[1].attr.to, m2.sent[1].attr.from });

		-- /a goes: the new instance sends the get held before the reload to /b
		assert.is_true(target_offline(m2, "a"));
		assert.are.equal(2, #m2.sent);
		assert.are.equal(canon(rich_get_forwarded(TARGET .. "/b", jat_user, "kept")), m2.sent_xml[2]);
		assert.is_nil(logged(m2, "warn", "is no longer held"));

		-- and /b's answer reaches the requester
		assert.is_true(deliver(m2, result_from("b", jat_user, "kept", "after reload")));
		assert.are.equal(3, #m2.sent);
		local expected = st.iq({ type = "result", id = "kept", to = USER, from = host })
			:tag("query", { xmlns = "urn:example:retry" }):text_tag("item", "after reload"):up();
		assert.are.equal(canon(expected), m2.sent_xml[3]);
		-- the old instance sent nothing after the reload
		assert.are.equal(sent_by_m1, #m1.sent);
	end);

	it("two components keep separate state", function ()
		local a, ok, err = load_shim();
		assert.is_true(ok, err);
		local b;
		b, ok, err = load_shim();
		assert.is_true(ok, err);
		a.sent, b.sent = {}, {};
		target_online(a, "a");
		deliver(b, request(b, USER, "1"));
		assert_error_reply(b.sent[1], USER, b.host, "1", "cancel", "service-unavailable");
		deliver(a, request(a, USER, "1"));
		assert.are.equal(TARGET .. "/a", a.sent[1].attr.to);
	end);
end);

-- The resource a forwarded request went to (nil for anything not sent to the target).
local function resource_of(stanza)
	local to = stanza.attr.to or "";
	if to:sub(1, #TARGET + 1) ~= TARGET .. "/" then return nil; end
	return to:sub(#TARGET + 2);
end

-- Sends n gets (ids prefix1..prefixn) from the given requesters in turn; returns the
-- resources they were forwarded to, in order. Every request must be forwarded.
local function spread(m, n, prefix, requesters)
	requesters = requesters or { USER };
	local out = {};
	for i = 1, n do
		local before = #m.sent;
		assert.is_true(deliver(m, request(m, requesters[(i - 1) % #requesters + 1], prefix .. i)));
		assert.are.equal(before + 1, #m.sent, "request " .. prefix .. i .. " sent nothing");
		local fwd = m.sent[#m.sent];
		assert.are.equal("get", fwd.attr.type, "request " .. prefix .. i .. " was not forwarded: " .. m.sent_xml[#m.sent]);
		out[i] = assert(resource_of(fwd), "not forwarded to the target: " .. m.sent_xml[#m.sent]);
	end
	return out;
end

-- The result the resource a request was forwarded to sends back for it.
local function result_for(fwd)
	return st.iq({ type = "result", id = fwd.attr.id, to = fwd.attr.from, from = fwd.attr.to });
end

local function count_values(list)
	local n = {};
	for _, v in ipairs(list) do n[v] = (n[v] or 0) + 1; end
	return n;
end

describe("client_proxy_strategy", function ()
	it("round_robin: a, b and c take turns, the same cycle again and again", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_strategy = "round_robin" } });
		assert.is_true(ok, err);
		m.sent = {};
		target_online(m, "a");
		target_online(m, "b");
		target_online(m, "c");
		-- two requesters in turn: the turns are the component's, not each requester's
		local to = spread(m, 9, "rr", { USER, "other@example.org/x" });
		assert.are.same({ a = 3, b = 3, c = 3 }, count_values(to));
		local first = { to[1], to[2], to[3] };
		assert.are.same({ a = 1, b = 1, c = 1 }, count_values(first));
		assert.are.same(first, { to[4], to[5], to[6] });
		assert.are.same(first, { to[7], to[8], to[9] });
	end);

	it("sticky: a requester's requests all go to one resource; requesters spread", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_strategy = "sticky" } });
		assert.is_true(ok, err);
		m.sent = {};
		target_online(m, "a");
		target_online(m, "b");
		target_online(m, "c");
		local to = spread(m, 10, "st");
		for i = 2, 10 do
			assert.are.equal(to[1], to[i], "request " .. i .. " of the same requester went elsewhere");
		end
		-- the first choice is random: 30 requesters do not all land on one resource
		-- (chance 3^-29 with three resources)
		local others = {};
		for i = 1, 30 do
			others[i] = spread(m, 1, "r" .. i .. "-", { ("user%d@example.org/x"):format(i) })[1];
		end
		local distinct = 0;
		for _ in pairs(count_values(others)) do distinct = distinct + 1; end
		assert.is_true(distinct > 1, "30 requesters all on one resource");
	end);

	it("refuses an unknown strategy, naming the option", function ()
		for _, bad in ipairs({ "fastest", "Round_Robin", "" }) do
			local _, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_strategy = bad } });
			assert.is_false(ok, "loaded with client_proxy_strategy = " .. bad);
			assert.matches("^client_proxy_strategy: ", err);
		end
	end);
end);

describe("client_proxy_resources", function ()
	it("sends requests only to the resources whose name matches a pattern", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_resources = { "^focus" } } });
		assert.is_true(ok, err);
		m.sent = {};
		target_online(m, "phone", 10); -- higher priority, but not eligible
		target_online(m, "focus1");
		assert.are.equal(0, #m.sent);
		local to = spread(m, 12, "f");
		assert.are.same({ focus1 = 12 }, count_values(to));
	end);

	it("answers service-unavailable while only an ineligible resource is online", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_resources = { "^focus" } } });
		assert.is_true(ok, err);
		m.sent = {};
		target_online(m, "phone");
		assert.is_true(deliver(m, request(m, USER, "p1")));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], USER, m.host, "p1", "cancel", "service-unavailable");
		-- an eligible one arrives, and leaves again
		target_online(m, "focus1");
		assert.are.same({ "focus1" }, spread(m, 1, "p2-"));
		assert.is_true(deliver(m, result_for(m.sent[2])));
		target_offline(m, "focus1");
		m.sent = {};
		assert.is_true(deliver(m, request(m, USER, "p3")));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], USER, m.host, "p3", "cancel", "service-unavailable");
	end);

	it("takes a single pattern given as a string, as Prosody's get_option_array does", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_resources = "^focus" } });
		assert.is_true(ok, err);
		m.sent = {};
		target_online(m, "phone");
		target_online(m, "focus2");
		assert.are.same({ focus2 = 6 }, count_values(spread(m, 6, "s")));
	end);

	it("refuses an invalid pattern, naming the option", function ()
		for _, bad in ipairs({ { "[" }, { "^focus", "%" }, { "%f" }, { 5 } }) do
			local _, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_resources = bad } });
			assert.is_false(ok, "loaded with client_proxy_resources = { " .. tostring(bad[#bad]) .. " }");
			assert.matches("^client_proxy_resources: ", err);
		end
	end);

	it("refuses a pattern that is invalid only against a non-empty name, e.g. \"(a\"", function ()
		-- string.match("", "(a") is nil, but string.match("abc", "(a") raises
		-- "unfinished capture": the presence of resource "abc" would raise in the hook.
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_resources = { "(a" } } });
		if ok then
			local delivered, raised = try_deliver(m, st.presence({ from = TARGET .. "/abc", to = m.host }));
			assert.is_true(delivered, "loaded with client_proxy_resources = { \"(a\" }, then the presence of "
				.. TARGET .. "/abc raised: " .. tostring(raised));
		end
		assert.is_false(ok, "loaded with client_proxy_resources = { \"(a\" }");
		assert.matches("^client_proxy_resources: ", err);
	end);
end);

describe("draining (negative priority)", function ()
	it("sends requests to /new while it is online, to /old once it is gone", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		m.sent = {};
		target_online(m, "old", -1);
		target_online(m, "new", 0);
		local to = spread(m, 10, "d");
		assert.are.same({ new = 10 }, count_values(to));
		for i = 1, 10 do
			assert.is_true(deliver(m, result_for(m.sent[i])));
		end
		assert.are.equal(20, #m.sent);
		target_offline(m, "new");
		assert.are.equal(20, #m.sent);
		assert.are.same({ old = 5 }, count_values(spread(m, 5, "o")));
		-- /new is back: /old drains again
		target_online(m, "new");
		assert.are.same({ new = 5 }, count_values(spread(m, 5, "n")));
	end);
end);

describe("module:set_status", function ()
	local function status_types(m)
		local out = {};
		for i, call in ipairs(m.status_calls) do out[i] = call.type; end
		return out;
	end

	local function count_logs(m, level, pattern)
		local n = 0;
		for _, line in ipairs(m.logs) do
			if line.level == level and line.text:find(pattern) then n = n + 1; end
		end
		return n;
	end

	local function revoke(m)
		return deliver(m, st.presence({ type = "unsubscribed", from = TARGET, to = m.host }));
	end

	it("warns, then core, error and core again, each change set and logged once", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_resources = { "^focus" } } });
		assert.is_true(ok, err);
		-- at load, nothing online
		assert.are.same({ "warn" }, status_types(m));
		assert.matches("service@example.org", m.status_calls[1].message, 1, true);
		assert.are.equal(1, count_logs(m, "warn", "No eligible resource of service@example%.org is online"));

		-- an ineligible resource changes nothing
		target_online(m, "phone");
		assert.are.same({ "warn" }, status_types(m));

		target_online(m, "focus1");
		assert.are.same({ "warn", "core" }, status_types(m));
		assert.matches("1 eligible", m.status_calls[2].message, 1, true);
		assert.are.equal(1, count_logs(m, "info", "eligible resource%(s%) of service@example%.org online"));
		-- more of the same state: no new status, no new line
		target_online(m, "focus2");
		target_online(m, "focus1", 5);
		target_offline(m, "focus2");
		assert.are.same({ "warn", "core" }, status_types(m));
		assert.are.equal(1, count_logs(m, "info", "eligible resource%(s%) of service@example%.org online"));

		-- the target revokes the subscription
		assert.is_true(revoke(m));
		assert.are.same({ "warn", "core", "error" }, status_types(m));
		assert.matches(m.host, m.status_calls[3].message, 1, true);
		assert.are.equal(1, count_logs(m, "error", "revoked the subscription"));
		assert.is_true(revoke(m));
		assert.are.same({ "warn", "core", "error" }, status_types(m));
		assert.are.equal(1, count_logs(m, "error", "revoked the subscription"));

		-- approved again: a resource is available
		target_online(m, "focus1");
		assert.are.same({ "warn", "core", "error", "core" }, status_types(m));
		assert.are.equal(2, count_logs(m, "info", "eligible resource%(s%) of service@example%.org online"));
		assert.are.equal(1, count_logs(m, "warn", "No eligible resource"));
		-- and no eligible resource online is a warning again
		target_offline(m, "focus1");
		assert.are.same({ "warn", "core", "error", "core", "warn" }, status_types(m));
		assert.are.equal(2, count_logs(m, "warn", "No eligible resource"));
	end);

	it("leaves Prosody 0.12's module status at core once a resource is back after an error", function ()
		-- Prosody 0.12's set_status keeps an "error" status against anything but another
		-- "error" unless the call passes override = true.
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		assert.are.equal("warn", (m:get_status()));
		target_online(m, "a");
		assert.are.equal("core", (m:get_status()));
		assert.is_true(revoke(m));
		assert.are.equal("error", (m:get_status()));
		target_online(m, "a");
		assert.are.equal("core", (m:get_status()), "the error status stuck after the target came back");
	end);
end);

describe("metrics", function ()
	it("defines the families with Prosody's metric() signature", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		local expected = {
			requests = { "counter", { "outcome" } },
			errors = { "counter", { "condition" } },
			eligible_resources = { "gauge", {} },
			pending = { "gauge", {} },
			messages = { "counter", { "direction" } },
		};
		for name, e in pairs(expected) do
			local family = m.metrics[name];
			assert.is_table(family, "no metric " .. name);
			assert.are.equal(e[1], family.type, name);
			assert.are.same(e[2], family.label_keys, name);
			assert.is_string(family.unit, name);
			assert.is_string(family.description, name);
		end
		assert.are.equal(5, #m.items.metric);
	end);

	it("copies the core's counters and gauges at stats-update; errors counted by condition", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_timeout = 30 } });
		assert.is_true(ok, err);
		m.sent = {};
		local update = m.global_hooks["stats-update"];
		assert.is_function(update, "nothing hooked on the global stats-update");
		local requests, errors = m.metrics.requests, m.metrics.errors;
		local eligible, pending = m.metrics.eligible_resources, m.metrics.pending;

		-- refused: nothing online
		assert.is_true(deliver(m, request(m, USER, "m0")));
		assert_error_reply(m.sent[1], USER, m.host, "m0", "cancel", "service-unavailable");
		target_online(m, "a");
		-- forwarded and delivered, twice
		for i = 1, 2 do
			assert.is_true(deliver(m, request(m, USER, "m" .. i)));
			assert.is_true(deliver(m, result_for(m.sent[#m.sent])));
		end
		assert.are.equal(5, #m.sent);
		-- unsolicited: a result nobody asked for
		local jat = m.sent[2].attr.from;
		assert.is_true(deliver(m, st.iq({ type = "result", id = "never-asked", to = jat, from = TARGET .. "/a" })));
		-- forwarded, still pending
		assert.is_true(deliver(m, request(m, USER, "m3")));
		assert.are.equal(6, #m.sent);

		update();
		assert.are.same({ forwarded = 3, delivered = 2, refused = 1, unsolicited = 1, timed_out = 0, lost = 0, retried = 0,
			outbound = 0 }, requests:by_label());
		assert.are.same({ to_service = 0, to_user = 0 }, m.metrics.messages:by_label());
		assert.are.equal(1, eligible:value());
		assert.are.equal(1, pending:value());

		-- m3 times out
		clock.offset = 31;
		m.timers[1].callback();
		assert.are.equal(7, #m.sent);
		assert_error_reply(m.sent[7], USER, m.host, "m3", "wait", "remote-server-timeout");

		update();
		assert.are.same({ forwarded = 3, delivered = 2, refused = 1, unsolicited = 1, timed_out = 1, lost = 0, retried = 0,
			outbound = 0 }, requests:by_label());
		assert.are.equal(1, eligible:value());
		assert.are.equal(0, pending:value());
		assert.are.same({ ["service-unavailable"] = 1, ["remote-server-timeout"] = 1 }, errors:by_label());
		-- the counters are set from the core's, not added up at each update
		for _, call in ipairs(requests.calls) do
			assert.are.equal("set", call.op);
		end
		for _, call in ipairs(errors.calls) do
			assert.are.same({ "add", 1 }, { call.op, call.value });
		end

		-- the resource goes: the gauge follows
		target_offline(m, "a");
		update();
		assert.are.equal(0, eligible:value());
	end);
end);

describe("shell command client_proxy:resources", function ()
	-- A shell section as mod_admin_shell hands it to a command: self.session.print.
	local function shell_self(lines, section)
		return setmetatable({ session = { print = function (line) table.insert(lines, line); end } },
			{ __index = section });
	end

	-- Brings three resources online (one per pool) and leaves one request pending on focus1.
	local function populate(m)
		target_online(m, "focus1", 5);
		target_online(m, "old", -1);
		target_online(m, "phone", 10);
		assert.is_true(deliver(m, request(m, USER, "sh1")));
		assert.are.equal(TARGET .. "/focus1", m.sent[#m.sent].attr.to);
	end
	local OPTIONS = { target_address = TARGET, client_proxy_resources = { "^focus", "^old" } };
	local EXPECTED = {
		focus1 = { priority = 5, pool = "active", pending = 1 },
		old = { priority = -1, pool = "draining", pending = 0 },
		phone = { priority = 10, pool = "ineligible", pending = 0 },
	};

	local function words(line)
		local out = {};
		for w in line:gmatch("%S+") do out[w] = true; end
		return out;
	end

	local function check_listing(m, lines)
		assert.are.equal(4, #lines, "expected a header and three resources:\n" .. table.concat(lines, "\n"));
		assert.matches(m.host, lines[1], 1, true);
		assert.matches(TARGET, lines[1], 1, true);
		local seen = {};
		for i = 2, #lines do
			local line = lines[i];
			local w = words(line);
			local name;
			for n in pairs(EXPECTED) do
				if w[n] then
					assert.is_nil(name, "two resources on one line: " .. line);
					name = n;
				end
			end
			assert.is_string(name, "no resource named on: " .. line);
			assert.is_nil(seen[name], name .. " listed twice");
			seen[name] = true;
			local e = EXPECTED[name];
			assert.is_true(w[tostring(e.priority)], "priority " .. e.priority .. " missing: " .. line);
			assert.is_true(w[e.pool], "pool " .. e.pool .. " missing: " .. line);
			assert.are.equal(tostring(e.pending), line:match("(%d+) pending"), line);
		end
	end

	it("Prosody 0.12: lives in the admin shell's shared environment", function ()
		local shared = {};
		local m, ok, err = load_shim({ options = OPTIONS, shared = shared });
		assert.is_true(ok, err);
		populate(m);
		assert.is_nil(m.items["shell-command"]);
		local env = m:shared("/*/admin_shell/env");
		assert.is_table(env.client_proxy);
		assert.is_function(env.client_proxy.resources);

		local lines = {};
		local shown, text = shell_self(lines, env.client_proxy):resources(m.host);
		assert.is_true(shown);
		assert.is_string(text);
		check_listing(m, lines);

		-- another host, same process, same shell: each is listed on its own
		local m2;
		m2, ok, err = load_shim({ options = OPTIONS, shared = shared });
		assert.is_true(ok, err);
		local lines2 = {};
		shown = shell_self(lines2, env.client_proxy):resources(m2.host);
		assert.is_true(shown);
		assert.are.equal(1, #lines2, table.concat(lines2, "\n"));
		assert.matches(m2.host, lines2[1], 1, true);
		lines = {};
		shell_self(lines, env.client_proxy):resources(m.host);
		check_listing(m, lines);

		-- an unknown host: false and nothing printed
		lines = {};
		shown, text = shell_self(lines, env.client_proxy):resources("nowhere.example");
		assert.is_false(shown);
		assert.matches("nowhere.example", text, 1, true);
		assert.are.same({}, lines);

		-- unloaded: no longer listed
		local unloaded = m.handlers["module-unloaded"];
		assert.is_function(unloaded);
		unloaded({ module = "client_proxy", host = m.host });
		lines = {};
		shown = shell_self(lines, env.client_proxy):resources(m.host);
		assert.is_false(shown);
		assert.are.same({}, lines);
	end);

	it("Prosody 13: a shell-command item with the same listing", function ()
		local shared = {};
		local m, ok, err = load_shim({ options = OPTIONS, version = "13.0.1", shared = shared, started = false });
		assert.is_true(ok, err);
		-- mod_admin_shell may load after the component: the item comes once the server started,
		-- in the global context (mod_admin_shell does not watch components' items).
		assert.is_nil(m.items["shell-command"]);
		server_started(m);
		assert.are.equal(1, #m.global_items);
		assert.are.equal("shell-command", m.global_items[1].key);
		populate(m);
		assert.is_nil(m:shared("/*/admin_shell/env").client_proxy);
		local items = m.items["shell-command"];
		assert.is_table(items);
		assert.are.equal(1, #items);
		local item = items[1];
		assert.are.equal("client_proxy", item.section);
		assert.are.equal("resources", item.name);
		assert.is_function(item.handler);

		local lines = {};
		local shown, text = item.handler(shell_self(lines, {}), m.host);
		assert.is_true(shown);
		assert.is_string(text);
		check_listing(m, lines);
		-- without a host: this component's
		lines = {};
		assert.is_true((item.handler(shell_self(lines, {}))));
		check_listing(m, lines);
		-- another host: not this component's to list
		lines = {};
		assert.is_not_true((item.handler(shell_self(lines, {}), "other.example")));
		assert.are.same({}, lines);
	end);
end);


-- Forgets what was sent so far (both lists: sent_xml is compared whole below).
local function clear_sent(m)
	m.sent, m.sent_xml = {}, {};
end

-- Stanzas sent to `to`, in order.
local function sent_to(m, to)
	local out = {};
	for i, s in ipairs(m.sent) do
		if s.attr.to == to then table.insert(out, m.sent_xml[i]); end
	end
	return out;
end

local function user_message(from, to, id, body)
	return st.message({ type = "chat", id = id, to = to, from = from })
		:text_tag("body", body)
		:tag("thread"):text("t-1"):up()
		:tag("x", { xmlns = "urn:example:extra", n = id or "" }):up();
end

describe("messages", function ()
	it("a user's messages all go to one resource from proxy/JAT with their content; the reply comes back from the host", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		target_online(m, "b");
		target_online(m, "c");
		local jat = m.host .. "/" .. USER;
		for i = 1, 5 do
			assert.is_true(deliver(m, user_message(USER, m.host, "m" .. i, "hello " .. i .. " <&> ünï")));
		end
		assert.are.equal(5, #m.sent);
		local res = resource_of(m.sent[1]);
		assert.is_string(res, m.sent_xml[1]);
		for i = 1, 5 do
			local expected = user_message(jat, TARGET .. "/" .. res, "m" .. i, "hello " .. i .. " <&> ünï");
			assert.are.equal(canon(expected), m.sent_xml[i], "message " .. i);
		end

		-- the resource answers the user's JAT address: to the user from the host
		assert.is_true(deliver(m, user_message(TARGET .. "/" .. res, jat, "r1", "hi back")));
		assert.are.equal(6, #m.sent);
		assert.are.equal(canon(user_message(m.host, USER, "r1", "hi back")), m.sent_xml[6]);

		-- the user's server bounces a message of the resource: back to that resource
		local bounce = st.message({ type = "error", id = "r1", to = m.host, from = USER })
			:tag("error", { type = "cancel" }):tag("service-unavailable", { xmlns = STANZAS }):up():up();
		assert.is_true(deliver(m, bounce));
		assert.are.equal(7, #m.sent);
		local expected_bounce = st.message({ type = "error", id = "r1", to = TARGET .. "/" .. res, from = jat })
			:tag("error", { type = "cancel" }):tag("service-unavailable", { xmlns = STANZAS }):up():up();
		assert.are.equal(canon(expected_bounce), m.sent_xml[7]);

		-- counted by direction at stats-update
		m.global_hooks["stats-update"]();
		assert.are.same({ to_service = 5, to_user = 1 }, m.metrics.messages:by_label());
		assert.is_nil(logged(m, "error", ""));
	end);

	it("another user's messages stick to a resource of their own; a message to node@host or host/x is the same", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		target_online(m, "b");
		local OTHER = "other@example.net/x";
		local to_user, to_other = {}, {};
		for i, to in ipairs({ m.host, "node@" .. m.host, m.host .. "/x", m.host }) do
			deliver(m, user_message(USER, to, "u" .. i, "u"));
			to_user[i] = resource_of(m.sent[#m.sent]);
			deliver(m, user_message(OTHER, to, "o" .. i, "o"));
			to_other[i] = resource_of(m.sent[#m.sent]);
			assert.are.equal(m.host .. "/" .. OTHER, m.sent[#m.sent].attr.from);
		end
		assert.are.equal(8, #m.sent);
		for i = 2, 4 do
			assert.are.equal(to_user[1], to_user[i]);
			assert.are.equal(to_other[1], to_other[i]);
		end
	end);

	it("a message with no resource online is answered service-unavailable", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		clear_sent(m);
		assert.is_true(deliver(m, user_message(USER, m.host, "m1", "anyone?")));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], USER, m.host, "m1", "cancel", "service-unavailable");
		assert.are.equal("message", m.sent[1].name);
	end);
end);

-- An iq a resource of the target sends to a user's JAT address.
local function outbound_iq(m, resource, kind, id, value)
	return st.iq({ type = kind, id = id, to = m.host .. "/" .. USER, from = TARGET .. "/" .. resource })
		:tag("ask", { xmlns = "urn:example:outbound" }):text_tag("value", value):up();
end

describe("requests from the implementing client", function ()
	it("two resources using the same id: different ids towards the user, each answer back to its resource with its id", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		target_online(m, "b");
		local jat = m.host .. "/" .. USER;
		assert.is_true(deliver(m, outbound_iq(m, "a", "get", "same", "from a")));
		assert.is_true(deliver(m, outbound_iq(m, "b", "set", "same", "from b")));
		assert.are.equal(2, #m.sent);
		local id_a, id_b = m.sent[1].attr.id, m.sent[2].attr.id;
		assert.matches("^cp%x+$", id_a);
		assert.matches("^cp%x+$", id_b);
		assert.are_not.equal(id_a, id_b);
		-- to the user, from the host, payload intact
		local function asked(kind, id, value)
			return st.iq({ type = kind, id = id, to = USER, from = m.host })
				:tag("ask", { xmlns = "urn:example:outbound" }):text_tag("value", value):up();
		end
		assert.are.equal(canon(asked("get", id_a, "from a")), m.sent_xml[1]);
		assert.are.equal(canon(asked("set", id_b, "from b")), m.sent_xml[2]);

		-- the user answers b first, then a
		local function answer(id, value)
			return st.iq({ type = "result", id = id, to = m.host, from = USER })
				:tag("ask", { xmlns = "urn:example:outbound" }):text_tag("answer", value):up();
		end
		local function answered(resource, value)
			return st.iq({ type = "result", id = "same", to = TARGET .. "/" .. resource, from = jat })
				:tag("ask", { xmlns = "urn:example:outbound" }):text_tag("answer", value):up();
		end
		assert.is_true(deliver(m, answer(id_b, "for b")));
		assert.are.equal(3, #m.sent);
		assert.are.equal(canon(answered("b", "for b")), m.sent_xml[3]);
		assert.is_true(deliver(m, answer(id_a, "for a")));
		assert.are.equal(4, #m.sent);
		assert.are.equal(canon(answered("a", "for a")), m.sent_xml[4]);
		-- answered once; nothing times out later
		assert.is_true(deliver(m, answer(id_a, "again")));
		clock.offset = 3600;
		m.timers[1].callback();
		assert.are.equal(4, #m.sent);
		m.global_hooks["stats-update"]();
		assert.are.equal(2, m.metrics.requests:value("outbound"));
	end);

	it("an unanswered request gets its resource remote-server-timeout from the user's JAT address", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_timeout = 30 } });
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		assert.is_true(deliver(m, outbound_iq(m, "a", "get", "ask-1", "x")));
		assert.are.equal(1, #m.sent);
		clock.offset = 29;
		m.timers[1].callback();
		assert.are.equal(1, #m.sent);
		clock.offset = 31;
		m.timers[1].callback();
		assert.are.equal(2, #m.sent);
		assert_error_reply(m.sent[2], TARGET .. "/a", m.host .. "/" .. USER, "ask-1", "wait", "remote-server-timeout",
			"The implementing client did not answer in time");
		assert.are.equal("iq", m.sent[2].name);
		clock.offset = 3600;
		m.timers[1].callback();
		assert.are.equal(2, #m.sent);
		assert.are.same({ ["remote-server-timeout"] = 1 }, m.metrics.errors:by_label());
	end);

	it("a request to an address the proxy cannot map back is answered item-not-found", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		local q = st.iq({ type = "get", id = "q1", to = m.host .. "/@0123456789abcdef", from = TARGET .. "/a" })
			:tag("ask", { xmlns = "urn:example:outbound" }):up();
		assert.is_true(deliver(m, q));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], TARGET .. "/a", m.host .. "/@0123456789abcdef", "q1", "cancel", "item-not-found");
	end);

	it("the user's iq error answering a request comes back to the resource with its id", function ()
		-- README: "The user's result or error comes back to the resource that asked".
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		deliver(m, outbound_iq(m, "a", "get", "asked", "x"));
		local id = m.sent[1].attr.id;
		local refusal = st.iq({ type = "error", id = id, to = m.host, from = USER })
			:tag("error", { type = "cancel" }):tag("feature-not-implemented", { xmlns = STANZAS }):up():up();
		assert.is_true(deliver(m, refusal));
		assert.are.equal(2, #m.sent, "the user's error was not passed back to /a");
		assert_error_reply(m.sent[2], TARGET .. "/a", m.host .. "/" .. USER, "asked", "cancel", "feature-not-implemented");
	end);
end);

local SUBSCRIBERS = "client_proxy_subscribers";

local function presence_from(m, from, kind)
	return deliver(m, st.presence({ type = kind, to = m.host, from = from }));
end

-- The presence the component sends a subscriber: type nil = available.
local function presence_xml(from, to, kind)
	return canon(st.presence({ from = from, to = to, type = kind }));
end

-- The subscribers as stored (bare JID -> true), nil when none.
local function stored(storage)
	return storage[SUBSCRIBERS] and storage[SUBSCRIBERS][""];
end

local function store_sets(m)
	local out = {};
	for _, call in ipairs(m.store_calls) do
		if call.op == "set" then table.insert(out, call); end
	end
	return out;
end

describe("presence: users subscribed to the service", function ()
	local U1, U2 = "u1@example.org", "u2@example.net";

	it("subscribe: subscribed, then unavailable while no resource is online; the subscriber is stored", function ()
		local storage = {};
		local m, ok, err = load_shim({ storage = storage });
		assert.is_true(ok, err);
		clear_sent(m);
		assert.are.same({}, store_sets(m));
		-- from a full JID: the bare JID subscribes
		assert.is_true(presence_from(m, U1 .. "/laptop", "subscribe"));
		assert.are.same({ presence_xml(m.host, U1, "subscribed"), presence_xml(m.host, U1, "unavailable") }, m.sent_xml);
		assert.are.same({ [U1] = true }, stored(storage));
		assert.are.equal(1, #store_sets(m));
		assert.is_nil(store_sets(m)[1].user);
		-- subscribing again answers again and stores nothing new
		clear_sent(m);
		assert.is_true(presence_from(m, U1, "subscribe"));
		assert.are.same({ presence_xml(m.host, U1, "subscribed"), presence_xml(m.host, U1, "unavailable") }, m.sent_xml);
		assert.are.equal(1, #store_sets(m));
	end);

	it("subscribe while a resource is online: subscribed, then available", function ()
		local storage = {};
		local m, ok, err = load_shim({ storage = storage });
		assert.is_true(ok, err);
		target_online(m, "a");
		clear_sent(m);
		assert.is_true(presence_from(m, U2, "subscribe"));
		assert.are.same({ presence_xml(m.host, U2, "subscribed"), presence_xml(m.host, U2, nil) }, m.sent_xml);
		assert.are.same({ [U2] = true }, stored(storage));
	end);

	it("tells every subscriber when the last eligible resource goes and when one comes back", function ()
		local storage = {};
		local m, ok, err = load_shim({ storage = storage,
			options = { target_address = TARGET, client_proxy_resources = { "^focus" } } });
		assert.is_true(ok, err);
		presence_from(m, U1, "subscribe");
		presence_from(m, U2 .. "/phone", "subscribe");
		clear_sent(m);
		local function told()
			local out = { [U1] = sent_to(m, U1), [U2] = sent_to(m, U2) };
			assert.are.equal(#out[U1] + #out[U2], #m.sent, "sent to someone else: " .. table.concat(m.sent_xml, " "));
			clear_sent(m);
			return out;
		end
		local available = { [U1] = { presence_xml(m.host, U1, nil) }, [U2] = { presence_xml(m.host, U2, nil) } };
		local unavailable = { [U1] = { presence_xml(m.host, U1, "unavailable") }, [U2] = { presence_xml(m.host, U2, "unavailable") } };
		local nothing = { [U1] = {}, [U2] = {} };

		target_online(m, "phone"); -- not eligible
		assert.are.same(nothing, told());
		target_online(m, "focus1");
		assert.are.same(available, told());
		target_online(m, "focus2");
		target_online(m, "focus1", 5);
		assert.are.same(nothing, told());
		target_offline(m, "focus1");
		assert.are.same(nothing, told(), "focus2 is still online");
		target_offline(m, "focus2");
		assert.are.same(unavailable, told());
		target_offline(m, "phone");
		assert.are.same(nothing, told());
		target_online(m, "focus2");
		assert.are.same(available, told());
		-- a draining resource is still a resource
		target_online(m, "focus2", -1);
		assert.are.same(nothing, told());
		-- the target revokes the subscription: every resource is gone
		assert.is_true(deliver(m, st.presence({ type = "unsubscribed", from = TARGET, to = m.host })));
		assert.are.same(unavailable, told());
		target_online(m, "focus1");
		assert.are.same(available, told());
	end);

	it("a probe from a subscriber gets the availability, from anyone else unsubscribed", function ()
		local m, ok, err = load_shim({ storage = {} });
		assert.is_true(ok, err);
		presence_from(m, U1, "subscribe");
		clear_sent(m);
		assert.is_true(presence_from(m, U1, "probe"));
		assert.are.same({ presence_xml(m.host, U1, "unavailable") }, m.sent_xml);
		target_online(m, "a");
		clear_sent(m);
		assert.is_true(presence_from(m, U1, "probe"));
		assert.are.same({ presence_xml(m.host, U1, nil) }, m.sent_xml);
		clear_sent(m);
		assert.is_true(presence_from(m, U2, "probe"));
		assert.are.same({ presence_xml(m.host, U2, "unsubscribed") }, m.sent_xml);
		-- directed presence from users is accepted silently
		clear_sent(m);
		assert.is_true(presence_from(m, U1 .. "/laptop", nil));
		assert.is_true(presence_from(m, U2 .. "/x", "unavailable"));
		assert.is_true(presence_from(m, U1, "subscribed"));
		assert.are.same({}, m.sent_xml);
	end);

	it("unsubscribe removes the subscriber from the store; it is told nothing more", function ()
		local storage = {};
		local m, ok, err = load_shim({ storage = storage });
		assert.is_true(ok, err);
		presence_from(m, U1, "subscribe");
		presence_from(m, U2, "subscribe");
		assert.are.same({ [U1] = true, [U2] = true }, stored(storage));
		local sets = #store_sets(m);
		clear_sent(m);
		assert.is_true(presence_from(m, U1 .. "/laptop", "unsubscribe"));
		assert.are.same({ [U2] = true }, stored(storage));
		assert.are.equal(sets + 1, #store_sets(m));
		-- nothing but an unavailable to the one leaving
		assert.are.same({}, sent_to(m, U2));
		assert.are.equal(#sent_to(m, U1), #m.sent);
		for _, xml in ipairs(sent_to(m, U1)) do
			assert.is_nil(xml:find("type='subscribed'", 1, true), xml);
		end
		-- not told of changes any more; its probe is a stranger's
		clear_sent(m);
		target_online(m, "a");
		assert.are.same({ presence_xml(m.host, U2, nil) }, m.sent_xml);
		clear_sent(m);
		presence_from(m, U1, "probe");
		assert.are.same({ presence_xml(m.host, U1, "unsubscribed") }, m.sent_xml);
		-- unsubscribing someone who is not subscribed stores nothing
		sets = #store_sets(m);
		presence_from(m, "stranger@example.com", "unsubscribe");
		assert.are.equal(sets, #store_sets(m));
		-- the last one leaves: nothing stored
		presence_from(m, U2, "unsubscribe");
		assert.is_nil(stored(storage));
	end);

	it("subscribers stored before a restart are told of availability changes after it", function ()
		-- The storage of the host: what a previous run stored.
		local storage = { [SUBSCRIBERS] = { [""] = { [U1] = true } } };
		local host = fresh_host();
		local m1, ok, err = load_shim({ host = host, storage = storage });
		assert.is_true(ok, err);
		assert.are.same({}, store_sets(m1), "nothing to store at load");
		presence_from(m1, U2, "subscribe");
		assert.are.same({ [U1] = true, [U2] = true }, stored(storage));

		-- the restart: a new instance on the same storage (nothing was online, so the
		-- core's state of this host is a new one's)
		local m2;
		m2, ok, err = load_shim({ host = host, storage = storage });
		assert.is_true(ok, err);
		clear_sent(m2);
		target_online(m2, "a");
		assert.are.same({ presence_xml(host, U1, nil) }, sent_to(m2, U1));
		assert.are.same({ presence_xml(host, U2, nil) }, sent_to(m2, U2));
		target_offline(m2, "a");
		assert.are.same({ presence_xml(host, U1, nil), presence_xml(host, U1, "unavailable") }, sent_to(m2, U1));
		-- and the probe of a stored subscriber gets the availability
		clear_sent(m2);
		presence_from(m2, U2, "probe");
		assert.are.same({ presence_xml(host, U2, "unavailable") }, m2.sent_xml);
		-- the old instance sent nothing
		assert.are.equal(0, #sent_to(m1, U1));
	end);

	it("a server shutdown tells subscribers the service is unavailable", function ()
		local host = fresh_host();
		local m, ok, err = load_shim({ host = host, storage = {} });
		assert.is_true(ok, err);
		target_online(m, "a");
		presence_from(m, U1, "subscribe");
		clear_sent(m);
		assert.is_function(m.global_hooks["server-stopping"]);
		m.global_hooks["server-stopping"]({});
		assert.are.same({ presence_xml(host, U1, "unavailable") }, sent_to(m, U1));
	end);

	it("a reload with another target_address tells subscribers the service is unavailable", function ()
		-- README: subscribers "are told whenever the availability changes". The old
		-- target's resource was online (told: available); the new target has none.
		local storage = {};
		local host = fresh_host();
		local m1, ok, err = load_shim({ host = host, storage = storage });
		assert.is_true(ok, err);
		target_online(m1, "a");
		presence_from(m1, U1, "subscribe");
		assert.are.same({ presence_xml(host, U1, "subscribed"), presence_xml(host, U1, nil) }, sent_to(m1, U1));
		-- the reload: Prosody saves the old instance's data and restores it into the new one
		local data = m1.save();
		local m2;
		m2, ok, err = load_shim({ host = host, storage = storage,
			options = { target_address = "other@example.org" } });
		assert.is_true(ok, err);
		assert.are.same({}, sent_to(m2, U1), "nothing before restore");
		m2.restore(data);
		assert.are.same({ presence_xml(host, U1, "unavailable") }, sent_to(m2, U1));
	end);
end);

describe("each switch off: the original's answers", function ()
	local function load_with(switches)
		local options = { target_address = TARGET };
		for k, v in pairs(switches) do options[k] = v; end
		local storage = {};
		local m, ok, err = load_shim({ options = options, storage = storage });
		assert.is_true(ok, err);
		clear_sent(m);
		target_online(m, "a");
		return m, storage;
	end

	for _, off in ipairs({ false, "false", 0 }) do
		local shown = type(off) == "string" and ("%q"):format(off) or tostring(off);
		it(("client_proxy_messages = %s: a message gets feature-not-implemented, both ways"):format(shown), function ()
			local m = load_with({ client_proxy_messages = off });
			local msg = st.message({ type = "chat", id = "m1", to = m.host, from = USER }):text_tag("body", "hi");
			assert.is_true(deliver(m, msg));
			assert.are.equal(1, #m.sent);
			assert_error_reply(m.sent[1], USER, m.host, "m1", "cancel", "feature-not-implemented");
			assert.are.equal("message", m.sent[1].name);
			-- from the target to a user's JAT address too
			assert.is_true(deliver(m, user_message(TARGET .. "/a", m.host .. "/" .. USER, "m2", "hi")));
			assert.are.equal(2, #m.sent);
			assert_error_reply(m.sent[2], TARGET .. "/a", m.host .. "/" .. USER, "m2", "cancel", "feature-not-implemented");
		end);
	end

	it("client_proxy_presence = false: presence from a user gets bad-request, nothing is stored", function ()
		local m, storage = load_with({ client_proxy_presence = false });
		assert.is_true(deliver(m, st.presence({ type = "subscribe", to = m.host, from = "user@example.org" })));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], "user@example.org", m.host, nil, "cancel", "bad-request");
		assert.are.equal("presence", m.sent[1].name);
		assert.is_true(deliver(m, st.presence({ type = "probe", to = m.host, from = "user@example.org" })));
		assert.are.equal(2, #m.sent);
		assert_error_reply(m.sent[2], "user@example.org", m.host, nil, "cancel", "bad-request");
		assert.are.same({}, store_sets(m));
		assert.is_nil(stored(storage));
	end);

	it("client_proxy_outbound = false: an iq get to a JAT address gets feature-not-implemented", function ()
		local m = load_with({ client_proxy_outbound = false });
		assert.is_true(deliver(m, outbound_iq(m, "a", "get", "q1", "x")));
		assert.are.equal(1, #m.sent);
		assert_error_reply(m.sent[1], TARGET .. "/a", m.host .. "/" .. USER, "q1", "cancel", "feature-not-implemented");
		assert.are.equal("iq", m.sent[1].name);
	end);

	it("a switch turned off leaves the others on", function ()
		local m = load_with({ client_proxy_messages = false });
		assert.is_true(deliver(m, outbound_iq(m, "a", "get", "q1", "x")));
		assert.are.equal(USER, m.sent[1].attr.to);
		assert.matches("^cp%x+$", m.sent[1].attr.id);
		assert.is_true(presence_from(m, "user@example.org", "subscribe"));
		assert.are.equal("subscribed", m.sent[2].attr.type);
	end);

	it("switches on unless turned off: true, \"true\", 1 or nothing", function ()
		for _, on in ipairs({ true, "true", 1 }) do
			local m = load_with({ client_proxy_messages = on, client_proxy_outbound = on, client_proxy_presence = on });
			deliver(m, user_message(USER, m.host, "m1", "hi"));
			assert.are.equal(TARGET .. "/a", m.sent[1].attr.to, tostring(on));
		end
	end);
end);

describe("the fake module itself", function ()
	it("get_option_boolean follows Prosody 0.12: true/false, nil -> the default, junk -> nil and an error line", function ()
		local m = fake_module("fake.example", { options = { t = true, ts = "true", one = 1, f = false, fs = "false",
			zero = 0, list = { false, true }, junk = "yes" } });
		assert.are.same({ true, true, true, false, false, false, false },
			{ m:get_option_boolean("t"), m:get_option_boolean("ts"), m:get_option_boolean("one", false),
				m:get_option_boolean("f", true), m:get_option_boolean("fs"), m:get_option_boolean("zero", true),
				m:get_option_boolean("list", true) });
		assert.is_nil(m:get_option_boolean("unset"));
		assert.is_true(m:get_option_boolean("unset", true));
		assert.is_false(m:get_option_boolean("unset", false));
		assert.is_nil(logged(m, "error", ""));
		assert.is_nil(m:get_option_boolean("junk", true));
		assert.is_string(logged(m, "error", "'junk' not understood"));
	end);

	it("open_store keeps copies, forgets empty data, records sets, and survives into another module on the same storage", function ()
		local storage = {};
		local m1 = fake_module("fake.example", { storage = storage });
		local s1 = m1:open_store("things");
		assert.is_nil(s1:get(nil));
		local data = { a = true };
		assert.is_true(s1:set(nil, data));
		data.b = true; -- changing the table after set() changes nothing stored
		assert.are.same({ a = true }, s1:get(nil));
		local got = s1:get(nil);
		got.c = true; -- nor does changing what get() handed out
		assert.are.same({ a = true }, s1:get(nil));
		s1:set("someone", { x = 1 });
		assert.are.same({ { nil, { a = true } }, { "someone", { x = 1 } } }, (function ()
			local out = {};
			for _, call in ipairs(m1.store_calls) do
				if call.op == "set" then table.insert(out, { call.user, call.data }); end
			end
			return out;
		end)());
		-- another module on the same storage (a restart) sees it; another store does not
		local m2 = fake_module("fake.example", { storage = storage });
		assert.are.same({ a = true }, m2:open_store("things"):get(nil));
		assert.are.same({ x = 1 }, m2:open_store("things"):get("someone"));
		assert.is_nil(m2:open_store("other"):get(nil));
		m2:open_store("things"):set(nil, {});
		assert.is_nil(s1:get(nil));
	end);
end);

describe("options through Prosody 13's getters, and 0.12's", function ()
	-- Forwards a get, then moves the clock: true when it timed out by `after` seconds and
	-- not by `before`.
	local function times_out_between(m, before, after)
		m.sent = {};
		target_online(m, "a");
		deliver(m, request(m, USER, "clocked"));
		assert.are.equal(1, #m.sent);
		local saved = clock.offset;
		clock.offset = saved + before;
		m.timers[1].callback();
		local early = #m.sent;
		clock.offset = saved + after;
		m.timers[1].callback();
		clock.offset = saved;
		return early == 1 and #m.sent == 2 and m.sent[2].attr.type == "error";
	end

	it("Prosody 13: client_proxy_timeout may be a period such as \"5 seconds\" or \"2min\"", function ()
		for text, seconds in pairs({ ["5 seconds"] = 5, ["2min"] = 120, ["1 hour"] = 3600 }) do
			local m, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_timeout = text } });
			assert.is_true(ok, err);
			assert.is_true(times_out_between(m, seconds - 1, seconds + 1), text);
		end
	end);

	it("Prosody 13: a number of seconds still works, and a bad period names the option", function ()
		local m, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_timeout = 7 } });
		assert.is_true(ok, err);
		assert.is_true(times_out_between(m, 6, 8));
		local bad;
		bad, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_timeout = "soon" } });
		assert.is_false(ok);
		assert.matches("^client_proxy_timeout: \"soon\" is not a number of seconds nor a period", err);
		assert.is_string(logged(bad, "error", "client_proxy_timeout"));
		_, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_timeout = "never" } });
		assert.is_false(ok); -- a request must time out some time
		assert.matches("^client_proxy_timeout: ", err);
	end);

	it("Prosody 0.12: client_proxy_timeout is a number (also as a string); a period is refused, naming the option", function ()
		local m, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_timeout = "9" } });
		assert.is_true(ok, err);
		assert.is_nil(m.get_option_period);
		assert.is_true(times_out_between(m, 8, 10));
		_, ok, err = load_shim({ options = { target_address = TARGET, client_proxy_timeout = "5 seconds" } });
		assert.is_false(ok);
		assert.are.equal("client_proxy_timeout: \"5 seconds\" is not a number of seconds", err);
	end);

	it("Prosody 13: the strategy and JAT format go through get_option_enum, which lists the allowed values", function ()
		local m, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET,
			client_proxy_strategy = "round_robin", client_proxy_jat = "base64" } });
		assert.is_true(ok, err);
		local status = m:shared("/*/client_proxy/shell_hosts");
		assert.is_function(status[m.host]);
		local lines = {};
		status[m.host](function (line) lines[#lines + 1] = line; end);
		assert.matches(m.host, lines[1], 1, true);
		-- a bad value: Prosody's own line with the allowed values, then the core's refusal
		local bad;
		bad, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_strategy = "fastest" } });
		assert.is_false(ok);
		assert.matches("^client_proxy_strategy: ", err);
		local line = logged(bad, "error", "not in set of allowed values");
		assert.is_string(line);
		assert.matches("least_pending", line, 1, true);
		assert.matches("sticky", line, 1, true);
		bad, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_jat = "rot13" } });
		assert.is_false(ok);
		assert.matches("^client_proxy_jat: ", err);
		assert.matches("base64", logged(bad, "error", "not in set of allowed values"), 1, true);
	end);

	it("Prosody 13: round_robin read through get_option_enum really alternates", function ()
		local m, ok, err = load_shim({ version = "13.0.1", options = { target_address = TARGET, client_proxy_strategy = "round_robin" } });
		assert.is_true(ok, err);
		target_online(m, "a");
		target_online(m, "b");
		m.sent = {};
		for i = 1, 4 do deliver(m, request(m, USER, "rr" .. i)); end
		local to = {};
		for i = 1, 4 do to[i] = m.sent[i].attr.to; end
		assert.are_not.equal(to[1], to[2]);
		assert.are.equal(to[1], to[3]);
		assert.are.equal(to[2], to[4]);
	end);

	it("Prosody 13: the subscription waits for on_ready, and is sent at once on a running server", function ()
		local m, ok, err = load_shim({ version = "13.0.1", started = false });
		assert.is_true(ok, err);
		assert.are.equal(0, #m.sent);
		assert.is_nil(m.global_hooks["server-started"]); -- on_ready, not the event
		assert.are.equal(2, #m.ready_waiting); -- the subscription and the shell command
		server_started(m);
		assert.are.equal(1, #m.sent);
		assert.are.equal("subscribe", m.sent[1].attr.type);
		m, ok, err = load_shim({ version = "13.0.1" });
		assert.is_true(ok, err);
		assert.are.equal(0, #m.ready_waiting);
		assert.are.equal(1, #m.sent);
		assert.are.equal("subscribe", m.sent[1].attr.type);
	end);
end);

describe("finding the native library", function ()
	local lua_version = _VERSION:match("%d+%.%d+");
	local tree;
	setup(function ()
		-- a luarocks tree as `luarocks make --tree` leaves it: the shim in share/lua/5.x/,
		-- the library in lib/lua/5.x/
		tree = make_temp_dir();
		assert(os.execute(("mkdir -p %s %s"):format(sh_quote(tree .. "/share/lua/" .. lua_version), sh_quote(tree .. "/lib/lua/" .. lua_version))));
		assert(os.execute("ln -s " .. sh_quote(SO) .. " " .. sh_quote(tree .. "/lib/lua/" .. lua_version .. "/client_proxy.so")));
	end);
	teardown(function ()
		if tree and tree:match("^/tmp/") then os.execute("rm -rf " .. sh_quote(tree)); end
	end);

	it("next to the shim (make install)", function ()
		local m, ok, err = load_shim();
		assert.is_true(ok, err);
		assert.is_string(logged(m, "info", plugin_dir:gsub("%p", "%%%0") .. "/client_proxy%.so"));
	end);

	it("in the luarocks tree the shim was installed into (luarocks make, prosodyctl install)", function ()
		local m, ok, err = load_shim({ directory = tree .. "/share/lua/" .. lua_version });
		assert.is_true(ok, err);
		assert.is_string(logged(m, "info", (tree .. "/lib/lua/" .. lua_version):gsub("%p", "%%%0") .. "/client_proxy%.so"));
	end);

	it("in the tree of a rock prosodyctl installed (module:get_directory() is the rock's directory)", function ()
		local rock_dir = tree .. "/lib/luarocks/rocks-" .. lua_version .. "/mod_client_proxy/dev-1";
		local m, ok, err = load_shim({ directory = rock_dir });
		assert.is_true(ok, err);
		assert.is_string(logged(m, "info", (tree .. "/lib/lua/" .. lua_version):gsub("%p", "%%%0") .. "/client_proxy%.so"));
	end);

	it("on package.cpath", function ()
		local saved = package.cpath;
		package.cpath = "/nonexistent/?.so;" .. tree .. "/lib/lua/" .. lua_version .. "/?.so";
		local m, ok, err = load_shim({ directory = empty_dir });
		package.cpath = saved;
		assert.is_true(ok, err);
		assert.is_string(logged(m, "info", "/lib/lua/" .. lua_version:gsub("%p", "%%%0") .. "/client_proxy%.so"));
	end);

	it("says where it looked when it is nowhere", function ()
		local saved = package.cpath;
		package.cpath = "/nonexistent/?.so";
		local _, ok, err = load_shim({ directory = empty_dir });
		package.cpath = saved;
		assert.is_false(ok);
		assert.matches("cannot find the native library client_proxy.so", err, 1, true);
		assert.matches(empty_dir .. "/client_proxy.so, /nonexistent/client_proxy.so", err, 1, true);
	end);

	-- make test-lua sets CLIENT_PROXY_FOREIGN_SO to a build for another Lua: the 5.4 one
	-- under the others, the 5.1 one (when built) under 5.4.
	it("a library built for another Lua: names the make LUA= to use", function ()
		local foreign = os.getenv("CLIENT_PROXY_FOREIGN_SO");
		if not foreign or foreign == "" then
			pending("CLIENT_PROXY_FOREIGN_SO is not set (make test-lua sets it)");
			return;
		end
		local f = io.open(foreign, "rb");
		assert(f, foreign .. " not found");
		f:close();
		local dir = make_temp_dir();
		assert(os.execute("ln -s " .. sh_quote(foreign) .. " " .. sh_quote(dir .. "/client_proxy.so")));
		local _, ok, err = load_shim({ directory = dir });
		os.execute("rm -rf " .. sh_quote(dir));
		assert.is_false(ok);
		local wanted = rawget(_G, "jit") and "jit" or _VERSION:match("%d+%.%d+");
		assert.matches("it was built for another Lua than this Prosody's " .. _VERSION
			.. ": rebuild with make LUA=" .. wanted, err, 1, true);
		assert.matches("undefined symbol", err, 1, true);
	end);

	it("says which file it could not load, and why", function ()
		local dir = make_temp_dir();
		local f = assert(io.open(dir .. "/client_proxy.so", "wb"));
		f:write("not a shared object\n");
		f:close();
		local _, ok, err = load_shim({ directory = dir });
		os.execute("rm -rf " .. sh_quote(dir));
		assert.is_false(ok);
		assert.matches("cannot load the native library " .. dir .. "/client_proxy.so", err, 1, true);
	end);
end);
