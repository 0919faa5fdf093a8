/**
 * How an HTTP request names its tenant.
 *
 * A resolver reads a request and answers with a reference to a tenant, no
 * reference (the request names none), or a `TenantResolutionError` (the
 * request presents something it may not: a bad credential, a foreign host).
 * References are checked (`TenantId` syntax) and looked up by the middleware,
 * never here, so every strategy gets the same treatment of unknown tenants.
 *
 * - `header`, `subdomain` and `path` name the tenant by its public
 *   identifier; `jwt` (a claim of a verified token) and `apiKey` (a key found
 *   in the `TenantApiKeyStore`) name it by id and are authenticating.
 * - `chain` tries its resolvers in order and takes the first reference. When
 *   the chain holds an authenticating strategy, every other strategy that
 *   yields a reference must name the same tenant (checked after lookup; a
 *   disagreement is refused with 403), and a present but invalid credential
 *   is refused: it never falls through to the next strategy.
 *
 * @since 0.1.0
 */
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as jose from "jose"
import type { JwtSettings, TenancySettings } from "./TenancyConfig.js"
import { TenantApiKeyStore } from "./TenantApiKey.js"
import type { TenantStoreError } from "./TenantError.js"

/**
 * A reference to a tenant, as a request gives it.
 *
 * @since 0.1.0
 * @category models
 */
export interface TenantRef {
  readonly by: "id" | "identifier"
  readonly value: string
  /** The strategy that produced it. */
  readonly strategy: string
  /** Whether it comes from a verified credential. */
  readonly authenticated: boolean
  /** The request as the handler should see it (the path strategy strips its prefix). */
  readonly request?: HttpServerRequest.HttpServerRequest | undefined
}

/**
 * What a successful resolution gives: the chosen reference, and the others
 * that must agree with it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolution {
  readonly ref: TenantRef
  readonly mustAgree: ReadonlyArray<TenantRef>
}

/**
 * Why a request was refused before any lookup.
 *
 * - `missing`: the request names no tenant (400, or 401 when the resolver authenticates);
 * - `invalid-credential`: a token or key is present but not valid (401);
 * - `invalid-host`: the host is outside the configured base domain (400);
 * - `mismatch`: two strategies name different tenants (403).
 *
 * `detail` is for logs and debug responses only.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantResolutionError
  extends Schema.TaggedError<TenantResolutionError>("effect-tenancy/TenantResolutionError")("TenantResolutionError", {
    reason: Schema.Literal("missing", "invalid-credential", "invalid-host", "mismatch"),
    strategy: Schema.String,
    status: Schema.Literal(400, 401, 403),
    detail: Schema.optional(Schema.String)
  })
{
  /** @since 0.1.0 */
  override get message(): string {
    return `Tenant resolution refused the request (${this.reason}, ${this.strategy})`
  }
}

/**
 * A resolution strategy.
 *
 * @since 0.1.0
 * @category models
 */
export interface TenantResolver<R = never> {
  /** Names of the strategies, in order. */
  readonly strategies: ReadonlyArray<string>
  /** Whether the resolver verifies a credential (then a missing tenant is 401, not 400). */
  readonly authenticating: boolean
  /** Fails with `TenantStoreError` when a store it needs (API keys) is down. */
  readonly resolve: (
    request: HttpServerRequest.HttpServerRequest
  ) => Effect.Effect<Option.Option<Resolution>, TenantResolutionError | TenantStoreError, R>
}

const single = (ref: TenantRef): Option.Option<Resolution> => Option.some({ ref, mustAgree: [] })

const refuse = (
  strategy: string,
  reason: TenantResolutionError["reason"],
  status: TenantResolutionError["status"],
  detail?: string
) => new TenantResolutionError({ reason, strategy, status, ...(detail === undefined ? {} : { detail }) })

/**
 * The tenant identifier in a request header (default `X-Tenant-ID`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const header = (options?: { readonly name?: string | undefined }): TenantResolver => {
  const name = (options?.name ?? "X-Tenant-ID").toLowerCase()
  return {
    strategies: ["header"],
    authenticating: false,
    resolve: (request) => {
      const value = request.headers[name]
      return Effect.succeed(
        value === undefined || value.trim() === ""
          ? Option.none()
          : single({ by: "identifier", value: value.trim(), strategy: "header", authenticated: false })
      )
    }
  }
}

/**
 * The first label of the host under a base domain: with base domain
 * `app.example.com`, `acme.app.example.com` names `acme`. The base domain
 * itself names no tenant; any other host (another domain, or more than one
 * label under the base) is refused.
 *
 * @since 0.1.0
 * @category constructors
 */
export const subdomain = (options: { readonly baseDomain: string }): TenantResolver => {
  const base = options.baseDomain.toLowerCase().replace(/\.$/, "")
  const suffix = `.${base}`
  return {
    strategies: ["subdomain"],
    authenticating: false,
    resolve: (request) =>
      Effect.suspend(() => {
        const host = hostOf(request)
        if (host === undefined) return Effect.succeed(Option.none())
        if (host === base) return Effect.succeed(Option.none())
        if (!host.endsWith(suffix)) {
          return Effect.fail(refuse("subdomain", "invalid-host", 400, `host ${host} is outside ${base}`))
        }
        const label = host.slice(0, -suffix.length)
        if (label.includes(".")) {
          return Effect.fail(refuse("subdomain", "invalid-host", 400, `host ${host} has more than one label`))
        }
        return Effect.succeed(single({ by: "identifier", value: label, strategy: "subdomain", authenticated: false }))
      })
  }
}

/**
 * The path segment after a prefix: `/t/acme/orders` names `acme` (prefix
 * `t`), and the handler sees `/orders`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const path = (options?: { readonly prefix?: string | undefined }): TenantResolver => {
  const prefix = `/${options?.prefix ?? "t"}/`
  return {
    strategies: ["path"],
    authenticating: false,
    resolve: (request) =>
      Effect.sync(() => {
        const url = request.url
        if (!url.startsWith(prefix)) return Option.none()
        const rest = url.slice(prefix.length)
        const end = rest.search(/[/?#]/)
        const value = end === -1 ? rest : rest.slice(0, end)
        if (value === "") return Option.none()
        const remainder = end === -1 ? "/" : rest.slice(end)
        const rewritten = request.modify({ url: remainder.startsWith("/") ? remainder : `/${remainder}` })
        return single({
          by: "identifier",
          value: decodeURIComponentSafe(value),
          strategy: "path",
          authenticated: false,
          request: rewritten
        })
      })
  }
}

// The Host header, or the host of an absolute request URL (web handlers get no Host header).
const hostOf = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const header = request.headers["host"]
  let host = header !== undefined && header !== "" ? header : undefined
  if (host === undefined && /^https?:\/\//i.test(request.originalUrl)) {
    try {
      host = new URL(request.originalUrl).host
    } catch {
      return undefined
    }
  }
  return host?.toLowerCase().replace(/:\d+$/, "").replace(/\.$/, "")
}

const decodeURIComponentSafe = (s: string): string => {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

/**
 * A claim of a bearer JWT (`Authorization: Bearer <token>`), verified with
 * `jose`: the signature with the configured secret, the algorithm pinned by
 * configuration (`alg: none` and any other algorithm are refused), `exp`
 * (required) and `nbf`, and the issuer and audience when configured. The claim names the
 * tenant by id. No token is "missing" (401); a token that does not verify or
 * lacks the claim is an invalid credential (401).
 *
 * @since 0.1.0
 * @category constructors
 */
export const jwt = (settings: JwtSettings): TenantResolver => {
  const key = new TextEncoder().encode(Redacted.value(settings.secret))
  const verifyOptions: jose.JWTVerifyOptions = {
    algorithms: [settings.algorithm],
    // jose checks `exp` only when present: a token without one would never expire.
    requiredClaims: ["exp"],
    ...(Option.isSome(settings.issuer) ? { issuer: settings.issuer.value } : {}),
    ...(Option.isSome(settings.audience) ? { audience: settings.audience.value } : {})
  }
  return {
    strategies: ["jwt"],
    authenticating: true,
    resolve: (request) => {
      const authorization = request.headers["authorization"]
      if (authorization === undefined) return Effect.succeed(Option.none())
      const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
      if (match === null) {
        return Effect.fail(refuse("jwt", "invalid-credential", 401, "the Authorization header is not a bearer token"))
      }
      return Effect.tryPromise({
        try: () => jose.jwtVerify(match[1], key, verifyOptions),
        catch: (error) =>
          refuse("jwt", "invalid-credential", 401, error instanceof Error ? error.message : "invalid token")
      }).pipe(
        Effect.flatMap(({ payload }) => {
          const claim = payload[settings.tenantClaim]
          return typeof claim === "string" && claim !== ""
            ? Effect.succeed(single({ by: "id", value: claim, strategy: "jwt", authenticated: true }))
            : Effect.fail(
              refuse("jwt", "invalid-credential", 401, `the token has no string claim ${settings.tenantClaim}`)
            )
        })
      )
    }
  }
}

/**
 * An API key in a header (default `X-API-Key`), looked up (hashed) in the
 * `TenantApiKeyStore`. An unknown, revoked or malformed key is an invalid
 * credential (401).
 *
 * @since 0.1.0
 * @category constructors
 */
export const apiKey = (options?: { readonly header?: string | undefined }): TenantResolver<TenantApiKeyStore> => {
  const name = (options?.header ?? "X-API-Key").toLowerCase()
  return {
    strategies: ["api-key"],
    authenticating: true,
    resolve: (request) => {
      const value = request.headers[name]
      if (value === undefined || value === "") return Effect.succeed(Option.none())
      return Effect.flatMap(TenantApiKeyStore, (keys) => keys.lookup(value)).pipe(
        Effect.flatMap(Option.match({
          onNone: () => Effect.fail(refuse("api-key", "invalid-credential", 401, "unknown or revoked API key")),
          onSome: (info) =>
            Effect.succeed(single({ by: "id", value: info.tenantId, strategy: "api-key", authenticated: true }))
        }))
      )
    }
  }
}

/**
 * Any effect of the request: a reference by identifier (or by id with
 * `by: "id"`), or none. Mark it `authenticating` when it verifies a credential.
 *
 * @since 0.1.0
 * @category constructors
 */
export const custom = <R>(
  name: string,
  resolve: (
    request: HttpServerRequest.HttpServerRequest
  ) => Effect.Effect<
    Option.Option<{ readonly by?: "id" | "identifier"; readonly value: string }>,
    TenantResolutionError | TenantStoreError,
    R
  >,
  options?: { readonly authenticating?: boolean | undefined }
): TenantResolver<R> => {
  const authenticated = options?.authenticating === true
  return {
    strategies: [name],
    authenticating: authenticated,
    resolve: (request) =>
      Effect.map(
        resolve(request),
        (found) =>
          Option.flatMap(found, (ref) =>
            single({ by: ref.by ?? "identifier", value: ref.value, strategy: name, authenticated }))
      )
  }
}

/**
 * Tries resolvers in order; see the module documentation for the rules when
 * an authenticating strategy is part of the chain.
 *
 * @since 0.1.0
 * @category constructors
 */
export const chain = <Resolvers extends ReadonlyArray<TenantResolver<any>>>(
  ...resolvers: Resolvers
): TenantResolver<[Resolvers[number]] extends [TenantResolver<infer R>] ? R : never> => {
  const authenticating = resolvers.some((r) => r.authenticating)
  return {
    strategies: resolvers.flatMap((r) => r.strategies),
    authenticating,
    resolve: (request) =>
      Effect.gen(function*() {
        if (!authenticating) {
          for (const resolver of resolvers) {
            const found = yield* resolver.resolve(request)
            if (Option.isSome(found)) return found
          }
          return Option.none()
        }
        // Every strategy runs: an invalid credential anywhere refuses the request,
        // and every reference must agree with the authenticated one.
        const refs: Array<TenantRef> = []
        for (const resolver of resolvers) {
          const found = yield* resolver.resolve(request)
          if (Option.isSome(found)) refs.push(found.value.ref, ...found.value.mustAgree)
        }
        if (refs.length === 0) return Option.none()
        const chosen = refs.find((r) => r.authenticated) ?? refs[0]
        return Option.some({ ref: chosen, mustAgree: refs.filter((r) => r !== chosen) })
      })
  }
}

/**
 * The resolver the configuration describes (`TENANCY_RESOLUTION_STRATEGY`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromConfig = (settings: TenancySettings): TenantResolver<TenantApiKeyStore> => {
  const build = (strategy: TenancySettings["strategies"][number]): TenantResolver<TenantApiKeyStore> => {
    switch (strategy) {
      case "header":
        return header({ name: settings.tenantHeader })
      case "subdomain":
        return subdomain({ baseDomain: Option.getOrThrow(settings.baseDomain) })
      case "path":
        return path({ prefix: settings.pathPrefix })
      case "jwt":
        return jwt(Option.getOrThrow(settings.jwt))
      case "api-key":
        return apiKey({ header: settings.apiKeyHeader })
    }
  }
  const resolvers = settings.strategies.map(build)
  return resolvers.length === 1 ? resolvers[0] : chain(...resolvers)
}
