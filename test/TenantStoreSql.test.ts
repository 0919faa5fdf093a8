import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Config, ConfigProvider, Context, Effect, Layer, Option, Redacted } from "effect"
import { withTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import { TenantStore } from "effect-tenancy/TenantStore"
import * as SqlStore from "effect-tenancy/TenantStore/Sql"
import { suite as apiKeySuite } from "./suites/TenantApiKeySuite.js"
import { suite } from "./suites/TenantStoreSuite.js"
import { closedPort, freshDatabase, freshDatabaseUrl, tcpProxy, withPort } from "./utils/services.js"

const storeLayer = SqlStore.layer().pipe(Layer.provide(freshDatabase("tenancy_store")))

suite("postgres", storeLayer)
apiKeySuite("postgres", storeLayer)

describe("TenantStore/Sql", () => {
  it.layer(freshDatabase("tenancy_migrate"), { timeout: "30 seconds" })((it) => {
    it.effect("migrations are idempotent and safe to run concurrently", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const runs = yield* Effect.all(
          [
            SqlStore.migrate({ tablePrefix: "m_", migrationsTable: "m_migrations" }),
            SqlStore.migrate({
              tablePrefix: "m_",
              migrationsTable: "m_migrations"
            }),
            SqlStore.migrate({ tablePrefix: "m_", migrationsTable: "m_migrations" })
          ],
          { concurrency: "unbounded" }
        )
        assert.strictEqual(runs.flat().length, 1, "one run applied the migration, the others found it applied")
        const again = yield* SqlStore.migrate({ tablePrefix: "m_", migrationsTable: "m_migrations" })
        assert.strictEqual(again.length, 0)
        const tables = yield* sql<{ readonly table_name: string }>`
          SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'm\\_%' ORDER BY table_name`
        assert.deepStrictEqual(tables.map((t) => t.table_name), [
          "m_api_keys",
          "m_migrations",
          "m_tenant_names",
          "m_tenants"
        ])
        const indexes = yield* sql<{ readonly indexdef: string }>`
          SELECT indexdef FROM pg_indexes WHERE tablename = 'm_tenants'`
        assert.isTrue(indexes.some((i) => i.indexdef.includes("(status, id)")), "listing is served by an index")
      }))

    it.effect("refuses unsafe table names with a typed error", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(SqlStore.make({ tablePrefix: "x\"; DROP TABLE y; --" }))
        assert.strictEqual(error._tag, "TenantStoreError")
        assert.strictEqual(error.operation, "configure")
      }))

    it.effect("layerConfig reads its options from Config", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const layer = SqlStore.layerConfig({ tablePrefix: Config.string("PREFIX") })
        yield* Effect.flatMap(TenantStore, (store) => store.count({})).pipe(
          Effect.provide(layer),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["PREFIX", "cfg_"]])))
        )
        const rows = yield* sql`SELECT 1 FROM information_schema.tables WHERE table_name = 'cfg_tenants'`
        assert.strictEqual(rows.length, 1)
        const missing = yield* Effect.flip(
          Effect.flatMap(TenantStore, (store) => store.count({})).pipe(
            Effect.provide(layer),
            Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
          )
        )
        assert.strictEqual(missing._tag, "ConfigError" as never)
      }))

    it.effect("the registry runs on the Postgres store", () =>
      Effect.gen(function*() {
        const registry = yield* TenantRegistry.TenantRegistry
        yield* registry.register({ id: "acme", name: "Acme", tier: "enterprise", metadata: { seats: 10 } })
        const suspended = yield* registry.suspend("acme")
        assert.strictEqual(suspended.version, 1)
        const again = yield* registry.get("acme")
        assert.strictEqual(again.status, "suspended")
        assert.deepStrictEqual(again.metadata, { seats: 10 })
      }).pipe(Effect.provide(TenantRegistry.layer().pipe(Layer.provide(SqlStore.layer({ tablePrefix: "reg_" }))))))
  })

  it.scoped("a Postgres outage is a typed TenantStoreError, health says down, and it recovers", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabaseUrl("tenancy_outage")
      const proxy = yield* tcpProxy({ host: "127.0.0.1", port: Number(new URL(url).port || 5432) })
      const context = yield* Layer.build(
        SqlStore.layer().pipe(
          Layer.provide(PgClient.layer({ url: Redacted.make(withPort(url, proxy.port)), connectTimeout: "1 second" }))
        )
      )
      const store = Context.get(context, TenantStore)
      const registry = yield* TenantRegistry.make().pipe(Effect.provide(context))
      yield* registry.register({ id: "acme", name: "Acme" })
      assert.strictEqual((yield* store.health).status, "up")

      yield* proxy.cut
      const error = yield* Effect.flip(store.get("acme" as never))
      assert.strictEqual(error._tag, "TenantStoreError")
      assert.strictEqual(error.operation, "get")
      const entering = yield* Effect.flip(
        withTenant(Effect.void, "acme").pipe(
          Effect.provideService(TenantRegistry.TenantRegistry, registry)
        )
      )
      assert.strictEqual(entering._tag, "TenantStoreError", "fail closed: an outage never lets a request in")
      const health = yield* store.health
      assert.strictEqual(health.status, "down")
      assert.isString(health.detail)
    }))

  it.effect("building against an unreachable server fails at start, typed", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const client = PgClient.layer({
        url: Redacted.make(`postgres://postgres@127.0.0.1:${port}/test`),
        connectTimeout: "1 second"
      })
      const error = yield* Effect.flip(Layer.build(SqlStore.layer().pipe(Layer.provide(client))).pipe(Effect.scoped))
      assert.strictEqual(error._tag, "SqlError")
    }))

  it.effect("get of an unknown tenant is None", () =>
    Effect.gen(function*() {
      const store = yield* TenantStore
      assert.isTrue(Option.isNone(yield* store.get("nobody" as never)))
      const health = yield* store.health
      assert.strictEqual(health.status, "up")
      assert.strictEqual(health.component, "tenant-store:postgres")
    }).pipe(Effect.provide(storeLayer)))
})
