/**
 * The resilience policies against a real Redis that goes away mid-test and
 * comes back: a TCP proxy in front of the server is taken down (every
 * connection destroyed, new ones refused) and brought back up.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as RedisClient from "effect-tenancy/RedisClient"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as RedisBackend from "effect-tenancy/ThrottleBackend/Redis"
import { Redis } from "ioredis"
import { redisUrl, switchableProxy } from "./utils/services.js"

const namespace = `resilience-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`

// A Redis backend through a proxy we can take down, with a client that keeps reconnecting quickly.
const setup = Effect.gen(function*() {
  const target = new URL(redisUrl)
  const proxy = yield* switchableProxy({ host: target.hostname, port: Number(target.port || 6379) })
  const client = yield* Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new Redis({
        host: "127.0.0.1",
        port: proxy.port,
        maxRetriesPerRequest: 0,
        enableOfflineQueue: false,
        retryStrategy: () => 20
      })
      await new Promise<void>((resolve) => client.once("ready", () => resolve()))
      return client
    }),
    (client) => Effect.sync(() => client.disconnect())
  )
  const backend = yield* RedisBackend.make({ namespace, timeout: "100 millis", persistent: false }).pipe(
    Effect.provideService(RedisClient.RedisClient, RedisClient.make(client))
  )
  const waitUntilReady = Effect.promise(() =>
    client.status === "ready"
      ? Promise.resolve()
      : new Promise<void>((resolve) => client.once("ready", () => resolve()))
  )
  return { proxy, client, backend, waitUntilReady }
})

let serial = 0
const uid = (name: string) => `${name}-${++serial}-${namespace}`

describe("Throttle resilience against a Redis outage", () => {
  it.live("fail-closed: a typed ThrottleBackendError, quickly, never a rejection; counting resumes after", () =>
    Effect.scoped(Effect.gen(function*() {
      const { backend, proxy, waitUntilReady } = yield* setup
      const throttle = yield* Throttle.make({ uid: uid("closed"), rate: "2/min" })
      const check = throttle.check().pipe(Effect.provideService(ThrottleBackend.ThrottleBackend, backend))
      yield* check
      yield* proxy.down
      const started = Date.now()
      const failures = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.flip(check))
      assert.isTrue(failures.every((e) => e._tag === "ThrottleBackendError"), "never RateLimitExceeded")
      assert.isBelow(Date.now() - started, 2000, "five failed checks stay bounded by the timeout")
      yield* proxy.up
      yield* waitUntilReady
      yield* check
      const refused = yield* Effect.flip(check)
      assert.strictEqual(refused._tag, "RateLimitExceeded", "the counter survived the outage in Redis")
    })))

  it.live("fail-open: admitted while Redis is down, counted again when it is back", () =>
    Effect.scoped(Effect.gen(function*() {
      const { backend, proxy, waitUntilReady } = yield* setup
      const throttle = yield* Throttle.make({ uid: uid("open"), rate: "1/min", onBackendError: "fail-open" })
      const check = throttle.check().pipe(Effect.provideService(ThrottleBackend.ThrottleBackend, backend))
      yield* check
      assert.strictEqual((yield* Effect.flip(check))._tag, "RateLimitExceeded")
      yield* proxy.down
      for (let i = 0; i < 5; i++) assert.isTrue((yield* check).allowed, "admitted while down")
      yield* proxy.up
      yield* waitUntilReady
      assert.strictEqual((yield* Effect.flip(check))._tag, "RateLimitExceeded", "Redis decides again")
    })))

  it.live("insurance: the memory backend answers while Redis is down; the circuit closes when it is back", () =>
    Effect.scoped(Effect.gen(function*() {
      const { backend, proxy, waitUntilReady } = yield* setup
      const insurance = yield* ThrottleBackend.makeMemory()
      const insured = ThrottleBackend.withInsurance(backend, insurance.backend, {
        failures: 2,
        resetAfter: "300 millis"
      })
      const throttle = yield* Throttle.make({ uid: uid("insured"), rate: "3/min" })
      const check = Effect.either(throttle.check()).pipe(
        Effect.provideService(ThrottleBackend.ThrottleBackend, insured)
      )
      assert.strictEqual(Either.getOrThrow(yield* check).remaining, 2, "Redis counts")
      yield* proxy.down
      const whileDown = yield* Effect.forEach(Array.from({ length: 4 }), () => check)
      assert.deepStrictEqual(
        whileDown.map((r) => Either.isRight(r) ? "allowed" : r.left._tag),
        ["allowed", "allowed", "allowed", "RateLimitExceeded"],
        "the insurance enforces the limit with its own counters (3), never a backend error"
      )
      assert.strictEqual(yield* insured.circuit, "open")
      yield* proxy.up
      yield* waitUntilReady
      yield* Effect.sleep("350 millis")
      const back = yield* check
      assert.strictEqual(Either.getOrThrow(back).remaining, 1, "answered by Redis again: its own count")
      assert.strictEqual(yield* insured.circuit, "closed")
    })))
})
