/**
 * Health of the components a tenancy service depends on (stores, Redis,
 * Postgres). Every store and backend exposes `health: Effect<HealthStatus>`;
 * the HTTP health endpoint reports them together.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/**
 * The health of one component. `detail` is for operators (it may name the
 * failure), never for tenants.
 *
 * @since 0.1.0
 * @category models
 */
export class HealthStatus extends Schema.Class<HealthStatus>("effect-tenancy/HealthStatus")({
  component: Schema.String,
  status: Schema.Literal("up", "down"),
  latencyMs: Schema.NonNegative,
  detail: Schema.optional(Schema.String)
}) {
  /**
   * @since 0.1.0
   */
  get isUp(): boolean {
    return this.status === "up"
  }
}

/**
 * Runs a probe and reports it as a `HealthStatus`: `up` when it succeeds
 * within `timeout` (default 2 seconds), `down` with the failure's message
 * otherwise. Never fails.
 *
 * @since 0.1.0
 * @category constructors
 */
export const probe = <A, E, R>(
  component: string,
  check: Effect.Effect<A, E, R>,
  options?: { readonly timeout?: number | undefined }
): Effect.Effect<HealthStatus, never, R> =>
  Effect.gen(function*() {
    const start = performance.now()
    const result = yield* check.pipe(Effect.timeout(options?.timeout ?? 2000), Effect.either)
    const latencyMs = Math.max(0, performance.now() - start)
    return result._tag === "Right"
      ? new HealthStatus({ component, status: "up", latencyMs })
      : new HealthStatus({ component, status: "down", latencyMs, detail: describe(result.left) })
  })

const describe = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    if ("_tag" in error && error._tag === "TimeoutException") return "timed out"
    if ("message" in error && typeof error.message === "string" && error.message !== "") return error.message
    if ("_tag" in error && typeof error._tag === "string") return error._tag
  }
  return String(error)
}
