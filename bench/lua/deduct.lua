-- Cases 4 and 5: POST /api/tokens/deduct of 1 token, no referenceId.
-- users=N: a uniformly random user per request; user=ID: always that (hot) user.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local users, hot_user

function init(args)
  local options = bench_options(args)
  users = tonumber(options.users or "10000")
  hot_user = options.user
end

function request()
  bench_sent = bench_sent + 1
  local user = hot_user or bench_random_user(users)
  return wrk.format("POST", "/api/tokens/deduct", nil,
    '{"userId":"' .. user .. '","amount":1}')
end

function response(status, headers, body)
  if bench_count(status) then bench_ops = bench_ops + 1 end
end
