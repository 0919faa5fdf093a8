/**
 * The conformance suite of `ThrottleBackend`: the memory backend and the
 * Redis backend (one server and a Cluster) must pass it. Call
 * `suite(name, layer)` from a test file. Time is driven with `TestClock`, so
 * the backend must read the fiber's clock (the Redis backend with
 * `clock: "client"`). Every test uses keys of its own under one random
 * `{t:<id>}` hash tag, so batches stay in one Cluster slot.
 *
 * The strongest check is the first: random scenarios (policies, batches,
 * costs, modes, time steps) must get exactly the decisions of the pure
 * algorithms of `internal/throttleAlgorithms.ts`, stored as the documented
 * modes say.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, FastCheck as fc, type Layer, Runtime, TestClock } from "effect"
import * as A from "../../src/internal/throttleAlgorithms.js"
import {
  algorithmNames,
  type Decision,
  type Mode,
  type Policy,
  type Request,
  ThrottleBackend
} from "../../src/ThrottleBackend.js"

export interface SuiteOptions {
  /** Runs of the model property (default 300). */
  readonly runs?: number | undefined
}

let tags = 0
/** A hash tag of its own, as `Throttle` puts in its keys. */
const freshTag = () => `{t:s${Math.random().toString(36).slice(2, 8)}${++tags}}`

/**
 * The documented semantics of `run`, written over the pure algorithms: a
 * stored state expires `resetAfterMs` after it was written; `consume` stores
 * the batch only when every request is allowed, deciding all of them on the
 * states as they were; in a refused batch (consume or peek) the requests that
 * would have been allowed answer as zero-cost requests; `peek` stores
 * nothing; `refund` gives each cost back
 * (in order) and answers as for a zero-cost request.
 */
export class Model {
  readonly entries = new Map<string, { state: A.State; expiresAt: number }>()

  read(key: string, now: number): A.State | undefined {
    const entry = this.entries.get(key)
    return entry === undefined || entry.expiresAt <= now ? undefined : entry.state
  }

  run(requests: ReadonlyArray<Request>, mode: Mode, now: number): ReadonlyArray<Decision> {
    if (mode === "refund") {
      return requests.map((request) => {
        const state = A.refund(request.policy, this.read(request.key, now), now, request.cost)
        const { decision } = A.decide(request.policy.algorithm, request.policy, state, now, 0)
        if (state !== undefined) this.entries.set(request.key, { state, expiresAt: now + decision.resetAfterMs })
        return decision
      })
    }
    const outcomes = requests.map((request) =>
      A.decide(request.policy.algorithm, request.policy, this.read(request.key, now), now, request.cost)
    )
    if (!outcomes.every((outcome) => outcome.decision.allowed)) {
      // A refused batch counts nothing; the requests that would have passed answer as zero-cost ones.
      return outcomes.map((outcome, i) =>
        outcome.decision.allowed
          ? A.decide(requests[i].policy.algorithm, requests[i].policy, this.read(requests[i].key, now), now, 0)
            .decision
          : outcome.decision
      )
    }
    if (mode === "consume") {
      requests.forEach((request, i) => {
        const { decision, state } = outcomes[i]
        this.entries.set(request.key, { state: state!, expiresAt: now + decision.resetAfterMs })
      })
    }
    return outcomes.map((outcome) => outcome.decision)
  }
}

// -----------------------------------------------------------------------------
// the random scenarios
// -----------------------------------------------------------------------------

const policyArbitrary: fc.Arbitrary<Policy> = fc.record({
  algorithm: fc.constantFrom(...algorithmNames),
  limit: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 1000 })),
  windowMs: fc.oneof(
    fc.constantFrom(1000, 60_000, 3_600_000, 86_400_000),
    fc.integer({ min: 1, max: 100_000 })
  ),
  burst: fc.option(fc.integer({ min: 1, max: 30 }), { nil: undefined, freq: 3 })
})

const stepArbitrary = fc.record({
  requests: fc.array(
    fc.record({
      key: fc.nat(2),
      // Mostly the key's own policy; sometimes another one (a key reused with another algorithm).
      policy: fc.option(fc.nat(2), { nil: undefined, freq: 6 }),
      cost: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 40 }))
    }),
    { minLength: 1, maxLength: 3 }
  ),
  mode: fc.constantFrom<Mode>("consume", "consume", "consume", "peek", "refund"),
  advanceMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 200_000 }))
})

const scenarioArbitrary = fc.record({
  policies: fc.array(policyArbitrary, { minLength: 3, maxLength: 3 }),
  steps: fc.array(stepArbitrary, { minLength: 1, maxLength: 40 }),
  startMs: fc.integer({ min: 0, max: 1_000_000_000 })
})

type Scenario = typeof scenarioArbitrary extends fc.Arbitrary<infer A> ? A : never

const runScenario = (scenario: Scenario) =>
  Effect.gen(function*() {
    const backend = yield* ThrottleBackend
    const model = new Model()
    const tag = freshTag()
    yield* TestClock.adjust(scenario.startMs)
    for (const [index, step] of scenario.steps.entries()) {
      yield* TestClock.adjust(step.advanceMs)
      const now = yield* Clock.currentTimeMillis
      const requests = step.requests.map((r): Request => ({
        key: `${tag}:k${r.key}`,
        policy: scenario.policies[r.policy ?? r.key],
        cost: r.cost
      }))
      const expected = model.run(requests, step.mode, now)
      const actual = yield* backend.run(requests, step.mode)
      assert.deepStrictEqual(actual, expected, `step ${index} (${step.mode} at ${now})`)
    }
  })

// -----------------------------------------------------------------------------
// helpers for the examples
// -----------------------------------------------------------------------------

const policy = (algorithm: A.Algorithm, limit: number, windowMs: number, burst?: number): Policy =>
  burst === undefined ? { algorithm, limit, windowMs } : { algorithm, limit, windowMs, burst }

const one = (key: string, p: Policy, mode: Mode, cost = 1) =>
  Effect.flatMap(ThrottleBackend, (backend) => backend.run([{ key, policy: p, cost }], mode)).pipe(
    Effect.map((decisions) => decisions[0])
  )

const consumeN = (key: string, p: Policy, n: number, cost = 1) =>
  Effect.forEach(Array.from({ length: n }), () => one(key, p, "consume", cost))

/** Moves the test clock to the next multiple of `windowMs` (and into realistic dates on first use). */
const alignTo = (windowMs: number) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    if (now < 1_767_225_600_000) yield* TestClock.setTime(1_767_225_600_000)
    const at = yield* Clock.currentTimeMillis
    const rest = at % windowMs
    if (rest !== 0) yield* TestClock.adjust(windowMs - rest)
  })

export const suite = <E>(name: string, layer: Layer.Layer<ThrottleBackend, E>, options?: SuiteOptions) =>
  describe(`ThrottleBackend conformance: ${name}`, () => {
    it.layer(layer, { timeout: "60 seconds" })((it) => {
      it.effect("random scenarios get exactly the decisions of the pure algorithms", () =>
        Effect.gen(function*() {
          const runtime = yield* Effect.runtime<ThrottleBackend>()
          yield* Effect.promise(() =>
            fc.assert(
              fc.asyncProperty(scenarioArbitrary, (scenario) => Runtime.runPromise(runtime)(runScenario(scenario))),
              { numRuns: options?.runs ?? 300 }
            )
          )
        }), { timeout: 120_000 })

      it.effect("the same scenario at realistic dates (large timestamps)", () =>
        Effect.gen(function*() {
          yield* alignTo(1)
          const runtime = yield* Effect.runtime<ThrottleBackend>()
          yield* Effect.promise(() =>
            fc.assert(
              fc.asyncProperty(scenarioArbitrary, (scenario) => Runtime.runPromise(runtime)(runScenario(scenario))),
              { numRuns: Math.ceil((options?.runs ?? 300) / 3) }
            )
          )
        }), { timeout: 120_000 })

      it.effect("an empty batch decides nothing", () =>
        Effect.gen(function*() {
          const backend = yield* ThrottleBackend
          assert.deepStrictEqual(yield* backend.run([], "consume"), [])
        }))

      for (const algorithm of algorithmNames) {
        it.effect(`${algorithm}: the limit is admitted, then retry-after is exact to the millisecond`, () =>
          Effect.gen(function*() {
            const p = policy(algorithm, 3, 1000)
            const key = `${freshTag()}:edge`
            yield* alignTo(1000)
            const admitted = yield* consumeN(key, p, 3)
            assert.deepStrictEqual(admitted.map((d) => [d.allowed, d.remaining, d.limit]), [
              [true, 2, 3],
              [true, 1, 3],
              [true, 0, 3]
            ])
            const denied = yield* one(key, p, "consume")
            assert.isFalse(denied.allowed)
            assert.strictEqual(denied.remaining, 0)
            const retryAfter = denied.retryAfterMs
            assert.isTrue(typeof retryAfter === "number" && retryAfter > 0)
            yield* TestClock.adjust((retryAfter as number) - 1)
            const early = yield* one(key, p, "consume")
            assert.isFalse(early.allowed)
            assert.strictEqual(early.retryAfterMs, 1)
            yield* TestClock.adjust(1)
            assert.isTrue((yield* one(key, p, "consume")).allowed)
          }))
      }

      it.effect("fixed-window: windows are aligned to the clock and a new window starts full", () =>
        Effect.gen(function*() {
          const p = policy("fixed-window", 3, 1000)
          const key = `${freshTag()}:fixed`
          yield* alignTo(1000)
          yield* TestClock.adjust(990)
          assert.isTrue((yield* consumeN(key, p, 3)).every((d) => d.allowed))
          const denied = yield* one(key, p, "consume")
          assert.deepStrictEqual(denied, { allowed: false, limit: 3, remaining: 0, resetAfterMs: 10, retryAfterMs: 10 })
          yield* TestClock.adjust(10)
          const next = yield* consumeN(key, p, 4)
          assert.deepStrictEqual(next.map((d) => d.allowed), [true, true, true, false])
          assert.strictEqual(next[0].resetAfterMs, 1000)
        }))

      it.effect("sliding-window: the previous window still weighs just after the edge", () =>
        Effect.gen(function*() {
          const p = policy("sliding-window", 4, 1000)
          const key = `${freshTag()}:sliding`
          yield* alignTo(1000)
          assert.isTrue((yield* consumeN(key, p, 4)).every((d) => d.allowed))
          yield* TestClock.adjust(1000)
          // previous = 4 at full weight: nothing fits at the edge.
          assert.isFalse((yield* one(key, p, "consume")).allowed)
          // A quarter into the window the previous one weighs 3: one fits.
          yield* TestClock.adjust(250)
          const decisions = yield* consumeN(key, p, 2)
          assert.deepStrictEqual(decisions.map((d) => d.allowed), [true, false])
          assert.strictEqual(decisions[0].remaining, 0)
        }))

      for (const algorithm of ["gcra", "token-bucket"] as const) {
        it.effect(`${algorithm}: burst is apart from the rate`, () =>
          Effect.gen(function*() {
            const p = policy(algorithm, 10, 10_000, 3)
            const key = `${freshTag()}:burst`
            const decisions = yield* consumeN(key, p, 4)
            assert.deepStrictEqual(decisions.map((d) => [d.allowed, d.remaining, d.limit]), [
              [true, 2, 3],
              [true, 1, 3],
              [true, 0, 3],
              [false, 0, 3]
            ])
            // One unit every 1,000 ms.
            assert.strictEqual(decisions[3].retryAfterMs, 1000)
            yield* TestClock.adjust(1000)
            assert.deepStrictEqual((yield* consumeN(key, p, 2)).map((d) => d.allowed), [true, false])
            // A burst larger than the limit.
            const wide = policy(algorithm, 2, 10_000, 5)
            const wideKey = `${freshTag()}:wide`
            assert.deepStrictEqual((yield* consumeN(wideKey, wide, 6)).map((d) => d.allowed), [
              true,
              true,
              true,
              true,
              true,
              false
            ])
          }))
      }

      for (const algorithm of algorithmNames) {
        it.effect(`${algorithm}: refund gives capacity back, never more than was used`, () =>
          Effect.gen(function*() {
            const p = policy(algorithm, 3, 60_000)
            const key = `${freshTag()}:refund`
            yield* alignTo(60_000)
            yield* consumeN(key, p, 3)
            assert.isFalse((yield* one(key, p, "consume")).allowed)
            const refunded = yield* one(key, p, "refund", 2)
            // The decision of a zero-cost request after the refund.
            assert.isTrue(refunded.allowed)
            assert.strictEqual(refunded.remaining, 2)
            assert.strictEqual(refunded.retryAfterMs, 0)
            assert.deepStrictEqual((yield* consumeN(key, p, 3)).map((d) => d.allowed), [true, true, false])
            // Refunding more than was used, or on a key never used, leaves at most an empty counter.
            const other = `${freshTag()}:over`
            yield* one(other, p, "consume")
            const over = yield* one(other, p, "refund", 10)
            assert.strictEqual(over.remaining, 3)
            const fresh = yield* one(`${freshTag()}:never-used`, p, "refund", 5)
            assert.deepStrictEqual(fresh.remaining, 3)
            assert.deepStrictEqual((yield* consumeN(other, p, 4)).map((d) => d.allowed), [true, true, true, false])
          }))

        it.effect(`${algorithm}: peek decides without consuming`, () =>
          Effect.gen(function*() {
            const p = policy(algorithm, 3, 60_000)
            const key = `${freshTag()}:peek`
            yield* alignTo(60_000)
            for (let i = 0; i < 5; i++) {
              const peeked = yield* one(key, p, "peek", 2)
              assert.deepStrictEqual([peeked.allowed, peeked.remaining], [true, 1])
            }
            yield* consumeN(key, p, 3)
            const peeked = yield* one(key, p, "peek")
            assert.isFalse(peeked.allowed)
            yield* TestClock.adjust(120_000)
            assert.isTrue((yield* one(key, p, "peek")).allowed)
          }))

        it.effect(`${algorithm}: a cost above the capacity is denied with retry-after never`, () =>
          Effect.gen(function*() {
            const p = policy(algorithm, 3, 60_000)
            const key = `${freshTag()}:heavy`
            const heavy = yield* one(key, p, "consume", 4)
            assert.deepStrictEqual([heavy.allowed, heavy.limit, heavy.remaining, heavy.retryAfterMs], [
              false,
              3,
              3,
              "never"
            ])
            // Nothing was counted.
            assert.deepStrictEqual((yield* consumeN(key, p, 4)).map((d) => d.allowed), [true, true, true, false])
            assert.strictEqual((yield* one(key, p, "consume", 4)).retryAfterMs, "never")
          }))
      }

      it.effect("a batch is all-or-nothing: refused by one limit, it consumes from none", () =>
        Effect.gen(function*() {
          const backend = yield* ThrottleBackend
          const tag = freshTag()
          const perMinute: Request = { key: `${tag}:minute`, policy: policy("fixed-window", 3, 60_000), cost: 1 }
          const perDay: Request = { key: `${tag}:day`, policy: policy("gcra", 5, 86_400_000), cost: 1 }
          yield* alignTo(60_000)
          for (let i = 0; i < 3; i++) {
            const decisions = yield* backend.run([perMinute, perDay], "consume")
            assert.deepStrictEqual(decisions.map((d) => d.allowed), [true, true])
          }
          // The minute refuses; the day would have admitted it, counts nothing, and says what stands now.
          const refused = yield* backend.run([perMinute, perDay], "consume")
          assert.deepStrictEqual(refused.map((d) => d.allowed), [false, true])
          assert.strictEqual(refused[1].remaining, 2, "5 a day, 3 used: 2 left (the refused request is not counted)")
          const [, day] = yield* backend.run([perMinute, perDay], "peek")
          assert.strictEqual(day.remaining, 2, "a refused peek batch answers the same way")
          const [alone] = yield* backend.run([perDay], "peek")
          assert.strictEqual(alone.remaining, 1, "a peek that would pass says what is left after it")
          yield* TestClock.adjust(60_000)
          assert.deepStrictEqual((yield* backend.run([perMinute, perDay], "consume")).map((d) => d.allowed), [
            true,
            true
          ])
          // Four units used today: a batch costing 2 is refused by the day alone, and the minute keeps its count.
          const heavy = yield* backend.run([{ ...perMinute, cost: 2 }, { ...perDay, cost: 2 }], "consume")
          assert.deepStrictEqual(heavy.map((d) => d.allowed), [true, false])
          assert.strictEqual(heavy[0].remaining, 2, "the minute: one used this window, nothing counted now")
          const [minute] = yield* backend.run([perMinute], "peek")
          assert.strictEqual(minute.remaining, 1)
          assert.strictEqual(minute.limit, 3)
        }))

      it.effect("keys are independent", () =>
        Effect.gen(function*() {
          const backend = yield* ThrottleBackend
          const tag = freshTag()
          const p = policy("gcra", 2, 60_000)
          yield* consumeN(`${tag}:a`, p, 2)
          assert.isFalse((yield* one(`${tag}:a`, p, "consume")).allowed)
          assert.isTrue((yield* one(`${tag}:b`, p, "consume")).allowed)
          assert.isTrue((yield* one(`${freshTag()}:a`, p, "consume")).allowed)
          const both = yield* backend.run([
            { key: `${tag}:a`, policy: p, cost: 1 },
            { key: `${tag}:c`, policy: p, cost: 1 }
          ], "peek")
          assert.deepStrictEqual(both.map((d) => d.allowed), [false, true])
        }))
    })
  })
