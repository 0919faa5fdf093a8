/**
 * Where the tests find the real PostgreSQL and Redis of the machine, and
 * helpers to give each test file its own database or key namespace.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { Effect, Layer, Redacted } from "effect"
import { Redis, type RedisOptions } from "ioredis"

export const databaseUrl = process.env.TENANCY_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
export const redisUrl = process.env.TENANCY_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"

const withDatabase = (url: string, database: string) => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** A fresh, uniquely named database for the duration of a layer; dropped afterwards. */
export const freshDatabase = (prefix: string): Layer.Layer<PgClient.PgClient | SqlClient, unknown> =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const name = `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
    const admin = yield* Layer.build(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
    const sql = admin.unsafeMap.get(SqlClient.key) as SqlClient
    yield* Effect.acquireRelease(
      sql.unsafe(`CREATE DATABASE "${name}"`),
      () => sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).pipe(Effect.orDie)
    )
    return PgClient.layer({ url: Redacted.make(withDatabase(databaseUrl, name)), maxConnections: 10 })
  }))

/** An ioredis client for a test, closed with the scope. */
export const redisClient = (options: RedisOptions = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1, ...options })),
    (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
  )
