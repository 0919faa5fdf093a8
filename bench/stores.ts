/**
 * Tenant lookups by id, side by side in one run:
 * - `memory`: the in-memory store;
 * - `cacheHit`: the Redis read-through cache (`TenantStore/Redis`) with its
 *   in-process level switched off, so every read is a Redis hit;
 * - `cacheLocalHit`: the same cache with its in-process level on;
 * - `redisGet`: a bare ioredis GET of the same cached value (the floor a
 *   Redis hit is compared with);
 * - `postgres`: the Postgres store (`TenantStore/Sql`).
 *
 * Each case runs sequential gets (latency, not throughput); rounds alternate
 * between the cases and medians are reported, with the ratio of a cache hit
 * to a bare GET as the median of per-round ratios. Needs the local Postgres
 * and Redis. Prints a table, then a last line of JSON.
 *
 * Run: npx tsx bench/stores.ts
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { Context, DateTime, Effect, Layer, Redacted } from "effect"
import * as RedisClient from "effect-tenancy/RedisClient"
import * as Tenant from "effect-tenancy/Tenant"
import * as TenantStore from "effect-tenancy/TenantStore"
import * as RedisCache from "effect-tenancy/TenantStore/Redis"
import * as SqlStore from "effect-tenancy/TenantStore/Sql"
import { Redis } from "ioredis"

const databaseUrl = process.env.TENANCY_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const redisUrl = process.env.TENANCY_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const opsPerRound = 1_000
const rounds = 9

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const timeLoop = <E, R>(body: Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    for (let i = 0; i < opsPerRound; i++) yield* body
    return ((performance.now() - start) * 1000) / opsPerRound
  })

const freshDatabase = Layer.unwrapScoped(Effect.gen(function*() {
  const name = `tenancy_bench_${Date.now().toString(36)}`
  const admin = yield* Layer.build(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
  const sql = Context.get(admin, SqlClient)
  yield* Effect.acquireRelease(
    sql.unsafe(`CREATE DATABASE "${name}"`),
    () => Effect.orDie(sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`))
  )
  const url = new URL(databaseUrl)
  url.pathname = `/${name}`
  return PgClient.layer({ url: Redacted.make(url.toString()), maxConnections: 4 })
}))

const program = Effect.gen(function*() {
  const redis = yield* Effect.acquireRelease(
    Effect.sync(() => new Redis(redisUrl)),
    (client) => Effect.promise(() => client.quit())
  )
  const prefix = `bench-${Date.now().toString(36)}`
  const redisLayer = RedisClient.layer(redis)
  const postgres = Context.get(
    yield* Layer.build(SqlStore.layer().pipe(Layer.provide(freshDatabase))),
    TenantStore.TenantStore
  )
  const primary = Layer.succeed(TenantStore.TenantStore, postgres)
  const remoteOnly = Context.get(
    yield* Layer.build(
      RedisCache.layer({ prefix, localTtl: 0 }).pipe(Layer.provide(primary), Layer.provide(redisLayer))
    ),
    TenantStore.TenantStore
  )
  const withLocal = Context.get(
    yield* Layer.build(RedisCache.layer({ prefix }).pipe(Layer.provide(primary), Layer.provide(redisLayer))),
    TenantStore.TenantStore
  )
  const memory = yield* TenantStore.makeMemory

  const id = Tenant.unsafeMakeTenantId("acme")
  const now = DateTime.unsafeNow()
  const tenant = new Tenant.Tenant({
    id,
    identifier: id,
    name: "Acme Corporation",
    status: "active",
    tier: "enterprise",
    metadata: { region: "eu-west-1", seats: 500, features: ["sso", "audit"] },
    createdAt: now,
    updatedAt: now,
    version: 0
  })
  yield* memory.create(tenant)
  yield* postgres.create(tenant)
  // Warm the cache, then find the key it wrote, to GET the same value bare.
  yield* remoteOnly.get(id)
  const key = `${prefix}:tenant:{${id}}`
  const cached = yield* Effect.promise(() => redis.get(key))
  if (cached === null) return yield* Effect.die(`the cache did not write ${key}`)

  const cases = {
    memory: timeLoop(memory.get(id)),
    cacheLocalHit: timeLoop(withLocal.get(id)),
    cacheHit: timeLoop(remoteOnly.get(id)),
    redisGet: timeLoop(Effect.promise(() => redis.get(key))),
    postgres: timeLoop(postgres.get(id))
  }
  const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, [] as Array<number>])) as Record<
    keyof typeof cases,
    Array<number>
  >
  for (const c of Object.values(cases)) yield* c
  for (let r = 0; r < rounds; r++) {
    for (const [name, c] of Object.entries(cases)) samples[name as keyof typeof cases].push(yield* c)
  }
  const result = {
    memoryGetUs: median(samples.memory),
    cacheLocalHitUs: median(samples.cacheLocalHit),
    cacheHitUs: median(samples.cacheHit),
    redisGetUs: median(samples.redisGet),
    postgresGetUs: median(samples.postgres)
  }
  const ratio = median(samples.cacheHit.map((c, i) => c / samples.redisGet[i]))
  yield* Effect.promise(async () => {
    for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 100 })) {
      if ((keys as Array<string>).length > 0) await redis.del(...(keys as Array<string>))
    }
  })
  console.log("get by id                          µs/op")
  console.log(`memory store                  ${result.memoryGetUs.toFixed(2).padStart(10)}`)
  console.log(`Redis cache, in-process hit   ${result.cacheLocalHitUs.toFixed(2).padStart(10)}`)
  console.log(`Redis cache, Redis hit        ${result.cacheHitUs.toFixed(2).padStart(10)}`)
  console.log(`bare Redis GET (same value)   ${result.redisGetUs.toFixed(2).padStart(10)}`)
  console.log(`Postgres store                ${result.postgresGetUs.toFixed(2).padStart(10)}`)
  console.log(`Redis hit / bare GET = ${ratio.toFixed(2)} (target <= 1.5)`)
  console.log(
    JSON.stringify({
      bench: "stores",
      ...Object.fromEntries(Object.entries(result).map(([k, v]) => [k, Number(v.toFixed(2))])),
      cacheHitToRedisGetRatio: Number(ratio.toFixed(3)),
      opsPerRound,
      rounds
    })
  )
})

Effect.runPromise(Effect.scoped(program)).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
