/**
 * The `TenantId` schema, kept apart from `Tenant` so that errors and the
 * model can both refer to it without an import cycle.
 *
 * @internal
 */
import * as Schema from "effect/Schema"

/** @internal */
export const pattern = /^[a-z][a-z0-9-]{1,61}[a-z0-9]$/

/** @internal */
export const reservedPrefix = "pg-"

/**
 * Explains why `input` is not a tenant id, or returns `undefined` when it is one.
 *
 * @internal
 */
export const explain = (input: unknown): string | undefined => {
  if (typeof input !== "string") return "a tenant id is a string"
  if (input.length < 3) return "a tenant id has at least 3 characters"
  if (input.length > 63) return "a tenant id has at most 63 characters"
  if (!pattern.test(input)) {
    return "a tenant id starts with a lowercase letter, ends with a lowercase letter or digit, " +
      "and contains only lowercase letters, digits and '-'"
  }
  // Postgres names derived from a tenant id map '-' to '_', and `pg_` is reserved there.
  if (input.startsWith(reservedPrefix)) return "a tenant id may not start with 'pg-' (reserved by PostgreSQL)"
  return undefined
}

/** @internal */
export const TenantIdBrand: unique symbol = Symbol.for("effect-tenancy/TenantId")

/** @internal */
export const TenantId = Schema.String.pipe(
  Schema.filter((s) => explain(s) ?? true, {
    identifier: "TenantId",
    description: "a tenant id: 3 to 63 characters of [a-z0-9-], starting with a letter, not ending with '-'",
    jsonSchema: { pattern: pattern.source, minLength: 3, maxLength: 63 }
  }),
  Schema.brand(TenantIdBrand)
)

/** @internal */
export type TenantId = typeof TenantId.Type
