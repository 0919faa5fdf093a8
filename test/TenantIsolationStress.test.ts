/**
 * Cross-tenant stress for TenantIsolation, as a non-superuser, non-owner
 * application role:
 * - 20 tenants (10 schema, 10 rls), 2,000 tenant-scoped transactions in
 *   parallel on a pool of 5, a fraction failing half-way: every read returns
 *   only its own tenant's rows, committed counts match, zero leaks;
 * - a pool of 2 and 200 alternating tenants, with failures, defects and
 *   interrupted fibers: after each, both pooled connections show no tenant
 *   (no `app.tenant_id`, the default `search_path`, no open transaction).
 */
import * as Sql from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantIsolation from "effect-tenancy/TenantIsolation"
import type { Migration } from "../src/internal/tenantMigrations.js"
import { randomId, setup, tenant } from "./utils/roles.js"

// Schema tenants get an `items` table of their own, with the same columns as the shared one.
const migrations: ReadonlyArray<Migration> = [
  {
    id: 1,
    name: "items",
    up: Effect.flatMap(
      Sql.SqlClient,
      (sql) =>
        sql`CREATE TABLE items (tenant_id text NOT NULL, id int NOT NULL, body text NOT NULL, PRIMARY KEY (tenant_id, id))`
    )
  }
]

const strategy = TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" })

const prepare = (prefix: string, appConnections: number) =>
  Effect.gen(function*() {
    const s = yield* setup(prefix, { appConnections })
    yield* TenantIsolation.enableRowLevelSecurity({ table: "items" }).pipe(
      Effect.provideService(Sql.SqlClient, s.admin)
    )
    const isolation = yield* TenantIsolation.make({ strategy, admin: s.admin, migrations }).pipe(
      Effect.provideService(Sql.SqlClient, s.app)
    )
    return { ...s, isolation }
  })

const ROUNDS = Number(process.env.ISO_ROUNDS ?? 200)

class HalfWay {
  readonly _tag = "HalfWay"
}

describe("TenantIsolation stress", () => {
  it.scopedLive(
    "20 tenants, 2,000 parallel transactions on a pool of 5, some failing half-way: zero leaks",
    () =>
      Effect.gen(function*() {
        const { isolation, admin } = yield* prepare("iso_stress", 5)
        const tenants = Array.from(
          { length: 20 },
          (_, i) => tenant(randomId(`st${i}-`), { tier: i % 2 === 0 ? "premium" : "standard" })
        )
        yield* Effect.forEach(tenants, (t) => isolation.provision(t), { discard: true })

        let leaks = 0
        let reads = 0
        const committed = new Map<string, number>()
        const run = (n: number) => {
          const t = tenants[n % tenants.length]!
          const fails = n % 7 === 3
          const program = Effect.gen(function*() {
            const sql = yield* Sql.SqlClient
            const current = yield* CurrentTenant
            yield* sql`INSERT INTO items (tenant_id, id, body) VALUES (${current.id}, ${n}, ${`row ${n}`})`
            const [setting] = yield* sql<{ readonly t: string | null }>`
            SELECT NULLIF(current_setting('app.tenant_id', true), '') AS t`
            if (setting?.t !== current.id) leaks++
            if (fails) return yield* Effect.fail(new HalfWay())
            const rows = yield* sql<{ readonly tenant_id: string }>`SELECT tenant_id FROM items`
            reads++
            for (const row of rows) if (row.tenant_id !== current.id) leaks++
          })
          return isolation.scoped(program).pipe(
            Effect.provideService(CurrentTenant, t),
            Effect.tap(() => Effect.sync(() => committed.set(t.id, (committed.get(t.id) ?? 0) + 1))),
            Effect.catchTag("HalfWay", () => Effect.void)
          )
        }
        yield* Effect.forEach(Array.from({ length: 2000 }, (_, n) => n), run, {
          concurrency: "unbounded",
          discard: true
        })
        assert.strictEqual(leaks, 0)
        assert.isAbove(reads, 1500)

        // Every committed row is in its tenant's place, failed ones nowhere.
        for (const t of tenants) {
          const rows = yield* isolation.scoped(
            Effect.flatMap(
              Sql.SqlClient,
              (sql) => sql<{ readonly tenant_id: string; readonly id: number }>`SELECT * FROM items`
            )
          ).pipe(Effect.provideService(CurrentTenant, t))
          assert.strictEqual(rows.length, committed.get(t.id) ?? 0, t.id)
          for (const row of rows) {
            assert.strictEqual(row.tenant_id, t.id)
            assert.notStrictEqual(row.id % 7, 3)
          }
        }
        // Seen by the superuser: the shared table holds exactly the rls tenants' committed rows.
        const [shared] = yield* admin<{ readonly n: number }>`SELECT count(*)::int AS n FROM public.items`
        const expectedShared = tenants.filter((t) => t.tier === "standard").reduce(
          (sum, t) => sum + (committed.get(t.id) ?? 0),
          0
        )
        assert.strictEqual(shared!.n, expectedShared)
      }),
    { timeout: 120_000 }
  )

  it.scopedLive(
    "pool of 2, 200 alternating tenants with failures, defects and interruptions: the next user sees no tenant",
    () =>
      Effect.gen(function*() {
        const { app, isolation } = yield* prepare("iso_pool2", 2)
        const tenants = Array.from(
          { length: 4 },
          (_, i) => tenant(randomId(`pt${i}-`), { tier: i % 2 === 0 ? "premium" : "standard" })
        )
        yield* Effect.forEach(tenants, (t) => isolation.provision(t), { discard: true })
        const [baseline] = yield* app<{ readonly p: string }>`SELECT current_setting('search_path') AS p`

        // Both connections of the pool, each checked for tenant state.
        const checkBoth = Effect.scoped(
          Effect.gen(function*() {
            const conns = yield* Effect.all([app.reserve, app.reserve], { concurrency: 2 })
            for (const conn of conns) {
              const rows = (yield* conn.executeUnprepared(
                `SELECT NULLIF(current_setting('app.tenant_id', true), '') AS t,
                current_setting('search_path') AS p,
                (SELECT count(*)::int FROM items) AS n,
                now() = statement_timestamp() AS fresh`,
                [],
                undefined
              )) as ReadonlyArray<{ t: string | null; p: string; n: number; fresh: boolean }>
              const row = rows[0]!
              assert.isNull(row.t)
              assert.strictEqual(row.p, baseline!.p)
              // No tenant: RLS shows nothing; no transaction left open (now() would be older).
              assert.strictEqual(row.n, 0)
              assert.isTrue(row.fresh)
            }
          })
        )

        const kinds = ["ok", "fail", "defect", "interrupt-in-query", "interrupt-between", "sql-error"] as const
        let interrupted = 0
        for (let n = 0; n < ROUNDS; n++) {
          const started = Date.now()
          const t = tenants[n % tenants.length]!
          const kind = kinds[n % kinds.length]!
          const program = Effect.gen(function*() {
            const sql = yield* Sql.SqlClient
            yield* sql`INSERT INTO items (tenant_id, id, body) VALUES (${t.id}, ${n}, 'x')`
            switch (kind) {
              case "fail":
                return yield* Effect.fail(new HalfWay())
              case "defect":
                return yield* Effect.die("boom")
              case "interrupt-in-query":
                yield* sql`SELECT pg_sleep(5)`
                break
              case "interrupt-between":
                yield* Effect.never
                break
              case "sql-error":
                yield* sql`SELECT 1/0`
                break
            }
          })
          const scoped = isolation.scoped(program).pipe(Effect.provideService(CurrentTenant, t))
          if (kind === "interrupt-in-query" || kind === "interrupt-between") {
            const fiber = yield* Effect.fork(scoped)
            yield* Effect.sleep("30 millis")
            const exit = yield* Fiber.interrupt(fiber)
            if (Exit.isInterrupted(exit)) interrupted++
          } else {
            const exit = yield* Effect.exit(scoped)
            assert.strictEqual(Exit.isSuccess(exit), kind === "ok", kind)
          }
          yield* checkBoth
          if (process.env.ISO_DEBUG) console.log(kind, Date.now() - started)
        }
        assert.isAbove(interrupted, 50)
        // Only the "ok" transactions left rows.
        for (const t of tenants) {
          const rows = yield* isolation.scoped(
            Effect.flatMap(Sql.SqlClient, (sql) =>
              sql<{ readonly id: number; readonly tenant_id: string }>`SELECT * FROM items`)
          ).pipe(Effect.provideService(CurrentTenant, t))
          for (const row of rows) {
            assert.strictEqual(row.tenant_id, t.id)
            assert.strictEqual(kinds[row.id % kinds.length], "ok")
          }
        }
      }),
    { timeout: 120_000 }
  )
})
