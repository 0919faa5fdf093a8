import { Effect, Layer, type Scope } from "effect"
import type * as Rate from "effect-tenancy/Rate"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import { describe, expect, test } from "tstyche"

declare const throttle: Throttle.Throttle
declare const other: Throttle.Throttle

describe("Throttle", () => {
  test("make is scoped and fails with typed errors", () => {
    expect(Throttle.make({ uid: "api", rate: "100/min" })).type.toBe<
      Effect.Effect<Throttle.Throttle, Throttle.InvalidThrottle | Rate.InvalidRate, Scope.Scope>
    >()
  })

  test("a check needs ThrottleBackend in R until one is provided", () => {
    expect(throttle.check()).type.toBe<
      Effect.Effect<
        Throttle.Verdict,
        Throttle.RateLimitExceeded | ThrottleBackend.ThrottleBackendError,
        ThrottleBackend.ThrottleBackend
      >
    >()
    expect(Effect.runPromise).type.not.toBeCallableWith(throttle.check())
    expect(Effect.runPromise).type.toBeCallableWith(Effect.provide(throttle.check(), ThrottleBackend.layerMemory()))
  })

  test("peek and refund never fail with RateLimitExceeded", () => {
    expect(throttle.peek({ identifier: "u" })).type.toBe<
      Effect.Effect<Throttle.Verdict, ThrottleBackend.ThrottleBackendError, ThrottleBackend.ThrottleBackend>
    >()
    expect(throttle.refund({ cost: 2 })).type.toBe<
      Effect.Effect<Throttle.Verdict, ThrottleBackend.ThrottleBackendError, ThrottleBackend.ThrottleBackend>
    >()
  })

  test("several throttles at once", () => {
    expect(Throttle.checkAll([throttle, other])).type.toBe<
      Effect.Effect<
        ReadonlyArray<Throttle.Verdict>,
        Throttle.RateLimitExceeded | ThrottleBackend.ThrottleBackendError,
        ThrottleBackend.ThrottleBackend
      >
    >()
    expect(Throttle.peekAll([throttle])).type.toBe<
      Effect.Effect<
        ReadonlyArray<Throttle.Verdict>,
        ThrottleBackend.ThrottleBackendError,
        ThrottleBackend.ThrottleBackend
      >
    >()
  })
})

describe("ThrottleBackend layers", () => {
  test("memory and insurance", () => {
    expect(ThrottleBackend.layerMemory()).type.toBe<Layer.Layer<ThrottleBackend.ThrottleBackend>>()
    const failing = Layer.fail("down" as const) as Layer.Layer<ThrottleBackend.ThrottleBackend, "down", never>
    expect(ThrottleBackend.layerWithInsurance(failing)).type.toBe<
      Layer.Layer<ThrottleBackend.ThrottleBackend, "down", never>
    >()
  })
})
