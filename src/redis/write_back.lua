-- The write-back write: the row into the cache and its change onto the queue, in one
-- atomic call, so the cache and the queue can never disagree.
--
-- KEYS: the row key, its tombstone key, its read-marker key (the row key again where
-- one cannot share its slot), the queue stream.
-- ARGV: [1] the version the write was based on ('' for a row the cache does not hold),
--       [2] the new version, [3] 'u' or 'd', [4] the tombstone TTL in ms, [5] the
--       change for the queue (JSON), [6] the write's time (µs), then the JSON row (u).
--
-- Compare-and-set: the write lands only when the cache still holds the version it was
-- based on (the row the writer merged its columns into); else it returns 0 and the writer
-- reads again and retries with a new version. So concurrent writers of one row, in any
-- number of processes, never lose each other's columns, and versions grow along the
-- queue for every row: the flusher can apply the queue in order.
local key, tomb, marker, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, v, op, tomb_ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local current = false
local doc = redis.pcall('GET', key)
if type(doc) == 'string' then
  current = string.match(doc, '^{"_cachesync_v":(%d+)') or ''
elseif tomb ~= key then
  local t = redis.call('GET', tomb)
  if t then current = t end
end
if (current or '') ~= base then return 0 end

-- A fill whose MySQL read began before this write must not land.
if marker ~= key then redis.call('DEL', marker) end
if op == 'd' then
  redis.call('DEL', key)
  if tomb ~= key then redis.call('SET', tomb, v, 'PX', tomb_ttl) end
else
  if tomb ~= key then redis.call('DEL', tomb) end
  -- No TTL: an unflushed row must not expire (the flusher's refresh sets it).
  redis.call('SET', key, '{"_cachesync_v":' .. v .. ',' .. string.sub(ARGV[7], 2))
end
redis.call('XADD', stream, '*', 'v', v, 'at', ARGV[6], 'change', ARGV[5])
return 1
