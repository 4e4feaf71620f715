-- wrk script: every request a distinct Bringg rating (ids unique across threads and runs).
local counter = 0
local thread_base = 0
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
  local id = run_base + thread_base + counter
  local body = string.format(
    '{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":%d,"rating":%d,' ..
    '"created_at":"2026-11-20T10:00:00.000Z","updated_at":null,"comment":"Quick and friendly",' ..
    '"task":{"id":%d,"status":4,"title":"Groceries","external_id":"INQ-%d"},' ..
    '"rating_reasons":[{"text":"On time"}]}}',
    id, 1 + id % 5, id, id)
  return wrk.format("POST", "/webhooks/bringg", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
