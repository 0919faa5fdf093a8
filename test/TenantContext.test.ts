import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, HashMap, Layer, Logger, Option, Random } from "effect"
import * as TenantContext from "effect-tenancy/TenantContext"
import { TenantNotFound } from "effect-tenancy/TenantError"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantStore from "effect-tenancy/TenantStore"

const { CurrentTenant, withTenant } = TenantContext
const { TenantRegistry: Registry } = TenantRegistry

const seeded = Layer.effectDiscard(Effect.gen(function*() {
  const registry = yield* Registry
  yield* registry.register({ id: "acme", name: "Acme Corporation", tier: "enterprise" })
  yield* registry.register({ id: "globex", name: "Globex Inc", tier: "premium" })
  yield* registry.register({ id: "initech", name: "Initech", status: "provisioning" })
}))

const withRegistry = () => Layer.provideMerge(seeded, TenantRegistry.layerMemory())

const currentName = Effect.map(CurrentTenant, (t) => t.name)
const currentIdOrNone = Effect.map(TenantContext.currentId, Option.getOrElse(() => "none"))

describe("TenantContext.withTenant", () => {
  it.effect("provides the tenant, in both forms, and restores no tenant afterwards", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* currentIdOrNone, "none")
      assert.strictEqual(yield* withTenant(currentName, "acme"), "Acme Corporation")
      assert.strictEqual(yield* currentName.pipe(withTenant("globex")), "Globex Inc")
      assert.strictEqual(yield* currentIdOrNone, "none")
      const tenant = yield* withTenant(CurrentTenant, "acme")
      assert.strictEqual(tenant.tier, "enterprise")
    }).pipe(Effect.provide(withRegistry())))

  it.effect("nested switches restore the outer tenant", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const trace: Array<string> = []
      const record = (label: string) => Effect.map(currentIdOrNone, (id) => trace.push(`${label}:${id}`))
      yield* Effect.gen(function*() {
        yield* record("outer")
        yield* Effect.gen(function*() {
          yield* record("inner")
          yield* record("inner-same").pipe(withTenant("globex"))
          const stats = yield* registry.stats
          trace.push(`active:${stats.activeSwitches}`)
        }).pipe(withTenant("globex"))
        yield* record("outer-again")
      }).pipe(withTenant("acme"))
      yield* record("after")
      assert.deepStrictEqual(trace, [
        "outer:acme",
        "inner:globex",
        "inner-same:globex",
        "active:2",
        "outer-again:acme",
        "after:none"
      ])
      const stats = yield* registry.stats
      assert.strictEqual(stats.totalSwitches, 3)
      assert.strictEqual(stats.activeSwitches, 0)
    }).pipe(Effect.provide(withRegistry())))

  it.effect("restores after a failure, a defect and an interruption", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const failure = yield* Effect.exit(withTenant(Effect.fail("boom" as const), "acme"))
      assert.deepStrictEqual(failure, Exit.fail("boom" as const))
      assert.strictEqual(yield* currentIdOrNone, "none")

      const defect = yield* Effect.exit(withTenant(Effect.die(new Error("bug")), "acme"))
      assert.isTrue(Exit.isFailure(defect))
      assert.strictEqual(yield* currentIdOrNone, "none")

      const inner = yield* Effect.exit(
        Effect.gen(function*() {
          yield* withTenant(Effect.fail("inner"), "globex")
        }).pipe(Effect.catchAll(() => currentIdOrNone), withTenant("acme"))
      )
      assert.deepStrictEqual(inner, Exit.succeed("acme"))

      const entered = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        withTenant(Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never), "acme")
      )
      yield* Deferred.await(entered)
      assert.strictEqual(yield* registry.inUse("acme" as never), 1)
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(yield* registry.inUse("acme" as never), 0)
      const stats = yield* registry.stats
      assert.strictEqual(stats.activeSwitches, 0)
      // failure, defect, acme + globex nested, the interrupted one
      assert.strictEqual(stats.totalSwitches, 5)
    }).pipe(Effect.provide(withRegistry())))

  it.effect("refuses invalid, unknown and inactive tenants without running the effect", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      let ran = 0
      const body = Effect.sync(() => ran++)
      const invalid = yield* Effect.flip(withTenant(body, "ACME; drop"))
      const unknown = yield* Effect.flip(withTenant(body, "umbrella"))
      const provisioning = yield* Effect.flip(withTenant(body, "initech"))
      yield* registry.suspend("globex")
      const suspended = yield* Effect.flip(withTenant(body, "globex"))
      assert.strictEqual(invalid._tag, "InvalidTenantId")
      assert.strictEqual(unknown._tag, "TenantNotFound")
      assert.strictEqual(provisioning._tag, "TenantSuspended")
      assert.strictEqual(suspended._tag, "TenantSuspended")
      if (suspended._tag === "TenantSuspended") assert.strictEqual(suspended.status, "suspended")
      assert.strictEqual(ran, 0)
      const stats = yield* registry.stats
      assert.strictEqual(stats.totalSwitches, 0)
      assert.strictEqual(yield* registry.inUse("globex" as never), 0)
      yield* registry.activate("globex")
      yield* withTenant(body, "globex")
      assert.strictEqual(ran, 1)
    }).pipe(Effect.provide(withRegistry())))

  it.effect("a scope already inside a tenant finishes after a suspension; new switches are refused", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const inside = yield* Deferred.make<void>()
      const proceed = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        Effect.gen(function*() {
          yield* Deferred.succeed(inside, undefined)
          yield* Deferred.await(proceed)
          return yield* currentName
        }).pipe(withTenant("acme"))
      )
      yield* Deferred.await(inside)
      yield* registry.suspend("acme")
      const refused = yield* Effect.flip(withTenant(Effect.void, "acme"))
      assert.strictEqual(refused._tag, "TenantSuspended")
      yield* Deferred.succeed(proceed, undefined)
      assert.strictEqual(yield* Fiber.join(fiber), "Acme Corporation")
    }).pipe(Effect.provide(withRegistry())))

  it.effect("forked fibers inherit the tenant", () =>
    Effect.gen(function*() {
      const seen = yield* Effect.gen(function*() {
        const child = yield* Effect.fork(Effect.zipRight(Effect.yieldNow(), currentIdOrNone))
        const both = yield* Effect.all([currentIdOrNone, currentIdOrNone.pipe(withTenant("globex"))], {
          concurrency: "unbounded"
        })
        return [yield* Fiber.join(child), ...both]
      }).pipe(withTenant("acme"))
      assert.deepStrictEqual(seen, ["acme", "acme", "globex"])
    }).pipe(Effect.provide(withRegistry())))

  it.effect("logs carry tenant.id; spans carry the tenant.id attribute", () => {
    const logged: Array<readonly [unknown, unknown]> = []
    const capture = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ annotations, message }) => {
        logged.push([message, Option.getOrUndefined(HashMap.get(annotations, "tenant.id"))])
      })
    )
    return Effect.gen(function*() {
      const span = yield* Effect.gen(function*() {
        yield* Effect.log("inside")
        return yield* Effect.withSpan(Effect.currentSpan, "work")
      }).pipe(withTenant("acme"), Effect.annotateLogs("request", "r-1"))
      yield* Effect.log("outside")
      assert.deepStrictEqual(logged, [[["inside"], "acme"], [["outside"], undefined]])
      assert.strictEqual(span.attributes.get("tenant.id"), "acme")
      const outer = yield* Effect.withSpan(Effect.currentSpan, "outside")
      assert.isFalse(outer.attributes.has("tenant.id"))
    }).pipe(Effect.provide(withRegistry()), Effect.provide(capture))
  })
})

describe("TenantContext accessors", () => {
  it.effect("current, currentId, tenantId and require", () =>
    Effect.gen(function*() {
      assert.isTrue(Option.isNone(yield* TenantContext.current))
      const outside = yield* Effect.flip(TenantContext.require)
      assert.strictEqual(outside._tag, "NoCurrentTenant")
      const inside = yield* Effect.all([
        TenantContext.current,
        TenantContext.currentId,
        TenantContext.tenantId,
        TenantContext.require
      ]).pipe(withTenant("acme"))
      assert.strictEqual(Option.getOrThrow(inside[0]).id, "acme")
      assert.deepStrictEqual(inside[1], Option.some("acme"))
      assert.strictEqual(inside[2], "acme")
      assert.strictEqual(inside[3].name, "Acme Corporation")
      const stats = yield* Effect.flatMap(Registry, (r) => r.stats).pipe(withTenant("globex"))
      assert.deepStrictEqual(stats.currentTenant, Option.some("globex"))
    }).pipe(Effect.provide(withRegistry())))
})

describe("SystemAccess", () => {
  it.effect("asTenant enters inactive tenants on behalf of the system", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.suspend("globex")
      const refused = yield* Effect.flip(withTenant(currentName, "globex"))
      assert.strictEqual(refused._tag, "TenantSuspended")
      const [name, reason] = yield* Effect.all([
        currentName.pipe(TenantContext.asTenant("globex")),
        TenantContext.SystemAccess
      ]).pipe(TenantContext.withSystemAccess("nightly migration"))
      assert.strictEqual(name, "Globex Inc")
      assert.strictEqual(reason.reason, "nightly migration")
      yield* registry.suspend("acme")
      yield* registry.transition("acme", "deleting")
      yield* registry.transition("acme", "deleted")
      const deleted = yield* Effect.flip(
        TenantContext.asTenant(Effect.void, "acme").pipe(TenantContext.withSystemAccess("test"))
      )
      assert.strictEqual(deleted._tag, "TenantSuspended")
    }).pipe(Effect.provide(withRegistry())))

  it.effect("forEachTenant visits every tenant, whatever its status, in id order", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      yield* registry.suspend("globex")
      const all = yield* TenantContext.forEachTenant(() => currentName, { concurrency: 2 }).pipe(
        Effect.provide(TenantContext.SystemAccess.layer("report"))
      )
      assert.deepStrictEqual(all.map(([id, name]) => `${id}=${name}`), [
        "acme=Acme Corporation",
        "globex=Globex Inc",
        "initech=Initech"
      ])
      yield* registry.register({ id: "zeta", name: "Zeta" })
      yield* registry.suspend("zeta")
      yield* registry.transition("zeta", "deleting")
      yield* registry.transition("zeta", "deleted")
      const withoutDeleted = yield* TenantContext.forEachTenant(() => currentName).pipe(
        TenantContext.withSystemAccess("report")
      )
      assert.deepStrictEqual(withoutDeleted.map(([id]) => id), ["acme", "globex", "initech"])
      const active = yield* TenantContext.forEachTenant((t) => Effect.succeed(t.status), { status: "active" }).pipe(
        TenantContext.withSystemAccess("report")
      )
      assert.deepStrictEqual(active.map(([id, status]) => `${id}=${status}`), ["acme=active"])
    }).pipe(Effect.provide(withRegistry())))
})

describe("unregister", () => {
  it.effect("is refused while any fiber is inside the tenant", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const inside = yield* Deferred.make<void>()
      const leave = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        withTenant(Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(leave)), "acme")
      )
      yield* Deferred.await(inside)
      const refused = yield* Effect.flip(registry.unregister("acme"))
      assert.strictEqual(refused._tag, "TenantInUse")
      if (refused._tag === "TenantInUse") assert.strictEqual(refused.activeScopes, 1)
      yield* Deferred.succeed(leave, undefined)
      yield* Fiber.join(fiber)
      yield* registry.unregister("acme")
      assert.strictEqual((yield* Effect.flip(withTenant(Effect.void, "acme")))._tag, "TenantNotFound")
      assert.strictEqual((yield* Effect.flip(registry.unregister("acme")))._tag, "TenantNotFound")
    }).pipe(Effect.provide(withRegistry())))
})

describe("unregister during a lookup", () => {
  // A store whose reads wait at a gate while `held` is set: it lets a test
  // unregister a tenant while another fiber is between lookup and entry.
  const gatedStore = (gate: Deferred.Deferred<void>, reached: Deferred.Deferred<void>, held: { on: boolean }) =>
    Layer.effect(
      TenantStore.TenantStore,
      Effect.map(TenantStore.makeMemory, (store) => ({
        ...store,
        get: (id: Parameters<typeof store.get>[0]) =>
          held.on
            ? Effect.flatMap(
              store.get(id),
              (record) => Effect.as(Effect.zipRight(Deferred.succeed(reached, undefined), Deferred.await(gate)), record)
            )
            : store.get(id)
      }))
    )

  it.effect("an entry whose lookup overlapped an unregister is refused", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const reached = yield* Deferred.make<void>()
      const held = { on: false }
      const layer = TenantRegistry.layer().pipe(Layer.provide(gatedStore(gate, reached, held)))
      yield* Effect.gen(function*() {
        const registry = yield* Registry
        yield* registry.register({ id: "acme", name: "Acme" })
        held.on = true
        let ran = false
        const entering = yield* Effect.fork(withTenant(Effect.sync(() => (ran = true)), "acme"))
        yield* Deferred.await(reached)
        // The record is read before the unregister, but delivered after it:
        // the store read waits at the gate while the unregister runs.
        held.on = false
        yield* registry.unregister("acme").pipe(Effect.zipLeft(Deferred.succeed(gate, undefined)))
        const exit = yield* Fiber.await(entering)
        assert.deepStrictEqual(exit, Exit.fail(new TenantNotFound({ tenantId: "acme" })))
        assert.isFalse(ran)
        const stats = yield* registry.stats
        assert.strictEqual(stats.activeSwitches, 0)
        assert.strictEqual(yield* registry.inUse("acme" as never), 0)
      }).pipe(Effect.provide(layer))
    }))
})

describe("unregister that ends during a lookup", () => {
  it.effect("an entry whose lookup read the record before the delete committed is refused", () =>
    Effect.gen(function*() {
      const deleteReached = yield* Deferred.make<void>()
      const deleteGate = yield* Deferred.make<void>()
      const getReached = yield* Deferred.make<void>()
      const getGate = yield* Deferred.make<void>()
      const hold = { get: false }
      const store = Layer.effect(
        TenantStore.TenantStore,
        Effect.map(TenantStore.makeMemory, (memory) => ({
          ...memory,
          delete: (options: Parameters<typeof memory.delete>[0]) =>
            Effect.zipRight(
              Effect.zipRight(Deferred.succeed(deleteReached, undefined), Deferred.await(deleteGate)),
              memory.delete(options)
            ),
          get: (id: Parameters<typeof memory.get>[0]) =>
            hold.get
              ? Effect.flatMap(memory.get(id), (record) =>
                Effect.as(Effect.zipRight(Deferred.succeed(getReached, undefined), Deferred.await(getGate)), record))
              : memory.get(id)
        }))
      )
      yield* Effect.gen(function*() {
        const registry = yield* Registry
        yield* registry.register({ id: "acme", name: "Acme" })
        const unregistering = yield* Effect.fork(registry.unregister("acme"))
        yield* Deferred.await(deleteReached)
        // The delete has begun but not committed: a lookup still reads the row.
        hold.get = true
        let ran = false
        const entering = yield* Effect.fork(withTenant(Effect.sync(() => (ran = true)), "acme"))
        yield* Deferred.await(getReached)
        hold.get = false
        yield* Deferred.succeed(deleteGate, undefined)
        yield* Fiber.join(unregistering)
        yield* Deferred.succeed(getGate, undefined)
        const exit = yield* Fiber.await(entering)
        assert.deepStrictEqual(exit, Exit.fail(new TenantNotFound({ tenantId: "acme" })))
        assert.isFalse(ran)
      }).pipe(Effect.provide(TenantRegistry.layer().pipe(Layer.provide(store))))
    }))
})

describe("isolation under concurrency", () => {
  it.live("10,000 fibers across 100 tenants each see only their own tenant", () =>
    Effect.gen(function*() {
      const registry = yield* Registry
      const tenants = Array.from({ length: 100 }, (_, i) => `tenant-${String(i).padStart(3, "0")}`)
      yield* Effect.forEach(tenants, (id) => registry.register({ id, name: `Name of ${id}` }), { discard: true })
      let mismatches = 0
      let checks = 0
      const check = (expected: string) =>
        Effect.gen(function*() {
          const tenant = yield* CurrentTenant
          checks++
          if (tenant.id !== expected || tenant.name !== `Name of ${expected}`) mismatches++
        })
      const pause = Effect.flatMap(Random.nextIntBetween(0, 4), (n) =>
        n === 0
          ? Effect.void
          : n === 1
          ? Effect.yieldNow()
          : Effect.sleep(`${n - 1} millis`))
      const work = (i: number) => {
        const expected = tenants[i % tenants.length]
        return Effect.gen(function*() {
          yield* check(expected)
          yield* pause
          yield* check(expected)
          const child = yield* Effect.fork(Effect.zipRight(pause, check(expected)))
          yield* pause
          yield* check(expected)
          yield* Fiber.join(child)
          // A nested switch to a neighbour, then back.
          const neighbour = tenants[(i + 1) % tenants.length]
          yield* Effect.zipRight(pause, check(neighbour)).pipe(withTenant(neighbour))
          yield* check(expected)
        }).pipe(withTenant(expected))
      }
      yield* Effect.forEach(Array.from({ length: 10_000 }, (_, i) => i), work, {
        concurrency: "unbounded",
        discard: true
      })
      assert.strictEqual(mismatches, 0)
      assert.strictEqual(checks, 10_000 * 6)
      const stats = yield* registry.stats
      assert.strictEqual(stats.activeSwitches, 0)
      assert.strictEqual(stats.totalSwitches, 20_000)
      for (const id of tenants) assert.strictEqual(yield* registry.inUse(id as never), 0)
      assert.strictEqual(yield* currentIdOrNone, "none")
    }).pipe(Effect.provide(TenantRegistry.layerMemory())), 60_000)
})
