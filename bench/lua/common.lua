-- Shared by every bench script (loaded with dofile from the script's folder).
--
-- Each wrk thread has its own Lua state and counts, in globals:
--   bench_sent      requests built by request() (dynamic scripts only)
--   bench_answered  responses received
--   bench_ok        2xx responses (what the server acknowledged)
--   bench_non2xx    other responses
--   bench_ops       completed operations (a deduct; a hold+capture pair; a start+end pair)
-- done() sums them over the threads and prints one line, "BENCH_RESULT {json}",
-- with wrk's own totals and latency percentiles, for bench/run.py to read.

bench_sent, bench_answered, bench_ok, bench_non2xx, bench_ops = 0, 0, 0, 0, 0

local threads = {}

function setup(thread)
  thread:set("bench_thread_number", #threads + 1)
  table.insert(threads, thread)
end

-- "key=value" words after `--` on wrk's command line (args[0] is the URL).
function bench_options(args)
  local options = {}
  for _, word in pairs(args) do
    local key, value = string.match(word, "^([%w_]+)=(.*)$")
    if key then options[key] = value end
  end
  math.randomseed(os.time() * 1000 + (bench_thread_number or 0) * 7919)
  return options
end

function bench_count(status)
  bench_answered = bench_answered + 1
  if status >= 200 and status < 300 then
    bench_ok = bench_ok + 1
    return true
  end
  bench_non2xx = bench_non2xx + 1
  return false
end

function done(summary, latency, requests)
  local totals = { sent = 0, answered = 0, ok = 0, non2xx = 0, ops = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + (thread:get("bench_" .. name) or 0)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"sent":%d,"answered":%d,"ok":%d,"non2xx":%d,"ops":%d,' ..
    '"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    totals.sent, totals.answered, totals.ok, totals.non2xx, totals.ops,
    summary.requests, summary.duration, errors.connect, errors.read,
    errors.write, errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end

-- A uniformly random user among the `users` the harness created (bench-0 ... bench-N-1).
function bench_random_user(users)
  return "bench-" .. math.random(0, users - 1)
end
