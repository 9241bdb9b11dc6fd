//! The fleet's block list: the blocks every instance made (by an alert or by hand) live in
//! Redis with their end, and every instance enforces all of them. The flush thread pushes this
//! instance's changes at once (a block wakes it) and, every 250 ms, asks whether the list
//! changed (one small script); when it did, it reads the list and brings the layer's up to
//! date. A new block is enforced by every instance within about 250 ms plus a round trip.
//!
//! Redis keys (expiring with the last block): a hash of the blocks (`address → end|source|
//! reason`), a sorted set of their ends, and a version counter raised at each change. At most
//! `max` blocks: beyond, those that end first go, as in each instance's list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use authwatch_layer::BlockSource;

use crate::blocks::{Blocker, Change};

/// One call: drops the ended blocks, applies this instance's changes, bounds the list, and
/// returns the version, Redis' time (ms), per change whether it made a new block (no block of
/// that address before), and the whole list when the version is not the one known.
///
/// KEYS: the key prefix. ARGV: the known version, the most blocks, the changes, then per
/// change: `+` or `-`, address, TTL (ms), source, reason.
const SYNC: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = KEYS[1]
local h, z, v = p .. 'list', p .. 'ends', p .. 'version'
local known = ARGV[1]
local max = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local changed = false
local ended = redis.call('ZRANGEBYSCORE', z, '-inf', now)
if #ended > 0 then
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  for j = 1, #ended, 1000 do
    redis.call('HDEL', h, unpack(ended, j, math.min(j + 999, #ended)))
  end
  changed = true
end
local new = {}
local i = 4
for c = 1, n do
  local op, ip = ARGV[i], ARGV[i + 1]
  if op == '+' then
    local ends = now + tonumber(ARGV[i + 2])
    new[c] = redis.call('ZSCORE', z, ip) and 0 or 1
    redis.call('HSET', h, ip, ends .. '|' .. ARGV[i + 3] .. '|' .. ARGV[i + 4])
    redis.call('ZADD', z, ends, ip)
  else
    new[c] = 0
    redis.call('HDEL', h, ip)
    redis.call('ZREM', z, ip)
  end
  changed = true
  i = i + 5
end
local extra = redis.call('ZCARD', z) - max
if extra > 0 then
  local gone = redis.call('ZPOPMIN', z, extra)
  for j = 1, #gone, 2 do redis.call('HDEL', h, gone[j]) end
end
if changed then redis.call('INCR', v) end
local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
local keep = 60000
if last[2] then keep = keep + math.max(0, tonumber(last[2]) - now) end
for _, k in ipairs({h, z, v}) do redis.call('PEXPIRE', k, keep) end
local ver = redis.call('GET', v) or '0'
if ver == known then return {ver, now, new, {}} end
return {ver, now, new, redis.call('HGETALL', h)}
";

/// Pushes this instance's changes to the fleet's list and, when the list changed since
/// `known`, brings the layer's up to date. Changes taken by a call that fails are put back.
pub(crate) fn sync(
    c: &mut redis::Connection,
    prefix: &str,
    blocker: &Blocker,
    known: &mut String,
) -> redis::RedisResult<()> {
    let changes = blocker.take_changes();
    let v6 = blocker.list().ipv6_prefix();
    // An IPv6 block is written as its prefix (`2001:db8:1:2::/64`).
    let name = |ip: &IpAddr| match ip {
        IpAddr::V4(_) => ip.to_string(),
        IpAddr::V6(_) => format!("{ip}/{v6}"),
    };
    let script = redis::Script::new(SYNC);
    let mut inv = script.key(prefix);
    inv.arg(&*known)
        .arg(blocker.max_blocks())
        .arg(changes.len());
    for ch in &changes {
        match ch {
            Change::Add {
                ip,
                ttl,
                reason,
                source,
                ..
            } => {
                inv.arg("+")
                    .arg(name(ip))
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    .arg(source.as_str())
                    .arg(reason.as_str());
            }
            Change::Remove { ip } => {
                inv.arg("-").arg(name(ip)).arg(0).arg("").arg("");
            }
        }
    }
    let answer: Result<(String, u64, Vec<u8>, Vec<String>), _> = inv.invoke(c);
    let (version, now_ms, new, list) = match answer {
        Ok(a) => a,
        Err(e) => {
            blocker.put_back(changes);
            return Err(e);
        }
    };
    for (ch, new) in changes.iter().zip(new) {
        blocker.pushed(ch, new == 1);
    }
    if version != *known {
        let mut remote: HashMap<IpAddr, (Duration, BlockSource, String)> = HashMap::new();
        for kv in list.chunks_exact(2) {
            let addr = kv[0].split_once('/').map_or(kv[0].as_str(), |(a, _)| a);
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue;
            };
            let mut parts = kv[1].splitn(3, '|');
            let (Some(ends), Some(source), Some(reason)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(ends) = ends.parse::<u64>() else {
                continue;
            };
            let left = Duration::from_millis(ends.saturating_sub(now_ms));
            remote.insert(ip, (left, source_of(source), reason.to_owned()));
        }
        blocker.apply_fleet(&remote);
        *known = version;
    }
    Ok(())
}

fn source_of(s: &str) -> BlockSource {
    match s {
        "alert" => BlockSource::Alert,
        "manual" => BlockSource::Manual,
        "crowdsec" => BlockSource::CrowdSec,
        _ => BlockSource::Fleet,
    }
}

/// The fleet's block list as Redis holds it now (each block's source as its instance made
/// it; the refusals are each instance's own, not shared: 0 here).
pub(crate) fn read(
    c: &mut redis::Connection,
    prefix: &str,
) -> redis::RedisResult<Vec<authwatch_layer::BlockedIp>> {
    let ((secs, micros), list): ((u64, u64), Vec<String>) = redis::pipe()
        .cmd("TIME")
        .cmd("HGETALL")
        .arg(format!("{prefix}list"))
        .query(c)?;
    let now_ms = secs * 1000 + micros / 1000;
    let wall_now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for kv in list.chunks_exact(2) {
        let (ip, prefix) = match kv[0].split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>(), p.parse::<u8>().unwrap_or(64)),
            None => (kv[0].parse::<IpAddr>(), 64),
        };
        let Ok(ip) = ip else { continue };
        let mut parts = kv[1].splitn(3, '|');
        let (Some(Ok(ends)), Some(source), Some(reason)) = (
            parts.next().map(str::parse::<u64>),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if ends <= now_ms {
            continue;
        }
        let until = wall_now + Duration::from_millis(ends - now_ms);
        out.push(authwatch_layer::BlockedIp::new(
            ip,
            prefix,
            wall_now,
            until,
            reason,
            source_of(source),
            0,
        ));
    }
    out.sort_by(|a, b| b.until.cmp(&a.until).then(a.ip.cmp(&b.ip)));
    Ok(out)
}
