/**
 * Quick start: tenant code states that it needs a tenant in its type, and
 * `withTenant` provides one. Run with `npx tsx examples/quickstart.ts`.
 */
import { Console, Effect } from "effect"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import { pathToFileURL } from "node:url"

// Tenant code: `Effect<string, never, CurrentTenant>`. It cannot run until a tenant is provided.
const describeTenant = Effect.gen(function*() {
  const tenant = yield* CurrentTenant
  yield* Effect.log("serving a request") // carries the annotation tenant.id=<id>
  return `${tenant.name} (${tenant.id}) on the ${tenant.tier} tier`
})

export const program = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme Corporation", tier: "enterprise" })
  yield* registry.register({ id: "globex", name: "Globex Inc", tier: "free" })

  // `withTenant` removes `CurrentTenant` from `R` and adds the lookup errors to `E`.
  const acme = yield* withTenant(describeTenant, "acme")
  const globex = yield* describeTenant.pipe(withTenant("globex"))
  yield* Console.log(acme)
  yield* Console.log(globex)

  yield* registry.suspend("globex")
  const refused = yield* Effect.flip(withTenant(describeTenant, "globex"))
  yield* Console.log(`globex after suspension: ${refused._tag}`)
  return [acme, globex, refused._tag] as const
}).pipe(Effect.provide(TenantRegistry.layerMemory()))

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  Effect.runPromise(program)
}
