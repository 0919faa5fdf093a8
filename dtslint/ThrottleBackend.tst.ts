import type { ConfigError, Layer, Scope } from "effect"
import { Config, Effect } from "effect"
import type { HealthStatus } from "effect-tenancy/Health"
import type { RedisClient } from "effect-tenancy/RedisClient"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as ThrottleBackendRedis from "effect-tenancy/ThrottleBackend/Redis"
import { describe, expect, test } from "tstyche"

declare const backend: ThrottleBackend.ThrottleBackend["Type"]
declare const requests: ReadonlyArray<ThrottleBackend.Request>

describe("ThrottleBackend", () => {
  test("run: decisions or a ThrottleBackendError, no requirements", () => {
    expect(backend.run(requests, "consume")).type.toBe<
      Effect.Effect<ReadonlyArray<ThrottleBackend.Decision>, ThrottleBackend.ThrottleBackendError>
    >()
    expect(backend.health).type.toBe<Effect.Effect<HealthStatus>>()
    expect(backend.run).type.not.toBeCallableWith(requests, "take")
    expect(backend.run).type.not.toBeCallableWith([{ key: "k", cost: 1 }], "peek")
  })

  test("a program that runs the backend needs it in R until provided", () => {
    const program = Effect.flatMap(ThrottleBackend.ThrottleBackend, (b) => b.run(requests, "consume"))
    expect(program).type.toBe<
      Effect.Effect<
        ReadonlyArray<ThrottleBackend.Decision>,
        ThrottleBackend.ThrottleBackendError,
        ThrottleBackend.ThrottleBackend
      >
    >()
    expect(Effect.provide(program, ThrottleBackend.layerMemory())).type.toBe<
      Effect.Effect<ReadonlyArray<ThrottleBackend.Decision>, ThrottleBackend.ThrottleBackendError>
    >()
    expect(Effect.provide(program, ThrottleBackendRedis.layer())).type.toBe<
      Effect.Effect<ReadonlyArray<ThrottleBackend.Decision>, ThrottleBackend.ThrottleBackendError, RedisClient>
    >()
  })

  test("layerMemory and makeMemory", () => {
    expect(ThrottleBackend.layerMemory()).type.toBe<Layer.Layer<ThrottleBackend.ThrottleBackend>>()
    expect(ThrottleBackend.layerMemory({ maxKeys: 10, sweepInterval: "1 second" })).type.toBe<
      Layer.Layer<ThrottleBackend.ThrottleBackend>
    >()
    expect(ThrottleBackend.makeMemory()).type.toBe<Effect.Effect<ThrottleBackend.MemoryBackend, never, Scope.Scope>>()
    expect(ThrottleBackend.layerMemory).type.not.toBeCallableWith({ maxKeys: "10" })
  })
})

describe("ThrottleBackend/Redis", () => {
  test("the layer needs a RedisClient and never fails to build", () => {
    expect(ThrottleBackendRedis.layer()).type.toBe<Layer.Layer<ThrottleBackend.ThrottleBackend, never, RedisClient>>()
    expect(ThrottleBackendRedis.layer({ namespace: "app", clock: "client", timeout: "20 millis", persistent: false }))
      .type.toBe<Layer.Layer<ThrottleBackend.ThrottleBackend, never, RedisClient>>()
    expect(ThrottleBackendRedis.make()).type.toBe<
      Effect.Effect<ThrottleBackend.ThrottleBackend["Type"], never, RedisClient | Scope.Scope>
    >()
    expect(ThrottleBackendRedis.layer).type.not.toBeCallableWith({ clock: "local" })
  })

  test("layerConfig reads its options from Config", () => {
    expect(ThrottleBackendRedis.layerConfig({ namespace: Config.string("THROTTLE_NAMESPACE") })).type.toBe<
      Layer.Layer<ThrottleBackend.ThrottleBackend, ConfigError.ConfigError, RedisClient>
    >()
  })
})
