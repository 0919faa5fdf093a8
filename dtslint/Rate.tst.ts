import type { Effect, Either } from "effect"
import * as Rate from "effect-tenancy/Rate"
import { describe, expect, test } from "tstyche"

describe("Rate", () => {
  test("parsing and construction fail with InvalidRate", () => {
    expect(Rate.parse("10/30s")).type.toBe<Either.Either<Rate.Rate, Rate.InvalidRate>>()
    expect(Rate.make({ limit: 10, window: "30 seconds" })).type.toBe<Effect.Effect<Rate.Rate, Rate.InvalidRate>>()
    expect(Rate.make).type.not.toBeCallableWith({ limit: 10 })
    expect(Rate.make).type.not.toBeCallableWith(10)
  })

  test("unlimited is a distinct case", () => {
    expect(Rate.unlimited).type.toBe<Rate.Unlimited>()
    expect<Rate.Rate>().type.toBe<Rate.Limited | Rate.Unlimited>()
  })
})
