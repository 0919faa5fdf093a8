/**
 * The HTTP middleware that puts every request inside its tenant.
 *
 * For each request: skip paths run as they are; otherwise the resolver names
 * the tenant, the registry looks it up and checks it (one lookup), and the
 * handler runs inside the tenant (`CurrentTenant`, log annotation and span
 * attribute `tenant.id`, counted in the registry's stats), with the tenant's
 * own services when a `TenantLayer` is given. Refusals are answered here, as
 * `application/problem+json`, without internal detail unless `debug` is on:
 *
 * | case | status |
 * |---|---|
 * | no tenant in the request | 400 (header, path, subdomain) or 401 (JWT, API key) |
 * | a present but invalid credential | 401 |
 * | a host outside the base domain | 400 |
 * | an invalid or unknown tenant (one body for both) | 404 |
 * | strategies naming different tenants | 403 |
 * | a suspended (inactive) tenant | 403 |
 * | the tenant store is down | 503 |
 * | a defect | 500, with a correlation id that is in the logs with the cause |
 *
 * Errors of the handler itself pass through untouched.
 *
 * @since 0.1.0
 */
import * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Encoding from "effect/Encoding"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricKey from "effect/MetricKey"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import type { HealthStatus } from "./Health.js"
import type { CurrentTenant } from "./internal/tenantContext.js"
import * as internal from "./internal/tenantContext.js"
import { TenancyConfig } from "./TenancyConfig.js"
import type { Tenant } from "./Tenant.js"
import type { TenantApiKeyStore } from "./TenantApiKey.js"
import type { TenantLookupError } from "./TenantError.js"
import type { TenantLayer, TenantServices } from "./TenantLayer.js"
import { TenantRegistry } from "./TenantRegistry.js"
import type { TenantRef, TenantResolver } from "./TenantResolver.js"
import * as TenantResolver_ from "./TenantResolver.js"
import { TenantResolutionError } from "./TenantResolver.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<ROut = never, EL = never, SOut = never> {
  /** Paths served without a tenant, matched by whole segments (default `/health`, `/metrics`, `/docs`). */
  readonly skipPaths?: ReadonlyArray<string> | undefined
  /** Put error details in problem responses (default `false`: never in production). */
  readonly debug?: boolean | undefined
  /** Per-tenant services provided to the handler, built on first use per key (`TenantLayer.make`). */
  readonly layer?: TenantLayer<ROut, EL> | undefined
  /**
   * Per-tenant services from a fixed set built up front (`TenantLayer.prebuilt`,
   * e.g. a throttle backend per tier), provided in the same context change as
   * `CurrentTenant`: no extra cost per request.
   */
  readonly services?: TenantServices<SOut> | undefined
}

/**
 * Metrics of the middleware.
 *
 * @since 0.1.0
 * @category metrics
 */
const resolutionsKey = MetricKey.counter("tenancy_http_resolutions_total", {
  description: "Requests resolved to a tenant, by strategy and outcome",
  incremental: true
})
const rejectionsKey = MetricKey.counter("tenancy_http_rejections_total", {
  description: "Requests refused by the tenancy middleware, by reason",
  incremental: true
})

/**
 * Metrics of the middleware (untagged views; requests are counted with the
 * tags `strategy` and `outcome`, refusals with `reason`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  resolutions: Metric.fromMetricKey(resolutionsKey),
  rejections: Metric.fromMetricKey(rejectionsKey)
} as const

// `Metric.tagged` builds a new label array on every update, which defeats
// Effect's hook cache (a new MetricKey per increment). Build each tagged
// counter once from a tagged key instead: its hook is then looked up once.
const counters = new Map<string, Metric.Metric.Counter<number>>()
const counter = (name: "resolutions" | "rejections", tag: string, value: string) => {
  const cacheKey = `${name}|${tag}|${value}`
  let found = counters.get(cacheKey)
  if (found === undefined) {
    const base = name === "resolutions" ? resolutionsKey : rejectionsKey
    const labels = name === "resolutions"
      ? [MetricLabel.make(tag, value), MetricLabel.make("outcome", "resolved")]
      : [MetricLabel.make(tag, value)]
    found = Metric.fromMetricKey(MetricKey.taggedWithLabels(base, labels))
    counters.set(cacheKey, found)
  }
  return found
}

// `Effect.annotateCurrentSpan` builds an error (with a stack trace) when there
// is no span; reading the parent span as an Option does not.
const attributeSpan = (span: Option.Option<Tracer.AnySpan>, tenant: Tenant): void => {
  if (Option.isSome(span) && span.value._tag === "Span") {
    span.value.attribute("tenant.id", tenant.id)
    span.value.attribute("tenant.tier", tenant.tier)
  }
}

// A slug names one of this library's problem types; an absolute URI is used as it is.
const problemType = (slug: string) => slug.includes(":") ? slug : `urn:effect-tenancy:problem:${slug}`

/**
 * A problem+json response (RFC 9457). `slug` is one of this library's
 * problem types (`urn:effect-tenancy:problem:<slug>`) or an absolute URI
 * (a registered type such as the rate-limit draft's `quota-exceeded`).
 *
 * @since 0.1.0
 * @category responses
 */
export const problem = (
  status: number,
  slug: string,
  title: string,
  extra?: Record<string, unknown>
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson(
    { type: problemType(slug), title, status, ...extra },
    { status, contentType: "application/problem+json" }
  )

/**
 * Whether `pathname` is `path` or below it, by whole segments: `/health`
 * matches `/health` and `/health/live`, not `/healthcare`.
 *
 * @since 0.1.0
 * @category paths
 */
export const matchesPath = (pathname: string, path: string): boolean =>
  path === "/" || pathname === path || pathname.startsWith(path.endsWith("/") ? path : `${path}/`)

const pathnameOf = (url: string) => {
  const end = url.search(/[?#]/)
  return end === -1 ? url : url.slice(0, end)
}

type Refusal = TenantResolutionError | TenantLookupError | { readonly _tag: "Mismatch" }

interface Classified {
  readonly status: 400 | 401 | 403 | 404 | 503
  readonly slug: string
  readonly title: string
  /** The metric label of the refusal. */
  readonly reason: string
  readonly detail: string | undefined
}

// One classification of refusals, shared by the problem responses and the
// HttpApi errors, so the two forms of the middleware cannot answer differently.
const classify = (refusal: Refusal, missingStatus: 400 | 401): Classified => {
  switch (refusal._tag) {
    case "TenantResolutionError": {
      const { detail, reason } = refusal
      switch (reason) {
        case "missing":
          return { status: missingStatus, slug: "tenant-required", title: "A tenant is required", reason, detail }
        case "invalid-credential":
          return { status: 401, slug: "invalid-credentials", title: "Invalid credentials", reason, detail }
        case "invalid-host":
          return { status: 400, slug: "invalid-host", title: "Unknown host", reason, detail }
        case "mismatch":
          return mismatch(detail)
      }
      break
    }
    case "Mismatch":
      return mismatch(undefined)
    // Invalid and unknown get the same answer, so the API cannot be used to enumerate tenants.
    case "InvalidTenantId":
    case "TenantNotFound":
      return {
        status: 404,
        slug: "tenant-not-found",
        title: "Tenant not found",
        reason: refusal._tag,
        detail: refusal.message
      }
    case "TenantSuspended":
      return {
        status: 403,
        slug: "tenant-inactive",
        title: "Tenant is not active",
        reason: refusal._tag,
        detail: refusal.message
      }
    case "TenantStoreError":
      return {
        status: 503,
        slug: "tenant-store-unavailable",
        title: "Service unavailable",
        reason: refusal._tag,
        detail: refusal.message
      }
  }
}

const mismatch = (detail: string | undefined): Classified => ({
  status: 403,
  slug: "tenant-mismatch",
  title: "The request names more than one tenant",
  reason: "mismatch",
  detail
})

const problemOf = (classified: Classified, debug: boolean) =>
  problem(
    classified.status,
    classified.slug,
    classified.title,
    debug && classified.detail !== undefined ? { detail: classified.detail } : undefined
  )

// Whether a reference given by another strategy names `tenant`.
const agrees = (ref: TenantRef, tenant: Tenant): boolean =>
  ref.by === "id" ? ref.value === tenant.id : ref.value === tenant.identifier

const newCorrelationId = () => Encoding.encodeHex(crypto.getRandomValues(new Uint8Array(8)))

// The handler's own failures travel in a box through `enter`, so that they are
// never mistaken for the lookup's failures (a handler may fail with TenantNotFound too).
class HandlerFailure<E> {
  constructor(readonly error: E) {}
}

/**
 * Wraps an app so that it runs inside the tenant of each request.
 *
 * @since 0.1.0
 * @category middleware
 */
export const make = <RR, ROut = never, EL = never, SOut = never>(
  resolver: TenantResolver<RR>,
  options: Options<ROut, EL, SOut> = {}
) =>
<E, R>(
  app: HttpApp.Default<E, R>
): HttpApp.Default<
  E | EL,
  Exclude<Exclude<R, ROut | SOut>, CurrentTenant> | RR | TenantRegistry | HttpServerRequest.HttpServerRequest
> => {
  const skipPaths = options.skipPaths ?? ["/health", "/metrics", "/docs"]
  const debug = options.debug === true
  const missingStatus = resolver.authenticating ? 401 : 400
  const inner: Effect.Effect<HttpServerResponse.HttpServerResponse, E | EL, any> = options.layer === undefined
    ? app
    : options.layer.provide(app)

  const refuse = (refusal: Refusal) =>
    Effect.sync(() => {
      const classified = classify(refusal, missingStatus)
      counter("rejections", "reason", classified.reason).unsafeUpdate(1, [])
      return problemOf(classified, debug)
    })

  // The handler's failures are boxed, so that they are never mistaken for the
  // lookup's (a handler may fail with TenantNotFound too).
  const boxed = Effect.mapError(inner, (e) => new HandlerFailure(e))
  const mismatchFailure = Effect.fail({ _tag: "Mismatch" } as const)
  const enterOptions = options.services === undefined
    ? undefined
    : { services: options.services.context as (tenant: Tenant) => Context.Context<never> }

  // Runs inside the tenant: checks agreement, attributes the span, serves.
  const serveInside = (ref: TenantRef, mustAgree: ReadonlyArray<TenantRef>) =>
    Effect.contextWithEffect((
      context: Context.Context<CurrentTenant>
    ): Effect.Effect<
      HttpServerResponse.HttpServerResponse,
      HandlerFailure<E | EL> | { readonly _tag: "Mismatch" },
      any
    > => {
      const tenant = Context.unsafeGet(context, internal.CurrentTenant)
      if (!mustAgree.every((other) => agrees(other, tenant))) return mismatchFailure
      attributeSpan(Context.getOption(context as Context.Context<never>, Tracer.ParentSpan), tenant)
      counter("resolutions", "strategy", ref.strategy).unsafeUpdate(1, [])
      // Only the path strategy rewrites the request; otherwise spare the context change.
      return ref.request === undefined
        ? boxed
        : Effect.provideService(boxed, HttpServerRequest.HttpServerRequest, ref.request)
    })

  const handle = Effect.contextWithEffect(
    (context: Context.Context<HttpServerRequest.HttpServerRequest | TenantRegistry>) => {
      const request = Context.unsafeGet(context, HttpServerRequest.HttpServerRequest)
      const pathname = pathnameOf(request.url)
      if (skipPaths.some((p) => matchesPath(pathname, p))) {
        // No tenant here, so no per-tenant services either.
        return Effect.mapError(
          app as Effect.Effect<HttpServerResponse.HttpServerResponse, E, any>,
          (e) => new HandlerFailure(e)
        )
      }
      const registry = Context.unsafeGet(context, TenantRegistry)
      return Effect.flatMap(resolver.resolve(request), (resolution) => {
        if (Option.isNone(resolution)) {
          return refuse(
            new TenantResolutionError({
              reason: "missing",
              strategy: resolver.strategies.join(","),
              status: missingStatus
            })
          )
        }
        const { mustAgree, ref } = resolution.value
        return registry.enter(
          serveInside(ref, mustAgree),
          ref.by === "id" ? ref.value : { identifier: ref.value },
          enterOptions
        )
      })
    }
  )

  return handle.pipe(
    Effect.catchAll((e) => e instanceof HandlerFailure ? Effect.fail(e.error as E | EL) : refuse(e as Refusal)),
    Effect.catchAllDefect((defect) => {
      const correlationId = newCorrelationId()
      return Effect.logError("Unhandled defect in a tenant request", defect).pipe(
        Effect.annotateLogs("correlation.id", correlationId),
        Effect.as(
          problem(500, "internal-error", "Internal server error", {
            correlationId,
            ...(debug ? { detail: String(defect) } : {})
          })
        )
      )
    })
  ) as any
}

/**
 * The middleware the configuration describes (`TenancyConfig`): its
 * resolution strategy, skip paths and debug flag.
 *
 * @since 0.1.0
 * @category middleware
 */
export const fromConfig: Effect.Effect<
  <E, R>(
    app: HttpApp.Default<E, R>
  ) => HttpApp.Default<
    E,
    Exclude<R, CurrentTenant> | TenantApiKeyStore | TenantRegistry | HttpServerRequest.HttpServerRequest
  >,
  never,
  TenancyConfig
> = Effect.map(
  TenancyConfig,
  (settings) =>
    make(TenantResolver_.fromConfig(settings), { skipPaths: settings.skipPaths, debug: settings.debugErrors })
)

/**
 * The middleware for `HttpLayerRouter`: routes it is provided to run inside
 * the request's tenant, and their handlers' types may require `CurrentTenant`.
 *
 * @since 0.1.0
 * @category middleware
 */
export const layerRouter = <RR, ROut = never, EL = never, SOut = never>(
  resolver: TenantResolver<RR>,
  options: Options<ROut, EL, SOut> = {}
) =>
  HttpLayerRouter.middleware<{ provides: CurrentTenant }>()(
    Effect.map(
      Effect.context<RR | TenantRegistry>(),
      (context) =>
      <E>(
        effect: Effect.Effect<HttpServerResponse.HttpServerResponse, E, CurrentTenant>
      ): Effect.Effect<HttpServerResponse.HttpServerResponse, E | EL, HttpServerRequest.HttpServerRequest> =>
        // The layer's context fills in the registry and the resolver's services;
        // the request's own context (its Scope, its request) takes precedence.
        Effect.mapInputContext(
          make(resolver, options)(effect),
          (request: Context.Context<HttpServerRequest.HttpServerRequest>) => Context.merge(context, request)
        )
    )
  )

/**
 * The middleware for `HttpApi`: endpoints and groups it is added to receive
 * `CurrentTenant`, so their handlers' types may require it. Refusals use the
 * platform's empty errors (`BadRequest`, `Unauthorized`, `Forbidden`,
 * `NotFound`, `ServiceUnavailable`), with the same statuses as the plain
 * middleware and no detail.
 *
 * An `HttpApi` middleware provides a service but does not wrap the handler,
 * so here the tenant is checked and counted as entered when the request
 * starts (not while the handler runs), and handler logs carry `tenant.id`
 * only if the plain middleware also wraps the app. The path strategy cannot
 * rewrite the URL of an already-routed request: use header, subdomain, JWT
 * or API key with `HttpApi`.
 *
 * @since 0.1.0
 * @category middleware
 */
export class TenancyApiMiddleware extends HttpApiMiddleware.Tag<TenancyApiMiddleware>()(
  "effect-tenancy/TenancyApiMiddleware",
  {
    provides: internal.CurrentTenant,
    failure: Schema.Union(
      HttpApiError.BadRequest,
      HttpApiError.Unauthorized,
      HttpApiError.Forbidden,
      HttpApiError.NotFound,
      HttpApiError.ServiceUnavailable
    )
  }
) {}

const apiErrors = {
  400: () => new HttpApiError.BadRequest(),
  401: () => new HttpApiError.Unauthorized(),
  403: () => new HttpApiError.Forbidden(),
  404: () => new HttpApiError.NotFound(),
  503: () => new HttpApiError.ServiceUnavailable()
} as const

/**
 * Implements `TenancyApiMiddleware` with a resolver.
 *
 * @since 0.1.0
 * @category middleware
 */
export const layerHttpApi = <RR>(
  resolver: TenantResolver<RR>
): Layer.Layer<TenancyApiMiddleware, never, RR | TenantRegistry> =>
  Layer.effect(
    TenancyApiMiddleware,
    Effect.gen(function*() {
      const registry = yield* TenantRegistry
      const context = yield* Effect.context<RR>()
      const missingStatus = resolver.authenticating ? 401 : 400
      return Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const resolution = yield* resolver.resolve(request)
        if (Option.isNone(resolution)) {
          return yield* new TenantResolutionError({
            reason: "missing",
            strategy: resolver.strategies.join(","),
            status: missingStatus
          })
        }
        const { mustAgree, ref } = resolution.value
        const tenant = yield* registry.enter(
          internal.CurrentTenant,
          ref.by === "id" ? ref.value : { identifier: ref.value }
        )
        if (!mustAgree.every((other) => agrees(other, tenant))) return yield* Effect.fail({ _tag: "Mismatch" } as const)
        attributeSpan(yield* Effect.serviceOption(Tracer.ParentSpan), tenant)
        counter("resolutions", "strategy", ref.strategy).unsafeUpdate(1, [])
        return tenant
      }).pipe(
        Effect.provide(context),
        Effect.catchAll((refusal: Refusal) =>
          Effect.suspend(() => {
            const classified = classify(refusal, missingStatus)
            counter("rejections", "reason", classified.reason).unsafeUpdate(1, [])
            return Effect.fail(apiErrors[classified.status]())
          })
        )
      )
    })
  )

/**
 * An app that reports the health of components: 200 when every one is up,
 * 503 otherwise, with a JSON body listing each.
 *
 * @since 0.1.0
 * @category health
 */
export const healthApp = (
  checks: ReadonlyArray<Effect.Effect<HealthStatus>>
): Effect.Effect<HttpServerResponse.HttpServerResponse> =>
  Effect.map(Effect.all(checks, { concurrency: "unbounded" }), (statuses) => {
    const up = statuses.every((s) => s.status === "up")
    return HttpServerResponse.unsafeJson(
      {
        status: up ? "up" : "down",
        components: statuses.map((s) => ({
          component: s.component,
          status: s.status,
          latencyMs: Math.round(s.latencyMs * 100) / 100,
          ...(s.detail === undefined ? {} : { detail: s.detail })
        }))
      },
      { status: up ? 200 : 503 }
    )
  })
