import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpRouter from "@effect/platform/HttpRouter"
import { HttpServerRequest } from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { assert, describe, it } from "@effect/vitest"
import type { MetricState } from "effect"
import { Context, Effect, Layer, Metric, Option, Redacted } from "effect"
import * as Health from "effect-tenancy/Health"
import * as TenancyConfig from "effect-tenancy/TenancyConfig"
import type { TenancySettings } from "effect-tenancy/TenancyConfig"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import * as TenantApiKey from "effect-tenancy/TenantApiKey"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import { TenantNotFound } from "effect-tenancy/TenantError"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import * as TenantStore from "effect-tenancy/TenantStore"
import * as jose from "jose"

const secret = "0123456789abcdef0123456789abcdef-test-secret"
const jwtSettings = {
  secret: Redacted.make(secret),
  algorithm: "HS256",
  issuer: Option.some("https://auth.example.com"),
  audience: Option.some("api"),
  tenantClaim: "tenant_id"
} satisfies TenancySettings["jwt"] extends Option.Option<infer J> ? J : never
const key = new TextEncoder().encode(secret)

const sign = (claims: Record<string, unknown>, options: { exp?: string | number; aud?: string; alg?: string } = {}) =>
  Effect.promise(() =>
    new jose.SignJWT(claims)
      .setProtectedHeader({ alg: options.alg ?? "HS256" })
      .setIssuer("https://auth.example.com")
      .setAudience(options.aud ?? "api")
      .setIssuedAt()
      .setExpirationTime(options.exp ?? "1h")
      .sign(options.alg === "HS512" ? new TextEncoder().encode(secret + secret) : key)
  )

class Greeting extends Context.Tag("test/Greeting")<Greeting, { readonly text: string }>() {}

class Boom extends Error {}

const router = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/whoami",
    Effect.gen(function*() {
      const tenant = yield* CurrentTenant
      const request = yield* HttpServerRequest
      return yield* HttpServerResponse.json({ tenant: tenant.id, tier: tenant.tier, url: request.url })
    })
  ),
  HttpRouter.get(
    "/greeting",
    Effect.map(Greeting, (g) => HttpServerResponse.text(g.text))
  ),
  HttpRouter.get(
    "/greeting-overridden",
    Effect.map(Greeting, (g) => HttpServerResponse.text(g.text)).pipe(
      Effect.provideService(Greeting, { text: "inner" })
    )
  ),
  HttpRouter.get("/health", Effect.succeed(HttpServerResponse.text("ok"))),
  HttpRouter.get("/healthcare", Effect.succeed(HttpServerResponse.text("care"))),
  HttpRouter.get("/handler-not-found", Effect.fail(new TenantNotFound({ tenantId: "other" }))),
  HttpRouter.get("/boom", Effect.die(new Boom("kaput with a secret stack")))
)

const seed = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme", tier: "enterprise" })
  yield* registry.register({ id: "globex", name: "Globex", tier: "premium" })
  yield* registry.register({ id: "initech", name: "Initech", tier: "free", identifier: "initech-web" })
  yield* registry.register({ id: "umbrella", name: "Umbrella", tier: "free" })
  yield* registry.suspend("umbrella")
})

const services = Layer.effectDiscard(seed).pipe(
  Layer.provideMerge(Layer.merge(TenantRegistry.layer(), TenantApiKey.layerMemory)),
  Layer.provideMerge(TenantStore.layerMemory)
)

const makeHandler = <R>(
  resolver: TenantResolver.TenantResolver<R>,
  options: TenancyMiddleware.Options<Greeting, never, Greeting> = {}
) =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<TenantRegistry.TenantRegistry | TenantApiKey.TenantApiKeyStore | R>()
    const app = TenancyMiddleware.make(resolver, options)(router)
    const handler = HttpApp.toWebHandlerRuntime(runtime)(app as HttpApp.Default<unknown, any>)
    return (url: string, headers: Record<string, string> = {}) =>
      Effect.promise(async () => {
        const response = await handler(new Request(url, { headers }))
        const text = await response.text()
        let body: any = text
        try {
          body = JSON.parse(text)
        } catch {
          // a text body
        }
        return { status: response.status, type: response.headers.get("content-type") ?? "", body }
      })
  })

const assertProblem = (
  response: { status: number; type: string; body: any },
  status: number,
  slug: string
) => {
  assert.strictEqual(response.status, status, JSON.stringify(response.body))
  assert.strictEqual(response.type, "application/problem+json")
  assert.strictEqual(response.body.type, `urn:effect-tenancy:problem:${slug}`)
  assert.strictEqual(response.body.status, status)
  assert.notProperty(response.body, "detail")
  assert.notProperty(response.body, "stack")
}

describe("TenancyMiddleware", () => {
  it.layer(services)((it) => {
    it.effect("header: resolves, refuses, and answers invalid and unknown alike", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.header())
        const ok = yield* request("http://localhost/whoami", { "x-tenant-id": "acme" })
        assert.strictEqual(ok.status, 200)
        assert.deepStrictEqual(ok.body, { tenant: "acme", tier: "enterprise", url: "/whoami" })
        const byIdentifier = yield* request("http://localhost/whoami", { "x-tenant-id": "initech-web" })
        assert.strictEqual(byIdentifier.body.tenant, "initech")

        assertProblem(yield* request("http://localhost/whoami"), 400, "tenant-required")
        const invalid = yield* request("http://localhost/whoami", { "x-tenant-id": "ACME'; --" })
        const unknown = yield* request("http://localhost/whoami", { "x-tenant-id": "nobody" })
        assertProblem(invalid, 404, "tenant-not-found")
        assertProblem(unknown, 404, "tenant-not-found")
        assert.deepStrictEqual(invalid.body, unknown.body, "no way to tell invalid from unknown")
        assertProblem(yield* request("http://localhost/whoami", { "x-tenant-id": "umbrella" }), 403, "tenant-inactive")
      }))

    it.effect("skip paths match whole segments and run without a tenant", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.header())
        const health = yield* request("http://localhost/health")
        assert.strictEqual(health.status, 200)
        assert.strictEqual(health.body, "ok")
        assertProblem(yield* request("http://localhost/healthcare"), 400, "tenant-required")
      }))

    it.effect("subdomain: under the base domain only", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.subdomain({ baseDomain: "app.example.com" }))
        const ok = yield* request("http://acme.app.example.com:8080/whoami")
        assert.strictEqual(ok.body.tenant, "acme")
        assertProblem(yield* request("http://app.example.com/whoami"), 400, "tenant-required")
        assertProblem(yield* request("http://acme.evil.com/whoami"), 400, "invalid-host")
        assertProblem(yield* request("http://x.acme.app.example.com/whoami"), 400, "invalid-host")
        assertProblem(yield* request("http://app.example.com.evil.com/whoami"), 400, "invalid-host")
      }))

    it.effect("path: the handler sees the rest of the path", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.path())
        const ok = yield* request("http://localhost/t/globex/whoami?x=1")
        assert.deepStrictEqual(ok.body, { tenant: "globex", tier: "premium", url: "/whoami?x=1" })
        assertProblem(yield* request("http://localhost/whoami"), 400, "tenant-required")
        assertProblem(yield* request("http://localhost/t/nobody/whoami"), 404, "tenant-not-found")
      }))

    it.effect("jwt: verified claims resolve; every bad token is 401", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.jwt(jwtSettings))
        const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
        const ok = yield* request("http://localhost/whoami", bearer(yield* sign({ tenant_id: "acme" })))
        assert.strictEqual(ok.body.tenant, "acme")

        assertProblem(yield* request("http://localhost/whoami"), 401, "tenant-required")
        const wrongKey = yield* Effect.promise(() =>
          new jose.SignJWT({ tenant_id: "acme" }).setProtectedHeader({ alg: "HS256" }).setIssuer(
            "https://auth.example.com"
          ).setAudience("api").setExpirationTime("1h").sign(new TextEncoder().encode("x".repeat(40)))
        )
        const none = new jose.UnsecuredJWT({ tenant_id: "acme", iss: "https://auth.example.com", aud: "api" })
          .setExpirationTime("1h").encode()
        const cases: Record<string, Record<string, string>> = {
          "wrong signature": bearer(wrongKey),
          "alg none": bearer(none),
          "other algorithm": bearer(yield* sign({ tenant_id: "acme" }, { alg: "HS512" })),
          "expired": bearer(yield* sign({ tenant_id: "acme" }, { exp: Math.floor(Date.now() / 1000) - 60 })),
          "wrong audience": bearer(yield* sign({ tenant_id: "acme" }, { aud: "someone-else" })),
          "wrong issuer": bearer(
            yield* Effect.promise(() =>
              new jose.SignJWT({ tenant_id: "acme" }).setProtectedHeader({ alg: "HS256" }).setIssuer(
                "https://evil.example"
              )
                .setAudience("api").setExpirationTime("1h").sign(key)
            )
          ),
          "not yet valid": bearer(
            yield* Effect.promise(() =>
              new jose.SignJWT({ tenant_id: "acme" }).setProtectedHeader({ alg: "HS256" }).setIssuer(
                "https://auth.example.com"
              ).setAudience("api").setNotBefore("1h").setExpirationTime("2h").sign(key)
            )
          ),
          "missing claim": bearer(yield* sign({ sub: "user-1" })),
          "malformed": bearer("not.a.jwt"),
          "no expiry": bearer(
            yield* Effect.promise(() =>
              new jose.SignJWT({ tenant_id: "acme" }).setProtectedHeader({ alg: "HS256" }).setIssuer(
                "https://auth.example.com"
              ).setAudience("api").sign(key)
            )
          ),
          "not bearer": { authorization: "Basic YWxhZGRpbjpvcGVuc2VzYW1l" }
        }
        for (const [name, headers] of Object.entries(cases)) {
          const response = yield* request("http://localhost/whoami", headers)
          assert.strictEqual(response.status, 401, name)
          assertProblem(response, 401, "invalid-credentials")
        }
        const suspended = yield* request("http://localhost/whoami", bearer(yield* sign({ tenant_id: "umbrella" })))
        assertProblem(suspended, 403, "tenant-inactive")
      }))

    it.effect("api key: looked up hashed; unknown and revoked keys are 401", () =>
      Effect.gen(function*() {
        const keys = yield* TenantApiKey.TenantApiKeyStore
        const created = yield* keys.create({ tenantId: "globex" as never, name: "test" })
        const request = yield* makeHandler(TenantResolver.apiKey())
        const ok = yield* request("http://localhost/whoami", { "x-api-key": Redacted.value(created.key) })
        assert.strictEqual(ok.body.tenant, "globex")
        assertProblem(yield* request("http://localhost/whoami"), 401, "tenant-required")
        assertProblem(
          yield* request("http://localhost/whoami", { "x-api-key": "tnk_nope" }),
          401,
          "invalid-credentials"
        )
        yield* keys.revoke(created.info.keyId)
        assertProblem(
          yield* request("http://localhost/whoami", { "x-api-key": Redacted.value(created.key) }),
          401,
          "invalid-credentials"
        )
      }))

    it.effect("chain: an authenticated tenant must agree with every other; bad credentials never fall through", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(
          TenantResolver.chain(TenantResolver.jwt(jwtSettings), TenantResolver.header())
        )
        const token = yield* sign({ tenant_id: "acme" })
        const agree = yield* request("http://localhost/whoami", {
          authorization: `Bearer ${token}`,
          "x-tenant-id": "acme"
        })
        assert.strictEqual(agree.body.tenant, "acme")
        const disagree = yield* request("http://localhost/whoami", {
          authorization: `Bearer ${token}`,
          "x-tenant-id": "globex"
        })
        assertProblem(disagree, 403, "tenant-mismatch")
        const badToken = yield* request("http://localhost/whoami", {
          authorization: "Bearer garbage",
          "x-tenant-id": "acme"
        })
        assertProblem(badToken, 401, "invalid-credentials")
        const headerOnly = yield* request("http://localhost/whoami", { "x-tenant-id": "globex" })
        assert.strictEqual(headerOnly.body.tenant, "globex")
        const identifierAgrees = yield* request("http://localhost/whoami", {
          authorization: `Bearer ${yield* sign({ tenant_id: "initech" })}`,
          "x-tenant-id": "initech-web"
        })
        assert.strictEqual(identifierAgrees.body.tenant, "initech")
      }))

    it.effect("handler errors pass through; defects are 500 with a correlation id", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.header())
        const own = yield* request("http://localhost/handler-not-found", { "x-tenant-id": "acme" })
        assert.strictEqual(own.status, 500, "the handler's own TenantNotFound is not turned into a tenancy 404")
        const boom = yield* request("http://localhost/boom", { "x-tenant-id": "acme" })
        assert.strictEqual(boom.status, 500)
        assert.strictEqual(boom.type, "application/problem+json")
        assert.match(boom.body.correlationId, /^[0-9a-f]{16}$/)
        assert.notInclude(JSON.stringify(boom.body), "secret stack")
      }))

    it.effect("debug mode adds details", () =>
      Effect.gen(function*() {
        const request = yield* makeHandler(TenantResolver.header(), { debug: true })
        const unknown = yield* request("http://localhost/whoami", { "x-tenant-id": "nobody" })
        assert.strictEqual(unknown.status, 404)
        assert.include(unknown.body.detail, "nobody")
      }))

    it.scoped("per-tenant services are built once per key and shared; an inner provide overrides them", () =>
      Effect.gen(function*() {
        const greetings = yield* TenantLayer.make({
          key: (tenant) => tenant.tier,
          layer: (tier) => Layer.succeed(Greeting, { text: `hello ${tier}` })
        })
        const request = yield* makeHandler(TenantResolver.header(), { layer: greetings })
        const tenants = ["acme", "globex", "initech-web"]
        const responses = yield* Effect.forEach(
          Array.from({ length: 90 }, (_, i) => tenants[i % 3]),
          (tenant) => request("http://localhost/greeting", { "x-tenant-id": tenant }),
          { concurrency: 10 }
        )
        assert.deepStrictEqual(
          responses.slice(0, 3).map((r) => r.body),
          ["hello enterprise", "hello premium", "hello free"]
        )
        assert.isTrue(responses.every((r, i) => r.body === `hello ${["enterprise", "premium", "free"][i % 3]}`))
        const stats = yield* greetings.stats
        assert.strictEqual(stats.builds, 3, "one construction per tier, not per request")
        const inner = yield* request("http://localhost/greeting-overridden", { "x-tenant-id": "acme" })
        assert.strictEqual(inner.body, "inner")
        const skipped = yield* request("http://localhost/health")
        assert.strictEqual(skipped.status, 200, "skip paths run without the per-tenant services")
      }))

    it.scoped("prebuilt services join the tenant's context change", () =>
      Effect.gen(function*() {
        const greetings = yield* TenantLayer.prebuilt({
          key: (tenant) => tenant.tier,
          layers: {
            enterprise: Layer.succeed(Greeting, { text: "hello enterprise" }),
            free: Layer.succeed(Greeting, { text: "hello free" })
          },
          fallback: "free"
        })
        const request = yield* makeHandler(TenantResolver.header(), { services: greetings })
        const bodies = yield* Effect.forEach(
          ["acme", "globex", "initech-web"],
          (tenant) => Effect.map(request("http://localhost/greeting", { "x-tenant-id": tenant }), (r) => r.body)
        )
        assert.deepStrictEqual(bodies, ["hello enterprise", "hello free", "hello free"])
        const inner = yield* request("http://localhost/greeting-overridden", { "x-tenant-id": "acme" })
        assert.strictEqual(inner.body, "inner")
      }))

    it.effect("counts rejections by reason", () =>
      Effect.gen(function*() {
        const counter = TenancyMiddleware.metrics.rejections.pipe(Metric.tagged("reason", "TenantSuspended"))
        const before = (yield* Metric.value(counter)) as MetricState.MetricState.Counter<number>
        const request = yield* makeHandler(TenantResolver.header())
        yield* request("http://localhost/whoami", { "x-tenant-id": "umbrella" })
        const after = (yield* Metric.value(counter)) as MetricState.MetricState.Counter<number>
        assert.strictEqual(after.count - before.count, 1)
      }))
  })

  it.effect("the health app answers 503 when a component is down", () =>
    Effect.gen(function*() {
      const up = Health.probe("memory", Effect.void)
      const down = Health.probe("redis", Effect.fail(new Error("connection refused")))
      const ok = yield* TenancyMiddleware.healthApp([up])
      assert.strictEqual(ok.status, 200)
      const bad = yield* TenancyMiddleware.healthApp([up, down])
      assert.strictEqual(bad.status, 503)
    }))

  it.effect("fromConfig builds the middleware the configuration describes", () =>
    Effect.gen(function*() {
      const middleware = yield* TenancyMiddleware.fromConfig.pipe(
        Effect.provide(TenancyConfig.layer({ strategies: ["header"], tenantHeader: "X-Org", skipPaths: ["/status"] }))
      )
      const runtime = yield* Effect.runtime<TenantRegistry.TenantRegistry | TenantApiKey.TenantApiKeyStore>()
      const handler = HttpApp.toWebHandlerRuntime(runtime)(middleware(router) as HttpApp.Default<unknown, any>)
      const response = yield* Effect.promise(() =>
        handler(new Request("http://localhost/whoami", { headers: { "x-org": "acme" } }))
      )
      assert.strictEqual(response.status, 200)
      assert.strictEqual(((yield* Effect.promise(() => response.json())) as { tenant: string }).tenant, "acme")
    }).pipe(Effect.provide(services)))

  it("matchesPath matches whole segments", () => {
    assert.isTrue(TenancyMiddleware.matchesPath("/health", "/health"))
    assert.isTrue(TenancyMiddleware.matchesPath("/health/live", "/health"))
    assert.isFalse(TenancyMiddleware.matchesPath("/healthcare", "/health"))
    assert.isFalse(TenancyMiddleware.matchesPath("/", "/health"))
  })
})

// The handler type keeps errors of the app.
export const _boom = Boom
