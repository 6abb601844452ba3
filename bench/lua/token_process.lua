-- Case 7: POST /api/token-process/start, then /end for the same user (the feature
-- has a fixed rule; every bench user is on its plan). One operation = one end that
-- charged ("Token process completed").
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local users, feature
local started = {}

function init(args)
  local options = bench_options(args)
  users = tonumber(options.users or "10000")
  feature = options.feature or "bench-feature"
end

function request()
  bench_sent = bench_sent + 1
  local user = table.remove(started)
  if user then
    return wrk.format("POST", "/api/token-process/end", nil,
      '{"user_id":"' .. user .. '","feature_endpoint_id":"' .. feature ..
      '","input_token":100,"output_token":100}')
  end
  return wrk.format("POST", "/api/token-process/start", nil,
    '{"user_id":"' .. bench_random_user(users) .. '","feature_endpoint_id":"' .. feature .. '"}')
end

function response(status, headers, body)
  if not bench_count(status) then return end
  if string.find(body, '"message":"Token process completed"', 1, true) then
    bench_ops = bench_ops + 1
    return
  end
  if string.find(body, '"status":"access-able"', 1, true) then
    local user = string.match(body, '"user_id":"([^"]+)"')
    if user then table.insert(started, user) end
  end
end
