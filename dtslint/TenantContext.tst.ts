import { Context, Effect, type Option, pipe } from "effect"
import type { Tenant, TenantId } from "effect-tenancy/Tenant"
import * as TenantContext from "effect-tenancy/TenantContext"
import type { NoCurrentTenant, TenantLookupError } from "effect-tenancy/TenantError"
import type { InvalidPageRequest, TenantStoreError } from "effect-tenancy/TenantError"
import type * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import { describe, expect, test } from "tstyche"

class Database extends Context.Tag("dtslint/Database")<Database, { readonly query: (sql: string) => number }>() {}

const greet = Effect.map(TenantContext.CurrentTenant, (tenant) => `hello ${tenant.name}`)
const needsBoth = Effect.zipRight(Database, greet)
const failing = Effect.zipRight(Effect.fail("oops" as const), greet)

describe("CurrentTenant", () => {
  test("tenant code has CurrentTenant in R", () => {
    expect(greet).type.toBe<Effect.Effect<string, never, TenantContext.CurrentTenant>>()
    expect(TenantContext.CurrentTenant).type.toBeAssignableTo<
      Effect.Effect<Tenant, never, TenantContext.CurrentTenant>
    >()
    expect(TenantContext.tenantId).type.toBe<Effect.Effect<TenantId, never, TenantContext.CurrentTenant>>()
  })

  test("tenant code cannot be run until a tenant is provided", () => {
    expect(Effect.runPromise).type.not.toBeCallableWith(greet)
    expect(Effect.runSync).type.not.toBeCallableWith(greet)
    expect(Effect.runPromise).type.not.toBeCallableWith(TenantContext.withTenant(greet, "acme"))
    expect(Effect.runPromise).type.toBeCallableWith(
      Effect.provide(TenantContext.withTenant(greet, "acme"), TenantRegistry.layerMemory())
    )
  })
})

describe("withTenant", () => {
  test("with prebuilt services: removes them from R too, both ways", () => {
    const services = {} as TenantLayer.TenantServices<Database>
    expect(TenantContext.withTenant(needsBoth, "acme", { services })).type.toBe<
      Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry>
    >()
    expect(pipe(needsBoth, TenantContext.withTenant("acme", { services }))).type.toBe<
      Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry>
    >()
    expect(TenantContext.withTenant(needsBoth, "acme")).type.toBe<
      Effect.Effect<string, TenantLookupError, Database | TenantRegistry.TenantRegistry>
    >()
  })

  test("data-first: removes CurrentTenant, adds TenantRegistry and the lookup errors", () => {
    expect(TenantContext.withTenant(greet, "acme")).type.toBe<
      Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry>
    >()
  })

  test("data-last: the same type", () => {
    expect(pipe(greet, TenantContext.withTenant("acme"))).type.toBe<
      Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry>
    >()
    expect(greet.pipe(TenantContext.withTenant("acme"))).type.toBe<
      Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry>
    >()
  })

  test("keeps the other requirements and errors", () => {
    expect(TenantContext.withTenant(needsBoth, "acme")).type.toBe<
      Effect.Effect<string, TenantLookupError, Database | TenantRegistry.TenantRegistry>
    >()
    expect(TenantContext.withTenant(failing, "acme")).type.toBe<
      Effect.Effect<string, "oops" | TenantLookupError, TenantRegistry.TenantRegistry>
    >()
  })

  test("takes a string id, not anything else", () => {
    expect(TenantContext.withTenant).type.not.toBeCallableWith(greet, 42)
    expect(TenantContext.withTenant).type.not.toBeCallableWith(42)
  })
})

describe("accessors", () => {
  test("current and currentId need no tenant", () => {
    expect(TenantContext.current).type.toBe<Effect.Effect<Option.Option<Tenant>>>()
    expect(TenantContext.currentId).type.toBe<Effect.Effect<Option.Option<TenantId>>>()
    expect(TenantContext.require).type.toBe<Effect.Effect<Tenant, NoCurrentTenant>>()
  })
})

describe("SystemAccess", () => {
  test("asTenant requires SystemAccess", () => {
    expect(TenantContext.asTenant(greet, "acme")).type.toBe<
      Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry | TenantContext.SystemAccess>
    >()
    expect(pipe(greet, TenantContext.asTenant("acme"), TenantContext.withSystemAccess("support ticket 42"))).type
      .toBe<Effect.Effect<string, TenantLookupError, TenantRegistry.TenantRegistry>>()
  })

  test("forEachTenant requires SystemAccess and returns pairs", () => {
    expect(TenantContext.forEachTenant(() => greet)).type.toBe<
      Effect.Effect<
        ReadonlyArray<readonly [TenantId, string]>,
        TenantLookupError | InvalidPageRequest | TenantStoreError,
        TenantRegistry.TenantRegistry | TenantContext.SystemAccess
      >
    >()
  })
})
