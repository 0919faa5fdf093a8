import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"

const Services = Layer.effectDiscard(
  Effect.gen(function*() {
    const registry = yield* TenantRegistry.TenantRegistry
    yield* registry.register({ id: "acme", name: "Acme", tier: "enterprise" })
    yield* registry.register({ id: "umbrella", name: "Umbrella" })
    yield* registry.suspend("umbrella")
  })
).pipe(Layer.provideMerge(TenantRegistry.layerMemory()))

const call = async (handler: (request: Request) => Promise<Response>, headers: Record<string, string> = {}) => {
  const response = await handler(new Request("http://localhost/whoami", { headers }))
  return { status: response.status, text: await response.text() }
}

// HttpApi: the endpoint's handler requires CurrentTenant; the middleware provides it.
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

const apiWeb = HttpApiBuilder.toWebHandler(
  Layer.mergeAll(
    HttpApiBuilder.api(Api).pipe(
      Layer.provide(TenantsLive),
      Layer.provide(TenancyMiddleware.layerHttpApi(TenantResolver.header()))
    ),
    HttpServer.layerContext
  ).pipe(Layer.provide(Services))
)

// HttpLayerRouter: routes provided with the middleware run inside the tenant.
let finalized = 0
const Routes = HttpLayerRouter.add(
  "GET",
  "/whoami",
  Effect.zipRight(
    Effect.addFinalizer(() => Effect.sync(() => finalized++)),
    Effect.map(CurrentTenant, (tenant) => HttpServerResponse.text(tenant.id))
  )
).pipe(Layer.provide(TenancyMiddleware.layerRouter(TenantResolver.header()).layer))

const routerWeb = HttpLayerRouter.toWebHandler(Routes.pipe(Layer.provide(Services)))

afterAll(async () => {
  await apiWeb.dispose()
  await routerWeb.dispose()
})

describe("TenancyMiddleware with HttpApi", () => {
  it.live("provides CurrentTenant to handlers; refuses with the same statuses", () =>
    Effect.promise(async () => {
      const ok = await call(apiWeb.handler, { "x-tenant-id": "acme" })
      assert.strictEqual(ok.status, 200)
      assert.deepStrictEqual(JSON.parse(ok.text), { tenant: "acme" })
      assert.strictEqual((await call(apiWeb.handler)).status, 400)
      assert.strictEqual((await call(apiWeb.handler, { "x-tenant-id": "nobody" })).status, 404)
      assert.strictEqual((await call(apiWeb.handler, { "x-tenant-id": "NOT VALID" })).status, 404)
      assert.strictEqual((await call(apiWeb.handler, { "x-tenant-id": "umbrella" })).status, 403)
    }))
})

describe("TenancyMiddleware with HttpLayerRouter", () => {
  it.live("routes run inside the tenant", () =>
    Effect.promise(async () => {
      const ok = await call(routerWeb.handler, { "x-tenant-id": "acme" })
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.text, "acme")
      const missing = await call(routerWeb.handler)
      assert.strictEqual(missing.status, 400)
      assert.strictEqual(JSON.parse(missing.text).type, "urn:effect-tenancy:problem:tenant-required")
      assert.strictEqual((await call(routerWeb.handler, { "x-tenant-id": "umbrella" })).status, 403)
      const before = finalized
      await call(routerWeb.handler, { "x-tenant-id": "acme" })
      await call(routerWeb.handler, { "x-tenant-id": "acme" })
      assert.strictEqual(finalized - before, 2, "each request's scope closes with the request")
    }))
})
