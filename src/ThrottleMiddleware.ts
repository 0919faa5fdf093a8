/**
 * HTTP rate limiting: a middleware that checks one or several throttles for
 * each request and answers `429 Too Many Requests` when one refuses.
 *
 * ```ts
 * const perMinute = yield* Throttle.make({ uid: "api-minute", rate: "100/min" })
 * const perDay = yield* Throttle.make({ uid: "api-day", rate: "10000/day", algorithm: "fixed-window" })
 *
 * // a backend per tier, built up front
 * const backends = yield* TenantLayer.prebuilt({
 *   key: (tenant) => tenant.tier,
 *   layers: { enterprise: enterpriseRedis, premium: premiumRedis, free: ThrottleBackend.layerMemory() },
 *   fallback: "free"
 * })
 * // inside the tenancy middleware: the tenant is part of every counter's key,
 * // and its tier's ThrottleBackend comes with it, in the same context change
 * const app = router.pipe(
 *   ThrottleMiddleware.make([perMinute, perDay], { trustedProxies: ["10.0.0.0/8"] }),
 *   TenancyMiddleware.make(TenantResolver.header(), { services: backends })
 * )
 * ```
 *
 * Several throttles are checked together, all-or-nothing (`Throttle.checkAll`:
 * a request refused by one is counted by none). Responses carry the IETF
 * `draft-ietf-httpapi-ratelimit-headers-10` fields, one list member per
 * throttle named by its uid, in canonical structured-field syntax:
 *
 * ```
 * RateLimit-Policy: "api-minute";q=100;w=60, "api-day";q=10000;w=86400
 * RateLimit: "api-minute";r=41;t=36, "api-day";r=9958;t=51840
 * ```
 *
 * | case | answer |
 * |---|---|
 * | every throttle allows | the app's response, plus `RateLimit-Policy` and `RateLimit` |
 * | a throttle refuses | 429, `Retry-After` (delta seconds, rounded up: when this same request would be allowed), the two fields, a `quota-exceeded` problem listing the violated policies |
 * | the request costs more than a policy can ever admit | 429 without `Retry-After`, with a detail saying so |
 * | the backend fails (fail-closed) | 503 `throttle-unavailable` problem, never a 429 |
 *
 * Counters are per tenant (the `CurrentTenant`, when the middleware runs
 * inside the tenancy middleware) and per identifier: by default the client
 * address. The peer address is the client unless it is one of the
 * `trustedProxies`; then `X-Forwarded-For` is walked from the right,
 * skipping trusted hops. IPv6 clients are grouped by their /64 (configurable),
 * IPv4-mapped IPv6 addresses are IPv4. A request whose client cannot be told
 * (no peer address, as with `HttpApp.toWebHandler`, or one that does not
 * parse) is counted under the identifier `unknown`, shared by all such
 * requests.
 *
 * @since 0.1.0
 */
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { globalValue } from "effect/GlobalValue"
import * as address from "./internal/clientAddress.js"
import { makeSampledWarning } from "./internal/sampledWarning.js"
import type * as Rate from "./Rate.js"
import { problem } from "./TenancyMiddleware.js"
import * as Throttle from "./Throttle.js"
import type { RateLimitExceeded, Verdict } from "./Throttle.js"
import type { ThrottleBackendError } from "./ThrottleBackend.js"
import type { ThrottleBackend } from "./ThrottleBackend.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface ClientAddressOptions {
  /**
   * The proxies whose `X-Forwarded-For` is believed, as CIDR ranges or single
   * addresses (`"10.0.0.0/8"`, `"2001:db8::/32"`, `"127.0.0.1"`). Default
   * none: the header is ignored and the peer is the client.
   */
  readonly trustedProxies?: ReadonlyArray<string> | undefined
  /**
   * The forwarded header (default `x-forwarded-for`). `forwarded` is read as
   * RFC 7239 (`Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::17]:4711"`):
   * the `for` parameter of each element, walked from the right like
   * `X-Forwarded-For`; an obfuscated or `unknown` node ends the walk at the
   * nearest trusted proxy. Any other name is a comma-separated list of
   * addresses (`X-Real-IP` is a list of one).
   */
  readonly forwardedHeader?: string | undefined
  /** IPv6 clients are grouped by this many leading bits (default 64; e.g. 56, or 128 for none). */
  readonly ipv6Prefix?: number | undefined
  /** IPv4 clients are grouped by this many leading bits (default 32: no grouping). */
  readonly ipv4Prefix?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<R = never> extends ClientAddressOptions {
  /**
   * The counter a request is counted in, within its tenant (default: the
   * client address). `client` is the client address as the default would
   * use it, for identifiers that fall back to it.
   */
  readonly identifier?:
    | ((request: HttpServerRequest.HttpServerRequest, client: string) => string | Effect.Effect<string, never, R>)
    | undefined
  /**
   * What a request costs (default: each throttle's own cost, 1 unless set).
   * A cost must be a non-negative integer (anything else is a defect).
   */
  readonly cost?:
    | ((request: HttpServerRequest.HttpServerRequest) => number | Effect.Effect<number, never, R>)
    | undefined
  /** Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (default `false`). */
  readonly legacyHeaders?: boolean | undefined
  /** Put the backend error's message in 503 responses (default `false`). */
  readonly debug?: boolean | undefined
}

/**
 * The problem type of a 429, as draft-ietf-httpapi-ratelimit-headers-10
 * registers it.
 *
 * @since 0.1.0
 * @category constants
 */
export const quotaExceededType = "https://iana.org/assignments/http-problem-types#quota-exceeded"

/**
 * The identifier used for requests whose client address cannot be told.
 *
 * @since 0.1.0
 * @category constants
 */
export const unknownClient = "unknown"

const checkPrefix = (name: string, value: number, max: number) => {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new RangeError(`ThrottleMiddleware: ${name} must be an integer from 0 to ${max}, got ${String(value)}`)
  }
  return value
}

/**
 * A function from a request to its client address, as the middleware's
 * default identifier computes it (`192.0.2.1`, `2001:db8:1:2::/64`, or
 * `unknown`). Throws a `RangeError` when a trusted proxy or a prefix is
 * invalid (a configuration error); never on request input.
 *
 * @since 0.1.0
 * @category identifiers
 */
export const clientAddress = (
  options: ClientAddressOptions = {}
): (request: HttpServerRequest.HttpServerRequest) => string => {
  const trusted = (options.trustedProxies ?? []).map((text) => {
    const cidr = address.parseCidr(text)
    if (cidr === undefined) throw new RangeError(`ThrottleMiddleware: invalid trusted proxy ${JSON.stringify(text)}`)
    return cidr
  })
  const header = (options.forwardedHeader ?? "x-forwarded-for").toLowerCase()
  const settings: address.Settings = { trusted, maxHops: 64, rfc7239: header === "forwarded" }
  const v6 = checkPrefix("ipv6Prefix", options.ipv6Prefix ?? 64, 128)
  const v4 = checkPrefix("ipv4Prefix", options.ipv4Prefix ?? 32, 32)
  return (request) => {
    const peer = request.remoteAddress
    const found = address.client(settings, peer._tag === "Some" ? peer.value : undefined, request.headers[header])
    return found === undefined ? unknownClient : address.format(found, found.v4 ? v4 : v6)
  }
}

// -----------------------------------------------------------------------------
// header fields
// -----------------------------------------------------------------------------

// A lone surrogate has no UTF-8 form: it is written as U+FFFD.
const percentEncode = (char: string) => {
  try {
    return encodeURIComponent(char)
  } catch {
    return "%EF%BF%BD"
  }
}

/**
 * A structured-field string (RFC 8941 §3.3.3): printable ASCII, with `"`
 * and `\` escaped. Other characters of a uid are percent-encoded, so that a
 * header value is always valid.
 *
 * @since 0.1.0
 * @category headers
 */
export const sfString = (value: string): string => {
  let out = "\""
  for (const char of value) {
    const code = char.codePointAt(0)!
    if (char === "\"" || char === "\\") out += `\\${char}`
    else if (code >= 0x20 && code <= 0x7e) out += char
    else out += percentEncode(char)
  }
  return `${out}"`
}

/** Milliseconds as delta seconds, rounded up. */
const seconds = (ms: number) => Math.max(0, Math.ceil(ms / 1000))

// A window that is not whole seconds is advertised rounded up: the field never
// promises more than the policy admits. With a burst (GCRA, token bucket) the
// quota is the burst and its window the time the burst takes to refill, so
// that `r` (up to the burst) never exceeds `q`: 10/min with a burst of 30 is
// q=30;w=180.
const policyItem = (name: string, rate: Rate.Limited, capacity: number) =>
  capacity === rate.limit
    ? `${name};q=${rate.limit};w=${seconds(rate.windowMs)}`
    : `${name};q=${capacity};w=${seconds((capacity * rate.windowMs) / rate.limit)}`

const limited = (verdict: Verdict) => verdict.rate._tag === "Limited"

/**
 * The `RateLimit-Policy` field of throttles (unlimited ones are left out).
 *
 * @since 0.1.0
 * @category headers
 */
export const policyField = (throttles: ReadonlyArray<Throttle.Throttle>): string =>
  throttles.flatMap((
    t
  ) => (t.rate._tag === "Limited" ? [policyItem(sfString(t.uid), t.rate, t.policy?.burst ?? t.rate.limit)] : []))
    .join(", ")

/**
 * The `RateLimit` field of verdicts: remaining units and delta seconds until
 * the counter is back to full (unlimited throttles are left out).
 *
 * @since 0.1.0
 * @category headers
 */
export const rateLimitField = (verdicts: ReadonlyArray<Verdict>): string => rateLimitOf(verdicts, sfString)

const rateLimitOf = (verdicts: ReadonlyArray<Verdict>, nameOf: (uid: string) => string): string => {
  let out = ""
  for (const v of verdicts) {
    if (!limited(v)) continue
    out += `${out === "" ? "" : ", "}${nameOf(v.uid)};r=${v.remaining};t=${seconds(v.resetAfterMs)}`
  }
  return out
}

// The single throttle the legacy headers describe: the one closest to refusing.
const tightest = (verdicts: ReadonlyArray<Verdict>, refused: boolean): Verdict | undefined => {
  let best: Verdict | undefined
  for (const v of verdicts) {
    if (!limited(v) || (refused && v.allowed)) continue
    if (
      best === undefined ||
      (refused ? waitOf(v) > waitOf(best) : v.remaining < best.remaining)
    ) best = v
  }
  return best
}

const waitOf = (v: Verdict) => (v.retryAfterMs === "never" ? Number.POSITIVE_INFINITY : v.retryAfterMs)

interface Fields {
  readonly policy: string
  readonly legacy: boolean
  /** A throttle's uid as a structured-field string. */
  readonly nameOf: (uid: string) => string
}

const fieldsOf = (throttles: ReadonlyArray<Throttle.Throttle>, legacy: boolean): Fields => {
  const names = new Map<string, string>()
  for (const t of throttles) names.set(t.uid, sfString(t.uid))
  return {
    policy: policyField(throttles),
    legacy,
    nameOf: (uid) => names.get(uid) ?? sfString(uid)
  }
}

const headersOf = (fields: Fields, verdicts: ReadonlyArray<Verdict>, refused: boolean): Record<string, string> => {
  const headers: Record<string, string> = {}
  if (fields.policy !== "") {
    headers["ratelimit-policy"] = fields.policy
    headers["ratelimit"] = rateLimitOf(verdicts, fields.nameOf)
  }
  if (fields.legacy) {
    const v = tightest(verdicts, refused)
    if (v !== undefined) {
      headers["x-ratelimit-limit"] = String((v.rate as Rate.Limited).limit)
      headers["x-ratelimit-remaining"] = String(v.remaining)
      headers["x-ratelimit-reset"] = String(seconds(v.resetAfterMs))
    }
  }
  return headers
}

// -----------------------------------------------------------------------------
// responses
// -----------------------------------------------------------------------------

/**
 * The 429 answer to a rejection: `Retry-After` (unless the request can never
 * be admitted), the rate-limit fields, and a `quota-exceeded` problem whose
 * `violated-policies` names the throttles that refused.
 *
 * @since 0.1.0
 * @category responses
 */
export const tooManyRequests = (
  error: RateLimitExceeded,
  options: { readonly legacyHeaders?: boolean | undefined } = {}
): HttpServerResponse.HttpServerResponse =>
  rejection(
    {
      // A verdict's limit is its throttle's capacity (the burst, if it has one).
      policy: error.verdicts.flatMap((v) =>
        v.rate._tag === "Limited" ? [policyItem(sfString(v.uid), v.rate, v.limit)] : []
      ).join(", "),
      legacy: options.legacyHeaders === true,
      nameOf: sfString
    },
    error
  )

// In a refused batch the throttles that would have allowed the request report
// what stands now (nothing was counted), so every verdict goes to the headers as is.
const rejection = (fields: Fields, error: RateLimitExceeded): HttpServerResponse.HttpServerResponse => {
  const wait = error.retryAfterMs
  const violated = error.violated.map((v) => v.uid)
  const detail = wait === "never"
    ? `The request exceeds the policy ${violated.join(", ")}: it costs more than the policy can ever admit`
    : `Rate limit exceeded (${violated.join(", ")}); retry in ${Math.max(1, seconds(wait))} s`
  const headers = headersOf(fields, error.verdicts, true)
  if (wait !== "never") headers["retry-after"] = String(Math.max(1, seconds(wait)))
  return HttpServerResponse.setHeaders(
    problem(429, quotaExceededType, "Too many requests", { detail, "violated-policies": violated }),
    headers
  )
}

/**
 * The 503 answer to a backend failure: the limits could not be checked, so
 * the request is refused (fail-closed), but it is not a rate-limit rejection.
 *
 * @since 0.1.0
 * @category responses
 */
export const throttleUnavailable = (
  error: ThrottleBackendError,
  options: { readonly debug?: boolean | undefined } = {}
): HttpServerResponse.HttpServerResponse =>
  problem(
    503,
    "throttle-unavailable",
    "Service unavailable",
    options.debug === true ? { detail: error.message } : undefined
  )

// -----------------------------------------------------------------------------
// the middleware
// -----------------------------------------------------------------------------

// One warning per backend every 10 s while it is down, not one per request.
const sampledWarning = globalValue(
  Symbol.for("effect-tenancy/ThrottleMiddleware/failClosedWarning"),
  () => makeSampledWarning()
)

const isEffect = <A, R>(u: A | Effect.Effect<A, never, R>): u is Effect.Effect<A, never, R> => Effect.isEffect(u)

/**
 * Throttles an app or a route: checks `throttles` (all-or-nothing) before it
 * runs, answers 429 or 503 in its place when they refuse or fail, and adds
 * `RateLimit-Policy` / `RateLimit` to its responses (also when the app fails
 * and its error is turned into a response further out).
 *
 * The result requires `ThrottleBackend`: provide it once for the app, or per
 * request (a tier's backend) from the tenancy middleware's `layer`.
 *
 * Throws a `RangeError` on an invalid configuration (trusted proxy, prefix,
 * no throttle); never on request input.
 *
 * @since 0.1.0
 * @category middleware
 */
export const make = <R = never>(
  throttles: Throttle.Throttle | ReadonlyArray<Throttle.Throttle>,
  options: Options<R> = {}
) => {
  const list: ReadonlyArray<Throttle.Throttle> = Array.isArray(throttles)
    ? throttles
    : [throttles as Throttle.Throttle]
  if (list.length === 0) throw new RangeError("ThrottleMiddleware: at least one throttle is required")
  const fields = fieldsOf(list, options.legacyHeaders === true)
  const clientOf = clientAddress(options)
  const identifierOf = options.identifier
  const costOf = options.cost
  const debug = options.debug === true

  const onFailure = (error: RateLimitExceeded | ThrottleBackendError) =>
    error._tag === "RateLimitExceeded"
      ? Effect.succeed(rejection(fields, error))
      : Effect.as(
        sampledWarning(error.backend, "Throttle backend failed; refusing requests with 503 (fail-closed)", error),
        throttleUnavailable(error, { debug })
      )

  return <E, RA>(
    app: HttpApp.Default<E, RA>
  ): HttpApp.Default<E, RA | R | ThrottleBackend | HttpServerRequest.HttpServerRequest> => {
    const serve = (verdicts: ReadonlyArray<Verdict>) => {
      const headers = headersOf(fields, verdicts, false)
      return Effect.matchCauseEffect(app, {
        onSuccess: (response) => Effect.succeed(HttpServerResponse.setHeaders(response, headers)),
        // The app's failure becomes a response further out: add the fields there.
        onFailure: (cause) =>
          Effect.zipRight(
            HttpApp.appendPreResponseHandler((_, response) =>
              Effect.succeed(HttpServerResponse.setHeaders(response, headers))
            ),
            Effect.failCause(cause)
          )
      })
    }
    const check = (identifier: string, cost: number | undefined) =>
      Effect.matchEffect(Throttle.checkAll(list, { identifier, cost }), {
        onFailure,
        onSuccess: serve
      })

    return Effect.contextWithEffect((context: Context.Context<HttpServerRequest.HttpServerRequest>) => {
      const request = Context.unsafeGet(context, HttpServerRequest.HttpServerRequest)
      const client = clientOf(request)
      const identifier = identifierOf === undefined ? client : identifierOf(request, client)
      const cost = costOf === undefined ? undefined : costOf(request)
      if (isEffect(identifier)) {
        return Effect.flatMap(
          identifier,
          (id) => isEffect(cost) ? Effect.flatMap(cost, (c) => check(id, c)) : check(id, cost)
        )
      }
      return isEffect(cost) ? Effect.flatMap(cost, (c) => check(identifier, c)) : check(identifier, cost)
    })
  }
}

/**
 * The middleware for `HttpLayerRouter`: the routes it is provided to are
 * throttled. Its layer requires a `ThrottleBackend` (the app-level one); a
 * backend provided per request further out (the tenancy middleware's
 * `layer`) takes precedence.
 *
 * @since 0.1.0
 * @category middleware
 */
export const layerRouter = (
  throttles: Throttle.Throttle | ReadonlyArray<Throttle.Throttle>,
  options: Options = {}
) => {
  const middleware = make(throttles, options)
  return HttpLayerRouter.middleware()(
    Effect.map(
      Effect.context<ThrottleBackend>(),
      (context) =>
      <E, R>(
        effect: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
      ): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest> =>
        Effect.mapInputContext(
          middleware(effect),
          (request: Context.Context<R | HttpServerRequest.HttpServerRequest>) => Context.merge(context, request)
        )
    )
  )
}
