package ledger

// The budget scripts' Lua before the budgets' numbers were packed (branch
// redislua), kept to check that the new scripts do exactly what these did
// (TestPackedBudgetMatchesOld).

const oldLuaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

const oldLuaNum = `
local function bud_int(x) return string.format('%d', x) end
-- bud_add sets field f of k, whose value was old, to old + d: into the
-- HSET list t when a Lua number holds the sum exactly, else by HINCRBY
-- (Redis's int64). It returns the sum.
local function bud_add(k, t, f, old, d)
  local v = old + d
  if math.abs(old) < 2^53 and math.abs(d) < 2^53 and math.abs(v) < 2^53 then
    t[#t + 1], t[#t + 2] = f, bud_int(v)
    return v
  end
  return redis.call('HINCRBY', k, f, bud_int(d))
end
`

const oldLuaHold = oldLuaNum + `
local function bud_lease(v)
  local a, x = string.match(v, '^(%-?%d+):(%d+)$')
  return tonumber(a), tonumber(x)
end
-- bud_carry applies to k the carried items of list (carry.go): spend
-- booked without Redis, "c:<tag>=<amount>", added once per tag (its marker
-- 'c:<tag>' is a zero-amount lease, swept a day later); a settle whose
-- answer was lost, "s:<lease>=<amount>", applied only while its lease is
-- there (the settle deletes it), then marked 'c:s<lease>'. fresh: k was
-- just seeded, with a seed that excludes every item: each applies. It
-- returns spent, held and nx after them.
local function bud_carry(k, list, s, hd, nx, fresh)
  local mexp, marked = now + ` + markerTTL + `, false
  for kind, id, amt in string.gmatch(list, '([cs]):([^=,]+)=(%-?%d+)') do
    local m = (kind == 'c' and 'c:' or 'c:s') .. id
    local apply = fresh or redis.call('HEXISTS', k, m) == 0
    if apply and kind == 's' then
      local v = redis.call('HGET', k, id)
      if v then
        hd = redis.call('HINCRBY', k, 'held', bud_int(-(bud_lease(v) or 0)))
        redis.call('HDEL', k, id)
        if redis.call('HGET', k, 'short') == id then redis.call('HDEL', k, 'short') end
      elseif not fresh then
        apply = false
      end
    end
    if apply then
      s = redis.call('HINCRBY', k, 'spent', amt)
      redis.call('HSET', k, m, '0:' .. bud_int(mexp))
      marked = true
    end
  end
  if marked and (not nx or mexp < nx) then
    nx = mexp
    redis.call('HSET', k, 'nx', bud_int(nx))
  end
  return s, hd, nx
end
-- bud_sweep drops k's expired leases; it returns held and nx after it.
local function bud_sweep(k, hd)
  local all = redis.call('HGETALL', k)
  local nx, del = false, {}
  for j = 1, #all, 2 do
    local a, x = bud_lease(all[j + 1])
    if a then
      if x <= now then
        hd = hd - a
        del[#del + 1] = all[j]
      elseif not nx or x < nx then
        nx = x
      end
    end
  end
  if #del > 0 then redis.call('HDEL', k, unpack(del)) end
  if nx then
    redis.call('HSET', k, 'held', bud_int(hd), 'nx', bud_int(nx))
  else
    redis.call('HSET', k, 'held', bud_int(hd))
    redis.call('HDEL', k, 'nx')
  end
  return hd, nx
end
-- bud_legacy drops the expired leases of the layout before (k:h, k:e).
-- k:e may be another account's one hash (an id "<id>:e" names it): only
-- a sorted set is the layout before. (k:h is a hash either way, and holds
-- none of the old leases' names unless it is theirs.)
local function bud_legacy(k, hd, ttl)
  local h, e = k .. ':h', k .. ':e'
  if redis.call('TYPE', e).ok == 'zset' then
    for _, l in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now)) do
      local a = redis.call('HGET', h, l)
      if a then hd = hd - tonumber(a) end
      redis.call('HDEL', h, l)
      redis.call('ZREM', e, l)
    end
  end
  redis.call('HSET', k, 'held', bud_int(hd), 'lx', bud_int(now + ttl))
  return hd
end
local function bud_hold(KEYS, ARGV)
local amount, lease, ttl, mode = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local n = #KEYS - 1
local alive = math.max(redis.call('ZCOUNT', KEYS[#KEYS], now - tonumber(ARGV[#ARGV]), '+inf'), 1)
-- First bring every account up to date (seed, spend booked while Redis was
-- away, expired holds), so that a refusal below loses none of it. spent
-- and held keep each account's values from here on (one read each).
local spent, held, touched, nxs, shorts = {}, {}, {}, {}, {}
for i = 1, n do
  local k = KEYS[i]
  local seed, period, list = tonumber(ARGV[6+4*i-2]), tonumber(ARGV[6+4*i-1]), ARGV[6+4*i]
  local cur = redis.call('HMGET', k, 'spent', 'period', 'held', 'y', 'nx', 'lx', 'short')
  touched[i] = now - tonumber(cur[4] or 0) < 86400000
  local s, hd, nx = tonumber(cur[1]), tonumber(cur[3] or 0), cur[5] and tonumber(cur[5])
  local fresh = cur[1] == false or tonumber(cur[2] or 0) < period
  if fresh then
    -- seed excludes every replica-local spend not yet in Redis; this
    -- hold carries its share of it (list), the rest comes with other holds.
    redis.call('HSET', k, 'spent', ARGV[6+4*i-2], 'period', ARGV[6+4*i-1])
    -- (Since branch moneygaps, as luaHold's bud_seed: a hash Redis
    -- lacked is marked, and later seeds above its spend raise it.)
    if cur[1] == false and string.sub(list, -1) == 'L' then redis.call('HSET', k, 'rv', ARGV[6+4*i-1]) end
    s = seed
  elseif redis.call('HGET', k, 'rv') == ARGV[6+4*i-1] and tonumber(cur[2] or 0) == period and seed > s + math.abs(s) / 2^50 then
    s = seed
    redis.call('HSET', k, 'spent', ARGV[6+4*i-2])
  end
  if list ~= '0' then s, hd, nx = bud_carry(k, list, s, hd, nx, fresh) end
  if nx and now >= nx then hd, nx = bud_sweep(k, hd) end
  if now >= tonumber(cur[6] or 0) then hd = bud_legacy(k, hd, ttl) end
  -- (Since branch ledgerfix, as luaHold: the expiry before a refusal.)
  if not touched[i] then
    redis.call('HSET', k, 'y', bud_int(now))
    redis.call('PEXPIRE', k, 604800000)
    touched[i] = true
  end
  spent[i], held[i], nxs[i], shorts[i] = s, hd, nx, cur[7]
end
-- shortBusy is the first account whose last hold held short is in flight.
local function shortBusy()
  for i = 1, n do
    if shorts[i] and redis.call('HEXISTS', KEYS[i], shorts[i]) == 1 then return i end
  end
  return 0
end
local function refusal(i, busy)
  if busy then return {0, i, spent[i], held[i], alive, 1} end
  return {0, i, spent[i], held[i], alive}
end
local asked, fits, least, capped = amount, true, nil, 0
for i = 1, n do
  local left = tonumber(ARGV[6+4*i-3]) - spent[i] - held[i]
  if (mode ~= '0' and left <= 0) or (mode == '0' and amount > left) then return refusal(i, false) end
  if amount > left then fits = false end
  if least == nil or left < least then least = left end
end
local short = false
if mode == '1' and not fits then
  -- A hold cut short may cost more than it holds: one at a time per budget.
  local b = shortBusy()
  if b > 0 then return refusal(b, true) end
  amount, short = least, true
elseif mode == '2' and not fits then
  if shortBusy() > 0 then
    amount, capped = math.min(tonumber(ARGV[6]), asked, least), 1
  else
    amount, short = math.min(tonumber(ARGV[5]), asked, least), true
  end
end
local out = {1, alive}
local exp = now + ttl
for i = 1, n do
  local k = KEYS[i]
  local f = {lease, string.format('%d:%d', amount, exp)}
  local hd = bud_add(k, f, 'held', held[i], amount)
  if not nxs[i] or exp < nxs[i] then f[#f+1], f[#f+2] = 'nx', bud_int(exp) end
  if short then f[#f+1], f[#f+2] = 'short', lease end
  if not touched[i] then f[#f+1], f[#f+2] = 'y', bud_int(now) end
  redis.call('HSET', k, unpack(f))
  if not touched[i] then redis.call('PEXPIRE', k, 604800000) end
  out[2+i] = tonumber(ARGV[6+4*i-3]) - spent[i] - hd
end
out[#out+1] = amount
out[#out+1] = capped
return out
end
`

const oldLuaSettle = oldLuaNum + `
local function bud_settle(KEYS, ARGV)
local actual, lease = tonumber(ARGV[1]), ARGV[2]
local out = {tonumber(ARGV[3])}
for i = 1, #KEYS - 1 do
  local k = KEYS[i]
  -- An account Redis has always has its spend (seeded, set or reset).
  -- The marker 'c:s<lease>' says a later hold already applied this settle
  -- (its answer was lost, and it ran late; bud_carry): it counts once,
  -- and only frees its lease if that is still there.
  local cur = redis.call('HMGET', k, 'spent', 'held', 'short', lease, 'c:s' .. lease)
  local exists = cur[1] ~= false
  local held = tonumber(cur[2] or 0)
  local a = cur[4] and tonumber(string.match(cur[4], '^(%-?%d+)'))
  local act = actual
  if cur[5] then act = 0 end
  if not exists then
    out[2*i], out[2*i+1] = -1, 0
    if cur[4] then redis.call('HDEL', k, lease) end
  else
    local s, f = tonumber(cur[1]), {}
    if act ~= 0 then s = bud_add(k, f, 'spent', s, act) end
    if a then held = bud_add(k, f, 'held', held, -a) end
    if #f > 0 then redis.call('HSET', k, unpack(f)) end
    if cur[3] == lease then
      redis.call('HDEL', k, lease, 'short')
    elseif cur[4] then
      redis.call('HDEL', k, lease)
    end
    out[2*i], out[2*i+1] = s, held
  end
end
return out
end
`
