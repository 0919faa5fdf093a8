import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as A from "../src/internal/throttleAlgorithms.js"

const algorithms: ReadonlyArray<A.Algorithm> = ["gcra", "fixed-window", "sliding-window", "token-bucket"]
const params: A.Params = { limit: 5, windowMs: 1000 }

// Runs `cost`-sized requests at `now`, storing the state as a backend would.
const run = (algorithm: A.Algorithm, p: A.Params, steps: ReadonlyArray<readonly [now: number, cost: number]>) => {
  let state: A.State | undefined
  return steps.map(([now, cost]) => {
    const outcome = A.decide(algorithm, p, state, now, cost)
    state = outcome.state
    return outcome.decision
  })
}

describe("throttle algorithms", () => {
  for (const algorithm of algorithms) {
    describe(algorithm, () => {
      it("admits the limit at once, then denies, counting remaining down", () => {
        // Start on a window boundary so that window algorithms see one window.
        const decisions = run(algorithm, params, Array.from({ length: 7 }, () => [10_000, 1] as const))
        assert.deepStrictEqual(decisions.map((d) => d.allowed), [true, true, true, true, true, false, false])
        assert.deepStrictEqual(decisions.slice(0, 5).map((d) => d.remaining), [4, 3, 2, 1, 0])
        assert.strictEqual(decisions[5].remaining, 0)
        assert.isTrue(typeof decisions[5].retryAfterMs === "number" && decisions[5].retryAfterMs > 0)
        assert.strictEqual(decisions[0].limit, 5)
      })

      it("a denial leaves the state untouched", () => {
        let state: A.State | undefined
        for (let i = 0; i < 5; i++) state = A.decide(algorithm, params, state, 10_000, 1).state
        const denied = A.decide(algorithm, params, state, 10_000, 1)
        assert.isFalse(denied.decision.allowed)
        assert.strictEqual(denied.state, state)
        const heavy = A.decide(algorithm, params, state, 10_000, 3)
        assert.strictEqual(heavy.state, state)
      })

      it("a cost above what the policy can ever admit is denied with retry-after never", () => {
        const outcome = A.decide(algorithm, params, undefined, 10_000, 6)
        assert.isFalse(outcome.decision.allowed)
        assert.strictEqual(outcome.decision.retryAfterMs, "never")
        assert.isUndefined(outcome.state)
      })

      it("a refund gives the capacity back", () => {
        let state: A.State | undefined
        for (let i = 0; i < 5; i++) state = A.decide(algorithm, params, state, 10_000, 1).state
        assert.isFalse(A.decide(algorithm, params, state, 10_000, 1).decision.allowed)
        state = A.refund(params, state, 10_000, 2)
        const a = A.decide(algorithm, params, state, 10_000, 2)
        assert.isTrue(a.decision.allowed)
        assert.isFalse(A.decide(algorithm, params, a.state, 10_000, 1).decision.allowed)
      })

      it.prop(
        "retry-after is when the same request is allowed",
        [
          fc.array(fc.tuple(fc.integer({ min: 0, max: 700 }), fc.integer({ min: 1, max: 5 })), {
            minLength: 1,
            maxLength: 40
          }),
          fc.integer({ min: 1, max: 20 }),
          fc.integer({ min: 100, max: 5000 })
        ],
        ([steps, limit, windowMs]) => {
          const p: A.Params = { limit, windowMs }
          let state: A.State | undefined
          let now = 1_000_000
          for (const [dt, cost] of steps) {
            now += dt
            const outcome = A.decide(algorithm, p, state, now, cost)
            const r = outcome.decision.retryAfterMs
            if (!outcome.decision.allowed && r !== "never") {
              assert.isTrue(
                A.decide(algorithm, p, state, now + r, cost).decision.allowed,
                `${algorithm}: not allowed after retry-after ${r}`
              )
              if (algorithm !== "sliding-window" && r > 1) {
                assert.isFalse(
                  A.decide(algorithm, p, state, now + r - 1, cost).decision.allowed,
                  `${algorithm}: allowed before retry-after ${r}`
                )
              }
            }
            if (r === "never") assert.isAbove(cost, p.burst ?? p.limit)
            assert.isAtLeast(outcome.decision.remaining, 0)
            assert.isAtMost(outcome.decision.remaining, p.burst ?? p.limit)
            state = outcome.state
          }
        },
        { fastCheck: { numRuns: 300 } }
      )
    })
  }

  it("fixed windows are aligned to the clock", () => {
    const decision = A.decide("fixed-window", params, undefined, 12_300, 1).decision
    assert.strictEqual(decision.resetAfterMs, 700)
    let state: A.State | undefined
    for (let i = 0; i < 5; i++) state = A.decide("fixed-window", params, state, 12_300, 1).state
    const denied = A.decide("fixed-window", params, state, 12_999, 1)
    assert.isFalse(denied.decision.allowed)
    assert.strictEqual(denied.decision.retryAfterMs, 1)
    assert.isTrue(A.decide("fixed-window", params, state, 13_000, 1).decision.allowed)
  })

  it("GCRA spaces requests by window / limit after the burst, exactly", () => {
    let state: A.State | undefined
    for (let i = 0; i < 5; i++) state = A.decide("gcra", params, state, 0, 1).state
    const denied = A.decide("gcra", params, state, 0, 1).decision
    assert.strictEqual(denied.retryAfterMs, 200)
    assert.isTrue(A.decide("gcra", params, state, 200, 1).decision.allowed)
    assert.isFalse(A.decide("gcra", params, state, 199, 1).decision.allowed)
  })

  it("GCRA and the token bucket take a burst apart from the rate", () => {
    const p: A.Params = { limit: 10, windowMs: 1000, burst: 2 }
    for (const algorithm of ["gcra", "token-bucket"] as const) {
      const decisions = run(algorithm, p, [[0, 1], [0, 1], [0, 1]])
      assert.deepStrictEqual(decisions.map((d) => d.allowed), [true, true, false], algorithm)
      assert.strictEqual(decisions[2].retryAfterMs, 100, algorithm)
    }
  })

  it("the sliding window counts the previous window by its overlap", () => {
    let state: A.State | undefined
    for (let i = 0; i < 5; i++) state = A.decide("sliding-window", params, state, 10_000, 1).state
    // Half-way through the next window, half of the previous 5 still count.
    const half = A.decide("sliding-window", params, state, 11_500, 1)
    assert.isTrue(half.decision.allowed)
    assert.strictEqual(half.decision.remaining, 1) // 5 - 2.5 - 1 = 1.5, floored
    const over = A.decide("sliding-window", params, half.state, 11_500, 2)
    assert.isFalse(over.decision.allowed)
  })
})
