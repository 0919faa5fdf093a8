/**
 * The current tenant, as a service in the environment.
 *
 * Code that needs a tenant reads `CurrentTenant`, so the requirement shows in
 * its `R` type and the program cannot be run until a tenant is provided.
 * `withTenant(id)` provides it: it validates the id, looks the tenant up in
 * the `TenantRegistry`, refuses a tenant that is not active, and runs the
 * effect with `CurrentTenant` set, logs annotated and spans attributed with
 * `tenant.id`. The previous tenant (or none) is back when the effect ends,
 * however it ends; forked fibers inherit the tenant.
 *
 * Cross-tenant code (administration, migrations) asks for `SystemAccess`
 * instead, so it is visibly different from tenant code.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as internal from "./internal/tenantContext.js"
import type { Tenant, TenantId, TenantStatus } from "./Tenant.js"
import type { InvalidPageRequest, TenantLookupError, TenantStoreError } from "./TenantError.js"
import { isTenantError, NoCurrentTenant } from "./TenantError.js"
import type { TenantNotFound, TenantSuspended } from "./TenantError.js"
import type { TenantServices } from "./TenantLayer.js"
import { TenantRegistry } from "./TenantRegistry.js"

/**
 * The tenant the current fiber works for. Yield it to read the tenant:
 * `const tenant = yield* CurrentTenant`.
 *
 * @since 0.1.0
 * @category tags
 */
export const CurrentTenant: typeof internal.CurrentTenant = internal.CurrentTenant

/**
 * @since 0.1.0
 * @category tags
 */
export type CurrentTenant = internal.CurrentTenant

/**
 * The log annotation key and span attribute set inside a tenant: `tenant.id`.
 *
 * @since 0.1.0
 * @category constants
 */
export const annotationKey: "tenant.id" = internal.annotationKey as "tenant.id"

/**
 * Runs an effect as the tenant `id`: validates the id (`InvalidTenantId`),
 * looks it up (`TenantNotFound`, `TenantStoreError`), refuses it unless it
 * is active (`TenantSuspended`), provides `CurrentTenant`, counts the switch,
 * and restores the previous tenant on success, failure, defect and
 * interruption. Nested switches nest; forked fibers inherit the tenant.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
 *
 * const greet = Effect.map(CurrentTenant, (tenant) => `hello ${tenant.name}`)
 * //    ^? Effect<string, never, CurrentTenant>
 *
 * const program = greet.pipe(withTenant("acme"))
 * //    ^? Effect<string, TenantLookupError, TenantRegistry>
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const withTenant: {
  (id: string): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant> | TenantRegistry>
  <S>(id: string, options: WithTenantOptions<S>): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant | S> | TenantRegistry>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    id: string
  ): Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant> | TenantRegistry>
  <A, E, R, S>(
    self: Effect.Effect<A, E, R>,
    id: string,
    options: WithTenantOptions<S>
  ): Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant | S> | TenantRegistry>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R, S>(
    self: Effect.Effect<A, E, R>,
    id: string,
    options?: WithTenantOptions<S>
  ): Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant | S> | TenantRegistry> =>
    Effect.flatMap(TenantRegistry, (registry) =>
      registry.enter(
        self,
        id,
        options === undefined
          ? undefined
          : { services: options.services.context as (tenant: Tenant) => Context.Context<never> }
      )) as Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant | S> | TenantRegistry>
)

/**
 * Options of `withTenant`: `services` are the tenant's prebuilt services
 * (`TenantLayer.prebuilt`), provided in the same context change as the
 * tenant, so that choosing a backend per tenant costs no extra step.
 *
 * @since 0.1.0
 * @category models
 */
export interface WithTenantOptions<S> {
  readonly services: TenantServices<S>
}

/**
 * The current tenant, if the fiber runs inside one. For code that may run
 * outside a tenant (logging, auditing); it does not add `CurrentTenant` to `R`.
 *
 * @since 0.1.0
 * @category accessors
 */
export const current: Effect.Effect<Option.Option<Tenant>> = Effect.serviceOption(internal.CurrentTenant)

/**
 * The id of the current tenant, if any.
 *
 * @since 0.1.0
 * @category accessors
 */
export const currentId: Effect.Effect<Option.Option<TenantId>> = Effect.map(current, Option.map((t) => t.id))

/**
 * The id of the current tenant, for tenant code.
 *
 * @since 0.1.0
 * @category accessors
 */
export const tenantId: Effect.Effect<TenantId, never, CurrentTenant> = Effect.map(
  internal.CurrentTenant,
  (t) => t.id
)

/**
 * The current tenant, or `NoCurrentTenant` when there is none. For code that
 * is typed without `CurrentTenant` but must refuse to run outside a tenant.
 *
 * @since 0.1.0
 * @category accessors
 */
export const require: Effect.Effect<Tenant, NoCurrentTenant> = Effect.flatMap(
  current,
  Option.match({ onNone: () => Effect.fail(new NoCurrentTenant()), onSome: Effect.succeed })
)

/**
 * The capability to work across tenants. Administrative code (provisioning,
 * migrations, support tools) asks for it in `R`, so it is visibly different
 * from tenant code, and it is provided only at administrative entry points.
 * `reason` is recorded in the logs of everything run with it.
 *
 * @since 0.1.0
 * @category tags
 */
export class SystemAccess extends Context.Tag("effect-tenancy/SystemAccess")<SystemAccess, {
  readonly reason: string
}>() {
  /**
   * Grants system access for a stated reason.
   *
   * @since 0.1.0
   */
  static readonly layer = (reason: string): Layer.Layer<SystemAccess> =>
    Layer.succeed(SystemAccess, SystemAccess.of({ reason }))
}

/**
 * Runs `self` with system access granted for `reason`, and logs annotated
 * with `tenancy.system`.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withSystemAccess: {
  (reason: string): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, Exclude<R, SystemAccess>>
  <A, E, R>(self: Effect.Effect<A, E, R>, reason: string): Effect.Effect<A, E, Exclude<R, SystemAccess>>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, reason: string): Effect.Effect<A, E, Exclude<R, SystemAccess>> =>
    self.pipe(Effect.annotateLogs("tenancy.system", reason), Effect.provideService(SystemAccess, { reason }))
)

/**
 * Runs an effect as the tenant `id` on behalf of the system: like
 * `withTenant`, but it also enters tenants that are suspended, provisioning
 * or being deleted (not deleted ones), and it requires `SystemAccess`.
 *
 * @since 0.1.0
 * @category combinators
 */
export const asTenant: {
  (id: string): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant> | TenantRegistry | SystemAccess>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    id: string
  ): Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant> | TenantRegistry | SystemAccess>
} = dual(
  2,
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    id: string
  ): Effect.Effect<A, E | TenantLookupError, Exclude<R, CurrentTenant> | TenantRegistry | SystemAccess> =>
    Effect.zipRight(
      SystemAccess,
      Effect.flatMap(TenantRegistry, (registry) => registry.enter(self, id, { allowInactive: true }))
    )
)

const notDeleted: ReadonlyArray<TenantStatus> = ["provisioning", "active", "suspended", "deleting"]

/**
 * Runs `f` inside every tenant that is not deleted (or only those in the
 * given statuses), with bounded concurrency, on behalf of the system.
 * Results come back in tenant id order. A tenant that is removed (or deleted)
 * while the run goes on is skipped, not an error; failures of `f` and of the
 * store end the run.
 *
 * @since 0.1.0
 * @category combinators
 */
export const forEachTenant = <A, E, R>(
  f: (tenant: Tenant) => Effect.Effect<A, E, R>,
  options?: {
    readonly status?: TenantStatus | ReadonlyArray<TenantStatus> | undefined
    readonly concurrency?: number | undefined
  }
): Effect.Effect<
  ReadonlyArray<readonly [TenantId, A]>,
  E | TenantLookupError | InvalidPageRequest | TenantStoreError,
  Exclude<R, CurrentTenant> | TenantRegistry | SystemAccess
> =>
  Effect.gen(function*() {
    yield* SystemAccess
    const registry = yield* TenantRegistry
    const results = yield* registry.stream({ status: options?.status ?? notDeleted }).pipe(
      Stream.mapEffect(
        (tenant) =>
          registry.enter(Effect.map(f(tenant), (a) => Option.some([tenant.id, a] as const)), tenant.id, {
            allowInactive: true
          }).pipe(
            // Gone since the listing: skip it.
            Effect.catchIf(
              (e): e is TenantNotFound | TenantSuspended =>
                isTenantError(e) &&
                (e._tag === "TenantNotFound" || (e._tag === "TenantSuspended" && e.status === "deleted")),
              () => Effect.succeedNone
            )
          ),
        { concurrency: options?.concurrency ?? 1 }
      ),
      Stream.filterMap((result) => result),
      Stream.runCollect
    )
    return Chunk.toReadonlyArray(results)
  })
