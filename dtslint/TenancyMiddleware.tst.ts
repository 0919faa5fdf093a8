import * as HttpApp from "@effect/platform/HttpApp"
import type { HttpServerRequest } from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { type ConfigError, Context, Effect, Layer, type Scope } from "effect"
import * as TenancyConfig from "effect-tenancy/TenancyConfig"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import type { TenantApiKeyStore } from "effect-tenancy/TenantApiKey"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import { describe, expect, test } from "tstyche"

class Backend extends Context.Tag("dtslint/Backend")<Backend, { readonly name: string }>() {}

const handler = Effect.map(CurrentTenant, (tenant) => HttpServerResponse.text(tenant.id))
const wrapped = TenancyMiddleware.make(TenantResolver.header())(handler)

describe("TenancyMiddleware", () => {
  test("a handler that needs CurrentTenant cannot be served without the middleware", () => {
    expect(handler).type.toBe<Effect.Effect<HttpServerResponse.HttpServerResponse, never, CurrentTenant>>()
    expect(HttpApp.toWebHandler).type.not.toBeCallableWith(handler)
  })

  test("behind the middleware it needs the registry instead", () => {
    expect(wrapped).type.toBe<
      Effect.Effect<HttpServerResponse.HttpServerResponse, never, TenantRegistry.TenantRegistry | HttpServerRequest>
    >()
    expect(HttpApp.toWebHandler).type.not.toBeCallableWith(wrapped)
    expect(HttpApp.toWebHandler).type.toBeCallableWith(Effect.provide(wrapped, TenantRegistry.layerMemory()))
  })

  test("an API-key resolver adds the key store to R", () => {
    const withKeys = TenancyMiddleware.make(TenantResolver.apiKey())(handler)
    expect(withKeys).type.toBe<
      Effect.Effect<
        HttpServerResponse.HttpServerResponse,
        never,
        TenantApiKeyStore | TenantRegistry.TenantRegistry | HttpServerRequest
      >
    >()
  })

  test("per-tenant services leave R", () => {
    const needsBackend = Effect.flatMap(Backend, (b) => Effect.succeed(HttpServerResponse.text(b.name)))
    const layer = TenantLayer.make({
      key: (tenant) => tenant.tier,
      layer: (tier) => Layer.succeed(Backend, { name: tier })
    })
    expect(layer).type.toBe<Effect.Effect<TenantLayer.TenantLayer<Backend, never>, never, Scope.Scope>>()
    const served = Effect.map(
      layer,
      (services) => TenancyMiddleware.make(TenantResolver.header(), { layer: services })(needsBackend)
    )
    expect(served).type.toBe<
      Effect.Effect<
        Effect.Effect<HttpServerResponse.HttpServerResponse, never, TenantRegistry.TenantRegistry | HttpServerRequest>,
        never,
        Scope.Scope
      >
    >()
  })

  test("prebuilt services leave R too, in the same context change", () => {
    const needsBackend = Effect.flatMap(Backend, (b) => Effect.succeed(HttpServerResponse.text(b.name)))
    const prebuilt = TenantLayer.prebuilt({
      key: (tenant) => tenant.tier,
      layers: { free: Layer.succeed(Backend, { name: "free" }) },
      fallback: "free"
    })
    expect(prebuilt).type.toBe<Effect.Effect<TenantLayer.TenantServices<Backend>, never, Scope.Scope>>()
    const served = Effect.map(
      prebuilt,
      (services) => TenancyMiddleware.make(TenantResolver.header(), { services })(needsBackend)
    )
    expect(served).type.toBe<
      Effect.Effect<
        Effect.Effect<HttpServerResponse.HttpServerResponse, never, TenantRegistry.TenantRegistry | HttpServerRequest>,
        never,
        Scope.Scope
      >
    >()
    const unserved = TenancyMiddleware.make(TenantResolver.header())(needsBackend)
    expect(unserved).type.toBe<
      Effect.Effect<
        HttpServerResponse.HttpServerResponse,
        never,
        Backend | TenantRegistry.TenantRegistry | HttpServerRequest
      >
    >()
  })
})

describe("TenantResolver", () => {
  test("chains combine requirements", () => {
    expect(TenantResolver.chain(TenantResolver.jwt({} as never), TenantResolver.header())).type.toBe<
      TenantResolver.TenantResolver<never>
    >()
    expect(TenantResolver.chain(TenantResolver.apiKey(), TenantResolver.header())).type.toBe<
      TenantResolver.TenantResolver<TenantApiKeyStore>
    >()
  })
})

describe("TenancyConfig", () => {
  test("layerFromEnv fails with a ConfigError", () => {
    expect(TenancyConfig.layerFromEnv).type.toBe<Layer.Layer<TenancyConfig.TenancyConfig, ConfigError.ConfigError>>()
  })
})
