/**
 * A small multi-tenant SaaS API on `@effect/platform`:
 *
 * - tenants on three tiers (free, premium, enterprise), each tier with its
 *   own plan service, built once per tier by a `TenantLayer`;
 * - resolution by JWT (`Authorization: Bearer`, claim `tenant_id`) or by the
 *   `X-Tenant-ID` header; when both are present they must agree;
 * - `/health` reports the tenant store, without a tenant.
 *
 * Run it with `npx tsx examples/http-server.ts [port]` (default 3000), or call
 * `demo` to start it on a free port, send a few requests and stop it (the
 * `npm start` tour does).
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import { layerMemory as TenantStoreMemory, TenantStore } from "effect-tenancy/TenantStore"
import * as jose from "jose"
import { createServer } from "node:http"
import { pathToFileURL } from "node:url"

// --- Per-tier services ----------------------------------------------------------

/** What a tenant's tier allows. One instance per tier, shared by its tenants. */
export class Plan extends Context.Tag("example/Plan")<Plan, {
  readonly tier: string
  readonly maxProjects: number
  readonly support: string
}>() {}

const plans: Record<string, Omit<Plan["Type"], "tier">> = {
  free: { maxProjects: 3, support: "community" },
  premium: { maxProjects: 50, support: "email" },
  enterprise: { maxProjects: 10_000, support: "24/7 phone" }
}

const PlanPerTier = TenantLayer.make({
  key: (tenant) => tenant.tier,
  layer: (tier) => Layer.succeed(Plan, { tier, ...(plans[tier] ?? plans.free) }),
  idleTimeToLive: "10 minutes"
})

// --- Routes ---------------------------------------------------------------------

const routes = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/me",
    Effect.gen(function*() {
      const tenant = yield* CurrentTenant
      const plan = yield* Plan
      yield* Effect.log("GET /me") // annotated with tenant.id
      return yield* HttpServerResponse.json({
        tenant: tenant.id,
        name: tenant.name,
        tier: tenant.tier,
        maxProjects: plan.maxProjects,
        support: plan.support
      })
    })
  ),
  HttpRouter.get(
    "/health",
    Effect.flatMap(TenantStore, (store) => TenancyMiddleware.healthApp([store.health]))
  )
)

// --- Wiring ---------------------------------------------------------------------

/** The JWT settings of the example (in production: `TenancyConfig.layerFromEnv`). */
export const jwtSettings = {
  secret: Redacted.make("an-example-secret-of-at-least-32-characters"),
  algorithm: "HS256" as const,
  issuer: Option.none<string>(),
  audience: Option.none<string>(),
  tenantClaim: "tenant_id"
}

const resolver = TenantResolver.chain(TenantResolver.jwt(jwtSettings), TenantResolver.header())

/** The app: routes behind the tenancy middleware, with the per-tier plan. */
export const App = Effect.map(
  PlanPerTier,
  (planPerTier) => TenancyMiddleware.make(resolver, { layer: planPerTier })(routes)
)

/** Example tenants. */
export const seed = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme Corporation", tier: "enterprise" })
  yield* registry.register({ id: "globex", name: "Globex Inc", tier: "premium" })
  yield* registry.register({ id: "initech", name: "Initech", tier: "free" })
  yield* registry.register({ id: "umbrella", name: "Umbrella Corp", tier: "premium" })
  yield* registry.suspend("umbrella")
})

/** The in-memory store and registry (swap in `TenantStore/Sql` for Postgres). */
export const Tenancy = TenantRegistry.layer().pipe(Layer.provideMerge(TenantStoreMemory))

/** Serves the app on `port` (0: a free port). */
export const ServerLive = (port: number) =>
  Layer.unwrapScoped(Effect.map(App, (app) => HttpServer.serve(app))).pipe(
    Layer.provide(NodeHttpServer.layer(() => createServer(), { port, host: "127.0.0.1" }))
  )

const signToken = (tenantId: string) =>
  Effect.promise(() =>
    new jose.SignJWT({ tenant_id: tenantId })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(Redacted.value(jwtSettings.secret)))
  )

/**
 * Starts the server on a free port, sends requests as several tenants
 * (including a suspended and an unknown one, and a request whose token and
 * header disagree), and stops it. Returns what each request got.
 */
export const demo = Effect.gen(function*() {
  yield* seed
  const app = yield* App
  yield* HttpServer.serveEffect(app)
  const server = yield* HttpServer.HttpServer
  const port = server.address._tag === "TcpAddress" ? server.address.port : 0
  const acmeToken = yield* signToken("acme")
  const calls: ReadonlyArray<readonly [string, string, Record<string, string>]> = [
    ["globex by header", "/me", { "x-tenant-id": "globex" }],
    ["acme by JWT", "/me", { authorization: `Bearer ${acmeToken}` }],
    ["initech (free tier)", "/me", { "x-tenant-id": "initech" }],
    ["umbrella (suspended)", "/me", { "x-tenant-id": "umbrella" }],
    ["unknown tenant", "/me", { "x-tenant-id": "nobody" }],
    ["no tenant", "/me", {}],
    ["JWT acme + header globex", "/me", { authorization: `Bearer ${acmeToken}`, "x-tenant-id": "globex" }],
    ["forged JWT", "/me", { authorization: `Bearer ${acmeToken.slice(0, -4)}AAAA` }],
    ["health (no tenant needed)", "/health", {}]
  ]
  return yield* Effect.forEach(calls, ([label, path, headers]) =>
    Effect.promise(async () => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, { headers })
      return { label, status: response.status, body: await response.text() }
    }))
}).pipe(
  Effect.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })),
  Effect.provide(Tenancy),
  Effect.scoped
)

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const port = Number(process.argv[2] ?? 3000)
  Layer.launch(ServerLive(port).pipe(Layer.provide(Layer.effectDiscard(seed)), Layer.provideMerge(Tenancy))).pipe(
    Effect.runFork
  )
}
