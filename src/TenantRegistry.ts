/**
 * The front service for tenants: registration, lookup, listing, updates with
 * optimistic concurrency, the lifecycle (activate, suspend, unregister), the
 * bookkeeping of who is inside which tenant, statistics, and a stream of
 * tenant events. It persists through the narrow `TenantStore` tag.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as PubSub from "effect/PubSub"
import type * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as internal from "./internal/tenantContext.js"
import * as Tenant_ from "./Tenant.js"
import { decodeTenantId, Tenant, TenantId } from "./Tenant.js"
import type { TenantMetadata, TenantStatus } from "./Tenant.js"
import type {
  InvalidPageRequest,
  InvalidStatusTransition,
  InvalidTenantId,
  TenantAlreadyExists,
  TenantConflict,
  TenantLookupError,
  TenantStoreError
} from "./TenantError.js"
import { InvalidTenantInput, TenantInUse, TenantNotFound, TenantSuspended } from "./TenantError.js"
import { makeMemory as makeMemoryStore, TenantStore } from "./TenantStore.js"
import type { ListOptions, Page } from "./TenantStore.js"

/**
 * A tenant was registered.
 *
 * @since 0.1.0
 * @category events
 */
export class TenantRegistered extends Schema.TaggedClass<TenantRegistered>("effect-tenancy/TenantRegistered")(
  "TenantRegistered",
  { tenant: Tenant }
) {}

/**
 * A tenant's record changed (name, tier, metadata, identifier, or a status
 * change other than activation and suspension).
 *
 * @since 0.1.0
 * @category events
 */
export class TenantUpdated extends Schema.TaggedClass<TenantUpdated>("effect-tenancy/TenantUpdated")(
  "TenantUpdated",
  { tenant: Tenant, previous: Tenant }
) {}

/**
 * A tenant was suspended: new work is refused from now on.
 *
 * @since 0.1.0
 * @category events
 */
export class TenantSuspendedEvent
  extends Schema.TaggedClass<TenantSuspendedEvent>("effect-tenancy/TenantSuspendedEvent")("TenantSuspended", {
    tenant: Tenant
  })
{}

/**
 * A tenant became active.
 *
 * @since 0.1.0
 * @category events
 */
export class TenantActivated extends Schema.TaggedClass<TenantActivated>("effect-tenancy/TenantActivated")(
  "TenantActivated",
  { tenant: Tenant }
) {}

/**
 * A tenant was removed from the registry.
 *
 * @since 0.1.0
 * @category events
 */
export class TenantUnregistered extends Schema.TaggedClass<TenantUnregistered>("effect-tenancy/TenantUnregistered")(
  "TenantUnregistered",
  { tenantId: TenantId }
) {}

/**
 * @since 0.1.0
 * @category events
 */
export const TenantEvent = Schema.Union(
  TenantRegistered,
  TenantUpdated,
  TenantSuspendedEvent,
  TenantActivated,
  TenantUnregistered
)

/**
 * @since 0.1.0
 * @category events
 */
export type TenantEvent = typeof TenantEvent.Type

/**
 * A snapshot of the registry: tenants in the store, and the context switches
 * made through this registry instance (`activeSwitches` are the scopes
 * running right now; nested switches count once each).
 *
 * @since 0.1.0
 * @category models
 */
export interface TenantStats {
  readonly totalTenants: number
  readonly activeTenants: number
  readonly totalSwitches: number
  readonly activeSwitches: number
  readonly currentTenant: Option.Option<TenantId>
}

/**
 * What `register` takes. `identifier` defaults to `id`, `tier` to `"free"`,
 * `metadata` to `{}`, `status` to `"active"` (use `"provisioning"` when the
 * tenant's resources are created afterwards, then `activate`).
 *
 * @since 0.1.0
 * @category models
 */
export interface RegisterOptions {
  readonly id: string
  readonly name: string
  readonly identifier?: string | undefined
  readonly tier?: string | undefined
  readonly metadata?: TenantMetadata | undefined
  readonly status?: "active" | "provisioning" | undefined
}

/**
 * A change to a tenant's record. Without `expectedVersion` the patch is
 * applied to the latest version (re-read and retried on a concurrent write);
 * with it, a stale version fails with `TenantConflict`.
 *
 * @since 0.1.0
 * @category models
 */
export interface UpdateOptions {
  readonly name?: string | undefined
  readonly identifier?: string | undefined
  readonly tier?: string | undefined
  readonly metadata?: TenantMetadata | undefined
  readonly expectedVersion?: number | undefined
}

/**
 * What a status change can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type TransitionError =
  | InvalidTenantId
  | TenantNotFound
  | InvalidStatusTransition
  | TenantConflict
  | TenantStoreError

/**
 * The registry service.
 *
 * @since 0.1.0
 * @category tags
 */
export class TenantRegistry extends Context.Tag("effect-tenancy/TenantRegistry")<TenantRegistry, {
  readonly register: (
    options: RegisterOptions
  ) => Effect.Effect<Tenant, InvalidTenantId | InvalidTenantInput | TenantAlreadyExists | TenantStoreError>
  readonly get: (id: string) => Effect.Effect<Tenant, InvalidTenantId | TenantNotFound | TenantStoreError>
  readonly getByIdentifier: (
    identifier: string
  ) => Effect.Effect<Tenant, InvalidTenantId | TenantNotFound | TenantStoreError>
  readonly list: (options?: ListOptions) => Effect.Effect<Page, InvalidPageRequest | TenantStoreError>
  /** Every tenant (optionally only some statuses), paging through the store lazily. */
  readonly stream: (
    options?: { readonly status?: ListOptions["status"]; readonly pageSize?: number | undefined }
  ) => Stream.Stream<Tenant, InvalidPageRequest | TenantStoreError>
  readonly update: (
    id: string,
    options: UpdateOptions
  ) => Effect.Effect<
    Tenant,
    InvalidTenantId | InvalidTenantInput | TenantNotFound | TenantConflict | TenantAlreadyExists | TenantStoreError
  >
  /** Moves a tenant to `status`; a no-op when it is there already. */
  readonly transition: (id: string, status: TenantStatus) => Effect.Effect<Tenant, TransitionError>
  readonly activate: (id: string) => Effect.Effect<Tenant, TransitionError>
  readonly suspend: (id: string) => Effect.Effect<Tenant, TransitionError>
  /**
   * Removes a tenant; refused with `TenantInUse` while any fiber is inside
   * it. Entries whose lookup was in flight when it began are refused.
   */
  readonly unregister: (
    id: string
  ) => Effect.Effect<void, InvalidTenantId | TenantNotFound | TenantInUse | TenantConflict | TenantStoreError>
  readonly stats: Effect.Effect<TenantStats, TenantStoreError>
  /** How many scopes are inside this tenant now. */
  readonly inUse: (id: TenantId) => Effect.Effect<number>
  /** Events from the moment of subscription; each stream subscribes anew. */
  readonly events: Stream.Stream<TenantEvent>
  readonly subscribe: Effect.Effect<Queue.Dequeue<TenantEvent>, never, Scope.Scope>
  /**
   * Runs `self` inside the tenant `id` (or the tenant whose public identifier
   * is `{ identifier }`). Prefer `TenantContext.withTenant`; `allowInactive`
   * (used by `TenantContext.asTenant`) also enters tenants that are not
   * active, except deleted ones. `services` adds the tenant's prebuilt
   * services in the same context change (they are not removed from `R` here;
   * `withTenant` does that).
   */
  readonly enter: <A, E, R>(
    self: Effect.Effect<A, E, R>,
    id: string | { readonly identifier: string },
    options?: {
      readonly allowInactive?: boolean | undefined
      readonly services?: ((tenant: Tenant) => Context.Context<never>) | undefined
    }
  ) => Effect.Effect<A, E | TenantLookupError, Exclude<R, internal.CurrentTenant>>
}>() {}

/**
 * Options of `make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions {
  /** The default tier of newly registered tenants (default `"free"`). */
  readonly defaultTier?: string | undefined
  /**
   * How many events a slow subscriber may lag behind before the oldest are
   * dropped (default: unbounded).
   */
  readonly eventCapacity?: number | undefined
  /** How many times a patch without `expectedVersion` is retried on a concurrent write (default 5). */
  readonly maxPatchRetries?: number | undefined
}

const decodeTenant = Schema.decodeUnknownEither(Tenant)

const buildTenant = (fields: unknown) =>
  Either.mapLeft(
    decodeTenant(fields),
    (error) => new InvalidTenantInput({ reason: ParseResult.TreeFormatter.formatErrorSync(error) })
  )

const encodeTenant = Schema.encodeSync(Tenant)

const validId = (input: string): Effect.Effect<TenantId, InvalidTenantId> => decodeTenantId(input)

/**
 * Builds the registry over the `TenantStore` in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: MakeOptions = {}
): Effect.Effect<TenantRegistry["Type"], never, TenantStore | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* TenantStore
    const defaultTier = options.defaultTier ?? "free"
    const maxPatchRetries = options.maxPatchRetries ?? 5
    const pubsub = yield* Effect.acquireRelease(
      options.eventCapacity === undefined
        ? PubSub.unbounded<TenantEvent>()
        : PubSub.sliding<TenantEvent>(options.eventCapacity),
      PubSub.shutdown
    )
    const publish = (event: TenantEvent) => PubSub.publish(pubsub, event)

    // Bookkeeping of scopes inside each tenant. All of it is synchronous, so
    // the check in `unregister` and the reservation in `enter` cannot interleave.
    const inUse = new Map<TenantId, number>()
    const closing = new Set<TenantId>()
    // Lookups run outside the bookkeeping; an unregister bumps the epoch and
    // records it, so an entry whose lookup started earlier can tell that the
    // tenant may be gone.
    let unregisterEpoch = 0
    const unregisteredAt = new Map<TenantId, number>()
    let totalSwitches = 0
    let activeSwitches = 0
    const reserve = (id: TenantId) => inUse.set(id, (inUse.get(id) ?? 0) + 1)
    const release = (id: TenantId) => {
      const n = (inUse.get(id) ?? 1) - 1
      if (n === 0) inUse.delete(id)
      else inUse.set(id, n)
    }

    const find = (id: TenantId) =>
      Effect.flatMap(
        store.get(id),
        Option.match({
          onNone: () => Effect.fail(new TenantNotFound({ tenantId: id })),
          onSome: Effect.succeed
        })
      )

    const get = (input: string) => Effect.flatMap(validId(input), find)

    const getByIdentifier = (input: string) =>
      Effect.flatMap(validId(input), (identifier) =>
        Effect.flatMap(
          store.getByIdentifier(identifier),
          Option.match({
            onNone: () => Effect.fail(new TenantNotFound({ tenantId: identifier })),
            onSome: Effect.succeed
          })
        ))

    const register = (opts: RegisterOptions) =>
      Effect.gen(function*() {
        const id = yield* validId(opts.id)
        const identifier = opts.identifier === undefined ? id : yield* validId(opts.identifier)
        const now = yield* DateTime.now
        const encodedNow = DateTime.formatIso(now)
        const tenant = yield* buildTenant({
          id,
          identifier,
          name: opts.name,
          status: opts.status ?? "active",
          tier: opts.tier ?? defaultTier,
          metadata: opts.metadata ?? {},
          createdAt: encodedNow,
          updatedAt: encodedNow,
          version: 0
        })
        const created = yield* store.create(tenant)
        yield* publish(new TenantRegistered({ tenant: created }))
        return created
      })

    const patchOnce = (id: TenantId, patch: UpdateOptions) =>
      Effect.gen(function*() {
        const current = yield* find(id)
        const expectedVersion = patch.expectedVersion ?? current.version
        const identifier = patch.identifier === undefined ? current.identifier : yield* validId(patch.identifier)
        const now = yield* DateTime.now
        const next = yield* buildTenant({
          ...encodeTenant(current),
          identifier,
          ...(patch.name === undefined ? {} : { name: patch.name }),
          ...(patch.tier === undefined ? {} : { tier: patch.tier }),
          ...(patch.metadata === undefined ? {} : { metadata: patch.metadata }),
          updatedAt: DateTime.formatIso(now),
          version: expectedVersion + 1
        })
        const stored = yield* store.update({ tenant: next, expectedVersion })
        yield* publish(new TenantUpdated({ tenant: stored, previous: current }))
        return stored
      })

    const update = (input: string, patch: UpdateOptions) =>
      Effect.flatMap(validId(input), (id) =>
        patch.expectedVersion === undefined
          ? Effect.retry(patchOnce(id, patch), {
            times: maxPatchRetries,
            while: (e) => e._tag === "TenantConflict"
          })
          : patchOnce(id, patch))

    const transition = (input: string, status: TenantStatus) =>
      Effect.gen(function*() {
        const current = yield* get(input)
        if (current.status === status) return current
        const now = yield* DateTime.now
        const next = yield* Tenant_.transition(current, status, now)
        // The identifier does not change here, so the store cannot report it as taken.
        const stored = yield* store.update({ tenant: next, expectedVersion: current.version }).pipe(
          Effect.catchTag("TenantAlreadyExists", Effect.die)
        )
        yield* publish(
          status === "active"
            ? new TenantActivated({ tenant: stored })
            : status === "suspended"
            ? new TenantSuspendedEvent({ tenant: stored })
            : new TenantUpdated({ tenant: stored, previous: current })
        )
        return stored
      })

    const unregister = (input: string) =>
      Effect.flatMap(validId(input), (id) =>
        Effect.uninterruptibleMask((restore): Effect.Effect<
          void,
          TenantNotFound | TenantInUse | TenantConflict | TenantStoreError
        > => {
          const scopes = inUse.get(id) ?? 0
          if (scopes > 0 || closing.has(id)) {
            return Effect.fail(new TenantInUse({ tenantId: id, activeScopes: Math.max(scopes, 1) }))
          }
          // From here until the delete ends, `enter` refuses this tenant.
          closing.add(id)
          unregisterEpoch++
          if (unregisteredAt.size >= 100_000) unregisteredAt.clear()
          unregisteredAt.set(id, unregisterEpoch)
          return restore(store.delete({ id })).pipe(
            Effect.zipRight(publish(new TenantUnregistered({ tenantId: id }))),
            Effect.asVoid,
            // The end counts too: a lookup that began while the delete ran may
            // have read the row before it went, and must be refused.
            Effect.ensuring(Effect.sync(() => {
              closing.delete(id)
              unregisterEpoch++
              unregisteredAt.set(id, unregisterEpoch)
            }))
          )
        }))

    const stats = Effect.gen(function*() {
      const totalTenants = yield* store.count({})
      const activeTenants = yield* store.count({ status: "active" })
      const current = yield* Effect.serviceOption(internal.CurrentTenant)
      return {
        totalTenants,
        activeTenants,
        totalSwitches,
        activeSwitches,
        currentTenant: Option.map(current, (t) => t.id)
      } satisfies TenantStats
    })

    const enter = <A, E, R>(
      self: Effect.Effect<A, E, R>,
      input: string | { readonly identifier: string },
      enterOptions?: {
        readonly allowInactive?: boolean | undefined
        readonly services?: ((tenant: Tenant) => Context.Context<never>) | undefined
      }
    ): Effect.Effect<A, E | TenantLookupError, Exclude<R, internal.CurrentTenant>> => {
      const byIdentifier = typeof input !== "string"
      const decoded = decodeTenantId(byIdentifier ? input.identifier : input)
      if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
      const name = decoded.right
      const allowInactive = enterOptions?.allowInactive === true
      const services = enterOptions?.services
      return Effect.suspend(() => {
        const startedAt = unregisterEpoch
        return Effect.flatMap(byIdentifier ? store.getByIdentifier(name) : store.get(name), (found) =>
          Effect.uninterruptibleMask(
            (restore): Effect.Effect<A, E | TenantLookupError, Exclude<R, internal.CurrentTenant>> => {
              const tenant = Option.getOrUndefined(found)
              if (tenant === undefined) {
                return Effect.fail(new TenantNotFound({ tenantId: name }))
              }
              const id = tenant.id
              // An unregister that began after this lookup started may have
              // deleted the tenant while the lookup was in flight.
              if (closing.has(id) || (startedAt !== unregisterEpoch && (unregisteredAt.get(id) ?? -1) > startedAt)) {
                return Effect.fail(new TenantNotFound({ tenantId: id }))
              }
              if (tenant.status !== "active" && !(allowInactive && tenant.status !== "deleted")) {
                return Effect.fail(new TenantSuspended({ tenantId: id, status: tenant.status }))
              }
              reserve(id)
              totalSwitches++
              activeSwitches++
              return internal.switchTo(restore(self), tenant, () => {
                activeSwitches--
                release(id)
              }, services?.(tenant))
            }
          ))
      })
    }

    const stream = (
      streamOptions: { readonly status?: ListOptions["status"]; readonly pageSize?: number | undefined } = {}
    ) =>
      Stream.paginateChunkEffect(undefined as string | undefined, (cursor) =>
        Effect.map(
          store.list({ status: streamOptions.status, limit: streamOptions.pageSize, cursor }),
          (page) =>
            [
              Chunk.unsafeFromArray(page.tenants),
              Option.map(page.cursor, (c): string | undefined =>
                c)
            ] as const
        ))

    return TenantRegistry.of({
      register,
      get,
      getByIdentifier,
      list: (listOptions = {}) =>
        store.list(listOptions),
      stream,
      update,
      transition,
      activate: (id) => transition(id, "active"),
      suspend: (id) => transition(id, "suspended"),
      unregister,
      stats,
      inUse: (id) => Effect.sync(() => inUse.get(id) ?? 0),
      events: Stream.fromPubSub(pubsub),
      subscribe: PubSub.subscribe(pubsub),
      enter
    })
  })

/**
 * The registry over the `TenantStore` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: MakeOptions = {}): Layer.Layer<TenantRegistry, never, TenantStore> =>
  Layer.scoped(TenantRegistry, make(options))

/**
 * The registry over a fresh in-memory store: the embedded default.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: MakeOptions = {}): Layer.Layer<TenantRegistry> =>
  Layer.provide(layer(options), Layer.effect(TenantStore, makeMemoryStore))
