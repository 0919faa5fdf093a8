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

// What an algorithm says about a request; `outcome` turns it into a decision.
interface Evaluation {
  /** The most the policy admits at once. */
  readonly capacity: number
  /** `remaining` and `resetAfterMs` as they stand, for a denial. */
  readonly remaining: number
  readonly resetAfterMs: number
  /** How long until the request fits (0: it fits now). */
  readonly waitMs: number
  /** The decision's figures and the next state, when the request is admitted. */
  readonly admitRemaining: number
  readonly admitResetAfterMs: number
  readonly admitState: State
}

const outcome = (evaluation: Evaluation, state: State | undefined, cost: number): Outcome => {
  const limit = evaluation.capacity
  if (cost <= limit && evaluation.waitMs === 0) {
    return {
      decision: {
        allowed: true,
        limit,
        remaining: evaluation.admitRemaining,
        resetAfterMs: evaluation.admitResetAfterMs,
        retryAfterMs: 0
      },
      state: evaluation.admitState
    }
  }
  return {
    decision: {
      allowed: false,
      limit,
      remaining: evaluation.remaining,
      resetAfterMs: evaluation.resetAfterMs,
      retryAfterMs: cost > limit ? "never" : evaluation.waitMs
    },
    state
  }
}

const gcra = (params: Params, state: State | undefined, now: number, cost: number): Evaluation => {
  const capacity = params.burst ?? params.limit
  const interval = params.windowMs / params.limit
  const tolerance = interval * capacity
  const tat = state?._tag === "gcra" ? Math.max(state.tat, now) : now
  const next = tat + cost * interval
  return {
    capacity,
    remaining: floor((tolerance - (tat - now)) / interval),
    resetAfterMs: ceil(tat - now),
    waitMs: next - now <= tolerance + 1e-9 ? 0 : ceil(next - now - tolerance),
    admitRemaining: floor((tolerance - (next - now)) / interval),
    admitResetAfterMs: ceil(next - now),
    admitState: { _tag: "gcra", tat: next }
  }
}

const fixedWindow = (params: Params, state: State | undefined, now: number, cost: number): Evaluation => {
  const start = now - (now % params.windowMs)
  const count = state?._tag === "fixed-window" && state.start === start ? state.count : 0
  const resetAfterMs = start + params.windowMs - now
  return {
    capacity: params.limit,
    remaining: params.limit - count,
    resetAfterMs,
    // Windows are aligned: a request that does not fit now fits when this window ends.
    waitMs: count + cost <= params.limit ? 0 : resetAfterMs,
    admitRemaining: params.limit - count - cost,
    admitResetAfterMs: resetAfterMs,
    admitState: { _tag: "fixed-window", start, count: count + cost }
  }
}

const slidingWindow = (params: Params, state: State | undefined, now: number, cost: number): Evaluation => {
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
  const estimate = previous * ((w - (now - start)) / w) + current
  let waitMs = 0
  if (estimate + cost > params.limit + 1e-9) {
    // When would previous·(w - e)/w + current + cost fit under the limit?
    const room = params.limit - cost - current
    waitMs = room >= 0 && previous > 0
      ? ceil(start + w * (1 - room / previous) - now)
      // Not in this window: in the next one, this window's count decays instead.
      : ceil(start + w + (current > 0 ? w * (1 - (params.limit - cost) / current) : 0) - now)
    waitMs = Math.max(1, waitMs)
  }
  return {
    capacity: params.limit,
    remaining: floor(params.limit - estimate),
    resetAfterMs: current > 0 ? start + 2 * w - now : previous > 0 ? start + w - now : 0,
    waitMs,
    admitRemaining: floor(params.limit - estimate - cost),
    admitResetAfterMs: start + 2 * w - now,
    admitState: { _tag: "sliding-window", start, current: current + cost, previous }
  }
}

// Tokens in the bucket at `now` (full when nothing is stored).
const tokensAt = (params: Params, state: State | undefined, now: number): number => {
  const capacity = params.burst ?? params.limit
  return state?._tag === "token-bucket"
    ? Math.min(capacity, state.tokens + Math.max(0, now - state.updatedAt) * (params.limit / params.windowMs))
    : capacity
}

const tokenBucket = (params: Params, state: State | undefined, now: number, cost: number): Evaluation => {
  const capacity = params.burst ?? params.limit
  const rate = params.limit / params.windowMs
  const tokens = tokensAt(params, state, now)
  return {
    capacity,
    remaining: floor(tokens),
    resetAfterMs: ceil((capacity - tokens) / rate),
    waitMs: tokens + 1e-9 >= cost ? 0 : ceil((cost - tokens) / rate),
    admitRemaining: floor(tokens - cost),
    admitResetAfterMs: ceil((capacity - tokens + cost) / rate),
    admitState: { _tag: "token-bucket", tokens: tokens - cost, updatedAt: now }
  }
}

const algorithms = {
  "gcra": gcra,
  "fixed-window": fixedWindow,
  "sliding-window": slidingWindow,
  "token-bucket": tokenBucket
} as const

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
): Outcome => outcome(algorithms[algorithm](params, state, now, cost), state, cost)

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
    case "token-bucket":
      return {
        _tag: "token-bucket",
        tokens: Math.min(params.burst ?? params.limit, tokensAt(params, state, now) + cost),
        updatedAt: now
      }
  }
}
