-- Versions are u64 in decimal: compare as text (a longer string is larger) because Lua
-- numbers are doubles and lose precision above 2^53.
local function older(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- The version a row key holds: the first JSON member or the hash field `_cachesync_v`
-- (nil for a missing key, a row written without one, or a key of another type).
local function stored_version(key, fmt)
  if fmt == 'j' then
    local doc = redis.pcall('GET', key)
    if type(doc) == 'string' then return string.match(doc, '^{"_cachesync_v":(%d+)') end
  else
    local v = redis.pcall('HGET', key, '_cachesync_v')
    if type(v) == 'string' then return v end
  end
  return nil
end

-- Writes the row, deleting the keys in `doomed` (a list) in the same DEL: a hash is
-- replaced whole, so its old fields go with them.
local function write_row(key, fmt, ttl, first, last, doomed)
  if fmt == 'h' then doomed[#doomed + 1] = key end
  if #doomed > 0 then redis.call('DEL', unpack(doomed)) end
  if fmt == 'j' then
    if ttl > 0 then redis.call('SET', key, ARGV[first], 'PX', ttl) else redis.call('SET', key, ARGV[first]) end
  else
    redis.call('HSET', key, unpack(ARGV, first, last))
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
end

-- A read-path fill: only while the lease taken before the MySQL read is intact.
local function fill(key, tomb, marker, op, token, fmt, ttl, first, last)
  if marker == key or redis.call('GET', marker) ~= token then return 0 end
  -- A tombstone says the row is deleted here even if MySQL has not caught up (write-back
  -- flushes later); a row MySQL has again is written by its own synced change.
  if op == 'f' and tomb ~= key and redis.call('EXISTS', tomb) == 1 then
    redis.call('DEL', marker)
    return 0
  end
  if op == 'n' then
    if redis.call('EXISTS', key) == 1 then redis.call('DEL', marker) return 0 end
    redis.call('SET', marker, 'absent', 'PX', ttl)
    return 1
  end
  redis.call('DEL', marker)
  if op == 'f' and redis.call('EXISTS', key) == 1 then return 0 end
  -- A refresh keeps the version the present value carries: nothing synced has reached
  -- Redis since the lease, so the row read is at least that new, and a late older change
  -- must still be refused.
  local v
  if op == 'r' then v = stored_version(key, fmt) end
  if v and fmt == 'j' then
    local doc = '{"_cachesync_v":' .. v .. ',' .. string.sub(ARGV[first], 2)
    if ttl > 0 then redis.call('SET', key, doc, 'PX', ttl) else redis.call('SET', key, doc) end
    return 1
  end
  write_row(key, fmt, ttl, first, last, {})
  if v then redis.call('HSET', key, '_cachesync_v', v) end
  return 1
end

-- The version a row key holds and its tombstone's (nil for none). A JSON row and its
-- tombstone share a slot, so one MGET reads both; a hash needs HGET, and then the
-- tombstone is read only for a key without a version: a tombstone stands only while its
-- row key is absent (a delete sets it with the key gone, every write of the key clears
-- it, a fill never lands over it).
local function versions(key, tomb, fmt)
  if fmt == 'j' and tomb ~= key then
    -- MGET answers nil, not an error, for a key of another type: no version, as GET's
    -- WRONGTYPE gives below.
    local got = redis.call('MGET', key, tomb)
    local current = got[1] and string.match(got[1], '^{"_cachesync_v":(%d+)') or nil
    return current, got[2] or nil
  end
  local current = stored_version(key, fmt)
  if not current and tomb ~= key then return nil, redis.call('GET', tomb) or nil end
  return current, nil
end

-- Every redis.call costs about a microsecond of Redis' one thread (argument objects,
-- command lookup, the reply back into Lua): a change is one read (`versions`), one DEL of
-- whatever it removes, and its write — three calls, where it was up to five.
local function apply(key, tomb, marker, op, ver, fmt, ttl, tomb_ttl, first, last)
  if op == 'f' or op == 'r' or op == 'n' then
    return fill(key, tomb, marker, op, ver, fmt, ttl, first, last)
  end
  -- Whatever this change does, a fill whose MySQL read began before it must not land:
  -- the read marker is deleted in every case below, stale changes included.
  local doomed = {}
  if marker ~= key then doomed[1] = marker end
  local result = 1
  if ver ~= '' then
    local current, t = versions(key, tomb, fmt)
    if t then
      -- A tombstone goes when the row is written again.
      doomed[#doomed + 1] = tomb
      if not current or older(current, t) then current = t end
    end
    if current then
      if older(ver, current) then
        if marker ~= key then redis.call('DEL', marker) end
        return 0
      end
      if ver == current then result = 2 end
    end
  end
  if op == 'd' then
    doomed[#doomed + 1] = key
    redis.call('DEL', unpack(doomed))
    if tomb ~= key and ver ~= '' then redis.call('SET', tomb, ver, 'PX', tomb_ttl) end
    return result
  end
  write_row(key, fmt, ttl, first, last, doomed)
  return result
end

local checkpoint, tomb_ttl, expected = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local k, a, results = 1, 4, {}
if checkpoint ~= '' then
  k = 2
  -- Compare-and-set: before anything is written, so a moved checkpoint writes nothing.
  -- Finding the checkpoint this very call sets is a retry of a call whose answer was lost
  -- (the connection dropped after Redis ran it): run it again — same versions, same bytes.
  if expected ~= '' then
    local stored = redis.call('GET', KEYS[1])
    if stored ~= expected and stored ~= checkpoint then return {-1} end
  end
end
while a <= #ARGV do
  local n = tonumber(ARGV[a + 4])
  results[#results + 1] = apply(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a], ARGV[a + 1],
    ARGV[a + 2], tonumber(ARGV[a + 3]), tomb_ttl, a + 5, a + 4 + n)
  k = k + 3
  a = a + 5 + n
end
if checkpoint ~= '' then redis.call('SET', KEYS[1], checkpoint) end
return results
