/**
 * The narrow persistence tag behind `TenantRegistry`. A store keeps tenant
 * records and enforces the two invariants that must hold under concurrency:
 * ids and identifiers are unique (create is atomic), and an update carries the
 * version it read (a stale write is `TenantConflict`, never a lost update).
 *
 * Every implementation passes the conformance suite in
 * `test/suites/TenantStoreSuite.ts`. `layerMemory` is the embedded default.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Encoding from "effect/Encoding"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type { HealthStatus } from "./Health.js"
import * as Health from "./Health.js"
import { decodeTenantId } from "./Tenant.js"
import type { Tenant, TenantId, TenantStatus } from "./Tenant.js"
import {
  InvalidPageRequest,
  TenantAlreadyExists,
  TenantConflict,
  TenantNotFound,
  type TenantStoreError
} from "./TenantError.js"

/**
 * Options of a listing: an optional status filter, a page size (1 to
 * `TenantStore.maxPageSize`, default `TenantStore.defaultPageSize`), and the
 * opaque cursor returned by the previous page.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListOptions {
  readonly status?: TenantStatus | ReadonlyArray<TenantStatus> | undefined
  readonly limit?: number | undefined
  readonly cursor?: string | undefined
}

/**
 * One page of tenants, ordered by id. `cursor` is present when more may follow.
 *
 * @since 0.1.0
 * @category models
 */
export interface Page {
  readonly tenants: ReadonlyArray<Tenant>
  readonly cursor: Option.Option<string>
}

/**
 * @since 0.1.0
 * @category constants
 */
export const defaultPageSize = 100

/**
 * @since 0.1.0
 * @category constants
 */
export const maxPageSize = 1000

/**
 * The persistence interface. Implementations never throw: failures of the
 * underlying system are `TenantStoreError`.
 *
 * Ids and identifiers share one namespace: a tenant's identifier may equal
 * its own id, but not the id or identifier of another tenant, so a name
 * always means one tenant whichever way it is looked up.
 *
 * @since 0.1.0
 * @category tags
 */
export class TenantStore extends Context.Tag("effect-tenancy/TenantStore")<TenantStore, {
  /** Reads a tenant by its id. */
  readonly get: (id: TenantId) => Effect.Effect<Option.Option<Tenant>, TenantStoreError>
  /** Reads a tenant by its public identifier. */
  readonly getByIdentifier: (identifier: TenantId) => Effect.Effect<Option.Option<Tenant>, TenantStoreError>
  /** Lists tenants ordered by id, one page at a time. */
  readonly list: (options: ListOptions) => Effect.Effect<Page, InvalidPageRequest | TenantStoreError>
  /** Counts tenants, optionally only those in the given statuses. */
  readonly count: (
    options: { readonly status?: TenantStatus | ReadonlyArray<TenantStatus> | undefined }
  ) => Effect.Effect<number, TenantStoreError>
  /** Inserts a tenant unless its id or identifier is taken, atomically. */
  readonly create: (tenant: Tenant) => Effect.Effect<Tenant, TenantAlreadyExists | TenantStoreError>
  /**
   * Replaces a tenant if its stored version is `expectedVersion`. The new
   * record's `version` is written as given (the registry sets it to
   * `expectedVersion + 1`).
   */
  readonly update: (
    options: { readonly tenant: Tenant; readonly expectedVersion: number }
  ) => Effect.Effect<Tenant, TenantNotFound | TenantConflict | TenantAlreadyExists | TenantStoreError>
  /** Deletes a tenant, if its stored version is `expectedVersion` when one is given. */
  readonly delete: (
    options: { readonly id: TenantId; readonly expectedVersion?: number | undefined }
  ) => Effect.Effect<void, TenantNotFound | TenantConflict | TenantStoreError>
  /** Whether the store can serve requests now. Never fails. */
  readonly health: Effect.Effect<HealthStatus>
}>() {}

/**
 * Turns the last id of a page into an opaque cursor.
 *
 * @since 0.1.0
 * @category cursors
 */
export const encodeCursor = (lastId: TenantId): string => Encoding.encodeBase64Url(lastId)

/**
 * Reads a cursor made by `encodeCursor`; fails with `InvalidPageRequest` on anything else.
 *
 * @since 0.1.0
 * @category cursors
 */
export const decodeCursor = (cursor: string): Either.Either<TenantId, InvalidPageRequest> =>
  Encoding.decodeBase64UrlString(cursor).pipe(
    Either.flatMap((s) => decodeTenantId(s)),
    Either.mapLeft(() => new InvalidPageRequest({ reason: "the cursor is malformed" }))
  )

/**
 * Checks the page size of a listing; returns the size to use.
 *
 * @since 0.1.0
 * @category cursors
 */
export const validateLimit = (limit: number | undefined): Either.Either<number, InvalidPageRequest> => {
  if (limit === undefined) return Either.right(defaultPageSize)
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > maxPageSize) {
    return Either.left(new InvalidPageRequest({ reason: `the limit must be an integer from 1 to ${maxPageSize}` }))
  }
  return Either.right(limit)
}

/**
 * Normalizes a status filter to a set, or `undefined` for "any status".
 *
 * @since 0.1.0
 * @category cursors
 */
export const statusFilter = (
  status: TenantStatus | ReadonlyArray<TenantStatus> | undefined
): ReadonlySet<TenantStatus> | undefined =>
  status === undefined ? undefined : new Set(typeof status === "string" ? [status] : status)

/**
 * An in-memory store: the embedded default and the reference implementation
 * of the conformance suite. Each operation is a single synchronous step, so
 * create and compare-and-set are atomic without locks.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<TenantStore["Type"]> = Effect.sync(() => {
  const byId = new Map<TenantId, Tenant>()
  const byIdentifier = new Map<TenantId, TenantId>()
  // Ids and identifiers share one namespace: name -> the tenant that holds it.
  const names = new Map<string, TenantId>()
  const isFree = (name: string, owner: TenantId) => {
    const holder = names.get(name)
    return holder === undefined || holder === owner
  }

  const matching = (status: TenantStatus | ReadonlyArray<TenantStatus> | undefined) => {
    const filter = statusFilter(status)
    const all = Array.from(byId.values())
    return filter === undefined ? all : all.filter((t) => filter.has(t.status))
  }

  return TenantStore.of({
    get: (id) => Effect.sync(() => Option.fromNullable(byId.get(id))),
    getByIdentifier: (identifier) =>
      Effect.sync(() => {
        const id = byIdentifier.get(identifier)
        return id === undefined ? Option.none() : Option.fromNullable(byId.get(id))
      }),
    list: (options) =>
      Effect.gen(function*() {
        const limit = yield* validateLimit(options.limit)
        const after = options.cursor === undefined ? undefined : yield* decodeCursor(options.cursor)
        const sorted = matching(options.status)
          .filter((t) => after === undefined || t.id > after)
          .sort((a, b) => (a.id < b.id ? -1 : 1))
        const tenants = sorted.slice(0, limit)
        const cursor = sorted.length > limit ? Option.some(encodeCursor(tenants[tenants.length - 1].id)) : Option.none()
        return { tenants, cursor }
      }),
    count: (options) => Effect.sync(() => matching(options.status).length),
    create: (tenant) =>
      Effect.suspend((): Effect.Effect<Tenant, TenantAlreadyExists> => {
        if (!isFree(tenant.id, tenant.id) || byId.has(tenant.id)) {
          return Effect.fail(new TenantAlreadyExists({ tenantId: tenant.id, conflictOn: "id" }))
        }
        if (!isFree(tenant.identifier, tenant.id)) {
          return Effect.fail(new TenantAlreadyExists({ tenantId: tenant.id, conflictOn: "identifier" }))
        }
        byId.set(tenant.id, tenant)
        byIdentifier.set(tenant.identifier, tenant.id)
        names.set(tenant.id, tenant.id)
        names.set(tenant.identifier, tenant.id)
        return Effect.succeed(tenant)
      }),
    update: ({ expectedVersion, tenant }) =>
      Effect.suspend((): Effect.Effect<Tenant, TenantNotFound | TenantConflict | TenantAlreadyExists> => {
        const current = byId.get(tenant.id)
        if (current === undefined) return Effect.fail(new TenantNotFound({ tenantId: tenant.id }))
        if (current.version !== expectedVersion) {
          return Effect.fail(
            new TenantConflict({ tenantId: tenant.id, expectedVersion, actualVersion: current.version })
          )
        }
        if (current.identifier !== tenant.identifier) {
          if (!isFree(tenant.identifier, tenant.id)) {
            return Effect.fail(new TenantAlreadyExists({ tenantId: tenant.id, conflictOn: "identifier" }))
          }
          byIdentifier.delete(current.identifier)
          if (current.identifier !== current.id) names.delete(current.identifier)
          byIdentifier.set(tenant.identifier, tenant.id)
          names.set(tenant.identifier, tenant.id)
        }
        byId.set(tenant.id, tenant)
        return Effect.succeed(tenant)
      }),
    delete: ({ expectedVersion, id }) =>
      Effect.suspend((): Effect.Effect<void, TenantNotFound | TenantConflict> => {
        const current = byId.get(id)
        if (current === undefined) return Effect.fail(new TenantNotFound({ tenantId: id }))
        if (expectedVersion !== undefined && current.version !== expectedVersion) {
          return Effect.fail(new TenantConflict({ tenantId: id, expectedVersion, actualVersion: current.version }))
        }
        byId.delete(id)
        byIdentifier.delete(current.identifier)
        names.delete(id)
        names.delete(current.identifier)
        return Effect.void
      }),
    health: Health.probe("tenant-store:memory", Effect.void)
  })
})

/**
 * The in-memory store as a layer. Each build of the layer is a fresh, empty store.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<TenantStore> = Layer.effect(TenantStore, makeMemory)
