//! The Lua scripts of the Redis store: each does what must happen atomically (a versioned
//! write with its indexes and announcement, a read that slides the idle expiry, deletions by
//! user or provider session).

/// The scripts, loaded once per store.
pub(super) struct Scripts {
    pub load: redis::Script,
    pub save: redis::Script,
    pub delete: redis::Script,
    pub delete_user: redis::Script,
    pub delete_sid: redis::Script,
    pub user_sessions: redis::Script,
    pub save_marks: redis::Script,
    pub unlock: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            load: redis::Script::new(LOAD),
            save: redis::Script::new(SAVE),
            delete: redis::Script::new(DELETE),
            delete_user: redis::Script::new(DELETE_USER),
            delete_sid: redis::Script::new(DELETE_SID),
            user_sessions: redis::Script::new(USER_SESSIONS),
            save_marks: redis::Script::new(SAVE_MARKS),
            unlock: redis::Script::new(UNLOCK),
        }
    }
}

/// Reads a session, slides its idle expiry (never past its absolute end) and notes the use.
const LOAD: &str = r"
local v = redis.call('HMGET', KEYS[1], 'v', 'u', 'd', 'e', 'c', 'i')
if not v[1] then return false end
local left = (tonumber(v[4]) - tonumber(ARGV[1])) * 1000
if left <= 0 then redis.call('DEL', KEYS[1]) return false end
local idle = tonumber(ARGV[2])
if idle < left then left = idle end
redis.call('PEXPIRE', KEYS[1], left)
redis.call('HSET', KEYS[1], 't', ARGV[1])
return v
";

/// A user's live sessions: for each, its key without the prefix ARGV[2], creation, last use
/// and end (read only: a stale index entry is skipped here and cleaned by deletions).
const USER_SESSIONS: &str = r"
local out = {}
local now = tonumber(ARGV[1])
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', k, 'c', 't', 'e')
  if v[3] and tonumber(v[3]) > now then
    table.insert(out, {string.sub(k, #ARGV[2] + 1), v[1] or '0', v[2] or '0', v[3]})
  end
end
return out
";

/// Writes a session if its version is the expected one ('' = must not exist), indexes it by
/// user, and announces a rewrite.
const SAVE: &str = r"
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
local left = (tonumber(ARGV[5]) - tonumber(ARGV[6])) * 1000
if left <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'u', ARGV[3], 'd', ARGV[4], 'e', ARGV[5], 'c', ARGV[10], 'i', ARGV[11], 't', ARGV[6])
local idle = tonumber(ARGV[7])
if idle < left then redis.call('PEXPIRE', KEYS[1], idle) else redis.call('PEXPIRE', KEYS[1], left) end
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < left then redis.call('PEXPIRE', KEYS[2], left) end
if ARGV[11] ~= '' then
  redis.call('SADD', KEYS[3], KEYS[1])
  if redis.call('PTTL', KEYS[3]) < left then redis.call('PEXPIRE', KEYS[3], left) end
end
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return 1
";

/// Ends one session and announces it.
const DELETE: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
redis.call('DEL', KEYS[1])
if u then redis.call('SREM', ARGV[3] .. u, KEYS[1]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
";

/// Ends every session of a user created before ARGV[3] (with ARGV[4] = '1', only those stored
/// without a provider session id) and announces it.
const DELETE_USER: &str = r"
local n = 0
local before = tonumber(ARGV[3])
local unbound_only = ARGV[4] == '1'
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', k) == 0 then
    redis.call('SREM', KEYS[1], k)
  elseif tonumber(redis.call('HGET', k, 'c') or '0') < before
      and (not unbound_only or (redis.call('HGET', k, 'i') or '') == '') then
    n = n + redis.call('DEL', k)
    redis.call('SREM', KEYS[1], k)
  end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

/// Ends every session of a provider session and announces each.
const DELETE_SID: &str = r"
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', k)
  redis.call('PUBLISH', ARGV[1], 's' .. string.sub(k, #ARGV[2] + 1))
end
redis.call('DEL', KEYS[1])
return n
";

/// Replaces a user's revocation record and deny-list entry, and announces it.
const SAVE_MARKS: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('PUBLISH', ARGV[6], 'u' .. ARGV[4])
return 1
";

/// Releases a lock only if it is still ours.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
