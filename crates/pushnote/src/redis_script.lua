-- pushnote's Redis script: publish a message on topics, or answer a topic's history.
local op, prefix = ARGV[1], ARGV[2]
local size = tonumber(redis.call('HGET', KEYS[1], 'history_size') or 100)
local ttl = tonumber(redis.call('HGET', KEYS[1], 'history_ttl') or 300) * 1000
local idle = tonumber(redis.call('HGET', KEYS[1], 'topic_idle') or 3600) * 1000
local keep = math.max(ttl, idle)
local max_bytes = tonumber(redis.call('HGET', KEYS[1], 'max_message_bytes') or 1048576)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fresh(old)
  local e = (tonumber(t[1]) * 1000003 + tonumber(t[2])) % 4294967291
  if e == 0 or e == old then e = e % 4294967290 + 1 end
  return e
end
-- A topic's epoch and last offset, made if it has none.
local function current(meta, hist)
  local m = redis.call('HMGET', meta, 'epoch', 'offset')
  local epoch, offset = tonumber(m[1]), tonumber(m[2])
  if not epoch or not offset or epoch < 1 or epoch > 4294967295 or offset < 0 then
    epoch, offset = fresh(epoch), 0
    redis.call('DEL', hist)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  end
  redis.call('PEXPIRE', meta, keep)
  return epoch, offset
end
if op == 'publish' then
  local body, out = ARGV[3], {}
  for i = 4, #ARGV do
    -- As on the bus: the topic, its NUL and the body, within what servers take.
    if #ARGV[i] + 1 + #body > max_bytes then
      return redis.error_reply('pushnote: too_large: the message is ' .. (#ARGV[i] + 1 + #body) ..
        ' bytes (topic and body), over the ' .. max_bytes .. ' the servers take')
    end
  end
  for i = 4, #ARGV do
    local meta, hist = KEYS[2 * i - 6], KEYS[2 * i - 5]
    local epoch, offset = current(meta, hist)
    if offset >= 4294967295 then
      epoch, offset = fresh(epoch), 0
      redis.call('DEL', hist)
    end
    offset = offset + 1
    redis.call('HSET', meta, 'epoch', epoch, 'offset', offset)
    local stamp = struct.pack('>I4I4', epoch, offset)
    if size > 0 then
      redis.call('RPUSH', hist, stamp .. struct.pack('>I4I4', math.floor(now / 4294967296), now % 4294967296) .. body)
      redis.call('LTRIM', hist, -size, -1)
      redis.call('PEXPIRE', hist, ttl)
    end
    redis.call('PUBLISH', prefix .. ARGV[i], stamp .. body)
    out[#out + 1] = stamp
  end
  return out
end
if op == 'history' then
  local meta, hist = KEYS[2], KEYS[3]
  local epoch, last = current(meta, hist)
  local tail = struct.pack('>I4I4', epoch, last)
  if ARGV[3] ~= '1' then return {1, tail} end
  local since_epoch, since = tonumber(ARGV[4]), tonumber(ARGV[5])
  local budget, kind = tonumber(ARGV[6]), 2
  if since_epoch ~= epoch then
    kind, since = 3, 0
  elseif since > last then
    return {4, tail}
  end
  if since == last then return {kind, tail} end
  -- Entries younger than the age, oldest first; the list's last holds offset `last`.
  local len = redis.call('LLEN', hist)
  local first = last - len + 1
  local entries = redis.call('LRANGE', hist, math.max(0, since + 1 - first), -1)
  local out, bytes, from = {kind, tail}, 0, nil
  for _, e in ipairs(entries) do
    local e_epoch, e_offset, hi, lo = struct.unpack('>I4I4I4I4', e)
    if hi * 4294967296 + lo + ttl > now then
      if not from then from = e_offset end
      bytes = bytes + #e - 16
      if bytes > budget then return {6, tail} end
      out[#out + 1] = string.sub(e, 1, 8) .. string.sub(e, 17)
    end
  end
  if (from or last + 1) ~= since + 1 then
    if kind == 3 then return {3, tail} end
    return {5, tail}
  end
  return out
end
return redis.error_reply('pushnote: unknown operation ' .. tostring(op))
