//! Server-side scripts: each operation on a session is one atomic round trip (EVALSHA, with the
//! driver falling back to EVAL when the server does not have the script cached).
//!
//! A session is one hash. Metadata fields start with `\1` (attribute names may not contain
//! control characters, so they cannot collide): `\1c` created, `\1a` last access, `\1i` idle
//! timeout, `\1b` absolute lifetime (absent: none), `\1d` deadline, `\1p` principal (absent:
//! none), `\1v` version, `\1s` attribute bytes, `\1n` attribute count. Times are epoch ms. Every
//! script that moves the deadline also moves the key's expiry to it (PEXPIREAT).

use std::sync::LazyLock;

use redis::Script;

/// KEYS[1] session. ARGV[1] deadline, ARGV[2] event channel ('' = none), ARGV[3] key hex, then
/// field/value pairs. Returns 1, or 0 if the key exists.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], unpack(ARGV, 4))
        redis.call('PEXPIREAT', KEYS[1], ARGV[1])
        if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], 'c ' .. ARGV[3]) end
        return 1
        ",
    )
});

/// KEYS[1] session. ARGV: now, expected version ('' = any), max bytes, max count,
/// principal op ('' keep, '0' clear, '1' set), principal, idle ('' keep), absolute op
/// ('' keep, '0' none, '1' set), absolute, number of upserts, name/value pairs, number of
/// removals, names.
/// Returns {version, deadline, old principal|false, new principal|false}, or {-1} not found,
/// {-2, stored version} conflict, {-3, size, count} too large.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local m = redis.call('HMGET', k, '\1v', '\1d', '\1c', '\1a', '\1i', '\1b', '\1s', '\1n', '\1p')
        local version, deadline = tonumber(m[1]), tonumber(m[2])
        local now = tonumber(ARGV[1])
        if not version or not deadline or deadline <= now then return {-1} end
        if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then return {-2, version} end
        local size, count = tonumber(m[7]) or 0, tonumber(m[8]) or 0
        local ups = tonumber(ARGV[10])
        local rem_at = 11 + 2 * ups
        local removals = tonumber(ARGV[rem_at])
        for i = 1, removals do
            local name = ARGV[rem_at + i]
            local old = redis.call('HSTRLEN', k, name)
            if old > 0 then size = size - (#name + old + 8); count = count - 1 end
        end
        for i = 0, ups - 1 do
            local name, value = ARGV[11 + 2 * i], ARGV[12 + 2 * i]
            local old = redis.call('HSTRLEN', k, name)
            if old > 0 then size = size - (#name + old + 8); count = count - 1 end
            size = size + #name + #value + 8; count = count + 1
        end
        if size > tonumber(ARGV[3]) or count > tonumber(ARGV[4]) then return {-3, size, count} end
        for i = 1, removals do redis.call('HDEL', k, ARGV[rem_at + i]) end
        if ups > 0 then redis.call('HSET', k, unpack(ARGV, 11, 10 + 2 * ups)) end
        local old_principal = m[9] or false
        local principal = old_principal
        if ARGV[5] == '0' then redis.call('HDEL', k, '\1p'); principal = false
        elseif ARGV[5] == '1' then redis.call('HSET', k, '\1p', ARGV[6]); principal = ARGV[6] end
        local idle = tonumber(m[5])
        if ARGV[7] ~= '' then idle = tonumber(ARGV[7]) end
        local abs = tonumber(m[6])
        if ARGV[8] == '0' then redis.call('HDEL', k, '\1b'); abs = nil
        elseif ARGV[8] == '1' then abs = tonumber(ARGV[9]); redis.call('HSET', k, '\1b', ARGV[9]) end
        local accessed = math.max(tonumber(m[4]), now)
        local dl = accessed + idle
        if abs then dl = math.min(dl, tonumber(m[3]) + abs) end
        version = version + 1
        local f = function(x) return string.format('%.0f', x) end
        redis.call('HSET', k, '\1v', f(version), '\1a', f(accessed), '\1i', f(idle), '\1d', f(dl),
            '\1s', f(size), '\1n', f(count))
        redis.call('PEXPIREAT', k, f(dl))
        return {version, dl, old_principal, principal}
        ",
    )
});

/// KEYS[1] session. ARGV[1] now. Returns {deadline, principal|false}, or {-1} not found.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local m = redis.call('HMGET', k, '\1d', '\1c', '\1a', '\1i', '\1b', '\1p')
        local deadline, now = tonumber(m[1]), tonumber(ARGV[1])
        if not deadline or deadline <= now or not tonumber(m[4]) then return {-1} end
        local accessed = math.max(tonumber(m[3]) or 0, now)
        local dl = accessed + tonumber(m[4])
        if tonumber(m[5]) then dl = math.min(dl, tonumber(m[2]) + tonumber(m[5])) end
        local f = function(x) return string.format('%.0f', x) end
        redis.call('HSET', k, '\1a', f(accessed), '\1d', f(dl))
        redis.call('PEXPIREAT', k, f(dl))
        return {dl, m[6] or false}
        ",
    )
});

/// KEYS[1] session. ARGV[1] expected version ('' = any), ARGV[2] event channel ('' = none),
/// ARGV[3] key hex. Returns {deleted 0/1, principal|false}, or {-2} if the version differs
/// (nothing deleted).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local m = redis.call('HMGET', KEYS[1], '\1p', '\1v')
        if ARGV[1] ~= '' and m[2] and m[2] ~= ARGV[1] then return {-2} end
        local deleted = redis.call('DEL', KEYS[1])
        if deleted == 1 and ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], 'd ' .. ARGV[3]) end
        return {deleted, m[1] or false}
        ",
    )
});

/// KEYS[1] principal index. ARGV: member, its deadline. Adds or moves the member and keeps the
/// index alive at least as long as its latest session; members past their deadline are pruned.
pub(crate) static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
        local ttl = redis.call('PTTL', KEYS[1])
        local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
        redis.call('PEXPIREAT', KEYS[1], latest[2])
        return ttl
        ",
    )
});
