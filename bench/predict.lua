-- wrk: POST one churn prediction per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"features": [35, 75000, 680, 24, 730, 85.5, 2, false, 2, 3]}'

-- Count answers that are not 200 (wrk's "Non-2xx" misses nothing, but say it plainly).
local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
