/**
 * Per-tenant services: a layer built from the current tenant (or a key
 * derived from it, such as its tier), built once per key, shared by every
 * effect of that key, kept while in use and for an idle time-to-live after,
 * and bounded in number. Never built per request.
 *
 * ```ts
 * const throttles = yield* TenantLayer.make({
 *   key: (tenant) => tenant.tier,
 *   layer: (tier) => tier === "enterprise" ? enterpriseRedisBackend : memoryBackend,
 *   idleTimeToLive: "5 minutes"
 * })
 * // inside a tenant: the tier's backend is provided; an inner Effect.provide still overrides it
 * handler.pipe(throttles.provide)
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Hash from "effect/Hash"
import * as Layer from "effect/Layer"
import * as RcMap from "effect/RcMap"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/tenantContext.js"
import type { Tenant } from "./Tenant.js"

/**
 * Services for the current tenant.
 *
 * @since 0.1.0
 * @category models
 */
export interface TenantLayer<ROut, E = never> {
  /** Provides the current tenant's services to `self`. */
  readonly provide: <A, E2, R>(
    self: Effect.Effect<A, E2, R>
  ) => Effect.Effect<A, E | E2, Exclude<R, ROut> | internal.CurrentTenant>
  /** How many times a key's layer was built, and which keys are held now. */
  readonly stats: Effect.Effect<{ readonly builds: number; readonly keys: ReadonlyArray<string> }>
  /** Drops a key: its services are released once no effect uses them. */
  readonly invalidate: (key: string) => Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<ROut, E, RIn> {
  /** The key services are shared by (default: the tenant id). */
  readonly key?: ((tenant: Tenant) => string) | undefined
  /** The layer for a key; `tenant` is the tenant whose request built it. */
  readonly layer: (key: string, tenant: Tenant) => Layer.Layer<ROut, E, RIn>
  /** How long unused services are kept (default 1 minute). */
  readonly idleTimeToLive?: Duration.DurationInput | undefined
  /**
   * How many keys are held at most (default 1000). At the bound, the least
   * recently used key is dropped (released once its last user finishes).
   */
  readonly capacity?: number | undefined
}

// A key of the map: equal by name; it carries the tenant its first user
// saw, for the build (RcMap passes only the key to its lookup).
class Key implements Equal.Equal {
  constructor(readonly name: string, readonly tenant?: Tenant) {}
  [Equal.symbol](that: unknown): boolean {
    return that instanceof Key && that.name === this.name
  }
  [Hash.symbol](): number {
    return Hash.cached(this, Hash.string(this.name))
  }
}

/**
 * Builds a `TenantLayer`. Its services live in the scope of `make`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <ROut, E = never, RIn = never>(
  options: Options<ROut, E, RIn>
): Effect.Effect<TenantLayer<ROut, E>, never, Scope.Scope | RIn> =>
  Effect.gen(function*() {
    const keyOf = options.key ?? ((tenant: Tenant) => tenant.id)
    const capacity = options.capacity ?? 1000
    let builds = 0
    const lastUsed = new Map<string, number>()
    let clock = 0

    const map = yield* RcMap.make({
      lookup: (key: Key) =>
        Effect.suspend(() => {
          // Keys without a tenant only ever reach `invalidate`, never a build.
          if (key.tenant === undefined) return Effect.dieMessage(`TenantLayer: no tenant for key ${key.name}`)
          builds++
          return Layer.build(options.layer(key.name, key.tenant))
        }),
      idleTimeToLive: options.idleTimeToLive ?? "1 minute",
      capacity
    })

    // RcMap.get (effect 3.22) looks for the entry before taking its lock and
    // does not look again after: concurrent first gets of one key each build
    // it. First gets of a key are serialized here, per key; keys already held
    // skip the lock.
    const locks = new Map<string, { readonly semaphore: Effect.Semaphore; users: number }>()
    const withKeyLock = <A, E2, R>(name: string, effect: Effect.Effect<A, E2, R>) =>
      Effect.suspend(() => {
        let lock = locks.get(name)
        if (lock === undefined) {
          lock = { semaphore: Effect.unsafeMakeSemaphore(1), users: 0 }
          locks.set(name, lock)
        }
        const held = lock
        held.users++
        return held.semaphore.withPermits(1)(effect).pipe(
          Effect.ensuring(Effect.sync(() => {
            if (--held.users === 0) locks.delete(name)
          }))
        )
      })

    const pruneLastUsed = Effect.flatMap(RcMap.keys(map), (held) => {
      const live = new Set(held.map((k) => k.name))
      for (const name of lastUsed.keys()) if (!live.has(name)) lastUsed.delete(name)
      return Effect.succeed(live)
    })

    const evictLeastRecentlyUsed = (except: string) =>
      Effect.flatMap(pruneLastUsed, () => {
        let victim: string | undefined
        let oldest = Number.POSITIVE_INFINITY
        for (const [name, at] of lastUsed) {
          if (name !== except && at < oldest) {
            oldest = at
            victim = name
          }
        }
        if (victim === undefined) return Effect.void
        lastUsed.delete(victim)
        return RcMap.invalidate(map, new Key(victim))
      })

    const isCapacity = (error: unknown): error is Cause.ExceededCapacityException =>
      Cause.isExceededCapacityException(error)

    const acquire = (name: string, tenant: Tenant): Effect.Effect<Context.Context<ROut>, E, Scope.Scope> => {
      const key = new Key(name, tenant)
      const get = RcMap.get(map, key)
      const first = withKeyLock(name, get).pipe(
        Effect.catchIf(isCapacity, () => Effect.zipRight(evictLeastRecentlyUsed(name), withKeyLock(name, get))),
        // Still over capacity: every other key is in use. Fail loudly rather than grow.
        Effect.catchIf(isCapacity, (error) => Effect.die(error))
      )
      return Effect.suspend(() => {
        lastUsed.set(name, ++clock)
        const prune = lastUsed.size > 2 * capacity ? pruneLastUsed : Effect.void
        return Effect.zipRight(prune, Effect.flatMap(RcMap.has(map, key), (held) => (held ? get : first))).pipe(
          // A failed build is not kept: the next request builds again.
          Effect.tapErrorCause(() => RcMap.invalidate(map, key))
        ) as Effect.Effect<Context.Context<ROut>, E, Scope.Scope>
      })
    }

    return {
      provide: <A, E2, R>(self: Effect.Effect<A, E2, R>) =>
        Effect.flatMap(internal.CurrentTenant, (tenant) =>
          Effect.scoped(
            Effect.flatMap(acquire(keyOf(tenant), tenant), (context) => Effect.provide(self, context))
          )) as Effect.Effect<A, E | E2, Exclude<R, ROut> | internal.CurrentTenant>,
      stats: Effect.map(RcMap.keys(map), (keys) => ({ builds, keys: keys.map((k) => k.name) })),
      invalidate: (name) =>
        Effect.suspend(() => {
          lastUsed.delete(name)
          return RcMap.invalidate(map, new Key(name))
        })
    }
  })

/**
 * Services chosen by a key of the tenant from a fixed set built up front
 * (one per tier, say). Unlike `make`, nothing is built or looked up per
 * request: `context(tenant)` is a map lookup, and `withTenant(self, id, {
 * services })` or `TenancyMiddleware.make(resolver, { services })` add the
 * services in the same context change that provides `CurrentTenant`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TenantServices<ROut> {
  /** The services of `tenant`'s key (or of the fallback key). */
  readonly context: (tenant: Tenant) => Context.Context<ROut>
  /** Provides the current tenant's services to `self` (a context change of its own). */
  readonly provide: <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, Exclude<R, ROut> | internal.CurrentTenant>
  /** The keys, in the order they were given. */
  readonly keys: ReadonlyArray<string>
}

/**
 * Builds one layer per key up front, in the scope of `prebuilt`, and picks a
 * tenant's by `key(tenant)`; a tenant whose key has no layer gets
 * `fallback`'s. A `fallback` that is not one of the keys is a defect.
 *
 * ```ts
 * const backends = yield* TenantLayer.prebuilt({
 *   key: (tenant) => tenant.tier,
 *   layers: { enterprise: enterpriseRedis, premium: premiumRedis, free: ThrottleBackend.layerMemory() },
 *   fallback: "free"
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const prebuilt = <ROut, E = never, RIn = never>(options: {
  readonly key: (tenant: Tenant) => string
  readonly layers: Readonly<Record<string, Layer.Layer<ROut, E, RIn>>>
  readonly fallback: string
}): Effect.Effect<TenantServices<ROut>, E, Scope.Scope | RIn> =>
  Effect.gen(function*() {
    const keys = Object.keys(options.layers)
    if (!keys.includes(options.fallback)) {
      return yield* Effect.dieMessage(
        `TenantLayer.prebuilt: the fallback ${JSON.stringify(options.fallback)} is not one of the keys (${
          keys.join(", ")
        })`
      )
    }
    const contexts = new Map<string, Context.Context<ROut>>()
    for (const key of keys) contexts.set(key, yield* Layer.build(options.layers[key]))
    const fallback = contexts.get(options.fallback)!
    const context = (tenant: Tenant) => contexts.get(options.key(tenant)) ?? fallback
    return {
      context,
      keys,
      provide: <A, E2, R>(self: Effect.Effect<A, E2, R>) =>
        Effect.flatMap(internal.CurrentTenant, (tenant) => Effect.provide(self, context(tenant))) as Effect.Effect<
          A,
          E2,
          Exclude<R, ROut> | internal.CurrentTenant
        >
    }
  })
