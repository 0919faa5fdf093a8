import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Either, FastCheck as fc, Schema } from "effect"
import * as Rate from "effect-tenancy/Rate"

const limited = (input: string) => {
  const result = Rate.parse(input)
  assert.isTrue(Either.isRight(result), input)
  const rate = Either.getOrThrow(result)
  assert.strictEqual(rate._tag, "Limited")
  return rate as Rate.Limited
}

describe("Rate", () => {
  it("parses the text forms", () => {
    const cases: ReadonlyArray<readonly [string, number, number]> = [
      ["1000/hour", 1000, 3_600_000],
      ["5/min", 5, 60_000],
      ["10/30s", 10, 30_000],
      ["200/500ms", 200, 500],
      ["3/2h", 3, 7_200_000],
      ["1/d", 1, 86_400_000],
      [" 7 / 10 seconds ", 7, 10_000],
      ["100/1.5s", 100, 1500]
    ]
    for (const [input, limit, windowMs] of cases) {
      const rate = limited(input)
      assert.strictEqual(rate.limit, limit, input)
      assert.strictEqual(rate.windowMs, windowMs, input)
    }
    assert.strictEqual(limited("10/30s").intervalMs, 3000)
    assert.isTrue(Duration.equals(limited("10/30s").window, Duration.seconds(30)))
  })

  it("unlimited is its own value", () => {
    const rate = Either.getOrThrow(Rate.parse("unlimited"))
    assert.isTrue(Rate.isUnlimited(rate))
    assert.strictEqual(Rate.format(Rate.unlimited), "unlimited")
  })

  const refusals: ReadonlyArray<readonly [string, string]> = [
    ["0/min", "positive"],
    ["-5/min", "positive"],
    ["1.5/min", "whole number"],
    ["10/fortnight", "unknown unit"],
    ["10/0s", "window must be positive"],
    ["10/0.5ms", "whole number of milliseconds"],
    ["99999999999999999999/s", "too large"],
    ["10/400d", "366 days"],
    ["", "expected"],
    ["ten/min", "expected"],
    ["10 per minute", "expected"],
    ["10/min; DROP TABLE x", "expected"],
    ["x".repeat(10_000), "expected"]
  ]
  for (const [input, reason] of refusals) {
    it.effect(`refuses ${JSON.stringify(input.slice(0, 24))} (${reason})`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Rate.make(input))
        assert.strictEqual(error._tag, "InvalidRate")
        assert.include(error.reason, reason)
        assert.isAtMost(error.input.length, 65)
        assert.include(error.message, error.input)
      }))
  }

  it.effect("the structured form", () =>
    Effect.gen(function*() {
      const rate = yield* Rate.make({ limit: 10, window: "30 seconds" })
      assert.strictEqual(Rate.format(rate), "10/30s")
      const fromMillis = yield* Rate.make({ limit: 3, window: Duration.hours(2) })
      assert.strictEqual(Rate.format(fromMillis), "3/2h")
      const zero = yield* Effect.flip(Rate.make({ limit: 0, window: "1 minute" }))
      assert.include(zero.reason, "positive")
      const infinite = yield* Effect.flip(Rate.make({ limit: 1, window: Duration.infinity }))
      assert.include(infinite.reason, "finite")
      const fraction = yield* Effect.flip(Rate.make({ limit: 2.5, window: "1 minute" }))
      assert.include(fraction.reason, "whole number")
    }))

  it.prop(
    "format and parse round-trip",
    [fc.integer({ min: 1, max: 1_000_000_000 }), fc.integer({ min: 1, max: Rate.maxWindowMs })],
    ([limit, windowMs]) => {
      const rate = Either.getOrThrow(Rate.fromInput({ limit, window: Duration.millis(windowMs) })) as Rate.Limited
      const back = Either.getOrThrow(Rate.parse(Rate.format(rate))) as Rate.Limited
      assert.strictEqual(back.limit, limit)
      assert.strictEqual(back.windowMs, windowMs)
    },
    { fastCheck: { numRuns: 500 } }
  )

  it("canonical text uses the largest unit that divides the window, without spaces", () => {
    assert.strictEqual(Rate.format(limited("1000/hour")), "1000/h")
    assert.strictEqual(Rate.format(limited("60/60s")), "60/min")
    assert.strictEqual(Rate.format(limited("200/500ms")), "200/500ms")
    assert.strictEqual(Rate.format(limited("100/1.5s")), "100/1500ms")
  })

  it.effect("a Schema for configuration and JSON", () =>
    Effect.gen(function*() {
      const rate = yield* Schema.decode(Rate.RateFromString)("10/30s")
      assert.strictEqual(rate._tag, "Limited")
      assert.strictEqual(yield* Schema.encode(Rate.RateFromString)(rate), "10/30s")
      const error = yield* Effect.flip(Schema.decodeUnknown(Rate.RateFromString)("0/s"))
      assert.include(String(error), "positive")
    }))
})
