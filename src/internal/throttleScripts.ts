/**
 * The Lua script of `ThrottleBackend/Redis`: one script decides a whole batch
 * of requests, for every algorithm and every mode, in one EVALSHA.
 *
 * It is `throttleAlgorithms.ts` written again in Lua, operation for
 * operation (same order of floating-point operations, same epsilons), so
 * that Redis and the memory backend make the same decisions; the shared
 * conformance suite compares both against the pure functions.
 *
 * Calling convention:
 * - `KEYS[i]`: the counter of request `i`;
 * - `ARGV[1]`: the mode, `c` (consume), `p` (peek) or `r` (refund);
 * - `ARGV[2]`: the time in milliseconds, or `""` for the server's `TIME`;
 * - `ARGV[3]`: extra milliseconds added to every key's `PX` (the clock a
 *   decision uses is the one in the stored value, see below);
 * - then five arguments per request: algorithm (`1` GCRA, `2` fixed window,
 *   `3` sliding window, `4` token bucket), limit, window in milliseconds,
 *   burst (the capacity: `burst ?? limit`) and cost.
 *
 * A key holds one 33-byte string, `struct.pack('<Bdddd', algorithm,
 * expiresAt, a, b, c)` (exact doubles: GCRA `tat`; fixed window `start,
 * count`; sliding window `start, current, previous`; token bucket `tokens,
 * updatedAt`), written with `SET … PX <resetAfter>` (one command per written
 * key). A value whose `expiresAt` is not after `now` is read as absent,
 * exactly as the memory store reads an expired entry, whatever clock wrote it.
 *
 * In a consume or peek batch refused by one of its requests, the requests
 * that would have been allowed are answered as zero-cost requests (nothing
 * was counted: their figures are what stands now).
 *
 * The reply is five values per request: allowed (1/0), limit, remaining,
 * resetAfterMs, retryAfterMs (-1: never). Integral values are integer
 * replies; any other number is a string (`%.17g`, exact), since Redis would
 * truncate a Lua number to an integer.
 *
 * Redis runs the whole chunk on every EVALSHA, so it is written straight
 * line: no function or table is built per call besides the reply (and, for
 * a batch consume, the pending writes), the state lives in locals, and
 * `ceil0`/`floor0` of the TypeScript are inlined (`ceil(x - 1e-9)`,
 * `floor(x + 1e-9)`, clamped at 0).
 *
 * @internal
 */
import { createHash } from "node:crypto"

/** @internal */
export const throttleScript = `
local mode = ARGV[1]
local now = tonumber(ARGV[2])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local margin = tonumber(ARGV[3])
local n = #KEYS
local call, pack, unpack = redis.call, struct.pack, struct.unpack
local floor, ceil, max, min, fmod = math.floor, math.ceil, math.max, math.min, math.fmod
local refunding = mode == 'r'
local consuming = mode == 'c'
-- Batch consume: the admitted states (key index, code, resetAfter, a, b, c),
-- written only when every request is allowed.
local batch = consuming and n > 1
local writes = nil
if batch then writes = {} end
local reply = {}
-- A batch refused by one of its requests is answered twice: the second pass
-- gives the requests that would have been allowed the figures of a zero-cost
-- request (what stands now: nothing was counted).
local pass, again, denied = 1, nil, false
while true do
for i = 1, n do
 if pass == 1 or again[i] then
  local at = 3 + (i - 1) * 5
  local algorithm = tonumber(ARGV[at + 1])
  local limit = tonumber(ARGV[at + 2])
  local window = tonumber(ARGV[at + 3])
  local burst = tonumber(ARGV[at + 4])
  local cost = tonumber(ARGV[at + 5])
  if pass == 2 then cost = 0 end
  local key = KEYS[i]

  -- The stored state: its code (0: absent or expired) and its three numbers.
  local code, a, b, c = 0, 0, 0, 0
  local value = call('GET', key)
  if value and #value == 33 then
    local expiresAt
    code, expiresAt, a, b, c = unpack('<Bdddd', value)
    if expiresAt <= now or code < 1 or code > 4 then code = 0 end
  end

  -- Refund: give the cost back to the stored state (of whatever algorithm),
  -- then answer as for a zero-cost request and store the refunded state.
  if refunding then
    if code == 1 then
      a, b, c = max(now, a - cost * (window / limit)), 0, 0
    elseif code == 2 then
      b, c = max(0, b - cost), 0
    elseif code == 3 then
      b = max(0, b - cost)
    elseif code == 4 then
      a, b, c = min(burst, min(burst, a + max(0, now - b) * (limit / window)) + cost), now, 0
    end
    cost = 0
  end

  -- The decision: allowed, capacity, remaining, resetAfter, retryAfter (-1:
  -- never) and, when allowed, the state to store (na, nb, nc).
  local allowed, capacity, remaining, resetAfter, retryAfter = 0, 0, 0, 0, 0
  local na, nb, nc = 0, 0, 0
  if algorithm == 1 then
    capacity = burst
    local interval = window / limit
    local tolerance = interval * capacity
    local tat = now
    if code == 1 then tat = max(a, now) end
    local nxt = tat + cost * interval
    local wait = 0
    if not (nxt - now <= tolerance + 1e-9) then
      wait = ceil(nxt - now - tolerance - 1e-9)
      if wait < 0 then wait = 0 end
    end
    if cost <= capacity and wait == 0 then
      allowed = 1
      remaining = floor((tolerance - (nxt - now)) / interval + 1e-9)
      resetAfter = ceil(nxt - now - 1e-9)
      na = nxt
    else
      remaining = floor((tolerance - (tat - now)) / interval + 1e-9)
      resetAfter = ceil(tat - now - 1e-9)
      retryAfter = wait
    end
    if remaining < 0 then remaining = 0 end
    if resetAfter < 0 then resetAfter = 0 end
  elseif algorithm == 2 then
    capacity = limit
    local start = now - fmod(now, window)
    local count = 0
    if code == 2 and a == start then count = b end
    resetAfter = start + window - now
    -- Windows are aligned: a request that does not fit now fits when this window ends.
    local wait = resetAfter
    if count + cost <= limit then wait = 0 end
    if cost <= capacity and wait == 0 then
      allowed = 1
      remaining = limit - count - cost
      na, nb = start, count + cost
    else
      remaining = limit - count
      retryAfter = wait
    end
  elseif algorithm == 3 then
    capacity = limit
    local w = window
    local start = now - fmod(now, w)
    local current = 0
    local previous = 0
    if code == 3 then
      if a == start then
        current = b
        previous = c
      elseif a == start - w then
        previous = b
      end
    end
    local estimate = previous * ((w - (now - start)) / w) + current
    local wait = 0
    if estimate + cost > limit + 1e-9 then
      local room = limit - cost - current
      if room >= 0 and previous > 0 then
        wait = ceil(start + w * (1 - room / previous) - now - 1e-9)
      else
        local decay = 0
        if current > 0 then decay = w * (1 - (limit - cost) / current) end
        wait = ceil(start + w + decay - now - 1e-9)
      end
      if wait < 0 then wait = 0 end
      wait = max(1, wait)
    end
    if cost <= capacity and wait == 0 then
      allowed = 1
      remaining = floor(limit - estimate - cost + 1e-9)
      resetAfter = start + 2 * w - now
      na, nb, nc = start, current + cost, previous
    else
      remaining = floor(limit - estimate + 1e-9)
      if current > 0 then
        resetAfter = start + 2 * w - now
      elseif previous > 0 then
        resetAfter = start + w - now
      end
      retryAfter = wait
    end
    if remaining < 0 then remaining = 0 end
  elseif algorithm == 4 then
    capacity = burst
    local rate = limit / window
    local tokens = burst
    if code == 4 then tokens = min(burst, a + max(0, now - b) * (limit / window)) end
    local wait = 0
    if not (tokens + 1e-9 >= cost) then
      wait = ceil((cost - tokens) / rate - 1e-9)
      if wait < 0 then wait = 0 end
    end
    if cost <= capacity and wait == 0 then
      allowed = 1
      remaining = floor(tokens - cost + 1e-9)
      resetAfter = ceil((capacity - tokens + cost) / rate - 1e-9)
      na, nb = tokens - cost, now
    else
      remaining = floor(tokens + 1e-9)
      resetAfter = ceil((capacity - tokens) / rate - 1e-9)
      retryAfter = wait
    end
    if remaining < 0 then remaining = 0 end
    if resetAfter < 0 then resetAfter = 0 end
  else
    return redis.error_reply('unknown algorithm')
  end
  if allowed == 0 and cost > capacity then retryAfter = -1 end

  -- Writes: refund stores the refunded state (if there was one) for the
  -- decision's resetAfter; consume stores the admitted state.
  local write = 0
  if refunding then
    if code ~= 0 then
      write = code
      na, nb, nc = a, b, c
    end
  elseif consuming then
    if allowed == 1 then
      write = algorithm
    else
      writes = nil
    end
  end
  if write ~= 0 then
    if batch then
      if writes then
        local w = #writes
        writes[w + 1] = i
        writes[w + 2] = write
        writes[w + 3] = resetAfter
        writes[w + 4] = na
        writes[w + 5] = nb
        writes[w + 6] = nc
      end
    else
      if resetAfter <= 0 then
        call('DEL', key)
      else
        call('SET', key, pack('<Bdddd', write, now + resetAfter, na, nb, nc), 'PX', ceil(resetAfter + margin))
      end
    end
  end

  -- Integral values are integer replies, others exact strings.
  if capacity % 1 ~= 0 or capacity <= -9007199254740992 or capacity >= 9007199254740992 then
    capacity = string.format('%.17g', capacity)
  end
  if remaining % 1 ~= 0 or remaining <= -9007199254740992 or remaining >= 9007199254740992 then
    remaining = string.format('%.17g', remaining)
  end
  if resetAfter % 1 ~= 0 or resetAfter <= -9007199254740992 or resetAfter >= 9007199254740992 then
    resetAfter = string.format('%.17g', resetAfter)
  end
  if retryAfter % 1 ~= 0 or retryAfter <= -9007199254740992 or retryAfter >= 9007199254740992 then
    retryAfter = string.format('%.17g', retryAfter)
  end
  -- One request (the common case): the reply at once, in one constructor.
  if n == 1 then return { allowed, capacity, remaining, resetAfter, retryAfter } end
  local r = (i - 1) * 5
  reply[r + 1] = allowed
  reply[r + 2] = capacity
  reply[r + 3] = remaining
  reply[r + 4] = resetAfter
  reply[r + 5] = retryAfter
  if allowed == 0 then denied = true end
 end
end
if pass == 2 or not denied or refunding then break end
again = {}
for i = 1, n do again[i] = reply[(i - 1) * 5 + 1] == 1 end
pass = 2
end
if writes then
  for w = 1, #writes, 6 do
    local key, resetAfter = KEYS[writes[w]], writes[w + 2]
    if resetAfter <= 0 then
      call('DEL', key)
    else
      call('SET', key, pack('<Bdddd', writes[w + 1], now + resetAfter, writes[w + 3], writes[w + 4], writes[w + 5]),
        'PX', ceil(resetAfter + margin))
    end
  end
end
return reply
`

/** @internal */
export const throttleScriptSha = createHash("sha1").update(throttleScript).digest("hex")
