/**
 * The errors of effect-tenancy's core. Every failure a caller can act on is a
 * `Schema.TaggedError`, so it can be matched with `Effect.catchTag`, encoded
 * into a job envelope or an RPC response, and mapped to HTTP in one place.
 *
 * Messages name only the tenant they are about; they never list other tenants.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { TenantId } from "./internal/tenantId.js"
import { excerpt } from "./internal/text.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-tenancy/TenantError")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Tells whether a value is one of the errors of this module.
 *
 * @since 0.1.0
 * @category guards
 */
export const isTenantError = (u: unknown): u is TenantError => Predicate.hasProperty(u, TypeId)

const Status = Schema.Literal("provisioning", "active", "suspended", "deleting", "deleted")

const quote = (input: string): string => JSON.stringify(excerpt(input))

/**
 * The input is not a valid tenant id. `input` holds at most the first 64
 * characters of what was given.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidTenantId extends Schema.TaggedError<InvalidTenantId>("effect-tenancy/InvalidTenantId")(
  "InvalidTenantId",
  { input: Schema.String, reason: Schema.String }
) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Invalid tenant id ${quote(this.input)}: ${this.reason}`
  }
}

/**
 * No tenant has this id (or identifier).
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantNotFound extends Schema.TaggedError<TenantNotFound>("effect-tenancy/TenantNotFound")(
  "TenantNotFound",
  { tenantId: Schema.String }
) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant ${quote(this.tenantId)} was not found`
  }
}

/**
 * The tenant exists but is not active (suspended, still provisioning, or being
 * deleted), so no new work may enter it.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantSuspended extends Schema.TaggedError<TenantSuspended>("effect-tenancy/TenantSuspended")(
  "TenantSuspended",
  { tenantId: TenantId, status: Status }
) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant ${quote(this.tenantId)} is not active (status: ${this.status})`
  }
}

/**
 * A tenant with this id, or with this identifier, already exists.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantAlreadyExists
  extends Schema.TaggedError<TenantAlreadyExists>("effect-tenancy/TenantAlreadyExists")("TenantAlreadyExists", {
    tenantId: TenantId,
    conflictOn: Schema.Literal("id", "identifier")
  })
{
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return this.conflictOn === "id"
      ? `Tenant ${quote(this.tenantId)} already exists`
      : `The identifier requested for tenant ${quote(this.tenantId)} is already taken`
  }
}

/**
 * The tenant cannot be removed while fibers are running inside it.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantInUse extends Schema.TaggedError<TenantInUse>("effect-tenancy/TenantInUse")("TenantInUse", {
  tenantId: TenantId,
  activeScopes: Schema.Int
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant ${quote(this.tenantId)} is in use by ${this.activeScopes} active scope(s)`
  }
}

/**
 * An update was made against a stale version of the tenant: somebody else
 * wrote it first. Read it again and retry.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantConflict extends Schema.TaggedError<TenantConflict>("effect-tenancy/TenantConflict")(
  "TenantConflict",
  { tenantId: TenantId, expectedVersion: Schema.Int, actualVersion: Schema.Int }
) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant ${
      quote(this.tenantId)
    } was modified concurrently (expected version ${this.expectedVersion}, found ${this.actualVersion})`
  }
}

/**
 * A lifecycle transition that the status machine does not allow
 * (`provisioning → active ⇄ suspended → deleting → deleted`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidStatusTransition
  extends Schema.TaggedError<InvalidStatusTransition>("effect-tenancy/InvalidStatusTransition")(
    "InvalidStatusTransition",
    { tenantId: TenantId, from: Status, to: Status }
  )
{
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant ${quote(this.tenantId)} cannot go from '${this.from}' to '${this.to}'`
  }
}

/**
 * A listing request with a malformed cursor or an out-of-range limit.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidPageRequest
  extends Schema.TaggedError<InvalidPageRequest>("effect-tenancy/InvalidPageRequest")("InvalidPageRequest", {
    reason: Schema.String
  })
{
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Invalid page request: ${this.reason}`
  }
}

/**
 * A tenant record that does not satisfy the `Tenant` schema (an empty name, a
 * malformed tier, metadata that is not JSON). `reason` says what is wrong.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidTenantInput
  extends Schema.TaggedError<InvalidTenantInput>("effect-tenancy/InvalidTenantInput")("InvalidTenantInput", {
    reason: Schema.String
  })
{
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Invalid tenant input: ${this.reason}`
  }
}

/**
 * A request for the current tenant made outside any tenant scope.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoCurrentTenant
  extends Schema.TaggedError<NoCurrentTenant>("effect-tenancy/NoCurrentTenant")("NoCurrentTenant", {})
{
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return "No tenant is in context: run this inside TenantContext.withTenant"
  }
}

/**
 * The tenant store failed (connection lost, timeout, corrupt record). `cause`
 * holds the underlying failure for logs; `message` does not repeat it.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantStoreError
  extends Schema.TaggedError<TenantStoreError>("effect-tenancy/TenantStoreError")("TenantStoreError", {
    operation: Schema.String,
    cause: Schema.optional(Schema.Defect)
  })
{
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant store operation '${this.operation}' failed`
  }
}

/**
 * Any error of this module.
 *
 * @since 0.1.0
 * @category models
 */
export type TenantError =
  | InvalidTenantId
  | TenantNotFound
  | TenantSuspended
  | TenantAlreadyExists
  | TenantInUse
  | TenantConflict
  | InvalidStatusTransition
  | InvalidPageRequest
  | InvalidTenantInput
  | NoCurrentTenant
  | TenantStoreError

/**
 * What looking a tenant up to enter it can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type TenantLookupError = InvalidTenantId | TenantNotFound | TenantSuspended | TenantStoreError
