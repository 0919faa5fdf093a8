import * as HttpApp from "@effect/platform/HttpApp"
import type { HttpServerRequest } from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type { Layer } from "effect"
import { Context, Effect, type Scope } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import type * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import type * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as ThrottleMiddleware from "effect-tenancy/ThrottleMiddleware"
import { describe, expect, test } from "tstyche"

declare const throttle: Throttle.Throttle
declare const perDay: Throttle.Throttle

class Session extends Context.Tag("dtslint/Session")<Session, { readonly userId: string }>() {}
class HandlerError {
  readonly _tag = "HandlerError"
}

const handler = Effect.map(CurrentTenant, (tenant) => HttpServerResponse.text(tenant.id))
type Response = HttpServerResponse.HttpServerResponse

describe("ThrottleMiddleware.make", () => {
  test("the throttled app requires ThrottleBackend and the request; A and E are the app's", () => {
    const throttled = ThrottleMiddleware.make(throttle)(handler)
    expect(throttled).type.toBe<
      Effect.Effect<Response, never, CurrentTenant | ThrottleBackend.ThrottleBackend | HttpServerRequest>
    >()
    expect(ThrottleMiddleware.make([throttle, perDay])(Effect.fail(new HandlerError()))).type.toBe<
      Effect.Effect<Response, HandlerError, ThrottleBackend.ThrottleBackend | HttpServerRequest>
    >()
  })

  test("it cannot be served until a backend is provided", () => {
    const throttled = ThrottleMiddleware.make(throttle)(Effect.succeed(HttpServerResponse.text("ok")))
    expect(HttpApp.toWebHandler).type.not.toBeCallableWith(throttled)
    expect(HttpApp.toWebHandler).type.toBeCallableWith(Effect.provide(throttled, ThrottleBackend.layerMemory()))
  })

  test("an effectful identifier adds its requirements", () => {
    const throttled = ThrottleMiddleware.make(throttle, {
      identifier: () => Effect.map(Session, (session) => session.userId),
      cost: (request) => request.method === "POST" ? 5 : 1
    })(Effect.succeed(HttpServerResponse.text("ok")))
    expect(throttled).type.toBe<
      Effect.Effect<Response, never, Session | ThrottleBackend.ThrottleBackend | HttpServerRequest>
    >()
    expect(ThrottleMiddleware.make).type.not.toBeCallableWith(throttle, { identifier: () => 42 })
    expect(ThrottleMiddleware.make).type.not.toBeCallableWith(throttle, {
      identifier: () => Effect.fail("no user")
    })
  })

  test("inside the tenancy middleware, a per-tier backend and the tenant leave R", () => {
    const served = Effect.map(
      TenantLayer.make({
        key: (tenant) => tenant.tier,
        layer: () => ThrottleBackend.layerMemory()
      }),
      (backends) =>
        TenancyMiddleware.make(TenantResolver.header(), { layer: backends })(
          ThrottleMiddleware.make(throttle)(handler)
        )
    )
    expect(served).type.toBe<
      Effect.Effect<
        Effect.Effect<Response, never, TenantRegistry.TenantRegistry | HttpServerRequest>,
        never,
        Scope.Scope
      >
    >()
  })

  test("the router middleware's layer requires the app-level backend", () => {
    type RouterLayer = ReturnType<typeof ThrottleMiddleware.layerRouter>["layer"]
    expect<Layer.Layer.Context<RouterLayer>>().type.toBe<ThrottleBackend.ThrottleBackend>()
    expect<Layer.Layer.Error<RouterLayer>>().type.toBe<never>()
  })
})

describe("responses", () => {
  test("tooManyRequests and throttleUnavailable are plain responses", () => {
    expect(ThrottleMiddleware.tooManyRequests).type.toBeCallableWith(
      {} as Throttle.RateLimitExceeded,
      { legacyHeaders: true }
    )
    expect(ThrottleMiddleware.throttleUnavailable({} as ThrottleBackend.ThrottleBackendError)).type.toBe<Response>()
  })

  test("clientAddress is a function of the request", () => {
    expect(ThrottleMiddleware.clientAddress({ trustedProxies: ["10.0.0.0/8"], ipv6Prefix: 56 })).type.toBe<
      (request: HttpServerRequest) => string
    >()
  })
})
