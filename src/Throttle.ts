/**
 * Throttles: named rate limits, checked against whichever `ThrottleBackend`
 * the running code has in its context.
 *
 * ```ts
 * const perMinute = yield* Throttle.make({ uid: "api-minute", rate: "100/min" })
 * const perDay = yield* Throttle.make({ uid: "api-day", rate: "10000/day", algorithm: "fixed-window" })
 *
 * // Effect<Decision, RateLimitExceeded | ThrottleBackendError, ThrottleBackend>
 * const one = perMinute.check({ identifier: userId })
 * // both or neither: a request refused by one consumes from neither
 * const both = Throttle.checkAll([perMinute, perDay], { identifier: userId })
 * ```
 *
 * Counters are per throttle, per tenant (the `CurrentTenant`, when there is
 * one) and per identifier. Their keys are `{t:<tenant>}:<uid>:<identifier>`
 * (`{g}` outside a tenant), with `:`, `{`, `}` and `%` in the uid and the
 * identifier percent-escaped, so a crafted identifier cannot reach another
 * counter. The `{…}` part is a Redis Cluster hash tag: one tenant's counters
 * share a slot, so several throttles are checked in one script call.
 *
 * The backend is read from the context at each check (it is not captured
 * when the throttle is made): a middleware can provide each tier its own
 * backend, and a test can wrap a region in another backend with
 * `Effect.provide`.
 *
 * With `spans: true`, a call to an asynchronous backend (Redis) runs in a span
 * (`Throttle.check`, `Throttle.checkAll`, …, with `tenant.id`,
 * `throttle.uid` and `throttle.backend`); a synchronous in-process check has
 * none, as the span would cost as much as the check. Metrics (always on):
 * see `metrics`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { globalValue } from "effect/GlobalValue"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { makeSampledWarning } from "./internal/sampledWarning.js"
import * as internalContext from "./internal/tenantContext.js"
import { excerpt } from "./internal/text.js"
import * as Rate from "./Rate.js"
import type { Algorithm, Decision, Mode, Policy, Request } from "./ThrottleBackend.js"
import { minimumGcraIntervalMs, ThrottleBackend, ThrottleBackendError } from "./ThrottleBackend.js"

/**
 * A throttle's answer for one request, with the throttle it came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface Verdict extends Decision {
  readonly uid: string
  /** The throttle's rate, for headers (`RateLimit-Policy`). */
  readonly rate: Rate.Rate
}

/**
 * A request was refused by one or more throttles, and counted by none.
 * `verdicts` holds every throttle's answer: those that would have allowed it
 * say so with what stands now (their `remaining` does not include the
 * request); `violated` holds the ones that refused. `retryAfterMs` is the
 * longest of their waits, or `"never"`.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimitExceeded extends Schema.TaggedError<RateLimitExceeded>("effect-tenancy/RateLimitExceeded")(
  "RateLimitExceeded",
  {
    verdicts: Schema.Array(Schema.Any as Schema.Schema<Verdict>)
  }
) {
  /**
   * The throttles that refused.
   *
   * @since 0.1.0
   */
  get violated(): ReadonlyArray<Verdict> {
    return this.verdicts.filter((verdict) => !verdict.allowed)
  }
  /**
   * How long until this same request would be allowed by every throttle.
   *
   * @since 0.1.0
   */
  get retryAfterMs(): number | "never" {
    let longest = 0
    for (const verdict of this.verdicts) {
      if (verdict.retryAfterMs === "never") return "never"
      longest = Math.max(longest, verdict.retryAfterMs)
    }
    return longest
  }
  /** @since 0.1.0 */
  override get message(): string {
    const wait = this.retryAfterMs
    const names = this.violated.map((verdict) => verdict.uid).join(", ")
    return `Rate limit exceeded (${names}): ${
      wait === "never" ? "the request can never be admitted" : `retry in ${wait} ms`
    }`
  }
}

/**
 * A throttle could not be made: a uid already in use in this process, an
 * empty or overlong uid, or a burst that is not a positive integer.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidThrottle extends Schema.TaggedError<InvalidThrottle>("effect-tenancy/InvalidThrottle")(
  "InvalidThrottle",
  {
    uid: Schema.String,
    reason: Schema.String
  }
) {
  /** @since 0.1.0 */
  override get message(): string {
    return `Invalid throttle ${JSON.stringify(this.uid)}: ${this.reason}`
  }
}

/**
 * What a check may say besides a decision.
 *
 * @since 0.1.0
 * @category models
 */
export type CheckError = RateLimitExceeded | ThrottleBackendError

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Throttle {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Options {
    /** Unique in the process; part of every key, so changing it starts fresh counters. */
    readonly uid: string
    /** `"100/min"`, `{ limit: 100, window: "1 minute" }`, or a `Rate`. `Rate.unlimited` never refuses. */
    readonly rate: string | { readonly limit: number; readonly window: Duration.DurationInput } | Rate.Rate
    /** Default `gcra`. */
    readonly algorithm?: Algorithm | undefined
    /** GCRA and token bucket: how much may be used at once (default: the rate's limit). */
    readonly burst?: number | undefined
    /** Default cost of a check (default 1). */
    readonly cost?: number | undefined
    /** Default identifier within the tenant (default `"*"`: one counter for the whole tenant). */
    readonly identifier?: string | undefined
    /**
     * When the backend fails: `"fail-closed"` (default) surfaces the
     * `ThrottleBackendError`; `"fail-open"` admits the request, logs a
     * warning and counts the error. (For a fallback backend, wrap the
     * backend with `ThrottleBackend.withInsurance`.)
     */
    readonly onBackendError?: "fail-closed" | "fail-open" | undefined
    /**
     * Wrap each call to an asynchronous backend in a span (`Throttle.check`,
     * `Throttle.checkAll`, …, with `tenant.id`, `throttle.uid` and
     * `throttle.backend`). Default `false`: an Effect span costs about 10 µs
     * of CPU here, as much as the rest of a Redis check, and would halve the
     * checks a process can have in flight.
     */
    readonly spans?: boolean | undefined
  }

  /**
   * @since 0.1.0
   * @category models
   */
  export interface CheckOptions {
    readonly identifier?: string | undefined
    readonly cost?: number | undefined
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Throttle {
  readonly uid: string
  readonly rate: Rate.Rate
  readonly algorithm: Algorithm
  /** The backend policy; `undefined` for an unlimited rate. */
  readonly policy: Policy | undefined
  /** Consumes `cost` if it fits; fails with `RateLimitExceeded` otherwise (consuming nothing). */
  readonly check: (options?: Throttle.CheckOptions) => Effect.Effect<Verdict, CheckError, ThrottleBackend>
  /** The decision `check` would make, consuming nothing. Never fails with `RateLimitExceeded`. */
  readonly peek: (options?: Throttle.CheckOptions) => Effect.Effect<Verdict, ThrottleBackendError, ThrottleBackend>
  /** Gives back `cost` (a request that did not happen after all). */
  readonly refund: (options?: Throttle.CheckOptions) => Effect.Effect<Verdict, ThrottleBackendError, ThrottleBackend>
  /** The counter key of an identifier in the current tenant (for operators and tests). */
  readonly key: (identifier?: string) => Effect.Effect<string>
  readonly onBackendError: "fail-closed" | "fail-open"
  /** @internal */
  readonly spans: boolean
  /** @internal */
  readonly defaultCost: number
  /** @internal */
  readonly defaultIdentifier: string
  /** @internal */
  readonly slots: ReturnType<typeof makeSlots>
}

const uids = globalValue(Symbol.for("effect-tenancy/Throttle/uids"), () => new Set<string>())

/**
 * Escapes what would let a key part reach into another part or hash slot.
 *
 * @since 0.1.0
 * @category keys
 */
export const escapeKeyPart = (part: string): string =>
  /[%:{}]/.test(part) ? part.replace(/[%:{}]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`) : part

const tenantTag = (tenantId: string | undefined) => tenantId === undefined ? "{g}" : `{t:${tenantId}}`

/**
 * Makes a throttle. Its uid is reserved in this process until the scope
 * closes; a second throttle with the same uid is `InvalidThrottle`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Throttle.Options
): Effect.Effect<Throttle, InvalidThrottle | Rate.InvalidRate, Scope.Scope> =>
  Effect.gen(function*() {
    const uid = options.uid
    const refuse = (reason: string) => new InvalidThrottle({ uid: excerpt(uid), reason })
    if (uid.length === 0 || uid.length > 200) return yield* refuse("the uid must have 1 to 200 characters")
    const rate = yield* Either.match(Rate.fromInput(options.rate), {
      onLeft: Effect.fail,
      onRight: Effect.succeed
    })
    const cost = options.cost ?? 1
    if (!isCost(cost)) return yield* refuse("the cost must be a non-negative integer")
    if (options.burst !== undefined && !(Number.isSafeInteger(options.burst) && options.burst > 0)) {
      return yield* refuse("the burst must be a positive integer")
    }
    const algorithm = options.algorithm ?? "gcra"
    if (options.burst !== undefined && (algorithm === "fixed-window" || algorithm === "sliding-window")) {
      return yield* refuse(`the ${algorithm} algorithm has no burst (its limit is the burst)`)
    }
    if (algorithm === "gcra" && rate._tag === "Limited" && rate.windowMs / rate.limit < minimumGcraIntervalMs) {
      return yield* refuse(
        `GCRA counts at most one unit per ${minimumGcraIntervalMs} ms (20,000 a second) per key; ` +
          "for a faster rate use the sliding-window or fixed-window algorithm"
      )
    }
    yield* Effect.acquireRelease(
      Effect.suspend(() => {
        if (uids.has(uid)) return Effect.fail(refuse("a throttle with this uid already exists in this process"))
        uids.add(uid)
        return Effect.void
      }),
      () => Effect.sync(() => uids.delete(uid))
    )
    return unsafeMake({
      uid,
      rate,
      algorithm,
      burst: options.burst,
      cost,
      identifier: options.identifier ?? "*",
      onBackendError: options.onBackendError ?? "fail-closed",
      spans: options.spans ?? false
    })
  })

const isCost = (cost: number) => Number.isSafeInteger(cost) && cost >= 0

const unsafeMake = (options: {
  readonly uid: string
  readonly rate: Rate.Rate
  readonly algorithm: Algorithm
  readonly burst: number | undefined
  readonly cost: number
  readonly identifier: string
  readonly onBackendError: "fail-closed" | "fail-open"
  readonly spans: boolean
}): Throttle => {
  const policy: Policy | undefined = options.rate._tag === "Unlimited" ? undefined : {
    algorithm: options.algorithm,
    limit: options.rate.limit,
    windowMs: options.rate.windowMs,
    burst: options.burst
  }
  const self: Throttle = {
    uid: options.uid,
    rate: options.rate,
    algorithm: options.algorithm,
    policy,
    onBackendError: options.onBackendError,
    spans: options.spans,
    defaultCost: options.cost,
    defaultIdentifier: options.identifier,
    slots: makeSlots(options.uid, escapeKeyPart(options.uid)),
    check: (checkOptions) => runOne(self, "consume", checkOptions),
    peek: (checkOptions) =>
      runOne(self, "peek", checkOptions) as Effect.Effect<Verdict, ThrottleBackendError, ThrottleBackend>,
    refund: (checkOptions) =>
      runOne(self, "refund", checkOptions) as Effect.Effect<Verdict, ThrottleBackendError, ThrottleBackend>,
    key: (identifier) =>
      Effect.map(
        Effect.serviceOption(internalContext.CurrentTenant),
        (tenant) => keyOf(self, tenant._tag === "Some" ? tenant.value.id : undefined, identifier ?? options.identifier)
      )
  }
  return self
}

const keyOf = (throttle: Throttle, tenantId: string | undefined, identifier: string) =>
  throttle.slots.keyOf(throttle.slots.slotOf(tenantId), tenantId, identifier)

// What a throttle keeps per tenant: the counter keys it built (a key built
// afresh is a new string the backend's Map must flatten and hash on every
// check; a cached one keeps its hash) and its tagged metrics. Bounded: past
// `slotLimit` keys in all, the throttle starts again with empty slots.
interface Slot {
  readonly keys: Map<string, string>
  readonly counters: Counters
}
const slotLimit = 50_000

const makeSlots = (uid: string, escapedUid: string) => {
  const slots = new Map<string | undefined, Slot>()
  let size = 0
  const slotOf = (tenantId: string | undefined): Slot => {
    let slot = slots.get(tenantId)
    if (slot === undefined) {
      slot = { keys: new Map(), counters: countersFor(uid, tenantId ?? "-") }
      slots.set(tenantId, slot)
    }
    return slot
  }
  return {
    slotOf,
    keyOf: (slot: Slot, tenantId: string | undefined, identifier: string): string => {
      let key = slot.keys.get(identifier)
      if (key === undefined) {
        key = `${tenantTag(tenantId)}:${escapedUid}:${escapeKeyPart(identifier)}`
        if (++size > slotLimit) {
          slots.clear()
          size = 1
          slotOf(tenantId).keys.set(identifier, key)
        } else {
          slot.keys.set(identifier, key)
        }
      }
      return key
    }
  }
}

/**
 * Checks several throttles as one: the request is counted by all of them or
 * by none. One backend call (one round trip on Redis). When the backend
 * fails, the checks fail open only if every throttle is `fail-open`.
 *
 * @since 0.1.0
 * @category combinators
 */
export const checkAll = (
  throttles: ReadonlyArray<Throttle>,
  options?: Throttle.CheckOptions
): Effect.Effect<ReadonlyArray<Verdict>, CheckError, ThrottleBackend> => run(throttles, "consume", options)

/**
 * What `checkAll` would decide, consuming nothing.
 *
 * @since 0.1.0
 * @category combinators
 */
export const peekAll = (
  throttles: ReadonlyArray<Throttle>,
  options?: Throttle.CheckOptions
): Effect.Effect<ReadonlyArray<Verdict>, ThrottleBackendError, ThrottleBackend> =>
  run(throttles, "peek", options) as Effect.Effect<ReadonlyArray<Verdict>, ThrottleBackendError, ThrottleBackend>

/**
 * Gives back what `checkAll` took.
 *
 * @since 0.1.0
 * @category combinators
 */
export const refundAll = (
  throttles: ReadonlyArray<Throttle>,
  options?: Throttle.CheckOptions
): Effect.Effect<ReadonlyArray<Verdict>, ThrottleBackendError, ThrottleBackend> =>
  run(throttles, "refund", options) as Effect.Effect<ReadonlyArray<Verdict>, ThrottleBackendError, ThrottleBackend>

// -----------------------------------------------------------------------------
// metrics
// -----------------------------------------------------------------------------

const allowedKey = MetricKey.counter("tenancy_throttle_allowed_total", {
  description: "Checks a throttle allowed, by throttle and tenant",
  incremental: true
})
const rejectedKey = MetricKey.counter("tenancy_throttle_rejected_total", {
  description: "Checks a throttle refused, by throttle and tenant",
  incremental: true
})
const backendErrorsKey = MetricKey.counter("tenancy_throttle_backend_errors_total", {
  description: "Checks whose backend failed, by throttle and tenant",
  incremental: true
})
const latencyKey = MetricKey.histogram(
  "tenancy_throttle_backend_latency_ms",
  MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 14 }),
  "Time a backend took to answer or fail a check (asynchronous backends), by backend"
)

/**
 * The throttle metrics: `allowed`, `rejected` and `backendErrors` are tagged
 * with `throttle` and `tenant` (`-` outside a tenant); `backendLatency` (a
 * histogram, milliseconds, asynchronous backends only) with `backend`, to
 * keep its buckets out of the per-tenant cardinality.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  allowed: Metric.fromMetricKey(allowedKey),
  rejected: Metric.fromMetricKey(rejectedKey),
  backendErrors: Metric.fromMetricKey(backendErrorsKey),
  backendLatency: Metric.fromMetricKey(latencyKey)
} as const

interface Counters {
  readonly allowed: Metric.Metric.Counter<number>
  readonly rejected: Metric.Metric.Counter<number>
  readonly backendErrors: Metric.Metric.Counter<number>
}

// Tagged metrics built once per (throttle, tenant): `Metric.tagged` on every
// update would make a new key each time and miss the hook cache. Bounded: at
// the bound the cache starts again (the registry keeps the metrics).
const counterCache = globalValue(
  Symbol.for("effect-tenancy/Throttle/countersByThrottle"),
  () => new Map<string, Map<string, Counters>>()
)
const counterCacheLimit = 10_000

const countersFor = (uid: string, tenant: string): Counters => {
  let byTenant = counterCache.get(uid)
  if (byTenant === undefined) {
    byTenant = new Map()
    counterCache.set(uid, byTenant)
  }
  let counters = byTenant.get(tenant)
  if (counters === undefined) {
    if (byTenant.size >= counterCacheLimit) byTenant.clear()
    counters = {
      allowed: Metric.fromMetricKey(MetricKey.tagged(MetricKey.tagged(allowedKey, "throttle", uid), "tenant", tenant)),
      rejected: Metric.fromMetricKey(
        MetricKey.tagged(MetricKey.tagged(rejectedKey, "throttle", uid), "tenant", tenant)
      ),
      backendErrors: Metric.fromMetricKey(
        MetricKey.tagged(MetricKey.tagged(backendErrorsKey, "throttle", uid), "tenant", tenant)
      )
    }
    byTenant.set(tenant, counters)
  }
  return counters
}

const latencies = globalValue(
  Symbol.for("effect-tenancy/Throttle/latencies"),
  () => new Map<string, Metric.Metric.Histogram<number>>()
)

const latencyOf = (backend: string) => {
  let found = latencies.get(backend)
  if (found === undefined) {
    if (latencies.size >= 1000) latencies.clear()
    found = Metric.fromMetricKey(MetricKey.tagged(latencyKey, "backend", backend))
    latencies.set(backend, found)
  }
  return found
}

// -----------------------------------------------------------------------------
// the check
// -----------------------------------------------------------------------------

const verdictOf = (throttle: Throttle, decision: Decision): Verdict => ({
  uid: throttle.uid,
  rate: throttle.rate,
  allowed: decision.allowed,
  limit: decision.limit,
  remaining: decision.remaining,
  resetAfterMs: decision.resetAfterMs,
  retryAfterMs: decision.retryAfterMs
})

const unlimitedVerdict = (throttle: Throttle): Verdict => ({
  uid: throttle.uid,
  rate: throttle.rate,
  allowed: true,
  limit: Number.POSITIVE_INFINITY,
  remaining: Number.POSITIVE_INFINITY,
  resetAfterMs: 0,
  retryAfterMs: 0
})

const openVerdict = (throttle: Throttle, request: Request | undefined): Verdict =>
  request === undefined ? unlimitedVerdict(throttle) : {
    uid: throttle.uid,
    rate: throttle.rate,
    allowed: true,
    limit: request.policy.burst ?? request.policy.limit,
    remaining: request.policy.burst ?? request.policy.limit,
    resetAfterMs: 0,
    retryAfterMs: 0
  }

// While a backend is down every fail-open check fails the same way: one
// warning per backend every 10 s, with the count of those held back.
const sampledWarning = globalValue(
  Symbol.for("effect-tenancy/Throttle/failOpenWarning"),
  () => makeSampledWarning()
)
const failOpenWarning = (error: ThrottleBackendError) =>
  sampledWarning(error.backend, "Throttle backend failed; admitting requests (fail-open)", error)

const invalidCost = (cost: number) =>
  Effect.dieMessage(`Throttle: the cost of a check must be a non-negative integer, got ${String(cost)}`)

const noTags: ReadonlyArray<never> = []

// Spans (throttles made with `spans: true`): around a call to an
// asynchronous backend (a network round trip), not around a synchronous one,
// where the span would cost as much as the check it traced.
const spanNames = { consume: "Throttle.check", peek: "Throttle.peek", refund: "Throttle.refund" } as const
const batchSpanNames = { consume: "Throttle.checkAll", peek: "Throttle.peekAll", refund: "Throttle.refundAll" } as const

const spanOptions = (backend: string, tenantId: string | undefined, uid: string | undefined) => {
  const attributes: Record<string, string> = { "throttle.backend": backend }
  if (tenantId !== undefined) attributes["tenant.id"] = tenantId
  if (uid !== undefined) attributes["throttle.uid"] = uid
  // No stack trace: it would point into this module, and capturing it costs more than the round trip.
  return { kind: "client" as const, attributes, captureStackTrace: false }
}

// The backend requests of a batch, one per distinct key (a throttle named
// twice is one request of the summed cost: a backend decides each key once),
// and for each throttle the index of its request (-1: no limit).
const requestsOf = (
  throttles: ReadonlyArray<Throttle>,
  tenantId: string | undefined,
  options: Throttle.CheckOptions | undefined
): { readonly requests: ReadonlyArray<Request>; readonly indexOf: ReadonlyArray<number> } => {
  const requests: Array<Request> = []
  const indexOf = new Array<number>(throttles.length)
  for (let i = 0; i < throttles.length; i++) {
    const throttle = throttles[i]
    if (throttle.policy === undefined) {
      indexOf[i] = -1
      continue
    }
    const key = keyOf(throttle, tenantId, options?.identifier ?? throttle.defaultIdentifier)
    const cost = options?.cost ?? throttle.defaultCost
    const same = requests.findIndex((request) => request.key === key)
    if (same === -1) {
      indexOf[i] = requests.push({ key, policy: throttle.policy, cost }) - 1
    } else {
      indexOf[i] = same
      requests[same] = { ...requests[same], cost: requests[same].cost + cost }
    }
  }
  return { requests, indexOf }
}

const verdictsOf = (
  throttles: ReadonlyArray<Throttle>,
  indexOf: ReadonlyArray<number>,
  decisions: ReadonlyArray<Decision>
): { readonly verdicts: ReadonlyArray<Verdict>; readonly allowed: boolean } => {
  const verdicts = new Array<Verdict>(throttles.length)
  let allowed = true
  for (let i = 0; i < throttles.length; i++) {
    const throttle = throttles[i]
    if (indexOf[i] === -1) {
      verdicts[i] = unlimitedVerdict(throttle)
      continue
    }
    const decision = decisions[indexOf[i]]
    if (!decision.allowed) allowed = false
    verdicts[i] = verdictOf(throttle, decision)
  }
  return { verdicts, allowed }
}

const record = (
  throttles: ReadonlyArray<Throttle>,
  tenant: string,
  verdicts: ReadonlyArray<Verdict>,
  mode: Mode
) => {
  if (mode !== "consume") return
  for (let i = 0; i < throttles.length; i++) {
    const counters = countersFor(throttles[i].uid, tenant)
    if (verdicts[i].allowed) counters.allowed.unsafeUpdate(1, [])
    else counters.rejected.unsafeUpdate(1, [])
  }
}

const run = (
  throttles: ReadonlyArray<Throttle>,
  mode: Mode,
  options: Throttle.CheckOptions | undefined
): Effect.Effect<ReadonlyArray<Verdict>, CheckError, ThrottleBackend> =>
  Effect.withFiberRuntime((fiber) => {
    if (options?.cost !== undefined && !isCost(options.cost)) return invalidCost(options.cost)
    const context = fiber.currentContext as Context.Context<ThrottleBackend>
    const backend = Context.unsafeGet(context, ThrottleBackend)
    const tenant = context.unsafeMap.get(internalContext.CurrentTenant.key) as
      | internalContext.CurrentTenant["Type"]
      | undefined
    const tenantId = tenant?.id
    const { indexOf, requests: limited } = requestsOf(throttles, tenantId, options)
    const tenantLabel = tenantId ?? "-"
    const finish = (decisions: ReadonlyArray<Decision>) => {
      const { allowed, verdicts } = verdictsOf(throttles, indexOf, decisions)
      record(throttles, tenantLabel, verdicts, mode)
      return allowed || mode !== "consume"
        ? Effect.succeed(verdicts)
        : Effect.fail(new RateLimitExceeded({ verdicts }))
    }
    if (limited.length === 0) return finish([])
    if (backend.runSync !== undefined) {
      const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
      return finish(backend.runSync(limited, mode, clock.unsafeCurrentTimeMillis()))
    }
    const started = performance.now()
    const decided = Effect.matchEffect(backend.run(limited, mode), {
      onSuccess: (decisions) => {
        latencyOf(backend.name).unsafeUpdate(performance.now() - started, [])
        return finish(decisions)
      },
      onFailure: (error) => {
        // A failure's latency too: a backend that times out shows as slow, not as absent.
        latencyOf(backend.name).unsafeUpdate(performance.now() - started, noTags)
        for (const throttle of throttles) countersFor(throttle.uid, tenantLabel).backendErrors.unsafeUpdate(1, [])
        if (throttles.some((throttle) => throttle.onBackendError === "fail-closed")) return Effect.fail(error)
        const verdicts = throttles.map((throttle, i) => openVerdict(throttle, limited[indexOf[i]]))
        return Effect.as(failOpenWarning(error), verdicts)
      }
    })
    return throttles.some((throttle) => throttle.spans)
      ? Effect.withSpan(
        decided,
        batchSpanNames[mode],
        spanOptions(backend.name, tenantId, throttles.length === 1 ? throttles[0].uid : undefined)
      )
      : decided
  })

const finishOne = (
  throttle: Throttle,
  slot: Slot,
  mode: Mode,
  decision: Decision
): Effect.Effect<Verdict, RateLimitExceeded> => {
  const verdict = verdictOf(throttle, decision)
  if (mode !== "consume") return Effect.succeed(verdict)
  if (decision.allowed) {
    slot.counters.allowed.unsafeUpdate(1, noTags)
    return Effect.succeed(verdict)
  }
  slot.counters.rejected.unsafeUpdate(1, noTags)
  return Effect.fail(new RateLimitExceeded({ verdicts: [verdict] }))
}

// One throttle: no arrays of verdicts; one step for a synchronous backend.
const runOne = (
  throttle: Throttle,
  mode: Mode,
  options: Throttle.CheckOptions | undefined
): Effect.Effect<Verdict, CheckError, ThrottleBackend> =>
  Effect.withFiberRuntime((fiber) => {
    const cost = options?.cost ?? throttle.defaultCost
    if (options?.cost !== undefined && !isCost(cost)) return invalidCost(cost)
    const policy = throttle.policy
    if (policy === undefined) return Effect.succeed(unlimitedVerdict(throttle))
    const context = fiber.currentContext as Context.Context<ThrottleBackend>
    const backend = Context.unsafeGet(context, ThrottleBackend)
    const tenant = context.unsafeMap.get(internalContext.CurrentTenant.key) as
      | internalContext.CurrentTenant["Type"]
      | undefined
    const tenantId = tenant?.id
    const slot = throttle.slots.slotOf(tenantId)
    const request: Request = {
      key: throttle.slots.keyOf(slot, tenantId, options?.identifier ?? throttle.defaultIdentifier),
      policy,
      cost
    }
    if (backend.runSync !== undefined) {
      const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
      return finishOne(throttle, slot, mode, backend.runSync([request], mode, now)[0])
    }
    const started = performance.now()
    const decided = Effect.matchEffect(backend.run([request], mode), {
      onSuccess: (decisions) => {
        latencyOf(backend.name).unsafeUpdate(performance.now() - started, noTags)
        return finishOne(throttle, slot, mode, decisions[0])
      },
      onFailure: (error) => {
        latencyOf(backend.name).unsafeUpdate(performance.now() - started, noTags)
        slot.counters.backendErrors.unsafeUpdate(1, noTags)
        if (throttle.onBackendError === "fail-closed") return Effect.fail(error)
        return Effect.as(failOpenWarning(error), openVerdict(throttle, request))
      }
    })
    return throttle.spans
      ? Effect.withSpan(decided, spanNames[mode], spanOptions(backend.name, tenantId, throttle.uid))
      : decided
  })

/**
 * Whether an error is a rate-limit rejection (not a backend failure).
 *
 * @since 0.1.0
 * @category guards
 */
export const isRateLimitExceeded = (u: unknown): u is RateLimitExceeded =>
  typeof u === "object" && u !== null && "_tag" in u && u._tag === "RateLimitExceeded"

/**
 * Whether an error is a backend failure.
 *
 * @since 0.1.0
 * @category guards
 */
export const isThrottleBackendError = (u: unknown): u is ThrottleBackendError => u instanceof ThrottleBackendError
