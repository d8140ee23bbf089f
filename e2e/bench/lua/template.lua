-- S1: GET of a path template with a random number drawn per request, uniform in LO..HI.
-- Usage: wrk ... -s template.lua <url> -- <template> <lo> <hi>
-- In the template, {n} is the number and {x:PREFIX} the hex cursor of PREFIX .. number (the API's
-- `?after=` encoding), e.g. "/products/all?limit=20&after={x:}" or "/users/all?limit=20&after={x:bench_user_}".
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local threads = 0
local template, lo, hi = "/products/get/{n}", 1, 25

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  if args[1] then template = args[1] end
  if args[2] then lo = tonumber(args[2]) end
  if args[3] then hi = tonumber(args[3]) end
  math.randomseed(os.time() * 1000 + (seed or 0))
end

local function hex(text)
  return (text:gsub(".", function(c) return string.format("%02x", string.byte(c)) end))
end

function request()
  local n = math.random(lo, hi)
  local path = template:gsub("{n}", tostring(n)):gsub("{x:([^}]*)}", function(prefix) return hex(prefix .. n) end)
  return wrk.format(nil, path)
end
