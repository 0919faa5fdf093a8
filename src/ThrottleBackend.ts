/**
 * Where throttle counters live. `ThrottleBackend` is the narrow store tag
 * that `Throttle` runs over: one call decides a batch of requests (one per
 * throttle) all-or-nothing, so a per-minute and a per-day limit are checked
 * in one step and a request refused by one consumes from neither.
 *
 * Backends are services: a program that checks a throttle has
 * `ThrottleBackend` in its `R`, and any region can run against another
 * backend with `Effect.provide` / `Effect.provideService` (a tier's Redis,
 * a fresh memory backend in a test). `Throttle` reads the backend from the
 * context at every check, so choosing one per request costs nothing more
 * than providing it.
 *
 * - `layerMemory` / `makeMemory`: in-process, bounded (expired entries are
 *   swept; a cap on keys drops one not used recently), clock from Effect's
 *   `Clock` (so `TestClock` drives it);
 * - `ThrottleBackend/Redis`: one EVALSHA per batch;
 * - `withInsurance`: a primary backend with a fallback used while a circuit
 *   breaker is open.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Health from "./Health.js"
import type { HealthStatus } from "./Health.js"
import * as algorithms from "./internal/throttleAlgorithms.js"

/**
 * The algorithms a throttle can use. GCRA is the default: one number per
 * key, an exact retry-after, burst apart from the rate.
 *
 * @since 0.1.0
 * @category models
 */
export type Algorithm = algorithms.Algorithm

/**
 * The algorithms, in a stable order (the Redis scripts number them so).
 *
 * @since 0.1.0
 * @category models
 */
export const algorithmNames: ReadonlyArray<Algorithm> = ["gcra", "fixed-window", "sliding-window", "token-bucket"]

/**
 * What a key is limited to: `limit` units per `windowMs` milliseconds, and
 * for GCRA and the token bucket how many may be used at once (`burst`,
 * default `limit`). GCRA keeps a millisecond timestamp advanced by
 * `windowMs / limit` per unit, so that interval must be at least
 * `minimumGcraIntervalMs` (`Throttle.make` checks it).
 *
 * @since 0.1.0
 * @category models
 */
export interface Policy {
  readonly algorithm: Algorithm
  readonly limit: number
  readonly windowMs: number
  readonly burst?: number | undefined
}

/**
 * The smallest GCRA interval (`windowMs / limit`), 0.05 ms: 20,000 units a
 * second per key. GCRA's state is a theoretical arrival time in epoch
 * milliseconds; a double holds such a time to about 0.0005 ms until 2109,
 * so a finer interval would be rounded by more than 0.5% at each step (and
 * under 0.00025 ms not counted at all). Faster rates: the fixed-window or
 * sliding-window algorithm, whose state is a count.
 *
 * @since 0.1.0
 * @category constants
 */
export const minimumGcraIntervalMs = 0.05

/**
 * One request of a batch: the counter `key`, its policy and the cost.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly key: string
  readonly policy: Policy
  readonly cost: number
}

/**
 * - `consume`: admit the batch if every request fits, and count it; otherwise count nothing;
 * - `peek`: the same decisions, counting nothing;
 * - `refund`: give each request's cost back (never more than was used); the
 *   decisions are then those of a zero-cost request.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "consume" | "peek" | "refund"

/**
 * A backend's answer for one request. `remaining` is what is left after this
 * request when it is allowed, or now when it is not; `resetAfterMs` is the
 * time until the counter is back to empty; `retryAfterMs` is 0 when allowed,
 * the wait before this same request would be allowed, or `"never"` when its
 * cost is more than the policy can ever admit.
 *
 * In a batch refused by one of its requests nothing is counted; the requests
 * that would have been allowed say so (`allowed: true`) with the figures of a
 * zero-cost request: what stands now.
 *
 * @since 0.1.0
 * @category models
 */
export type Decision = algorithms.Decision

/**
 * The backend could not decide: unreachable, too slow, or it answered
 * something unexpected. Never a rate-limit rejection.
 *
 * @since 0.1.0
 * @category errors
 */
export class ThrottleBackendError extends Schema.TaggedError<ThrottleBackendError>(
  "effect-tenancy/ThrottleBackendError"
)("ThrottleBackendError", {
  backend: Schema.String,
  reason: Schema.Literal("Unavailable", "Timeout", "BadResponse", "CircuitOpen"),
  detail: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  override get message(): string {
    const what = {
      Unavailable: "is unavailable",
      Timeout: "did not answer in time",
      BadResponse: "answered something unexpected",
      CircuitOpen: "is failing; its circuit breaker is open"
    }[this.reason]
    return `Throttle backend ${this.backend} ${what}${this.detail === undefined ? "" : `: ${this.detail}`}`
  }
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ThrottleBackend extends Context.Tag("effect-tenancy/ThrottleBackend")<ThrottleBackend, {
  /** A name for logs, metrics and errors (`memory`, `redis`, …). */
  readonly name: string
  /**
   * Decides `requests` together. In `consume` mode the batch is counted only
   * when every request is allowed. The decisions come back in the order of
   * `requests`. The keys of a batch are distinct (`Throttle` merges a
   * throttle named twice into one request of the summed cost).
   */
  readonly run: (
    requests: ReadonlyArray<Request>,
    mode: Mode
  ) => Effect.Effect<ReadonlyArray<Decision>, ThrottleBackendError>
  /**
   * A synchronous `run`, for backends that can answer without waiting (the
   * memory backend); `Throttle` uses it to skip a step. `now` is the time
   * from the running fiber's clock.
   */
  readonly runSync?:
    | ((requests: ReadonlyArray<Request>, mode: Mode, now: number) => ReadonlyArray<Decision>)
    | undefined
  /** Whether the backend can answer now. Never fails. */
  readonly health: Effect.Effect<HealthStatus>
}>() {}

// -----------------------------------------------------------------------------
// memory
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Memory {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Options {
    /**
     * The most keys held (default 100,000). Past it a key not used recently
     * is dropped (CLOCK, an approximation of least recently used): its
     * counter starts again from empty, which errs on the side of admitting.
     */
    readonly maxKeys?: number | undefined
    /** How often expired entries are swept (default 10 seconds). */
    readonly sweepInterval?: Duration.DurationInput | undefined
    /** The name reported in errors and metrics (default `memory`). */
    readonly name?: string | undefined
  }

  /**
   * @since 0.1.0
   * @category models
   */
  export interface Stats {
    readonly keys: number
    readonly evicted: number
    readonly swept: number
  }
}

interface Entry {
  state: algorithms.State
  expiresAt: number
  /** Used since the eviction hand last passed (CLOCK's reference bit). */
  used: boolean
}

/**
 * The memory backend's store, exposed for its stats.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryBackend {
  readonly backend: ThrottleBackend["Type"]
  /** Keys held, keys evicted by the cap, entries removed by the sweep. */
  readonly stats: Effect.Effect<Memory.Stats>
  /** Removes the expired entries now (the sweep does it on its own). */
  readonly sweep: Effect.Effect<number>
}

/**
 * An unsafe, synchronous memory store: the decisions of `run`, counted in a
 * `Map`. `ThrottleBackend/Redis` uses one as its insurance in tests;
 * applications use `makeMemory` / `layerMemory`.
 *
 * At the cap, the key to drop is chosen by CLOCK (second chance), an
 * approximation of least-recently-used that needs no reordering on a hit:
 * a key used since the hand last passed it is moved to the back instead of
 * being dropped. A check of a known key is one `Map` lookup.
 *
 * @since 0.1.0
 * @category constructors
 */
export const unsafeMakeMemoryStore = (options?: Memory.Options) => {
  const maxKeys = options?.maxKeys ?? 100_000
  if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
    throw new RangeError(`ThrottleBackend.layerMemory: maxKeys must be a positive integer, got ${maxKeys}`)
  }
  const entries = new Map<string, Entry>()
  // The clock hand: one long-lived iterator over the Map in insertion order.
  // Everything before its position was dropped or moved to the back, so its
  // next key is the oldest. (A fresh `entries.keys()` per eviction would step
  // over every deleted slot at the front of the Map each time.)
  let hand = entries.keys()
  let evicted = 0
  let swept = 0

  const evictOne = () => {
    // Bounded: each key passed is either dropped or has its bit cleared.
    for (let passed = 0; passed <= entries.size; passed++) {
      let next = hand.next()
      if (next.done) {
        hand = entries.keys()
        next = hand.next()
        if (next.done) return
      }
      const key = next.value
      const entry = entries.get(key)!
      if (entry.used) {
        entry.used = false
        entries.delete(key)
        entries.set(key, entry)
        continue
      }
      entries.delete(key)
      evicted++
      return
    }
  }

  const insert = (key: string, state: algorithms.State, expiresAt: number) => {
    if (entries.size >= maxKeys) evictOne()
    entries.set(key, { state, expiresAt, used: false })
  }

  // The stored state, if it has not expired.
  const live = (entry: Entry | undefined, now: number) =>
    entry !== undefined && entry.expiresAt > now ? entry.state : undefined

  const store = (key: string, entry: Entry | undefined, state: algorithms.State, expiresAt: number) => {
    if (entry === undefined) return insert(key, state, expiresAt)
    entry.state = state
    entry.expiresAt = expiresAt
    entry.used = true
  }

  const runOne = (request: Request, mode: Mode, now: number): Decision => {
    const entry = entries.get(request.key)
    // Every check is a use, refused ones too: the key being hammered is the last to go.
    if (entry !== undefined) entry.used = true
    const policy = request.policy
    if (mode === "refund") {
      const state = algorithms.refund(policy, live(entry, now), now, request.cost)
      const outcome = algorithms.decide(policy.algorithm, policy, state, now, 0)
      if (state !== undefined) store(request.key, entry, state, now + outcome.decision.resetAfterMs)
      return outcome.decision
    }
    const outcome = algorithms.decide(policy.algorithm, policy, live(entry, now), now, request.cost)
    if (mode === "consume" && outcome.decision.allowed) {
      store(request.key, entry, outcome.state!, now + outcome.decision.resetAfterMs)
    }
    return outcome.decision
  }

  const run = (requests: ReadonlyArray<Request>, mode: Mode, now: number): ReadonlyArray<Decision> => {
    if (requests.length === 1) return [runOne(requests[0], mode, now)]
    if (mode === "refund") return requests.map((request) => runOne(request, mode, now))
    const found = requests.map((request) => {
      const entry = entries.get(request.key)
      if (entry !== undefined) entry.used = true
      return entry
    })
    const outcomes = requests.map((request, i) =>
      algorithms.decide(request.policy.algorithm, request.policy, live(found[i], now), now, request.cost)
    )
    if (!outcomes.every((outcome) => outcome.decision.allowed)) {
      // Refused: nothing is counted, and the others say what stands now.
      return outcomes.map((outcome, i) =>
        outcome.decision.allowed
          ? algorithms.decide(requests[i].policy.algorithm, requests[i].policy, live(found[i], now), now, 0).decision
          : outcome.decision
      )
    }
    if (mode === "consume") {
      for (let i = 0; i < requests.length; i++) {
        // A key named twice in one batch: the second write sees the first's entry.
        const entry = found[i] ?? entries.get(requests[i].key)
        store(requests[i].key, entry, outcomes[i].state!, now + outcomes[i].decision.resetAfterMs)
      }
    }
    return outcomes.map((outcome) => outcome.decision)
  }

  const sweep = (now: number): number => {
    let removed = 0
    for (const [key, entry] of entries) {
      if (entry.expiresAt <= now) {
        entries.delete(key)
        removed++
      }
    }
    swept += removed
    return removed
  }

  return {
    run,
    runOne,
    sweep,
    stats: (): Memory.Stats => ({ keys: entries.size, evicted, swept })
  }
}

/**
 * A memory backend whose sweep runs in the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (options?: Memory.Options): Effect.Effect<MemoryBackend, never, Scope.Scope> =>
  Effect.gen(function*() {
    const store = unsafeMakeMemoryStore(options)
    const clock = yield* Effect.clock
    const name = options?.name ?? "memory"
    const sweep = Effect.sync(() => store.sweep(clock.unsafeCurrentTimeMillis()))
    yield* sweep.pipe(
      Effect.schedule(Schedule.spaced(options?.sweepInterval ?? Duration.seconds(10))),
      Effect.interruptible,
      Effect.forkScoped
    )
    const backend = ThrottleBackend.of({
      name,
      run: (requests, mode) => Effect.map(Clock.currentTimeMillis, (now) => store.run(requests, mode, now)),
      runSync: store.run,
      health: Effect.succeed(new Health.HealthStatus({ component: `throttle:${name}`, status: "up", latencyMs: 0 }))
    })
    return { backend, stats: Effect.sync(store.stats), sweep }
  })

/**
 * The in-process backend, bounded by `maxKeys`. Each layer has its own
 * counters: `Effect.provide(ThrottleBackend.layerMemory())` around a region
 * gives it fresh ones.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options?: Memory.Options): Layer.Layer<ThrottleBackend> =>
  Layer.scoped(ThrottleBackend, Effect.map(makeMemory(options), (memory) => memory.backend))

// -----------------------------------------------------------------------------
// insurance
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Insurance {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Options {
    /** Consecutive primary failures that open the circuit (default 3). */
    readonly failures?: number | undefined
    /** How long the circuit stays open before one request probes the primary again (default 5 seconds). */
    readonly resetAfter?: Duration.DurationInput | undefined
  }

  /**
   * @since 0.1.0
   * @category models
   */
  export type CircuitState = "closed" | "open" | "half-open"
}

/**
 * A backend that answers from `primary` and, when the primary fails, from
 * `insurance` (typically a memory backend): a failed call is answered by the
 * insurance, and after `failures` consecutive failures the circuit opens and
 * every call goes to the insurance for `resetAfter`. Then one call probes
 * the primary: success closes the circuit, failure opens it again. Counters
 * kept by the insurance while the primary was down are not carried back.
 *
 * `circuit` reports the breaker's state (for health pages and tests).
 *
 * @since 0.1.0
 * @category combinators
 */
export const withInsurance = (
  primary: ThrottleBackend["Type"],
  insurance: ThrottleBackend["Type"],
  options?: Insurance.Options
): ThrottleBackend["Type"] & { readonly circuit: Effect.Effect<Insurance.CircuitState> } => {
  const threshold = Math.max(1, options?.failures ?? 3)
  const resetAfterMs = Duration.toMillis(Duration.decode(options?.resetAfter ?? Duration.seconds(5)))
  let failures = 0
  let openUntil = 0
  let probing = false
  const state = (now: number): Insurance.CircuitState =>
    failures < threshold ? "closed" : now < openUntil || probing ? "open" : "half-open"

  const fallBack = (requests: ReadonlyArray<Request>, mode: Mode, error: ThrottleBackendError) =>
    Effect.suspend(() => {
      failures++
      const opened = failures === threshold
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (failures >= threshold) openUntil = now + resetAfterMs
        const log = opened
          ? Effect.logWarning(
            `Throttle backend ${primary.name} failed ${threshold} times; answering from ${insurance.name} for ${resetAfterMs} ms`,
            error
          )
          : Effect.void
        return Effect.zipRight(log, insurance.run(requests, mode))
      })
    })

  const run = (requests: ReadonlyArray<Request>, mode: Mode) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      switch (state(now)) {
        case "open":
          return insurance.run(requests, mode)
        case "half-open": {
          probing = true
          return primary.run(requests, mode).pipe(
            Effect.tap(() =>
              Effect.suspend(() => {
                failures = 0
                return Effect.logInfo(`Throttle backend ${primary.name} answers again; circuit closed`)
              })
            ),
            Effect.catchAll((error) => fallBack(requests, mode, error)),
            Effect.ensuring(Effect.sync(() => {
              probing = false
            }))
          )
        }
        case "closed":
          return primary.run(requests, mode).pipe(
            Effect.tap(() => {
              failures = 0
            }),
            Effect.catchAll((error) => fallBack(requests, mode, error))
          )
      }
    })

  return {
    name: primary.name,
    run,
    health: primary.health,
    circuit: Effect.map(Clock.currentTimeMillis, state)
  }
}

/**
 * `withInsurance` as a layer: the primary backend from `primary`, the
 * insurance from `options.insurance` (default: a memory backend).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithInsurance = <E, R>(
  primary: Layer.Layer<ThrottleBackend, E, R>,
  options?: Insurance.Options & { readonly insurance?: Layer.Layer<ThrottleBackend> | undefined }
): Layer.Layer<ThrottleBackend, E, R> =>
  Layer.scoped(
    ThrottleBackend,
    Effect.gen(function*() {
      const main = Context.get(yield* Layer.build(primary), ThrottleBackend)
      const insurance = Context.get(yield* Layer.build(options?.insurance ?? layerMemory()), ThrottleBackend)
      return withInsurance(main, insurance, options)
    })
  )
