-- Session-heavy traffic for wrk: 90 % session checks, 10 % sign-ins, in a fixed shuffled order.
-- The session checks are split evenly between GET /api/auth/get-session and the guarded
-- GET /api/me, each mostly with a valid bearer token and a few without one or with an
-- expired one (401); the sign-ins mostly succeed, some fail and one is rate limited.
-- With --session-work-us and --sign-in-work-us on the bench server, both kinds cost CPU.
-- At the end, one JSON line: requests, seconds, socket errors, latency percentiles (µs).
local json = 'application/json'
local function signin(email, password)
  return wrk.format('POST', '/api/auth/sign-in/email', { ['Content-Type'] = json },
    '{"email":"' .. email .. '","password":"' .. password .. '"}')
end
local bearer = { ['Authorization'] = 'Bearer tok-ada' }
local expired = { ['Authorization'] = 'Bearer tok-expired' }
local kinds = {
  -- 90 session checks out of 100 requests.
  { 40, wrk.format('GET', '/api/auth/get-session', bearer) },
  { 3, wrk.format('GET', '/api/auth/get-session') },
  { 2, wrk.format('GET', '/api/auth/get-session', expired) },
  { 40, wrk.format('GET', '/api/me', bearer) },
  { 3, wrk.format('GET', '/api/me') },
  { 2, wrk.format('GET', '/api/me', expired) },
  -- 10 sign-ins.
  { 7, signin('ada@example.com', 'correct horse') },
  { 2, signin('ada@example.com', 'wrong') },
  { 1, signin('limited@example.com', 'x') },
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
