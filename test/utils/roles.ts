/**
 * Application roles for isolation tests: a uniquely named LOGIN role that is
 * NOT a superuser, does NOT bypass row-level security and owns nothing, so
 * tests see what a real application connection sees. DDL stays with the
 * admin (superuser / owner) connection.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { Context, DateTime, Effect, Layer, Redacted, type Scope } from "effect"
import { Tenant, unsafeMakeTenantId } from "effect-tenancy/Tenant"
import { freshDatabaseUrl } from "./services.js"

/** Extra role attributes a test may ask for (to exercise the safety checks). */
export type RoleAttribute = "BYPASSRLS" | "SUPERUSER" | "CREATEDB"

const defaults: Record<RoleAttribute, string> = {
  BYPASSRLS: "NOBYPASSRLS",
  SUPERUSER: "NOSUPERUSER",
  CREATEDB: "NOCREATEDB"
}

const withUser = (url: string, user: string) => {
  const u = new URL(url)
  u.username = user
  u.password = ""
  return u.toString()
}

/**
 * Creates a uniquely named LOGIN role (NOSUPERUSER NOBYPASSRLS NOCREATEDB
 * NOCREATEROLE unless `attributes` says otherwise) and returns a connection
 * URL for it on the same database as `adminUrl` (trust auth, no password).
 * When the scope closes: terminates the role's connections, then
 * `DROP OWNED BY` (in the admin URL's database) and `DROP ROLE`.
 *
 * Grants are the test's business (e.g. `GRANT USAGE ON SCHEMA ... TO role`).
 */
export const appRole = (
  adminUrl: string,
  prefix: string,
  attributes: ReadonlyArray<RoleAttribute> = [],
  options: { readonly rawPrefix?: boolean } = {}
): Effect.Effect<{ readonly role: string; readonly url: string }, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    // `rawPrefix`: keep the prefix as given (quotes, capitals, spaces) to test quoting of role names.
    const safePrefix = options.rawPrefix === true
      ? prefix
      : prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_").slice(0, 30)
    const role = `${safePrefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
    const quoted = `"${role.replace(/"/g, "\"\"")}"`
    const sql = yield* client(adminUrl, 1)
    const flags = (Object.keys(defaults) as Array<RoleAttribute>)
      .map((a) => attributes.includes(a) ? a : defaults[a])
      .join(" ")
    yield* Effect.acquireRelease(
      sql.unsafe(`CREATE ROLE ${quoted} LOGIN NOCREATEROLE ${flags}`),
      () =>
        Effect.gen(function*() {
          yield* sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ${role}`
          yield* sql.unsafe(`DROP OWNED BY ${quoted}`)
          yield* sql.unsafe(`DROP ROLE IF EXISTS ${quoted}`)
        }).pipe(Effect.orDie)
    )
    return { role, url: withUser(adminUrl, role) }
  })

// ---------------------------------------------------------------------------
// Shared setup of the TenantIsolation tests
// ---------------------------------------------------------------------------

/** A `SqlClient` on `url` for the scope. */
export const client = (url: string, maxConnections = 4): Effect.Effect<SqlClient, unknown, Scope.Scope> =>
  Effect.map(
    Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections })),
    (context) => Context.get(context, SqlClient)
  )

export interface Setup {
  readonly url: string
  readonly appUrl: string
  readonly role: string
  readonly admin: SqlClient
  readonly app: SqlClient
}

/** A fresh database with the shared RLS table `items` (protected by the caller) and an application role. */
export const setup = (
  prefix: string,
  options: { readonly appConnections?: number; readonly attributes?: ReadonlyArray<RoleAttribute> } = {}
): Effect.Effect<Setup, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const url = yield* freshDatabaseUrl(prefix)
    const admin = yield* client(url, 4)
    const { role, url: appUrl } = yield* appRole(url, `${prefix}_app`, options.attributes ?? [])
    yield* admin.unsafe(`CREATE TABLE items (
      tenant_id text NOT NULL,
      id int NOT NULL,
      body text NOT NULL,
      PRIMARY KEY (tenant_id, id)
    )`)
    yield* admin.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON items TO "${role}"`)
    const app = yield* client(appUrl, options.appConnections ?? 4)
    return { url, appUrl, role, admin, app }
  })

export const randomId = (prefix: string) => `${prefix}${Math.random().toString(36).slice(2, 8)}`

export const tenant = (
  id: string,
  options: { readonly tier?: string; readonly metadata?: Tenant["metadata"] } = {}
) => {
  const now = DateTime.unsafeMake("2026-03-01T12:00:00Z")
  return new Tenant({
    id: unsafeMakeTenantId(id),
    identifier: unsafeMakeTenantId(id),
    name: `Tenant ${id}`,
    status: "active",
    tier: options.tier ?? "standard",
    metadata: options.metadata ?? {},
    createdAt: now,
    updatedAt: now,
    version: 0
  }, true) // unvalidated: tests use hostile ids on purpose
}
