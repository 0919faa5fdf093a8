/**
 * The cost of tenant isolation, side by side in one run, on the local
 * PostgreSQL, as a non-superuser application role (RLS is enforced):
 *
 * - a point query (`SELECT … WHERE id = $1`) and a realistic query (a join
 *   returning 50 rows), each:
 *   - `plain`: straight on a pool, no transaction, no setting;
 *   - `schema`, `rls`, `database`: through `TenantIsolation.scoped`
 *     (BEGIN + set_config in one round trip, the query, COMMIT);
 *   - `manual4`: BEGIN, set_config, the query and COMMIT as four round
 *     trips (what a naive implementation does), for reference;
 *   - `qualified`: the schema tenant's tables named with their schema, no
 *     transaction at all (schema isolation without a setting);
 * - migrating 500 schema tenants with `TenantMigrator` at concurrency 1
 *   and 8 (three migrations each, through `TenantIsolation`'s migration
 *   sessions).
 *
 * Sequential queries (latency); rounds alternate between the cases and
 * medians are reported, ratios as medians of per-round ratios. Prints a
 * table, then a last line of JSON.
 *
 * Run: npx tsx bench/isolation.ts
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { Context, DateTime, Effect, Layer, Redacted, type Scope } from "effect"
import { Tenant, unsafeMakeTenantId } from "effect-tenancy/Tenant"
import { CurrentTenant, SystemAccess } from "effect-tenancy/TenantContext"
import * as TenantIsolation from "effect-tenancy/TenantIsolation"
import * as TenantMigrator from "effect-tenancy/TenantMigrator"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"

const databaseUrl = process.env.TENANCY_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const opsPerRound = 200
const rounds = 5
const migrateTenants = 500
const rowsPerTenant = 500

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const timeLoop = <E, R>(body: (i: number) => Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    for (let i = 0; i < opsPerRound; i++) yield* body(i)
    return ((performance.now() - start) * 1000) / opsPerRound
  })

const withUrl = (database: string, user?: string) => {
  const url = new URL(databaseUrl)
  url.pathname = `/${database}`
  if (user !== undefined) {
    url.username = user
    url.password = ""
  }
  return url.toString()
}

const client = (url: string, maxConnections: number): Effect.Effect<SqlClient, unknown, Scope.Scope> =>
  Effect.map(
    Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections })),
    (context) => Context.get(context, SqlClient)
  )

const makeTenant = (id: string, tier: string) => {
  const now = DateTime.unsafeMake("2026-03-01T12:00:00Z")
  return new Tenant({
    id: unsafeMakeTenantId(id),
    identifier: unsafeMakeTenantId(id),
    name: id,
    status: "active",
    tier,
    metadata: {},
    createdAt: now,
    updatedAt: now,
    version: 0
  })
}

// The tables of every strategy; `tenant_id` is unused outside rls.
const tables: TenantMigrator.Migration = {
  id: 1,
  name: "customers_orders",
  up: Effect.flatMap(SqlClient, (sql) =>
    Effect.zipRight(
      sql`CREATE TABLE customers (tenant_id text NOT NULL, id int NOT NULL, name text NOT NULL,
        PRIMARY KEY (tenant_id, id))`,
      sql`CREATE TABLE orders (tenant_id text NOT NULL, id int NOT NULL, customer_id int NOT NULL,
        total numeric NOT NULL, note text NOT NULL, PRIMARY KEY (tenant_id, id))`
    ).pipe(Effect.zipRight(sql`CREATE INDEX orders_customer ON orders (tenant_id, customer_id)`)))
}

const seed = (sql: SqlClient, tenantId: string) =>
  Effect.zipRight(
    sql`INSERT INTO customers SELECT ${tenantId}, g, 'customer ' || g FROM generate_series(1, ${rowsPerTenant / 50}) g`,
    sql`INSERT INTO orders SELECT ${tenantId}, g, 1 + (g - 1) % ${rowsPerTenant / 50}, g * 1.5, repeat('x', 40)
      FROM generate_series(1, ${rowsPerTenant}) g`
  )

const point = (id: number) =>
  Effect.flatMap(SqlClient, (sql) => sql`SELECT id, customer_id, total, note FROM orders WHERE id = ${id}`)
const join = (customer: number) =>
  Effect.flatMap(SqlClient, (sql) =>
    sql`SELECT o.id, o.total, o.note, c.name FROM orders o JOIN customers c
      ON c.tenant_id = o.tenant_id AND c.id = o.customer_id WHERE o.customer_id = ${customer} ORDER BY o.id`)
const pointQualified = (schema: string, id: number) =>
  Effect.flatMap(
    SqlClient,
    (sql) => sql`SELECT id, customer_id, total, note FROM ${sql(schema)}.orders WHERE id = ${id}`
  )
const joinQualified = (schema: string, customer: number) =>
  Effect.flatMap(
    SqlClient,
    (sql) =>
      sql`SELECT o.id, o.total, o.note, c.name FROM ${sql(schema)}.orders o JOIN ${sql(schema)}.customers c
      ON c.tenant_id = o.tenant_id AND c.id = o.customer_id WHERE o.customer_id = ${customer} ORDER BY o.id`
  )

const program = Effect.gen(function*() {
  // A fresh database, an admin (superuser) client and a non-superuser application role.
  const root = yield* client(databaseUrl, 1)
  const suffix = Date.now().toString(36)
  const dbName = `tenancy_bench_iso_${suffix}`
  const role = `tenancy_bench_app_${suffix}`
  yield* Effect.acquireRelease(
    Effect.zipRight(
      root.unsafe(`CREATE DATABASE "${dbName}"`),
      root.unsafe(`CREATE ROLE "${role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE`)
    ),
    () =>
      Effect.gen(function*() {
        yield* root.unsafe(`DROP DATABASE IF EXISTS "tenant_bench_db" WITH (FORCE)`)
        yield* root.unsafe(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`)
        yield* root.unsafe(`DROP ROLE IF EXISTS "${role}"`)
      }).pipe(Effect.orDie)
  )
  const admin = yield* client(withUrl(dbName), 10)
  const app = yield* client(withUrl(dbName, role), 4)

  // Shared rls tables, protected, with ten tenants' rows.
  yield* Effect.provideService(tables.up, SqlClient, admin)
  yield* admin.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders TO "${role}"`)
  for (const table of ["customers", "orders"]) {
    yield* TenantIsolation.enableRowLevelSecurity({ table }).pipe(Effect.provideService(SqlClient, admin))
  }
  for (let i = 0; i < 10; i++) yield* seed(admin, i === 0 ? "bench-rls" : `other-${i}`)

  const isolation = yield* TenantIsolation.make({
    strategy: TenantIsolation.hybrid({ tiers: { premium: "schema", enterprise: "database" }, fallback: "rls" }),
    admin,
    migrations: [tables],
    database: {
      connection: { url: Redacted.make(withUrl(dbName, role)) },
      adminConnection: { url: Redacted.make(withUrl(dbName)) },
      maxConnectionsPerTenant: 4,
      maxConnections: 8
    }
  }).pipe(Effect.provideService(SqlClient, app))

  const schemaTenant = makeTenant("bench-schema", "premium")
  const rlsTenant = makeTenant("bench-rls", "standard")
  const dbTenant = makeTenant("bench-db", "enterprise")
  for (const t of [schemaTenant, rlsTenant, dbTenant]) yield* isolation.provision(t)
  yield* isolation.withTenantMigrationSession(
    schemaTenant,
    Effect.flatMap(SqlClient, (sql) => seed(sql, "bench-schema"))
  )
  yield* isolation.withTenantMigrationSession(dbTenant, Effect.flatMap(SqlClient, (sql) => seed(sql, "bench-db")))
  yield* isolation.withTenantMigrationSession(
    schemaTenant,
    Effect.flatMap(SqlClient, (sql) => sql`ANALYZE customers; ANALYZE orders`.pipe(Effect.asVoid))
  )
  yield* admin`ANALYZE`
  yield* isolation.withTenantMigrationSession(dbTenant, Effect.flatMap(SqlClient, (sql) => sql`ANALYZE`))

  // The plain baseline runs the same SQL on the same kind of tables: the
  // database tenant's, straight on a pool of the application role.
  const plain = yield* client(withUrl("tenant_bench_db", role), 4)

  const scopedAs = (tenant: Tenant) => <A, E>(effect: Effect.Effect<A, E, SqlClient>) =>
    isolation.scoped(effect).pipe(Effect.provideService(CurrentTenant, tenant))
  const manual4 = <A, E>(effect: Effect.Effect<A, E, SqlClient>) =>
    app.withTransaction(
      Effect.zipRight(app`SELECT set_config('app.tenant_id', 'bench-rls', true)`, effect)
    ).pipe(Effect.provideService(SqlClient, app))

  const check = (rows: ReadonlyArray<unknown>, n: number, label: string) =>
    rows.length === n ? Effect.void : Effect.dieMessage(`${label}: ${rows.length} rows, expected ${n}`)

  type Case = { readonly name: string; readonly run: (i: number) => Effect.Effect<unknown, unknown> }
  const id = (i: number) => 1 + (i * 37) % rowsPerTenant
  const customer = (i: number) => 1 + i % (rowsPerTenant / 50)
  const pointCases: ReadonlyArray<Case> = [
    { name: "plain", run: (i) => Effect.provideService(point(id(i)), SqlClient, plain) },
    { name: "schema", run: (i) => scopedAs(schemaTenant)(point(id(i))) },
    { name: "rls", run: (i) => scopedAs(rlsTenant)(point(id(i))) },
    { name: "database", run: (i) => scopedAs(dbTenant)(point(id(i))) },
    { name: "manual4", run: (i) => manual4(point(id(i))) },
    {
      name: "qualified",
      run: (i) => Effect.provideService(pointQualified("tenant_bench_schema", id(i)), SqlClient, app)
    }
  ]
  const joinCases: ReadonlyArray<Case> = [
    { name: "plain", run: (i) => Effect.provideService(join(customer(i)), SqlClient, plain) },
    { name: "schema", run: (i) => scopedAs(schemaTenant)(join(customer(i))) },
    { name: "rls", run: (i) => scopedAs(rlsTenant)(join(customer(i))) },
    { name: "database", run: (i) => scopedAs(dbTenant)(join(customer(i))) },
    { name: "manual4", run: (i) => manual4(join(customer(i))) },
    {
      name: "qualified",
      run: (i) => Effect.provideService(joinQualified("tenant_bench_schema", customer(i)), SqlClient, app)
    }
  ]
  // Every case sees its own tenant's rows only, and the expected count.
  for (const c of pointCases) yield* Effect.flatMap(c.run(0), (rows) => check(rows as Array<unknown>, 1, c.name))
  for (const c of joinCases) yield* Effect.flatMap(c.run(0), (rows) => check(rows as Array<unknown>, 50, c.name))

  const measure = (cases: ReadonlyArray<Case>) =>
    Effect.gen(function*() {
      for (const c of cases) yield* timeLoop(c.run) // warm up
      const samples = new Map(cases.map((c) => [c.name, [] as Array<number>]))
      const ratios = new Map(cases.map((c) => [c.name, [] as Array<number>]))
      for (let r = 0; r < rounds; r++) {
        const round = new Map<string, number>()
        for (const c of cases) round.set(c.name, yield* timeLoop(c.run))
        for (const c of cases) {
          samples.get(c.name)!.push(round.get(c.name)!)
          ratios.get(c.name)!.push(round.get(c.name)! / round.get("plain")!)
        }
      }
      return cases.map((c) => ({
        name: c.name,
        us: median(samples.get(c.name)!),
        ratio: median(ratios.get(c.name)!)
      }))
    })

  const pointResults = yield* measure(pointCases)
  const joinResults = yield* measure(joinCases)
  console.log("query            point µs  ratio   join(50 rows) µs  ratio")
  for (let i = 0; i < pointResults.length; i++) {
    const p = pointResults[i]
    const j = joinResults[i]
    console.log(
      `${p.name.padEnd(16)} ${p.us.toFixed(0).padStart(8)}  ${p.ratio.toFixed(2).padStart(5)}x  ${
        j.us.toFixed(0).padStart(16)
      }  ${j.ratio.toFixed(2).padStart(5)}x`
    )
  }

  // Migrations: 500 schema tenants, three migrations each, at concurrency 1 and 8.
  const migrations: ReadonlyArray<TenantMigrator.Migration> = [
    tables,
    {
      id: 2,
      name: "orders_status",
      up: Effect.flatMap(SqlClient, (sql) => sql`ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'open'`)
    },
    {
      id: 3,
      name: "orders_status_index",
      up: Effect.flatMap(SqlClient, (sql) => sql`CREATE INDEX orders_status ON orders (tenant_id, status)`)
    }
  ]
  const migrateRun = (prefix: string, concurrency: number) =>
    Effect.gen(function*() {
      const reg = Context.get(yield* Layer.build(TenantRegistry.layerMemory()), TenantRegistry.TenantRegistry)
      const ids: Array<string> = []
      for (let i = 0; i < migrateTenants; i++) {
        const id = `${prefix}-${String(i).padStart(3, "0")}`
        ids.push(id)
        yield* reg.register({ id, name: id, tier: "premium" })
      }
      yield* admin.unsafe(ids.map((id) => `CREATE SCHEMA "tenant_${id.replace(/-/g, "_")}";`).join("\n"))
      const start = performance.now()
      const report = yield* TenantMigrator.run({ tenant: migrations, concurrency }).pipe(
        Effect.provideService(TenantIsolation.TenantIsolation, isolation),
        Effect.provideService(SqlClient, admin),
        Effect.provideService(TenantRegistry.TenantRegistry, reg),
        Effect.provideService(SystemAccess, { reason: "bench" })
      )
      const seconds = (performance.now() - start) / 1000
      if (report.counts.applied !== migrateTenants) {
        return yield* Effect.dieMessage(`migrated ${report.counts.applied} of ${migrateTenants}`)
      }
      return seconds
    })
  const migrateSeqS = yield* migrateRun("seq", 1)
  const migrateConc8S = yield* migrateRun("conc", 8)
  console.log(
    `migrate ${migrateTenants} schema tenants (3 migrations each): concurrency 1 ${migrateSeqS.toFixed(2)} s, ` +
      `concurrency 8 ${migrateConc8S.toFixed(2)} s, speed-up ${(migrateSeqS / migrateConc8S).toFixed(2)}x`
  )

  const at = (results: typeof pointResults, name: string) => results.find((r) => r.name === name)!
  const round1 = (x: number) => Math.round(x * 10) / 10
  const round2 = (x: number) => Math.round(x * 100) / 100
  console.log(JSON.stringify({
    plainUs: round1(at(pointResults, "plain").us),
    schemaUs: round1(at(pointResults, "schema").us),
    rlsUs: round1(at(pointResults, "rls").us),
    databaseUs: round1(at(pointResults, "database").us),
    manual4Us: round1(at(pointResults, "manual4").us),
    qualifiedUs: round1(at(pointResults, "qualified").us),
    schemaRatio: round2(at(pointResults, "schema").ratio),
    rlsRatio: round2(at(pointResults, "rls").ratio),
    databaseRatio: round2(at(pointResults, "database").ratio),
    joinPlainUs: round1(at(joinResults, "plain").us),
    joinSchemaUs: round1(at(joinResults, "schema").us),
    joinRlsUs: round1(at(joinResults, "rls").us),
    joinDatabaseUs: round1(at(joinResults, "database").us),
    joinSchemaRatio: round2(at(joinResults, "schema").ratio),
    joinRlsRatio: round2(at(joinResults, "rls").ratio),
    joinDatabaseRatio: round2(at(joinResults, "database").ratio),
    migrateTenants,
    migrateSeqS: round2(migrateSeqS),
    migrateConc8S: round2(migrateConc8S),
    migrateSpeedup: round2(migrateSeqS / migrateConc8S)
  }))
})

Effect.runPromise(Effect.scoped(program)).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
