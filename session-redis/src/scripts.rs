//! Server-side scripts: each operation on a session is one atomic round trip (EVALSHA, with the
//! driver falling back to EVAL when the server does not have the script cached).
//!
//! A session is one hash of up to four fields, whose names start with `\1` (attribute names
//! may not contain control characters, so they cannot collide with an earlier layout's
//! attribute fields):
//!
//! - `\1m`: `version created accessed idle absolute size count p<token>`, decimal, space-separated;
//!   times in epoch ms, durations in ms, `absolute` is `-` when the session has no absolute
//!   lifetime, `size` and `count` are the attributes' accounted bytes and number. The last word
//!   names the packed attributes' field; a hash written by an earlier version has no such word
//!   and a field per attribute, and is read as such and rewritten packed by its first save.
//!   The deadline is derived: `min(accessed + idle, created + absolute)`.
//! - `\1a<token>`: every attribute, packed by core's attribute encoding (its format byte
//!   first), so a read is one value to parse whatever the number of attributes. The token (16
//!   hex digits, fresh for every write) is the metadata's last word, `p<token>`: large
//!   attributes are staged under a new name before the script that commits them runs, small
//!   ones travel in the script's arguments (see [`run_staged`]).
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
//! layout reads it with one call and writes it with the attributes in one HSET, and the save
//! script formats no number at all. Every script
//! that moves the deadline also moves the key's expiry to it (PEXPIREAT). Every write that
//! changes attributes, principal or timeouts increments the version; the near cache relies on
//! that (see the `store` module).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind, Value};

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

/// Runs `cmd` (made by [`call`] for `script`) in one transaction after staging `value` in the
/// hash `key` under `field`: `MULTI; HSET key field value; EVALSHA …; EXEC`, one round trip.
///
/// Why staged: Redis turns every script argument into a Lua string, and a 20 KB argument made a
/// script that does nothing cost the server 24 µs instead of 1.6 (Lua's garbage collector pays
/// for every byte it allocates). So the packed attributes never pass through Lua: they are
/// written by a plain `HSET` under a field name no one else uses, and the script, which runs
/// right after it in the same transaction, either commits them (names the field in the
/// metadata and drops the previous one) or deletes them. A server without the script cached
/// answers the script with `NOSCRIPT`; the script is then loaded and the transaction sent
/// again, which stages the same field once more and so leaves nothing behind. (Only a client
/// that dies between those two sends leaves the staged field, an unnamed field that readers
/// ignore and the next rewrite or the key's expiry removes; on a key that was gone meanwhile,
/// a field-only hash without expiry.)
///
/// A value of at most [`INLINE_MAX`] bytes is not staged: it is appended to the script's
/// field/value pairs (which run to the end of its arguments), and the save is one EVALSHA. At
/// that size Lua's copy of the argument costs the server less than the three commands of the
/// transaction around it (the `MULTI`, the `HSET`, the `EXEC`, each parsed, queued and
/// answered), and the client encodes and parses one command instead of four. The scripts
/// treat an inline value like a staged one that is not there yet: the field is written with
/// the metadata, and the `HDEL` of the staged field on a lost race deletes nothing.
pub(crate) async fn run_staged(
    script: &Script,
    key: &str,
    field: &[u8],
    value: &[u8],
    mut cmd: Cmd,
    connection: &mut impl ConnectionLike,
) -> RedisResult<Value> {
    if travels_inline(value) {
        cmd.arg(field).arg(value);
        return run(script, &cmd, connection).await;
    }
    // Sized up front: a command grown argument by argument reallocates (and copies) the value.
    let mut stage = Cmd::with_capacity(4, 32 + key.len() + field.len() + value.len());
    stage.arg("HSET").arg(key).arg(field).arg(value);
    run_after(script, key, stage, cmd, connection).await
}

/// Runs `cmd` (made by [`call`] for `script`) in one transaction right after `stage`, a plain
/// command that writes what the script must not receive as an argument: `MULTI; <stage>;
/// EVALSHA …; EXEC`, one round trip. `key` is the session's key (the slot of both). A server
/// without the script cached answers it with `NOSCRIPT`: the script is loaded and the
/// transaction sent again, so `stage` must be safe to run twice.
pub(crate) async fn run_after(
    script: &Script,
    key: &str,
    stage: Cmd,
    cmd: Cmd,
    connection: &mut impl ConnectionLike,
) -> RedisResult<Value> {
    let mut pipe = redis::pipe();
    pipe.atomic().ignore_errors();
    pipe.add_command(stage).add_command(cmd);
    let mut loaded = false;
    let mut redirects = 0;
    loop {
        // The staging HSET fails on a key of another type; the script says what that means.
        let mut replies: Vec<Value> = match pipe.query_async(connection).await {
            Err(error) if redirects < MOVED_ATTEMPTS && crate::error::in_moving_cluster(&error) => {
                // The slot moved (the transaction ran nowhere). A single command on the key
                // follows the redirect and makes the cluster client learn the new owner, which
                // a transaction does not; then the transaction goes there.
                redirects += 1;
                let _ = redis::cmd("PTTL")
                    .arg(key)
                    .query_async::<Value>(connection)
                    .await;
                session_core::raw::backoff(redirects).await;
                continue;
            }
            result => result?,
        };
        match replies.pop() {
            Some(Value::ServerError(error))
                if !loaded && error.kind() == Some(ServerErrorKind::NoScript) =>
            {
                script.load_async(connection).await?;
                loaded = true;
            }
            Some(Value::ServerError(error)) => return Err(error.into()),
            Some(reply) => return Ok(reply),
            None => {
                return Err(redis::RedisError::from(std::io::Error::other(
                    "empty reply to a transaction",
                )))
            }
        }
    }
}

/// The largest packed attributes passed to a script as an argument rather than staged by an
/// `HSET` in a transaction (see [`run_staged`]).
const INLINE_MAX: usize = 2048;

/// Whether [`run_staged`] passes `value` to the script rather than staging it.
pub(crate) fn travels_inline(value: &[u8]) -> bool {
    value.len() <= INLINE_MAX
}

/// The bytes [`run_staged`] appends to the script's command for `field` and `value`: room a
/// command made by [`call_sized`] should have for them.
pub(crate) fn inline_bytes(field: &[u8], value: &[u8]) -> usize {
    if travels_inline(value) {
        field.len() + value.len()
    } else {
        0
    }
}

/// Transactions sent again after their slot moved, before the error (retryable) is returned.
const MOVED_ATTEMPTS: usize = 4;

/// KEYS[1] session. ARGV[1] the staged attributes field (see [`run_staged`]), ARGV[2] deadline,
/// ARGV[3] event channel ('' = none), ARGV[4] key hex, then the metadata field/value pairs (and
/// the attributes field when they are small enough to travel inline).
/// Returns 1, or 0 if the key holds a session (or a value of another type): the staged field is
/// then removed and nothing else written.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local taken = redis.pcall('HEXISTS', k, '\1m')
        if type(taken) ~= 'number' then return 0 end
        if taken == 1 then
            redis.call('HDEL', k, ARGV[1])
            return 0
        end
        redis.call('HSET', k, unpack(ARGV, 5))
        redis.call('PEXPIREAT', k, ARGV[2])
        if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], 'c ' .. ARGV[4]) end
        return 1
        ",
    )
});

/// KEYS[1] session. ARGV[1] the prefix the stored metadata must start with (`version created
/// accessed `, as the saver read it), ARGV[2] the mode, ARGV[3] the new deadline, ARGV[4] the
/// new index score ('' = none, or the saver decides), ARGV[5] the field of the new packed
/// attributes, ARGV[6] `s` when that field was staged (see [`run_staged`]) and '' when the
/// attributes travel inline, among the pairs, then the metadata field/value pairs to the end.
///
/// The new attributes are committed only while the stored metadata still starts with the
/// prefix: every write of attributes, principal or timeouts increments the version and every
/// touch moves the access time, so a match means the stored session is the one the saver
/// merged into, and what the saver computed from it (attributes, metadata, limits, deadline)
/// is exact.
///
/// - Mode `w` (a copy nobody wrote since its load, into a packed hash): drops the previous
///   attributes field (the one the stored metadata names) unless the new attributes go to the
///   same field (inline saves all use one name, see `meta::INLINE_TOKEN`), and writes the new
///   metadata. Returns the index score when the session must be (re)added to its principal's
///   index (its deadline passed the stored `\1x`), else 0.
/// - Mode `r` (a merge, or a hash of the earlier per-attribute layout): drops every field but
///   the new attributes' and writes the pairs (metadata, principal, index score). Returns 0
///   (the saver read `\1x` and decided the index itself).
///
/// When the metadata does not match, a staged field is removed (an inline one was never
/// written, and its name may be the stored session's own field) and the reply is the stored
/// hash (HGETALL's flat array), so the saver merges into it and tries again without another
/// read; an empty array when the session is gone (or the key holds another type). The server
/// does nothing per attribute: the merge, the limits and the optimistic version check run in
/// the client, on the same [`SessionRecord::apply`](session_core::raw::SessionRecord::apply)
/// as every other store.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local field = ARGV[5]
        local staged = ARGV[6] == 's'
        local meta, score
        if ARGV[4] == '' then
            meta = redis.pcall('HGET', k, '\1m')
        else
            local f = redis.pcall('HMGET', k, '\1m', '\1x')
            if f.err then return {} end
            meta, score = f[1], f[2]
        end
        if type(meta) ~= 'string' then
            if staged then redis.pcall('HDEL', k, field) end
            return {}
        end
        local w = ARGV[2] == 'w'
        local old = string.match(meta, ' p(%x+)$')
        if string.find(meta, ARGV[1], 1, true) ~= 1 or (w and not old) then
            if staged then redis.call('HDEL', k, field) end
            return redis.call('HGETALL', k)
        end
        if w then
            local previous = '\1a' .. old
            if previous ~= field then redis.call('HDEL', k, previous) end
        else
            local drop = {}
            for _, name in ipairs(redis.call('HKEYS', k)) do
                if name ~= field and name ~= '\1m' then drop[#drop + 1] = name end
            end
            if #drop > 0 then redis.call('HDEL', k, unpack(drop)) end
        end
        redis.call('HSET', k, unpack(ARGV, 7))
        redis.call('PEXPIREAT', k, ARGV[3])
        if ARGV[4] ~= '' and (not tonumber(score) or tonumber(ARGV[3]) > tonumber(score)) then
            redis.call('HSET', k, '\1x', ARGV[4])
            return tonumber(ARGV[4])
        end
        return 0
        ",
    )
});

/// KEYS[1] session. ARGV[1] now, ARGV[2] now in 16 digits. Returns {deadline, principal|false,
/// index score} (as for [`SAVE`]), or {-1} not found. Either layout: a hash, or a string of
/// the string layout (the `strings` module), whose access time and index score it rewrites in
/// place.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k = KEYS[1]
        local now = tonumber(ARGV[1])
        local t = redis.call('TYPE', k).ok
        if t == 'string' then
            local h = redis.call('GETRANGE', k, 0, 148)
            local vs, cs, as, is, bs, ss, ps = string.match(h, '^\1s(%d+) (%d+) (%d+) (%d+) ([%d-]+) ([%d-]+) ([%d-]+)\n')
            if not vs or #as ~= 16 or (ss ~= '-' and #ss ~= 16) then return {-1} end
            local c, a, i, b = tonumber(cs), tonumber(as), tonumber(is), tonumber(bs)
            local dl = a + i
            if b and c + b < dl then dl = c + b end
            if dl <= now then return {-1} end
            local at = 2 + #vs + 1 + #cs + 1
            if now > a then
                a = now
                redis.call('SETRANGE', k, at, ARGV[2])
            end
            dl = a + i
            if b and c + b < dl then dl = c + b end
            local score, principal = 0, false
            if ps ~= '-' and ss ~= '-' and dl > tonumber(ss) then
                score = dl + math.floor(i / 4)
                redis.call('SETRANGE', k, at + 16 + 1 + #is + 1 + #bs + 1, string.format('%016d', score))
                local nl = string.find(h, '\n', 1, true)
                principal = redis.call('GETRANGE', k, nl, nl + tonumber(ps) - 1)
            end
            redis.call('PEXPIREAT', k, dl)
            return {dl, principal, score}
        end
        if t ~= 'hash' then return {-1} end
        local m = redis.call('HMGET', k, '\1m', '\1p', '\1x')
        if not m[1] then return {-1} end
        local vs, cs, as, rest = string.match(m[1], '^(%d+) (%d+) (%d+) (.*)$')
        local is, bs = string.match(rest or '', '^(%d+) ([%d-]+) ')
        if not is then return {-1} end
        local c, a, i, b = tonumber(cs), tonumber(as), tonumber(is), tonumber(bs)
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
/// (nothing deleted). Either layout; a value that is neither (a foreign writer's) is deleted
/// too when no version is expected.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local k, expected = KEYS[1], ARGV[1]
        local t = redis.call('TYPE', k).ok
        local version, principal = false, false
        if t == 'hash' then
            local m = redis.call('HMGET', k, '\1p', '\1m')
            principal = m[1]
            version = m[2] and string.match(m[2], '^%d+')
            if expected ~= '' and m[2] and version ~= expected then return {-2} end
        elseif t == 'string' then
            local h = redis.call('GETRANGE', k, 0, 148)
            local vs, ss, ps = string.match(h, '^\1s(%d+) %d+ %d+ %d+ [%d-]+ ([%d-]+) ([%d-]+)\n')
            if expected ~= '' and vs ~= expected then return {-2} end
            if vs and ps ~= '-' then
                local nl = string.find(h, '\n', 1, true)
                principal = redis.call('GETRANGE', k, nl, nl + tonumber(ps) - 1)
            end
        elseif t ~= 'none' and expected ~= '' then
            return {-2}
        end
        local deleted = redis.call('DEL', k)
        if deleted == 1 and ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], 'd ' .. ARGV[3]) end
        return {deleted, principal}
        ",
    )
});

/// KEYS[1] session. ARGV[1] the new value (string layout), ARGV[2] the header of the value it
/// replaces (its first line, newline included), ARGV[3] deadline. `SET … IFEQ` for a server
/// without `IFEQ` (see `RedisStore::set_if_equal`): returns 1 written, 0 the stored value is
/// another or none, -1 the key holds another type.
///
/// It compares the header only, so that the old value does not pass through Lua too (every
/// byte of a script's arguments is copied into a Lua string). That is as strict as comparing
/// the value: every save writes a new version and every touch a new access time, both in the
/// header, so a stored value with the loaded header is the loaded value (the hash layout's
/// save compares the same words).
pub(crate) static SET_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local h = redis.pcall('GETRANGE', KEYS[1], 0, #ARGV[2] - 1)
        if type(h) == 'table' then return -1 end
        if h ~= ARGV[2] then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
        return 1
        ",
    )
});

/// KEYS[1] session, KEYS[2] its staging key (see `RedisStore::set_if_equal`), which holds the
/// new value with its expiry. ARGV[1] the header of the value it replaces. [`SET_IF_EQUAL`] for
/// a large value: renames the staged value over the session (the value never passes through
/// Lua), or deletes it. Returns as `SET_IF_EQUAL` does.
pub(crate) static SET_STAGED_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local h = redis.pcall('GETRANGE', KEYS[1], 0, #ARGV[1] - 1)
        local answer = 1
        if type(h) == 'table' then answer = -1 elseif h ~= ARGV[1] then answer = 0 end
        if answer ~= 1 then
            redis.call('DEL', KEYS[2])
            return answer
        end
        redis.call('RENAME', KEYS[2], KEYS[1])
        return 1
        ",
    )
});

/// KEYS[1] session. ARGV[1] the value (string layout), ARGV[2] deadline, ARGV[3] event channel
/// ('' = none), ARGV[4] key hex. Returns 1, or 0 if the key holds anything (a session of
/// either layout, or another writer's value): nothing is written then.
pub(crate) static CREATE_STRING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2]) then return 0 end
        if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], 'c ' .. ARGV[4]) end
        return 1
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
