/**
 * The throttle algorithms as pure state transitions: `(state, now, cost) →
 * decision (+ next state when allowed)`. The memory backend runs them
 * directly; the Redis scripts must compute the same decisions.
 *
 * Decided semantics (DESIGN.md):
 * - a denied check consumes nothing: its state is unchanged;
 * - fixed windows are aligned to the clock (`now - now mod window`);
 * - `retryAfterMs` is the time until this same request would be allowed;
 * - a cost larger than the policy can ever admit is denied with
 *   `retryAfterMs: "never"`, not an infinite wait.
 *
 * Times are milliseconds; `now` is an integer clock reading.
 *
 * @internal
 */

/** @internal */
export type Algorithm = "gcra" | "fixed-window" | "sliding-window" | "token-bucket"

/** @internal */
export interface Params {
  readonly limit: number
  readonly windowMs: number
  /** GCRA and token bucket: how much may be used at once (default `limit`). */
  readonly burst?: number | undefined
}

/** @internal */
export interface Decision {
  readonly allowed: boolean
  readonly limit: number
  /** What is left after this request (if allowed) or now (if denied). */
  readonly remaining: number
  /** Time until the state is back to empty (fully replenished). */
  readonly resetAfterMs: number
  /** 0 when allowed; the wait before this same request would be allowed; or "never". */
  readonly retryAfterMs: number | "never"
}

/** @internal */
export type State =
  | { readonly _tag: "gcra"; readonly tat: number }
  | { readonly _tag: "fixed-window"; readonly start: number; readonly count: number }
  | { readonly _tag: "sliding-window"; readonly start: number; readonly current: number; readonly previous: number }
  | { readonly _tag: "token-bucket"; readonly tokens: number; readonly updatedAt: number }

/** @internal */
export interface Outcome {
  readonly decision: Decision
  /** The state to store: the next one when allowed, the given one when denied. */
  readonly state: State | undefined
}

const ceil = (x: number) => Math.max(0, Math.ceil(x - 1e-9))
const floor = (x: number) => Math.max(0, Math.floor(x + 1e-9))

const gcra = (params: Params, state: State | undefined, now: number, cost: number): Outcome => {
  const capacity = params.burst ?? params.limit
  const interval = params.windowMs / params.limit
  const tolerance = interval * capacity
  const tat = state?._tag === "gcra" ? Math.max(state.tat, now) : now
  const used = tat - now
  const next = tat + cost * interval
  if (cost > capacity) {
    return {
      decision: {
        allowed: false,
        limit: capacity,
        remaining: floor((tolerance - used) / interval),
        resetAfterMs: ceil(used),
        retryAfterMs: "never"
      },
      state
    }
  }
  if (next - now <= tolerance + 1e-9) {
    return {
      decision: {
        allowed: true,
        limit: capacity,
        remaining: floor((tolerance - (next - now)) / interval),
        resetAfterMs: ceil(next - now),
        retryAfterMs: 0
      },
      state: { _tag: "gcra", tat: next }
    }
  }
  return {
    decision: {
      allowed: false,
      limit: capacity,
      remaining: floor((tolerance - used) / interval),
      resetAfterMs: ceil(used),
      retryAfterMs: ceil(next - now - tolerance)
    },
    state
  }
}

const fixedWindow = (params: Params, state: State | undefined, now: number, cost: number): Outcome => {
  const start = now - (now % params.windowMs)
  const count = state?._tag === "fixed-window" && state.start === start ? state.count : 0
  const resetAfterMs = start + params.windowMs - now
  if (cost > params.limit) {
    return {
      decision: {
        allowed: false,
        limit: params.limit,
        remaining: params.limit - count,
        resetAfterMs,
        retryAfterMs: "never"
      },
      state
    }
  }
  if (count + cost <= params.limit) {
    return {
      decision: {
        allowed: true,
        limit: params.limit,
        remaining: params.limit - count - cost,
        resetAfterMs,
        retryAfterMs: 0
      },
      state: { _tag: "fixed-window", start, count: count + cost }
    }
  }
  return {
    decision: {
      allowed: false,
      limit: params.limit,
      remaining: params.limit - count,
      resetAfterMs,
      retryAfterMs: resetAfterMs
    },
    state
  }
}

const slidingWindow = (params: Params, state: State | undefined, now: number, cost: number): Outcome => {
  const w = params.windowMs
  const start = now - (now % w)
  let current = 0
  let previous = 0
  if (state?._tag === "sliding-window") {
    if (state.start === start) {
      current = state.current
      previous = state.previous
    } else if (state.start === start - w) {
      previous = state.current
    }
  }
  const elapsed = now - start
  const estimate = previous * ((w - elapsed) / w) + current
  const resetAfterMs = current > 0 ? start + 2 * w - now : previous > 0 ? start + w - now : 0
  const base = { limit: params.limit, resetAfterMs }
  if (cost > params.limit) {
    return {
      decision: { ...base, allowed: false, remaining: floor(params.limit - estimate), retryAfterMs: "never" },
      state
    }
  }
  if (estimate + cost <= params.limit + 1e-9) {
    return {
      decision: {
        ...base,
        allowed: true,
        remaining: floor(params.limit - estimate - cost),
        retryAfterMs: 0,
        resetAfterMs: start + 2 * w - now
      },
      state: { _tag: "sliding-window", start, current: current + cost, previous }
    }
  }
  // When would previous·(w - e)/w + current + cost fit under the limit?
  const room = params.limit - cost - current
  let retryAfterMs: number
  if (room >= 0 && previous > 0) {
    retryAfterMs = ceil(start + w * (1 - room / previous) - now)
  } else {
    // Not in this window: in the next one, this window's count decays instead.
    const nextRoom = params.limit - cost
    retryAfterMs = ceil(start + w + (current > 0 ? w * (1 - nextRoom / current) : 0) - now)
  }
  return {
    decision: {
      ...base,
      allowed: false,
      remaining: floor(params.limit - estimate),
      retryAfterMs: Math.max(1, retryAfterMs)
    },
    state
  }
}

const tokenBucket = (params: Params, state: State | undefined, now: number, cost: number): Outcome => {
  const capacity = params.burst ?? params.limit
  const rate = params.limit / params.windowMs
  const tokens = state?._tag === "token-bucket"
    ? Math.min(capacity, state.tokens + Math.max(0, now - state.updatedAt) * rate)
    : capacity
  if (cost > capacity) {
    return {
      decision: {
        allowed: false,
        limit: capacity,
        remaining: floor(tokens),
        resetAfterMs: ceil((capacity - tokens) / rate),
        retryAfterMs: "never"
      },
      state
    }
  }
  if (tokens + 1e-9 >= cost) {
    const left = tokens - cost
    return {
      decision: {
        allowed: true,
        limit: capacity,
        remaining: floor(left),
        resetAfterMs: ceil((capacity - left) / rate),
        retryAfterMs: 0
      },
      state: { _tag: "token-bucket", tokens: left, updatedAt: now }
    }
  }
  return {
    decision: {
      allowed: false,
      limit: capacity,
      remaining: floor(tokens),
      resetAfterMs: ceil((capacity - tokens) / rate),
      retryAfterMs: ceil((cost - tokens) / rate)
    },
    state
  }
}

/**
 * Decides a request of `cost` at `now`. `state` is what was stored for the
 * key (or `undefined`); the outcome's state is what to store.
 *
 * @internal
 */
export const decide = (
  algorithm: Algorithm,
  params: Params,
  state: State | undefined,
  now: number,
  cost: number
): Outcome => {
  switch (algorithm) {
    case "gcra":
      return gcra(params, state, now, cost)
    case "fixed-window":
      return fixedWindow(params, state, now, cost)
    case "sliding-window":
      return slidingWindow(params, state, now, cost)
    case "token-bucket":
      return tokenBucket(params, state, now, cost)
  }
}

/**
 * Gives back `cost` (a request that did not happen after all): never more
 * than was used, never below an empty state.
 *
 * @internal
 */
export const refund = (
  params: Params,
  state: State | undefined,
  now: number,
  cost: number
): State | undefined => {
  if (state === undefined) return undefined
  switch (state._tag) {
    case "gcra":
      return { _tag: "gcra", tat: Math.max(now, state.tat - cost * (params.windowMs / params.limit)) }
    case "fixed-window":
      return { ...state, count: Math.max(0, state.count - cost) }
    case "sliding-window":
      return { ...state, current: Math.max(0, state.current - cost) }
    case "token-bucket": {
      const capacity = params.burst ?? params.limit
      const rate = params.limit / params.windowMs
      const tokens = Math.min(capacity, state.tokens + Math.max(0, now - state.updatedAt) * rate)
      return { _tag: "token-bucket", tokens: Math.min(capacity, tokens + cost), updatedAt: now }
    }
  }
}
