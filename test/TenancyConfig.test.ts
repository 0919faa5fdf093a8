import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import * as TenancyConfig from "effect-tenancy/TenancyConfig"

const read = (env: Record<string, string>) =>
  TenancyConfig.config.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))

const secret = "s".repeat(32)

describe("TenancyConfig", () => {
  it.effect("defaults", () =>
    Effect.gen(function*() {
      const settings = yield* read({})
      assert.deepStrictEqual(settings.strategies, ["header"])
      assert.strictEqual(settings.tenantHeader, "X-Tenant-ID")
      assert.deepStrictEqual(settings.skipPaths, ["/health", "/metrics", "/docs"])
      assert.isFalse(settings.debugErrors)
      assert.isTrue(Option.isNone(settings.jwt))
      assert.isTrue(Option.isNone(settings.databaseUrl))
    }))

  it.effect("reads every variable; secrets are redacted", () =>
    Effect.gen(function*() {
      const settings = yield* read({
        TENANCY_RESOLUTION_STRATEGY: "jwt, header",
        TENANCY_TENANT_HEADER: "X-Org",
        TENANCY_BASE_DOMAIN: "App.Example.com.",
        TENANCY_JWT_SECRET: secret,
        TENANCY_JWT_ALGORITHM: "HS512",
        TENANCY_JWT_ISSUER: "https://auth.example.com",
        TENANCY_JWT_AUDIENCE: "api",
        TENANCY_JWT_TENANT_CLAIM: "org",
        TENANCY_SKIP_PATHS: "/health/, /status",
        TENANCY_DEBUG_ERRORS: "true",
        TENANCY_DATABASE_URL: "postgres://app:pw@db:5432/app",
        TENANCY_REDIS_URL: "rediss://cache:6380"
      })
      assert.deepStrictEqual(settings.strategies, ["jwt", "header"])
      assert.strictEqual(settings.tenantHeader, "X-Org")
      assert.deepStrictEqual(settings.baseDomain, Option.some("app.example.com"))
      const jwt = Option.getOrThrow(settings.jwt)
      assert.strictEqual(jwt.algorithm, "HS512")
      assert.strictEqual(jwt.tenantClaim, "org")
      assert.deepStrictEqual(jwt.audience, Option.some("api"))
      assert.strictEqual(Redacted.value(jwt.secret), secret)
      assert.notInclude(String(jwt.secret), secret)
      assert.deepStrictEqual(settings.skipPaths, ["/health", "/status"])
      assert.isTrue(settings.debugErrors)
      assert.notInclude(String(Option.getOrThrow(settings.databaseUrl)), "pw")
    }))

  it.effect("layer checks what a strategy requires, like layerFromEnv", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.provide(TenancyConfig.TenancyConfig, TenancyConfig.layer({ strategies: ["jwt"] }))
      )
      assert.include(String(error), "TENANCY_JWT_SECRET")
      const ok = yield* Effect.provide(TenancyConfig.TenancyConfig, TenancyConfig.layer({ tenantHeader: "X-Org" }))
      assert.strictEqual(ok.tenantHeader, "X-Org")
    }))

  const refusals: ReadonlyArray<readonly [string, Record<string, string>, string, string]> = [
    ["a short JWT secret", { TENANCY_JWT_SECRET: "short" }, "TENANCY_JWT_SECRET", "at least 32"],
    ["an unknown strategy", { TENANCY_RESOLUTION_STRATEGY: "cookie" }, "TENANCY_RESOLUTION_STRATEGY", "cookie"],
    ["a repeated strategy", { TENANCY_RESOLUTION_STRATEGY: "header,header" }, "TENANCY_RESOLUTION_STRATEGY", "twice"],
    ["a malformed database URL", { TENANCY_DATABASE_URL: "not a url" }, "TENANCY_DATABASE_URL", "postgres:"],
    ["a database URL of another scheme", { TENANCY_DATABASE_URL: "mysql://db/app" }, "TENANCY_DATABASE_URL", "scheme"],
    ["a malformed Redis URL", { TENANCY_REDIS_URL: "http://cache" }, "TENANCY_REDIS_URL", "redis:"],
    ["a malformed domain", { TENANCY_BASE_DOMAIN: "not a domain" }, "TENANCY_BASE_DOMAIN", "domain name"],
    ["a single-label domain", { TENANCY_BASE_DOMAIN: "localhost" }, "TENANCY_BASE_DOMAIN", "domain name"],
    ["a bad header name", { TENANCY_TENANT_HEADER: "X Tenant" }, "TENANCY_TENANT_HEADER", "header name"],
    ["an unknown JWT algorithm", { TENANCY_JWT_ALGORITHM: "none" }, "TENANCY_JWT_ALGORITHM", ""],
    ["a relative skip path", { TENANCY_SKIP_PATHS: "health" }, "TENANCY_SKIP_PATHS", "starting with"],
    ["jwt without a secret", { TENANCY_RESOLUTION_STRATEGY: "jwt" }, "TENANCY_JWT_SECRET", "required"],
    ["subdomain without a domain", { TENANCY_RESOLUTION_STRATEGY: "subdomain" }, "TENANCY_BASE_DOMAIN", "required"],
    ["a non-boolean flag", { TENANCY_DEBUG_ERRORS: "maybe" }, "TENANCY_DEBUG_ERRORS", ""]
  ]
  for (const [name, env, variable, rule] of refusals) {
    it.effect(`refuses ${name}, naming ${variable}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(read(env))
        const text = String(error)
        assert.include(text, variable)
        assert.include(text, rule)
        if (env.TENANCY_JWT_SECRET !== undefined) assert.notInclude(text, `"${env.TENANCY_JWT_SECRET}"`)
      }))
  }
})
