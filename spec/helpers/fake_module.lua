-- One fake Prosody for the specs and bench/shim_bench.lua: a `module` object with the
-- parts of Prosody's module API (0.12, and 13 with api13) that the shim and its
-- libraries use, recording what they do, and a loader that runs lua/mod_client_proxy.lua
-- (or one lib file) in a module environment as Prosody does.
--
--   local fake = require "helpers.fake_module"
--   local m, ok, err = fake.load{ host =, options =, ... }    -- the shim; see fake.new
--   fake.deliver(m, stanza)          -- to the handler of the event Prosody would fire
--   fake.fire(m, "server-stopping")  -- global (and host) event handlers
--   fake.reload(m) -> m2             -- module.save, unload, load again, module.restore
--
-- Recorded on m: hooks { event, handler, priority, host (the module's, or another's through
-- module:context(host):hook) }, timers { delay, callback }, logs { level, text }, sent
-- (copies of the stanzas, as they were when sent), metrics (name -> family;
-- family.values[label] = value), storage (store -> { [user or ""] = data }), store_calls,
-- shared_tables, items (key -> list), global_items, status_calls.

local st = require "util.stanza";
local jid_split = require "util.jid".split;

local fake = {};

-- The shim under test (CLIENT_PROXY_SHIM: another copy); its lib files are beside it.
local SHIM = os.getenv("CLIENT_PROXY_SHIM");
if SHIM == nil or SHIM == "" then SHIM = "lua/mod_client_proxy.lua"; end
fake.SHIM, fake.LIB_DIR = SHIM, SHIM:match("^(.*)/[^/]*$") or ".";

local function read_line(command)
	local p = assert(io.popen(command));
	local line = p:read("*l"); -- "*l": Lua 5.1 and 5.2 know no "l"
	p:close();
	return line;
end

function fake.sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'"; end
function fake.temp_dir()
	local dir = read_line("mktemp -d");
	assert(dir and dir:match("^/tmp/"), "mktemp -d failed");
	return dir;
end
function fake.remove_dir(dir)
	if dir and dir:match("^/tmp/") then os.execute("rm -rf " .. fake.sh_quote(dir)); end
end

-- The native library: CLIENT_PROXY_SO, else target/release/libclient_proxy.so, absolute.
fake.SO = os.getenv("CLIENT_PROXY_SO");
if fake.SO == nil or fake.SO == "" then fake.SO = "./target/release/libclient_proxy.so"; end
if fake.SO:sub(1, 1) ~= "/" then fake.SO = read_line("pwd") .. "/" .. fake.SO:gsub("^%./", ""); end

-- A directory with client_proxy.so in it (a symlink to fake.SO), as `make install` leaves
-- it: the default module:get_directory(). Made once per process.
local plugin_dir;
function fake.plugin_dir()
	if not plugin_dir then
		plugin_dir = fake.temp_dir();
		assert(os.execute("ln -s " .. fake.sh_quote(fake.SO) .. " " .. fake.sh_quote(plugin_dir .. "/client_proxy.so")));
	end
	return plugin_dir;
end

local function deep_copy(v)
	if type(v) ~= "table" then return v; end
	local out = {};
	for k, x in pairs(v) do out[deep_copy(k)] = deep_copy(x); end
	return out;
end

-- A metric family as module:metric returns it (Prosody has set the host label already).
local function metric_family(type_, name, label_keys)
	local family = { type = type_, name = name, label_keys = label_keys, values = {} };
	function family:with_labels(...)
		local n = select("#", ...);
		assert(n == #label_keys, ("%s: %d labels for %d label keys"):format(name, n, #label_keys));
		local labels = {};
		for i = 1, n do
			labels[i] = select(i, ...);
			assert(type(labels[i]) == "string", name .. ": a label is a " .. type(labels[i]));
		end
		local key = table.concat(labels, "\0");
		return {
			set = function (_, v) assert(type(v) == "number", name .. ": set " .. tostring(v)); family.values[key] = v; end;
			add = function (_, v)
				assert(type(v) == "number" and (type_ ~= "counter" or v >= 0), name .. ": add " .. tostring(v));
				family.values[key] = (family.values[key] or 0) + v;
			end;
		};
	end
	return family;
end

local status_priorities = { error = 3, warn = 2, info = 1, core = 0 };
local period_units = { s = 1, min = 60, h = 3600, d = 86400, w = 604800 };

-- A module object. opts: host, options (the config), host_type, directory, path,
-- api13 (Prosody 13's get_option_period/enum and on_ready), prosody (the global),
-- shared, storage (to share them between loads), libs (name -> function returning what
-- module:require gives instead of the lib file: a fake native core), reloading,
-- saved_state, require (name -> value, for the environment's require).
function fake.new(opts)
	local m = {
		host = opts.host or "proxy.example", name = "client_proxy", path = opts.path,
		options = opts.options or {}, reloading = opts.reloading, saved_state = opts.saved_state,
		hooks = {}, timers = {}, logs = {}, sent = {}, metrics = {}, items = {}, global_items = {},
		status_calls = {}, store_calls = {}, ready_waiting = {}, opts = opts,
		storage = opts.storage or {}, shared_tables = opts.shared or {},
	};
	local prosody = opts.prosody or { start_time = os.time(), version = "0.12.3" };
	m.prosody = prosody;
	m.environment = setmetatable({ module = m, prosody = prosody, require = function (name)
		if opts.require and opts.require[name] ~= nil then return opts.require[name]; end
		return require(name);
	end }, { __index = _G });

	function m:get_host_type() return opts.host_type or "component"; end
	function m:get_directory() return opts.directory or fake.plugin_dir(); end
	function m:get_host() return self.host; end
	function m:get_option_string(name, default) return self:get_option_scalar(name, default); end
	function m:get_option(name, default)
		local v = self.options[name];
		if v == nil then return default; end
		return v;
	end
	-- As Prosody: the value (the default when nil); of a list, the first item.
	function m:get_option_scalar(name, default)
		local v = self.options[name];
		if v == nil then v = default; end
		if type(v) == "table" then v = v[1]; end
		return v;
	end
	-- As Prosody: nil, a copy of a list, or any other value as a one-item list.
	function m:get_option_array(name)
		local v = self.options[name];
		if v == nil then return nil; end
		if type(v) ~= "table" then return { v }; end
		local copy = {};
		for i, x in ipairs(v) do copy[i] = x; end
		return copy;
	end
	if opts.api13 then
		-- As Prosody 13 (util.human.io.parse_duration, fewer units): nil and an error
		-- line for what is not a period.
		function m:get_option_period(name)
			local v = self:get_option_scalar(name);
			if type(v) == "number" then return v; end
			local n, unit = tostring(v):lower():match("^(%d+)%s*(%a*)$");
			local seconds = n and period_units[unit:match("^min") and "min" or unit:sub(1, 1)];
			if not seconds then
				self:log("error", "Config option '%s' not understood, expecting a period (e.g. \"2 days\")", name);
				return nil;
			end
			return tonumber(n) * seconds;
		end
		-- As Prosody 13: the value (the default when nil); an error line when not allowed.
		function m:get_option_enum(name, default, ...)
			local v = self:get_option_scalar(name, default);
			local allowed = {};
			if default ~= nil then allowed[default] = true; end
			for _, x in ipairs({ ... }) do allowed[x] = true; end
			if v ~= nil and not allowed[v] then
				local names = {};
				for x in pairs(allowed) do names[#names + 1] = tostring(x); end
				table.sort(names);
				self:log("error", "Config option '%s' not in set of allowed values (one of: %s)", name, table.concat(names, ", "));
			end
			return v;
		end
		-- As Prosody 13: f once the server has started, at once when it has.
		function m:on_ready(f)
			if prosody.start_time then f(); else table.insert(self.ready_waiting, f); end
		end
	end
	-- As Prosody's keyval stores: copies in and out; an empty table is stored as nothing.
	function m:open_store(name)
		local backing = self.storage[name] or {};
		self.storage[name] = backing;
		local module_self = self;
		return {
			get = function (_, user)
				table.insert(module_self.store_calls, { store = name, op = "get", user = user });
				return deep_copy(backing[user or ""]);
			end;
			set = function (_, user, data)
				assert(data == nil or type(data) == "table", "store:set: data is a " .. type(data));
				if data ~= nil and next(data) == nil then data = nil; end
				backing[user or ""] = deep_copy(data);
				table.insert(module_self.store_calls, { store = name, op = "set", user = user, data = deep_copy(data) });
				return true;
			end;
		};
	end
	function m:hook(event, handler, priority)
		assert(type(handler) == "function", "hook: handler");
		table.insert(self.hooks, { event = event, handler = handler, priority = priority, host = self.host });
	end
	function m:hook_global(event, handler, priority)
		assert(type(handler) == "function", "hook_global: handler");
		table.insert(self.hooks, { event = event, handler = handler, priority = priority, global = true });
	end
	function m:metric(type_, name, unit, description, label_keys)
		assert(({ counter = true, gauge = true })[type_], "metric type " .. tostring(type_));
		assert(type(unit) == "string" and type(description) == "string", "metric: unit, description");
		assert(self.metrics[name] == nil, "metric " .. name .. " defined twice");
		self.metrics[name] = metric_family(type_, name, label_keys or {});
		return self.metrics[name];
	end
	function m:shared(path)
		self.shared_tables[path] = self.shared_tables[path] or {};
		return self.shared_tables[path];
	end
	function m:add_item(key, item)
		self.items[key] = self.items[key] or {};
		table.insert(self.items[key], item);
		if self.host == "*" then table.insert(self.global_items, { key = key, item = item }); end
	end
	-- As Prosody: the module seen from another host ("*": the global context).
	function m:context(host)
		return setmetatable({ host = host }, { __index = self });
	end
	-- As Prosody 0.12: an error status stays against anything but another error, unless
	-- override is true.
	function m:set_status(status_type, message, override)
		table.insert(self.status_calls, { type = status_type, message = message, override = override });
		local priority = assert(status_priorities[status_type], "set_status: type " .. tostring(status_type));
		if (status_priorities[self.status_type] or 0) >= 3 and priority < 3 and override ~= true then return; end
		self.status_type, self.status_message = status_type, message;
	end
	function m:add_timer(delay, callback)
		assert(type(delay) == "number" and type(callback) == "function", "add_timer");
		table.insert(self.timers, { delay = delay, callback = callback });
	end
	function m:log(level, fmt, ...)
		local ok, text = pcall(string.format, fmt, ...);
		assert(ok, "log format: " .. tostring(text));
		table.insert(self.logs, { level = level, text = text });
	end
	function m:send(stanza)
		assert(st.is_stanza(stanza), "module:send: not a stanza: " .. tostring(stanza));
		table.insert(self.sent, st.clone(stanza));
		return true;
	end
	-- As Prosody: runs <name>.lib.lua (beside the shim) in the module's environment.
	function m:require(name)
		if opts.libs and opts.libs[name] then return opts.libs[name](); end
		return fake.run(fake.LIB_DIR .. "/" .. name .. ".lib.lua", self);
	end
	return m;
end

-- Runs a file in m's environment; returns what it returns.
function fake.run(path, m)
	local chunk = assert(loadfile(path, "t", m.environment));
	if setfenv then setfenv(chunk, m.environment); end -- Lua 5.1's loadfile takes no env
	return chunk();
end

-- Loads the shim as Prosody would; returns m, true or m, false, the error.
function fake.load(opts)
	local m = fake.new(opts or {});
	local ok, err = pcall(fake.run, fake.SHIM, m);
	m.reloading, m.saved_state = nil, nil; -- as Prosody, before module.restore
	if not ok then return m, false, tostring(err); end
	return m, true;
end

-- The handlers hooked on an event (host and global), in hook order.
function fake.handlers(m, event)
	local out = {};
	for _, h in ipairs(m.hooks) do
		if h.event == event then out[#out + 1] = h.handler; end
	end
	return out;
end

function fake.fire(m, event, data)
	for _, handler in ipairs(fake.handlers(m, event)) do handler(data or {}); end
end

-- The server has started: start_time set, server-started fired, on_ready callbacks run.
function fake.server_started(m)
	m.prosody.start_time = m.prosody.start_time or os.time();
	fake.fire(m, "server-started");
	local waiting = m.ready_waiting;
	m.ready_waiting = {};
	for _, f in ipairs(waiting) do f(); end
end

-- Delivers a stanza as Prosody would: to the handler of the event its `to` fires.
function fake.deliver(m, stanza)
	local node, _, resource = jid_split(stanza.attr.to);
	local event = stanza.name .. "/" .. (node and (resource and "full" or "bare") or "host");
	local handler = assert(fake.handlers(m, event)[1], "nothing hooked on " .. event);
	return handler({ stanza = stanza, origin = { type = "component", host = m.host } });
end

-- module:unload as Prosody does it (m.reloading says whether it is a reload).
function fake.unload(m)
	if m.unload then m.unload(); end
	m.hooks, m.timers = {}, {};
end

-- module:reload as Prosody does it: save, unload (reloading), load again with the same
-- options (unless opts says), storage and shared tables, restore. Returns m2, ok, err.
function fake.reload(m, opts)
	local saved = m.save and m.save() or true;
	m.reloading = true;
	fake.unload(m);
	local merged = {};
	for k, v in pairs(m.opts) do merged[k] = v; end
	for k, v in pairs(opts or {}) do merged[k] = v; end
	opts = merged;
	opts.host, opts.prosody = m.host, m.prosody;
	opts.storage, opts.shared, opts.reloading = m.storage, m.shared_tables, true;
	opts.saved_state = saved ~= true and saved or nil;
	local m2, ok, err = fake.load(opts);
	if ok and m2.restore then m2.restore(saved ~= true and saved or {}); end
	return m2, ok, err;
end

-- The first log line of level matching a plain-text needle.
function fake.logged(m, level, needle)
	for _, line in ipairs(m.logs) do
		if line.level == level and line.text:find(needle, 1, true) then return line.text; end
	end
end

return fake;
