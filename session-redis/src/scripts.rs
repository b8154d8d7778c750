//! Server-side scripts: each operation on a session is one atomic round trip (EVALSHA, with the
//! driver falling back to EVAL when the server does not have the script cached).
//!
//! A session is one hash: a field per attribute, plus two metadata fields whose names start
//! with `\1` (attribute names may not contain control characters, so they cannot collide):
//!
//! - `\1m`: `version created accessed idle absolute size count`, decimal, space-separated;
//!   times in epoch ms, durations in ms, `absolute` is `-` when the session has no absolute
//!   lifetime, `size` and `count` are the attributes' accounted bytes and number (so size limits
//!   are checked without reading every attribute). The deadline is derived:
//!   `min(accessed + idle, created + absolute)`.
//! - `\1p`: the principal, absent when none.
//! - `\1x`: for a session with a principal, the score it has in its principal index: its
//!   deadline when indexed plus a slack of a quarter of its idle timeout. Saves and touches
//!   report that the index needs the session again only when the deadline passes it, so most
//!   of them stay one round trip (the index lives in another Cluster slot).
//!
//! A key that holds a value of another type (`WRONGTYPE`, left by a foreign writer) is an
//! absent session for save and touch (they read it with `redis.pcall`, at no extra cost), and
//! delete removes it.
//!
//! The metadata is one field rather than one field per value because every `redis.call` and
//! every number formatted in Lua costs the single-threaded server about a microsecond: this
//! layout reads it with one call and writes it with the attributes in one HSET. Every script
//! that moves the deadline also moves the key's expiry to it (PEXPIREAT). Every write that
//! changes attributes, principal or timeouts increments the version; the near cache relies on
//! that (see the `store` module).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind};

/// `EVALSHA <sha1> 1 <key>`; the caller appends the arguments. Built as one command buffer
/// rather than through `Script::key`, which allocates a vector per argument and copies them.
pub(crate) fn call(script: &Script, key: &str) -> Cmd {
    call_sized(script, key, 8, 64)
}

/// [`call`] with room for `args` more arguments of `bytes` bytes in all, so that appending
/// them does not grow (and copy) the command buffer step by step.
pub(crate) fn call_sized(script: &Script, key: &str, args: usize, bytes: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(4 + args, 64 + key.len() + bytes);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(1).arg(key);
    cmd
}

/// Runs a command made by [`call`]; a server that does not have the script cached (restarted,
/// flushed, failed over) gets it loaded and the command is sent again.
pub(crate) async fn run<T: FromRedisValue>(
    script: &Script,
    cmd: &Cmd,
    connection: &mut impl ConnectionLike,
) -> RedisResult<T> {
    match cmd.query_async(connection).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(connection).await?;
            cmd.query_async(connection).await
        }
        result => result,
    }
}

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

/// KEYS[1] session. ARGV: [1] the fast-path prefix ('' = merge), [2] the new deadline, [3] the
/// new index score ('' when the session has no principal), [4] number of removals R, [5] `now
/// expected max_bytes max_count idle absolute_op absolute principal_op[ principal]` for the
/// merging path (`-` = none / keep; absolute_op `0` none, `1` set; principal_op `0` clear, `1`
/// set to the rest of the argument after one space), [6 .. 5+R] removed names, then name/value
/// pairs to the end, the last pair being `\1m` and the new metadata as the saver computed it.
///
/// Fast path: when the stored metadata starts with the prefix `version created accessed ` the
/// saver loaded, nobody has written or touched the session since (every write increments the
/// version), so the saver's own copy is what is stored and everything it computed from it
/// (metadata, size, count, deadline) is exact: the script only writes. It reads only the
/// fields it needs (a session without a principal has no index score to compare), and the
/// merging path's parameters come packed in one argument that the fast path never parses:
/// every argument and every `redis.call` costs the server a share of a microsecond (with nine
/// fixed arguments instead of five, the fast path took 4.6 µs of server time instead of 4.4).
/// Returns the index score when the session must be (re)added to its principal's index, else 0.
///
/// Otherwise the script merges: it parses the stored metadata, checks liveness, version and
/// limits, and computes the metadata itself. Returns {version, deadline, old principal|false,
/// new principal|false, index score} (score as above), or {-1} not found, {-2, stored
/// version} conflict, {-3, size, count} too large.
///
/// Unchanged metadata values are written back as the strings they were read as: formatting a
/// number in Lua costs more than the rest of the arithmetic.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local removals = tonumber(ARGV[4])
        local ups_at = 6 + removals
        if ARGV[1] ~= '' then
            local meta, score
            if ARGV[3] == '' then
                meta = redis.pcall('HGET', k, '\1m')
            else
                local f = redis.pcall('HMGET', k, '\1m', '\1x')
                if f.err then return {-1} end
                meta, score = f[1], f[2]
            end
            if not meta or type(meta) == 'table' then return {-1} end
            if string.find(meta, ARGV[1], 1, true) == 1 then
                if removals > 0 then
                    redis.call('HDEL', k, unpack(ARGV, 6, ups_at - 1))
                end
                redis.call('HSET', k, unpack(ARGV, ups_at))
                redis.call('PEXPIREAT', k, ARGV[2])
                if ARGV[3] ~= '' and (not tonumber(score) or tonumber(ARGV[2]) > tonumber(score)) then
                    redis.call('HSET', k, '\1x', ARGV[3])
                    return tonumber(ARGV[3])
                end
                return 0
            end
        end
        local m = redis.pcall('HMGET', k, '\1m', '\1p', '\1x')
        if m.err or not m[1] then return {-1} end
        local nows, expected, max_bytes, max_count, idle, abs_op, abs, principal_op, new_principal =
            string.match(ARGV[5], '^(%d+) (%S+) (%d+) (%d+) (%S+) (%S+) (%S+) (%S) ?(.*)$')
        local vs, cs, as, is, bs, ss, ns =
            string.match(m[1], '^(%d+) (%d+) (%d+) (%d+) ([%d-]+) (%d+) (%d+)$')
        if not vs then return {-1} end
        local v, c, a, i, b = tonumber(vs), tonumber(cs), tonumber(as), tonumber(is), tonumber(bs)
        local now = tonumber(nows)
        local dl = a + i
        if b and c + b < dl then dl = c + b end
        if dl <= now then return {-1} end
        if expected ~= '-' and tonumber(expected) ~= v then return {-2, v} end
        local meta_at = #ARGV
        if meta_at > ups_at + 1 or removals > 0 then
            local s, n = tonumber(ss), tonumber(ns)
            for j = 6, ups_at - 1 do
                local old = redis.call('HSTRLEN', k, ARGV[j])
                if old > 0 then s = s - (#ARGV[j] + old + 8); n = n - 1 end
            end
            for j = ups_at, meta_at - 3, 2 do
                local old = redis.call('HSTRLEN', k, ARGV[j])
                if old > 0 then s = s - (#ARGV[j] + old + 8); n = n - 1 end
                s = s + #ARGV[j] + #ARGV[j + 1] + 8; n = n + 1
            end
            if s > tonumber(max_bytes) or n > tonumber(max_count) then return {-3, s, n} end
            if removals > 0 then
                redis.call('HDEL', k, unpack(ARGV, 6, ups_at - 1))
            end
            ss, ns = s, n
        end
        local old_principal = m[2] or false
        local principal = old_principal
        if principal_op == '0' then redis.call('HDEL', k, '\1p'); principal = false
        elseif principal_op == '1' then redis.call('HSET', k, '\1p', new_principal); principal = new_principal end
        if idle ~= '-' then is = idle; i = tonumber(is) end
        if abs_op == '0' then bs = '-'; b = nil
        elseif abs_op == '1' then bs = abs; b = tonumber(bs) end
        if now > a then a = now; as = nows end
        dl = a + i
        if b and c + b < dl then dl = c + b end
        v = v + 1
        ARGV[meta_at] = v .. ' ' .. cs .. ' ' .. as .. ' ' .. is .. ' ' .. bs .. ' ' .. ss .. ' ' .. ns
        redis.call('HSET', k, unpack(ARGV, ups_at))
        redis.call('PEXPIREAT', k, dl)
        local score = 0
        if principal and (principal ~= old_principal or not tonumber(m[3]) or dl > tonumber(m[3])) then
            score = dl + math.floor(i / 4)
            redis.call('HSET', k, '\1x', score)
        end
        return {v, dl, old_principal, principal, score}
        ",
    )
});

/// KEYS[1] session. ARGV[1] now. Returns {deadline, principal|false, index score} (as for
/// [`SAVE`]), or {-1} not found.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local m = redis.pcall('HMGET', k, '\1m', '\1p', '\1x')
        if m.err or not m[1] then return {-1} end
        local vs, cs, as, rest = string.match(m[1], '^(%d+) (%d+) (%d+) (.*)$')
        local is, bs = string.match(rest or '', '^(%d+) ([%d-]+) ')
        if not is then return {-1} end
        local now, c, a, i, b = tonumber(ARGV[1]), tonumber(cs), tonumber(as), tonumber(is), tonumber(bs)
        local dl = a + i
        if b and c + b < dl then dl = c + b end
        if dl <= now then return {-1} end
        if now > a then a = now; as = ARGV[1] end
        dl = a + i
        if b and c + b < dl then dl = c + b end
        local meta = vs .. ' ' .. cs .. ' ' .. as .. ' ' .. rest
        local score = 0
        if m[2] and (not tonumber(m[3]) or dl > tonumber(m[3])) then
            score = dl + math.floor(i / 4)
            redis.call('HSET', k, '\1m', meta, '\1x', score)
        else
            redis.call('HSET', k, '\1m', meta)
        end
        redis.call('PEXPIREAT', k, dl)
        return {dl, m[2] or false, score}
        ",
    )
});

/// KEYS[1] session. ARGV[1] expected version ('' = any), ARGV[2] event channel ('' = none),
/// ARGV[3] key hex. Returns {deleted 0/1, principal|false}, or {-2} if the version differs
/// (nothing deleted). A value of another type at the key (a foreign writer's) is deleted too
/// when no version is expected.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local m = redis.pcall('HMGET', KEYS[1], '\1p', '\1m')
        if m.err then
            if ARGV[1] ~= '' then return {-2} end
            m = {false, false}
        end
        if ARGV[1] ~= '' and m[2] and string.match(m[2], '^%d+') ~= ARGV[1] then return {-2} end
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
