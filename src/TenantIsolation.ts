/**
 * Tenant data isolation on PostgreSQL, through `@effect/sql` (with
 * `@effect/sql-pg`'s `PgClient`). Four strategies:
 *
 * - `schema`: one schema per tenant (`tenant_<id>`), created, granted and
 *   migrated by `provision`, dropped by `deprovision` (only schemas this
 *   library created: each carries a comment marker);
 * - `rls`: shared tables with a tenant column, protected by row-level
 *   security policies on `NULLIF(current_setting('app.tenant_id', true), '')`
 *   (see `enableRowLevelSecurity`); a safety check at start refuses an
 *   application role that would bypass them;
 * - `database`: one database per tenant, with per-tenant pools under a global
 *   connection budget;
 * - hybrid: `strategy` is a function of the tenant record (`hybrid({ tiers })`).
 *
 * Every tenant-scoped statement runs in a transaction whose first statement
 * positions it with `set_config(..., true)` (transaction-local), sent together
 * with `BEGIN` in one round trip. Nothing tenant-specific survives on a pooled
 * connection after commit or rollback, whatever the error or interruption;
 * temporary tables and held cursors, which do, are dropped by `DISCARD TEMP`
 * and `CLOSE ALL` in that same round trip before the next tenant's
 * statements.
 *
 * ```ts
 * const program = Effect.gen(function*() {
 *   const sql = yield* SqlClient.SqlClient
 *   return yield* sql`SELECT * FROM items`
 * })
 * // Effect<Rows, SqlError | ScopeError, CurrentTenant | TenantIsolation>
 * const scoped = TenantIsolation.scoped(program)
 * ```
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { CurrentTenant } from "./internal/tenantContext.js"
import { pattern as tenantIdPattern } from "./internal/tenantId.js"
import {
  applyPending,
  type ApplyResult,
  defaultTableName,
  lockTimeoutSetting,
  type Migration as Migration_,
  MigrationFailed as MigrationFailed_,
  tenantLockKey,
  tenantTable
} from "./internal/tenantMigrations.js"
import * as Pools from "./internal/tenantPools.js"
import type { Tenant, TenantId } from "./Tenant.js"

/**
 * How a tenant's data is isolated.
 *
 * @since 0.1.0
 * @category models
 */
export type Strategy = "schema" | "rls" | "database"

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * A name that would reach SQL (a schema, a database, a table, a setting, a
 * tenant id) does not match `^[a-z_][a-z0-9_]{0,62}$` (tenant ids: the
 * `TenantId` syntax; roles, which are always quoted: empty, longer than 63
 * bytes or containing NUL). Nothing was run.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnsafeIdentifier extends Schema.TaggedError<UnsafeIdentifier>("effect-tenancy/UnsafeIdentifier")(
  "UnsafeIdentifier",
  {
    kind: Schema.Literal("tenant-id", "schema", "database", "table", "column", "setting", "role"),
    name: Schema.String
  }
) {
  /** @since 0.1.0 */
  override get message(): string {
    return `Unsafe ${this.kind} name ${JSON.stringify(this.name.slice(0, 80))}`
  }
}

/**
 * The boot-time safety check refused to run: the application role would see
 * (or could see) rows of every tenant.
 *
 * - `superuser`: the application role is a superuser (bypasses RLS);
 * - `bypassrls`: the application role has `BYPASSRLS`;
 * - `owner-without-force`: the application role owns (or is a member of the
 *   owner of) a protected table that does not `FORCE ROW LEVEL SECURITY`;
 * - `not-forced`: a protected table does not `FORCE ROW LEVEL SECURITY`;
 * - `rls-disabled`: a protected table does not enable row-level security;
 * - `policy-without-tenant`: a permissive policy that applies to the
 *   application role does not mention the tenant setting (permissive
 *   policies are OR-ed, so it would widen what the tenant's policy allows).
 *
 * @since 0.1.0
 * @category errors
 */
export class IsolationUnsafe extends Schema.TaggedError<IsolationUnsafe>("effect-tenancy/IsolationUnsafe")(
  "IsolationUnsafe",
  {
    problem: Schema.Literal(
      "superuser",
      "bypassrls",
      "owner-without-force",
      "not-forced",
      "rls-disabled",
      "policy-without-tenant"
    ),
    policy: Schema.optional(Schema.String),
    role: Schema.String,
    table: Schema.optional(Schema.String)
  }
) {
  /** @since 0.1.0 */
  override get message(): string {
    const role = JSON.stringify(this.role)
    const table = JSON.stringify(this.table ?? "")
    switch (this.problem) {
      case "superuser":
        return `Refusing to run: application role ${role} is a superuser (row-level security does not apply)`
      case "bypassrls":
        return `Refusing to run: application role ${role} has BYPASSRLS`
      case "owner-without-force":
        return `Refusing to run: application role ${role} owns table ${table}, which does not FORCE ROW LEVEL SECURITY`
      case "not-forced":
        return `Refusing to run: table ${table} does not FORCE ROW LEVEL SECURITY`
      case "rls-disabled":
        return `Refusing to run: table ${table} does not enable ROW LEVEL SECURITY`
      case "policy-without-tenant":
        return `Refusing to run: policy ${JSON.stringify(this.policy ?? "")} on table ${table} applies to ${role} ` +
          `and does not filter on the tenant setting (permissive policies are OR-ed: it would open every tenant's rows)`
    }
  }
}

/**
 * Provisioning, deprovisioning, protecting a table or the safety check
 * failed, or a tenant's scope could not be entered (`scope`: a tenant whose
 * strategy is `database` while the service has no `database` options).
 * `operation` says which; `detail` says why when it is not a database error
 * (e.g. a schema that exists but was not created by this library).
 *
 * @since 0.1.0
 * @category errors
 */
export class IsolationError extends Schema.TaggedError<IsolationError>("effect-tenancy/IsolationError")(
  "IsolationError",
  {
    operation: Schema.Literal("provision", "deprovision", "enable-rls", "check", "scope"),
    tenantId: Schema.optional(Schema.String),
    detail: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  /** @since 0.1.0 */
  override get message(): string {
    const tenant = this.tenantId === undefined ? "" : ` for tenant ${JSON.stringify(this.tenantId)}`
    const detail = this.detail ?? causeMessage(this.cause)
    return `Isolation ${this.operation} failed${tenant}${detail === undefined ? "" : `: ${detail}`}`
  }
}

/**
 * The per-tenant database pools are at their connection budget
 * (`whenExhausted: "fail"`, or the wait ran out).
 *
 * @since 0.1.0
 * @category errors
 */
export const TenantPoolExhausted: typeof Pools.TenantPoolExhausted = Pools.TenantPoolExhausted

/**
 * @since 0.1.0
 * @category errors
 */
export type TenantPoolExhausted = Pools.TenantPoolExhausted

/**
 * A per-tenant migration (the same shape as `TenantMigrator`'s): a positive
 * integer id, strictly increasing in a list, a name, and its effect.
 *
 * @since 0.1.0
 * @category models
 */
export type Migration = Migration_

/**
 * A per-tenant migration failed during `provision` (the tenant's transaction
 * rolled back). The same error as `TenantMigrator`'s.
 *
 * @since 0.1.0
 * @category errors
 */
export const MigrationFailed: typeof MigrationFailed_ = MigrationFailed_

/**
 * @since 0.1.0
 * @category errors
 */
export type MigrationFailed = MigrationFailed_

/**
 * What entering a tenant's scope can fail with, besides the scoped effect's
 * own errors: the `BEGIN` / `COMMIT` round trips, an unsafe name, the
 * database strategy's budget, a database tenant without `database` options.
 *
 * @since 0.1.0
 * @category errors
 */
export type ScopeError = SqlError | UnsafeIdentifier | TenantPoolExhausted | IsolationError

const causeMessage = (cause: unknown): string | undefined => {
  const inner = Predicate.hasProperty(cause, "cause") && Predicate.hasProperty(cause.cause, "message")
    ? cause.cause
    : cause
  return Predicate.hasProperty(inner, "message") && typeof inner.message === "string" ? inner.message : undefined
}

// ---------------------------------------------------------------------------
// identifiers
// ---------------------------------------------------------------------------

/**
 * The syntax every identifier must have before it reaches SQL.
 *
 * @since 0.1.0
 * @category models
 */
export const safeIdentifier: RegExp = /^[a-z_][a-z0-9_]{0,62}$/

const settingPattern = /^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/

/**
 * Checks `name` against `safeIdentifier` and returns it double-quoted.
 *
 * @since 0.1.0
 * @category constructors
 */
export const quoteIdentifier = (
  name: string,
  kind: UnsafeIdentifier["kind"] = "table"
): Either.Either<string, UnsafeIdentifier> =>
  safeIdentifier.test(name) ? Either.right(`"${name}"`) : Either.left(new UnsafeIdentifier({ kind, name }))

/**
 * The default schema (and database) name of a tenant: `tenant_<id>` with
 * `-` mapped to `_`. One-to-one, since a tenant id holds no `_`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultTenantName = (tenantId: string): string => `tenant_${tenantId.replace(/-/g, "_")}`

const literal = (value: string) => `'${value.replace(/'/g, "''")}'`

const checkTenantId = (id: string): Either.Either<string, UnsafeIdentifier> =>
  tenantIdPattern.test(id) ? Either.right(id) : Either.left(new UnsafeIdentifier({ kind: "tenant-id", name: id }))

const checkName = (name: string, kind: UnsafeIdentifier["kind"]): Either.Either<string, UnsafeIdentifier> =>
  safeIdentifier.test(name) ? Either.right(name) : Either.left(new UnsafeIdentifier({ kind, name }))

const checkSetting = (name: string): Either.Either<string, UnsafeIdentifier> =>
  settingPattern.test(name) && name.length <= 63
    ? Either.right(name)
    : Either.left(new UnsafeIdentifier({ kind: "setting", name }))

// A role name is only ever quoted (never matched against `safeIdentifier`):
// PostgreSQL accepts any name of at most 63 bytes without NUL.
const quoteRole = (name: string): Either.Either<string, UnsafeIdentifier> =>
  name.length > 0 && !name.includes("\u0000") && new TextEncoder().encode(name).length <= 63
    ? Either.right(`"${name.replace(/"/g, "\"\"")}"`)
    : Either.left(new UnsafeIdentifier({ kind: "role", name }))

/** The comment marking a schema or database as created by this library for a tenant. */
const marker = (tenantId: string) => `effect-tenancy:tenant:${tenantId}`

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 */
export declare namespace Options {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Schema {
    /**
     * The schema of a tenant (default `defaultTenantName`); checked against
     * `safeIdentifier`. It must be one-to-one: two tenants given one name
     * share one schema (the marker only guards creating and dropping it).
     */
    readonly name?: ((tenantId: string) => string) | undefined
    /**
     * Schemas searched after the tenant's (default none: an unqualified name
     * is the tenant's table or nothing). Add `"public"` for shared functions.
     */
    readonly searchPath?: ReadonlyArray<string> | undefined
  }

  /**
   * @since 0.1.0
   * @category models
   */
  export interface Rls {
    /** The schema of the shared tables (default `"public"`). */
    readonly schema?: string | undefined
    /** The tenant column (default `"tenant_id"`). */
    readonly column?: string | undefined
    /**
     * The protected tables checked at start (default: every table of `schema`
     * that has the tenant column).
     */
    readonly tables?: ReadonlyArray<string> | undefined
    /** Run the safety check when the service is built (default `true`). */
    readonly checkOnStart?: boolean | undefined
  }

  /**
   * @since 0.1.0
   * @category models
   */
  export interface Database {
    /**
     * How tenant pools connect: the application role (no SUPERUSER, no
     * CREATEDB). The database part is always the tenant's.
     */
    readonly connection: Pools.Options["connection"]
    /**
     * How migration sessions connect to a tenant database: a role that may
     * run DDL there (default: `connection`). Databases themselves are
     * created and dropped by `Options.admin`, connected to any database.
     */
    readonly adminConnection?: Pools.Options["connection"] | undefined
    /**
     * The database of a tenant (default `defaultTenantName`); checked against
     * `safeIdentifier`. It must be one-to-one: two tenants given one name
     * share one database (the marker only guards creating and dropping it).
     */
    readonly name?: ((tenantId: string) => string) | undefined
    /** Owner of created databases (default: the admin role). */
    readonly databaseOwner?: string | undefined
    /** Template of created databases (default: the server's). */
    readonly databaseTemplate?: string | undefined
    /** Connections per tenant pool (default 4). */
    readonly maxConnectionsPerTenant?: number | undefined
    /** Connections across all tenant pools (default 50). */
    readonly maxConnections?: number | undefined
    /** How long an unused tenant pool is kept (default 1 minute). */
    readonly idleTimeToLive?: Duration.DurationInput | undefined
    /** At the budget: fail with `TenantPoolExhausted`, or wait up to a duration (default wait 5 seconds). */
    readonly whenExhausted?: Pools.WhenExhausted | undefined
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * One strategy for every tenant, or a function of the tenant record
   * (hybrid; see `hybrid`).
   */
  readonly strategy: Strategy | ((tenant: Tenant) => Strategy)
  /**
   * The client that runs DDL (creating and dropping schemas, migrations):
   * the owner of the tables or a superuser. Default: the application
   * client. Tenant-scoped work always uses the application client.
   */
  readonly admin?: SqlClient.SqlClient | undefined
  /** Per-tenant migrations, applied by `provision` to schema and database tenants. */
  readonly migrations?: ReadonlyArray<Migration_> | undefined
  /** The per-tenant bookkeeping table of migrations (default `tenancy_migrations`). */
  readonly migrationsTable?: string | undefined
  /**
   * `lock_timeout` of provisioning and deprovisioning (the tenant's advisory
   * lock, DDL, migrations; default 10 seconds).
   */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /** The setting that carries the tenant id (default `app.tenant_id`). */
  readonly setting?: string | undefined
  readonly schema?: Options.Schema | undefined
  readonly rls?: Options.Rls | undefined
  readonly database?: Options.Database | undefined
}

/**
 * A hybrid strategy, chosen from the tenant record: the `metadataKey` entry
 * of its metadata (default `"isolation"`) when it names a strategy, else its
 * tier looked up in `tiers`, else `fallback`.
 *
 * ```ts
 * strategy: TenantIsolation.hybrid({ tiers: { premium: "schema", enterprise: "database" }, fallback: "rls" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const hybrid = (options: {
  readonly tiers?: Readonly<Record<string, Strategy>> | undefined
  readonly metadataKey?: string | undefined
  readonly fallback: Strategy
}): (tenant: Tenant) => Strategy => {
  const key = options.metadataKey ?? "isolation"
  const tiers = options.tiers ?? {}
  return (tenant) => {
    const fromMetadata = tenant.metadata[key]
    if (fromMetadata === "schema" || fromMetadata === "rls" || fromMetadata === "database") return fromMetadata
    return Object.prototype.hasOwnProperty.call(tiers, tenant.tier) ? tiers[tenant.tier]! : options.fallback
  }
}

// ---------------------------------------------------------------------------
// the service
// ---------------------------------------------------------------------------

/**
 * What `provision` did.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProvisionResult {
  readonly strategy: Strategy
  /** The schema or database created (or found) for the tenant. */
  readonly name?: string | undefined
  /** Migrations applied now. */
  readonly applied: ReadonlyArray<{ readonly id: number; readonly name: string }>
}

/**
 * What `deprovision` did.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeprovisionResult {
  readonly strategy: Strategy
  /** The schema or database dropped, if one existed. */
  readonly dropped?: string | undefined
  /** rls: rows deleted per table. */
  readonly deleted?: Readonly<Record<string, number>> | undefined
}

/**
 * The isolation service.
 *
 * @since 0.1.0
 * @category tags
 */
export class TenantIsolation extends Context.Tag("effect-tenancy/TenantIsolation")<TenantIsolation, {
  /** The strategy of a tenant. */
  readonly strategyOf: (tenant: Tenant) => Strategy
  /**
   * Creates what the tenant's strategy needs (schema: the schema, its grants
   * and its migrations; database: the database and its migrations; rls:
   * nothing). Idempotent.
   */
  readonly provision: (
    tenant: Tenant
  ) => Effect.Effect<ProvisionResult, IsolationError | UnsafeIdentifier | MigrationFailed | TenantPoolExhausted>
  /**
   * Removes the tenant's data: drops its schema or database (only if this
   * library created it), or deletes its rows from every table with the
   * tenant column. Idempotent.
   */
  readonly deprovision: (
    tenant: Tenant
  ) => Effect.Effect<DeprovisionResult, IsolationError | UnsafeIdentifier>
  /**
   * Runs `self` in one transaction positioned on the current tenant, with the
   * tenant's `SqlClient`. Nested `withTransaction` uses savepoints; a nested
   * `scoped` for the same tenant joins the transaction. A SQL error caught
   * inside (outside a nested `withTransaction`) still aborts the transaction:
   * `scoped` then fails with a `SqlError` saying nothing was committed.
   */
  readonly scoped: <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | ScopeError, Exclude<R, SqlClient.SqlClient> | CurrentTenant>
  /**
   * Runs `self` with the admin client in one transaction positioned on
   * `tenant` (schema: its search path; database: its database; rls: its
   * setting), for migrations.
   */
  readonly withTenantMigrationSession: <A, E, R>(
    tenant: Tenant,
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | ScopeError, Exclude<R, SqlClient.SqlClient>>
  /** The schema (schema tenants) or database (database tenants) name of a tenant. */
  readonly nameOf: (tenant: Tenant) => Either.Either<string | undefined, UnsafeIdentifier>
  /**
   * Runs the RLS safety check again (e.g. after shared migrations created the
   * tables). A table named in `rls.tables` that does not exist fails it with
   * an `IsolationError` naming the table.
   */
  readonly check: Effect.Effect<void, IsolationUnsafe | IsolationError>
  /**
   * Whether some tenant may use row-level security (strategy `rls` or
   * hybrid): `TenantMigrator.run` then runs `check` after the shared
   * migrations, whatever `rls.checkOnStart` (which exists for tables that
   * only those migrations create).
   */
  readonly mayUseRls: boolean
  /** The per-tenant bookkeeping table of migrations (`Options.migrationsTable`). */
  readonly migrationsTable: string
}>() {}

// Marks the transaction a fiber is in, so a nested `scoped` for the same
// tenant joins it instead of taking a second connection.
class ActiveScope extends Context.Tag("effect-tenancy/TenantIsolation/ActiveScope")<ActiveScope, {
  readonly owner: object
  readonly tenantId: string
  /** False once the transaction has ended (seen by fibers forked inside it). */
  readonly isOpen: () => boolean
}>() {}

/**
 * Runs `self` in a transaction on a connection reserved from `client`, whose
 * first round trip is `begin` (`BEGIN; DISCARD TEMP; CLOSE ALL; SELECT set_config(...)`). The
 * connection is provided as `SqlClient.TransactionConnection`, so every
 * statement of `self` (and nested `withTransaction` savepoints) runs on it.
 *
 * Waiting for a connection is interruptible (see `reserve`), and so is
 * `self`. The end of the transaction is not interruptible; if COMMIT or ROLLBACK
 * fails, the connection is discarded rather than returned to the pool. A
 * COMMIT that PostgreSQL turned into a ROLLBACK (the transaction was aborted
 * by a statement whose error `self` caught) fails with a `SqlError`.
 */
const transaction = <A, E, R>(
  client: SqlClient.SqlClient,
  begin: string,
  active: { readonly owner: object; readonly tenantId: string },
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, Exclude<R, SqlClient.SqlClient>> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Scope.make(), (scope) =>
      reserve(client, scope, restore).pipe(
        Effect.flatMap((conn) =>
          Effect.flatMap(Effect.exit(conn.executeUnprepared(begin, [], undefined)), (began) => {
            if (Exit.isFailure(began)) return Effect.zipRight(end(conn, "ROLLBACK"), Effect.failCause(began.cause))
            const guarded = guard(conn)
            const inner = Effect.mapInputContext(
              self,
              (context: Context.Context<Exclude<R, SqlClient.SqlClient>>) =>
                Context.add(
                  Context.add(
                    Context.add(context, SqlClient.SqlClient, client),
                    SqlClient.TransactionConnection,
                    [guarded.connection, 0] as const
                  ),
                  ActiveScope,
                  { owner: active.owner, tenantId: active.tenantId, isOpen: guarded.isOpen }
                ) as Context.Context<R>
            )
            return Effect.flatMap(
              Effect.exit(restore(inner)),
              (exit): Effect.Effect<A, E | SqlError> => {
                guarded.close()
                return Exit.isSuccess(exit)
                  ? Effect.flatMap(
                    Effect.exit(commit(conn)),
                    (committed): Effect.Effect<A, E | SqlError> =>
                      Exit.isSuccess(committed)
                        ? exit
                        // PostgreSQL ends the transaction on a failed COMMIT; make sure anyway.
                        : Effect.zipRight(end(conn, "ROLLBACK"), Effect.failCause(committed.cause))
                  )
                  : Effect.zipRight(end(conn, "ROLLBACK"), exit)
              }
            )
          })
        ),
        Effect.onExit((exit) => Scope.close(scope, exit))
      ))
  )

// `reserve` of `@effect/sql-pg` waits for a pooled connection without a
// canceler: interrupting it would lose a connection that arrives later. So it
// runs in a fiber of its own that is never interrupted, and only the wait for
// that fiber is interruptible. A connection that arrives after the caller
// left joins `scope`, closed by then, which releases it at once.
const reserve = (
  client: SqlClient.SqlClient,
  scope: Scope.Scope,
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
): Effect.Effect<Connection, SqlError> =>
  Effect.flatMap(Effect.forkDaemon(Scope.extend(client.reserve, scope)), (fiber) => restore(Fiber.join(fiber)))

// COMMIT of a transaction that an error aborted (a failed statement whose
// error `self` caught) is answered with the command tag ROLLBACK: PostgreSQL
// rolled everything back, so succeeding would silently lose the writes.
const commit = (conn: Connection): Effect.Effect<void, SqlError> =>
  Effect.flatMap(
    conn.executeRaw("COMMIT", []),
    (result) =>
      Predicate.hasProperty(result, "command") && result.command === "ROLLBACK"
        ? Effect.fail(
          new SqlError({
            message: "TenantIsolation: the transaction was aborted by an earlier error (caught inside the scope); " +
              "PostgreSQL rolled it back at COMMIT and nothing was committed"
          })
        )
        : Effect.void
  )

// The connection as the scoped effect sees it: once the transaction ends it
// refuses every statement, so a fiber forked inside the scope that outlives
// it can never run on a connection returned to the pool (and perhaps
// positioned on another tenant by then).
const guard = (conn: Connection): {
  readonly connection: Connection
  readonly close: () => void
  readonly isOpen: () => boolean
} => {
  let open = true
  const ended = Effect.suspend(() =>
    open ? Effect.void : Effect.fail(
      new SqlError({ message: "TenantIsolation: the tenant's transaction has ended; statement refused" })
    )
  )
  const connection: Connection = {
    execute: (sql, params, transformRows) => Effect.zipRight(ended, conn.execute(sql, params, transformRows)),
    executeRaw: (sql, params) => Effect.zipRight(ended, conn.executeRaw(sql, params)),
    executeStream: (sql, params, transformRows) =>
      Stream.unwrap(Effect.as(ended, conn.executeStream(sql, params, transformRows))),
    executeValues: (sql, params) => Effect.zipRight(ended, conn.executeValues(sql, params)),
    executeUnprepared: (sql, params, transformRows) =>
      Effect.zipRight(ended, conn.executeUnprepared(sql, params, transformRows))
  }
  return {
    connection,
    close: () => {
      open = false
    },
    isOpen: () => open
  }
}

// ROLLBACK (or COMMIT) whose failure discards the connection: it must never
// go back to the pool in an open transaction.
const end = (conn: Connection, statement: string): Effect.Effect<void> =>
  Effect.catchAllCause(conn.executeUnprepared(statement, [], undefined), () => Effect.sync(() => discard(conn)))

// `@effect/sql-pg` releases a reserved client with the error its "error"
// event carried, and `pg` then destroys it instead of pooling it.
const discard = (conn: Connection) => {
  const pg = (conn as { readonly pg?: { emit?: (event: string, error: Error) => boolean } }).pg
  if (pg !== undefined && typeof pg.emit === "function") {
    pg.emit("error", new Error("effect-tenancy: transaction did not end cleanly; connection discarded"))
  }
}

interface Plan {
  readonly strategy: Strategy
  /** The schema or database name (schema and database tenants). */
  readonly name: string | undefined
  /**
   * `BEGIN; DISCARD TEMP; CLOSE ALL; SELECT set_config(...)`: one round
   * trip. Temporary tables outlive COMMIT and `pg_temp` is searched first,
   * so a previous user's temporary objects would shadow (and, without RLS,
   * expose) tables; `DISCARD TEMP` drops them inside the transaction (a
   * no-op when the session has none). A cursor declared WITH HOLD outlives
   * COMMIT too, and could be fetched by the next tenant: `CLOSE ALL`.
   */
  readonly begin: string
}

/**
 * Builds the isolation service. With an `rls` (or hybrid) strategy it runs
 * the safety check first, as the application role (the `SqlClient` in
 * context).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<
  Context.Tag.Service<TenantIsolation>,
  IsolationUnsafe | IsolationError | UnsafeIdentifier,
  SqlClient.SqlClient | Scope.Scope
> =>
  Effect.gen(function*() {
    const app = yield* SqlClient.SqlClient
    const admin = options.admin ?? app
    const setting = yield* checkSetting(options.setting ?? "app.tenant_id")
    const strategyOf = typeof options.strategy === "function"
      ? options.strategy
      : ((strategy: Strategy) => () => strategy)(options.strategy)
    const schemaName = options.schema?.name ?? defaultTenantName
    const databaseName = options.database?.name ?? defaultTenantName
    const searchPathExtra = yield* Effect.forEach(options.schema?.searchPath ?? [], (s) => quoteIdentifier(s, "schema"))
    const rlsSchema = yield* checkName(options.rls?.schema ?? "public", "schema")
    const rlsColumn = yield* checkName(options.rls?.column ?? "tenant_id", "column")
    const rlsTables = yield* Effect.forEach(options.rls?.tables ?? [], (t) => checkName(t, "table"))
    const migrationsTable = yield* checkName(options.migrationsTable ?? defaultTableName, "table")

    const appRole = yield* app<{ readonly role: string }>`SELECT current_user AS role`.pipe(
      Effect.map((rows) => rows[0]!.role),
      Effect.mapError((cause) => new IsolationError({ operation: "check", detail: "cannot read the role", cause }))
    )
    const quotedAppRole = yield* quoteRole(appRole)

    // -- database strategy: two pool sets, the application role's and the admin's
    const pools = options.database === undefined ? undefined : yield* Effect.gen(function*() {
      const db = options.database!
      const common = {
        admin,
        databaseName: (id: TenantId) => databaseName(id),
        databaseOwner: db.databaseOwner,
        databaseTemplate: db.databaseTemplate,
        idleTimeToLive: db.idleTimeToLive ?? "1 minute"
      }
      const appPools = yield* Pools.make({
        ...common,
        connection: db.connection,
        maxConnectionsPerTenant: db.maxConnectionsPerTenant ?? 4,
        maxConnections: db.maxConnections ?? 50,
        whenExhausted: db.whenExhausted
      })
      // Migration sessions: one connection per tenant database, outside the application budget.
      const adminPools = yield* Pools.make({
        ...common,
        connection: db.adminConnection ?? db.connection,
        maxConnectionsPerTenant: 1,
        maxConnections: 4,
        idleTimeToLive: "10 seconds",
        whenExhausted: { wait: "1 minute" }
      })
      return { app: appPools, admin: adminPools }
    })
    const needPools = (tenantId: string, operation: IsolationError["operation"]) =>
      pools === undefined
        ? Effect.fail(
          new IsolationError({
            operation,
            tenantId,
            detail: "the tenant's strategy is database, but TenantIsolation was given no database options"
          })
        )
        : Effect.succeed(pools)

    // -- plans: the name and the first round trip of a tenant's transactions
    const plans = new Map<string, Plan>()
    const planFor = (tenant: Tenant): Either.Either<Plan, UnsafeIdentifier> => {
      const strategy = strategyOf(tenant)
      const cacheKey = `${strategy}:${tenant.id}`
      const cached = plans.get(cacheKey)
      if (cached !== undefined) return Either.right(cached)
      return Either.map(checkTenantId(tenant.id), (id) => {
        const tenantSetting = `set_config(${literal(setting)}, ${literal(id)}, true)`
        let name: string | undefined
        let begin: string
        if (strategy === "schema") {
          name = schemaName(id)
          if (!safeIdentifier.test(name)) return Either.left(new UnsafeIdentifier({ kind: "schema", name }))
          const path = [`"${name}"`, ...searchPathExtra].join(", ")
          begin = `BEGIN; DISCARD TEMP; CLOSE ALL; SELECT set_config('search_path', ${
            literal(path)
          }, true), ${tenantSetting}`
        } else {
          if (strategy === "database") {
            name = databaseName(id)
            if (!safeIdentifier.test(name)) return Either.left(new UnsafeIdentifier({ kind: "database", name }))
          }
          begin = `BEGIN; DISCARD TEMP; CLOSE ALL; SELECT ${tenantSetting}`
        }
        const plan: Plan = { strategy, name, begin }
        if (plans.size >= 10_000) plans.clear()
        plans.set(cacheKey, plan)
        return Either.right(plan)
      }).pipe(Either.flatMap((e) => e))
    }

    const owner = {}

    const open = <A, E, R>(
      tenant: Tenant,
      forAdmin: boolean,
      self: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | ScopeError, Exclude<R, SqlClient.SqlClient>> =>
      Either.match(planFor(tenant), {
        onLeft: (error) => Effect.fail(error),
        onRight: (plan) => {
          const active = { owner: forAdmin ? admin : owner, tenantId: tenant.id }
          if (plan.strategy !== "database") {
            return transaction(forAdmin ? admin : app, plan.begin, active, self)
          }
          return Effect.flatMap(needPools(tenant.id, "scope"), (p) =>
            Effect.scoped(
              Effect.flatMap(
                Effect.catchTag(
                  (forAdmin ? p.admin : p.app).get(tenant.id),
                  "TenantDatabaseRefused",
                  (refused) => Effect.fail(new UnsafeIdentifier({ kind: "database", name: refused.database }))
                ),
                (client) => transaction(client, plan.begin, active, self)
              )
            ))
        }
      })

    const scoped = <A, E, R>(
      self: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | ScopeError, Exclude<R, SqlClient.SqlClient> | CurrentTenant> =>
      Effect.contextWithEffect((context: Context.Context<CurrentTenant>) => {
        const tenant = Context.get(context, CurrentTenant)
        const active = Context.getOption(context, ActiveScope)
        if (
          active._tag === "Some" && active.value.owner === owner && active.value.tenantId === tenant.id &&
          active.value.isOpen()
        ) {
          // Already in this tenant's transaction: its SqlClient is provided.
          return self as Effect.Effect<A, E, Exclude<R, SqlClient.SqlClient>>
        }
        return open(tenant, false, self)
      })

    const withTenantMigrationSession = <A, E, R>(tenant: Tenant, self: Effect.Effect<A, E, R>) =>
      open(tenant, true, self)

    // -- provision / deprovision

    const failWith = (operation: IsolationError["operation"], tenant: Tenant) => (cause: unknown) => {
      if (cause instanceof Pools.TenantDatabaseRefused) {
        return Effect.fail(
          cause.reason === "unsafe-name"
            ? new UnsafeIdentifier({ kind: "database", name: cause.database })
            : new IsolationError({
              operation,
              tenantId: tenant.id,
              detail: `database ${JSON.stringify(cause.database)} exists but was not created by effect-tenancy`
            })
        )
      }
      return cause instanceof UnsafeIdentifier || cause instanceof IsolationError ||
          Predicate.isTagged(cause, "MigrationFailed") || Predicate.isTagged(cause, "TenantPoolExhausted")
        ? Effect.fail(cause as UnsafeIdentifier | IsolationError | MigrationFailed | TenantPoolExhausted)
        : Effect.fail(new IsolationError({ operation, tenantId: tenant.id, cause }))
    }

    const migrate = (
      tenant: Tenant,
      schema: string
    ): Effect.Effect<ApplyResult, MigrationFailed, SqlClient.SqlClient> =>
      options.migrations === undefined || options.migrations.length === 0
        ? Effect.succeed({ applied: [], pending: [] })
        : applyPending({
          migrations: options.migrations,
          table: tenantTable(schema, migrationsTable),
          lockKey: tenantLockKey(tenant.id),
          lockTimeout: options.lockTimeout
        })

    // The tenant's advisory lock (the migrator's), waited for at most `lockTimeout`; the
    // timeout also bounds the DDL that follows in the same transaction.
    const lockTenant = (sql: SqlClient.SqlClient, tenant: Tenant) =>
      Effect.zipRight(
        sql`SELECT set_config('lock_timeout', ${lockTimeoutSetting(options.lockTimeout)}, true)`,
        sql`SELECT pg_advisory_xact_lock(hashtext(${tenantLockKey(tenant.id)}))`
      )

    const markerOfSchema = (sql: SqlClient.SqlClient, name: string) =>
      Effect.map(
        sql<{ readonly comment: string | null }>`
          SELECT obj_description(oid, 'pg_namespace') AS comment FROM pg_namespace WHERE nspname = ${name}`,
        (rows) => rows.length === 0 ? undefined : { comment: rows[0]!.comment }
      )

    const notOurs = (operation: IsolationError["operation"], tenant: Tenant, what: string, name: string) =>
      Effect.fail(
        new IsolationError({
          operation,
          tenantId: tenant.id,
          detail: `${what} ${JSON.stringify(name)} exists but was not created by effect-tenancy for this tenant`
        })
      )

    const provisionSchema = (tenant: Tenant, name: string) =>
      withTenantMigrationSession(
        tenant,
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const schema = `"${name}"`
          yield* lockTenant(sql, tenant)
          const found = yield* markerOfSchema(sql, name)
          if (found === undefined) {
            yield* sql.unsafe(`CREATE SCHEMA ${schema}`)
            yield* sql.unsafe(`COMMENT ON SCHEMA ${schema} IS ${literal(marker(tenant.id))}`)
          } else if (found.comment !== marker(tenant.id)) {
            return yield* notOurs("provision", tenant, "schema", name)
          }
          yield* sql.unsafe(`GRANT USAGE ON SCHEMA ${schema} TO ${quotedAppRole}`)
          yield* sql.unsafe(
            `ALTER DEFAULT PRIVILEGES IN SCHEMA ${schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${quotedAppRole}`
          )
          yield* sql.unsafe(
            `ALTER DEFAULT PRIVILEGES IN SCHEMA ${schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO ${quotedAppRole}`
          )
          const result = yield* migrate(tenant, name)
          // Tables that existed before the default privileges (a re-provision).
          yield* sql.unsafe(
            `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${schema} TO ${quotedAppRole}`
          )
          yield* sql.unsafe(`GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA ${schema} TO ${quotedAppRole}`)
          return { strategy: "schema" as const, name, applied: result.applied }
        })
      )

    const provisionDatabase = (tenant: Tenant, name: string) =>
      Effect.gen(function*() {
        const p = yield* needPools(tenant.id, "provision")
        // Refused (TenantDatabaseRefused "not-managed") when the database exists but was not created by the pools.
        yield* p.app.createDatabase(tenant.id)
        yield* admin.unsafe(`GRANT CONNECT, TEMPORARY ON DATABASE "${name}" TO ${quotedAppRole}`)
        return yield* withTenantMigrationSession(
          tenant,
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* sql.unsafe(`GRANT USAGE ON SCHEMA public TO ${quotedAppRole}`)
            yield* sql.unsafe(
              `ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${quotedAppRole}`
            )
            yield* sql.unsafe(
              `ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO ${quotedAppRole}`
            )
            const result = yield* migrate(tenant, "public")
            yield* sql.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${quotedAppRole}`)
            yield* sql.unsafe(`GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ${quotedAppRole}`)
            return { strategy: "database" as const, name, applied: result.applied }
          })
        )
      })

    const provision = (tenant: Tenant) =>
      Either.match(planFor(tenant), {
        onLeft: (error) => Effect.fail(error),
        onRight: (plan) =>
          plan.strategy === "rls"
            ? Effect.succeed<ProvisionResult>({ strategy: "rls", applied: [] })
            : plan.strategy === "schema"
            ? provisionSchema(tenant, plan.name!)
            : provisionDatabase(tenant, plan.name!)
      }).pipe(
        Effect.catchAll(failWith("provision", tenant)),
        Effect.withSpan("TenantIsolation.provision", { attributes: { "tenant.id": tenant.id } })
      ) as Effect.Effect<ProvisionResult, IsolationError | UnsafeIdentifier | MigrationFailed | TenantPoolExhausted>

    // Tables of the rls schema that have the tenant column, referencing tables first.
    const tenantTables = (sql: SqlClient.SqlClient) =>
      Effect.gen(function*() {
        const tables = yield* sql<{ readonly name: string }>`
          SELECT c.relname AS name
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = ${rlsColumn} AND NOT a.attisdropped
          WHERE n.nspname = ${rlsSchema} AND c.relkind IN ('r', 'p') AND NOT c.relispartition`
        const edges = yield* sql<{ readonly child: string; readonly parent: string }>`
          SELECT c.relname AS child, p.relname AS parent
          FROM pg_constraint k
          JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_class p ON p.oid = k.confrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE k.contype = 'f' AND n.nspname = ${rlsSchema} AND c.oid <> p.oid`
        return childrenFirst(tables.map((t) => t.name), edges)
      })

    const deprovisionRls = (tenant: Tenant) =>
      withTenantMigrationSession(
        tenant,
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const deleted: Record<string, number> = {}
          for (const table of yield* tenantTables(sql)) {
            if (!safeIdentifier.test(table)) return yield* new UnsafeIdentifier({ kind: "table", name: table })
            const rows = yield* sql<{ readonly n: number }>`
              WITH gone AS (
                DELETE FROM ${sql.literal(`"${rlsSchema}"."${table}"`)}
                WHERE ${sql.literal(`"${rlsColumn}"`)} = ${tenant.id} RETURNING 1
              )
              SELECT count(*)::int AS n FROM gone`
            deleted[table] = rows[0]?.n ?? 0
          }
          return { strategy: "rls" as const, deleted }
        })
      )

    const deprovisionSchema = (tenant: Tenant, name: string) =>
      admin.withTransaction(Effect.gen(function*() {
        yield* lockTenant(admin, tenant)
        const found = yield* markerOfSchema(admin, name)
        if (found === undefined) return { strategy: "schema" as const }
        if (found.comment !== marker(tenant.id)) return yield* notOurs("deprovision", tenant, "schema", name)
        yield* admin.unsafe(`DROP SCHEMA "${name}" CASCADE`)
        return { strategy: "schema" as const, dropped: name }
      }))

    const deprovisionDatabase = (tenant: Tenant, name: string) =>
      Effect.gen(function*() {
        const p = yield* needPools(tenant.id, "deprovision")
        // Refused with TenantInUse while tenant work holds its pool; only managed databases are dropped.
        const dropped = yield* p.app.dropDatabase(tenant.id)
        // Closes the migration pool of the (now dropped) database.
        yield* p.admin.dropDatabase(tenant.id)
        return dropped ? { strategy: "database" as const, dropped: name } : { strategy: "database" as const }
      })

    const deprovision = (tenant: Tenant) =>
      Either.match(planFor(tenant), {
        onLeft: (error) => Effect.fail(error),
        onRight: (plan): Effect.Effect<DeprovisionResult, unknown> =>
          plan.strategy === "rls"
            ? deprovisionRls(tenant)
            : plan.strategy === "schema"
            ? deprovisionSchema(tenant, plan.name!)
            : deprovisionDatabase(tenant, plan.name!)
      }).pipe(
        Effect.catchAll(failWith("deprovision", tenant)),
        Effect.withSpan("TenantIsolation.deprovision", { attributes: { "tenant.id": tenant.id } })
      ) as Effect.Effect<DeprovisionResult, IsolationError | UnsafeIdentifier>

    // -- the safety check, as the application role

    const check = Effect.gen(function*() {
      const roles = yield* app<{ readonly super: boolean; readonly bypass: boolean }>`
        SELECT rolsuper AS super, rolbypassrls AS bypass FROM pg_roles WHERE rolname = current_user`
      const role = roles[0]
      if (role === undefined || role.super) return yield* new IsolationUnsafe({ problem: "superuser", role: appRole })
      if (role.bypass) return yield* new IsolationUnsafe({ problem: "bypassrls", role: appRole })
      const tables = yield* app<{
        readonly name: string
        readonly enabled: boolean
        readonly forced: boolean
        readonly owned: boolean
      }>`
        SELECT c.relname AS name, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
          pg_has_role(current_user, c.relowner, 'USAGE') AS owned
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ${rlsSchema} AND c.relkind IN ('r', 'p') AND (
          ${rlsTables.length > 0} AND c.relname = ANY(${rlsTables})
          OR ${rlsTables.length === 0} AND EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attname = ${rlsColumn} AND NOT a.attisdropped
          )
        )
        ORDER BY c.relname`
      const missing = rlsTables.filter((name) => !tables.some((t) => t.name === name))
      if (missing.length > 0) {
        return yield* new IsolationError({
          operation: "check",
          detail: `protected table ${
            missing.map((name) => JSON.stringify(`${rlsSchema}.${name}`)).join(", ")
          } named in rls.tables does not exist`
        })
      }
      for (const table of tables) {
        const qualified = `${rlsSchema}.${table.name}`
        if (!table.enabled) {
          return yield* new IsolationUnsafe({ problem: "rls-disabled", role: appRole, table: qualified })
        }
        if (!table.forced) {
          return yield* new IsolationUnsafe({
            problem: table.owned ? "owner-without-force" : "not-forced",
            role: appRole,
            table: qualified
          })
        }
      }
      const names = tables.map((t) => t.name)
      const policies = names.length === 0 ? [] : yield* app<{
        readonly table: string
        readonly policy: string
        readonly qual: string | null
        readonly check: string | null
      }>`
        SELECT tablename AS table, policyname AS policy, qual, with_check AS check
        FROM pg_policies
        WHERE schemaname = ${rlsSchema} AND tablename = ANY(${names}) AND permissive = 'PERMISSIVE'
          AND (roles @> ARRAY['public']::name[] OR EXISTS (
            SELECT 1 FROM unnest(roles) r WHERE r <> 'public' AND pg_has_role(current_user, r, 'USAGE')
          ))
        ORDER BY tablename, policyname`
      const mentionsSetting = (expression: string | null) =>
        expression === null || expression.includes(`current_setting('${setting}'`)
      for (const p of policies) {
        if (!mentionsSetting(p.qual) || !mentionsSetting(p.check)) {
          return yield* new IsolationUnsafe({
            problem: "policy-without-tenant",
            role: appRole,
            table: `${rlsSchema}.${p.table}`,
            policy: p.policy
          })
        }
      }
    }).pipe(
      Effect.mapError((error): IsolationUnsafe | IsolationError =>
        error instanceof IsolationUnsafe || error instanceof IsolationError
          ? error
          : new IsolationError({ operation: "check", cause: error })
      ),
      Effect.withSpan("TenantIsolation.check")
    )

    const mayUseRls = typeof options.strategy === "function" || options.strategy === "rls"
    if (mayUseRls && options.rls?.checkOnStart !== false) yield* check

    return TenantIsolation.of({
      strategyOf,
      provision,
      deprovision,
      scoped,
      withTenantMigrationSession,
      nameOf: (tenant) => Either.map(planFor(tenant), (plan) => plan.name),
      check,
      mayUseRls,
      migrationsTable
    })
  })

const childrenFirst = (
  tables: ReadonlyArray<string>,
  edges: ReadonlyArray<{ readonly child: string; readonly parent: string }>
): ReadonlyArray<string> => {
  const set = new Set(tables)
  const order: Array<string> = []
  const state = new Map<string, "visiting" | "done">()
  const visit = (table: string) => {
    if (state.has(table)) return // done, or a cycle: keep the order found so far
    state.set(table, "visiting")
    for (const e of edges) if (e.parent === table && e.child !== table && set.has(e.child)) visit(e.child)
    state.set(table, "done")
    order.push(table)
  }
  for (const t of [...tables].sort()) visit(t)
  return order
}

/**
 * The service as a layer; the application `SqlClient` comes from context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<TenantIsolation, IsolationUnsafe | IsolationError | UnsafeIdentifier, SqlClient.SqlClient> =>
  Layer.scoped(TenantIsolation, make(options))

// ---------------------------------------------------------------------------
// accessors
// ---------------------------------------------------------------------------

/**
 * Runs `self` in one transaction positioned on the current tenant, with the
 * tenant's `SqlClient` (see `TenantIsolation.scoped`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const scoped = <A, E, R>(
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | ScopeError, Exclude<R, SqlClient.SqlClient> | CurrentTenant | TenantIsolation> =>
  Effect.flatMap(TenantIsolation, (isolation) => isolation.scoped(self))

/**
 * @since 0.1.0
 * @category accessors
 */
export const provision = (
  tenant: Tenant
): Effect.Effect<
  ProvisionResult,
  IsolationError | UnsafeIdentifier | MigrationFailed | TenantPoolExhausted,
  TenantIsolation
> => Effect.flatMap(TenantIsolation, (isolation) => isolation.provision(tenant))

/**
 * @since 0.1.0
 * @category accessors
 */
export const deprovision = (
  tenant: Tenant
): Effect.Effect<DeprovisionResult, IsolationError | UnsafeIdentifier, TenantIsolation> =>
  Effect.flatMap(TenantIsolation, (isolation) => isolation.deprovision(tenant))

/**
 * @since 0.1.0
 * @category accessors
 */
export const withTenantMigrationSession = <A, E, R>(
  tenant: Tenant,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | ScopeError, Exclude<R, SqlClient.SqlClient> | TenantIsolation> =>
  Effect.flatMap(TenantIsolation, (isolation) => isolation.withTenantMigrationSession(tenant, self))

// ---------------------------------------------------------------------------
// row-level security
// ---------------------------------------------------------------------------

/**
 * Protects a shared table with row-level security, run by the table's owner
 * (or a superuser), e.g. in a shared migration:
 *
 * - `ENABLE` and `FORCE ROW LEVEL SECURITY` (the owner is subject too);
 * - one policy for every command, `USING` and `WITH CHECK`
 *   `column = NULLIF(current_setting(setting, true), '')` (cast to the
 *   column's type): no tenant set → no rows, and writes refused;
 * - an index leading on the tenant column, unless one exists.
 *
 * Idempotent (the policy is replaced).
 *
 * @since 0.1.0
 * @category constructors
 */
export const enableRowLevelSecurity = (options: {
  readonly table: string
  readonly schema?: string | undefined
  readonly column?: string | undefined
  readonly setting?: string | undefined
  readonly policy?: string | undefined
}): Effect.Effect<void, IsolationError | UnsafeIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const table = yield* checkName(options.table, "table")
    const schema = yield* checkName(options.schema ?? "public", "schema")
    const column = yield* checkName(options.column ?? "tenant_id", "column")
    const setting = yield* checkSetting(options.setting ?? "app.tenant_id")
    const policy = yield* checkName(options.policy ?? "tenancy_isolation", "table")
    const qualified = `"${schema}"."${table}"`
    yield* sql.withTransaction(Effect.gen(function*() {
      const columns = yield* sql<{ readonly type: string; readonly num: number }>`
        SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnum AS num
        FROM pg_attribute a
        WHERE a.attrelid = to_regclass(${qualified}) AND a.attname = ${column} AND NOT a.attisdropped`
      const found = columns[0]
      if (found === undefined) {
        return yield* new IsolationError({
          operation: "enable-rls",
          detail: `table ${qualified} or its column "${column}" does not exist`
        })
      }
      const current = `NULLIF(current_setting(${literal(setting)}, true), '')::${found.type}`
      const predicate = `"${column}" = ${current}`
      yield* sql.unsafe(`ALTER TABLE ${qualified} ENABLE ROW LEVEL SECURITY`)
      yield* sql.unsafe(`ALTER TABLE ${qualified} FORCE ROW LEVEL SECURITY`)
      yield* sql.unsafe(`DROP POLICY IF EXISTS "${policy}" ON ${qualified}`)
      yield* sql.unsafe(
        `CREATE POLICY "${policy}" ON ${qualified} AS PERMISSIVE FOR ALL USING (${predicate}) WITH CHECK (${predicate})`
      )
      const indexed = yield* sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM pg_index
        WHERE indrelid = to_regclass(${qualified}) AND indkey[0] = ${found.num}`
      if ((indexed[0]?.n ?? 0) === 0) {
        const index = `${table}_${column}`.slice(0, 57) + "_tnidx"
        yield* sql.unsafe(`CREATE INDEX IF NOT EXISTS "${index}" ON ${qualified} ("${column}")`)
      }
    }))
  }).pipe(
    Effect.catchAll((error) =>
      error instanceof IsolationError || error instanceof UnsafeIdentifier
        ? Effect.fail(error)
        : Effect.fail(new IsolationError({ operation: "enable-rls", detail: options.table, cause: error }))
    ),
    Effect.withSpan("TenantIsolation.enableRowLevelSecurity")
  )
