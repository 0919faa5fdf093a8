import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, TestClock } from "effect"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"

class Backend extends Context.Tag("test/Backend")<Backend, { readonly key: string; readonly serial: number }>() {}

const tenants = [["acme", "enterprise"], ["globex", "premium"], ["initech", "free"], ["hooli", "free"]] as const

const registry = Layer.effectDiscard(
  Effect.flatMap(
    TenantRegistry.TenantRegistry,
    (r) => Effect.forEach(tenants, ([id, tier]) => r.register({ id, name: id, tier }), { discard: true })
  )
).pipe(Layer.provideMerge(TenantRegistry.layerMemory()))

const makeBackends = (options: Partial<TenantLayer.Options<Backend, never, never>> = {}) => {
  let serial = 0
  const released: Array<string> = []
  return Effect.map(
    TenantLayer.make<Backend>({
      layer: (key) =>
        Layer.scoped(
          Backend,
          Effect.acquireRelease(
            Effect.sync(() => ({ key, serial: ++serial })),
            () => Effect.sync(() => released.push(key))
          )
        ),
      ...options
    }),
    (layer) => ({ layer, released })
  )
}

const useBackend = Effect.map(Backend, (b) => b)

describe("TenantLayer", () => {
  it.layer(registry)((it) => {
    it.scoped("concurrent first uses of a key build it once", () =>
      Effect.gen(function*() {
        const { layer } = yield* makeBackends({ key: (t) => t.tier })
        const seen = yield* Effect.forEach(
          Array.from({ length: 200 }, (_, i) => tenants[i % 4][0]),
          (id) => withTenant(layer.provide(Effect.zipRight(Effect.yieldNow(), useBackend)), id),
          { concurrency: "unbounded" }
        )
        const stats = yield* layer.stats
        assert.strictEqual(stats.builds, 3)
        assert.deepStrictEqual([...stats.keys].sort(), ["enterprise", "free", "premium"])
        const byKey = new Map(seen.map((b) => [b.key, b.serial]))
        assert.isTrue(seen.every((b) => byKey.get(b.key) === b.serial), "every user of a key shares one instance")
      }))

    it.scoped("by default services are per tenant; the current tenant is required", () =>
      Effect.gen(function*() {
        const { layer } = yield* makeBackends()
        const program = layer.provide(Effect.zip(useBackend, CurrentTenant))
        const [backend, tenant] = yield* withTenant(program, "globex")
        assert.strictEqual(backend.key, "globex")
        assert.strictEqual(tenant.id, "globex")
      }))

    it.scoped("unused services are released after the idle time-to-live", () =>
      Effect.gen(function*() {
        const { layer, released } = yield* makeBackends({ idleTimeToLive: "30 seconds" })
        yield* withTenant(layer.provide(useBackend), "acme")
        yield* TestClock.adjust("20 seconds")
        assert.deepStrictEqual(released, [])
        yield* withTenant(layer.provide(useBackend), "acme") // used again: the idle clock restarts
        yield* TestClock.adjust("20 seconds")
        assert.deepStrictEqual(released, [])
        yield* TestClock.adjust("15 seconds")
        assert.deepStrictEqual(released, ["acme"])
        assert.strictEqual((yield* layer.stats).builds, 1)
      }))

    it.scoped("at the bound, the least recently used key is dropped", () =>
      Effect.gen(function*() {
        const { layer, released } = yield* makeBackends({ capacity: 2, idleTimeToLive: "1 hour" })
        yield* withTenant(layer.provide(useBackend), "acme")
        yield* withTenant(layer.provide(useBackend), "globex")
        yield* withTenant(layer.provide(useBackend), "acme")
        yield* withTenant(layer.provide(useBackend), "initech")
        assert.deepStrictEqual(released, ["globex"])
        assert.deepStrictEqual([...(yield* layer.stats).keys].sort(), ["acme", "initech"])
      }))

    it.scoped("a failed build is not kept: the next use builds again", () =>
      Effect.gen(function*() {
        let attempts = 0
        const layer = yield* TenantLayer.make<Backend, string>({
          layer: (key) =>
            Layer.effect(
              Backend,
              Effect.suspend(
                () => (attempts++ === 0 ? Effect.fail("connection refused") : Effect.succeed({ key, serial: attempts }))
              )
            )
        })
        const first = yield* Effect.flip(withTenant(layer.provide(useBackend), "acme"))
        assert.strictEqual(first, "connection refused")
        const second = yield* withTenant(layer.provide(useBackend), "acme")
        assert.strictEqual(second.key, "acme")
        assert.strictEqual((yield* layer.stats).builds, 2)
      }))

    it.scoped("a slow first build of one key does not hold up other keys", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const layer = yield* TenantLayer.make<Backend>({
          layer: (key) =>
            Layer.effect(
              Backend,
              Effect.as(key === "acme" ? Deferred.await(gate) : Effect.void, { key, serial: 0 })
            )
        })
        yield* withTenant(layer.provide(useBackend), "globex")
        const slow = yield* Effect.fork(withTenant(layer.provide(useBackend), "acme"))
        yield* Effect.yieldNow()
        // acme's build waits at the gate; globex (held) and initech (new) are served meanwhile.
        assert.strictEqual((yield* withTenant(layer.provide(useBackend), "globex")).key, "globex")
        assert.strictEqual((yield* withTenant(layer.provide(useBackend), "initech")).key, "initech")
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual((yield* Fiber.join(slow)).key, "acme")
      }))

    it.scoped("a key in use is never released under a running effect", () =>
      Effect.gen(function*() {
        const { layer, released } = yield* makeBackends({ capacity: 1, idleTimeToLive: "1 hour" })
        const result = yield* withTenant(
          layer.provide(
            Effect.gen(function*() {
              const mine = yield* Backend
              // Another tenant takes the only slot while this effect still runs.
              yield* withTenant(layer.provide(useBackend), "globex")
              assert.deepStrictEqual(released, [], "acme is still in use")
              return mine.key
            })
          ),
          "acme"
        )
        assert.strictEqual(result, "acme")
        assert.deepStrictEqual(released, ["acme"], "released once its user finished")
      }))

    describe("prebuilt", () => {
      const prebuiltBackends = () => {
        const built: Array<string> = []
        const released: Array<string> = []
        const layerOf = (key: string) =>
          Layer.scoped(
            Backend,
            Effect.acquireRelease(
              Effect.sync(() => {
                built.push(key)
                return { key, serial: built.length }
              }),
              () => Effect.sync(() => released.push(key))
            )
          )
        return Effect.map(
          TenantLayer.prebuilt({
            key: (tenant) => tenant.tier,
            layers: { enterprise: layerOf("enterprise"), free: layerOf("free") },
            fallback: "free"
          }),
          (services) => ({ services, built, released })
        )
      }

      it.scoped("builds every key once, up front; a tenant without its own key gets the fallback", () =>
        Effect.gen(function*() {
          const { built, released, services } = yield* Effect.scoped(
            Effect.gen(function*() {
              const made = yield* prebuiltBackends()
              assert.deepStrictEqual(made.built, ["enterprise", "free"])
              const seen = yield* Effect.forEach(
                tenants.map(([id]) => id),
                (id) => withTenant(Effect.map(Backend, (b) => b.key), id, { services: made.services })
              )
              assert.deepStrictEqual(seen, ["enterprise", "free", "free", "free"], "premium falls back to free")
              return made
            })
          )
          assert.deepStrictEqual(built, ["enterprise", "free"], "nothing built per request")
          assert.deepStrictEqual([...released].sort(), ["enterprise", "free"], "released with the scope")
          assert.deepStrictEqual(services.keys, ["enterprise", "free"])
        }))

      it.scoped("the services leave with the tenant, and an inner provide still overrides them", () =>
        Effect.gen(function*() {
          const { services } = yield* prebuiltBackends()
          const inner = Layer.succeed(Backend, { key: "inner", serial: 0 })
          const keys = yield* withTenant(
            Effect.all([
              Effect.map(Backend, (b) => b.key),
              Effect.provide(Effect.map(Backend, (b) => b.key), inner),
              services.provide(Effect.map(Backend, (b) => b.key))
            ]),
            "acme",
            { services }
          )
          assert.deepStrictEqual(keys, ["enterprise", "inner", "enterprise"])
          const outside = yield* Effect.serviceOption(Backend)
          assert.isTrue(outside._tag === "None", "not visible after the tenant scope")
        }))

      it.scoped("a fallback that is not a key is a defect", () =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(
            TenantLayer.prebuilt({ key: (t) => t.tier, layers: { free: Layer.empty }, fallback: "gold" })
          )
          assert.isTrue(exit._tag === "Failure" && exit.cause._tag === "Die")
        }))
    })
  })
})
