-- B2: GET <prefix><id> with id uniform in 1..25 (the seeded catalog).
-- Usage: wrk ... -s random_id.lua <url> -- <path prefix>
-- e.g. -- /products/get/   (Plamatio)   or   -- "/products?id=eq."   (PostgREST)
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local threads = 0
local prefix = "/products/get/"

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  if args[1] then prefix = args[1] end
  math.randomseed(os.time() * 1000 + (seed or 0))
end

function request()
  return wrk.format(nil, prefix .. math.random(1, 25))
end
