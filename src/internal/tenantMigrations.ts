/**
 * Applying a list of migrations to one tenant (a schema or a database), inside
 * a transaction the caller opened on a connection positioned for the tenant.
 *
 * Used by `TenantMigrator` (for every tenant) and by `TenantIsolation`'s
 * `provision` (so a new tenant starts at the current version).
 *
 * @internal
 */
import { SqlClient } from "@effect/sql/SqlClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * One migration: a positive integer id (ids strictly increasing in a list), a
 * name, and the effect that applies it with the tenant's `SqlClient`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Migration {
  readonly id: number
  readonly name: string
  readonly up: Effect.Effect<unknown, unknown, SqlClient>
}

/**
 * A migration's id and name, as reported.
 *
 * @since 0.1.0
 * @category models
 */
export interface MigrationInfo {
  readonly id: number
  readonly name: string
}

/**
 * Why a tenant's migrations did not apply:
 * - `invalid-migrations`: the list itself is wrong (ids not positive integers
 *   or not strictly increasing);
 * - `invalid-options`: a run option is out of range (`concurrency` or
 *   `tenants.first` not an integer >= 1); nothing ran;
 * - `lock-timeout`: a lock (the tenant's migration lock or a lock a migration
 *   needed) was not granted within `lock_timeout`;
 * - `failed`: a migration failed (`migrationId` / `migrationName` say which);
 * - `bookkeeping`: reading or writing the migrations table failed;
 * - `unavailable`: the tenant's session could not be opened (no connection,
 *   pool exhausted, its schema or database missing), or the isolation's
 *   safety check failed after the shared migrations.
 *
 * Nothing of the tenant's run is kept when it fails: the caller's transaction
 * rolls back.
 *
 * @since 0.1.0
 * @category errors
 */
export class MigrationFailed extends Schema.TaggedError<MigrationFailed>("effect-tenancy/MigrationFailed")(
  "MigrationFailed",
  {
    reason: Schema.Literal(
      "invalid-migrations",
      "invalid-options",
      "lock-timeout",
      "failed",
      "bookkeeping",
      "unavailable"
    ),
    tenantId: Schema.optional(Schema.String),
    migrationId: Schema.optional(Schema.Number),
    migrationName: Schema.optional(Schema.String),
    detail: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  /** @since 0.1.0 */
  override get message(): string {
    const tenant = this.tenantId === undefined ? "" : ` for tenant ${JSON.stringify(this.tenantId)}`
    const migration = this.migrationId === undefined ? "" : ` (migration ${this.migrationId}_${this.migrationName})`
    const detail = this.detail ?? causeMessage(this.cause)
    const what = this.reason === "invalid-migrations"
      ? "Invalid migration list"
      : this.reason === "lock-timeout"
      ? "Migration lock not granted in time"
      : this.reason === "bookkeeping"
      ? "Migration bookkeeping failed"
      : this.reason === "unavailable"
      ? "Tenant unavailable for migration"
      : "Migration failed"
    return `${what}${tenant}${migration}${detail === undefined ? "" : `: ${detail}`}`
  }
}

/** @internal */
export const causeMessage = (cause: unknown): string | undefined => {
  // SqlError wraps the driver's error: its message is the useful one.
  const inner = Predicate.hasProperty(cause, "cause") && Predicate.hasProperty(cause.cause, "message")
    ? cause.cause
    : cause
  return Predicate.hasProperty(inner, "message") && typeof inner.message === "string" ? inner.message : undefined
}

/** @internal */
export const pgCode = (error: unknown): string | undefined => {
  const inner = Predicate.hasProperty(error, "cause") && Predicate.hasProperty(error.cause, "code")
    ? error.cause
    : error
  return Predicate.hasProperty(inner, "code") && typeof inner.code === "string" ? inner.code : undefined
}

/** `lock_not_available`: raised when `lock_timeout` expires. @internal */
export const lockNotAvailable = "55P03"

/**
 * Checks that ids are positive integers, strictly increasing.
 *
 * @internal
 */
export const validate = (migrations: ReadonlyArray<Migration>): Effect.Effect<void, MigrationFailed> => {
  let previous = 0
  for (const m of migrations) {
    if (!Number.isSafeInteger(m.id) || m.id <= 0) {
      return Effect.fail(
        new MigrationFailed({
          reason: "invalid-migrations",
          detail: `id ${m.id} (${m.name}) is not a positive integer`
        })
      )
    }
    if (m.id <= previous) {
      return Effect.fail(
        new MigrationFailed({
          reason: "invalid-migrations",
          detail: `ids must be strictly increasing: ${m.id} (${m.name}) follows ${previous}`
        })
      )
    }
    previous = m.id
  }
  return Effect.void
}

/**
 * The options of `applyPending`.
 *
 * @internal
 */
export interface ApplyOptions {
  readonly migrations: ReadonlyArray<Migration>
  /** The bookkeeping table: already quoted and schema-qualified (`"tenant_acme"."tenancy_migrations"`). */
  readonly table: string
  /** The advisory lock's key (`pg_advisory_xact_lock(hashtext(lockKey))`). */
  readonly lockKey: string
  /** How long a lock may be waited for (default 10 seconds). */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /** List what would run, run nothing (the bookkeeping table is not created either). */
  readonly dryRun?: boolean | undefined
}

/**
 * What `applyPending` did: the migrations applied now, and those still
 * pending (non-empty only for a dry run).
 *
 * @internal
 */
export interface ApplyResult {
  readonly applied: ReadonlyArray<MigrationInfo>
  readonly pending: ReadonlyArray<MigrationInfo>
}

const info = (m: Migration): MigrationInfo => ({ id: m.id, name: m.name })

/** @internal */
export const defaultLockTimeout = Duration.seconds(10)

/** The `lock_timeout` value of a duration (default `defaultLockTimeout`). @internal */
export const lockTimeoutSetting = (input: Duration.DurationInput | undefined): string =>
  `${Math.max(1, Math.ceil(Duration.toMillis(Duration.decode(input ?? defaultLockTimeout))))}ms`

/**
 * Applies the migrations of `options.migrations` that the bookkeeping table
 * does not list, in id order, and records them.
 *
 * Runs INSIDE a transaction the caller opened on a connection positioned for
 * the tenant: it sets `lock_timeout` for that transaction only, takes a
 * transaction-level advisory lock on `lockKey` (so two migrators serialize per
 * tenant and the second finds nothing left to do), creates the bookkeeping
 * table if missing (the same columns as `@effect/sql`'s Migrator table), then
 * applies. A failure leaves the caller to roll back: a tenant is either fully
 * migrated or untouched.
 *
 * @internal
 */
export const applyPending = (options: ApplyOptions): Effect.Effect<ApplyResult, MigrationFailed, SqlClient> =>
  Effect.gen(function*() {
    yield* validate(options.migrations)
    const sql = yield* SqlClient
    const table = sql.literal(options.table)
    const bookkeeping = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.mapError(effect, (cause) =>
        pgCode(cause) === lockNotAvailable
          ? new MigrationFailed({ reason: "lock-timeout", cause })
          : new MigrationFailed({ reason: "bookkeeping", cause }))

    yield* bookkeeping(
      sql`SELECT set_config('lock_timeout', ${lockTimeoutSetting(options.lockTimeout)}, true)`
    )
    yield* bookkeeping(sql`SELECT pg_advisory_xact_lock(hashtext(${options.lockKey}))`)

    const exists = yield* bookkeeping(
      sql<{ readonly present: boolean }>`SELECT to_regclass(${options.table}) IS NOT NULL AS present`
    )
    const done = new Set<number>()
    if (exists[0]?.present === true) {
      const rows = yield* bookkeeping(
        sql<{ readonly migration_id: number }>`SELECT migration_id FROM ${table}`.withoutTransform
      )
      for (const row of rows) done.add(Number(row.migration_id))
    }
    const pending = options.migrations.filter((m) => !done.has(m.id))
    if (options.dryRun === true) return { applied: [], pending: pending.map(info) }
    if (pending.length === 0) return { applied: [], pending: [] }

    if (exists[0]?.present !== true) {
      yield* bookkeeping(sql`CREATE TABLE IF NOT EXISTS ${table} (
        migration_id integer PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now(),
        name text NOT NULL
      )`)
    }
    for (const m of pending) {
      yield* m.up.pipe(
        Effect.catchAllDefect((defect) => Effect.fail(defect)),
        Effect.mapError((cause) =>
          new MigrationFailed({
            reason: pgCode(cause) === lockNotAvailable ? "lock-timeout" : "failed",
            migrationId: m.id,
            migrationName: m.name,
            cause
          })
        ),
        Effect.withSpan("TenantMigrator.migration", { attributes: { "migration.id": m.id, "migration.name": m.name } })
      )
    }
    // One round trip for the records (the transaction makes them all-or-nothing with the migrations).
    yield* bookkeeping(
      sql`INSERT INTO ${table} (migration_id, name)
        SELECT * FROM unnest(${pending.map((m) => m.id)}::integer[], ${pending.map((m) => m.name)}::text[])`
    )
    return { applied: pending.map(info), pending: [] }
  })

/**
 * The bookkeeping table's default name (in each tenant's schema, or in the
 * `public` schema of a tenant database).
 *
 * @internal
 */
export const defaultTableName = "tenancy_migrations"

const quoteIdent = (name: string) => `"${name.replace(/"/g, "\"\"")}"`

/**
 * The quoted, schema-qualified bookkeeping table of a tenant: its schema for
 * schema tenants, `public` for database tenants.
 *
 * @internal
 */
export const tenantTable = (schema: string, tableName: string = defaultTableName): string =>
  `${quoteIdent(schema)}.${quoteIdent(tableName)}`

/**
 * The advisory lock key of a tenant's migrations (shared by the migrator and
 * `provision`, so they serialize).
 *
 * @internal
 */
export const tenantLockKey = (tenantId: string): string => `effect-tenancy/migrate/${tenantId}`
