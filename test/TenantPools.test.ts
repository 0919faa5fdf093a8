/**
 * Database-per-tenant pools against the real PostgreSQL: 50 tenant databases
 * (created here with a unique prefix, dropped at the end), tenant pools
 * connecting as a non-superuser application role, a global budget read back
 * from pg_stat_activity.
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Effect, Exit, Fiber, Layer, Metric, Option, Redacted, Scope, TestClock } from "effect"
import { type TenantId, unsafeMakeTenantId } from "effect-tenancy/Tenant"
import * as TenantPools from "../src/internal/tenantPools.js"
import { appRole, client } from "./utils/roles.js"
import { databaseUrl } from "./utils/services.js"

const TENANTS = 50

interface FixtureShape {
  readonly admin: SqlClient
  readonly appUrl: string
  readonly prefix: string
  readonly ids: ReadonlyArray<TenantId>
}

class Fixture extends Context.Tag("test/TenantPools/Fixture")<Fixture, FixtureShape>() {}

const prefix = `tp_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}_`

// Pools of 2, 3 or 4 connections, by tenant.
const sizeOf = (id: TenantId) => 2 + (Number(id.slice(2)) % 3)

const fixture = Layer.scoped(
  Fixture,
  Effect.gen(function*() {
    const admin = yield* client(databaseUrl, 10)
    const { role, url: appUrl } = yield* appRole(databaseUrl, "pools_app")
    const ids = Array.from({ length: TENANTS }, (_, i) => unsafeMakeTenantId(`t-${String(i).padStart(2, "0")}`))
    // Created by a pools instance of its own (the admin side only); dropped by it when the layer ends.
    const setup = yield* TenantPools.make({
      connection: { url: Redacted.make(appUrl) },
      admin,
      prefix,
      databaseOwner: role,
      maxConnections: 1
    })
    yield* Effect.acquireRelease(
      Effect.forEach(ids, (id) => setup.createDatabase(id), { concurrency: 4 }),
      () =>
        // DROP DATABASE waits for a checkpoint (PostgreSQL 15); concurrent drops share one.
        Effect.forEach(ids, (id) => setup.dropDatabase(id), { concurrency: 10 }).pipe(
          Effect.tap((dropped) => assert.isTrue(dropped.every((d) => d), "every tenant database was dropped")),
          Effect.orDie
        )
    )
    return { admin, appUrl, prefix, ids }
  })
)

const poolsWith = (options: Partial<TenantPools.Options>) =>
  Effect.flatMap(Fixture, (f) =>
    TenantPools.make({
      connection: { url: Redacted.make(f.appUrl) },
      admin: f.admin,
      prefix: f.prefix,
      maxConnections: 20,
      maxConnectionsPerTenant: sizeOf,
      ...options
    }))

/** Connections to this file's tenant databases, as the server sees them. */
const serverConnections = Effect.flatMap(Fixture, (f) =>
  Effect.map(
    f.admin<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity WHERE starts_with(datname, ${f.prefix})`,
    (rows) => rows[0].n
  ))

/** Runs on the real clock (the layer's tests get the TestClock by default). */
const live = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.withClock(self, Clock.make())

/** Real-time wait (the TestClock test must not wait on the test clock). */
const realSleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

const eventually = <A>(probe: Effect.Effect<A, unknown, Fixture>, ok: (a: A) => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const a = yield* probe
      if (ok(a)) return a
      yield* realSleep(25)
    }
    return assert.fail(`timed out waiting for ${what}`)
  })

const hold = (pools: TenantPools.TenantPools, id: TenantId) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const sql = yield* pools.get(id).pipe(Scope.extend(scope))
    return { sql, release: Scope.close(scope, Exit.void) }
  })

const currentDatabase = (sql: SqlClient) =>
  Effect.map(sql<{ readonly db: string }>`SELECT current_database() AS db`, (rows) => rows[0].db)

describe("TenantPools", () => {
  it.layer(fixture, { timeout: "300 seconds" })((it) => {
    it.scoped(
      "50 tenants, budget 20: pools evicted and rebuilt, budget never exceeded, held pool kept",
      () =>
        live(Effect.gen(function*() {
          const { ids } = yield* Fixture
          const pools = yield* poolsWith({ idleTimeToLive: "30 seconds", whenExhausted: { wait: "60 seconds" } })

          // Sample the server and the service throughout the run.
          let samples = 0
          let maxServer = 0
          let maxReserved = 0
          let maxSockets = 0
          let running = true
          const sampler = yield* Effect.fork(Effect.gen(function*() {
            while (running) {
              const n = yield* serverConnections
              const stats = yield* pools.stats
              samples++
              maxServer = Math.max(maxServer, n)
              maxReserved = Math.max(maxReserved, stats.reserved)
              maxSockets = Math.max(maxSockets, stats.connections)
              yield* Effect.sleep("2 millis")
            }
          }))

          // Tenant 0's pool is held for the whole run.
          const held = yield* hold(pools, ids[0])
          const heldPid = (yield* held.sql<{ readonly pid: number }>`SELECT pg_backend_pid() AS pid`)[0].pid

          // Every tenant three times, round robin, 25 at a time; each job fills its pool
          // (as many statements at once as the pool has connections).
          const jobs = Array.from({ length: 3 * TENANTS }, (_, i) => ids[i % TENANTS])
          const start = Date.now()
          const seen = yield* Effect.forEach(jobs, (id) =>
            Effect.scoped(Effect.gen(function*() {
              const sql = yield* pools.get(id)
              const dbs = yield* Effect.forEach(
                Array.from({ length: sizeOf(id) }),
                () => Effect.zipLeft(currentDatabase(sql), sql`SELECT pg_sleep(0.01)`),
                { concurrency: "unbounded" }
              )
              return dbs.every((db) => db === `${prefix}${id.replace(/-/g, "_")}`)
            })), { concurrency: 25 })
          const elapsed = Date.now() - start
          running = false
          yield* Fiber.join(sampler)

          assert.isTrue(seen.every((ok) => ok), "every statement ran in its own tenant's database")
          const stats = yield* pools.stats
          assert.isAbove(stats.opened, TENANTS, "pools were rebuilt after eviction")
          assert.isAbove(stats.evicted, 0)
          assert.isAtMost(maxServer, 20, "pg_stat_activity never showed more than the budget")
          assert.isAtMost(maxReserved, 20)
          assert.isAtMost(maxSockets, 20)
          assert.isAtLeast(maxServer, 10, "the sampler saw the pools' connections")
          assert.isAbove(samples, 20)

          // The held pool was never closed: same backend still there, still usable.
          const pids = yield* Effect.flatMap(
            Fixture,
            (f) => f.admin<{ readonly pid: number }>`SELECT pid FROM pg_stat_activity WHERE pid = ${heldPid}`
          )
          assert.strictEqual(pids.length, 1, "the held pool's connection is still open")
          assert.strictEqual(yield* currentDatabase(held.sql), `${prefix}t_00`)
          yield* held.release

          console.log(
            `pools: ${jobs.length} jobs in ${elapsed} ms; opened ${stats.opened}, evicted ${stats.evicted}; ` +
              `max server connections ${maxServer} (${samples} samples), max reserved ${maxReserved}`
          )
        })),
      120_000
    )

    it.scoped("fail mode: over budget is TenantPoolExhausted; an idle pool is evicted to make room", () =>
      live(Effect.gen(function*() {
        const { ids } = yield* Fixture
        const pools = yield* poolsWith({ maxConnections: 4, maxConnectionsPerTenant: 2, whenExhausted: "fail" })
        const a = yield* hold(pools, ids[1])
        const b = yield* hold(pools, ids[2])
        const refused = yield* Effect.scoped(pools.get(ids[3])).pipe(Effect.flip)
        assert.strictEqual(refused._tag, "TenantPoolExhausted")
        if (refused._tag === "TenantPoolExhausted") {
          assert.deepStrictEqual(
            { requested: refused.requested, maxConnections: refused.maxConnections, inUse: refused.inUse },
            { requested: 2, maxConnections: 4, inUse: 4 }
          )
        }
        // Released but still open (idle): the next tenant evicts it.
        yield* b.release
        assert.strictEqual((yield* pools.stats).pools, 2)
        const db = yield* Effect.scoped(Effect.flatMap(pools.get(ids[3]), currentDatabase))
        assert.strictEqual(db, `${prefix}t_03`)
        const stats = yield* pools.stats
        assert.strictEqual(stats.evicted, 1)
        assert.strictEqual(stats.reserved, 4)
        assert.strictEqual(yield* currentDatabase(a.sql), `${prefix}t_01`, "the held pool still works")
        yield* a.release
      })))

    it.scoped("concurrent first requests for one tenant share one pool", () =>
      live(Effect.gen(function*() {
        const { ids } = yield* Fixture
        const pools = yield* poolsWith({})
        const dbs = yield* Effect.scoped(
          Effect.forEach(
            Array.from({ length: 20 }, () => ids[17]),
            (id) => Effect.flatMap(pools.get(id), currentDatabase),
            { concurrency: "unbounded" }
          )
        )
        assert.isTrue(dbs.every((db) => db === `${prefix}t_17`))
        const stats = yield* pools.stats
        assert.deepStrictEqual({ opened: stats.opened, pools: stats.pools, inUse: stats.inUse }, {
          opened: 1,
          pools: 1,
          inUse: 0
        })
      })))

    it.scoped("invalidate closes a pool once its holders are gone; the next request opens a new one", () =>
      live(Effect.gen(function*() {
        const { ids } = yield* Fixture
        const pools = yield* poolsWith({})
        const a = yield* hold(pools, ids[18])
        yield* pools.invalidate(ids[18])
        assert.strictEqual(yield* currentDatabase(a.sql), `${prefix}t_18`, "still usable while held")
        assert.strictEqual((yield* pools.stats).pools, 1)
        yield* a.release
        yield* eventually(pools.stats, (s) => s.pools === 0 && s.connections === 0, "the invalidated pool to close")
        yield* Effect.scoped(Effect.flatMap(pools.get(ids[18]), currentDatabase))
        assert.strictEqual((yield* pools.stats).opened, 2)
        yield* pools.invalidate(ids[18]) // idle: closes at once
        yield* eventually(pools.stats, (s) => s.pools === 0, "the idle invalidated pool to close")
      })))

    it.scoped("wait mode: waits for room, then succeeds; gives up with TenantPoolExhausted after the bound", () =>
      live(Effect.gen(function*() {
        const { ids } = yield* Fixture
        const pools = yield* poolsWith({
          maxConnections: 4,
          maxConnectionsPerTenant: 2,
          whenExhausted: { wait: "20 seconds" }
        })
        const a = yield* hold(pools, ids[4])
        const b = yield* hold(pools, ids[5])
        const waiting = yield* Effect.fork(Effect.scoped(Effect.flatMap(pools.get(ids[6]), currentDatabase)))
        yield* Effect.sleep("300 millis")
        assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)), "still waiting while both pools are held")
        yield* b.release
        assert.strictEqual(yield* Fiber.join(waiting), `${prefix}t_06`)

        const short = yield* poolsWith({
          maxConnections: 2,
          maxConnectionsPerTenant: 2,
          whenExhausted: { wait: "300 millis" }
        })
        const c = yield* hold(short, ids[7])
        const start = Date.now()
        const refused = yield* Effect.scoped(short.get(ids[8])).pipe(Effect.flip)
        assert.strictEqual(refused._tag, "TenantPoolExhausted")
        assert.isAtLeast(Date.now() - start, 250)
        yield* c.release
        yield* a.release
      })))

    it.scoped("a fiber interrupted while waiting for budget, or while its pool opens, leaks nothing", () =>
      live(Effect.gen(function*() {
        const { ids } = yield* Fixture
        const pools = yield* poolsWith({
          maxConnections: 4,
          maxConnectionsPerTenant: 2,
          idleTimeToLive: "300 millis",
          whenExhausted: { wait: "30 seconds" }
        })
        const a = yield* hold(pools, ids[9])
        const b = yield* hold(pools, ids[10])
        const waiters = yield* Effect.forEach(
          [ids[11], ids[12], ids[13]],
          (id) => Effect.fork(Effect.scoped(pools.get(id))),
          { concurrency: "unbounded" }
        )
        yield* Effect.sleep("200 millis")
        yield* Fiber.interruptAll(waiters)
        let stats = yield* pools.stats
        assert.deepStrictEqual(
          { pools: stats.pools, inUse: stats.inUse, reserved: stats.reserved },
          { pools: 2, inUse: 2, reserved: 4 }
        )
        yield* a.release
        yield* b.release

        // Interrupted right after asking: the pool may still open, then it idles out.
        const opening = yield* Effect.fork(Effect.scoped(pools.get(ids[14])))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(opening)

        // Everything released: the idle time-to-live closes it all, and the budget is whole again.
        stats = yield* eventually(pools.stats, (s) => s.pools === 0, "every pool to close")
        assert.deepStrictEqual(
          { reserved: stats.reserved, connections: stats.connections, inUse: stats.inUse },
          { reserved: 0, connections: 0, inUse: 0 }
        )
        assert.strictEqual(yield* serverConnections, 0, "no connection left on the server")

        // And the full budget is usable: two tenants at once.
        const both = yield* Effect.scoped(
          Effect.all([pools.get(ids[11]), pools.get(ids[12])]).pipe(
            Effect.flatMap(([x, y]) => Effect.all([currentDatabase(x), currentDatabase(y)]))
          )
        )
        assert.deepStrictEqual(both, [`${prefix}t_11`, `${prefix}t_12`])
      })))

    it.scoped("idle time-to-live closes a pool (TestClock), not before", () =>
      Effect.gen(function*() {
        const { ids } = yield* Fixture
        const pools = yield* poolsWith({ idleTimeToLive: "1 minute" })
        yield* Effect.scoped(Effect.flatMap(pools.get(ids[15]), currentDatabase))
        yield* Effect.scoped(Effect.flatMap(pools.get(ids[15]), currentDatabase))
        assert.strictEqual((yield* pools.stats).opened, 1, "the second use shared the first pool")
        yield* TestClock.adjust("59 seconds")
        yield* realSleep(100)
        assert.strictEqual((yield* pools.stats).pools, 1, "still open before the time-to-live")
        // Used again at 59s: the time-to-live starts over.
        yield* Effect.scoped(Effect.flatMap(pools.get(ids[15]), currentDatabase))
        yield* TestClock.adjust("59 seconds")
        yield* realSleep(100)
        assert.strictEqual((yield* pools.stats).pools, 1)
        yield* TestClock.adjust("2 seconds")
        const stats = yield* eventually(pools.stats, (s) => s.pools === 0, "the idle pool to close")
        assert.deepStrictEqual({ expired: stats.expired, reserved: stats.reserved, connections: stats.connections }, {
          expired: 1,
          reserved: 0,
          connections: 0
        })
        assert.strictEqual(yield* serverConnections, 0)
      }))

    it.scoped("unsafe ids are refused before reaching the server", () =>
      live(Effect.gen(function*() {
        const { admin } = yield* Fixture
        const pools = yield* poolsWith({})
        const long = unsafeMakeTenantId(`a${"b".repeat(60)}`) // a valid tenant id, but prefix + id > 63 characters
        const hostile = `x"; DROP DATABASE test; --` as TenantId
        const upper = "Robert" as TenantId
        for (const id of [long, hostile, upper]) {
          for (
            const attempt of [
              Effect.scoped(pools.get(id)),
              pools.createDatabase(id),
              pools.dropDatabase(id),
              pools.databaseName(id)
            ] as const
          ) {
            const error = yield* Effect.flip(attempt as Effect.Effect<unknown, { readonly _tag: string }>)
            assert.strictEqual(error._tag, "TenantDatabaseRefused")
            if (error instanceof TenantPools.TenantDatabaseRefused) assert.strictEqual(error.reason, "unsafe-name")
          }
        }
        // A custom naming function is checked too.
        const custom = yield* poolsWith({ databaseName: (id) => `Tenant-${id}` })
        const error = yield* Effect.flip(custom.createDatabase(unsafeMakeTenantId("acme")))
        assert.strictEqual(error._tag, "TenantDatabaseRefused")
        const databases = yield* admin<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM pg_database WHERE datname ILIKE '%robert%' OR datname ILIKE 'tenant-%'`
        assert.strictEqual(databases[0].n, 0)
      })))

    it.scoped(
      "createDatabase / dropDatabase: idempotent, drop closes an idle pool, refuses a held one",
      () =>
        live(Effect.gen(function*() {
          const { admin } = yield* Fixture
          const pools = yield* poolsWith({})
          const id = unsafeMakeTenantId(`extra-${Math.random().toString(36).slice(2, 6)}`)
          const database = yield* pools.databaseName(id)
          assert.isTrue(yield* pools.createDatabase(id))
          assert.isFalse(yield* pools.createDatabase(id), "already there")
          // The marker names the tenant: `extra_…` maps to the same database as `extra-…`, but it is not its own.
          const [marked] = yield* admin<{ readonly comment: string }>`
          SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = ${database}`
          assert.strictEqual(marked.comment, `effect-tenancy:tenant-database:${id}`)
          const twin = unsafeMakeTenantId(id.replace("-", "_"))
          assert.strictEqual(yield* pools.databaseName(twin), database)
          for (const operation of [pools.createDatabase(twin), pools.dropDatabase(twin)]) {
            const refused = yield* Effect.flip(operation)
            assert.strictEqual(refused._tag, "TenantDatabaseRefused")
            if (refused instanceof TenantPools.TenantDatabaseRefused) assert.strictEqual(refused.reason, "not-managed")
          }

          const held = yield* hold(pools, id)
          const inUse = yield* Effect.flip(pools.dropDatabase(id))
          assert.strictEqual(inUse._tag, "TenantInUse")
          yield* held.release
          assert.strictEqual((yield* pools.stats).pools, 1, "idle, still open")

          assert.isTrue(yield* pools.dropDatabase(id))
          const stats = yield* pools.stats
          assert.deepStrictEqual({ pools: stats.pools, reserved: stats.reserved, connections: stats.connections }, {
            pools: 0,
            reserved: 0,
            connections: 0
          })
          const left = yield* admin<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM pg_database WHERE datname = ${database}`
          assert.strictEqual(left[0].n, 0)
          assert.isFalse(yield* pools.dropDatabase(id), "nothing left to drop")

          // A pool for a database that is gone fails with the driver's error and gives its reservation back.
          const gone = yield* Effect.flip(Effect.scoped(pools.get(id)))
          assert.strictEqual(gone._tag, "SqlError")
          assert.deepStrictEqual(
            { pools: (yield* pools.stats).pools, reserved: (yield* pools.stats).reserved },
            { pools: 0, reserved: 0 }
          )

          // A database this library did not create is neither adopted nor dropped: here, the test database itself.
          const hijack = yield* poolsWith({ databaseName: () => "test" })
          const notOurs = yield* Effect.flip(hijack.dropDatabase(id))
          assert.strictEqual(notOurs._tag, "TenantDatabaseRefused")
          if (notOurs instanceof TenantPools.TenantDatabaseRefused) assert.strictEqual(notOurs.reason, "not-managed")
          const notAdopted = yield* Effect.flip(hijack.createDatabase(id))
          assert.strictEqual(notAdopted._tag, "TenantDatabaseRefused")
        })),
      180_000
    )

    it.scoped("gauges follow open pools, reservations and connections", () =>
      live(Effect.gen(function*() {
        const { ids } = yield* Fixture
        const value = (gauge: typeof TenantPools.metrics.pools) => Effect.map(Metric.value(gauge), (s) => s.value)
        const before = yield* Effect.all([
          value(TenantPools.metrics.pools),
          value(TenantPools.metrics.reserved),
          value(TenantPools.metrics.connections)
        ])
        const pools = yield* poolsWith({ maxConnectionsPerTenant: 3 })
        const a = yield* hold(pools, ids[16])
        yield* Effect.all([currentDatabase(a.sql), currentDatabase(a.sql)], { concurrency: 2 })
        const during = yield* Effect.all([
          value(TenantPools.metrics.pools),
          value(TenantPools.metrics.reserved),
          value(TenantPools.metrics.connections)
        ])
        const stats = yield* pools.stats
        assert.deepStrictEqual(during, [before[0] + 1, before[1] + 3, before[2] + stats.connections])
        assert.isAtLeast(stats.connections, 1)
        yield* a.release
      })))
  })
})
