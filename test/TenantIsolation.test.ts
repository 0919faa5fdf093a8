/**
 * TenantIsolation against the real PostgreSQL, as a non-superuser, non-owner
 * application role (DDL by the superuser): each strategy's provision, scoped
 * reads and writes and deprovision; fail-closed RLS; the safety check; hostile
 * tenant ids; hybrid selection; nested transactions.
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import * as Sql from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Either, Exit, Fiber, Layer, Option, Redacted } from "effect"
import type { Tenant } from "effect-tenancy/Tenant"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantIsolation from "effect-tenancy/TenantIsolation"
import { type Migration, tenantLockKey } from "../src/internal/tenantMigrations.js"
import { appRole, client, randomId, setup, tenant } from "./utils/roles.js"

const migrations: ReadonlyArray<Migration> = [
  {
    id: 1,
    name: "items",
    up: Effect.flatMap(
      Sql.SqlClient,
      (sql) => sql`CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL, body text NOT NULL)`
    )
  }
]

const protect = (admin: SqlClient) =>
  TenantIsolation.enableRowLevelSecurity({ table: "items" }).pipe(Effect.provideService(Sql.SqlClient, admin))

const make = (app: SqlClient, options: TenantIsolation.Options) =>
  TenantIsolation.make(options).pipe(Effect.provideService(Sql.SqlClient, app))

const readItems = Effect.flatMap(
  Sql.SqlClient,
  (sql) =>
    sql<{ readonly tenant_id: string; readonly id: number; readonly body: string }>`SELECT * FROM items ORDER BY id`
)
// Inserts an item labelled with the tenant's id, as that tenant.
const insertItem = (isolation: TenantIsolation.TenantIsolation["Type"], tenant: Tenant, id: number) =>
  isolation.scoped(
    Effect.flatMap(Sql.SqlClient, (sql) => sql`INSERT INTO items (id, label, body) VALUES (${id}, ${tenant.id}, 'x')`)
  ).pipe(Effect.provideService(CurrentTenant, tenant))

const readLabels = Effect.flatMap(
  Sql.SqlClient,
  (sql) => sql<{ readonly label: string; readonly id: number }>`SELECT label, id FROM items ORDER BY id`
)

describe("TenantIsolation", () => {
  it.scopedLive(
    "rls: provision, scoped writes and reads, deprovision; no tenant → no rows, refused writes",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_rls")
        yield* protect(s.admin)
        const isolation = yield* make(s.app, { strategy: "rls", admin: s.admin })
        const a = tenant(randomId("a"))
        const b = tenant(randomId("b"))
        assert.deepStrictEqual(yield* isolation.provision(a), { strategy: "rls", applied: [] })
        const insert = (id: number, body: string) =>
          isolation.scoped(
            Effect.flatMap(
              Sql.SqlClient,
              (sql) =>
                Effect.flatMap(
                  CurrentTenant,
                  (t) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${t.id}, ${id}, ${body})`
                )
            )
          )
        yield* insert(1, "a1").pipe(Effect.provideService(CurrentTenant, a))
        yield* insert(2, "a2").pipe(Effect.provideService(CurrentTenant, a))
        yield* insert(1, "b1").pipe(Effect.provideService(CurrentTenant, b))

        const rowsA = yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, a))
        assert.deepStrictEqual(rowsA.map((r) => [r.tenant_id, r.body]), [[a.id, "a1"], [a.id, "a2"]])
        const rowsB = yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, b))
        assert.deepStrictEqual(rowsB.map((r) => r.body), ["b1"])

        // Writing another tenant's row from inside a is refused (WITH CHECK).
        const crossWrite = yield* isolation.scoped(
          Effect.flatMap(Sql.SqlClient, (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${b.id}, 9, 'x')`)
        ).pipe(Effect.provideService(CurrentTenant, a), Effect.exit)
        assert.isTrue(Exit.isFailure(crossWrite))
        // Updating rows of b from a touches nothing.
        const updated = yield* isolation.scoped(
          Effect.flatMap(
            Sql.SqlClient,
            (sql) =>
              sql<{ readonly id: number }>`UPDATE items SET body = 'stolen' WHERE tenant_id = ${b.id} RETURNING id`
          )
        ).pipe(Effect.provideService(CurrentTenant, a))
        assert.strictEqual(updated.length, 0)

        // No tenant: the plain application client sees nothing and cannot write.
        assert.strictEqual((yield* s.app`SELECT * FROM items`).length, 0)
        const refused = yield* s.app`INSERT INTO items (tenant_id, id, body) VALUES (${a.id}, 3, 'x')`.pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(refused))
        const refusedTx = yield* s.app.withTransaction(
          s.app`INSERT INTO items (tenant_id, id, body) VALUES ('', 3, 'x')`
        ).pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(refusedTx))

        const gone = yield* isolation.deprovision(a)
        assert.deepStrictEqual(gone, { strategy: "rls", deleted: { items: 2 } })
        assert.strictEqual((yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, a))).length, 0)
        assert.strictEqual((yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, b))).length, 1)
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "rls helper: ENABLE + FORCE, USING and WITH CHECK on NULLIF(current_setting), index on the tenant column",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_rlshelper")
        yield* s.admin.unsafe(`CREATE TABLE notes (id int PRIMARY KEY, org text NOT NULL)`)
        yield* TenantIsolation.enableRowLevelSecurity({ table: "notes", column: "org", setting: "tenancy.org" }).pipe(
          Effect.provideService(Sql.SqlClient, s.admin)
        )
        // Twice: idempotent.
        yield* TenantIsolation.enableRowLevelSecurity({ table: "notes", column: "org", setting: "tenancy.org" }).pipe(
          Effect.provideService(Sql.SqlClient, s.admin)
        )
        const [table] = yield* s.admin<{ readonly enabled: boolean; readonly forced: boolean }>`
        SELECT relrowsecurity AS enabled, relforcerowsecurity AS forced FROM pg_class WHERE relname = 'notes'`
        assert.deepStrictEqual({ ...table }, { enabled: true, forced: true })
        const policies = yield* s.admin<{ readonly qual: string; readonly with_check: string; readonly cmd: string }>`
        SELECT qual, with_check, cmd FROM pg_policies WHERE tablename = 'notes'`
        assert.strictEqual(policies.length, 1)
        assert.strictEqual(policies[0]!.cmd, "ALL")
        assert.include(policies[0]!.qual, "NULLIF(current_setting('tenancy.org'::text, true), ''::text)")
        assert.include(policies[0]!.with_check, "NULLIF(current_setting('tenancy.org'::text, true), ''::text)")
        const indexes = yield* s.admin<{ readonly def: string }>`
        SELECT indexdef AS def FROM pg_indexes WHERE tablename = 'notes' AND indexdef LIKE '%(org)%'`
        assert.strictEqual(indexes.length, 1)
        // A table whose primary key already leads on the tenant column gets no second index.
        yield* protect(s.admin)
        const itemIndexes = yield* s.admin`SELECT 1 FROM pg_indexes WHERE tablename = 'items'`
        assert.strictEqual(itemIndexes.length, 1)
        // Unsafe names never reach SQL.
        const unsafe = yield* TenantIsolation.enableRowLevelSecurity({ table: "notes; DROP TABLE items" }).pipe(
          Effect.provideService(Sql.SqlClient, s.admin),
          Effect.flip
        )
        assert.strictEqual(unsafe._tag, "UnsafeIdentifier")
        const missing = yield* TenantIsolation.enableRowLevelSecurity({ table: "nope" }).pipe(
          Effect.provideService(Sql.SqlClient, s.admin),
          Effect.flip
        )
        assert.strictEqual(missing._tag, "IsolationError")
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "safety check: superuser, BYPASSRLS, table without FORCE, owner without FORCE, RLS disabled",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_safety")
        yield* protect(s.admin)
        // The superuser as application role.
        const superuser = yield* make(s.admin, { strategy: "rls" }).pipe(Effect.flip)
        assert.strictEqual(superuser._tag, "IsolationUnsafe")
        assert.strictEqual((superuser as TenantIsolation.IsolationUnsafe).problem, "superuser")
        assert.include(superuser.message, "superuser")

        const bypass = yield* appRole(s.url, "iso_bypass", ["BYPASSRLS"])
        const bypassClient = yield* client(bypass.url, 1)
        const bypassed = yield* make(bypassClient, { strategy: "rls" }).pipe(Effect.flip)
        assert.strictEqual((bypassed as TenantIsolation.IsolationUnsafe).problem, "bypassrls")
        assert.include(bypassed.message, bypass.role)

        // The application role passes while every protected table is forced.
        yield* make(s.app, { strategy: "rls" })

        yield* s.admin.unsafe(`CREATE TABLE loose (tenant_id text NOT NULL, v int)`)
        yield* s.admin.unsafe(`ALTER TABLE loose ENABLE ROW LEVEL SECURITY`)
        const loose = yield* make(s.app, { strategy: "rls" }).pipe(Effect.flip)
        assert.deepStrictEqual(
          { ...(loose as TenantIsolation.IsolationUnsafe) },
          { _tag: "IsolationUnsafe", problem: "not-forced", role: s.role, table: "public.loose" }
        )
        assert.include(loose.message, "FORCE")

        yield* s.admin.unsafe(`ALTER TABLE loose OWNER TO "${s.role}"`)
        const owned = yield* make(s.app, { strategy: "rls" }).pipe(Effect.flip)
        assert.strictEqual((owned as TenantIsolation.IsolationUnsafe).problem, "owner-without-force")

        yield* s.admin.unsafe(`CREATE TABLE open_table (tenant_id text NOT NULL)`)
        const open = yield* make(s.app, { strategy: "rls", rls: { tables: ["open_table"] } }).pipe(Effect.flip)
        assert.strictEqual((open as TenantIsolation.IsolationUnsafe).problem, "rls-disabled")

        // Hybrid strategies check too; a schema-only service does not need RLS.
        const hybrid = yield* make(s.app, { strategy: () => "schema" }).pipe(Effect.flip)
        assert.strictEqual(hybrid._tag, "IsolationUnsafe")
        yield* make(s.app, { strategy: "schema" })
        // Explicitly named tables only.
        yield* make(s.app, { strategy: "rls", rls: { tables: ["items"] } })
        // A named table that does not exist (a typo, a migration not run) protects nothing: refused.
        const absent = yield* make(s.app, { strategy: "rls", rls: { tables: ["items", "itmes"] } }).pipe(Effect.flip)
        assert.strictEqual(absent._tag, "IsolationError")
        assert.include(absent.message, "\"public.itmes\" named in rls.tables does not exist")

        // A permissive policy for everyone that ignores the tenant would OR-open every row.
        const other = yield* appRole(s.url, "iso_other")
        yield* s.admin.unsafe(`CREATE POLICY reporting ON items FOR SELECT TO "${other.role}" USING (true)`)
        yield* make(s.app, { strategy: "rls", rls: { tables: ["items"] } }) // not the application role's: fine
        yield* s.admin.unsafe(`CREATE POLICY everyone ON items FOR SELECT USING (true)`)
        const widened = yield* make(s.app, { strategy: "rls", rls: { tables: ["items"] } }).pipe(Effect.flip)
        assert.deepStrictEqual(
          { ...(widened as TenantIsolation.IsolationUnsafe) },
          {
            _tag: "IsolationUnsafe",
            problem: "policy-without-tenant",
            role: s.role,
            table: "public.items",
            policy: "everyone"
          }
        )
        yield* s.admin.unsafe(`DROP POLICY reporting ON items`)
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "schema: provision creates, grants and migrates; scoped reads and writes; deprovision drops",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_schema")
        const isolation = yield* make(s.app, { strategy: "schema", admin: s.admin, migrations })
        const a = tenant(randomId("sa-"))
        const b = tenant(randomId("sb-"))
        const provisioned = yield* isolation.provision(a)
        assert.deepStrictEqual(provisioned, {
          strategy: "schema",
          name: `tenant_${a.id.replace(/-/g, "_")}`,
          applied: [{ id: 1, name: "items" }]
        })
        // Idempotent: nothing applied the second time.
        assert.deepStrictEqual((yield* isolation.provision(a)).applied, [])
        yield* isolation.provision(b)

        const write = (t: typeof a, id: number) => insertItem(isolation, t, id)
        yield* write(a, 1)
        yield* write(a, 2)
        yield* write(b, 1)
        const rowsA = yield* isolation.scoped(readLabels).pipe(Effect.provideService(CurrentTenant, a))
        assert.deepStrictEqual(
          rowsA.map((r) => r.label),
          [a.id, a.id]
        )
        const rowsB = yield* isolation.scoped(readLabels).pipe(Effect.provideService(CurrentTenant, b))
        assert.deepStrictEqual(rowsB.map((r) => r.label), [b.id])

        // The search path is the tenant's only inside the scope.
        const inside = yield* isolation.scoped(
          Effect.flatMap(
            Sql.SqlClient,
            (sql) => sql<{ readonly p: string }>`SELECT current_setting('search_path') AS p`
          )
        ).pipe(Effect.provideService(CurrentTenant, a))
        assert.strictEqual(inside[0]!.p, `"tenant_${a.id.replace(/-/g, "_")}"`)
        // Without a tenant, the application role's tables are not the tenants': `items` is public's.
        yield* s.admin`INSERT INTO public.items (tenant_id, id, body) VALUES ('nobody', 1, 'public row')`
        const outside = yield* s.app<{ readonly body: string }>`SELECT body FROM items`
        assert.deepStrictEqual(outside.map((r) => r.body), ["public row"])
        // ... and a tenant's scope does not see public's.
        const again = yield* isolation.scoped(readLabels).pipe(Effect.provideService(CurrentTenant, a))
        assert.deepStrictEqual(again.map((r) => r.label), [a.id, a.id])

        const dropped = yield* isolation.deprovision(a)
        assert.deepStrictEqual(dropped, { strategy: "schema", dropped: `tenant_${a.id.replace(/-/g, "_")}` })
        const schemas = yield* s.admin<
          { readonly n: string }
        >`SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE 'tenant_%'`
        assert.deepStrictEqual(schemas.map((r) => r.n), [`tenant_${b.id.replace(/-/g, "_")}`])
        // Idempotent.
        assert.deepStrictEqual(yield* isolation.deprovision(a), { strategy: "schema" })
        // The dropped tenant's scope finds no table.
        const after = yield* isolation.scoped(readLabels).pipe(Effect.provideService(CurrentTenant, a), Effect.exit)
        assert.isTrue(Exit.isFailure(after))
      }),
    { timeout: 30_000 }
  )

  it.scopedLive("schema: only schemas this library created are adopted or dropped", () =>
    Effect.gen(function*() {
      const s = yield* setup("iso_guard")
      const isolation = yield* make(s.app, { strategy: "schema", admin: s.admin, migrations })
      const a = tenant(randomId("g"))
      const name = `tenant_${a.id}`
      yield* s.admin.unsafe(`CREATE SCHEMA "${name}"`)
      yield* s.admin.unsafe(`CREATE TABLE "${name}".precious (v int)`)
      const provision = yield* isolation.provision(a).pipe(Effect.flip)
      assert.strictEqual(provision._tag, "IsolationError")
      assert.include(provision.message, "not created by effect-tenancy")
      const deprovision = yield* isolation.deprovision(a).pipe(Effect.flip)
      assert.strictEqual(deprovision._tag, "IsolationError")
      const still = yield* s.admin`SELECT 1 FROM pg_tables WHERE schemaname = ${name} AND tablename = 'precious'`
      assert.strictEqual(still.length, 1)
      // A schema of another tenant's marker is not ours either.
      yield* s.admin.unsafe(`COMMENT ON SCHEMA "${name}" IS 'effect-tenancy:tenant:someone-else'`)
      assert.strictEqual((yield* isolation.deprovision(a).pipe(Effect.flip))._tag, "IsolationError")
    }), { timeout: 30_000 })

  it.scopedLive(
    "schema: provision and deprovision wait for the tenant's lock at most lockTimeout",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_locktimeout")
        const isolation = yield* make(s.app, {
          strategy: "schema",
          admin: s.admin,
          migrations,
          lockTimeout: "200 millis"
        })
        const a = tenant(randomId("lt"))
        yield* isolation.provision(a)
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        // Another session (a migrator) holds the tenant's advisory lock.
        const holder = yield* s.admin.withTransaction(Effect.gen(function*() {
          yield* s.admin`SELECT pg_advisory_xact_lock(hashtext(${tenantLockKey(a.id)}))`
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(unlock)
        })).pipe(Effect.fork)
        yield* Deferred.await(locked)
        for (const operation of [Effect.asVoid(isolation.provision(a)), Effect.asVoid(isolation.deprovision(a))]) {
          const error = yield* Effect.flip(operation)
          assert.strictEqual(error._tag, "IsolationError")
          assert.include(error.message, "lock timeout")
        }
        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(holder)
        assert.deepStrictEqual(yield* isolation.deprovision(a), { strategy: "schema", dropped: `tenant_${a.id}` })
      }),
    { timeout: 30_000 }
  )

  it.scopedLive("hostile and oversized tenant ids are refused before any SQL", () =>
    Effect.gen(function*() {
      const s = yield* setup("iso_hostile")
      yield* protect(s.admin)
      const isolation = yield* make(s.app, {
        strategy: TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" }),
        admin: s.admin,
        migrations
      })
      const hostile = [
        "a'; DROP TABLE items; --",
        "x\"; DROP SCHEMA public CASCADE; --",
        "UPPER",
        "a b",
        "tenant\u0000zero",
        "",
        "a".repeat(200)
      ]
      for (const id of hostile) {
        for (const tier of ["premium", "standard"]) {
          const t = tenant(id, { tier })
          const scoped = yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, t), Effect.flip)
          assert.strictEqual(scoped._tag, "UnsafeIdentifier", id)
          assert.strictEqual((yield* isolation.provision(t).pipe(Effect.flip))._tag, "UnsafeIdentifier")
          assert.strictEqual((yield* isolation.deprovision(t).pipe(Effect.flip))._tag, "UnsafeIdentifier")
        }
      }
      // A valid 63-character tenant id whose schema name would exceed 63 characters.
      const long = tenant(`l${"x".repeat(61)}z`, { tier: "premium" })
      const tooLong = yield* isolation.provision(long).pipe(Effect.flip)
      assert.deepStrictEqual(
        { ...(tooLong as TenantIsolation.UnsafeIdentifier) },
        { _tag: "UnsafeIdentifier", kind: "schema", name: `tenant_${long.id}` }
      )
      // Still usable under rls.
      const asRls = tenant(long.id, { tier: "standard" })
      assert.strictEqual(
        (yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, asRls))).length,
        0
      )
      // The table is intact.
      assert.strictEqual((yield* s.admin`SELECT 1 FROM pg_tables WHERE tablename = 'items'`).length, 1)
      assert.isTrue(Either.isLeft(TenantIsolation.quoteIdentifier("Robert'); DROP")))
      assert.deepStrictEqual(TenantIsolation.quoteIdentifier("tenant_ok"), Either.right("\"tenant_ok\""))
    }), { timeout: 30_000 })

  it.scopedLive("hybrid: premium → schema, standard → rls, metadata overrides the tier", () =>
    Effect.gen(function*() {
      const s = yield* setup("iso_hybrid")
      yield* protect(s.admin)
      const strategy = TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" })
      const isolation = yield* make(s.app, { strategy, admin: s.admin, migrations })
      const premium = tenant(randomId("p"), { tier: "premium" })
      const standard = tenant(randomId("s"), { tier: "standard" })
      const pinned = tenant(randomId("m"), { tier: "premium", metadata: { isolation: "rls" } })
      assert.strictEqual(isolation.strategyOf(premium), "schema")
      assert.strictEqual(isolation.strategyOf(standard), "rls")
      assert.strictEqual(isolation.strategyOf(pinned), "rls")
      assert.strictEqual(strategy(tenant("qq1", { metadata: { isolation: "database" } })), "database")
      assert.strictEqual(strategy(tenant("qq2", { metadata: { isolation: "nonsense" } })), "rls")
      assert.strictEqual(strategy(tenant("qq3", { tier: "toString" })), "rls")
      // A tenant resolving to database, with no database options: typed errors, not defects.
      const orphan = tenant(randomId("o"), { metadata: { isolation: "database" } })
      const scopedError = yield* isolation.scoped(readItems).pipe(
        Effect.provideService(CurrentTenant, orphan),
        Effect.flip
      )
      assert.strictEqual(scopedError._tag, "IsolationError")
      assert.strictEqual((scopedError as TenantIsolation.IsolationError).operation, "scope")
      assert.include(scopedError.message, "no database options")
      for (
        const operation of [Effect.asVoid(isolation.provision(orphan)), Effect.asVoid(isolation.deprovision(orphan))]
      ) {
        const error = yield* Effect.flip(operation)
        assert.strictEqual(error._tag, "IsolationError")
        assert.include(error.message, "no database options")
      }

      assert.strictEqual((yield* isolation.provision(premium)).strategy, "schema")
      assert.strictEqual((yield* isolation.provision(standard)).strategy, "rls")
      yield* isolation.scoped(
        Effect.flatMap(Sql.SqlClient, (sql) => sql`INSERT INTO items (id, label, body) VALUES (1, 'premium', 'p')`)
      ).pipe(Effect.provideService(CurrentTenant, premium))
      yield* isolation.scoped(
        Effect.flatMap(
          Sql.SqlClient,
          (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${standard.id}, 1, 'standard')`
        )
      ).pipe(Effect.provideService(CurrentTenant, standard))
      // The premium row is in its schema, the standard row in the shared table.
      const schemaRows = yield* s.admin.unsafe(`SELECT * FROM "tenant_${premium.id}".items`)
      assert.strictEqual(schemaRows.length, 1)
      const shared = yield* s.admin<{ readonly tenant_id: string }>`SELECT tenant_id FROM public.items`
      assert.deepStrictEqual(shared.map((r) => r.tenant_id), [standard.id])
      // The premium tenant does not see the shared table's rows (its setting filters them).
      const premiumShared = yield* isolation.scoped(
        Effect.flatMap(Sql.SqlClient, (sql) => sql`SELECT * FROM public.items`)
      ).pipe(Effect.provideService(CurrentTenant, premium))
      assert.strictEqual(premiumShared.length, 0)
    }), { timeout: 30_000 })

  it.scopedLive("nested withTransaction and nested scoped work inside a scope", () =>
    Effect.gen(function*() {
      const s = yield* setup("iso_nested")
      yield* protect(s.admin)
      const isolation = yield* make(s.app, { strategy: "rls", admin: s.admin })
      const a = tenant(randomId("n"))
      const insert = (id: number) =>
        Effect.flatMap(
          Sql.SqlClient,
          (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${a.id}, ${id}, 'n')`
        )
      const program = Effect.gen(function*() {
        const sql = yield* Sql.SqlClient
        yield* insert(1)
        // A failing nested transaction rolls back to its savepoint only.
        const failed = yield* sql.withTransaction(Effect.zipRight(insert(2), Effect.fail("boom" as const))).pipe(
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(failed))
        yield* sql.withTransaction(sql.withTransaction(insert(3)))
        // The setting survives the savepoints.
        const [setting] = yield* sql<{ readonly t: string }>`SELECT current_setting('app.tenant_id') AS t`
        assert.strictEqual(setting!.t, a.id)
        // A nested scoped for the same tenant joins this transaction (same backend).
        const outerPid = yield* sql<{ readonly pid: number }>`SELECT pg_backend_pid() AS pid`
        const innerPid = yield* isolation.scoped(
          Effect.flatMap(Sql.SqlClient, (inner) => inner<{ readonly pid: number }>`SELECT pg_backend_pid() AS pid`)
        )
        assert.strictEqual(innerPid[0]!.pid, outerPid[0]!.pid)
      })
      yield* isolation.scoped(program).pipe(Effect.provideService(CurrentTenant, a))
      const rows = yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, a))
      assert.deepStrictEqual(rows.map((r) => r.id), [1, 3])
      // A failure of the whole scope rolls everything back.
      const failed = yield* isolation.scoped(Effect.zipRight(insert(4), Effect.fail("late" as const))).pipe(
        Effect.provideService(CurrentTenant, a),
        Effect.flip
      )
      assert.strictEqual(failed, "late")
      assert.strictEqual((yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, a))).length, 2)
    }), { timeout: 30_000 })

  it.scopedLive(
    "a SQL error caught inside the scope makes scoped fail: COMMIT was a ROLLBACK",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_aborted", { appConnections: 1 })
        yield* protect(s.admin)
        const isolation = yield* make(s.app, { strategy: "rls", admin: s.admin })
        const a = tenant(randomId("x"))
        const insert = (id: number) =>
          Effect.flatMap(
            Sql.SqlClient,
            (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${a.id}, ${id}, 'x')`
          )
        const failed = yield* isolation.scoped(
          Effect.zipRight(
            insert(1),
            Effect.flatMap(Sql.SqlClient, (sql) => sql`SELECT 1/0`).pipe(Effect.ignore)
          )
        ).pipe(Effect.provideService(CurrentTenant, a), Effect.flip)
        assert.strictEqual(failed._tag, "SqlError")
        assert.include(failed.message, "aborted")
        assert.include(failed.message, "nothing was committed")
        assert.strictEqual((yield* s.admin`SELECT 1 FROM items`).length, 0)
        // The connection is clean for the next scope, and an error recovered inside a savepoint commits.
        yield* isolation.scoped(
          Effect.gen(function*() {
            const sql = yield* Sql.SqlClient
            yield* insert(2)
            yield* sql.withTransaction(sql`SELECT 1/0`).pipe(Effect.ignore)
          })
        ).pipe(Effect.provideService(CurrentTenant, a))
        assert.deepStrictEqual((yield* s.admin<{ readonly id: number }>`SELECT id FROM items`).map((r) => r.id), [2])
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "waiting for a pooled connection is interruptible, and a connection that arrives later is released",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_wait", { appConnections: 1 })
        yield* protect(s.admin)
        const isolation = yield* make(s.app, { strategy: "rls", admin: s.admin })
        const a = tenant(randomId("w"))
        const holding = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holder = yield* isolation.scoped(
          Effect.zipRight(Deferred.succeed(holding, undefined), Deferred.await(release))
        )
          .pipe(Effect.provideService(CurrentTenant, a), Effect.fork)
        yield* Deferred.await(holding)
        // The only connection is held: the wait ends with the timeout, not with the holder.
        const waited = yield* isolation.scoped(readItems).pipe(
          Effect.provideService(CurrentTenant, a),
          Effect.timeout("300 millis"),
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(waited))
        assert.isTrue(Cause.isTimeoutException(Cause.squash((waited as Exit.Failure<unknown, unknown>).cause)))
        // ... while the holder still holds it.
        assert.isTrue(Option.isNone(yield* Fiber.poll(holder)))
        yield* Deferred.succeed(release, undefined)
        assert.isTrue(Exit.isSuccess(yield* Fiber.await(holder)))
        // The connection handed to the abandoned wait went back to the pool: the pool of one still serves.
        const rows = yield* isolation.scoped(readItems).pipe(
          Effect.provideService(CurrentTenant, a),
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "no connection: it leaked" as const })
        )
        assert.strictEqual(rows.length, 0)
        const backends = yield* s.admin<{ readonly state: string }>`
        SELECT state FROM pg_stat_activity WHERE usename = ${s.role}`
        assert.deepStrictEqual(backends.map((b) => b.state), ["idle"])
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "an application role named with capitals, quotes and non-ASCII letters is quoted, not refused",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_role")
        yield* protect(s.admin)
        const odd = yield* appRole(s.url, "Äpp \"Role\" x", [], { rawPrefix: true })
        const quoted = `"${odd.role.replace(/"/g, "\"\"")}"`
        yield* s.admin.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON items TO ${quoted}`)
        const app = yield* client(odd.url, 2)
        assert.strictEqual((yield* app<{ readonly u: string }>`SELECT current_user AS u`)[0]!.u, odd.role)
        const isolation = yield* make(app, {
          strategy: TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" }),
          admin: s.admin,
          migrations
        })
        // Schema tenants: provision grants the role its schema.
        const premium = tenant(randomId("rp"), { tier: "premium" })
        yield* isolation.provision(premium)
        yield* insertItem(isolation, premium, 1)
        const labels = yield* isolation.scoped(readLabels).pipe(Effect.provideService(CurrentTenant, premium))
        assert.deepStrictEqual(labels.map((r) => r.label), [premium.id])
        // Rls tenants.
        const standard = tenant(randomId("rs"))
        yield* isolation.scoped(
          Effect.flatMap(
            Sql.SqlClient,
            (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${standard.id}, 1, 's')`
          )
        ).pipe(Effect.provideService(CurrentTenant, standard))
        const rows = yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, standard))
        assert.deepStrictEqual(rows.map((r) => r.body), ["s"])
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "layer and accessors: TenantIsolation.scoped / provision / deprovision through the context",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_layer")
        yield* protect(s.admin)
        const Isolation = TenantIsolation.layer({ strategy: "rls", admin: s.admin }).pipe(
          Layer.provide(Layer.succeed(Sql.SqlClient, s.app))
        )
        const a = tenant(randomId("l"))
        const rows = yield* Effect.gen(function*() {
          yield* TenantIsolation.provision(a)
          yield* TenantIsolation.scoped(
            Effect.flatMap(
              Sql.SqlClient,
              (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${a.id}, 1, 'l')`
            )
          ).pipe(Effect.provideService(CurrentTenant, a))
          const rows = yield* TenantIsolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, a))
          yield* TenantIsolation.deprovision(a)
          return rows
        }).pipe(Effect.provide(Isolation))
        assert.deepStrictEqual(
          rows.map((r) => r.body),
          ["l"]
        )
        // The layer refuses to build for a superuser application role.
        const refused = yield* Layer.build(
          TenantIsolation.layer({ strategy: "rls" }).pipe(Layer.provide(Layer.succeed(Sql.SqlClient, s.admin)))
        ).pipe(Effect.flip)
        assert.strictEqual(refused._tag, "IsolationUnsafe")
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "a fiber forked inside a scope cannot use the tenant's connection after the scope ends",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_escape", { appConnections: 1 })
        yield* protect(s.admin)
        const isolation = yield* make(s.app, { strategy: "rls", admin: s.admin })
        const a = tenant(randomId("e"))
        const b = tenant(randomId("f"))
        const go = yield* Deferred.make<void>()
        const escaped = yield* isolation.scoped(
          Effect.flatMap(Sql.SqlClient, (sql) =>
            Effect.forkDaemon(
              Effect.zipRight(
                Deferred.await(go),
                sql<{ readonly t: string | null }>`SELECT NULLIF(current_setting('app.tenant_id', true), '') AS t`
              )
            ))
        ).pipe(Effect.provideService(CurrentTenant, a))
        // The only pooled connection now serves b; the escaped fiber tries to use it.
        const seen = yield* isolation.scoped(
          Effect.gen(function*() {
            yield* Deferred.succeed(go, undefined)
            const exit = yield* Fiber.await(escaped)
            const sql = yield* Sql.SqlClient
            const [row] = yield* sql<{ readonly t: string }>`SELECT current_setting('app.tenant_id') AS t`
            return { exit, t: row!.t }
          })
        ).pipe(Effect.provideService(CurrentTenant, b))
        assert.isTrue(Exit.isFailure(seen.exit))
        assert.include(
          String(Cause.squash((seen.exit as Exit.Failure<unknown, unknown>).cause)),
          "transaction has ended"
        )
        assert.strictEqual(seen.t, b.id)

        // A scoped call from such a fiber opens a transaction of its own instead of joining the ended one.
        const later = yield* Deferred.make<void>()
        const rescoped = yield* isolation.scoped(
          Effect.forkDaemon(
            Effect.zipRight(
              Deferred.await(later),
              isolation.scoped(
                Effect.flatMap(Sql.SqlClient, (sql) =>
                  sql<{ readonly t: string }>`SELECT current_setting('app.tenant_id') AS t`)
              )
            )
          )
        ).pipe(Effect.provideService(CurrentTenant, a))
        yield* Deferred.succeed(later, undefined)
        const rows = yield* Fiber.join(rescoped)
        assert.strictEqual(rows[0]!.t, a.id)
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "a tenant's temporary tables are gone for the next tenant on the same connection (rls and schema)",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_temp", { appConnections: 1 })
        yield* protect(s.admin)
        const database = yield* s.admin<{ readonly db: string }>`SELECT current_database() AS db`
        yield* s.admin.unsafe(`GRANT TEMPORARY ON DATABASE "${database[0]!.db}" TO "${s.role}"`)
        const isolation = yield* make(s.app, {
          strategy: TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" }),
          admin: s.admin,
          migrations
        })
        // A temporary table shadowing `items` (pg_temp is searched first), holding a secret row.
        const plant = isolation.scoped(Effect.flatMap(Sql.SqlClient, (sql) =>
          Effect.zipRight(
            sql`CREATE TEMP TABLE items (tenant_id text, id int, label text, body text)`,
            sql`INSERT INTO items VALUES ('secret', 99, 'secret', 'secret')`
          )))
        for (const tier of ["standard", "premium"]) {
          const a = tenant(randomId("ta"), { tier })
          const b = tenant(randomId("tb"), { tier })
          yield* isolation.provision(b)
          if (tier === "premium") yield* insertItem(isolation, b, 1)
          else {
            yield* isolation.scoped(Effect.flatMap(
              Sql.SqlClient,
              (sql) => sql`INSERT INTO items (tenant_id, id, body) VALUES (${b.id}, 1, ${b.id})`
            )).pipe(Effect.provideService(CurrentTenant, b))
          }
          yield* plant.pipe(Effect.provideService(CurrentTenant, a))
          const seen = yield* isolation.scoped(readItems).pipe(Effect.provideService(CurrentTenant, b))
          assert.deepStrictEqual(seen.map((r) => r.id), [1], tier)
          assert.notInclude(JSON.stringify(seen), "secret", tier)
        }
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "a tenant's cursor declared WITH HOLD is closed before the next tenant's transaction",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_cursor", { appConnections: 1 })
        yield* protect(s.admin)
        const isolation = yield* make(s.app, { strategy: "rls", admin: s.admin })
        const a = tenant(randomId("ca"))
        const b = tenant(randomId("cb"))
        // A holds a cursor over its own rows past COMMIT, on the only pooled connection.
        yield* isolation.scoped(Effect.flatMap(Sql.SqlClient, (sql) =>
          Effect.zipRight(
            sql`INSERT INTO items (tenant_id, id, body) VALUES (${a.id}, 7, 'a-secret')`,
            sql`DECLARE leak CURSOR WITH HOLD FOR SELECT body FROM items`
          ))).pipe(Effect.provideService(CurrentTenant, a))
        const fetched = yield* isolation.scoped(
          Effect.flatMap(Sql.SqlClient, (sql) => sql<{ readonly body: string }>`FETCH ALL FROM leak`)
        ).pipe(Effect.provideService(CurrentTenant, b), Effect.either)
        assert.isTrue(Either.isLeft(fetched), `B fetched ${JSON.stringify(fetched)}`)
        if (Either.isLeft(fetched)) assert.include(String(fetched.left.cause ?? fetched.left), "leak")
      }),
    { timeout: 30_000 }
  )

  it.scopedLive(
    "database: provision creates and migrates a database, scoped reads and writes, deprovision drops it",
    () =>
      Effect.gen(function*() {
        const s = yield* setup("iso_db")
        const isolation = yield* make(s.app, {
          strategy: "database",
          admin: s.admin,
          migrations,
          database: {
            connection: { url: Redacted.make(s.appUrl) },
            adminConnection: { url: Redacted.make(s.url) },
            maxConnectionsPerTenant: 2,
            maxConnections: 10,
            idleTimeToLive: "2 seconds"
          }
        })
        const a = tenant(randomId("da"))
        const b = tenant(randomId("db"))
        yield* Effect.addFinalizer(() =>
          Effect.all([isolation.deprovision(a), isolation.deprovision(b)]).pipe(Effect.ignore)
        )
        const pa = yield* isolation.provision(a)
        assert.deepStrictEqual(pa, {
          strategy: "database",
          name: `tenant_${a.id}`,
          applied: [{ id: 1, name: "items" }]
        })
        yield* isolation.provision(b)
        const write = (t: typeof a, id: number) => insertItem(isolation, t, id)
        yield* write(a, 1)
        yield* write(b, 1)
        yield* write(b, 2)
        const where = (t: typeof a) =>
          isolation.scoped(
            Effect.flatMap(
              Sql.SqlClient,
              (sql) =>
                sql<{ readonly db: string; readonly user: string; readonly n: number }>`
            SELECT current_database() AS db, current_user AS user, (SELECT count(*)::int FROM items) AS n`
            )
          ).pipe(Effect.provideService(CurrentTenant, t))
        assert.deepStrictEqual({ ...(yield* where(a))[0] }, { db: `tenant_${a.id}`, user: s.role, n: 1 })
        assert.deepStrictEqual({ ...(yield* where(b))[0] }, { db: `tenant_${b.id}`, user: s.role, n: 2 })
        assert.deepStrictEqual(yield* isolation.deprovision(a), { strategy: "database", dropped: `tenant_${a.id}` })
        const dbs = yield* s.admin<
          { readonly n: string }
        >`SELECT datname AS n FROM pg_database WHERE datname = ${`tenant_${a.id}`}`
        assert.strictEqual(dbs.length, 0)
        assert.deepStrictEqual(yield* isolation.deprovision(a), { strategy: "database" })
        assert.isTrue(Exit.isFailure(yield* Effect.exit(where(a))))
        yield* isolation.deprovision(b)
      }),
    { timeout: 60_000 }
  )
})
