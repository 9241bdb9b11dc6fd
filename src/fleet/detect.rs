//! Fleet-wide brute-force detection: the failures each instance counted go into a count-min
//! sketch in Redis (the local detector's design: conservative update, one sketch per slot of
//! the window, 16-bit cells, the same sizing), the distinct failing clients per route into
//! Redis' HyperLogLogs, and each flush reads back the fleet's suspects and routes.
//!
//! The sketch's cells are placed by a keyed hash (SHA-256 of a seed and the client key). The
//! seed is drawn by the first instance and kept in Redis, so all instances place a client in
//! the same cells and an attacker, who never sees it, cannot aim at a victim's cells.
//!
//! Redis memory is bounded by the sizing, whatever the traffic: `slots × rows × cells × 2`
//! bytes of sketch (10 MiB with the defaults), one HyperLogLog (at most 12 KiB) and one hash
//! field per route and slot, the suspects (at most `max_suspects`), all expiring with the
//! window.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use authwatch_alerts::{AccountConfig, AccountLevels};
use authwatch_alerts::{BruteForceConfig, Detections, FailureOutbox, FailureRun};
use authwatch_alerts::{RouteFailures, Suspect};

/// Failures per script call: a flush of a large spray is cut into calls of this many clients,
/// so that no single call holds Redis for long.
const CHUNK: usize = 500;

/// What the flush needs from the alert engine.
pub(crate) struct Detect {
    pub(crate) outbox: Arc<FailureOutbox>,
    pub(crate) cfg: BruteForceConfig,
    pub(crate) threshold: u64,
    /// The account-level detector's sizing and the levels it reports from.
    pub(crate) accounts: AccountConfig,
    pub(crate) levels: AccountLevels,
}

/// Counts a chunk of failures into the current slot's sketch (conservative update), the
/// routes' failures and distinct clients, and the suspects: a client is estimated over the
/// whole window only when its count in the current slot reaches `threshold / slots` (below
/// that in every slot, its window total cannot pass the threshold), then kept, with its
/// cells, among the suspects (above the threshold) or the clients near it. With `read`, both
/// sets are estimated again (a client near the threshold that fails a little in each later
/// slot is caught so; each set keeps its largest, `max_suspects` and four times that), and
/// the suspects, the routes over the window and the largest estimate seen are returned.
///
/// A spray of one or two failures per address costs two `BITFIELD` calls per address, and
/// one `HINCRBY` and one `PFADD` per route and thousand addresses.
///
/// KEYS: the key prefix. ARGV: slot length (ms), slots, rows, threshold, max suspects,
/// failures in this call, read (1/0), then per failure: client, route, count, its cell
/// offsets (one per row, in 16-bit cells).
const BRUTE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot_ms = tonumber(ARGV[1])
local slots = tonumber(ARGV[2])
local depth = tonumber(ARGV[3])
local threshold = tonumber(ARGV[4])
local max_s = tonumber(ARGV[5])
local k = tonumber(ARGV[6])
local p = KEYS[1]
local cur = math.floor(now / slot_ms)
local ttl = (slots + 1) * slot_ms
local near_at = threshold / slots
local function slot_min(key, idx)
  local args = {}
  for r = 1, depth do
    args[#args + 1] = 'GET'
    args[#args + 1] = 'u16'
    args[#args + 1] = '#' .. idx[r]
  end
  local v = redis.call('BITFIELD_RO', key, unpack(args))
  local m = v[1]
  for r = 2, depth do
    if v[r] < m then m = v[r] end
  end
  return m, v
end
local function window(idx)
  local sum = 0
  for s = cur - slots + 1, cur do
    sum = sum + (slot_min(p .. 'cms:' .. s, idx))
  end
  return sum
end
local cms = p .. 'cms:' .. cur
local top = 0
local route_n = {}
local route_ips = {}
-- The clients go in chunks: one BITFIELD_RO reads every cell of a chunk, one BITFIELD writes
-- the cells it raised (a cell two clients share is read once, and raised in order).
local pending = {}
local function write()
  if #pending > 0 then
    redis.call('BITFIELD', cms, unpack(pending))
    pending = {}
  end
end
local i = 8
local first = 1
while first <= k do
  local last = math.min(first + 255, k)
  local cache = {}
  local gets = {}
  local j = i
  for _ = first, last do
    for r = 1, depth do
      local off = '#' .. ARGV[j + 2 + r]
      if cache[off] == nil then
        cache[off] = false
        gets[#gets + 1] = 'GET'
        gets[#gets + 1] = 'u16'
        gets[#gets + 1] = off
      end
    end
    j = j + 3 + depth
  end
  local got = redis.call('BITFIELD_RO', cms, unpack(gets))
  for x = 1, #got do cache[gets[3 * x]] = got[x] end
  for _ = first, last do
    local label, route, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    local idx = {}
    local offs = {}
    for r = 1, depth do
      idx[r] = ARGV[i + 2 + r]
      offs[r] = '#' .. idx[r]
    end
    i = i + 3 + depth
    local m = cache[offs[1]]
    for r = 2, depth do
      if cache[offs[r]] < m then m = cache[offs[r]] end
    end
    local new = math.min(m + n, 65535)
    for r = 1, depth do
      if cache[offs[r]] < new then
        cache[offs[r]] = new
        pending[#pending + 1] = 'SET'
        pending[#pending + 1] = 'u16'
        pending[#pending + 1] = offs[r]
        pending[#pending + 1] = new
      end
    end
    -- A token failure (no route) counts for its client only.
    if route ~= '' then
      route_n[route] = (route_n[route] or 0) + n
      local ips = route_ips[route]
      if not ips then
        ips = {}
        route_ips[route] = ips
      end
      ips[#ips + 1] = label
    end
    if new > top then top = new end
    -- Over the window a client is above the threshold only if one slot holds more than
    -- threshold / slots of its failures: estimated then, and kept near for later flushes.
    if new >= near_at then
      write()
      local est = window(idx)
      if est > top then top = est end
      local cells = table.concat(idx, ',')
      if est > threshold then
        redis.call('ZADD', p .. 'suspects', est, label)
        redis.call('HSET', p .. 'cells', label, cells)
      else
        redis.call('ZADD', p .. 'near', est, label)
        redis.call('HSET', p .. 'nearcells', label, cells)
      end
    end
  end
  write()
  first = last + 1
end
for route, n in pairs(route_n) do
  redis.call('HINCRBY', p .. 'rf:' .. cur, route, n)
  local hll = p .. 'hll:' .. cur .. ':' .. route
  local ips = route_ips[route]
  for j = 1, #ips, 1000 do
    redis.call('PFADD', hll, unpack(ips, j, math.min(j + 999, #ips)))
  end
  redis.call('PEXPIRE', hll, ttl)
end
if k > 0 then
  local tk = p .. 'top:' .. cur
  if top > tonumber(redis.call('GET', tk) or '0') then redis.call('SET', tk, top) end
  for _, key in ipairs({cms, p .. 'rf:' .. cur, tk}) do redis.call('PEXPIRE', key, ttl) end
end
if ARGV[7] ~= '1' then return {{}, {}, 0} end
-- Estimate the suspects and the clients near the threshold again: a client moves between
-- them, leaves both once under the threshold and not near, and each set keeps its largest.
local function again(set, cells_key)
  for _, label in ipairs(redis.call('ZRANGE', p .. set, 0, -1)) do
    local cells = redis.call('HGET', p .. cells_key, label)
    local est = 0
    if cells then
      local idx = {}
      for x in string.gmatch(cells, '[^,]+') do idx[#idx + 1] = x end
      est = window(idx)
    end
    redis.call('ZREM', p .. set, label)
    redis.call('HDEL', p .. cells_key, label)
    if est > threshold then
      redis.call('ZADD', p .. 'suspects', est, label)
      redis.call('HSET', p .. 'cells', label, cells)
    elseif est >= near_at then
      redis.call('ZADD', p .. 'near', est, label)
      redis.call('HSET', p .. 'nearcells', label, cells)
    end
  end
end
again('near', 'nearcells')
again('suspects', 'cells')
for _, sc in ipairs({{'suspects', 'cells', max_s}, {'near', 'nearcells', 4 * max_s}}) do
  local extra = redis.call('ZCARD', p .. sc[1]) - sc[3]
  if extra > 0 then
    local gone = redis.call('ZPOPMIN', p .. sc[1], extra)
    for j = 1, #gone, 2 do redis.call('HDEL', p .. sc[2], gone[j]) end
  end
  redis.call('PEXPIRE', p .. sc[1], ttl)
  redis.call('PEXPIRE', p .. sc[2], ttl)
end
local suspects = redis.call('ZRANGE', p .. 'suspects', 0, -1, 'WITHSCORES')
local failures = {}
local most = 0
for s = cur - slots + 1, cur do
  local rf = redis.call('HGETALL', p .. 'rf:' .. s)
  for j = 1, #rf, 2 do
    failures[rf[j]] = (failures[rf[j]] or 0) + tonumber(rf[j + 1])
  end
  local tp = tonumber(redis.call('GET', p .. 'top:' .. s) or '0')
  if tp > most then most = tp end
end
local routes = {}
for route, n in pairs(failures) do
  local keys = {}
  for s = cur - slots + 1, cur do keys[#keys + 1] = p .. 'hll:' .. s .. ':' .. route end
  routes[#routes + 1] = route
  routes[#routes + 1] = tostring(n)
  routes[#routes + 1] = tostring(redis.call('PFCOUNT', unpack(keys)))
end
return {suspects, routes, most}
";

/// The sketch's seed: drawn by the first instance (`SET NX`), kept two windows past the last
/// flush of any instance (by then every cell it placed has expired).
pub(crate) fn seed(
    c: &mut redis::Connection,
    prefix: &str,
    window: Duration,
) -> redis::RedisResult<String> {
    let key = format!("{prefix}seed");
    let mine = format!("{:016x}{:016x}", super::nonce(), super::nonce());
    let ttl = u64::try_from((window * 2).as_millis())
        .unwrap_or(u64::MAX)
        .max(60_000);
    let (seed,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(mine)
        .arg("NX")
        .arg("PX")
        .arg(ttl)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(ttl)
        .ignore()
        .cmd("GET")
        .arg(&key)
        .query(c)?;
    Ok(seed)
}

/// The keyed hash of `bytes` (of a kind, `kind`, empty for a client address): SHA-256 of the
/// seed, the kind and the bytes.
pub(crate) fn digest(seed: &str, kind: &[u8], bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(seed.as_bytes());
    if !kind.is_empty() {
        h.update(kind);
        h.update([0]);
    }
    h.update(bytes);
    h.finalize().into()
}

/// The offsets (in 16-bit cells) of a key's cell in each row, from its keyed hash `d`: double
/// hashing, as the local detectors do with their own hasher.
pub(crate) fn cells_of(d: &[u8; 32], rows: usize, width: usize) -> Vec<u64> {
    let h1 = u64::from_le_bytes(d[..8].try_into().unwrap_or_default());
    let h2 = u64::from_le_bytes(d[8..16].try_into().unwrap_or_default()) | 1;
    let mask = width as u64 - 1;
    (0..rows as u64)
        .map(|r| r * width as u64 + (h1.wrapping_add(r.wrapping_mul(h2)) & mask))
        .collect()
}

/// The offsets of `client`'s cell in each row.
pub(crate) fn cells(seed: &str, client: IpAddr, rows: usize, width: usize) -> Vec<u64> {
    let d = match client {
        IpAddr::V4(v4) => digest(seed, b"", &v4.octets()),
        IpAddr::V6(v6) => digest(seed, b"", &v6.octets()),
    };
    cells_of(&d, rows, width)
}

/// Shares what the engine counted since the last flush and reads the fleet's detections.
/// Failures taken from the outbox by a flush that then fails stay local (the engine counted
/// them in its own detector already).
pub(crate) fn flush(
    c: &mut redis::Connection,
    prefix: &str,
    d: &Detect,
) -> redis::RedisResult<Detections> {
    let seed = seed(c, prefix, d.cfg.window_len())?;
    let runs: Vec<FailureRun> = d.outbox.take();
    let script = redis::Script::new(BRUTE);
    let slot = d.cfg.window_len() / d.cfg.slot_count();
    let slot_ms = u64::try_from(slot.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut chunks: Vec<&[FailureRun]> = runs.chunks(CHUNK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut answer = (Vec::new(), Vec::new(), 0u64);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut inv = script.key(prefix);
        inv.arg(slot_ms)
            .arg(d.cfg.slot_count())
            .arg(d.cfg.rows())
            .arg(d.threshold)
            .arg(d.cfg.suspects_kept())
            .arg(chunk.len())
            .arg(if i == last { "1" } else { "0" });
        for r in chunk {
            inv.arg(r.client.to_string()).arg(&r.route).arg(r.n);
            for off in cells(&seed, r.client, d.cfg.rows(), d.cfg.row_cells()) {
                inv.arg(off);
            }
        }
        answer = inv.invoke::<(Vec<String>, Vec<String>, u64)>(c)?;
    }
    let (suspects, routes, top) = answer;
    let suspects: Vec<Suspect> = suspects
        .chunks_exact(2)
        .filter_map(|kv| Some(suspect(kv[0].parse().ok()?, kv[1].parse::<f64>().ok()?)))
        .collect();
    let routes: Vec<RouteFailures> = routes
        .chunks_exact(3)
        .filter_map(|r| {
            Some(route_failures(
                r[0].clone(),
                r[1].parse().ok()?,
                r[2].parse().ok()?,
            ))
        })
        .collect();
    let top = suspects
        .iter()
        .map(|s| s.failures)
        .max()
        .unwrap_or_else(|| top.min(d.threshold));
    Ok(Detections::new(suspects, routes, top))
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn suspect(ip: IpAddr, failures: f64) -> Suspect {
    Suspect {
        ip,
        failures: failures.max(0.0) as u64,
    }
}

fn route_failures(route: String, failures: u64, ips: u64) -> RouteFailures {
    RouteFailures {
        route,
        failures,
        ips,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_client_has_one_cell_per_row_and_the_seed_moves_them() {
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let a = cells("seed-a", ip, 4, 1 << 18);
        assert_eq!(a.len(), 4);
        for (r, off) in a.iter().enumerate() {
            let row = off / (1 << 18);
            assert_eq!(row, r as u64, "{a:?}");
        }
        assert_eq!(a, cells("seed-a", ip, 4, 1 << 18), "stable");
        assert_ne!(a, cells("seed-b", ip, 4, 1 << 18));
    }
}
