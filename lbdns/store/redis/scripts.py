"""The Lua scripts every write runs in Redis: change the hash, bump the version, publish, in one
step, so every server sees the changes in one order (``store``'s docstring)."""

# KEYS: hash, version, epoch; ARGV: field, patch (JSON object merged into the stored one),
# channel, origin. Returns {version, merged JSON}; {-1} when the store is empty (not seeded).
HOST_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1, ''} end
local current = redis.call('HGET', KEYS[1], ARGV[1])
local change = {}
if current then change = cjson.decode(current) end
for k, v in pairs(cjson.decode(ARGV[2])) do change[k] = v end
local version = redis.call('INCR', KEYS[2])
change.v = version
local value = cjson.encode(change)
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('PUBLISH', ARGV[3], version .. ' ' .. ARGV[4] .. ' ' .. cjson.encode(
  {op = 'host', key = ARGV[1], change = change}))
return {version, value}
"""

# KEYS: hash, version, epoch; ARGV: channel, new epoch, then (field, JSON, version) triples.
# A host's change is written unless Redis holds one of a later version (another server, seeding
# at the same time, saw a later change); the counter continues above every version seen. The
# epoch is set only if absent. Only when this call set it or wrote a change does it publish
# "0 resync <its epoch>", so that the others re-read; returns {set the epoch (1/0), written}.
SEED_SCRIPT = """
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
local written = 0
for i = 3, #ARGV, 3 do
  local version = tonumber(ARGV[i + 2])
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  local held = 0
  if current then held = tonumber(cjson.decode(current).v) or 0 end
  if current == false or held < version then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    written = written + 1
  end
  if version > top then top = version end
end
local seeded = 0
if redis.call('SET', KEYS[3], ARGV[2], 'NX') then seeded = 1 end
if seeded == 1 or written > 0 then
  redis.call('SET', KEYS[2], top)
  redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[1], '0 resync ' .. ARGV[2])
end
return {seeded, written}
"""

# KEYS: hash, version, epoch; ARGV: field, report JSON, channel, origin.
REPORT_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], version .. ' ' .. ARGV[4] .. ' {"op":"report","key":'
  .. cjson.encode(ARGV[1]) .. ',"report":' .. ARGV[2] .. '}')
return {version, ''}
"""
