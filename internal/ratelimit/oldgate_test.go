package ratelimit

// The gate's Lua and arguments as they were before the rules were packed
// into one binary string (main at 3a138b4), kept only so that
// TestPackedGateMatchesOld can run both side by side.

const oldLuaCommon = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function slotlen(win) return math.max(math.floor(win / 60), 1) end
-- A window is a hash of slot index -> count plus 's', the running sum of
-- the slots still in the window, and 'h', the oldest slot field kept. A call
-- reads those two; slots are subtracted from 's' (and deleted) once, as they
-- leave the window, so a call's cost does not grow with the slot count.
-- at, when given, is a time (ms) whose slot add will count at: its count is
-- read in the same HMGET. Returns used, the current slot, ms until the oldest
-- use leaves, the slot length, and what add needs: the oldest slot, the sum
-- as stored and the count of at's slot (of the current one without at).
local function window(key, win, at)
  local sl = slotlen(win)
  local idx = math.floor(now / sl)
  local lo = idx - 60
  local slot = idx
  if at then slot = math.floor(at / sl) end
  local v = redis.call('HMGET', key, 's', 'h', slot)
  local used, head, cur = tonumber(v[1]), tonumber(v[2]), tonumber(v[3] or 0)
  if used == nil then
    -- A new window, or one kept as bare slots (before 's' and 'h'):
    -- count it once and keep the sum from now on.
    used, head = 0, nil
    local h = redis.call('HGETALL', key)
    for j = 1, #h, 2 do
      local at, c = tonumber(h[j]), tonumber(h[j + 1])
      if at == nil then
      elseif at < lo then
        redis.call('HDEL', key, h[j])
      else
        used = used + c
        if head == nil or at < head then head = at end
      end
    end
    if head ~= nil then redis.call('HSET', key, 's', used, 'h', head) end
    if slot < lo then cur = 0 end
  elseif head < lo then
    if lo - head > 61 then
      -- Idle for longer than the window: nothing in it is left.
      redis.call('DEL', key)
      used, head, cur = 0, nil, 0
    else
      -- Slots that left the window since the last call: subtract them once.
      local gone = {}
      for j = head, lo - 1 do gone[#gone + 1] = j end
      local c = redis.call('HMGET', key, unpack(gone))
      local del = {}
      for j = 1, #gone do
        if c[j] then used = used - tonumber(c[j]); del[#del + 1] = gone[j] end
      end
      if #del > 0 then redis.call('HDEL', key, unpack(del)) end
      if slot < lo then cur = 0 end
      -- The new head is the oldest slot still kept, scanned forward in
      -- steps; a slot is scanned past once, so this too is O(1) amortized.
      head = nil
      local from = lo
      while head == nil and from <= idx do
        local to = math.min(from + 7, idx)
        local probe = {}
        for j = from, to do probe[#probe + 1] = j end
        local e = redis.call('HMGET', key, unpack(probe))
        for j = 1, #probe do
          if e[j] then head = probe[j]; break end
        end
        from = to + 1
      end
      if head == nil then
        redis.call('DEL', key)
        used, cur = 0, 0
      else
        redis.call('HSET', key, 's', used, 'h', head)
      end
    end
  end
  local sum = used
  if used < 0 then used = 0 end
  local reset = 0
  if used > 0 and head ~= nil then reset = (head + 61) * sl - now end
  return used, idx, reset, sl, {head, sum, cur}
end
-- add counts n at slot, the slot window read (its state st), keeping the
-- sum and the head: one HSET. The key's expiry is set when a slot is opened
-- (its count was 0): a later add to that slot, or to an older one, leaves
-- nothing that outlives it.
local function add(key, slot, n, st, sl)
  local head, sum, cur = st[1], st[2], st[3]
  if head == nil or slot < head then
    redis.call('HSET', key, slot, cur + n, 's', sum + n, 'h', slot)
  else
    redis.call('HSET', key, slot, cur + n, 's', sum + n)
  end
  if cur == 0 then redis.call('PEXPIRE', key, 62 * sl + 1000) end
end
local function bucket(key, limit, win, fill)
  local v = redis.call('HMGET', key, 'tokens', 'filled')
  local tokens, filled = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then tokens, filled = limit, now end
  if win > 0 and fill > 0 then
    local fills = math.floor((now - filled) / win)
    if fills > 0 then
      tokens = math.min(limit, tokens + fills * fill)
      filled = filled + fills * win
    end
  end
  if tokens >= limit then filled = now end
  return tokens, filled
end
local function waitfor(tokens, filled, need, win, fill)
  if fill <= 0 or win <= 0 or tokens >= need then return 0 end
  return filled + math.ceil((need - tokens) / fill) * win - now
end
local function savebucket(key, tokens, filled, limit, win, fill)
  redis.call('HSET', key, 'tokens', tokens, 'filled', filled)
  local ttl = 86400000
  if fill > 0 and win > 0 then ttl = (math.ceil(math.max(limit - tokens, 0) / fill) + 1) * win + 1000 end
  redis.call('PEXPIRE', key, ttl)
end
`

const oldLuaAdmit = `
local function rl_admit(KEYS, ARGV)
local est, lease, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local out, plan = {1, now}, {}
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  local kind, limit, win, fill = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local key = KEYS[i]
  if kind == 0 or kind == 1 then
    local used, idx, reset, sl, st = window(key, win)
    local need = 1
    if kind == 1 then need = est end
    if need > limit then return {0, i, used, -1} end
    if used + need > limit or (need == 0 and used >= limit) then return {0, i, used, reset} end
    plan[i] = {idx, need, sl, st}
    out[#out + 1] = limit - used - need
    out[#out + 1] = reset
  elseif kind == 2 then
    -- Expired leases (a replica that died holding) are swept only when
    -- they could refuse: below the limit they change no decision.
    local c = redis.call('ZCARD', key)
    if c >= limit then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      c = redis.call('ZCARD', key)
    end
    if c >= limit then return {0, i, c, 1000} end
    out[#out + 1] = limit - c - 1
    out[#out + 1] = 0
  else
    local tokens, filled = bucket(key, limit, win, fill)
    local need = 1
    if kind == 4 then need = est end
    if need > limit then return {0, i, limit - tokens, -1} end
    if (need == 0 and tokens <= 0) or (need > 0 and tokens < need) then
      return {0, i, limit - tokens, waitfor(tokens, filled, math.max(need, 1), win, fill)}
    end
    plan[i] = {tokens - need, filled}
    out[#out + 1] = tokens - need
    out[#out + 1] = waitfor(tokens - need, filled, limit, win, fill)
  end
end
return out, function()
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  local kind, limit, win, fill = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local key = KEYS[i]
  if kind == 0 or kind == 1 then
    local p = plan[i]
    if p[2] ~= 0 then add(key, p[1], p[2], p[4], p[3]) end
  elseif kind == 2 then
    redis.call('ZADD', key, now + ttl, lease)
    redis.call('PEXPIRE', key, ttl + 1000)
  else
    savebucket(key, plan[i][1], plan[i][2], limit, win, fill)
  end
end
end
end
`

const oldLuaDone = `
local function rl_done(KEYS, ARGV)
local delta, lease, at = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  local kind, limit, win, fill = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local key = KEYS[i]
  if kind == 1 and delta ~= 0 then
    local when = nil
    if delta < 0 then when = at end
    local used, idx, reset, sl, st = window(key, win, when)
    local slot = idx
    if delta < 0 then slot = math.floor(at / sl) end
    if slot >= idx - 60 then add(key, slot, delta, st, sl) end
  elseif kind == 2 then
    redis.call('ZREM', key, lease)
  elseif kind == 4 and delta ~= 0 then
    local tokens, filled = bucket(key, limit, win, fill)
    savebucket(key, math.min(tokens - delta, limit), filled, limit, win, fill)
  end
end
end
`

// oldArgs is the old encoding: head, then kind, limit, window ms, fill per rule.
func (rd *Redis) oldArgs(t *Ticket, head ...any) ([]string, []any) {
	keys := make([]string, len(t.rules))
	args := make([]any, 0, len(head)+4*len(t.rules))
	args = append(args, head...)
	for i := range len(t.rules) {
		r := &t.rules[i]
		keys[i] = rd.key(r)
		args = append(args, int(r.Kind), r.Limit, r.Window.Milliseconds(), r.Fill)
	}
	return keys, args
}
