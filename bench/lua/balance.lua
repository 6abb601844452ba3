-- Case 3: GET /api/tokens/balance/{user}, a uniformly random user per request.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local users

function init(args)
  users = tonumber(bench_options(args).users or "10000")
end

function request()
  bench_sent = bench_sent + 1
  return wrk.format("GET", "/api/tokens/balance/" .. bench_random_user(users))
end

function response(status, headers, body)
  if bench_count(status) then bench_ops = bench_ops + 1 end
end
