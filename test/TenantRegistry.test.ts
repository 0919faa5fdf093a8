import { assert, describe, it } from "@effect/vitest"
import { Chunk, DateTime, Effect, Fiber, Option, Queue, Stream, TestClock } from "effect"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"

const { TenantRegistry: Registry } = TenantRegistry

describe("TenantRegistry", () => {
  it.effect("register applies defaults and validates input", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* TestClock.setTime(Date.parse("2026-05-01T10:00:00Z"))
      const acme = yield* registry.register({ id: "acme", name: "Acme Corporation" })
      assert.strictEqual(acme.identifier, "acme")
      assert.strictEqual(acme.tier, "free")
      assert.strictEqual(acme.status, "active")
      assert.strictEqual(acme.version, 0)
      assert.deepStrictEqual(acme.metadata, {})
      assert.strictEqual(DateTime.formatIso(acme.createdAt), "2026-05-01T10:00:00.000Z")

      const globex = yield* registry.register({
        id: "globex",
        identifier: "globex-inc",
        name: "  Globex Inc  ",
        tier: "enterprise",
        metadata: { region: "us-west-2", max_users: 500 },
        status: "provisioning"
      })
      assert.strictEqual(globex.name, "Globex Inc")
      assert.strictEqual(globex.status, "provisioning")
      assert.strictEqual((yield* registry.getByIdentifier("globex-inc")).id, "globex")

      const invalid = yield* Effect.flip(registry.register({ id: "Bad Id", name: "x" }))
      assert.strictEqual(invalid._tag, "InvalidTenantId")
      const noName = yield* Effect.flip(registry.register({ id: "noname", name: "   " }))
      assert.strictEqual(noName._tag, "InvalidTenantInput")
      const badTier = yield* Effect.flip(registry.register({ id: "badtier", name: "x", tier: "gold plated" }))
      assert.strictEqual(badTier._tag, "InvalidTenantInput")
      const duplicate = yield* Effect.flip(registry.register({ id: "acme", name: "Acme again" }))
      assert.strictEqual(duplicate._tag, "TenantAlreadyExists")
      assert.strictEqual((yield* registry.stats).totalTenants, 2)
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.effect("get distinguishes invalid and unknown ids", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.register({ id: "acme", name: "Acme" })
      assert.strictEqual((yield* registry.get("acme")).name, "Acme")
      assert.strictEqual((yield* Effect.flip(registry.get("nobody")))._tag, "TenantNotFound")
      assert.strictEqual((yield* Effect.flip(registry.get("DROP TABLE")))._tag, "InvalidTenantId")
      const missing = yield* Effect.flip(registry.get("nobody"))
      assert.notInclude(missing.message, "acme")
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.effect("update patches the latest version, or refuses a stale expected version", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.register({ id: "acme", name: "Acme", metadata: { plan: "basic" } })
      yield* TestClock.adjust("1 hour")
      const v1 = yield* registry.update("acme", { metadata: { plan: "enterprise" }, tier: "enterprise" })
      assert.strictEqual(v1.version, 1)
      assert.strictEqual(v1.name, "Acme")
      assert.strictEqual(v1.tier, "enterprise")
      assert.deepStrictEqual(v1.metadata, { plan: "enterprise" })
      assert.isTrue(DateTime.greaterThan(v1.updatedAt, v1.createdAt))
      const stale = yield* Effect.flip(registry.update("acme", { name: "Old view", expectedVersion: 0 }))
      assert.strictEqual(stale._tag, "TenantConflict")
      const v2 = yield* registry.update("acme", { name: "Acme Corp", expectedVersion: 1 })
      assert.strictEqual(v2.version, 2)
      const renamed = yield* registry.update("acme", { identifier: "acme-corp" })
      assert.strictEqual((yield* registry.getByIdentifier("acme-corp")).id, "acme")
      assert.strictEqual(renamed.version, 3)
      const badInput = yield* Effect.flip(registry.update("acme", { name: "" }))
      assert.strictEqual(badInput._tag, "InvalidTenantInput")
      assert.strictEqual((yield* registry.get("acme")).version, 3)
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.effect("lifecycle: activate, suspend, deleting, deleted; illegal moves are typed errors", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.register({ id: "acme", name: "Acme", status: "provisioning" })
      assert.strictEqual((yield* registry.activate("acme")).status, "active")
      const again = yield* registry.activate("acme")
      assert.strictEqual(again.version, 1, "activating an active tenant is a no-op")
      const illegal = yield* Effect.flip(registry.transition("acme", "deleting"))
      assert.strictEqual(illegal._tag, "InvalidStatusTransition")
      assert.strictEqual((yield* registry.suspend("acme")).status, "suspended")
      assert.strictEqual((yield* registry.transition("acme", "deleting")).status, "deleting")
      assert.strictEqual((yield* Effect.flip(registry.activate("acme")))._tag, "InvalidStatusTransition")
      const deleted = yield* registry.transition("acme", "deleted")
      assert.strictEqual(deleted.status, "deleted")
      assert.strictEqual(deleted.version, 4)
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.effect("list and stream page through the store", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* Effect.forEach(
        Array.from({ length: 12 }, (_, i) => `tenant-${String(i).padStart(2, "0")}`),
        (id) => registry.register({ id, name: id })
      )
      yield* registry.suspend("tenant-03")
      const page = yield* registry.list({ limit: 5 })
      assert.strictEqual(page.tenants.length, 5)
      assert.isTrue(Option.isSome(page.cursor))
      const all = yield* Stream.runCollect(registry.stream({ pageSize: 5 }))
      assert.strictEqual(Chunk.size(all), 12)
      const suspended = yield* Stream.runCollect(registry.stream({ status: "suspended" }))
      assert.deepStrictEqual(Chunk.toArray(suspended).map((t) => t.id), ["tenant-03"])
      const error = yield* Effect.flip(registry.list({ limit: -1 }))
      assert.strictEqual(error._tag, "InvalidPageRequest")
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.scoped("publishes events in order", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const events = yield* registry.subscribe
      yield* registry.register({ id: "acme", name: "Acme" })
      yield* registry.update("acme", { name: "Acme Corp" })
      yield* registry.suspend("acme")
      yield* registry.activate("acme")
      yield* registry.unregister("acme")
      const tags = Chunk.toArray(yield* Queue.takeAll(events)).map((e) => e._tag)
      assert.deepStrictEqual(tags, [
        "TenantRegistered",
        "TenantUpdated",
        "TenantSuspended",
        "TenantActivated",
        "TenantUnregistered"
      ])
      const failed = yield* Effect.flip(registry.suspend("acme"))
      assert.strictEqual(failed._tag, "TenantNotFound")
      assert.strictEqual(yield* Queue.size(events), 0, "failed operations publish nothing")
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.live("events is a stream of what happens after it starts", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const fiber = yield* registry.events.pipe(Stream.take(2), Stream.runCollect, Effect.fork)
      yield* Effect.sleep("20 millis")
      yield* registry.register({ id: "acme", name: "Acme" })
      yield* registry.suspend("acme")
      const events = Chunk.toArray(yield* Fiber.join(fiber))
      assert.deepStrictEqual(events.map((e) => e._tag), ["TenantRegistered", "TenantSuspended"])
      const suspended = events[1]
      assert.isTrue(suspended._tag === "TenantSuspended" && suspended.tenant.status === "suspended")
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))

  it.effect("stats count tenants and active tenants", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.register({ id: "acme", name: "Acme" })
      yield* registry.register({ id: "globex", name: "Globex" })
      yield* registry.suspend("globex")
      const stats = yield* registry.stats
      assert.strictEqual(stats.totalTenants, 2)
      assert.strictEqual(stats.activeTenants, 1)
      assert.strictEqual(stats.totalSwitches, 0)
      assert.strictEqual(stats.activeSwitches, 0)
      assert.isTrue(Option.isNone(stats.currentTenant))
    }).pipe(Effect.provide(TenantRegistry.layerMemory())))
})
