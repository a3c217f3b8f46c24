-- wrk script for every scenario. Environment:
--   BENCH_PATH       request path
--   BENCH_BODY       JSON body; "{N}" in it is replaced by a per-request number in
--                    20000..119999 (unique within a run of < 100,000 requests per thread)
--   BENCH_BODY_FILE  if set: the body is this file's bytes, as is (binary bodies)
--   BENCH_HEADER     if set: one more request header, "Name: value"
--   BENCH_REPEAT     fraction (0..1) of requests sent with N=75000, i.e. a repeated input
--   BENCH_RATE       if set: requests per second over all connections (paced, see README)
--   BENCH_CONNECTIONS connections, to pace each one at BENCH_RATE / connections
--   BENCH_RANK       if set, "USERS,ITEMS,N": each body is a rank request for a random user
--                    in 0..USERS-1 and N distinct random items in 0..ITEMS-1, with
--                    BENCH_BODY's other fields ("{RANK}" in it marks where they go)
-- At the end it prints one JSON line: requests, seconds, non_2xx, latency percentiles (ms).
local path = os.getenv("BENCH_PATH")
local body = os.getenv("BENCH_BODY")
local repeat_fraction = tonumber(os.getenv("BENCH_REPEAT") or "0")
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local connections = tonumber(os.getenv("BENCH_CONNECTIONS") or "64")
local counter = 0
local headers = {["Content-Type"] = "application/json"}
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
  headers["Content-Type"] = "application/octet-stream"
end
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
  local name, value = string.match(extra, "^([^:]+):%s*(.*)$")
  headers[name] = value
end
local templated = not body_file or body_file == ""
local rank_users, rank_items, rank_n = string.match(os.getenv("BENCH_RANK") or "", "^(%d+),(%d+),(%d+)$")
rank_users, rank_items, rank_n = tonumber(rank_users), tonumber(rank_items), tonumber(rank_n)
local pool = {}
for i = 1, (rank_items or 0) do pool[i] = i - 1 end

-- A partial Fisher-Yates shuffle of the item pool: N distinct ids in random order.
local function rank_fields()
  local ids = {}
  for k = 1, rank_n do
    local j = math.random(k, rank_items)
    pool[k], pool[j] = pool[j], pool[k]
    ids[k] = pool[k]
  end
  return string.format('"user_id": %d, "item_ids": [%s]',
    math.random(0, rank_users - 1), table.concat(ids, ","))
end
local repeated = templated and string.gsub(body, "{N}", "75000") or body

function setup(thread)
  thread:set("id", math.random(1, 1000000))
end

function init(args)
  math.randomseed(os.time() + (id or 0))
  counter = (id or 0) % 100000
end

function request()
  if rank_users then
    local fields = rank_fields()
    return wrk.format("POST", path, headers, (string.gsub(body, "{RANK}", function() return fields end)))
  end
  local b = repeated
  if templated and math.random() >= repeat_fraction then
    counter = counter + 1
    b = string.gsub(body, "{N}", tostring(20000 + counter % 100000))
  end
  return wrk.format("POST", path, headers, b)
end

function delay()
  if rate > 0 then
    return 1000 * connections / rate
  end
  return 0
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.status, summary.errors.connect + summary.errors.read +
      summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
