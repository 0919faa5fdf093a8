import * as Migrator from "@effect/sql/Migrator"
import type { SqlClient } from "@effect/sql/SqlClient"
import { Effect } from "effect"
import * as TenantContext from "effect-tenancy/TenantContext"
import type { InvalidPageRequest, TenantStoreError } from "effect-tenancy/TenantError"
import type { TenantIsolation } from "effect-tenancy/TenantIsolation"
import * as TenantMigrator from "effect-tenancy/TenantMigrator"
import type { TenantRegistry } from "effect-tenancy/TenantRegistry"
import { describe, expect, test } from "tstyche"

const migrations: ReadonlyArray<TenantMigrator.Migration> = [{ id: 1, name: "notes", up: Effect.void }]
const sql = {} as SqlClient
const target = TenantMigrator.schemaTarget(sql)

type RunError = TenantMigrator.MigrationFailed | InvalidPageRequest | TenantStoreError

describe("TenantMigrator", () => {
  test("run needs the isolation, an admin SqlClient, the registry and SystemAccess", () => {
    expect(TenantMigrator.run({ tenant: migrations })).type.toBe<
      Effect.Effect<TenantMigrator.Report, RunError, TenantIsolation | SqlClient | TenantRegistry | SystemAccess>
    >()
    expect(TenantMigrator.runWith(target, { tenant: migrations })).type.toBe<
      Effect.Effect<TenantMigrator.Report, RunError, SqlClient | TenantRegistry | TenantContext.SystemAccess>
    >()
  })

  test("cross-tenant work cannot run without SystemAccess; withSystemAccess removes it", () => {
    const run = TenantMigrator.runWith(target, { tenant: migrations })
    expect(Effect.runPromise).type.not.toBeCallableWith(run)
    expect(TenantContext.withSystemAccess(run, "deploy")).type.toBe<
      Effect.Effect<TenantMigrator.Report, RunError, SqlClient | TenantRegistry>
    >()
  })

  test("per-tenant failures are in the report, not in E", () => {
    const report = {} as TenantMigrator.Report
    expect(report.tenants[0].error).type.toBe<TenantMigrator.MigrationFailed | undefined>()
    expect(report.tenants[0].status).type.toBe<"applied" | "up-to-date" | "pending" | "failed" | "skipped">()
  })

  test("accepts @effect/sql loaders and records", () => {
    const loader = Migrator.fromRecord({ "1_notes": Effect.void })
    expect(TenantMigrator.runWith).type.toBeCallableWith(target, { tenant: loader, shared: loader })
    expect(TenantMigrator.fromRecord({ "1_notes": Effect.void })).type.toBe<ReadonlyArray<TenantMigrator.Migration>>()
    expect(TenantMigrator.fromLoader(loader)).type.toBe<
      Effect.Effect<ReadonlyArray<TenantMigrator.Migration>, TenantMigrator.MigrationFailed, SqlClient>
    >()
  })

  test("a migration's effect may only require SqlClient", () => {
    class Other extends Effect.Tag("dtslint/Other")<Other, { readonly x: number }>() {}
    const needsOther = Effect.flatMap(Other, () => Effect.void)
    expect(TenantMigrator.runWith).type.not.toBeCallableWith(target, {
      tenant: [{ id: 1, name: "x", up: needsOther }]
    })
  })

  test("options are checked", () => {
    expect(TenantMigrator.runWith).type.not.toBeCallableWith(target, { tenant: migrations, onError: "retry" })
    expect(TenantMigrator.runWith).type.toBeCallableWith(target, {
      tenant: migrations,
      tenants: { first: 5 },
      onError: "fail-fast",
      dryRun: true,
      lockTimeout: "2 seconds",
      concurrency: 8
    })
  })
})

type SystemAccess = TenantContext.SystemAccess
