/**
 * The tenant store on PostgreSQL, through `@effect/sql` (use it with
 * `@effect/sql-pg`'s `PgClient`).
 *
 * - Its tables are created by its own migrations (the `@effect/sql`
 *   Migrator, in a migrations table of its own), when the layer is built.
 * - Ids and identifiers share one namespace, enforced by a unique names table,
 *   so `create` is atomic: concurrent creates of one name end in one tenant
 *   and `TenantAlreadyExists` for the others, never a check-then-insert race.
 * - `update` and `delete` compare the version in the same statement that
 *   writes (`WHERE version = $expected`): a stale write is `TenantConflict`.
 * - Listings page by id with a cursor, filter by status in SQL, and are
 *   served by an index on `(status, id)`; ids are compared byte-wise
 *   (`COLLATE "C"`), the same order as the in-memory store.
 * - API keys: only the SHA-256 of a key is stored; a key is found by its
 *   public key id and its hash compared in constant time.
 *
 * @since 0.1.0
 */
import * as Migrator from "@effect/sql/Migrator"
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Health from "../Health.js"
import { Tenant, type TenantId } from "../Tenant.js"
import * as ApiKey from "../TenantApiKey.js"
import { TenantAlreadyExists, TenantConflict, TenantNotFound, TenantStoreError } from "../TenantError.js"
import { decodeCursor, encodeCursor, statusFilter, TenantStore, validateLimit } from "../TenantStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Prefix of the tables this store creates (default `tenancy_`). */
  readonly tablePrefix?: string | undefined
  /** The table of this store's migrations (default: the prefix followed by `migrations`). */
  readonly migrationsTable?: string | undefined
  /** Run the migrations when the store is built (default `true`). */
  readonly migrate?: boolean | undefined
}

const safeName = /^[a-z_][a-z0-9_]{0,62}$/

const tableNames = (options: Options) => {
  const prefix = options.tablePrefix ?? "tenancy_"
  // Derived from the prefix, so two stores with different prefixes never share migration records.
  const migrations = options.migrationsTable ?? `${prefix}migrations`
  const names = {
    tenants: `${prefix}tenants`,
    names: `${prefix}tenant_names`,
    apiKeys: `${prefix}api_keys`,
    migrations
  }
  for (const name of Object.values(names)) {
    if (!safeName.test(name)) {
      return Effect.fail(
        new TenantStoreError({
          operation: "configure",
          cause: new Error(`table name ${JSON.stringify(name)} does not match ${safeName.source}`)
        })
      )
    }
  }
  return Effect.succeed(names)
}

type Tables = Effect.Effect.Success<ReturnType<typeof tableNames>>

const migrations = (t: Tables) =>
  Migrator.fromRecord({
    "1_create_tenants": Effect.gen(function*() {
      const sql = yield* SqlClient
      yield* sql`CREATE TABLE ${sql(t.tenants)} (
        id text COLLATE "C" PRIMARY KEY,
        identifier text COLLATE "C" NOT NULL UNIQUE,
        name text NOT NULL,
        status text NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'deleting', 'deleted')),
        tier text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        version integer NOT NULL CHECK (version >= 0)
      )`
      yield* sql`CREATE INDEX ${sql(`${t.tenants}_status_id`)} ON ${sql(t.tenants)} (status, id)`
      // One namespace for ids and identifiers: a name belongs to one tenant.
      yield* sql`CREATE TABLE ${sql(t.names)} (
        name text COLLATE "C" PRIMARY KEY,
        tenant_id text COLLATE "C" NOT NULL REFERENCES ${sql(t.tenants)} (id) ON DELETE CASCADE
      )`
      yield* sql`CREATE INDEX ${sql(`${t.names}_tenant`)} ON ${sql(t.names)} (tenant_id)`
      yield* sql`CREATE TABLE ${sql(t.apiKeys)} (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        key_id text COLLATE "C" PRIMARY KEY,
        tenant_id text COLLATE "C" NOT NULL REFERENCES ${sql(t.tenants)} (id) ON DELETE CASCADE,
        name text NOT NULL,
        key_hash text NOT NULL,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz
      )`
      yield* sql`CREATE INDEX ${sql(`${t.apiKeys}_tenant`)} ON ${sql(t.apiKeys)} (tenant_id, seq)`
    })
  })

/**
 * Runs this store's migrations (idempotent; concurrent runs serialize).
 * Returns the migrations applied now.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate = (
  options: Options = {}
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, TenantStoreError, SqlClient> =>
  Effect.flatMap(tableNames(options), (t) =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      // The Migrator creates its table after probing for it, which races when
      // several instances start at once; create it first, under a lock.
      yield* sql.withTransaction(
        Effect.zipRight(
          sql`SELECT pg_advisory_xact_lock(hashtext(${`effect-tenancy:${t.migrations}`}))`,
          sql`CREATE TABLE IF NOT EXISTS ${sql(t.migrations)} (
            migration_id integer PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            name text NOT NULL
          )`
        )
      )
      return yield* Migrator.make({})({ loader: migrations(t), table: t.migrations })
    }).pipe(Effect.mapError((cause) => new TenantStoreError({ operation: "migrate", cause }))))

interface TenantRow {
  readonly id: string
  readonly identifier: string
  readonly name: string
  readonly status: string
  readonly tier: string
  readonly metadata: unknown
  readonly created_at: Date
  readonly updated_at: Date
  readonly version: number
}

interface ApiKeyRow {
  readonly key_id: string
  readonly tenant_id: string
  readonly name: string
  readonly key_hash: string
  readonly created_at: Date
  readonly revoked_at: Date | null
  readonly seq?: unknown
}

const decodeTenant = Schema.decodeUnknown(Tenant)
const decodeApiKeyInfo = Schema.decodeUnknown(ApiKey.ApiKeyInfo)

const toTenant = (row: TenantRow): Effect.Effect<Tenant, TenantStoreError> =>
  decodeTenant({
    id: row.id,
    identifier: row.identifier,
    name: row.name,
    status: row.status,
    tier: row.tier,
    metadata: row.metadata,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    version: row.version
  }).pipe(Effect.mapError((error) => corrupt("decode tenant", error)))

const toApiKeyInfo = (row: ApiKeyRow): Effect.Effect<ApiKey.ApiKeyInfo, TenantStoreError> =>
  decodeApiKeyInfo({
    keyId: row.key_id,
    tenantId: row.tenant_id,
    name: row.name,
    displayPrefix: ApiKey.displayPrefix(row.key_id),
    createdAt: row.created_at.toISOString(),
    revokedAt: row.revoked_at === null ? null : row.revoked_at.toISOString()
  }).pipe(Effect.mapError((error) => corrupt("decode api key", error)))

const corrupt = (operation: string, error: ParseResult.ParseError) =>
  new TenantStoreError({ operation, cause: new Error(ParseResult.TreeFormatter.formatErrorSync(error)) })

const storeError = (operation: string) => (cause: SqlError) => new TenantStoreError({ operation, cause })

const pgCode = (error: SqlError): string | undefined => {
  const cause = error.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

const uniqueViolation = "23505"
const foreignKeyViolation = "23503"

/**
 * Builds the store and the API-key store over the `SqlClient` in context,
 * running the migrations first unless `migrate: false`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<
  { readonly store: TenantStore["Type"]; readonly apiKeys: ApiKey.TenantApiKeyStore["Type"] },
  TenantStoreError,
  SqlClient
> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const t = yield* tableNames(options)
    if (options.migrate !== false) yield* migrate(options)
    const tenants = sql(t.tenants)
    const names = sql(t.names)
    const apiKeys = sql(t.apiKeys)

    const one = (rows: ReadonlyArray<TenantRow>) =>
      rows.length === 0 ? Effect.succeedNone : Effect.map(toTenant(rows[0]), Option.some)

    const values = (tenant: Tenant) => ({
      identifier: tenant.identifier,
      name: tenant.name,
      status: tenant.status,
      tier: tenant.tier,
      metadata: JSON.stringify(tenant.metadata),
      updatedAt: DateTime.toDateUtc(tenant.updatedAt),
      version: tenant.version
    })

    const claimName = (name: string, id: TenantId, conflictOn: "id" | "identifier") =>
      sql`INSERT INTO ${names} (name, tenant_id) VALUES (${name}, ${id})`.pipe(
        Effect.catchIf(
          (e) => pgCode(e) === uniqueViolation,
          () => new TenantAlreadyExists({ tenantId: id, conflictOn })
        )
      )

    const store = TenantStore.of({
      get: (id) =>
        sql<TenantRow>`SELECT * FROM ${tenants} WHERE id = ${id}`.pipe(
          Effect.mapError(storeError("get")),
          Effect.flatMap(one)
        ),
      getByIdentifier: (identifier) =>
        sql<TenantRow>`SELECT * FROM ${tenants} WHERE identifier = ${identifier}`.pipe(
          Effect.mapError(storeError("getByIdentifier")),
          Effect.flatMap(one)
        ),
      list: (listOptions) =>
        Effect.gen(function*() {
          const limit = yield* validateLimit(listOptions.limit)
          const after = listOptions.cursor === undefined ? undefined : yield* decodeCursor(listOptions.cursor)
          const statuses = statusFilter(listOptions.status)
          const conditions = [
            ...(after === undefined ? [] : [sql`id > ${after}`]),
            ...(statuses === undefined ? [] : [sql`status IN ${sql.in(Array.from(statuses))}`])
          ]
          const rows = yield* sql<TenantRow>`SELECT * FROM ${tenants} WHERE ${sql.and(conditions)} ORDER BY id LIMIT ${
            limit + 1
          }`.pipe(Effect.mapError(storeError("list")))
          const page = yield* Effect.forEach(rows.slice(0, limit), toTenant)
          const cursor = rows.length > limit ? Option.some(encodeCursor(page[page.length - 1].id)) : Option.none()
          return { tenants: page, cursor }
        }),
      count: (countOptions) => {
        const statuses = statusFilter(countOptions.status)
        const where = statuses === undefined ? sql`TRUE` : sql`status IN ${sql.in(Array.from(statuses))}`
        return sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${tenants} WHERE ${where}`.pipe(
          Effect.map((rows) => rows[0].n),
          Effect.mapError(storeError("count"))
        )
      },
      create: (tenant) =>
        Effect.gen(function*() {
          const v = values(tenant)
          yield* sql`INSERT INTO ${tenants} (id, identifier, name, status, tier, metadata, created_at, updated_at, version)
            VALUES (${tenant.id}, ${v.identifier}, ${v.name}, ${v.status}, ${v.tier}, ${v.metadata}::jsonb,
                    ${DateTime.toDateUtc(tenant.createdAt)}, ${v.updatedAt}, ${v.version})`.pipe(
            Effect.catchIf(
              (e) => pgCode(e) === uniqueViolation,
              // A taken id (primary key) or a taken identifier (unique column).
              (e) =>
                new TenantAlreadyExists({
                  tenantId: tenant.id,
                  conflictOn: String((e.cause as { constraint?: unknown }).constraint ?? "").endsWith("_pkey")
                    ? "id"
                    : "identifier"
                })
            )
          )
          yield* claimName(tenant.id, tenant.id, "id")
          if (tenant.identifier !== tenant.id) yield* claimName(tenant.identifier, tenant.id, "identifier")
          return tenant
        }).pipe(
          sql.withTransaction,
          Effect.catchTag("SqlError", (e) => Effect.fail(storeError("create")(e)))
        ),
      update: ({ expectedVersion, tenant }) =>
        Effect.gen(function*() {
          const current = yield* sql<{ readonly identifier: string; readonly version: number }>`
            SELECT identifier, version FROM ${tenants} WHERE id = ${tenant.id} FOR UPDATE`
          if (current.length === 0) return yield* new TenantNotFound({ tenantId: tenant.id })
          if (current[0].version !== expectedVersion) {
            return yield* new TenantConflict({
              tenantId: tenant.id,
              expectedVersion,
              actualVersion: current[0].version
            })
          }
          const previousIdentifier = current[0].identifier
          if (previousIdentifier !== tenant.identifier) {
            if (previousIdentifier !== tenant.id) {
              yield* sql`DELETE FROM ${names} WHERE name = ${previousIdentifier} AND tenant_id = ${tenant.id}`
            }
            if (tenant.identifier !== tenant.id) yield* claimName(tenant.identifier, tenant.id, "identifier")
          }
          const v = values(tenant)
          const rows = yield* sql<TenantRow>`UPDATE ${tenants} SET
              identifier = ${v.identifier}, name = ${v.name}, status = ${v.status}, tier = ${v.tier},
              metadata = ${v.metadata}::jsonb, updated_at = ${v.updatedAt}, version = ${v.version}
            WHERE id = ${tenant.id} AND version = ${expectedVersion}
            RETURNING *`
          return yield* toTenant(rows[0])
        }).pipe(
          sql.withTransaction,
          Effect.catchTag("SqlError", (e) => Effect.fail(storeError("update")(e)))
        ),
      delete: ({ expectedVersion, id }) =>
        Effect.gen(function*() {
          const deleted = expectedVersion === undefined
            ? yield* sql`DELETE FROM ${tenants} WHERE id = ${id} RETURNING id`
            : yield* sql`DELETE FROM ${tenants} WHERE id = ${id} AND version = ${expectedVersion} RETURNING id`
          if (deleted.length > 0) return
          const current = yield* sql<{ readonly version: number }>`SELECT version FROM ${tenants} WHERE id = ${id}`
          if (current.length === 0) return yield* new TenantNotFound({ tenantId: id })
          return yield* new TenantConflict({
            tenantId: id,
            expectedVersion: expectedVersion ?? current[0].version,
            actualVersion: current[0].version
          })
        }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(storeError("delete")(e)))),
      health: Health.probe("tenant-store:postgres", sql`SELECT 1`)
    })

    const keyStore = ApiKey.TenantApiKeyStore.of({
      create: ({ name, tenantId }) =>
        Effect.gen(function*() {
          const { key, keyId } = yield* ApiKey.generate
          const keyHash = yield* ApiKey.hash(key)
          const now = yield* DateTime.now
          const rows = yield* sql<ApiKeyRow>`INSERT INTO ${apiKeys} (key_id, tenant_id, name, key_hash, created_at)
            VALUES (${keyId}, ${tenantId}, ${name ?? ""}, ${keyHash}, ${DateTime.toDateUtc(now)})
            RETURNING *`.pipe(
            Effect.catchIf((e) => pgCode(e) === foreignKeyViolation, () => new TenantNotFound({ tenantId })),
            Effect.catchTag("SqlError", (e) => Effect.fail(storeError("createApiKey")(e)))
          )
          return { key: Redacted.make(key), info: yield* toApiKeyInfo(rows[0]) }
        }),
      lookup: (input) => {
        const presented = Redacted.isRedacted(input) ? Redacted.value(input) : input
        return Option.match(ApiKey.parseKeyId(presented), {
          onNone: () => Effect.succeedNone,
          onSome: (keyId) =>
            sql<ApiKeyRow>`SELECT * FROM ${apiKeys} WHERE key_id = ${keyId}`.pipe(
              Effect.mapError(storeError("lookupApiKey")),
              Effect.flatMap((rows) =>
                rows.length === 0
                  ? Effect.succeedNone
                  : Effect.flatMap(
                    toApiKeyInfo(rows[0]),
                    (info) => ApiKey.verify(presented, { keyHash: rows[0].key_hash, info })
                  )
              )
            )
        })
      },
      revoke: (keyId) =>
        sql<ApiKeyRow>`UPDATE ${apiKeys} SET revoked_at = now()
          WHERE key_id = ${keyId} AND revoked_at IS NULL RETURNING *`.pipe(
          Effect.mapError(storeError("revokeApiKey")),
          Effect.flatMap((rows): Effect.Effect<ApiKey.ApiKeyInfo, ApiKey.ApiKeyNotFound | TenantStoreError> =>
            rows.length === 0 ? Effect.fail(new ApiKey.ApiKeyNotFound({ keyId })) : toApiKeyInfo(rows[0])
          )
        ),
      list: (tenantId) =>
        sql<ApiKeyRow>`SELECT * FROM ${apiKeys} WHERE tenant_id = ${tenantId} ORDER BY seq`.pipe(
          Effect.mapError(storeError("listApiKeys")),
          Effect.flatMap((rows) => Effect.forEach(rows, toApiKeyInfo))
        )
    })

    return { store, apiKeys: keyStore }
  })

/**
 * The Postgres tenant store and API-key store, over the `SqlClient` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<TenantStore | ApiKey.TenantApiKeyStore, TenantStoreError, SqlClient> =>
  Layer.effectContext(
    Effect.map(
      make(options),
      ({ apiKeys, store }) => Context.make(TenantStore, store).pipe(Context.add(ApiKey.TenantApiKeyStore, apiKeys))
    )
  )

/**
 * `layer`, with its options read from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<TenantStore | ApiKey.TenantApiKeyStore, TenantStoreError | ConfigError.ConfigError, SqlClient> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))
