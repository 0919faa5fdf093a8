/**
 * The conformance suite of `TenantStore`: every implementation (memory,
 * Postgres, Redis cache over Postgres) must pass it. Call `suite(name, layer)`
 * from a test file; `layer` must give each test a store it may write to, and
 * the suite uses tenant ids with a random prefix so that runs against a
 * shared database do not collide.
 */
import { assert, describe, it } from "@effect/vitest"
import { DateTime, Effect, Either, type Layer, Option } from "effect"
import { Tenant, type TenantId, type TenantStatus, unsafeMakeTenantId } from "effect-tenancy/Tenant"
import { TenantStore } from "effect-tenancy/TenantStore"

const randomPrefix = () => `t${Math.random().toString(36).slice(2, 8)}`

/** A tenant record for tests; the store suites and the store tests share it. */
export const makeTenant = (
  id: string,
  options: {
    readonly identifier?: string
    readonly status?: TenantStatus
    readonly version?: number
    readonly metadata?: Tenant["metadata"]
  } = {}
) => {
  const now = DateTime.unsafeMake("2026-03-01T12:00:00Z")
  return new Tenant({
    id: unsafeMakeTenantId(id),
    identifier: unsafeMakeTenantId(options.identifier ?? id),
    name: `Tenant ${id}`,
    status: options.status ?? "active",
    tier: "premium",
    metadata: options.metadata ?? { region: "eu", nested: { list: [1, "two", true, null] } },
    createdAt: now,
    updatedAt: now,
    version: options.version ?? 0
  })
}

const bump = (tenant: Tenant, changes: Partial<{ name: string; identifier: TenantId; status: TenantStatus }>) =>
  new Tenant({ ...tenant, ...changes, version: tenant.version + 1 })

export const suite = <E>(name: string, layer: Layer.Layer<TenantStore, E>) =>
  describe(`TenantStore conformance: ${name}`, () => {
    it.layer(layer, { timeout: "30 seconds" })((it) => {
      it.effect("create then get by id and by identifier", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const tenant = makeTenant(`${p}-one`, { identifier: `${p}-public` })
          const created = yield* store.create(tenant)
          assert.strictEqual(created.id, tenant.id)
          const byId = yield* store.get(tenant.id)
          assert.isTrue(Option.isSome(byId))
          const got = Option.getOrThrow(byId)
          assert.strictEqual(got.name, tenant.name)
          assert.strictEqual(got.tier, "premium")
          assert.deepStrictEqual(got.metadata, tenant.metadata)
          assert.isTrue(DateTime.Equivalence(got.createdAt, tenant.createdAt))
          const byIdentifier = yield* store.getByIdentifier(unsafeMakeTenantId(`${p}-public`))
          assert.strictEqual(Option.getOrThrow(byIdentifier).id, tenant.id)
          assert.isTrue(Option.isNone(yield* store.get(unsafeMakeTenantId(`${p}-missing`))))
          assert.isTrue(Option.isNone(yield* store.getByIdentifier(unsafeMakeTenantId(`${p}-one-x`))))
        }))

      it.effect("create refuses a taken id or identifier, atomically under concurrency", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const results = yield* Effect.forEach(
            Array.from({ length: 20 }, (_, i) => makeTenant(`${p}-race`, { identifier: `${p}-race-${i}` })),
            (t) => Effect.either(store.create(t)),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(results.filter(Either.isRight).length, 1)
          for (const r of results.filter(Either.isLeft)) {
            assert.strictEqual(r.left._tag, "TenantAlreadyExists")
          }
          const clash = yield* Effect.flip(store.create(makeTenant(`${p}-other`, { identifier: `${p}-race` })))
          // Ids and identifiers share one namespace: another tenant's id is not a free identifier.
          assert.strictEqual(clash._tag, "TenantAlreadyExists")
          if (clash._tag === "TenantAlreadyExists") assert.strictEqual(clash.conflictOn, "identifier")
          const winner = results.filter(Either.isRight)[0].right
          const idClash = yield* Effect.flip(store.create(makeTenant(winner.identifier, { identifier: `${p}-fresh` })))
          assert.strictEqual(idClash._tag, "TenantAlreadyExists")
          yield* store.create(makeTenant(`${p}-second`, { identifier: `${p}-shared` }))
          const byIdentifier = yield* Effect.flip(store.create(makeTenant(`${p}-third`, { identifier: `${p}-shared` })))
          assert.strictEqual(byIdentifier._tag, "TenantAlreadyExists")
          if (byIdentifier._tag === "TenantAlreadyExists") assert.strictEqual(byIdentifier.conflictOn, "identifier")
        }))

      it.effect("update with the expected version; a stale write is TenantConflict", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const v0 = yield* store.create(makeTenant(`${p}-cas`))
          const v1 = yield* store.update({ tenant: bump(v0, { name: "Renamed" }), expectedVersion: 0 })
          assert.strictEqual(v1.version, 1)
          assert.strictEqual(Option.getOrThrow(yield* store.get(v0.id)).name, "Renamed")
          const stale = yield* Effect.flip(store.update({ tenant: bump(v0, { name: "Lost" }), expectedVersion: 0 }))
          assert.strictEqual(stale._tag, "TenantConflict")
          if (stale._tag === "TenantConflict") {
            assert.strictEqual(stale.expectedVersion, 0)
            assert.strictEqual(stale.actualVersion, 1)
          }
          assert.strictEqual(Option.getOrThrow(yield* store.get(v0.id)).name, "Renamed")
          const missing = yield* Effect.flip(
            store.update({ tenant: makeTenant(`${p}-nobody`, { version: 1 }), expectedVersion: 0 })
          )
          assert.strictEqual(missing._tag, "TenantNotFound")
        }))

      it.effect("concurrent updates of one version: exactly one wins", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const v0 = yield* store.create(makeTenant(`${p}-many`))
          const results = yield* Effect.forEach(
            Array.from({ length: 25 }, (_, i) => i),
            (i) => Effect.either(store.update({ tenant: bump(v0, { name: `Writer ${i}` }), expectedVersion: 0 })),
            { concurrency: "unbounded" }
          )
          const winners = results.filter(Either.isRight)
          assert.strictEqual(winners.length, 1)
          assert.strictEqual(Option.getOrThrow(yield* store.get(v0.id)).name, winners[0].right.name)
        }))

      it.effect("update can move the identifier, but not onto a taken one", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const a = yield* store.create(makeTenant(`${p}-a`))
          yield* store.create(makeTenant(`${p}-b`))
          const moved = yield* store.update({
            tenant: bump(a, { identifier: unsafeMakeTenantId(`${p}-new`) }),
            expectedVersion: 0
          })
          assert.strictEqual(moved.identifier, `${p}-new`)
          assert.strictEqual(Option.getOrThrow(yield* store.getByIdentifier(unsafeMakeTenantId(`${p}-new`))).id, a.id)
          assert.isTrue(Option.isNone(yield* store.getByIdentifier(unsafeMakeTenantId(`${p}-a`))))
          const taken = yield* Effect.flip(
            store.update({ tenant: bump(moved, { identifier: unsafeMakeTenantId(`${p}-b`) }), expectedVersion: 1 })
          )
          assert.strictEqual(taken._tag, "TenantAlreadyExists")
          assert.strictEqual(Option.getOrThrow(yield* store.get(a.id)).identifier, `${p}-new`)
        }))

      it.effect("delete, with and without an expected version", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const a = yield* store.create(makeTenant(`${p}-del`, { identifier: `${p}-del-pub` }))
          const stale = yield* Effect.flip(store.delete({ id: a.id, expectedVersion: 7 }))
          assert.strictEqual(stale._tag, "TenantConflict")
          yield* store.delete({ id: a.id, expectedVersion: 0 })
          assert.isTrue(Option.isNone(yield* store.get(a.id)))
          assert.isTrue(Option.isNone(yield* store.getByIdentifier(unsafeMakeTenantId(`${p}-del-pub`))))
          const again = yield* Effect.flip(store.delete({ id: a.id }))
          assert.strictEqual(again._tag, "TenantNotFound")
          // The id and the identifier are free again.
          yield* store.create(makeTenant(`${p}-del`, { identifier: `${p}-del-pub` }))
        }))

      it.effect("list pages by id with a cursor and filters by status", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const p = randomPrefix()
          const statuses: ReadonlyArray<TenantStatus> = ["active", "suspended", "provisioning"]
          const ids = Array.from({ length: 23 }, (_, i) => `${p}-${String(i).padStart(2, "0")}x`)
          yield* Effect.forEach(
            ids,
            (id, i) => store.create(makeTenant(id, { status: statuses[i % 3] })),
            { concurrency: 4 }
          )
          const collect = (status?: TenantStatus | ReadonlyArray<TenantStatus>) =>
            Effect.gen(function*() {
              const seen: Array<Tenant> = []
              let cursor: string | undefined = undefined
              let pages = 0
              do {
                const page: { tenants: ReadonlyArray<Tenant>; cursor: Option.Option<string> } = yield* store.list({
                  status,
                  limit: 5,
                  cursor
                })
                assert.isAtMost(page.tenants.length, 5)
                seen.push(...page.tenants)
                cursor = Option.getOrUndefined(page.cursor)
                pages++
              } while (cursor !== undefined && pages < 100)
              return seen.filter((t) => t.id.startsWith(p))
            })
          const all = yield* collect()
          assert.deepStrictEqual(all.map((t) => t.id), ids)
          const active = yield* collect("active")
          assert.deepStrictEqual(active.map((t) => t.id), ids.filter((_, i) => i % 3 === 0))
          const some = yield* collect(["suspended", "provisioning"])
          assert.deepStrictEqual(some.map((t) => t.id), ids.filter((_, i) => i % 3 !== 0))
          const total = yield* store.count({})
          const activeCount = yield* store.count({ status: "active" })
          assert.isAtLeast(total, 23)
          assert.isAtLeast(activeCount, 8)
          assert.isAtLeast(total - activeCount, 15)
        }))

      it.effect("reports its health", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          const health = yield* store.health
          assert.strictEqual(health.status, "up", health.detail)
          assert.isTrue(health.component.startsWith("tenant-store"))
        }))

      it.effect("list refuses a malformed cursor and an out-of-range limit", () =>
        Effect.gen(function*() {
          const store = yield* TenantStore
          for (
            const options of [{ cursor: "%%%not-base64" }, { cursor: "IiBPUiAxPTEgLS0" }, { limit: 0 }, {
              limit: 1.5
            }, { limit: 100_000 }]
          ) {
            const error = yield* Effect.flip(store.list(options))
            assert.strictEqual(error._tag, "InvalidPageRequest")
          }
        }))
    })
  })
