-- The same request every time (GET of the URL given to wrk): cases 1 and 2.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

function response(status, headers, body)
  if bench_count(status) then bench_ops = bench_ops + 1 end
end
