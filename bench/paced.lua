-- wrk script: an open-loop schedule at a fixed rate, one connection per wrk thread (-t N -c N).
-- Request k of connection i of N is due at start + (k * N + i) / rate; each is a new Bringg rating.
-- Latency counts from when a request was due if its connection was still busy then (the server's
-- lateness, no coordinated omission), else from when it was sent (a late timer is the generator's).
local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } relay_timespec;
  int clock_gettime(int clock, relay_timespec *ts);
]])
local clock = ffi.new("relay_timespec")
local function now_s()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC: the clock of Python's time.monotonic()
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

-- Arguments after `--`: connections, rate (req/s), total requests, start (time.monotonic()), first
-- rating id, token.
function init(args)
  connections = tonumber(args[1])
  rate = tonumber(args[2])
  total = tonumber(args[3])
  start = tonumber(args[4])
  first_id = tonumber(args[5])
  token = args[6]
  k = 0
  armed = false -- set by delay(): wrk calls it before each request it sends
  answered_at = 0
  latencies = {}
  statuses = {}
end

local function due(n)
  return start + (n * connections + index) / rate
end

function delay()
  if (k * connections + index) >= total then
    return 3600000 -- this connection's share is sent: idle until wrk's duration ends
  end
  armed = true
  local wait_ms = (due(k) - now_s()) * 1000
  return wait_ms > 0 and math.floor(wait_ms) or 0
end

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local rating_request = dofile(here .. "rating.lua")

local function rating(id)
  return rating_request(id, 8, token)
end

request = function()
  if not armed then
    return rating(first_id) -- wrk's check of the script before it starts: never sent, not counted
  end
  armed = false
  local scheduled = due(k)
  local sent = now_s()
  -- Busy at its due time (the previous answer came after it): the wait was the server's.
  counted_from = (answered_at > scheduled) and scheduled or sent
  local id = first_id + k * connections + index
  k = k + 1
  return rating(id)
end

function response(status, headers, body)
  answered_at = now_s()
  table.insert(latencies, (answered_at - counted_from) * 1000)
  statuses[status] = (statuses[status] or 0) + 1
end

-- One line per answer ("latency_ms <ms>") and per status ("status <code> <count>"), for bench/paced.py.
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for _, ms in ipairs(thread:get("latencies")) do
      io.write(string.format("latency_ms %.3f\n", ms))
    end
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\n", status, count))
    end
  end
end
