import type { Effect, Layer, Stream } from "effect"
import type { Tenant } from "effect-tenancy/Tenant"
import type {
  InvalidPageRequest,
  InvalidStatusTransition,
  InvalidTenantId,
  InvalidTenantInput,
  TenantAlreadyExists,
  TenantConflict,
  TenantInUse,
  TenantNotFound,
  TenantStoreError
} from "effect-tenancy/TenantError"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantStore from "effect-tenancy/TenantStore"
import { describe, expect, test } from "tstyche"

declare const registry: TenantRegistry.TenantRegistry["Type"]

describe("TenantRegistry methods", () => {
  test("register", () => {
    expect(registry.register({ id: "acme", name: "Acme" })).type.toBe<
      Effect.Effect<Tenant, InvalidTenantId | InvalidTenantInput | TenantAlreadyExists | TenantStoreError>
    >()
    expect(registry.register).type.not.toBeCallableWith({ id: "acme" })
    expect(registry.register).type.not.toBeCallableWith({ id: "acme", name: "Acme", status: "deleted" })
  })

  test("get and getByIdentifier", () => {
    expect(registry.get("acme")).type.toBe<
      Effect.Effect<Tenant, InvalidTenantId | TenantNotFound | TenantStoreError>
    >()
    expect(registry.getByIdentifier("acme")).type.toBe<
      Effect.Effect<Tenant, InvalidTenantId | TenantNotFound | TenantStoreError>
    >()
  })

  test("update", () => {
    expect(registry.update("acme", { name: "Acme Corp", expectedVersion: 3 })).type.toBe<
      Effect.Effect<
        Tenant,
        InvalidTenantId | InvalidTenantInput | TenantNotFound | TenantConflict | TenantAlreadyExists | TenantStoreError
      >
    >()
  })

  test("lifecycle", () => {
    type E = InvalidTenantId | TenantNotFound | InvalidStatusTransition | TenantConflict | TenantStoreError
    expect(registry.suspend("acme")).type.toBe<Effect.Effect<Tenant, E>>()
    expect(registry.activate("acme")).type.toBe<Effect.Effect<Tenant, E>>()
    expect(registry.transition("acme", "deleting")).type.toBe<Effect.Effect<Tenant, E>>()
    expect(registry.transition).type.not.toBeCallableWith("acme", "archived")
    expect(registry.unregister("acme")).type.toBe<
      Effect.Effect<void, InvalidTenantId | TenantNotFound | TenantInUse | TenantConflict | TenantStoreError>
    >()
  })

  test("list, stream, stats, events", () => {
    expect(registry.list({ status: "active", limit: 10 })).type.toBe<
      Effect.Effect<TenantStore.Page, InvalidPageRequest | TenantStoreError>
    >()
    expect(registry.stream()).type.toBe<Stream.Stream<Tenant, InvalidPageRequest | TenantStoreError>>()
    expect(registry.stats).type.toBe<Effect.Effect<TenantRegistry.TenantStats, TenantStoreError>>()
    expect(registry.events).type.toBe<Stream.Stream<TenantRegistry.TenantEvent>>()
  })
})

describe("layers", () => {
  test("layer needs a store; layerMemory needs nothing", () => {
    expect(TenantRegistry.layer()).type.toBe<
      Layer.Layer<TenantRegistry.TenantRegistry, never, TenantStore.TenantStore>
    >()
    expect(TenantRegistry.layerMemory()).type.toBe<Layer.Layer<TenantRegistry.TenantRegistry>>()
    expect(TenantStore.layerMemory).type.toBe<Layer.Layer<TenantStore.TenantStore>>()
  })
})
