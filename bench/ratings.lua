-- wrk script: every request a distinct Bringg rating (ids unique across threads and runs).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local rating = dofile(here .. "rating.lua")
local counter = 0
-- Each thread's own range of ids: a global, so setup() in wrk's main state can set it per thread.
thread_base = 0
local threads = {}

function setup(thread)
  thread:set("thread_base", (#threads + 1) * 100000000)
  table.insert(threads, thread)
end

-- Arguments after `--`: the first rating id of this run, and the webhook token (one source: bench/run.py).
function init(args)
  counter = 0
  run_base = tonumber(args[1] or "0")
  token = args[2]
end

request = function()
  counter = counter + 1
  return rating(run_base + thread_base + counter, 7, token)
end
