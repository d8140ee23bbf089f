-- B3: POST the JSON body given as the first script argument.
-- Usage: wrk ... -s post_json.lua <url> -- '<json>'
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  wrk.body = args[1]
end
