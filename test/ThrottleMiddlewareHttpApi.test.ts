import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpServer from "@effect/platform/HttpServer"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as ThrottleMiddleware from "effect-tenancy/ThrottleMiddleware"

// An HttpApi app throttled per tenant: the tenancy middleware and the throttle
// middleware are one API-level middleware (`HttpApiBuilder.middleware`), the
// tenancy outside, so the throttle counts in the request's tenant and its 429
// carries the rate-limit fields. Handlers that require `CurrentTenant` in
// their types get it from `TenancyApiMiddleware` on their group, as usual.

const Tenants = Layer.effectDiscard(
  Effect.gen(function*() {
    const registry = yield* TenantRegistry.TenantRegistry
    yield* registry.register({ id: "acme", name: "Acme" })
    yield* registry.register({ id: "globex", name: "Globex" })
  })
).pipe(Layer.provideMerge(TenantRegistry.layerMemory()))

class Api extends HttpApi.make("api").add(
  HttpApiGroup.make("tenants")
    .add(HttpApiEndpoint.get("whoami", "/whoami").addSuccess(Schema.Struct({ tenant: Schema.String })))
    .middleware(TenancyMiddleware.TenancyApiMiddleware)
) {}

const TenantsLive = HttpApiBuilder.group(
  Api,
  "tenants",
  (handlers) => handlers.handle("whoami", () => Effect.map(CurrentTenant, (tenant) => ({ tenant: tenant.id })))
)

const uid = `api-minute-${Math.random().toString(36).slice(2, 8)}`

const Middleware = Layer.unwrapScoped(
  Effect.map(
    // GCRA: no window boundary for the live clock to cross between the calls below.
    Throttle.make({ uid, rate: "2/hour" }),
    (perMinute) =>
      HttpApiBuilder.middleware(
        (app) => TenancyMiddleware.make(TenantResolver.header())(ThrottleMiddleware.make([perMinute])(app)),
        { withContext: true }
      )
  )
)

const web = HttpApiBuilder.toWebHandler(
  Layer.mergeAll(
    HttpApiBuilder.api(Api).pipe(
      Layer.provide(TenantsLive),
      Layer.provide(TenancyMiddleware.layerHttpApi(TenantResolver.header()))
    ),
    Middleware,
    HttpServer.layerContext
  ).pipe(
    Layer.provide(Layer.merge(Tenants, ThrottleBackend.layerMemory()))
  )
)

afterAll(() => web.dispose())

const call = async (headers: Record<string, string> = {}) => {
  const response = await web.handler(new Request("http://localhost/whoami", { headers }))
  return { status: response.status, headers: response.headers, text: await response.text() }
}

describe("ThrottleMiddleware with HttpApi", () => {
  it.live("per-tenant counters, 429 with the rate-limit fields, tenancy refusals before the throttle", () =>
    Effect.promise(async () => {
      const name = `"${uid}"`
      const first = await call({ "x-tenant-id": "acme" })
      assert.strictEqual(first.status, 200)
      assert.deepStrictEqual(JSON.parse(first.text), { tenant: "acme" })
      assert.strictEqual(first.headers.get("ratelimit-policy"), `${name};q=2;w=3600`)
      assert.match(first.headers.get("ratelimit") ?? "", new RegExp(`^${name};r=1;t=\\d+$`))
      assert.strictEqual((await call({ "x-tenant-id": "acme" })).status, 200)

      const refused = await call({ "x-tenant-id": "acme" })
      assert.strictEqual(refused.status, 429)
      assert.strictEqual(refused.headers.get("content-type"), "application/problem+json")
      assert.isNotNull(refused.headers.get("retry-after"))
      assert.deepStrictEqual(JSON.parse(refused.text)["violated-policies"], [uid])

      // Another tenant has its own counter.
      const other = await call({ "x-tenant-id": "globex" })
      assert.strictEqual(other.status, 200)
      assert.match(other.headers.get("ratelimit") ?? "", new RegExp(`^${name};r=1;t=\\d+$`))

      // No tenant: the tenancy middleware answers before anything is counted.
      const missing = await call()
      assert.strictEqual(missing.status, 400)
      assert.isNull(missing.headers.get("ratelimit"))
    }))
})
