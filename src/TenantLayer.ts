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
  /** The layer for a key; `tenant` is the tenant whose request built it first. */
  readonly layer: (key: string, tenant: Tenant) => Layer.Layer<ROut, E, RIn>
  /** How long unused services are kept (default 1 minute). */
  readonly idleTimeToLive?: Duration.DurationInput | undefined
  /**
   * How many keys are held at most (default 1000). At the bound, the least
   * recently used key is dropped (released once its last user finishes).
   */
  readonly capacity?: number | undefined
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
    // The tenant a key is being built for (RcMap keys are plain strings); held only during a get.
    const builders = new Map<string, Tenant>()
    const lastUsed = new Map<string, number>()
    let clock = 0

    // RcMap.get (effect 3.22) looks for the entry before taking its lock and
    // does not look again after: concurrent first gets of one key each build
    // it. Gets of one key are serialized here (striped locks: bounded memory,
    // different keys rarely wait for each other).
    const stripes = Array.from({ length: 64 }, () => Effect.unsafeMakeSemaphore(1))
    const stripeOf = (key: string) => {
      let h = 0
      for (let i = 0; i < key.length; i++) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0
      return stripes[(h >>> 0) % stripes.length]
    }

    const map = yield* RcMap.make({
      lookup: (key: string) =>
        Effect.suspend(() => {
          builds++
          const tenant = builders.get(key)
          if (tenant === undefined) return Effect.dieMessage(`TenantLayer: no tenant recorded for key ${key}`)
          return Layer.build(options.layer(key, tenant))
        }),
      idleTimeToLive: options.idleTimeToLive ?? "1 minute",
      capacity
    })

    const evictLeastRecentlyUsed = (except: string) =>
      Effect.flatMap(RcMap.keys(map), (held) => {
        const live = new Set(held)
        let victim: string | undefined
        let oldest = Number.POSITIVE_INFINITY
        for (const [key, at] of lastUsed) {
          if (!live.has(key)) lastUsed.delete(key) // expired by its idle time-to-live
          else if (key !== except && at < oldest) {
            oldest = at
            victim = key
          }
        }
        if (victim === undefined) return Effect.void
        lastUsed.delete(victim)
        return RcMap.invalidate(map, victim)
      })

    const acquire = (key: string, tenant: Tenant): Effect.Effect<Context.Context<ROut>, E, Scope.Scope> =>
      Effect.suspend(() => {
        builders.set(key, tenant)
        lastUsed.set(key, ++clock)
        const get = stripeOf(key).withPermits(1)(RcMap.get(map, key))
        return get.pipe(
          Effect.catchIf(
            (error): error is Cause.ExceededCapacityException => Cause.isExceededCapacityException(error),
            () => Effect.zipRight(evictLeastRecentlyUsed(key), get)
          ),
          // Still over capacity: every other key is in use. Fail loudly rather than grow.
          Effect.catchIf(
            (error): error is Cause.ExceededCapacityException => Cause.isExceededCapacityException(error),
            (error) => Effect.die(error)
          ),
          // Any build this acquisition started has read its tenant by now.
          Effect.ensuring(Effect.sync(() => builders.delete(key)))
        ) as Effect.Effect<Context.Context<ROut>, E, Scope.Scope>
      })

    return {
      provide: <A, E2, R>(self: Effect.Effect<A, E2, R>) =>
        Effect.flatMap(internal.CurrentTenant, (tenant) =>
          Effect.scoped(
            Effect.flatMap(acquire(keyOf(tenant), tenant), (context) => Effect.provide(self, context))
          )) as Effect.Effect<A, E | E2, Exclude<R, ROut> | internal.CurrentTenant>,
      stats: Effect.map(RcMap.keys(map), (keys) => ({ builds, keys })),
      invalidate: (key) =>
        Effect.suspend(() => {
          lastUsed.delete(key)
          return RcMap.invalidate(map, key)
        })
    }
  })
