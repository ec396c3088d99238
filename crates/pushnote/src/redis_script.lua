-- pushnote's Redis script: publish a message on topics, or answer a topic's history
-- (docs/PROTOCOL.md §2c).
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
-- Which Redis this is: its replication id, and whether it was promoted from a replica (its
-- former id is then not all zeros).
local info = redis.call('INFO', 'replication')
local replid = string.match(info, 'master_replid:(%x+)') or ''
local promoted = string.match(string.match(info, 'master_replid2:(%x+)') or '', '[^0]') ~= nil
-- A topic's epoch and last offset, made if it has none. A topic last written by another Redis,
-- when this one was promoted from a replica, starts a new epoch: what that one published after
-- this one's last copy of the topic is lost, and its positions must not be given to other
-- messages (a page that had one would take another for it). The epoch it continues, and its
-- last offset here, are kept (`pepoch`, `plast`), and so are its messages: a page that stands
-- in it is given what this Redis has after its position, then the new epoch.
local function current(meta, hist)
  local m = redis.call('HMGET', meta, 'epoch', 'offset', 'rid')
  local epoch, offset = tonumber(m[1]), tonumber(m[2])
  if not epoch or not offset or epoch < 1 or epoch > 4294967295 or offset < 0 then
    epoch, offset = fresh(epoch), 0
    redis.call('DEL', hist)
    redis.call('HDEL', meta, 'pepoch', 'plast')
  elseif m[3] and m[3] ~= replid and promoted then
    redis.call('HSET', meta, 'pepoch', epoch, 'plast', offset)
    epoch, offset = fresh(epoch), 0
  end
  redis.call('HSET', meta, 'epoch', epoch, 'offset', offset, 'rid', replid)
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
      redis.call('HDEL', meta, 'pepoch', 'plast')
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
  local se, so, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local p = redis.call('HMGET', meta, 'pepoch', 'plast')
  local pe, pl = tonumber(p[1]), tonumber(p[2])
  -- The messages the page missed (the list's last `need`), the first of them, and the end.
  local kind, need, fe, fo
  if se == epoch then
    if so > last then return {4, tail} end
    kind, need, fe, fo = 2, last - so, epoch, so + 1
  elseif se == pe and so <= pl and so < pl then
    kind, need, fe, fo = 3, pl - so + last, pe, so + 1
  else
    kind, need, fe, fo = 3, last, epoch, 1
  end
  if need == 0 then return {kind, tail} end
  -- The list ends with the topic's last message; its oldest may be older than the age.
  local entries = redis.call('LRANGE', hist, -need, -1)
  local first = entries[1]
  local kept = #entries == need and first ~= nil
  if kept then
    local e_epoch, e_offset, hi, lo = struct.unpack('>I4I4I4I4', first)
    kept = e_epoch == fe and e_offset == fo and hi * 4294967296 + lo + ttl > now
  end
  if not kept then
    if kind == 2 then return {5, tail} end
    if fe ~= epoch and last > 0 then
      -- What this Redis has of the epoch continued is gone: the current epoch from its first.
      entries = redis.call('LRANGE', hist, -last, -1)
      first = entries[1]
      if #entries ~= last or first == nil then return {3, tail} end
      local e_epoch, e_offset, hi, lo = struct.unpack('>I4I4I4I4', first)
      if e_epoch ~= epoch or e_offset ~= 1 or hi * 4294967296 + lo + ttl <= now then
        return {3, tail}
      end
    else
      return {3, tail}
    end
  end
  local out, bytes = {kind, tail}, 0
  for _, e in ipairs(entries) do
    bytes = bytes + #e - 16
    if bytes > budget then return {6, tail} end
    out[#out + 1] = string.sub(e, 1, 8) .. string.sub(e, 17)
  end
  return out
end
return redis.error_reply('pushnote: unknown operation ' .. tostring(op))
