/**
 * The tenant model: validated ids, the lifecycle status machine, and the
 * `Tenant` record that stores, job envelopes and caches encode as JSON.
 *
 * @since 0.1.0
 */
import type * as DateTime from "effect/DateTime"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as internal from "./internal/tenantId.js"
import { excerpt } from "./internal/text.js"
import { InvalidStatusTransition, InvalidTenantId } from "./TenantError.js"

/**
 * A tenant id: 3 to 63 characters of lowercase letters, digits and `-`,
 * starting with a letter and not ending with `-`, and not starting with `pg-`.
 * Every Postgres name, Redis key and metric label derived from a tenant is
 * derived from a `TenantId`, never from raw input.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TenantId: Schema.brand<Schema.filter<typeof Schema.String>, typeof internal.TenantIdBrand> =
  internal.TenantId

/**
 * @since 0.1.0
 * @category models
 */
export type TenantId = typeof TenantId.Type

/**
 * The regular expression a tenant id matches (the `pg-` prefix is refused in addition).
 *
 * @since 0.1.0
 * @category constants
 */
export const TenantIdPattern: RegExp = internal.pattern

/**
 * Validates a string as a `TenantId`, synchronously, as an `Either`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const decodeTenantId = (input: unknown): Either.Either<TenantId, InvalidTenantId> => {
  const reason = internal.explain(input)
  return reason === undefined
    ? Either.right(input as TenantId)
    : Either.left(new InvalidTenantId({ input: excerpt(typeof input === "string" ? input : typeof input), reason }))
}

/**
 * Validates a string as a `TenantId`; fails with `InvalidTenantId`, never throws.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeTenantId = (input: string): Effect.Effect<TenantId, InvalidTenantId> => decodeTenantId(input)

/**
 * Brands a string as a `TenantId` without checking it. For literals in tests
 * and for values that were validated already.
 *
 * @since 0.1.0
 * @category constructors
 */
export const unsafeMakeTenantId = (input: string): TenantId => input as TenantId

/**
 * @since 0.1.0
 * @category guards
 */
export const isTenantId = (u: unknown): u is TenantId => internal.explain(u) === undefined

/**
 * The lifecycle of a tenant.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TenantStatus = Schema.Literal("provisioning", "active", "suspended", "deleting", "deleted")

/**
 * @since 0.1.0
 * @category models
 */
export type TenantStatus = typeof TenantStatus.Type

const transitions: Readonly<Record<TenantStatus, ReadonlyArray<TenantStatus>>> = {
  // A provisioning that failed must be cleanable, so `provisioning → deleting` is allowed too.
  provisioning: ["active", "deleting"],
  active: ["suspended"],
  suspended: ["active", "deleting"],
  deleting: ["deleted"],
  deleted: []
}

/**
 * The statuses a tenant in `from` may move to:
 * `provisioning → active ⇄ suspended → deleting → deleted`, plus
 * `provisioning → deleting` to clean up a failed provisioning.
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const nextStatuses = (from: TenantStatus): ReadonlyArray<TenantStatus> => transitions[from]

/**
 * @since 0.1.0
 * @category lifecycle
 */
export const canTransition = (from: TenantStatus, to: TenantStatus): boolean => transitions[from].includes(to)

/**
 * A JSON value, as stored in a tenant's metadata.
 *
 * @since 0.1.0
 * @category models
 */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/**
 * @since 0.1.0
 * @category schemas
 */
export const Json: Schema.Schema<Json> = Schema.Union(
  Schema.Null,
  Schema.Boolean,
  Schema.Finite,
  Schema.String,
  Schema.Array(Schema.suspend(() => Json)),
  Schema.Record({ key: Schema.String, value: Schema.suspend(() => Json) })
).annotations({ identifier: "Json" })

/**
 * Free-form tenant metadata: a JSON object.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TenantMetadata = Schema.Record({ key: Schema.String, value: Json })

/**
 * @since 0.1.0
 * @category models
 */
export type TenantMetadata = typeof TenantMetadata.Type

/**
 * A tenant's service tier: a free-form label such as `free`, `premium` or
 * `enterprise`, used to pick per-tier services (throttle backends, isolation).
 *
 * @since 0.1.0
 * @category schemas
 */
export const TenantTier = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/),
  Schema.annotations({ identifier: "TenantTier", description: "1 to 63 characters of [A-Za-z0-9_.-]" })
)

/**
 * A tenant's display name.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TenantName = Schema.Trim.pipe(
  Schema.minLength(1),
  Schema.maxLength(200),
  Schema.annotations({ identifier: "TenantName" })
)

/**
 * A tenant record.
 *
 * - `id` is the immutable key: Postgres schemas, Redis keys and job envelopes
 *   are derived from it.
 * - `identifier` is the public handle a request names the tenant by
 *   (subdomain, path, header). It has the syntax of a `TenantId`, is unique,
 *   defaults to `id`, and can be changed without moving any data.
 * - `version` increases by one on every write (optimistic concurrency).
 *
 * @since 0.1.0
 * @category models
 */
export class Tenant extends Schema.Class<Tenant>("effect-tenancy/Tenant")({
  id: TenantId,
  identifier: TenantId,
  name: TenantName,
  status: TenantStatus,
  tier: TenantTier,
  metadata: TenantMetadata,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc,
  version: Schema.Int.pipe(Schema.nonNegative())
}) {
  /**
   * Whether new work may enter this tenant.
   *
   * @since 0.1.0
   */
  get isActive(): boolean {
    return this.status === "active"
  }
}

/**
 * The JSON shape of a `Tenant` (dates as ISO strings).
 *
 * @since 0.1.0
 * @category models
 */
export type TenantEncoded = typeof Tenant.Encoded

/**
 * A `Tenant` from and to a JSON string.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TenantFromJson: Schema.Schema<Tenant, string> = Schema.parseJson(Tenant)

/**
 * Moves a tenant to a new status, bumping its version and `updatedAt`; fails
 * with `InvalidStatusTransition` when the lifecycle does not allow the move.
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const transition = (
  tenant: Tenant,
  to: TenantStatus,
  now: DateTime.Utc
): Either.Either<Tenant, InvalidStatusTransition> =>
  canTransition(tenant.status, to)
    ? Either.right(new Tenant({ ...tenant, status: to, updatedAt: now, version: tenant.version + 1 }))
    : Either.left(new InvalidStatusTransition({ tenantId: tenant.id, from: tenant.status, to }))
