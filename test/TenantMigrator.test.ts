import * as Migrator from "@effect/sql/Migrator"
import { SqlClient } from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Redacted } from "effect"
import type { Tenant } from "effect-tenancy/Tenant"
import { CurrentTenant, SystemAccess } from "effect-tenancy/TenantContext"
import * as TenantIsolation from "effect-tenancy/TenantIsolation"
import * as TenantMigrator from "effect-tenancy/TenantMigrator"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantStore from "effect-tenancy/TenantStore"
import { setup } from "./utils/roles.js"
import { freshDatabase } from "./utils/services.js"

const pad = (i: number) => String(i).padStart(3, "0")
const schemaOf = (id: string) => `tenant_${id.replace(/-/g, "_")}`

/** Registers `n` tenants `<prefix>-000`… and creates their schemas (as the owner). */
const seed = (prefix: string, n: number, options: { readonly suspend?: (i: number) => boolean } = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const registry = yield* TenantRegistry.TenantRegistry
    const ids: Array<string> = []
    for (let i = 0; i < n; i++) {
      const id = `${prefix}-${pad(i)}`
      ids.push(id)
      yield* registry.register({ id, name: id, tier: i % 10 === 9 ? "standard" : "premium" })
      if (options.suspend?.(i) === true) yield* registry.suspend(id)
    }
    yield* sql.unsafe(ids.map((id) => `CREATE SCHEMA "${schemaOf(id)}";`).join("\n"))
    return ids
  })

/** Migration 1 creates `notes`, 2 adds a column, 3 creates `notes_archive`. */
const base: ReadonlyArray<TenantMigrator.Migration> = [
  {
    id: 1,
    name: "create_notes",
    up: Effect.flatMap(SqlClient, (sql) => sql`CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)`)
  },
  { id: 2, name: "add_title", up: Effect.flatMap(SqlClient, (sql) => sql`ALTER TABLE notes ADD COLUMN title text`) },
  {
    id: 3,
    name: "create_archive",
    up: Effect.flatMap(SqlClient, (sql) => sql`CREATE TABLE notes_archive (id integer PRIMARY KEY)`)
  }
]

const appliedIds = (schema: string) =>
  Effect.flatMap(
    SqlClient,
    (sql) =>
      sql<
        { readonly present: boolean }
      >`SELECT to_regclass(${`"${schema}"."tenancy_migrations"`}) IS NOT NULL AS present`
        .pipe(
          Effect.flatMap((rows) =>
            rows[0].present
              ? sql<{ readonly migration_id: number }>`SELECT migration_id FROM ${
                sql(schema)
              }.tenancy_migrations ORDER BY 1`
              : Effect.succeed([])
          ),
          Effect.map((rows) => rows.map((r) => r.migration_id))
        )
  )

const tableExists = (schema: string, table: string) =>
  Effect.flatMap(SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly present: boolean }>`SELECT to_regclass(${`"${schema}"."${table}"`}) IS NOT NULL AS present`,
      (rows) => rows[0].present
    ))

const run = (options: TenantMigrator.Options) =>
  Effect.flatMap(SqlClient, (sql) => TenantMigrator.runWith(TenantMigrator.schemaTarget(sql), options))

const withRegistry = <A, E>(self: Effect.Effect<A, E, TenantRegistry.TenantRegistry | SystemAccess | SqlClient>) =>
  self.pipe(Effect.provide(TenantRegistry.layerMemory()), Effect.provide(SystemAccess.layer("test: migrations")))

describe("TenantMigrator", () => {
  it.layer(freshDatabase("tenancy_migrator"), { timeout: "120 seconds" })((it) => {
    it.effect("200 schema tenants, one broken: 199 applied, 1 failed; the re-run applies only the missing one", () =>
      withRegistry(Effect.gen(function*() {
        const sql = yield* SqlClient
        const ids = yield* seed("main", 200, { suspend: (i) => i % 50 === 7 })
        const broken = ids[77]
        // Something in the way of migration 3 in one tenant.
        yield* sql.unsafe(`CREATE TABLE "${schemaOf(broken)}".notes_archive (x text)`)

        const report = yield* run({ tenant: base, concurrency: 8 })
        assert.strictEqual(report.tenants.length, 200)
        assert.strictEqual(report.counts.applied, 199)
        assert.strictEqual(report.counts.failed, 1)
        const failed = report.tenants.filter((t) => t.status === "failed")
        assert.strictEqual(failed[0].tenantId, broken)
        const error = failed[0].error!
        assert.strictEqual(error._tag, "MigrationFailed")
        assert.strictEqual(error.reason, "failed")
        assert.strictEqual(error.tenantId, broken)
        assert.strictEqual(error.migrationId, 3)
        assert.match(error.message, /already exists/)
        assert.deepStrictEqual(
          TenantMigrator.firstFailure(report).pipe((o) => o._tag === "Some" && o.value.tenantId),
          broken
        )
        // Suspended tenants were migrated too.
        const suspended = report.tenants.find((t) => t.tenantId === ids[7])!
        assert.strictEqual(suspended.status, "applied")
        assert.deepStrictEqual(suspended.applied.map((m) => m.id), [1, 2, 3])
        // The broken tenant is untouched: its transaction rolled back, migrations 1 and 2 included.
        assert.deepStrictEqual(yield* appliedIds(schemaOf(broken)), [])
        assert.isFalse(yield* tableExists(schemaOf(broken), "notes"))
        assert.deepStrictEqual(yield* appliedIds(schemaOf(ids[0])), [1, 2, 3])

        yield* sql.unsafe(`DROP TABLE "${schemaOf(broken)}".notes_archive`)
        const rerun = yield* run({ tenant: base, concurrency: 8 })
        assert.strictEqual(rerun.counts.applied, 1)
        assert.strictEqual(rerun.counts["up-to-date"], 199)
        assert.strictEqual(rerun.counts.failed, 0)
        const fixed = rerun.tenants.find((t) => t.status === "applied")!
        assert.strictEqual(fixed.tenantId, broken)
        assert.deepStrictEqual(fixed.applied.map((m) => m.id), [1, 2, 3])
        assert.deepStrictEqual(yield* appliedIds(schemaOf(broken)), [1, 2, 3])
      })))

    it.effect("two migrators at once: every migration applied exactly once per tenant", () =>
      withRegistry(Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`CREATE TABLE public.migration_runs (schema text NOT NULL, migration_id integer NOT NULL)`
        const ids = yield* seed("twin", 200)
        // Each migration leaves a trace in a shared table, in the tenant's transaction.
        const traced = base.map((m) => ({
          ...m,
          up: Effect.zipRight(
            m.up,
            Effect.flatMap(
              SqlClient,
              (sql) => sql`INSERT INTO public.migration_runs VALUES (current_schema(), ${m.id})`
            )
          )
        }))
        const [a, b] = yield* Effect.all([
          run({ tenant: traced, concurrency: 8 }),
          // The other one walks the tenants from the end: they meet in the middle.
          run({ tenant: traced, concurrency: 5, tenants: [...ids].reverse() })
        ], { concurrency: 2 })
        assert.strictEqual(a.counts.failed + b.counts.failed, 0)
        assert.strictEqual(a.counts.applied + b.counts.applied, 200, "each tenant migrated by exactly one of them")
        assert.isAbove(a.counts.applied, 0)
        assert.isAbove(b.counts.applied, 0)
        const runs = yield* sql<{ readonly schema: string; readonly n: number }>`
          SELECT schema, count(*)::int AS n FROM public.migration_runs GROUP BY schema`
        assert.strictEqual(runs.length, 200)
        assert.isTrue(runs.every((r) => r.n === 3), "3 migrations, each applied once")
        assert.deepStrictEqual(new Set(runs.map((r) => r.schema)), new Set(ids.map(schemaOf)))
      })))

    it.effect("dry run lists what would run and changes nothing; shared migrations run once", () =>
      withRegistry(Effect.gen(function*() {
        const ids = yield* seed("dry", 20)
        const shared = Migrator.fromRecord({
          "1_shared_settings": Effect.flatMap(SqlClient, (sql) => sql`CREATE TABLE public.dry_shared (k text)`)
        })
        const dry = yield* run({ tenant: base, shared, dryRun: true, tenants: (t: Tenant) => t.id.startsWith("dry-") })
        assert.isTrue(dry.dryRun)
        assert.strictEqual(dry.counts.pending, 20)
        assert.deepStrictEqual(dry.tenants[0].pending.map((m) => m.id), [1, 2, 3])
        assert.deepStrictEqual(dry.shared.pending.map((m) => m.name), ["shared_settings"])
        assert.isFalse(yield* tableExists("public", "dry_shared"))
        for (const id of ids) assert.deepStrictEqual(yield* appliedIds(schemaOf(id)), [])

        const only = (t: Tenant) => t.id.startsWith("dry-")
        const first = yield* run({ tenant: base, shared, tenants: only })
        assert.deepStrictEqual(first.shared.applied.map((m) => m.id), [1])
        assert.strictEqual(first.counts.applied, 20)
        assert.isTrue(yield* tableExists("public", "dry_shared"))
        const second = yield* run({ tenant: base, shared, tenants: only })
        assert.deepStrictEqual(second.shared.applied, [])
        assert.strictEqual(second.counts["up-to-date"], 20)
        const dryAgain = yield* run({
          tenant: [...base, { id: 4, name: "four", up: Effect.void }],
          dryRun: true,
          tenants: only
        })
        assert.strictEqual(dryAgain.counts.pending, 20)
        assert.deepStrictEqual(dryAgain.tenants[3].pending, [{ id: 4, name: "four" }])
      })))

    it.effect("canary: first N, a list of ids (unknown ones reported), a predicate; rls tenants skipped", () =>
      withRegistry(Effect.gen(function*() {
        const sql = yield* SqlClient
        const ids = yield* seed("can", 30)
        const firstFive = yield* run({ tenant: base, tenants: { first: 5 } })
        assert.deepStrictEqual(firstFive.tenants.map((t) => t.tenantId), ids.slice(0, 5))
        assert.strictEqual(firstFive.counts.applied, 5)
        assert.deepStrictEqual(yield* appliedIds(schemaOf(ids[5])), [])

        const listed = yield* run({ tenant: base, tenants: [ids[12], "can-404", ids[3], ids[12]] })
        assert.deepStrictEqual(
          listed.tenants.map((t) => [t.tenantId, t.status, t.skipped]),
          [[ids[12], "applied", undefined], ["can-404", "skipped", "not-found"], [ids[3], "up-to-date", undefined]],
          "in the order given, without duplicates"
        )

        const target = TenantMigrator.schemaTarget(sql, {
          strategyOf: (t) => (t.tier === "standard" ? "rls" : "schema")
        })
        const rest = yield* TenantMigrator.runWith(target, { tenant: base, tenants: (t) => t.id.startsWith("can-") })
        assert.strictEqual(rest.counts.skipped, 3, "can-009, can-019, can-029 are standard tier (rls)")
        assert.isTrue(rest.tenants.filter((t) => t.status === "skipped").every((t) => t.skipped === "rls"))
        assert.strictEqual(rest.counts.applied, 30 - 3 - 6)
        assert.strictEqual(rest.counts["up-to-date"], 6)
        assert.deepStrictEqual(yield* appliedIds(schemaOf(ids[9])), [])
      })))

    it.effect("fail-fast starts no tenant after the first failure; continue goes through all", () =>
      withRegistry(Effect.gen(function*() {
        yield* seed("ff", 40)
        const only = (t: Tenant) => t.id.startsWith("ff-")
        const broken = [
          ...base,
          { id: 4, name: "divide", up: Effect.flatMap(SqlClient, (sql) => sql`SELECT 1 / 0`) }
        ]
        const fast = yield* run({ tenant: broken, tenants: only, concurrency: 2, onError: "fail-fast" })
        assert.isAtLeast(fast.counts.failed, 1)
        assert.isAtMost(fast.counts.failed, 2, "at most the tenants already in flight")
        assert.strictEqual(fast.counts.skipped, 40 - fast.counts.failed)
        assert.isTrue(fast.tenants.filter((t) => t.status === "skipped").every((t) => t.skipped === "fail-fast"))
        assert.match(fast.tenants.find((t) => t.status === "failed")!.error!.message, /division by zero/)

        const all = yield* run({ tenant: broken, tenants: only, concurrency: 4 })
        assert.strictEqual(all.counts.failed, 40)
      })))

    it.effect("a lock held elsewhere fails that tenant with lock-timeout, the others proceed", () =>
      withRegistry(Effect.gen(function*() {
        const sql = yield* SqlClient
        const ids = yield* seed("lock", 5)
        const held = ids[2]
        const locked = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        // Another session holds the tenant's migration lock.
        const holder = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
          yield* sql`SELECT pg_advisory_xact_lock(hashtext(${`effect-tenancy/migrate/${held}`}))`
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(release)
        })))
        yield* Deferred.await(locked)
        const report = yield* run({ tenant: base, tenants: ids, lockTimeout: "200 millis" })
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        assert.strictEqual(report.counts.applied, 4)
        const failed = report.tenants.find((t) => t.status === "failed")!
        assert.strictEqual(failed.tenantId, held)
        assert.strictEqual(failed.error!.reason, "lock-timeout")
      })))

    it.effect("interruption leaves every tenant fully migrated or untouched; a re-run completes", () =>
      withRegistry(Effect.gen(function*() {
        const sql = yield* SqlClient
        const ids = yield* seed("intr", 60)
        const only = (t: Tenant) => t.id.startsWith("intr-")
        const slow = [
          base[0],
          {
            id: 2,
            name: "slow",
            up: Effect.flatMap(
              SqlClient,
              (sql) => Effect.zipRight(sql`CREATE TABLE slow_done (x int)`, sql`SELECT pg_sleep(0.05)`)
            )
          }
        ]
        const fiber = yield* Effect.fork(run({ tenant: slow, tenants: only, concurrency: 4 }))
        // Wait until some tenants are done, then interrupt while others are half way.
        yield* Effect.flatMap(
          SqlClient,
          (sql) =>
            sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_tables WHERE tablename = 'slow_done'
            AND schemaname LIKE 'tenant_intr_%'`
        ).pipe(
          Effect.repeat({ until: (rows) => rows[0].n >= 10 })
        )
        yield* Fiber.interrupt(fiber)

        let migrated = 0
        for (const id of ids) {
          const applied = yield* appliedIds(schemaOf(id))
          const notes = yield* tableExists(schemaOf(id), "notes")
          const done = yield* tableExists(schemaOf(id), "slow_done")
          if (applied.length === 2) {
            assert.isTrue(notes && done, id)
            migrated++
          } else {
            assert.deepStrictEqual(applied, [], id)
            assert.isFalse(notes || done, id)
          }
        }
        assert.isAbove(migrated, 0)
        assert.isBelow(migrated, 60, "interrupted before the end")
        // No lock or transaction was left behind.
        const idle = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND state LIKE 'idle in transaction%'`
        assert.strictEqual(idle[0].n, 0)
        const rerun = yield* run({ tenant: slow, tenants: only, concurrency: 8 })
        assert.strictEqual(rerun.counts.applied, 60 - migrated)
        assert.strictEqual(rerun.counts["up-to-date"], migrated)
      })))

    it.effect("a tenant whose schema is missing fails as unavailable, and nothing is created", () =>
      withRegistry(Effect.gen(function*() {
        const registry = yield* TenantRegistry.TenantRegistry
        yield* registry.register({ id: "ghost-1", name: "no schema" })
        const report = yield* run({ tenant: base, tenants: ["ghost-1"] })
        const error = report.tenants[0].error!
        assert.strictEqual(error.reason, "unavailable")
        assert.match(error.message, /tenant_ghost_1.*does not exist/)
        assert.isFalse(yield* tableExists("public", "notes"))
      })))

    it.effect("refuses concurrency and tenants.first that are NaN or below 1, before running anything", () =>
      withRegistry(Effect.gen(function*() {
        const sql = yield* SqlClient
        const table = `shared_${Math.random().toString(36).slice(2, 8)}`
        const shared: ReadonlyArray<TenantMigrator.Migration> = [
          { id: 1, name: "shared", up: sql.unsafe(`CREATE TABLE "${table}" (x int)`) }
        ]
        const wrong: ReadonlyArray<Partial<TenantMigrator.Options>> = [
          { concurrency: Number.NaN },
          { concurrency: 0 },
          { concurrency: 1.5 },
          { tenants: { first: Number.NaN } },
          { tenants: { first: 0 } }
        ]
        for (const options of wrong) {
          const error = yield* Effect.flip(run({ tenant: base, shared, sharedTable: `${table}_m`, ...options }))
          assert.strictEqual(error._tag, "MigrationFailed", JSON.stringify(options))
          assert.strictEqual((error as TenantMigrator.MigrationFailed).reason, "invalid-options")
        }
        assert.isFalse((yield* sql<{ readonly p: boolean }>`SELECT to_regclass(${table}) IS NOT NULL AS p`)[0].p)
      })))

    it.effect("refuses an invalid migration list", () =>
      withRegistry(Effect.gen(function*() {
        const error = yield* Effect.flip(run({ tenant: [base[1], base[0]] }))
        assert.strictEqual(error._tag, "MigrationFailed")
        assert.strictEqual((error as TenantMigrator.MigrationFailed).reason, "invalid-migrations")
      })))
  })

  it.scoped(
    "through TenantIsolation: the isolation's migrationsTable, and its safety check after the shared migrations",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("mig_isotable")
        const registry = yield* TenantRegistry.make().pipe(Effect.provide(TenantStore.layerMemory))
        // `accounts` does not exist yet: a shared migration creates and protects it.
        const isolation = yield* TenantIsolation.make({
          strategy: TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" }),
          admin: s.admin,
          migrations: base.slice(0, 1),
          migrationsTable: "schema_history",
          rls: { checkOnStart: false, tables: ["accounts"] }
        }).pipe(Effect.provideService(SqlClient, s.app))
        const id = `p${Math.random().toString(36).slice(2, 7)}`
        const tenant = yield* registry.register({ id, name: "p", tier: "premium" })
        yield* isolation.provision(tenant)
        const migrate = (shared: ReadonlyArray<TenantMigrator.Migration>) =>
          TenantMigrator.run({ tenant: base, shared }).pipe(
            Effect.provideService(TenantIsolation.TenantIsolation, isolation),
            Effect.provideService(SqlClient, s.admin),
            Effect.provideService(TenantRegistry.TenantRegistry, registry),
            Effect.provideService(SystemAccess, { reason: "test" })
          )
        const refused = yield* Effect.flip(migrate([]))
        assert.strictEqual(refused._tag, "MigrationFailed")
        assert.include(refused.message, "\"public.accounts\" named in rls.tables does not exist")
        const accounts: TenantMigrator.Migration = {
          id: 1,
          name: "accounts",
          up: Effect.zipRight(
            Effect.flatMap(SqlClient, (sql) => sql`CREATE TABLE accounts (tenant_id text NOT NULL, id int)`),
            Effect.orDie(TenantIsolation.enableRowLevelSecurity({ table: "accounts" }))
          )
        }
        const report = yield* migrate([accounts])
        // Provision recorded migration 1 in schema_history: only 2 and 3 are left.
        assert.deepStrictEqual(report.tenants.map((r) => [r.status, r.applied.map((m) => m.id)]), [["applied", [2, 3]]])
        const history = yield* s.admin<{ readonly id: number }>`
          SELECT migration_id AS id FROM ${s.admin(`tenant_${tenant.id}`)}.schema_history ORDER BY 1`
        assert.deepStrictEqual(history.map((r) => r.id), [1, 2, 3])
      }),
    { timeout: 60_000 }
  )

  it.scoped(
    "through TenantIsolation (hybrid): schema and database tenants migrated, rls skipped, app role can use new tables",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("mig_iso")
        const registry = yield* TenantRegistry.make().pipe(Effect.provide(TenantStore.layerMemory))
        const v1 = base.slice(0, 1)
        const isolation = yield* TenantIsolation.make({
          strategy: TenantIsolation.hybrid({ tiers: { premium: "schema", enterprise: "database" }, fallback: "rls" }),
          admin: s.admin,
          migrations: v1,
          rls: { checkOnStart: false },
          database: {
            connection: { url: Redacted.make(s.appUrl) },
            adminConnection: { url: Redacted.make(s.url) },
            maxConnectionsPerTenant: 1,
            maxConnections: 4
          }
        }).pipe(Effect.provideService(SqlClient, s.app))
        const suffix = Math.random().toString(36).slice(2, 7)
        const specs = [
          ["premium", 4],
          ["enterprise", 2],
          ["standard", 2]
        ] as const
        const tenants: Array<Tenant> = []
        for (const [tier, n] of specs) {
          for (let i = 0; i < n; i++) {
            tenants.push(yield* registry.register({ id: `${tier.slice(0, 3)}${suffix}-${i}`, name: tier, tier }))
          }
        }
        yield* Effect.addFinalizer(() => Effect.forEach(tenants, (t) => Effect.ignore(isolation.deprovision(t))))
        for (const t of tenants) yield* isolation.provision(t)

        // The shared table of rls tenants is protected by a shared migration; the safety check runs after it.
        const protectItems: TenantMigrator.Migration = {
          id: 1,
          name: "protect_items",
          up: Effect.orDie(TenantIsolation.enableRowLevelSecurity({ table: "items" }))
        }
        const report = yield* TenantMigrator.runWith(TenantMigrator.fromIsolation(isolation), {
          tenant: base,
          shared: [protectItems],
          concurrency: 3
        }).pipe(
          Effect.provideService(SqlClient, s.admin),
          Effect.provideService(TenantRegistry.TenantRegistry, registry),
          Effect.provideService(SystemAccess, { reason: "test" })
        )
        const byTier = (tier: string) =>
          report.tenants.filter((r) => tenants.find((t) => t.id === r.tenantId)!.tier === tier)
        for (const r of [...byTier("premium"), ...byTier("enterprise")]) {
          assert.strictEqual(r.status, "applied", r.tenantId)
          assert.deepStrictEqual(r.applied.map((m) => m.id), [2, 3], "provision applied 1 already")
        }
        assert.deepStrictEqual(byTier("enterprise").map((r) => r.strategy), ["database", "database"])
        assert.isTrue(byTier("standard").every((r) => r.status === "skipped" && r.skipped === "rls"))

        // The application role (not the admin that migrated) can use what the migrations created.
        for (const t of tenants.filter((t) => t.tier !== "standard")) {
          const rows = yield* isolation.scoped(
            Effect.flatMap(SqlClient, (sql) =>
              Effect.zipRight(
                sql`INSERT INTO notes (body, title) VALUES ('b', 't')`,
                sql<
                  { readonly n: number; readonly user: string }
                >`SELECT count(*)::int AS n, current_user AS user FROM notes`
              ))
          ).pipe(Effect.provideService(CurrentTenant, t))
          assert.deepStrictEqual({ ...rows[0] }, { n: 1, user: s.role })
        }
        const again = yield* TenantMigrator.run({ tenant: base, shared: [protectItems] }).pipe(
          Effect.provideService(TenantIsolation.TenantIsolation, isolation),
          Effect.provideService(SqlClient, s.admin),
          Effect.provideService(TenantRegistry.TenantRegistry, registry),
          Effect.provideService(SystemAccess, { reason: "test" })
        )
        assert.deepStrictEqual(again.counts, { applied: 0, "up-to-date": 6, pending: 0, failed: 0, skipped: 2 })
      }),
    { timeout: 120_000 }
  )
})
