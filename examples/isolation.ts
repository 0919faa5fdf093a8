/**
 * Hybrid tenant isolation on PostgreSQL: the premium tenant gets a schema of
 * its own, the standard tenant shares a table protected by row-level
 * security. The same tenant-scoped program runs for both; its type says it
 * needs a tenant (`CurrentTenant`), and `withTenant` provides one.
 *
 * Two roles, as in production: an admin (owner) role runs DDL, a plain
 * application role (no SUPERUSER, no BYPASSRLS, owns nothing) runs tenant
 * work. To stay self-contained the example creates a scratch database and an
 * application role with the admin connection, and drops both at the end.
 *
 * Needs a Postgres where the connecting role may create databases and roles:
 * TENANCY_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test.
 * Run with `npx tsx examples/isolation.ts`.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { Config, Console, Context, Effect, Layer, Redacted } from "effect"
import type { Tenant } from "effect-tenancy/Tenant"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantIsolation from "effect-tenancy/TenantIsolation"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import { pathToFileURL } from "node:url"

const databaseUrl = Config.string("TENANCY_DATABASE_URL").pipe(
  Config.withDefault("postgres://postgres@127.0.0.1:5432/test")
)

const withPath = (
  url: string,
  options: { readonly database?: string; readonly user?: string; readonly password?: string }
) => {
  const u = new URL(url)
  if (options.database !== undefined) u.pathname = `/${options.database}`
  if (options.user !== undefined) u.username = options.user
  if (options.password !== undefined) u.password = options.password
  return u.toString()
}

const connect = (url: string) =>
  Effect.map(
    Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 })),
    (context) => Context.get(context, SqlClient)
  )

// A scratch database and an application role for the example, dropped at the end.
const scratch = Effect.gen(function*() {
  const url = yield* databaseUrl
  const suffix = `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`
  const database = `isolation_example_${suffix}`
  const role = `isolation_app_${suffix}`
  const password = Math.random().toString(36).slice(2)
  const server = yield* connect(url)
  yield* Effect.acquireRelease(
    Effect.zipRight(
      server.unsafe(`CREATE ROLE "${role}" LOGIN PASSWORD '${password}' NOSUPERUSER NOBYPASSRLS NOCREATEDB`),
      server.unsafe(`CREATE DATABASE "${database}"`)
    ),
    () =>
      Effect.zipRight(
        server.unsafe(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`),
        server.unsafe(`DROP ROLE IF EXISTS "${role}"`)
      ).pipe(Effect.orDie)
  )
  return {
    adminUrl: withPath(url, { database }),
    appUrl: withPath(url, { database, user: role, password })
  }
})

// Per-tenant migrations: schema tenants get their own `notes` table.
const migrations: ReadonlyArray<TenantIsolation.Migration> = [{
  id: 1,
  name: "notes",
  up: Effect.flatMap(SqlClient, (sql) => sql`CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)`)
}]

// Shared migrations (run once, by the owner): the shared `notes` table, protected by RLS.
const sharedMigrations = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE TABLE notes (
    tenant_id text NOT NULL DEFAULT NULLIF(current_setting('app.tenant_id', true), ''),
    id serial,
    body text NOT NULL,
    PRIMARY KEY (tenant_id, id)
  )`
  yield* TenantIsolation.enableRowLevelSecurity({ table: "notes" })
})

// The tenant-scoped program: plain SQL, no tenant filter in sight.
// Effect<ReadonlyArray<string>, SqlError, SqlClient | CurrentTenant>
const writeAndRead = Effect.gen(function*() {
  const sql = yield* SqlClient
  const tenant = yield* CurrentTenant
  yield* sql`INSERT INTO notes (body) VALUES (${`a note of ${tenant.name}`})`
  const rows = yield* sql<{ readonly body: string }>`SELECT body FROM notes ORDER BY id`
  return rows.map((row) => row.body)
})

/**
 * Runs the example; returns what each tenant saw.
 */
export const main = Effect.gen(function*() {
  const { adminUrl, appUrl } = yield* scratch
  const admin = yield* connect(adminUrl)
  yield* sharedMigrations.pipe(Effect.provideService(SqlClient, admin))
  yield* admin.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO PUBLIC`)
  yield* admin.unsafe(`GRANT USAGE ON SEQUENCE notes_id_seq TO PUBLIC`)
  const app = yield* connect(appUrl)

  // premium → schema, everyone else → rls (a tenant's metadata `isolation` may override).
  const isolation = yield* TenantIsolation.make({
    strategy: TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" }),
    admin,
    migrations
  }).pipe(Effect.provideService(SqlClient, app))

  const registry = yield* TenantRegistry.TenantRegistry
  const acme = yield* registry.register({ id: "acme", name: "Acme", tier: "premium" })
  const globex = yield* registry.register({ id: "globex", name: "Globex", tier: "standard" })

  const run = (tenant: Tenant) =>
    Effect.gen(function*() {
      const provisioned = yield* isolation.provision(tenant)
      yield* Console.log(
        `${tenant.id} (${tenant.tier}) → ${provisioned.strategy}` +
          (provisioned.name === undefined ? "" : ` in schema ${provisioned.name}`)
      )
      yield* withTenant(isolation.scoped(writeAndRead), tenant.id)
      const notes = yield* withTenant(isolation.scoped(writeAndRead), tenant.id)
      yield* Console.log(`  ${tenant.id} sees: ${JSON.stringify(notes)}`)
      return { strategy: provisioned.strategy, notes }
    })

  const acmeResult = yield* run(acme)
  const globexResult = yield* run(globex)

  // Outside any tenant the application role sees nothing and cannot write (fail closed).
  const [{ n: withoutTenant }] = yield* app<{ readonly n: number }>`SELECT count(*)::int AS n FROM notes`
  const refused = yield* Effect.isFailure(app`INSERT INTO notes (tenant_id, body) VALUES ('globex', 'sneaky')`)
  yield* Console.log(`without a tenant: ${withoutTenant} rows visible, insert refused: ${refused}`)

  // The admin sees where the rows live.
  const [{ n: inAcmeSchema }] = yield* admin<{ readonly n: number }>`SELECT count(*)::int AS n FROM tenant_acme.notes`
  const [{ n: inSharedTable }] = yield* admin<{ readonly n: number }>`SELECT count(*)::int AS n FROM public.notes`
  yield* Console.log(`rows: ${inAcmeSchema} in tenant_acme.notes, ${inSharedTable} in the shared public.notes`)

  yield* isolation.deprovision(acme)
  const gone = yield* isolation.deprovision(globex)
  yield* Console.log(`deprovisioned: schema tenant_acme dropped, ${gone.deleted?.notes ?? 0} globex rows deleted`)

  return {
    acme: acmeResult,
    globex: globexResult,
    withoutTenant,
    refused,
    inAcmeSchema,
    inSharedTable
  }
}).pipe(Effect.scoped, Effect.provide(TenantRegistry.layerMemory()))

/** Alias of `main`, for the tour. */
export const demo = main

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  Effect.runPromise(main).then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })
}
