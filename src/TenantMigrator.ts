/**
 * Migrations across all tenants.
 *
 * - Shared migrations (the tables RLS tenants share, shared objects) run
 *   once, on the `SqlClient` in context, before any tenant.
 * - Tenant migrations run for every schema and database tenant (RLS tenants
 *   live in the shared tables and are reported as skipped), with bounded
 *   concurrency. Each tenant is migrated in one transaction that takes a
 *   per-tenant advisory lock with a `lock_timeout`: two migrators at once
 *   serialize per tenant and never apply a migration twice, and an
 *   interrupted or failed tenant is left untouched (all or nothing).
 * - Each tenant gets a report: `applied`, `up-to-date`, `pending` (dry run),
 *   `failed` (with its `MigrationFailed`) or `skipped` (with a reason), the
 *   migrations applied and the duration. Failures are collected
 *   (`onError: "continue"`, the default) or stop the run (`"fail-fast"`:
 *   tenants not yet started are skipped, those in flight finish).
 * - Suspended (and provisioning) tenants are migrated too; the run is
 *   administrative work and needs `SystemAccess`.
 * - A re-run applies only what is missing; a dry run lists what would run;
 *   a subset (ids, a predicate, or the first N) can be migrated first as a
 *   canary. The run is interruptible.
 *
 * Migrations are `{ id, name, up }` values, or come from `@effect/sql`'s
 * loaders (`Migrator.fromRecord`, `fromGlob`, ...), so existing migration
 * files can be reused. The bookkeeping table has the columns of
 * `@effect/sql`'s migrations table.
 *
 * @since 0.1.0
 */
import type * as Migrator from "@effect/sql/Migrator"
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as internal from "./internal/tenantMigrations.js"
import type { Tenant, TenantStatus } from "./Tenant.js"
import { asTenant, SystemAccess } from "./TenantContext.js"
import type { InvalidPageRequest, TenantStoreError } from "./TenantError.js"
import { isTenantError } from "./TenantError.js"
import { TenantIsolation } from "./TenantIsolation.js"
import { TenantRegistry } from "./TenantRegistry.js"

/**
 * One migration: a positive integer id (strictly increasing in a list), a
 * name, and the effect that applies it with the tenant's `SqlClient` (the
 * connection is positioned on the tenant: unqualified names resolve in the
 * tenant's schema or database).
 *
 * @since 0.1.0
 * @category models
 */
export type Migration = internal.Migration

/**
 * A migration's id and name.
 *
 * @since 0.1.0
 * @category models
 */
export type MigrationInfo = internal.MigrationInfo

/**
 * Why a tenant (or the shared migrations) did not migrate. See its `reason`.
 *
 * @since 0.1.0
 * @category errors
 */
export const MigrationFailed: typeof internal.MigrationFailed = internal.MigrationFailed

/**
 * @since 0.1.0
 * @category errors
 */
export type MigrationFailed = internal.MigrationFailed

/**
 * A list of migrations, or an `@effect/sql` `Migrator.Loader` (for example
 * `Migrator.fromRecord({ "1_create_notes": effect })`).
 *
 * @since 0.1.0
 * @category models
 */
export type Migrations = ReadonlyArray<Migration> | Migrator.Loader

/**
 * Migrations from a record keyed `<id>_<name>`, the shape of `@effect/sql`'s
 * `Migrator.fromRecord`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromRecord = (
  record: Record<string, Effect.Effect<unknown, unknown, SqlClient>>
): ReadonlyArray<Migration> =>
  Object.entries(record).flatMap(([key, up]) => {
    const match = /^(\d+)_(.+)$/.exec(key)
    return match === null ? [] : [{ id: Number(match[1]), name: match[2], up }]
  }).sort((a, b) => a.id - b.id)

/**
 * Resolves an `@effect/sql` loader into migrations (the modules it imports
 * may export the effect as `default`, as with `Migrator.fromGlob`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromLoader = (
  loader: Migrator.Loader
): Effect.Effect<ReadonlyArray<Migration>, MigrationFailed, SqlClient> =>
  loader.pipe(
    Effect.mapError((cause) => new internal.MigrationFailed({ reason: "invalid-migrations", cause })),
    Effect.flatMap((resolved) =>
      Effect.forEach(resolved, ([id, name, load]) =>
        load.pipe(
          Effect.catchAllDefect((defect) => Effect.fail(defect)),
          Effect.flatMap((loaded: unknown) => {
            const up = Effect.isEffect(loaded)
              ? loaded
              : Predicate.hasProperty(loaded, "default")
              ? (Predicate.hasProperty(loaded.default, "default") ? loaded.default.default : loaded.default)
              : undefined
            return Effect.isEffect(up)
              ? Effect.succeed<Migration>({ id, name, up: up as Effect.Effect<unknown, unknown, SqlClient> })
              : Effect.fail(new Error(`migration ${id}_${name} does not export an Effect`))
          }),
          Effect.mapError((cause) =>
            new internal.MigrationFailed({ reason: "invalid-migrations", migrationId: id, migrationName: name, cause })
          )
        ))
    ),
    Effect.map((ms) => [...ms].sort((a, b) => a.id - b.id))
  )

const resolve = (
  migrations: Migrations | undefined
): Effect.Effect<ReadonlyArray<Migration>, MigrationFailed, SqlClient> =>
  migrations === undefined
    ? Effect.succeed([])
    : Effect.isEffect(migrations)
    ? fromLoader(migrations)
    : Effect.as(internal.validate(migrations), migrations)

/**
 * How a tenant's data is isolated, as far as migrations care: schema and
 * database tenants are migrated; rls tenants are skipped (their tables are
 * shared and migrated once).
 *
 * @since 0.1.0
 * @category models
 */
export type Strategy = "schema" | "rls" | "database"

/**
 * Where tenant migrations run. `session` runs `use` in a transaction on a
 * connection positioned on the tenant (with DDL rights), passing the quoted,
 * qualified bookkeeping table of that tenant, and maps its own failures
 * (connection, pool, missing schema) to `MigrationFailed` with reason
 * `"unavailable"`. `TenantIsolation` provides one; `schemaTarget` is one for
 * plain schema-per-tenant layouts.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly strategyOf: (tenant: Tenant) => Strategy
  readonly session: <A>(
    tenant: Tenant,
    use: (table: string) => Effect.Effect<A, MigrationFailed, SqlClient>
  ) => Effect.Effect<A, MigrationFailed>
  /**
   * Run after the shared migrations (not in a dry run), before any tenant:
   * e.g. the RLS safety check, once the shared tables exist.
   */
  readonly check?: Effect.Effect<void, MigrationFailed> | undefined
}

const unavailable = (cause: unknown, detail?: string) =>
  new internal.MigrationFailed({
    reason: "unavailable",
    cause,
    ...(detail === undefined ? {} : { detail })
  })

/**
 * The schema name of a tenant in the default layout: `tenant_<id>` with `-`
 * mapped to `_` (always quoted when used).
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultSchemaName = (tenant: Tenant): string => `tenant_${tenant.id.replace(/-/g, "_")}`

const safeName = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * A target for schema-per-tenant layouts on the `SqlClient` it is given:
 * every tenant is a schema tenant (unless `strategyOf` says otherwise), its
 * schema is `schemaName(tenant)`, and each session is a transaction whose
 * first statement sets `search_path` transaction-locally. A tenant whose
 * schema does not exist fails with reason `"unavailable"`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const schemaTarget = (
  sql: SqlClient,
  options: {
    readonly schemaName?: ((tenant: Tenant) => string) | undefined
    readonly strategyOf?: ((tenant: Tenant) => Strategy) | undefined
    readonly tableName?: string | undefined
  } = {}
): Target => ({
  strategyOf: options.strategyOf ?? (() => "schema"),
  session: (tenant, use) => {
    const schema = (options.schemaName ?? defaultSchemaName)(tenant)
    if (!safeName.test(schema)) {
      return Effect.fail(unavailable(undefined, `schema name ${JSON.stringify(schema)} is not safe`))
    }
    const quoted = `"${schema}"`
    return sql.withTransaction(
      Effect.gen(function*() {
        const rows = yield* Effect.mapError(
          sql<
            { readonly schema: string | null }
          >`SELECT set_config('search_path', ${quoted}, true), current_schema() AS schema`,
          (cause) => unavailable(cause)
        )
        if (rows[0]?.schema !== schema) {
          return yield* Effect.fail(unavailable(undefined, `schema ${quoted} does not exist`))
        }
        return yield* use(internal.tenantTable(schema, options.tableName))
      })
    ).pipe(
      Effect.catchIf(
        (e): e is SqlError => !(e instanceof internal.MigrationFailed),
        (cause) => Effect.fail(unavailable(cause))
      ),
      Effect.provideService(SqlClient, sql)
    )
  }
})

const checkSchema = (sql: SqlClient, schema: string) =>
  Effect.flatMap(
    Effect.mapError(sql<{ readonly schema: string | null }>`SELECT current_schema() AS schema`, (cause) =>
      unavailable(cause)),
    (rows) =>
      rows[0]?.schema === schema
        ? Effect.void
        : Effect.fail(unavailable(undefined, `schema ${JSON.stringify(schema)} does not exist`))
  )

const asMigrationFailed = (e: unknown): MigrationFailed => e instanceof internal.MigrationFailed ? e : unavailable(e)

/**
 * The target of a `TenantIsolation` service: its strategies (rls tenants are
 * skipped), its migration sessions (the admin client, positioned on the
 * tenant: the schema's search path, or the tenant's database through its
 * admin pool), the bookkeeping table `provision` uses (the isolation's
 * `migrationsTable` unless `tableName` says otherwise), and, when some
 * tenant may use RLS, the isolation's safety check, run after the shared
 * migrations (a failure is a `MigrationFailed` with reason `"unavailable"`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromIsolation = (
  isolation: TenantIsolation["Type"],
  options: { readonly tableName?: string | undefined } = {}
): Target => ({
  strategyOf: isolation.strategyOf,
  check: isolation.mayUseRls
    ? Effect.mapError(
      isolation.check,
      (error) => unavailable(error, `the isolation safety check after the shared migrations failed: ${error.message}`)
    )
    : undefined,
  session: (tenant, use) =>
    Either.match(isolation.nameOf(tenant), {
      onLeft: (error) => Effect.fail(unavailable(error)),
      onRight: (name) => {
        const strategy = isolation.strategyOf(tenant)
        const schema = strategy === "schema" && name !== undefined ? name : "public"
        return isolation.withTenantMigrationSession(
          tenant,
          Effect.flatMap(SqlClient, (sql) =>
            Effect.zipRight(
              checkSchema(sql, schema),
              use(internal.tenantTable(schema, options.tableName ?? isolation.migrationsTable))
            ))
        ).pipe(Effect.mapError(asMigrationFailed))
      }
    })
})

/**
 * A tenant's outcome.
 *
 * @since 0.1.0
 * @category models
 */
export type TenantStatusReport = "applied" | "up-to-date" | "pending" | "failed" | "skipped"

/**
 * Why a tenant was skipped: its isolation is `rls` (migrated with the shared
 * migrations), the run stopped (`fail-fast`) before it started, or it was
 * not found (a canary id that is not a tenant, or a tenant removed while the
 * run went on).
 *
 * @since 0.1.0
 * @category models
 */
export type SkipReason = "rls" | "fail-fast" | "not-found"

/**
 * The report of one tenant.
 *
 * @since 0.1.0
 * @category models
 */
export interface TenantReport {
  readonly tenantId: string
  readonly strategy: Strategy | undefined
  readonly status: TenantStatusReport
  /** Migrations applied now (empty unless `status` is `applied`). */
  readonly applied: ReadonlyArray<MigrationInfo>
  /** Migrations that would run (dry run only). */
  readonly pending: ReadonlyArray<MigrationInfo>
  readonly duration: Duration.Duration
  readonly error: MigrationFailed | undefined
  readonly skipped: SkipReason | undefined
}

/**
 * The report of a run: the shared migrations, every selected tenant (in the
 * order they were taken), and counts per status.
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  readonly dryRun: boolean
  readonly shared: { readonly applied: ReadonlyArray<MigrationInfo>; readonly pending: ReadonlyArray<MigrationInfo> }
  readonly tenants: ReadonlyArray<TenantReport>
  readonly counts: { readonly [K in TenantStatusReport]: number }
  readonly duration: Duration.Duration
}

/**
 * Which tenants a run covers: all (the default, in id order), the given ids
 * (in the order given; ids that are not tenants are reported as skipped),
 * those a predicate accepts, or the first `n` in id order (a canary).
 *
 * @since 0.1.0
 * @category models
 */
export type Selection =
  | ReadonlyArray<string>
  | ((tenant: Tenant) => boolean)
  | { readonly first: number }

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Migrations of every schema / database tenant. */
  readonly tenant: Migrations
  /** Migrations run once on the `SqlClient` in context, before the tenants. */
  readonly shared?: Migrations | undefined
  /** Tenants migrated at once (default 4): an integer >= 1, else `MigrationFailed` `"invalid-options"`. */
  readonly concurrency?: number | undefined
  /** How long each lock may be waited for (default 10 seconds); a timeout fails that tenant. */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /** `"continue"` (default): collect failures; `"fail-fast"`: start no tenant after the first failure. */
  readonly onError?: "continue" | "fail-fast" | undefined
  /** List what would run; change nothing. */
  readonly dryRun?: boolean | undefined
  /** A subset of the tenants (canary). */
  readonly tenants?: Selection | undefined
  /** The statuses migrated (default provisioning, active and suspended). */
  readonly status?: TenantStatus | ReadonlyArray<TenantStatus> | undefined
  /** The bookkeeping table of the shared migrations (default `tenancy_shared_migrations`, in `public`). */
  readonly sharedTable?: string | undefined
}

const defaultStatuses: ReadonlyArray<TenantStatus> = ["provisioning", "active", "suspended"]

const forTenant = (error: MigrationFailed, tenantId: string): MigrationFailed =>
  new internal.MigrationFailed({
    reason: error.reason,
    tenantId,
    ...(error.migrationId === undefined ? {} : { migrationId: error.migrationId }),
    ...(error.migrationName === undefined ? {} : { migrationName: error.migrationName }),
    ...(error.detail === undefined ? {} : { detail: error.detail }),
    ...(error.cause === undefined ? {} : { cause: error.cause })
  })

// `concurrency` and `tenants.first`: whole numbers from 1 (NaN, 0 or a fraction is a caller's mistake).
const atLeastOne = (name: string, value: number): Effect.Effect<number, MigrationFailed> =>
  Number.isInteger(value) && value >= 1
    ? Effect.succeed(value)
    : Effect.fail(
      new internal.MigrationFailed({
        reason: "invalid-options",
        detail: `${name} must be an integer >= 1, got ${value}`
      })
    )

const gone = (e: unknown) =>
  isTenantError(e) && (e._tag === "TenantNotFound" || (e._tag === "TenantSuspended" && e.status === "deleted"))

/**
 * Runs the shared migrations once, then the tenant migrations on every
 * selected tenant through `target`, and returns the report. Per-tenant
 * failures are in the report; the error channel holds failures of the
 * shared migrations and of listing the tenants.
 *
 * @since 0.1.0
 * @category combinators
 */
export const runWith = (
  target: Target,
  options: Options
): Effect.Effect<
  Report,
  MigrationFailed | InvalidPageRequest | TenantStoreError,
  SqlClient | TenantRegistry | SystemAccess
> =>
  Effect.gen(function*() {
    const access = yield* SystemAccess
    const registry = yield* TenantRegistry
    const sql = yield* SqlClient
    const dryRun = options.dryRun === true
    const concurrency = yield* atLeastOne("concurrency", options.concurrency ?? 4)
    const first = Predicate.hasProperty(options.tenants, "first")
      ? yield* atLeastOne("tenants.first", (options.tenants as { readonly first: number }).first)
      : undefined
    const [sharedMigrations, tenantMigrations] = yield* Effect.all([resolve(options.shared), resolve(options.tenant)])

    const shared = sharedMigrations.length === 0
      ? { applied: [], pending: [] }
      : yield* sql.withTransaction(
        internal.applyPending({
          migrations: sharedMigrations,
          table: internal.tenantTable("public", options.sharedTable ?? "tenancy_shared_migrations"),
          lockKey: "effect-tenancy/migrate/shared",
          lockTimeout: options.lockTimeout,
          dryRun
        })
      ).pipe(
        Effect.mapError(asMigrationFailed),
        Effect.withSpan("TenantMigrator.shared")
      )
    if (!dryRun && target.check !== undefined) yield* target.check

    const selection = options.tenants
    const all = yield* Stream.runCollect(registry.stream({ status: options.status ?? defaultStatuses }))
    let tenants: ReadonlyArray<Tenant | string> = Array.from(all)
    if (Predicate.isFunction(selection)) {
      tenants = Array.from(all).filter(selection)
    } else if (Array.isArray(selection)) {
      const byId = new Map(Array.from(all, (t) => [t.id as string, t]))
      tenants = [...new Set(selection as ReadonlyArray<string>)].map((id) => byId.get(id) ?? id)
    } else if (first !== undefined) {
      tenants = Array.from(all).slice(0, first)
    }

    const stopped = yield* Ref.make(false)
    const failFast = options.onError === "fail-fast"

    const skip = (tenantId: string, reason: SkipReason, strategy?: Strategy): TenantReport => ({
      tenantId,
      strategy,
      status: "skipped",
      applied: [],
      pending: [],
      duration: Duration.zero,
      error: undefined,
      skipped: reason
    })

    const migrateOne = (tenant: Tenant): Effect.Effect<TenantReport> =>
      Effect.gen(function*() {
        const strategy = target.strategyOf(tenant)
        if (strategy === "rls") return skip(tenant.id, "rls", strategy)
        if (yield* Ref.get(stopped)) return skip(tenant.id, "fail-fast", strategy)
        const [duration, outcome] = yield* target.session(tenant, (table) =>
          internal.applyPending({
            migrations: tenantMigrations,
            table,
            lockKey: internal.tenantLockKey(tenant.id),
            lockTimeout: options.lockTimeout,
            dryRun
          })).pipe(
            asTenant(tenant.id),
            Effect.either,
            Effect.timed
          )
        if (outcome._tag === "Left") {
          const error = outcome.left
          if (gone(error)) return skip(tenant.id, "not-found", strategy)
          if (failFast) yield* Ref.set(stopped, true)
          const failed = forTenant(error instanceof internal.MigrationFailed ? error : unavailable(error), tenant.id)
          yield* Effect.logWarning("tenant migration failed").pipe(
            Effect.annotateLogs({ "tenant.id": tenant.id, error: failed.message })
          )
          return {
            tenantId: tenant.id,
            strategy,
            status: "failed",
            applied: [],
            pending: [],
            duration,
            error: failed,
            skipped: undefined
          } satisfies TenantReport
        }
        const { applied, pending } = outcome.right
        return {
          tenantId: tenant.id,
          strategy,
          status: applied.length > 0 ? "applied" : pending.length > 0 ? "pending" : "up-to-date",
          applied,
          pending,
          duration,
          error: undefined,
          skipped: undefined
        } satisfies TenantReport
      }).pipe(
        Effect.provideService(SystemAccess, access),
        Effect.provideService(TenantRegistry, registry),
        Effect.withSpan("TenantMigrator.tenant", { attributes: { "tenant.id": tenant.id } })
      )

    const [duration, reports] = yield* Effect.timed(
      Effect.forEach(
        tenants,
        (tenant) => typeof tenant === "string" ? Effect.succeed(skip(tenant, "not-found")) : migrateOne(tenant),
        { concurrency }
      )
    )
    const counts = { applied: 0, "up-to-date": 0, pending: 0, failed: 0, skipped: 0 }
    for (const r of reports) counts[r.status]++
    return { dryRun, shared, tenants: reports, counts, duration }
  }).pipe(Effect.withSpan("TenantMigrator.run"))

/**
 * The first failed tenant of a report, if any.
 *
 * @since 0.1.0
 * @category accessors
 */
export const firstFailure = (report: Report): Option.Option<TenantReport> =>
  Option.fromNullable(report.tenants.find((t) => t.status === "failed"))

/**
 * Runs the shared migrations once on the `SqlClient` in context (an owner
 * or admin connection), then the tenant migrations on every selected schema
 * and database tenant of `TenantIsolation` (rls tenants are skipped), and
 * returns the report. See `runWith` and `Options`.
 *
 * ```ts
 * const report = yield* TenantMigrator.run({ tenant: migrations, concurrency: 8 }).pipe(
 *   TenantContext.withSystemAccess("deploy: migrations")
 * )
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const run = (
  options: Options & { readonly tableName?: string | undefined }
): Effect.Effect<
  Report,
  MigrationFailed | InvalidPageRequest | TenantStoreError,
  TenantIsolation | SqlClient | TenantRegistry | SystemAccess
> => Effect.flatMap(TenantIsolation, (isolation) => runWith(fromIsolation(isolation, options), options))
