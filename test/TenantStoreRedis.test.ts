import { afterAll, assert, describe, it } from "@effect/vitest"
import {
  Cause,
  Config,
  ConfigError,
  ConfigProvider,
  Context,
  Deferred,
  Effect,
  Exit,
  Fiber,
  HashMap,
  Layer,
  Logger,
  Metric,
  Option,
  Schema
} from "effect"
import * as RedisClient from "effect-tenancy/RedisClient"
import { Tenant, TenantFromJson, type TenantStatus, unsafeMakeTenantId } from "effect-tenancy/Tenant"
import * as TenantStore from "effect-tenancy/TenantStore"
import * as TenantStoreRedis from "effect-tenancy/TenantStore/Redis"
import * as SqlStore from "effect-tenancy/TenantStore/Sql"
import { Redis } from "ioredis"
import * as net from "node:net"
import { makeTenant as makeSuiteTenant, suite } from "./suites/TenantStoreSuite.js"
import { freshDatabase, redisClient } from "./utils/services.js"

// Every key this file writes starts with `filePrefix`, so parallel runs do not collide.
const filePrefix = `test-${Math.random().toString(36).slice(2, 10)}`
let prefixes = 0
const freshPrefix = () => `${filePrefix}-${++prefixes}`

const keyById = (prefix: string, id: string) => `${prefix}:tenant:{${id}}`
const keyByIdentifier = (prefix: string, identifier: string) => `${prefix}:tenant-ident:{${identifier}}`

const RedisLive = Layer.unwrapScoped(Effect.map(redisClient(), (client) => RedisClient.layer(client)))

/** The cache over a primary store layer, on the test Redis. */
const cacheOver = <E, R>(primary: Layer.Layer<TenantStore.TenantStore, E, R>, options?: TenantStoreRedis.Options) =>
  TenantStoreRedis.layer({ prefix: freshPrefix(), ...options }).pipe(Layer.provide(primary), Layer.provide(RedisLive))

suite("redis cache over memory", cacheOver(TenantStore.layerMemory))
suite(
  "redis cache over Postgres",
  cacheOver(Layer.project(
    SqlStore.layer().pipe(Layer.provide(freshDatabase("tenancy_cache"))),
    TenantStore.TenantStore,
    TenantStore.TenantStore,
    (store) => store
  ))
)

afterAll(() =>
  Effect.gen(function*() {
    const client = yield* redisClient()
    let cursor = "0"
    do {
      const [next, keys] = yield* Effect.promise(() => client.scan(cursor, "MATCH", `${filePrefix}*`, "COUNT", 1000))
      if (keys.length > 0) yield* Effect.promise(() => client.del(...keys))
      cursor = next
    } while (cursor !== "0")
  }).pipe(Effect.scoped, Effect.runPromise)
)

const random = () => Math.random().toString(36).slice(2, 8)

// Metadata that must never reach the logs.
const makeTenant = (id: string, options: { readonly identifier?: string; readonly status?: TenantStatus } = {}) =>
  makeSuiteTenant(id, { ...options, metadata: { secret: "do-not-log" } })

/** A memory store that counts the reads reaching it. */
const countingPrimary = Effect.gen(function*() {
  const store = yield* TenantStore.makeMemory
  const reads = { get: 0, getByIdentifier: 0 }
  const counted = TenantStore.TenantStore.of({
    ...store,
    get: (id) => Effect.suspend(() => (reads.get++, store.get(id))),
    getByIdentifier: (identifier) => Effect.suspend(() => (reads.getByIdentifier++, store.getByIdentifier(identifier)))
  })
  return { store: counted, reads }
})

/**
 * One cache instance (its own L1 and subscriber) over `primary`. The Redis
 * timeout is generous unless a test sets it: these tests are about what the
 * cache holds, and a loaded CI machine can be slower than the 100 ms default.
 */
const makeCache = (primary: TenantStore.TenantStore["Type"], client: Redis, options: TenantStoreRedis.Options) =>
  TenantStoreRedis.make({ redisTimeout: "2 seconds", ...options }).pipe(
    Effect.provideService(TenantStore.TenantStore, primary),
    Effect.provideService(RedisClient.RedisClient, RedisClient.make(client))
  )

const counter = (metric: typeof TenantStoreRedis.metrics.redisErrors) =>
  Effect.map(Metric.value(metric), (state) => state.count)

const decodeTenant = Schema.decodeSync(TenantFromJson)

describe("TenantStore/Redis", () => {
  it.scopedLive("a hit does not reach the primary; the record is in Redis with a TTL", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { reads, store } = yield* countingPrimary
      const prefix = freshPrefix()
      const tenant = yield* store.create(makeTenant(`t${random()}-hit`, { identifier: `t${random()}-pub` }))
      const cache = yield* makeCache(store, client, { prefix, ttl: "1 minute" })

      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).name, tenant.name)
      assert.strictEqual(reads.get, 1)
      const stored = yield* Effect.promise(() => client.get(keyById(prefix, tenant.id)))
      assert.isNotNull(stored)
      assert.strictEqual(decodeTenant(stored!).id, tenant.id)
      const pttl = yield* Effect.promise(() => client.pttl(keyById(prefix, tenant.id)))
      assert.isAbove(pttl, 0)
      assert.isAtMost(pttl, 60_000)

      const l1Hits = yield* counter(TenantStoreRedis.metrics.l1Hits)
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).id, tenant.id)
      assert.strictEqual(reads.get, 1)
      assert.strictEqual(yield* counter(TenantStoreRedis.metrics.l1Hits), l1Hits + 1)

      // Another instance has an empty L1 but finds the record in Redis.
      const other = yield* makeCache(store, client, { prefix, ttl: "1 minute" })
      const l2Hits = yield* counter(TenantStoreRedis.metrics.l2Hits)
      assert.strictEqual(Option.getOrThrow(yield* other.get(tenant.id)).id, tenant.id)
      assert.strictEqual(reads.get, 1)
      assert.strictEqual(yield* counter(TenantStoreRedis.metrics.l2Hits), l2Hits + 1)

      // Lookups by identifier are cached under their own key.
      assert.strictEqual(Option.getOrThrow(yield* cache.getByIdentifier(tenant.identifier)).id, tenant.id)
      assert.strictEqual(Option.getOrThrow(yield* other.getByIdentifier(tenant.identifier)).id, tenant.id)
      assert.strictEqual(reads.getByIdentifier, 1)
      const byIdentifier = yield* Effect.promise(() => client.get(keyByIdentifier(prefix, tenant.identifier)))
      assert.strictEqual(decodeTenant(byIdentifier!).id, tenant.id)
    }))

  it.scopedLive("localTtl 0 turns the in-process level off", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { reads, store } = yield* countingPrimary
      const prefix = freshPrefix()
      const tenant = yield* store.create(makeTenant(`t${random()}-remote`))
      const cache = yield* makeCache(store, client, { prefix, localTtl: 0 })
      // No subscriber connection: there is nothing local to invalidate.
      const channel = `${prefix}:tenant-invalidate`
      assert.deepStrictEqual(yield* Effect.promise(() => client.pubsub("NUMSUB", channel)), [channel, 0])

      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).id, tenant.id)
      const l1Hits = yield* counter(TenantStoreRedis.metrics.l1Hits)
      const l2Hits = yield* counter(TenantStoreRedis.metrics.l2Hits)
      for (let i = 0; i < 5; i++) assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).id, tenant.id)
      assert.strictEqual(reads.get, 1)
      assert.strictEqual(yield* counter(TenantStoreRedis.metrics.l1Hits), l1Hits)
      assert.strictEqual(yield* counter(TenantStoreRedis.metrics.l2Hits), l2Hits + 5)

      yield* cache.update({ tenant: new Tenant({ ...tenant, name: "Renamed", version: 1 }), expectedVersion: 0 })
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).name, "Renamed")
    }))

  it.scopedLive("not found is cached; a create clears it", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { reads, store } = yield* countingPrimary
      const prefix = freshPrefix()
      const id = unsafeMakeTenantId(`t${random()}-unknown`)
      const cache = yield* makeCache(store, client, { prefix, negativeTtl: "30 seconds" })

      for (let i = 0; i < 50; i++) assert.isTrue(Option.isNone(yield* cache.get(id)))
      assert.strictEqual(reads.get, 1)
      const negative = yield* Effect.promise(() => client.get(keyById(prefix, id)))
      assert.isNotNull(negative)
      const pttl = yield* Effect.promise(() => client.pttl(keyById(prefix, id)))
      assert.isAbove(pttl, 0)
      assert.isAtMost(pttl, 30_000)

      // A second instance is answered by Redis.
      const other = yield* makeCache(store, client, { prefix, negativeTtl: "30 seconds" })
      for (let i = 0; i < 50; i++) assert.isTrue(Option.isNone(yield* other.get(id)))
      assert.strictEqual(reads.get, 1)

      yield* cache.create(makeTenant(id))
      assert.strictEqual(Option.getOrThrow(yield* cache.get(id)).id, id)
      assert.notStrictEqual(yield* Effect.promise(() => client.get(keyById(prefix, id))), negative)
    }))

  it.scopedLive("concurrent gets of one uncached id make a single primary read", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { reads, store } = yield* countingPrimary
      const tenant = yield* store.create(makeTenant(`t${random()}-flight`))
      const cache = yield* makeCache(store, client, { prefix: freshPrefix() })
      const results = yield* Effect.forEach(
        Array.from({ length: 100 }, () => tenant.id),
        (id) => cache.get(id),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(reads.get, 1)
      assert.isTrue(results.every((result) => Option.getOrThrow(result).id === tenant.id))
    }))

  it.scopedLive("a write through one instance invalidates the others within 100 ms", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { reads, store } = yield* countingPrimary
      const prefix = freshPrefix()
      const channel = `${prefix}:tenant-invalidate`
      const tenant = yield* store.create(makeTenant(`t${random()}-x`))
      const a = yield* makeCache(store, client, { prefix, localTtl: "1 minute" })
      const b = yield* makeCache(store, client, { prefix, localTtl: "1 minute" })
      const subscribers = yield* Effect.promise(() => client.pubsub("NUMSUB", channel))
      assert.deepStrictEqual(subscribers, [channel, 2])

      assert.strictEqual(Option.getOrThrow(yield* a.get(tenant.id)).status, "active")
      assert.strictEqual(Option.getOrThrow(yield* b.get(tenant.id)).status, "active")
      // B answers from its L1 now.
      const readsBefore = reads.get
      assert.strictEqual(Option.getOrThrow(yield* b.get(tenant.id)).status, "active")
      assert.strictEqual(reads.get, readsBefore)

      // Malformed messages on the channel are ignored.
      yield* Effect.promise(() => client.publish(channel, "not json"))
      yield* Effect.promise(() => client.publish(channel, JSON.stringify(["elsewhere:tenant:{x}"])))

      yield* a.update({
        tenant: new Tenant({ ...tenant, status: "suspended", version: tenant.version + 1 }),
        expectedVersion: tenant.version
      })
      assert.strictEqual(Option.getOrThrow(yield* a.get(tenant.id)).status, "suspended")

      const deadline = Date.now() + 100
      let status = Option.getOrThrow(yield* b.get(tenant.id)).status
      while (status !== "suspended" && Date.now() < deadline) {
        yield* Effect.sleep("5 millis")
        status = Option.getOrThrow(yield* b.get(tenant.id)).status
      }
      assert.strictEqual(status, "suspended")
    }))

  it.scopedLive("a read that overlaps a write does not keep the old record", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { store } = yield* countingPrimary
      const prefix = freshPrefix()
      const tenant = yield* store.create(makeTenant(`t${random()}-race`))
      // The first read of the primary returns the old record only after the write is done.
      const readDone = yield* Deferred.make<void>()
      const writeDone = yield* Deferred.make<void>()
      let first = true
      const slow = TenantStore.TenantStore.of({
        ...store,
        get: (id) =>
          Effect.suspend(() => {
            if (!first) return store.get(id)
            first = false
            return store.get(id).pipe(
              Effect.zipLeft(Deferred.succeed(readDone, undefined)),
              Effect.zipLeft(Deferred.await(writeDone))
            )
          })
      })
      const cache = yield* makeCache(slow, client, { prefix, localTtl: "1 minute" })

      const racingRead = yield* Effect.fork(cache.get(tenant.id))
      yield* Deferred.await(readDone)
      yield* cache.update({ tenant: new Tenant({ ...tenant, name: "Renamed", version: 1 }), expectedVersion: 0 })
      yield* Deferred.succeed(writeDone, undefined)
      assert.strictEqual(Option.getOrThrow(yield* Fiber.join(racingRead)).name, tenant.name)

      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).name, "Renamed")
      const other = yield* makeCache(store, client, { prefix })
      assert.strictEqual(Option.getOrThrow(yield* other.get(tenant.id)).name, "Renamed")
    }))

  it.scopedLive("a corrupt cached value is a miss, and is replaced", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { reads, store } = yield* countingPrimary
      const prefix = freshPrefix()
      const tenant = yield* store.create(makeTenant(`t${random()}-bad`, { identifier: `t${random()}-badpub` }))
      const other = yield* store.create(makeTenant(`t${random()}-other`))
      yield* Effect.promise(() => client.set(keyById(prefix, tenant.id), "{not a tenant", "PX", 60_000))
      // A valid record, but of another tenant, is corrupt too.
      const misplaced = Schema.encodeSync(TenantFromJson)(other)
      yield* Effect.promise(() => client.set(keyByIdentifier(prefix, tenant.identifier), misplaced, "PX", 60_000))
      const cache = yield* makeCache(store, client, { prefix })

      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).name, tenant.name)
      assert.strictEqual(Option.getOrThrow(yield* cache.getByIdentifier(tenant.identifier)).id, tenant.id)
      assert.strictEqual(reads.get, 1)
      assert.strictEqual(reads.getByIdentifier, 1)
      const replaced = yield* Effect.promise(() => client.get(keyById(prefix, tenant.id)))
      assert.strictEqual(decodeTenant(replaced!).id, tenant.id)
      const replacedByIdentifier = yield* Effect.promise(() => client.get(keyByIdentifier(prefix, tenant.identifier)))
      assert.strictEqual(decodeTenant(replacedByIdentifier!).id, tenant.id)
    }))

  it.scopedLive("without Redis, reads and writes are served by the primary, with warnings and a metric", () => {
    const logs: Array<{ readonly level: string; readonly text: string }> = []
    const capture = Logger.make(({ annotations, logLevel, message }) => {
      const text = [
        Array.isArray(message) ? message.join(" ") : String(message),
        JSON.stringify(Object.fromEntries(HashMap.toEntries(annotations)))
      ].join(" ")
      logs.push({ level: logLevel.label, text })
    })
    return Effect.gen(function*() {
      const port = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const server = net.createServer()
          server.listen(0, "127.0.0.1", () => {
            const { port } = server.address() as net.AddressInfo
            server.close(() => resolve(port))
          })
        })
      )
      const down = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const client = new Redis({
            host: "127.0.0.1",
            port,
            lazyConnect: true,
            enableOfflineQueue: false,
            maxRetriesPerRequest: 0,
            retryStrategy: () => null
          })
          client.on("error", () => {})
          return client
        }),
        (client) => Effect.sync(() => client.disconnect())
      )
      const { reads, store } = yield* countingPrimary
      const errorsBefore = yield* counter(TenantStoreRedis.metrics.redisErrors)
      const cache = yield* makeCache(store, down, { prefix: freshPrefix() })

      const tenant = yield* cache.create(makeTenant(`t${random()}-down`, { identifier: `t${random()}-downpub` }))
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).status, "active")
      assert.strictEqual(Option.getOrThrow(yield* cache.getByIdentifier(tenant.identifier)).id, tenant.id)
      yield* cache.update({
        tenant: new Tenant({ ...tenant, status: "suspended", version: tenant.version + 1 }),
        expectedVersion: tenant.version
      })
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).status, "suspended")
      assert.strictEqual(Option.getOrThrow(yield* cache.getByIdentifier(tenant.identifier)).status, "suspended")
      assert.isTrue(Option.isNone(yield* cache.get(unsafeMakeTenantId(`t${random()}-nobody`))))
      assert.isAtLeast(reads.get, 3)
      const conflict = yield* Effect.flip(cache.update({ tenant, expectedVersion: 0 }))
      assert.strictEqual(conflict._tag, "TenantConflict")

      const health = yield* cache.health
      assert.strictEqual(health.status, "up")
      assert.strictEqual(health.component, "tenant-store:redis-cache")
      assert.include(health.detail ?? "", "Redis is unavailable")

      assert.isAbove(yield* counter(TenantStoreRedis.metrics.redisErrors), errorsBefore)
      const warnings = logs.filter((log) => log.level === "WARN")
      // Reads do not queue commands on a client that is not connected: they go to the primary at once.
      assert.isTrue(
        warnings.some((log) => log.text.includes("reading from the primary store")),
        JSON.stringify(warnings)
      )
      assert.isTrue(warnings.some((log) => log.text.includes(tenant.id)))
      for (const log of logs) {
        assert.notInclude(log.text, "do-not-log")
        assert.notInclude(log.text, tenant.name)
        assert.notInclude(log.text, tenant.identifier)
      }
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
  })

  it.scopedLive("a Redis that never replies is bounded by redisTimeout", () => {
    const logs: Array<string> = []
    const capture = Logger.make(({ message }) => {
      logs.push(Array.isArray(message) ? message.join(" ") : String(message))
    })
    return Effect.gen(function*() {
      // Accepts connections and never answers.
      const sockets = new Set<net.Socket>()
      const server = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer((socket) => {
            sockets.add(socket)
          })
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.async<void>((resume) => {
            for (const socket of sockets) socket.destroy()
            server.close(() => resume(Effect.void))
          })
      )
      const { port } = server.address() as net.AddressInfo
      const silent = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const client = new Redis({ host: "127.0.0.1", port, enableReadyCheck: false, maxRetriesPerRequest: null })
          client.on("error", () => {})
          return client
        }),
        (client) => Effect.sync(() => client.disconnect())
      )
      const { reads, store } = yield* countingPrimary
      const cache = yield* makeCache(store, silent, { prefix: freshPrefix(), redisTimeout: "50 millis" })
      const other = yield* store.create(makeTenant(`t${random()}-other`))
      // A read is served by the primary: at once while the client is not ready, else after the timeout.
      assert.strictEqual(Option.getOrThrow(yield* cache.get(other.id)).id, other.id)
      assert.isTrue(
        logs.some((log) =>
          log.includes("reading from the primary store") || log.includes("GET failed (no reply within")
        ),
        JSON.stringify(logs)
      )
      // A write is bounded too; its key is then read from the primary without asking Redis again.
      const tenant = yield* cache.create(makeTenant(`t${random()}-silent`))
      const before = reads.get
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).id, tenant.id)
      assert.strictEqual(reads.get - before, 1)
      assert.isTrue(logs.some((log) => log.includes("Redis SET failed (no reply within")), JSON.stringify(logs))
      assert.isTrue(logs.some((log) => log.includes("Redis PUBLISH failed (no reply within")), JSON.stringify(logs))
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
  })

  it.scopedLive("when a reader is interrupted, the readers that joined its load still get the tenant", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const memory = yield* TenantStore.makeMemory
      const gate = yield* Deferred.make<void>()
      let loads = 0
      const slow = TenantStore.TenantStore.of({
        ...memory,
        get: (id) =>
          Effect.suspend(() => (loads++ === 0 ? Effect.zipRight(Deferred.await(gate), memory.get(id)) : memory.get(id)))
      })
      const tenant = yield* memory.create(makeTenant(`t${random()}-int`))
      const cache = yield* makeCache(slow, client, { prefix: freshPrefix() })
      const first = yield* Effect.fork(cache.get(tenant.id))
      yield* Effect.sleep("20 millis")
      const second = yield* Effect.fork(cache.get(tenant.id))
      yield* Effect.sleep("20 millis")
      yield* Fiber.interrupt(first) // e.g. its client went away
      const result = yield* Fiber.join(second)
      assert.strictEqual(Option.getOrThrow(result).id, tenant.id)
    }))

  it.scopedLive("a write whose tombstone cannot be written still hides the old record in this instance", () =>
    Effect.gen(function*() {
      const real = yield* redisClient()
      let failTombstones = false
      // The real client, with an injected fault: while on, every SET of a tombstone is refused.
      const flaky = new Proxy(real, {
        get(target, property, receiver) {
          if (property === "set") {
            return (...args: Array<unknown>) => {
              if (failTombstones && args[1] === "!invalidated") {
                return Promise.reject(new Error("READONLY You can't write against a read only replica"))
              }
              return (target.set as (...a: Array<unknown>) => Promise<unknown>)(...args)
            }
          }
          const value = Reflect.get(target, property, receiver)
          return typeof value === "function" ? value.bind(target) : value
        }
      })
      const { store } = yield* countingPrimary
      const tenant = yield* store.create(makeTenant(`t${random()}-flaky`))
      const prefixUsed = freshPrefix()
      const cache = yield* makeCache(store, flaky, { prefix: prefixUsed, ttl: "1 minute" })
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).status, "active") // cached in Redis
      failTombstones = true
      yield* cache.update({ tenant: new Tenant({ ...tenant, status: "suspended", version: 1 }), expectedVersion: 0 })
      const stale = yield* Effect.promise(() => real.get(`${prefixUsed}:tenant:{${tenant.id}}`))
      assert.include(stale ?? "", "active", "the old record is still in Redis")
      assert.strictEqual(Option.getOrThrow(yield* cache.get(tenant.id)).status, "suspended")
      failTombstones = false
    }))

  it.scopedLive("health reports the primary under the cache's name", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const cache = yield* makeCache(yield* TenantStore.makeMemory, client, { prefix: freshPrefix() })
      const health = yield* cache.health
      assert.strictEqual(health.component, "tenant-store:redis-cache")
      assert.strictEqual(health.status, "up")
      assert.isUndefined(health.detail)
    }))

  it.scopedLive("layerConfig reads the options; invalid options are refused", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const { store } = yield* countingPrimary
      const prefix = freshPrefix()
      const tenant = yield* store.create(makeTenant(`t${random()}-cfg`))
      const provider = ConfigProvider.fromMap(new Map([["CACHE_PREFIX", prefix], ["CACHE_TTL", "20 seconds"]]))
      const configured = TenantStoreRedis.layerConfig({
        prefix: Config.string("CACHE_PREFIX"),
        ttl: Config.duration("CACHE_TTL")
      }).pipe(Layer.provide(Layer.succeed(TenantStore.TenantStore, store)), Layer.provide(RedisLive))
      const cache = Context.get(
        yield* Layer.build(configured).pipe(Effect.withConfigProvider(provider)),
        TenantStore.TenantStore
      )
      assert.isTrue(Option.isSome(yield* cache.get(tenant.id)))
      const pttl = yield* Effect.promise(() => client.pttl(keyById(prefix, tenant.id)))
      assert.isAbove(pttl, 0)
      assert.isAtMost(pttl, 20_000)

      const invalidPrefix = yield* Effect.flip(Layer.build(
        TenantStoreRedis.layerConfig({ prefix: Config.succeed("no spaces allowed") }).pipe(
          Layer.provide(TenantStore.layerMemory),
          Layer.provide(RedisLive)
        )
      ))
      assert.isTrue(ConfigError.isInvalidData(invalidPrefix))
      const invalidCapacity = yield* Effect.exit(Layer.build(
        TenantStoreRedis.layer({ localCapacity: 0 }).pipe(
          Layer.provide(TenantStore.layerMemory),
          Layer.provide(RedisLive)
        )
      ))
      assert.isTrue(Exit.isFailure(invalidCapacity) && Cause.isDie(invalidCapacity.cause))
    }))
})
