/**
 * HTTP rate limiting per tenant and per client, with a backend per tier:
 *
 * - two throttles checked together (all-or-nothing): 5 requests a minute
 *   (GCRA) and 1,000 a day (fixed window);
 * - behind the tenancy middleware, so every counter is the tenant's own;
 * - each tier has its own `ThrottleBackend`, built once up front and
 *   provided with the tenant in one context change (`services`). Here they
 *   are three memory backends; in production the paid tiers would use
 *   `ThrottleBackend/Redis` layers over their own Redis;
 * - 429 answers carry `Retry-After`, the IETF `RateLimit-Policy` /
 *   `RateLimit` fields and a problem+json body; allowed answers carry the
 *   fields too.
 *
 * Run it with `npx tsx examples/throttle.ts [port]` (default 3000) and try
 * `curl -i -H 'x-tenant-id: initech' localhost:3000/hello` six times, or call
 * `demo` to start it on a free port, send requests and stop it (the tour does).
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Console, Effect, Layer } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as ThrottleMiddleware from "effect-tenancy/ThrottleMiddleware"
import { createServer } from "node:http"
import { pathToFileURL } from "node:url"

const routes = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/hello",
    Effect.map(CurrentTenant, (tenant) => HttpServerResponse.text(`hello ${tenant.name} (${tenant.tier})\n`))
  )
)

/**
 * The app: routes behind the throttles, behind the tenancy middleware with a
 * throttle backend per tier. Scoped: the throttles' uids and the backends
 * live as long as the scope.
 */
export const App = Effect.gen(function*() {
  const perMinute = yield* Throttle.make({ uid: "example-minute", rate: "5/min" })
  const perDay = yield* Throttle.make({ uid: "example-day", rate: "1000/day", algorithm: "fixed-window" })
  const backends = yield* TenantLayer.prebuilt({
    key: (tenant) => tenant.tier,
    layers: {
      enterprise: ThrottleBackend.layerMemory({ name: "enterprise" }),
      premium: ThrottleBackend.layerMemory({ name: "premium" }),
      free: ThrottleBackend.layerMemory({ name: "free" })
    },
    fallback: "free"
  })
  return routes.pipe(
    // Behind a load balancer, name it: `trustedProxies: ["10.0.0.0/8"]`.
    ThrottleMiddleware.make([perMinute, perDay], { legacyHeaders: true }),
    TenancyMiddleware.make(TenantResolver.header(), { services: backends })
  )
})

/** Example tenants, one per tier. */
export const seed = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme Corporation", tier: "enterprise" })
  yield* registry.register({ id: "globex", name: "Globex Inc", tier: "premium" })
  yield* registry.register({ id: "initech", name: "Initech", tier: "free" })
})

/** What a request got. */
export interface Outcome {
  readonly tenant: string
  readonly status: number
  readonly retryAfter: string | null
  readonly rateLimit: string | null
  readonly rateLimitPolicy: string | null
  readonly body: string
}

/**
 * Starts the server on a free port; initech (free tier) sends six requests
 * (the sixth is refused), then globex and acme one each (their tiers'
 * backends have their own counters); stops the server. Returns the outcomes
 * and prints them.
 */
export const demo: Effect.Effect<ReadonlyArray<Outcome>> = Effect.gen(function*() {
  yield* seed
  yield* HttpServer.serveEffect(yield* App)
  const server = yield* HttpServer.HttpServer
  const port = server.address._tag === "TcpAddress" ? server.address.port : 0
  const call = (tenant: string) =>
    Effect.promise(async (): Promise<Outcome> => {
      const response = await fetch(`http://127.0.0.1:${port}/hello`, { headers: { "x-tenant-id": tenant } })
      return {
        tenant,
        status: response.status,
        retryAfter: response.headers.get("retry-after"),
        rateLimit: response.headers.get("ratelimit"),
        rateLimitPolicy: response.headers.get("ratelimit-policy"),
        body: await response.text()
      }
    })
  const outcomes = yield* Effect.forEach(
    ["initech", "initech", "initech", "initech", "initech", "initech", "globex", "acme"],
    call
  )
  yield* Console.log(`RateLimit-Policy: ${outcomes[0].rateLimitPolicy}`)
  for (const o of outcomes) {
    yield* Console.log(
      `${o.tenant.padEnd(8)} ${o.status}  RateLimit: ${o.rateLimit}${
        o.retryAfter === null ? "" : `  Retry-After: ${o.retryAfter}`
      }`
    )
  }
  const refused = outcomes.find((o) => o.status === 429)
  if (refused !== undefined) yield* Console.log(`429 body: ${refused.body}`)
  return outcomes
}).pipe(
  Effect.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })),
  Effect.provide(TenantRegistry.layerMemory()),
  Effect.scoped,
  Effect.orDie
)

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const port = Number(process.argv[2] ?? 3000)
  Layer.launch(
    Layer.unwrapScoped(Effect.map(App, (app) => HttpServer.serve(app))).pipe(
      Layer.provide(NodeHttpServer.layer(() => createServer(), { port, host: "127.0.0.1" })),
      Layer.provide(Layer.effectDiscard(seed)),
      Layer.provideMerge(TenantRegistry.layerMemory())
    )
  ).pipe(Effect.runFork)
}
