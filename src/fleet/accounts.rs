//! Fleet-wide account-level detection: the failed logins each instance's audit trail reported
//! (account and client) go into Redis, where one script keeps the local account detector's
//! structure for the whole fleet ([`authwatch_alerts::accounts`]): a count-min sketch of
//! failures per account and one per client address (per slot, conservative update, 16-bit
//! cells), the accounts and addresses tracked by name (at most `tracked` of each, the weakest
//! giving way to one with more failures), the distinct counterparts of each (per slot, at
//! most `members`), and one bitmap of failing accounts per slot for the window and the
//! baseline of credential stuffing. Each flush reads back what is at or above the engine's
//! levels.
//!
//! Cells, counterparts and bits are placed by a keyed hash (SHA-256 of a seed and the key),
//! the seed drawn by the first instance and kept in Redis, as for brute force.
//!
//! Redis memory is bounded by the sizing, whatever the traffic, with the defaults: 10 MiB of
//! sketches, 560 KiB of bitmaps, 8,192 tracked names, and at most `tracked × slots` sets of
//! up to `members` 4-byte counterparts for accounts and as many for addresses (at most
//! 10.5 MiB). Everything expires with the window (the bitmaps with the baseline). Account
//! labels are what the audit trail holds: the application's ids, or their keyed hashes with
//! an audit key.

use std::net::IpAddr;

use authwatch_alerts::accounts::BITMAP_BITS;
use authwatch_alerts::{AccountDetections, AccountRun, AccountUnderAttack, SprayingClient};

use super::detect::{cells_of, digest, Detect};

/// Failures per script call (the script itself works in chunks of 256).
const CHUNK: usize = 500;

/// Counts a call's failed logins and, with `read`, returns what is at or above the levels.
///
/// KEYS: the key prefix. ARGV: slot length (ms), slots, rows, tracked, members, baseline
/// slots, the account failures level (reported above it), the account addresses level, the
/// client accounts level, failures in this call, read (1/0), then per failure: account,
/// client ('' when unknown), count, the account's cell offsets (one per row), the client's
/// (zeros when unknown), the account's member id, the client's ('' when unknown), the
/// account's bit.
const ACCOUNTS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot_ms = tonumber(ARGV[1])
local slots = tonumber(ARGV[2])
local depth = tonumber(ARGV[3])
local tracked = tonumber(ARGV[4])
local members = tonumber(ARGV[5])
local history = tonumber(ARGV[6])
local above = tonumber(ARGV[7])
local addr_level = tonumber(ARGV[8])
local acct_level = tonumber(ARGV[9])
local k = tonumber(ARGV[10])
local p = KEYS[1]
local cur = math.floor(now / slot_ms)
local first = cur - slots + 1
local ttl = (slots + 1) * slot_ms
local bm_ttl = (slots + history + 1) * slot_ms

-- Adds each entry's n to its cells in the current slot of sketch `name` (conservative
-- update; an n of 0 only reads) and returns each entry's estimate over the window: one
-- BITFIELD_RO per slot and one BITFIELD for the raised cells.
local function estimate(name, entries)
  local est = {}
  if #entries == 0 then return est end
  for e = 1, #entries do est[e] = 0 end
  for s = first, cur do
    local key = p .. name .. s
    local gets, cache = {}, {}
    for e = 1, #entries do
      for r = 1, depth do
        local off = '#' .. entries[e].idx[r]
        if cache[off] == nil then
          cache[off] = 0
          gets[#gets + 1] = 'GET'
          gets[#gets + 1] = 'u16'
          gets[#gets + 1] = off
        end
      end
    end
    local got = redis.call('BITFIELD_RO', key, unpack(gets))
    for x = 1, #got do cache[gets[3 * x]] = got[x] end
    local sets = {}
    for e = 1, #entries do
      local idx = entries[e].idx
      local m = cache['#' .. idx[1]]
      for r = 2, depth do
        local v = cache['#' .. idx[r]]
        if v < m then m = v end
      end
      if s == cur and entries[e].n > 0 then
        local new = math.min(m + entries[e].n, 65535)
        for r = 1, depth do
          local off = '#' .. idx[r]
          if cache[off] < new then
            cache[off] = new
            sets[#sets + 1] = 'SET'
            sets[#sets + 1] = 'u16'
            sets[#sets + 1] = off
            sets[#sets + 1] = new
          end
        end
        m = new
      end
      est[e] = est[e] + m
    end
    if #sets > 0 then
      redis.call('BITFIELD', key, unpack(sets))
      redis.call('PEXPIRE', key, ttl)
    end
  end
  return est
end

-- Kind 'a' is accounts (their counterparts are clients), 'c' clients (counterparts accounts).
-- How many of each are tracked, and the weakest (read once per call, again when it goes).
local size = {}
local weak = {}
local function forget(kind, label)
  if redis.call('ZREM', p .. 't' .. kind, label) == 1 and size[kind] then
    size[kind] = size[kind] - 1
  end
  if weak[kind] and weak[kind][1] == label then weak[kind] = nil end
  redis.call('HDEL', p .. 'i' .. kind, label)
  for s = first, cur do redis.call('DEL', p .. 'm' .. kind .. s .. ':' .. label) end
end

-- A failure of `label` (its estimate now `est`, `n` of it new) with counterpart `member`.
-- A newcomer takes the weakest's place only with more failures; its failures before were
-- each possibly with another counterpart (`prior`).
local function track(kind, label, est, n, member, cells)
  local set = p .. 't' .. kind
  if redis.call('ZSCORE', set, label) then
    if weak[kind] and weak[kind][1] == label then weak[kind] = nil end
  else
    size[kind] = size[kind] or redis.call('ZCARD', set)
    if size[kind] >= tracked then
      if not weak[kind] then
        local w = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
        weak[kind] = {w[1], tonumber(w[2])}
      end
      if weak[kind][2] >= est then return end
      forget(kind, weak[kind][1])
    end
    redis.call('HSET', p .. 'i' .. kind, label, cur .. ' ' .. (est - n) .. ' ' .. cells)
    size[kind] = size[kind] + 1
  end
  redis.call('ZADD', set, est, label)
  if member ~= '' then
    local mk = p .. 'm' .. kind .. cur .. ':' .. label
    if redis.call('SCARD', mk) < members then
      redis.call('SADD', mk, member)
      redis.call('PEXPIRE', mk, ttl)
    end
  end
end

local i = 12
local width = 6 + 2 * depth
local top_now = 0
local start = 1
while start <= k do
  local last = math.min(start + 255, k)
  local evs, aent, cent, cevs = {}, {}, {}, {}
  for _ = start, last do
    local a, c = {}, {}
    for r = 1, depth do
      a[r] = ARGV[i + 2 + r]
      c[r] = ARGV[i + 2 + depth + r]
    end
    local ev = {
      label = ARGV[i], client = ARGV[i + 1], n = tonumber(ARGV[i + 2]), aidx = a, cidx = c,
      amember = ARGV[i + 3 + 2 * depth], cmember = ARGV[i + 4 + 2 * depth],
      bit = tonumber(ARGV[i + 5 + 2 * depth]),
    }
    i = i + width
    evs[#evs + 1] = ev
    aent[#aent + 1] = {idx = a, n = ev.n}
    if ev.client ~= '' then
      cent[#cent + 1] = {idx = c, n = ev.n}
      cevs[#cevs + 1] = ev
    end
  end
  local aest = estimate('ca', aent)
  local cest = estimate('cc', cent)
  for x, ev in ipairs(evs) do
    track('a', ev.label, aest[x], ev.n, ev.cmember, table.concat(ev.aidx, ','))
    if aest[x] > top_now then top_now = aest[x] end
    redis.call('SETBIT', p .. 'bm' .. cur, ev.bit, 1)
  end
  for x, ev in ipairs(cevs) do
    track('c', ev.client, cest[x], ev.n, ev.amember, table.concat(ev.cidx, ','))
  end
  start = last + 1
end
if k > 0 then
  local tk = p .. 'top' .. cur
  if top_now > tonumber(redis.call('GET', tk) or '0') then redis.call('SET', tk, top_now) end
  redis.call('PEXPIRE', tk, ttl)
  redis.call('PEXPIRE', p .. 'bm' .. cur, bm_ttl)
end
-- The first slot the fleet counted: how much baseline history there is.
redis.call('SET', p .. 'born', cur, 'NX')
redis.call('PEXPIRE', p .. 'born', bm_ttl)
for _, key in ipairs({'ta', 'tc', 'ia', 'ic'}) do redis.call('PEXPIRE', p .. key, ttl) end
if ARGV[11] ~= '1' then return {{}, {}, 0, '', 0} end

-- The window moved since the last read (of any instance): every tracked name is estimated
-- again, and forgotten with nothing left in the window.
local adv = tonumber(redis.call('GET', p .. 'adv') or '-1')
if adv < cur then
  for _, kind in ipairs({'a', 'c'}) do
    local labels = redis.call('ZRANGE', p .. 't' .. kind, 0, -1)
    for j = 1, #labels, 256 do
      local ent, lab = {}, {}
      for x = j, math.min(j + 255, #labels) do
        local info = redis.call('HGET', p .. 'i' .. kind, labels[x])
        local cells = info and string.match(info, '^%S+ %S+ (%S+)$')
        if cells then
          local idx = {}
          for c in string.gmatch(cells, '[^,]+') do idx[#idx + 1] = c end
          ent[#ent + 1] = {idx = idx, n = 0}
          lab[#lab + 1] = labels[x]
        else
          forget(kind, labels[x])
        end
      end
      local est = estimate('c' .. kind, ent)
      for x = 1, #ent do
        if est[x] == 0 then
          forget(kind, lab[x])
        else
          redis.call('ZADD', p .. 't' .. kind, est[x], lab[x])
        end
      end
    end
  end
  redis.call('SET', p .. 'adv', cur, 'PX', ttl)
end

-- Distinct counterparts of a tracked name over the window (never above its failures).
local function distinct(kind, label, failures)
  local n = 0
  local info = redis.call('HGET', p .. 'i' .. kind, label)
  if info then
    local since, prior = string.match(info, '^(%S+) (%S+)')
    if tonumber(since) + slots > cur then n = tonumber(prior) end
  end
  local keys = {}
  for s = first, cur do keys[#keys + 1] = p .. 'm' .. kind .. s .. ':' .. label end
  n = n + #redis.call('SUNION', unpack(keys))
  return math.min(n, failures)
end
local accounts = {}
local r = redis.call('ZRANGEBYSCORE', p .. 'ta', math.min(above + 1, addr_level), '+inf', 'WITHSCORES')
for j = 1, #r, 2 do
  local f = tonumber(r[j + 1])
  local a = distinct('a', r[j], f)
  if f > above or a >= addr_level then
    accounts[#accounts + 1] = r[j]
    accounts[#accounts + 1] = tostring(f)
    accounts[#accounts + 1] = tostring(a)
  end
end
local clients = {}
r = redis.call('ZRANGEBYSCORE', p .. 'tc', acct_level, '+inf', 'WITHSCORES')
for j = 1, #r, 2 do
  local f = tonumber(r[j + 1])
  local a = distinct('c', r[j], f)
  if a >= acct_level then
    clients[#clients + 1] = r[j]
    clients[#clients + 1] = tostring(a)
    clients[#clients + 1] = tostring(f)
  end
end

-- Distinct failing accounts in slots from..to: linear counting over the OR of the bitmaps.
local bits = tonumber(ARGV[12 + k * width] or '131072')
local function union(from, to)
  local keys = {}
  for s = from, to do keys[#keys + 1] = p .. 'bm' .. s end
  redis.call('BITOP', 'OR', p .. 'tmp', unpack(keys))
  local set = redis.call('BITCOUNT', p .. 'tmp')
  redis.call('DEL', p .. 'tmp')
  local zero = bits - set
  if zero <= 0 then return math.floor(bits * math.log(bits)) end
  return math.floor(-bits * math.log(zero / bits) + 0.5)
end
local failing = union(first, cur)
local born = tonumber(redis.call('GET', p .. 'born') or cur)
local windows = math.floor(math.min(first - born, history) / slots)
local baseline = ''
if windows > 0 then
  local sum = 0
  for w = 1, windows do sum = sum + union(first - w * slots, first - (w - 1) * slots - 1) end
  baseline = tostring(sum / windows)
end
local top = 0
local best = redis.call('ZRANGE', p .. 'ta', -1, -1, 'WITHSCORES')
if best[2] then top = tonumber(best[2]) end
for s = first, cur do
  local v = math.min(tonumber(redis.call('GET', p .. 'top' .. s) or '0'), above)
  if v > top then top = v end
end
return {accounts, clients, failing, baseline, top}
";

/// What the script returns: accounts (label, failures, addresses), clients (address,
/// accounts, failures), failing accounts, their baseline ('' until a window of history),
/// the top account's failures.
type Answer = (Vec<String>, Vec<String>, u64, String, u64);

/// Shares the failed logins the engine counted since the last flush and reads the fleet's
/// account-level detections. Failures taken by a flush that then fails stay local.
pub(crate) fn flush(
    c: &mut redis::Connection,
    prefix: &str,
    d: &Detect,
) -> redis::RedisResult<AccountDetections> {
    let cfg = &d.accounts;
    let seed = super::detect::seed(c, prefix, cfg.window_len() + cfg.baseline_len())?;
    let runs: Vec<AccountRun> = d.outbox.take_accounts();
    let script = redis::Script::new(ACCOUNTS);
    let slot = cfg.window_len() / cfg.slot_count();
    let slot_ms = u64::try_from(slot.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut chunks: Vec<&[AccountRun]> = runs.chunks(CHUNK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut answer: Answer = Default::default();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut inv = script.key(prefix);
        inv.arg(slot_ms)
            .arg(cfg.slot_count())
            .arg(cfg.rows())
            .arg(cfg.tracked_len())
            .arg(cfg.members_len())
            .arg(cfg.baseline_slots())
            .arg(d.levels.account_failures_above)
            .arg(d.levels.account_addresses)
            .arg(d.levels.client_accounts)
            .arg(chunk.len())
            .arg(if i == last { "1" } else { "0" });
        for r in chunk {
            let a = digest(&seed, b"account", r.account.as_bytes());
            let client = r.client.map(|ip| (ip, client_digest(&seed, ip)));
            inv.arg(&r.account)
                .arg(client.map(|(ip, _)| ip.to_string()).unwrap_or_default())
                .arg(r.n);
            for off in cells_of(&a, cfg.rows(), cfg.row_cells()) {
                inv.arg(off);
            }
            match &client {
                Some((_, h)) => {
                    for off in cells_of(h, cfg.rows(), cfg.row_cells()) {
                        inv.arg(off);
                    }
                }
                None => {
                    for _ in 0..cfg.rows() {
                        inv.arg(0);
                    }
                }
            }
            inv.arg(member(&a))
                .arg(
                    client
                        .map(|(_, h)| member(&h).to_string())
                        .unwrap_or_default(),
                )
                .arg(bit(&a));
        }
        inv.arg(BITMAP_BITS);
        answer = inv.invoke::<Answer>(c)?;
    }
    let (accounts, clients, failing, baseline, top) = answer;
    let mut found = AccountDetections::default();
    found.accounts = accounts
        .chunks_exact(3)
        .filter_map(|a| {
            Some(AccountUnderAttack::new(
                a[0].clone(),
                a[1].parse().ok()?,
                a[2].parse().ok()?,
            ))
        })
        .collect();
    found
        .accounts
        .sort_by(|a, b| b.failures.cmp(&a.failures).then(a.account.cmp(&b.account)));
    found.clients = clients
        .chunks_exact(3)
        .filter_map(|c| {
            Some(SprayingClient::new(
                c[0].parse().ok()?,
                c[1].parse().ok()?,
                c[2].parse().ok()?,
            ))
        })
        .collect();
    found
        .clients
        .sort_by(|a, b| b.accounts.cmp(&a.accounts).then(a.ip.cmp(&b.ip)));
    found.failing_accounts = failing;
    found.baseline_accounts = baseline.parse().ok();
    found.top_account_failures = top;
    Ok(found)
}

/// A client's keyed hash: the same bytes brute force's cells are placed by.
fn client_digest(seed: &str, ip: IpAddr) -> [u8; 32] {
    match ip {
        IpAddr::V4(v4) => digest(seed, b"", &v4.octets()),
        IpAddr::V6(v6) => digest(seed, b"", &v6.octets()),
    }
}

/// A counterpart's id in a tracked name's sets: 31 bits (Redis keeps small sets of such
/// integers in 4 bytes each; two of 64 counterparts share one id about once in a million).
fn member(h: &[u8; 32]) -> u32 {
    u32::from_le_bytes([h[16], h[17], h[18], h[19]]) & 0x7fff_ffff
}

/// The account's bit in a slot's bitmap.
fn bit(h: &[u8; 32]) -> usize {
    u32::from_le_bytes([h[20], h[21], h[22], h[23]]) as usize & (BITMAP_BITS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_clients_are_placed_apart_and_stably() {
        let a = digest("seed", b"account", b"alice");
        assert_eq!(a, digest("seed", b"account", b"alice"));
        assert_ne!(a, digest("seed", b"account", b"bob"));
        assert_ne!(a, digest("other", b"account", b"alice"));
        assert!(member(&a) < 1 << 31);
        assert!(bit(&a) < BITMAP_BITS);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            cells_of(&client_digest("seed", ip), 4, 1 << 18),
            super::super::detect::cells("seed", ip, 4, 1 << 18),
            "a client's cells are brute force's"
        );
    }
}
