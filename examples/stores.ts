/**
 * The tenant registry on Postgres, with the Redis read-through cache in front.
 *
 * The application owns its connections: a `PgClient` layer for Postgres and
 * an ioredis client for Redis. The Postgres store creates its tables on start
 * (its own migrations); the cache needs the store it fronts and the client.
 *
 * Needs the local Postgres and Redis (or set TENANCY_DATABASE_URL / TENANCY_REDIS_URL).
 * Run with `npx tsx examples/stores.ts`.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { Config, Console, Effect, Layer, Redacted } from "effect"
import * as RedisClient from "effect-tenancy/RedisClient"
import { TenantApiKeyStore } from "effect-tenancy/TenantApiKey"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as RedisCache from "effect-tenancy/TenantStore/Redis"
import * as SqlStore from "effect-tenancy/TenantStore/Sql"
import { Redis } from "ioredis"
import { pathToFileURL } from "node:url"

// Connections: owned by the application, configured from the environment.
const Postgres = PgClient.layerConfig({
  url: Config.redacted("TENANCY_DATABASE_URL").pipe(
    Config.withDefault(Redacted.make("postgres://postgres@127.0.0.1:5432/test"))
  )
})
const Redis_ = RedisClient.layerScoped(
  Effect.flatMap(
    Config.string("TENANCY_REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379")),
    (url) => Effect.sync(() => new Redis(url))
  )
)

// Stores: Postgres (tables prefixed `example_`), the cache in front of it, the registry over both.
const Stores = SqlStore.layer({ tablePrefix: "example_" }).pipe(Layer.provide(Postgres))
const CachedStore = RedisCache.layer({ prefix: "example", ttl: "5 minutes", negativeTtl: "5 seconds" }).pipe(
  Layer.provide(Stores),
  Layer.provide(Redis_)
)
const Registry = TenantRegistry.layer().pipe(Layer.provide(CachedStore))

export const program = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  const keys = yield* TenantApiKeyStore
  const id = `acme-${Date.now().toString(36)}`
  const tenant = yield* registry.register({ id, name: "Acme Corporation", tier: "enterprise" })
  yield* Console.log(`registered ${tenant.id} in Postgres`)
  const greeting = yield* withTenant(Effect.map(CurrentTenant, (t) => `hello from ${t.name}`), id)
  yield* Console.log(greeting)
  const created = yield* keys.create({ tenantId: tenant.id, name: "example" })
  const found = yield* keys.lookup(created.key)
  yield* Console.log(
    `API key ${created.info.displayPrefix} resolves to ${found._tag === "Some" ? found.value.tenantId : "-"}`
  )
  yield* registry.suspend(id)
  const refused = yield* Effect.flip(withTenant(Effect.void, id))
  yield* Console.log(`after suspension: ${refused._tag}`)
  yield* registry.unregister(id)
  return refused._tag
}).pipe(Effect.provide(Layer.merge(Registry, Stores)))

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  Effect.runPromise(program).then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })
}
