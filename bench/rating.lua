-- One Bringg rating webhook as a wrk request, for bench/ratings.lua and bench/paced.lua.
return function(id, merchant_id, token)
  local body = string.format(
    '{"webhook_type":"rating_submitted","merchant_id":%d,"rating":{"id":%d,"rating":%d,' ..
    '"created_at":"2026-11-20T10:00:00.000Z","updated_at":null,"comment":"Quick and friendly",' ..
    '"task":{"id":%d,"status":4,"title":"Groceries","external_id":"INQ-%d"},' ..
    '"rating_reasons":[{"text":"On time"}]}}',
    merchant_id, id, 1 + id % 5, id, id)
  return wrk.format("POST", "/webhooks/bringg", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
