-- busted helper (see .busted): lets the specs run under every Debian Lua, not only 5.4.
--
-- The specs use Prosody's own Lua libraries from /usr/lib/prosody (util.stanza, util.jid),
-- so that the shim is tested against the real util.stanza. Those Lua files run under any
-- Lua, but they require Prosody's C modules (util/*.so), and Debian builds those for
-- Prosody's Lua only, 5.4: under 5.1, 5.2, 5.3 and LuaJIT they fail to load ("undefined
-- symbol: luaL_setfuncs" and the like). Under those Luas, this helper puts pure-Lua
-- stand-ins for the C modules the specs need into package.preload:
--
--   util.encodings  utf8.valid (used by util.stanza) and stringprep.nodeprep, nameprep and
--                   resourceprep (used by util.jid);
--   util.time       now and monotonic (the shim's clock; the specs wrap it).
--
-- Under Lua 5.4 nothing is replaced: the real C modules are used. The stand-ins cover what
-- the specs rely on, no more: the stringprep profiles are ASCII-only (they lowercase ASCII
-- letters in node and domain, refuse invalid UTF-8 and ASCII control characters, refuse
-- the characters nodeprep prohibits in a node, and leave other characters as they are,
-- without Unicode normalisation or case folding).

if _VERSION == "Lua 5.4" then
	return;
end

-- RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
local function utf8_valid(s)
	if type(s) ~= "string" then return false; end
	if not s:find("[\128-\255]") then return true; end
	local byte, i, n = string.byte, 1, #s;
	local function cont(j, lo, hi)
		local c = byte(s, j);
		return c ~= nil and c >= (lo or 0x80) and c <= (hi or 0xBF);
	end
	while i <= n do
		local c = byte(s, i);
		if c < 0x80 then
			i = i + 1;
		elseif c >= 0xC2 and c <= 0xDF then
			if not cont(i + 1) then return false; end
			i = i + 2;
		elseif c == 0xE0 or c == 0xED or (c >= 0xE1 and c <= 0xEF) then
			local lo, hi = 0x80, 0xBF;
			if c == 0xE0 then lo = 0xA0; elseif c == 0xED then hi = 0x9F; end
			if not (cont(i + 1, lo, hi) and cont(i + 2)) then return false; end
			i = i + 3;
		elseif c >= 0xF0 and c <= 0xF4 then
			local lo, hi = 0x80, 0xBF;
			if c == 0xF0 then lo = 0x90; elseif c == 0xF4 then hi = 0x8F; end
			if not (cont(i + 1, lo, hi) and cont(i + 2) and cont(i + 3)) then return false; end
			i = i + 4;
		else
			return false;
		end
	end
	return true;
end

-- A stringprep profile: nil for what it refuses (as Prosody's util.encodings does).
local function profile(lowercase, prohibited)
	return function (s)
		if type(s) ~= "string" or not utf8_valid(s) or s:find("[%z\1-\31\127]") then
			return nil;
		end
		if prohibited and s:find(prohibited) then return nil; end
		return lowercase and s:lower() or s;
	end
end

package.preload["util.encodings"] = function ()
	return {
		utf8 = { valid = utf8_valid };
		stringprep = {
			nodeprep = profile(true, "[ \"&'/:<>@]");
			nameprep = profile(true, nil);
			resourceprep = profile(false, nil);
		};
	};
end

package.preload["util.time"] = function ()
	-- lua-socket is packaged for every Debian Lua; os.time (whole seconds) otherwise.
	local has_socket, socket = pcall(require, "socket");
	local gettime = has_socket and socket.gettime or os.time;
	return {
		now = gettime;
		-- Not monotonic (the wall clock), which is all the specs need: they move the clock
		-- forward through their own offset.
		monotonic = gettime;
	};
end
