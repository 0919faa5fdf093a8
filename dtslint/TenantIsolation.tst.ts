import type { SqlClient } from "@effect/sql/SqlClient"
import * as Sql from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Context, Effect, type Either, type Layer, type Scope } from "effect"
import type { Tenant } from "effect-tenancy/Tenant"
import type { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantIsolation from "effect-tenancy/TenantIsolation"
import { describe, expect, test } from "tstyche"

class Audit extends Context.Tag("dtslint/Audit")<Audit, { readonly log: (line: string) => void }>() {}

const query = Effect.flatMap(Sql.SqlClient, (sql) => sql<{ readonly id: number }>`SELECT id FROM items`)
const withAudit = Effect.zipLeft(query, Audit)
const failing = Effect.zipRight(query, Effect.fail("nope" as const))
const tenant = {} as Tenant
const service = {} as Context.Tag.Service<TenantIsolation.TenantIsolation>

type Rows = ReadonlyArray<{ readonly id: number }>

describe("scoped", () => {
  test("a tenant-scoped SQL program needs CurrentTenant and TenantIsolation, not SqlClient", () => {
    expect(TenantIsolation.scoped(query)).type.toBe<
      Effect.Effect<Rows, SqlError | TenantIsolation.ScopeError, CurrentTenant | TenantIsolation.TenantIsolation>
    >()
    expect(service.scoped(query)).type.toBe<Effect.Effect<Rows, TenantIsolation.ScopeError, CurrentTenant>>()
  })

  test("other requirements and errors pass through", () => {
    expect(TenantIsolation.scoped(withAudit)).type.toBe<
      Effect.Effect<
        Rows,
        TenantIsolation.ScopeError,
        Audit | CurrentTenant | TenantIsolation.TenantIsolation
      >
    >()
    expect(service.scoped(failing)).type.toBe<
      Effect.Effect<never, "nope" | TenantIsolation.ScopeError, CurrentTenant>
    >()
  })

  test("cannot run without a tenant", () => {
    expect(Effect.runPromise).type.not.toBeCallableWith(service.scoped(query))
    expect(Effect.runPromise).type.not.toBeCallableWith(
      Effect.provideService(TenantIsolation.scoped(query), TenantIsolation.TenantIsolation, service)
    )
  })

  test("ScopeError", () => {
    expect<TenantIsolation.ScopeError>().type.toBe<
      | SqlError
      | TenantIsolation.UnsafeIdentifier
      | TenantIsolation.TenantPoolExhausted
      | TenantIsolation.IsolationError
    >()
  })
})

describe("migration sessions", () => {
  test("no tenant needed (explicit tenant), SqlClient provided", () => {
    expect(service.withTenantMigrationSession(tenant, query)).type.toBe<
      Effect.Effect<Rows, TenantIsolation.ScopeError>
    >()
    expect(TenantIsolation.withTenantMigrationSession(tenant, withAudit)).type.toBe<
      Effect.Effect<Rows, TenantIsolation.ScopeError, Audit | TenantIsolation.TenantIsolation>
    >()
  })
})

describe("provision / deprovision", () => {
  test("service methods have no requirements", () => {
    expect(service.provision(tenant)).type.toBe<
      Effect.Effect<
        TenantIsolation.ProvisionResult,
        | TenantIsolation.IsolationError
        | TenantIsolation.UnsafeIdentifier
        | TenantIsolation.MigrationFailed
        | TenantIsolation.TenantPoolExhausted
      >
    >()
    expect(service.deprovision(tenant)).type.toBe<
      Effect.Effect<
        TenantIsolation.DeprovisionResult,
        TenantIsolation.IsolationError | TenantIsolation.UnsafeIdentifier
      >
    >()
    expect(service.check).type.toBe<
      Effect.Effect<void, TenantIsolation.IsolationUnsafe | TenantIsolation.IsolationError>
    >()
    expect(service.strategyOf(tenant)).type.toBe<TenantIsolation.Strategy>()
    expect(service.nameOf(tenant)).type.toBe<Either.Either<string | undefined, TenantIsolation.UnsafeIdentifier>>()
  })

  test("accessors need TenantIsolation", () => {
    expect(TenantIsolation.provision(tenant)).type.toBe<
      Effect.Effect<
        TenantIsolation.ProvisionResult,
        | TenantIsolation.IsolationError
        | TenantIsolation.UnsafeIdentifier
        | TenantIsolation.MigrationFailed
        | TenantIsolation.TenantPoolExhausted,
        TenantIsolation.TenantIsolation
      >
    >()
    expect(TenantIsolation.deprovision(tenant)).type.toBe<
      Effect.Effect<
        TenantIsolation.DeprovisionResult,
        TenantIsolation.IsolationError | TenantIsolation.UnsafeIdentifier,
        TenantIsolation.TenantIsolation
      >
    >()
  })
})

describe("constructors", () => {
  test("make and layer need the application SqlClient", () => {
    expect(TenantIsolation.make({ strategy: "rls" })).type.toBe<
      Effect.Effect<
        Context.Tag.Service<TenantIsolation.TenantIsolation>,
        TenantIsolation.IsolationUnsafe | TenantIsolation.IsolationError | TenantIsolation.UnsafeIdentifier,
        SqlClient | Scope.Scope
      >
    >()
    expect(TenantIsolation.layer({ strategy: "schema" })).type.toBe<
      Layer.Layer<
        TenantIsolation.TenantIsolation,
        TenantIsolation.IsolationUnsafe | TenantIsolation.IsolationError | TenantIsolation.UnsafeIdentifier,
        SqlClient
      >
    >()
    expect(TenantIsolation.make).type.not.toBeCallableWith({ strategy: "per-table" })
  })

  test("hybrid is a function of the tenant record", () => {
    expect(TenantIsolation.hybrid({ tiers: { premium: "schema" }, fallback: "rls" })).type.toBe<
      (tenant: Tenant) => TenantIsolation.Strategy
    >()
    expect(TenantIsolation.hybrid).type.not.toBeCallableWith({ tiers: { premium: "tables" }, fallback: "rls" })
  })

  test("enableRowLevelSecurity runs with the owner's SqlClient", () => {
    expect(TenantIsolation.enableRowLevelSecurity({ table: "items" })).type.toBe<
      Effect.Effect<void, TenantIsolation.IsolationError | TenantIsolation.UnsafeIdentifier, SqlClient>
    >()
  })
})
