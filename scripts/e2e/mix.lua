-- Mixed auth traffic for wrk: sign-ins that succeed, fail and are rate limited, sign-ups,
-- session reads, a guarded route and a non-auth route, in a fixed shuffled order.
-- At the end, one JSON line: requests, seconds, socket errors, latency percentiles (µs).
local json = 'application/json'
local function signin(email, password)
  return wrk.format('POST', '/api/auth/sign-in/email', { ['Content-Type'] = json },
    '{"email":"' .. email .. '","password":"' .. password .. '"}')
end
local bearer = { ['Authorization'] = 'Bearer tok-ada' }
local kinds = {
  { 8, signin('ada@example.com', 'correct horse') },
  { 4, signin('ada@example.com', 'wrong') },
  { 1, signin('limited@example.com', 'x') },
  { 1, wrk.format('POST', '/api/auth/sign-up/email', { ['Content-Type'] = json },
    '{"email":"new@example.com","password":"long enough"}') },
  { 3, wrk.format('GET', '/api/auth/get-session', bearer) },
  { 1, wrk.format('GET', '/api/auth/get-session') },
  { 1, wrk.format('GET', '/api/me', bearer) },
  { 1, wrk.format('GET', '/api/orders/42') },
}
local reqs = {}
for _, k in ipairs(kinds) do
  for _ = 1, k[1] do reqs[#reqs + 1] = k[2] end
end
-- A fixed interleaving (the same for every stack and thread).
local seed = 7
for i = #reqs, 2, -1 do
  seed = (seed * 1103515245 + 12345) % 2147483648
  local j = seed % i + 1
  reqs[i], reqs[j] = reqs[j], reqs[i]
end
local n = 0
request = function()
  n = n % #reqs + 1
  return reqs[n]
end

done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"socket_errors":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
