-- Case 6: POST /api/tokens/holds (10 tokens), then POST .../holds/{holdId}/capture
-- (7 tokens; the other 3 are released). The holdId is read from the hold's answer;
-- the thread's next request captures it. One operation = one captured pair.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

HOLD_TOKENS, CAPTURE_TOKENS = 10, 7
local users
local placed = {}

function init(args)
  users = tonumber(bench_options(args).users or "10000")
end

function request()
  bench_sent = bench_sent + 1
  local hold_id = table.remove(placed)
  if hold_id then
    return wrk.format("POST", "/api/tokens/holds/" .. hold_id .. "/capture", nil,
      '{"amount":' .. CAPTURE_TOKENS .. '}')
  end
  return wrk.format("POST", "/api/tokens/holds", nil,
    '{"userId":"' .. bench_random_user(users) .. '","amount":' .. HOLD_TOKENS ..
    ',"ttlSeconds":86400}')
end

function response(status, headers, body)
  if not bench_count(status) then return end
  if string.find(body, '"status":"captured"', 1, true) then
    bench_ops = bench_ops + 1
    return
  end
  local hold_id = string.match(body, '"holdId":"(hold_%x+)"')
  if hold_id then table.insert(placed, hold_id) end
end
