import type { SqlClient } from "@effect/sql/SqlClient"
import type { ConfigError, Effect, Layer, Option, Redacted } from "effect"
import { Config } from "effect"
import type { HealthStatus } from "effect-tenancy/Health"
import * as RedisClient from "effect-tenancy/RedisClient"
import type { Tenant, TenantId } from "effect-tenancy/Tenant"
import * as TenantApiKey from "effect-tenancy/TenantApiKey"
import type {
  InvalidPageRequest,
  TenantAlreadyExists,
  TenantConflict,
  TenantNotFound,
  TenantStoreError
} from "effect-tenancy/TenantError"
import * as TenantStore from "effect-tenancy/TenantStore"
import * as RedisCache from "effect-tenancy/TenantStore/Redis"
import * as SqlStore from "effect-tenancy/TenantStore/Sql"
import type { Redis } from "ioredis"
import { describe, expect, test } from "tstyche"

declare const store: TenantStore.TenantStore["Type"]
declare const keys: TenantApiKey.TenantApiKeyStore["Type"]
declare const id: TenantId
declare const tenant: Tenant

describe("TenantStore", () => {
  test("methods", () => {
    expect(store.get(id)).type.toBe<Effect.Effect<Option.Option<Tenant>, TenantStoreError>>()
    expect(store.list({})).type.toBe<Effect.Effect<TenantStore.Page, InvalidPageRequest | TenantStoreError>>()
    expect(store.create(tenant)).type.toBe<Effect.Effect<Tenant, TenantAlreadyExists | TenantStoreError>>()
    expect(store.update({ tenant, expectedVersion: 1 })).type.toBe<
      Effect.Effect<Tenant, TenantNotFound | TenantConflict | TenantAlreadyExists | TenantStoreError>
    >()
    expect(store.health).type.toBe<Effect.Effect<HealthStatus>>()
    expect(store.get).type.not.toBeCallableWith("acme")
  })

  test("API keys", () => {
    expect(keys.create({ tenantId: id })).type.toBe<
      Effect.Effect<TenantApiKey.CreatedApiKey, TenantNotFound | TenantStoreError>
    >()
    expect(keys.lookup("tnk_...")).type.toBe<Effect.Effect<Option.Option<TenantApiKey.ApiKeyInfo>, TenantStoreError>>()
    expect<TenantApiKey.CreatedApiKey["key"]>().type.toBe<Redacted.Redacted<string>>()
    expect(keys.revoke("abc")).type.toBe<
      Effect.Effect<TenantApiKey.ApiKeyInfo, TenantApiKey.ApiKeyNotFound | TenantStoreError>
    >()
  })
})

describe("layers", () => {
  test("memory", () => {
    expect(TenantStore.layerMemory).type.toBe<Layer.Layer<TenantStore.TenantStore>>()
    expect(TenantApiKey.layerMemory).type.toBe<
      Layer.Layer<TenantApiKey.TenantApiKeyStore, never, TenantStore.TenantStore>
    >()
  })

  test("Postgres: needs a SqlClient, provides both stores, fails with TenantStoreError", () => {
    expect(SqlStore.layer()).type.toBe<
      Layer.Layer<TenantStore.TenantStore | TenantApiKey.TenantApiKeyStore, TenantStoreError, SqlClient>
    >()
    expect(SqlStore.layerConfig({ tablePrefix: Config.string("PREFIX") })).type.toBe<
      Layer.Layer<
        TenantStore.TenantStore | TenantApiKey.TenantApiKeyStore,
        TenantStoreError | ConfigError.ConfigError,
        SqlClient
      >
    >()
    expect(SqlStore.layer).type.not.toBeCallableWith({ tablePrefix: 42 })
  })

  test("Redis cache: needs the primary store and a RedisClient, provides the store", () => {
    expect(RedisCache.layer({ ttl: "1 minute" })).type.toBe<
      Layer.Layer<TenantStore.TenantStore, never, TenantStore.TenantStore | RedisClient.RedisClient>
    >()
    expect(RedisCache.layerConfig({ ttl: Config.duration("TTL") })).type.toBe<
      Layer.Layer<TenantStore.TenantStore, ConfigError.ConfigError, TenantStore.TenantStore | RedisClient.RedisClient>
    >()
    expect(RedisCache.layer).type.not.toBeCallableWith({ ttl: "soon" })
  })

  test("RedisClient wraps an existing client", () => {
    expect(RedisClient.layer).type.toBeCallableWith({} as Redis)
    expect(RedisClient.layer({} as Redis)).type.toBe<Layer.Layer<RedisClient.RedisClient>>()
  })
})
