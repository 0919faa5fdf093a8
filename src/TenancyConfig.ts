/**
 * One configuration for the whole library, read from `TENANCY_*` variables.
 *
 * `config` describes every setting as an Effect `Config`, so it can be read
 * from any `ConfigProvider`; `layerFromEnv` reads it from the current
 * provider (the process environment by default) and provides it as the
 * `TenancyConfig` service. Invalid settings fail at start with a
 * `ConfigError` that names the variable and the rule it breaks. Secrets (the
 * JWT secret, the database and Redis URLs) are `Redacted`.
 *
 * | variable | default | rule |
 * |---|---|---|
 * | `TENANCY_RESOLUTION_STRATEGY` | `header` | one of `header`, `subdomain`, `path`, `jwt`, `api-key`, or several joined by `,` (a chain, tried in order) |
 * | `TENANCY_TENANT_HEADER` | `X-Tenant-ID` | an HTTP header name |
 * | `TENANCY_API_KEY_HEADER` | `X-API-Key` | an HTTP header name |
 * | `TENANCY_PATH_PREFIX` | `t` | the first path segment before the tenant: `/t/acme/...` |
 * | `TENANCY_BASE_DOMAIN` | — | a domain name (`app.example.com`); required by `subdomain` |
 * | `TENANCY_JWT_SECRET` | — | at least 32 characters; required by `jwt` |
 * | `TENANCY_JWT_ALGORITHM` | `HS256` | `HS256`, `HS384` or `HS512` |
 * | `TENANCY_JWT_ISSUER` | — | checked when set |
 * | `TENANCY_JWT_AUDIENCE` | — | checked when set |
 * | `TENANCY_JWT_TENANT_CLAIM` | `tenant_id` | the claim holding the tenant identifier |
 * | `TENANCY_SKIP_PATHS` | `/health,/metrics,/docs` | paths served without a tenant (whole segments) |
 * | `TENANCY_DEBUG_ERRORS` | `false` | include error details in problem responses |
 * | `TENANCY_DATABASE_URL` | — | a `postgres://` or `postgresql://` URL |
 * | `TENANCY_REDIS_URL` | — | a `redis://` or `rediss://` URL |
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"

/**
 * A way of finding the tenant of a request.
 *
 * @since 0.1.0
 * @category models
 */
export type Strategy = "header" | "subdomain" | "path" | "jwt" | "api-key"

/**
 * @since 0.1.0
 * @category constants
 */
export const strategies: ReadonlyArray<Strategy> = ["header", "subdomain", "path", "jwt", "api-key"]

/**
 * The JWT algorithms a shared secret can verify. The algorithm is pinned by
 * configuration: a token that names another (or `none`) is refused.
 *
 * @since 0.1.0
 * @category models
 */
export type JwtAlgorithm = "HS256" | "HS384" | "HS512"

/**
 * @since 0.1.0
 * @category models
 */
export interface JwtSettings {
  readonly secret: Redacted.Redacted<string>
  readonly algorithm: JwtAlgorithm
  readonly issuer: Option.Option<string>
  readonly audience: Option.Option<string>
  readonly tenantClaim: string
}

/**
 * The library's configuration.
 *
 * @since 0.1.0
 * @category models
 */
export interface TenancySettings {
  /** The strategies to try, in order (one for a single strategy). */
  readonly strategies: ReadonlyArray<Strategy>
  readonly tenantHeader: string
  readonly apiKeyHeader: string
  readonly pathPrefix: string
  readonly baseDomain: Option.Option<string>
  readonly jwt: Option.Option<JwtSettings>
  readonly skipPaths: ReadonlyArray<string>
  readonly debugErrors: boolean
  readonly databaseUrl: Option.Option<Redacted.Redacted<string>>
  readonly redisUrl: Option.Option<Redacted.Redacted<string>>
}

/**
 * The configuration as a service.
 *
 * @since 0.1.0
 * @category tags
 */
export class TenancyConfig extends Context.Tag("effect-tenancy/TenancyConfig")<TenancyConfig, TenancySettings>() {}

const invalid = (variable: string, message: string) => ConfigError.InvalidData([variable], message)

const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/
const domainName = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/
const pathSegment = /^[A-Za-z0-9_~.-]{1,64}$/

const checked = <A>(
  variable: string,
  config: Config.Config<A>,
  check: (a: A) => string | undefined
): Config.Config<A> =>
  Config.mapOrFail(config, (a) => {
    const problem = check(a)
    return problem === undefined ? Either.right(a) : Either.left(invalid(variable, problem))
  })

const header = (variable: string, fallback: string) =>
  checked(
    variable,
    Config.string(variable).pipe(Config.withDefault(fallback)),
    (h) => headerName.test(h) ? undefined : "must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
  )

const url = (variable: string, schemes: ReadonlyArray<string>) =>
  Config.option(
    Config.mapOrFail(Config.redacted(variable), (value) => {
      try {
        const parsed = new URL(Redacted.value(value))
        return schemes.includes(parsed.protocol) && parsed.hostname !== ""
          ? Either.right(value)
          : Either.left(invalid(variable, `must be a URL with scheme ${schemes.join(" or ")} and a host`))
      } catch {
        return Either.left(invalid(variable, `must be a URL with scheme ${schemes.join(" or ")}`))
      }
    })
  )

const strategiesConfig = Config.mapOrFail(
  Config.string("TENANCY_RESOLUTION_STRATEGY").pipe(Config.withDefault("header")),
  (value) => {
    const names = value.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "")
    const unknown = names.filter((n) => !strategies.includes(n as Strategy))
    if (names.length === 0 || unknown.length > 0) {
      return Either.left(
        invalid(
          "TENANCY_RESOLUTION_STRATEGY",
          `unknown strategy ${JSON.stringify(unknown[0] ?? value)}: use ${
            strategies.join(", ")
          } (or several, joined by ",")`
        )
      )
    }
    if (new Set(names).size !== names.length) {
      return Either.left(invalid("TENANCY_RESOLUTION_STRATEGY", "a strategy is listed twice"))
    }
    return Either.right(names as ReadonlyArray<Strategy>)
  }
)

const jwtConfig: Config.Config<Option.Option<JwtSettings>> = Config.all({
  secret: Config.option(
    checked(
      "TENANCY_JWT_SECRET",
      Config.redacted("TENANCY_JWT_SECRET"),
      (s) => Redacted.value(s).length >= 32 ? undefined : "must be at least 32 characters long"
    )
  ),
  algorithm: Config.literal("HS256", "HS384", "HS512")("TENANCY_JWT_ALGORITHM").pipe(Config.withDefault("HS256")),
  issuer: Config.option(Config.nonEmptyString("TENANCY_JWT_ISSUER")),
  audience: Config.option(Config.nonEmptyString("TENANCY_JWT_AUDIENCE")),
  tenantClaim: Config.nonEmptyString("TENANCY_JWT_TENANT_CLAIM").pipe(Config.withDefault("tenant_id"))
}).pipe(Config.map(({ secret, ...rest }) => Option.map(secret, (s): JwtSettings => ({ ...rest, secret: s }))))

const skipPathsConfig = Config.mapOrFail(
  Config.string("TENANCY_SKIP_PATHS").pipe(Config.withDefault("/health,/metrics,/docs")),
  (value) => {
    const paths = value.split(",").map((s) => s.trim()).filter((s) => s !== "")
    const bad = paths.find((p) => !p.startsWith("/") || p.includes("?") || p.includes("#"))
    return bad === undefined
      ? Either.right(paths.map((p) => (p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p)))
      : Either.left(invalid("TENANCY_SKIP_PATHS", `${JSON.stringify(bad)} is not a path starting with "/"`))
  }
)

const checkRequirements = (settings: TenancySettings): Either.Either<TenancySettings, ConfigError.ConfigError> => {
  if (settings.strategies.includes("jwt") && Option.isNone(settings.jwt)) {
    return Either.left(invalid("TENANCY_JWT_SECRET", "is required by the jwt strategy"))
  }
  if (settings.strategies.includes("subdomain") && Option.isNone(settings.baseDomain)) {
    return Either.left(invalid("TENANCY_BASE_DOMAIN", "is required by the subdomain strategy"))
  }
  return Either.right(settings)
}

/**
 * Every setting, read from `TENANCY_*` variables of the current
 * `ConfigProvider`, checked together: a strategy's required settings must be
 * present (`jwt` needs `TENANCY_JWT_SECRET`, `subdomain` needs
 * `TENANCY_BASE_DOMAIN`).
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<TenancySettings> = Config.all({
  strategies: strategiesConfig,
  tenantHeader: header("TENANCY_TENANT_HEADER", "X-Tenant-ID"),
  apiKeyHeader: header("TENANCY_API_KEY_HEADER", "X-API-Key"),
  pathPrefix: checked(
    "TENANCY_PATH_PREFIX",
    Config.string("TENANCY_PATH_PREFIX").pipe(Config.withDefault("t")),
    (p) => pathSegment.test(p) ? undefined : "must be one path segment of [A-Za-z0-9_~.-]"
  ),
  baseDomain: Config.option(
    checked(
      "TENANCY_BASE_DOMAIN",
      Config.string("TENANCY_BASE_DOMAIN").pipe(Config.map((d) => d.trim().toLowerCase().replace(/\.$/, ""))),
      (d) => domainName.test(d) ? undefined : "must be a domain name such as app.example.com"
    )
  ),
  jwt: jwtConfig,
  skipPaths: skipPathsConfig,
  debugErrors: Config.boolean("TENANCY_DEBUG_ERRORS").pipe(Config.withDefault(false)),
  databaseUrl: url("TENANCY_DATABASE_URL", ["postgres:", "postgresql:"]),
  redisUrl: url("TENANCY_REDIS_URL", ["redis:", "rediss:"])
}).pipe(Config.mapOrFail((settings) => checkRequirements(settings)))

/**
 * Reads `config` from the current `ConfigProvider` (the environment by default).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromEnv: Layer.Layer<TenancyConfig, ConfigError.ConfigError> = Layer.effect(
  TenancyConfig,
  Effect.map(config, TenancyConfig.of)
)

/**
 * Provides settings given in code; unspecified settings take their defaults.
 * A strategy's required settings are checked as for `layerFromEnv`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (settings: Partial<TenancySettings>): Layer.Layer<TenancyConfig, ConfigError.ConfigError> =>
  Layer.effect(TenancyConfig, Effect.map(checkRequirements({ ...defaults, ...settings }), TenancyConfig.of))

/**
 * The settings with every default and nothing optional set.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults: TenancySettings = {
  strategies: ["header"],
  tenantHeader: "X-Tenant-ID",
  apiKeyHeader: "X-API-Key",
  pathPrefix: "t",
  baseDomain: Option.none(),
  jwt: Option.none(),
  skipPaths: ["/health", "/metrics", "/docs"],
  debugErrors: false,
  databaseUrl: Option.none(),
  redisUrl: Option.none()
}
