-- Finalizers on demand, for spec/hostile_spec.lua: garbage whose finalizers run while a
-- call into the native library is under way, and act then (re-enter the library, raise).
--
--   local gc = require "helpers.gc_window"
--   gc.finalizable(f)                 -- an object, garbage at once, whose finalizer is f
--   local r, during = gc.window(round, act, call)
--       -- garbage with finalizers, the collector running at every allocation check, then
--       -- r = { call() } (call returns pcall's results: at most 7 values are kept), or nil
--       -- when the round was void (a finalizer raised before call had returned);
--       -- during: how many finalizers ran while call ran (act ran in each)
--   gc.report(label, counts)          -- with HOSTILE_VERBOSE=1: counts on stderr
--
-- Lua 5.1 and LuaJIT have no __gc on tables: there a finalizable object is a
-- newproxy(true) userdata; 5.2+ (which have no newproxy): a table with __gc.
-- Errors in finalizers reach the allocation that ran them on 5.1-5.3 and LuaJIT (5.2 and
-- 5.3 as "error in __gc metamethod"); 5.4 turns them into warnings.

local gc = {};

local newproxy = rawget(_G, "newproxy");
local finalizable;
if newproxy then
	finalizable = function (f)
		local u = newproxy(true);
		getmetatable(u).__gc = f;
		return u;
	end
else
	finalizable = function (f) return setmetatable({}, { __gc = f }); end
end
gc.finalizable = finalizable;

-- Finalizers act only while armed; `inside` is true while the call under test runs;
-- `ran` counts this round's finalizers (armed or not).
local armed, inside, during, ran, generation, action = false, false, 0, 0, 0, nil;

local function spawn(n)
	local g = generation;
	for _ = 1, n do
		finalizable(function ()
			if g == generation then ran = ran + 1; end
			if not armed then return; end
			if inside then during = during + 1; end
			action();
		end);
	end
end

-- The collector with no pause (a new cycle at once) and a small step: it then steps at
-- nearly every allocation check, running a few finalizers each time while a backlog
-- waits. Returns a function restoring it. (5.4 counts its step in bytes, 2^13 by default:
-- made 2^1 here.)
local is_54 = _VERSION == "Lua 5.4";
local function eager(mul)
	local pause = collectgarbage("setpause", 0);
	local old_mul = collectgarbage("setstepmul", mul);
	if is_54 then collectgarbage("incremental", 0, 0, 1); end
	return function ()
		collectgarbage("setpause", pause);
		collectgarbage("setstepmul", old_mul);
		if is_54 then collectgarbage("incremental", 0, 0, 13); end
	end
end

local r1, r2, r3, r4, r5, r6, r7, done;
-- The step multiplier during the call: a large one makes the next step come after a few
-- bytes (5.1-5.3 and LuaJIT set the debt after a step to about step size / multiplier),
-- so the call's first allocations run the waiting finalizers (measured per Lua: the
-- finalizers run inside a call that makes 50 tables, out of 60 rounds).
local post_mul = ({ ["Lua 5.1"] = 1000, ["Lua 5.2"] = 100000, ["Lua 5.3"] = 10000 })[_VERSION];
if rawget(_G, "jit") then post_mul = 100000; end
function gc.window(round, act, call)
	generation = generation + 1;
	action, during, ran, done = act, 0, 0, false;
	local restore = eager(100 + (round % 4) * 100);
	pcall(function ()
		spawn(60 + (round % 7) * 20);
		-- Drive the collector until the first of them is finalized: the others wait in the
		-- collector's list of objects to finalize, run a few at a time by the next steps,
		-- which the call's allocations make.
		for _ = 1, 1000000 do
			if ran > 0 then break; end
			collectgarbage("step", 0);
		end
		if post_mul then collectgarbage("setstepmul", post_mul); end
		armed, inside = true, true;
		-- No allocation between the call's return and disarming: assignments to upvalues.
		r1, r2, r3, r4, r5, r6, r7 = call();
		inside, armed, done = false, false, true;
	end);
	inside, armed = false, false;
	restore();
	if not done then return nil, during; end
	local r = { n = 7, r1, r2, r3, r4, r5, r6, r7 };
	r1, r2, r3, r4, r5, r6, r7 = nil, nil, nil, nil, nil, nil, nil;
	return r, during;
end

function gc.report(label, counts)
	if os.getenv("HOSTILE_VERBOSE") ~= "1" then return; end
	local names = {};
	for name in pairs(counts) do names[#names + 1] = name; end
	table.sort(names);
	local parts = {};
	for _, name in ipairs(names) do parts[#parts + 1] = name .. "=" .. counts[name]; end
	io.stderr:write(("\n[hostile] %s (%s): finalizers during the call: %s\n"):format(label, _VERSION
		.. (rawget(_G, "jit") and " (LuaJIT)" or ""), table.concat(parts, " ")));
end

return gc;
