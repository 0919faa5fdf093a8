import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck as fc, Layer, type Scope, TestClock } from "effect"
import * as Rate from "effect-tenancy/Rate"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as ThrottleMiddleware from "effect-tenancy/ThrottleMiddleware"
import { createServer } from "node:http"
import { isIP } from "node:net"

let serial = 0
const uid = (name: string) => `${name}-${++serial}-${Math.random().toString(36).slice(2, 6)}`

const ok = Effect.succeed(HttpServerResponse.text("ok"))

// `HttpApp.toWebHandler` requests have no peer address; the tests give them one
// from a header, as a socket would.
const withPeer = <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<E, R | HttpServerRequest.HttpServerRequest> =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const peer = request.headers["x-test-peer"]
    return peer === undefined
      ? app
      : Effect.provideService(app, HttpServerRequest.HttpServerRequest, request.modify({ remoteAddress: peer }))
  })

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly body: any
}

const serve = <E, R>(app: HttpApp.Default<E, R>) =>
  Effect.map(Effect.runtime<Exclude<R, HttpServerRequest.HttpServerRequest | Scope.Scope>>(), (runtime) => {
    const handler = HttpApp.toWebHandlerRuntime(runtime)(app as HttpApp.Default<E, any>)
    return (
      options: {
        readonly peer?: string
        readonly headers?: Record<string, string>
        readonly method?: string
      } = {}
    ) =>
      Effect.promise(async (): Promise<Reply> => {
        const headers: Record<string, string> = { ...options.headers }
        if (options.peer !== undefined) headers["x-test-peer"] = options.peer
        const response = await handler(
          new Request("http://localhost/", { headers, method: options.method ?? "GET" })
        )
        const text = await response.text()
        let body: any = text
        try {
          body = JSON.parse(text)
        } catch {
          // a text body
        }
        return { status: response.status, headers: response.headers, body }
      })
  })

const memory = ThrottleBackend.layerMemory()

const assertRateLimited = (reply: Reply, violated: ReadonlyArray<string>) => {
  assert.strictEqual(reply.status, 429, JSON.stringify(reply.body))
  assert.strictEqual(reply.headers.get("content-type"), "application/problem+json")
  assert.strictEqual(reply.body.type, "https://iana.org/assignments/http-problem-types#quota-exceeded")
  assert.strictEqual(reply.body.status, 429)
  assert.deepStrictEqual(reply.body["violated-policies"], violated)
}

describe("ThrottleMiddleware", () => {
  describe("header fields", () => {
    it.scoped("GCRA: exact RateLimit-Policy, RateLimit and Retry-After values", () =>
      Effect.gen(function*() {
        const name = uid("gcra")
        const throttle = yield* Throttle.make({ uid: name, rate: "5/min" })
        const request = yield* serve(ThrottleMiddleware.make(throttle)(ok))

        const first = yield* request()
        assert.strictEqual(first.status, 200)
        assert.strictEqual(first.body, "ok")
        assert.strictEqual(first.headers.get("ratelimit-policy"), `"${name}";q=5;w=60`)
        // One unit of GCRA stands for 12 s: after one request the counter is empty again in 12 s.
        assert.strictEqual(first.headers.get("ratelimit"), `"${name}";r=4;t=12`)
        assert.isNull(first.headers.get("retry-after"))
        assert.isNull(first.headers.get("x-ratelimit-limit"), "legacy headers are off by default")

        for (let i = 0; i < 4; i++) yield* request()
        const refused = yield* request()
        assertRateLimited(refused, [name])
        assert.strictEqual(refused.headers.get("retry-after"), "12")
        assert.strictEqual(refused.headers.get("ratelimit"), `"${name}";r=0;t=60`)
        assert.strictEqual(refused.headers.get("ratelimit-policy"), `"${name}";q=5;w=60`)

        yield* TestClock.adjust("11500 millis")
        const almost = yield* request()
        assert.strictEqual(almost.status, 429)
        assert.strictEqual(almost.headers.get("retry-after"), "1", "0.5 s rounds up to 1")
        assert.strictEqual(almost.headers.get("ratelimit"), `"${name}";r=0;t=49`, "48.5 s rounds up to 49")

        yield* TestClock.adjust("500 millis")
        const again = yield* request()
        assert.strictEqual(again.status, 200, "allowed exactly when Retry-After said")
        assert.strictEqual(again.headers.get("ratelimit"), `"${name}";r=0;t=60`)
      }).pipe(Effect.provide(memory)))

    it.scoped("fixed window: aligned windows, exact values, legacy X-RateLimit-* on request", () =>
      Effect.gen(function*() {
        const name = uid("fixed")
        const throttle = yield* Throttle.make({ uid: name, rate: "3/10s", algorithm: "fixed-window" })
        const request = yield* serve(ThrottleMiddleware.make([throttle], { legacyHeaders: true })(ok))

        const first = yield* request()
        assert.strictEqual(first.headers.get("ratelimit-policy"), `"${name}";q=3;w=10`)
        assert.strictEqual(first.headers.get("ratelimit"), `"${name}";r=2;t=10`)
        assert.strictEqual(first.headers.get("x-ratelimit-limit"), "3")
        assert.strictEqual(first.headers.get("x-ratelimit-remaining"), "2")
        assert.strictEqual(first.headers.get("x-ratelimit-reset"), "10")

        yield* TestClock.adjust("4 seconds")
        assert.strictEqual((yield* request()).headers.get("ratelimit"), `"${name}";r=1;t=6`)
        assert.strictEqual((yield* request()).headers.get("ratelimit"), `"${name}";r=0;t=6`)
        const refused = yield* request()
        assertRateLimited(refused, [name])
        // A fixed window admits this request again when the window ends.
        assert.strictEqual(refused.headers.get("retry-after"), "6")
        assert.strictEqual(refused.headers.get("ratelimit"), `"${name}";r=0;t=6`)
        assert.strictEqual(refused.headers.get("x-ratelimit-remaining"), "0")
        assert.strictEqual(refused.headers.get("x-ratelimit-reset"), "6")

        yield* TestClock.adjust("5200 millis")
        const late = yield* request()
        assert.strictEqual(late.headers.get("retry-after"), "1", "0.8 s rounds up to 1")
        assert.strictEqual(late.headers.get("ratelimit"), `"${name}";r=0;t=1`)

        yield* TestClock.adjust("800 millis")
        const next = yield* request()
        assert.strictEqual(next.status, 200)
        assert.strictEqual(next.headers.get("ratelimit"), `"${name}";r=2;t=10`)
      }).pipe(Effect.provide(memory)))

    it.scoped("Retry-After rounds sub-second waits up; a sub-second window is advertised rounded up", () =>
      Effect.gen(function*() {
        const name = uid("fast")
        const throttle = yield* Throttle.make({ uid: name, rate: "10/s" })
        const request = yield* serve(ThrottleMiddleware.make(throttle)(ok))
        for (let i = 0; i < 10; i++) assert.strictEqual((yield* request()).status, 200)
        const refused = yield* request()
        assert.strictEqual(refused.status, 429)
        assert.strictEqual(refused.headers.get("retry-after"), "1", "a 100 ms wait is 1 second, never 0")
        assert.strictEqual(refused.headers.get("ratelimit"), `"${name}";r=0;t=1`)

        const half = uid("half")
        const halfSecond = yield* Throttle.make({ uid: half, rate: "200/500ms" })
        const reply = yield* (yield* serve(ThrottleMiddleware.make(halfSecond)(ok)))()
        assert.strictEqual(reply.headers.get("ratelimit-policy"), `"${half}";q=200;w=1`)
      }).pipe(Effect.provide(memory)))

    it.scoped("a cost the policy can never admit: 429 without Retry-After, a detail saying so, nothing counted", () =>
      Effect.gen(function*() {
        const name = uid("never")
        const throttle = yield* Throttle.make({ uid: name, rate: "5/min" })
        const app = ThrottleMiddleware.make(throttle, {
          cost: (request) => Number(request.headers["x-cost"] ?? "1")
        })(ok)
        const request = yield* serve(app)
        const refused = yield* request({ headers: { "x-cost": "6" } })
        assertRateLimited(refused, [name])
        assert.isNull(refused.headers.get("retry-after"))
        assert.include(refused.body.detail, "exceeds the policy")
        assert.include(refused.body.detail, name)
        assert.strictEqual(refused.headers.get("ratelimit"), `"${name}";r=5;t=0`)
        const weighed = yield* request({ headers: { "x-cost": "3" } })
        assert.strictEqual(weighed.status, 200)
        assert.strictEqual(weighed.headers.get("ratelimit"), `"${name}";r=2;t=36`)
      }).pipe(Effect.provide(memory)))

    it.scoped("uids are quoted as structured-field strings", () =>
      Effect.gen(function*() {
        const name = `${uid("odd")} "quoted" \\ é`
        const throttle = yield* Throttle.make({ uid: name, rate: "5/min" })
        const reply = yield* (yield* serve(ThrottleMiddleware.make(throttle)(ok)))()
        const escaped = name.replace(/[\\"]/g, (c) => `\\${c}`).replace("é", "%C3%A9")
        assert.strictEqual(reply.headers.get("ratelimit-policy"), `"${escaped}";q=5;w=60`)
        assert.strictEqual(ThrottleMiddleware.sfString("a\"b\\c\n"), "\"a\\\"b\\\\c%0A\"")
      }).pipe(Effect.provide(memory)))

    it.scoped("unlimited throttles are left out of the fields", () =>
      Effect.gen(function*() {
        const limited = yield* Throttle.make({ uid: uid("lim"), rate: "5/min" })
        const structured = yield* Throttle.make({ uid: uid("one"), rate: { limit: 1, window: "1 minute" } })
        const free = yield* Throttle.make({ uid: uid("free"), rate: Rate.unlimited })
        const reply = yield* (yield* serve(ThrottleMiddleware.make([limited, free, structured])(ok)))()
        assert.strictEqual(
          reply.headers.get("ratelimit-policy"),
          `"${limited.uid}";q=5;w=60, "${structured.uid}";q=1;w=60`
        )
        assert.strictEqual(reply.headers.get("ratelimit"), `"${limited.uid}";r=4;t=12, "${structured.uid}";r=0;t=60`)
      }).pipe(Effect.provide(memory)))
  })

  describe("several throttles", () => {
    it.scoped("minute + day over HTTP: all-or-nothing, each refusal names its policy", () =>
      Effect.gen(function*() {
        const minute = yield* Throttle.make({ uid: uid("minute"), rate: "3/min", algorithm: "fixed-window" })
        const day = yield* Throttle.make({ uid: uid("day"), rate: "5/day", algorithm: "fixed-window" })
        const request = yield* serve(ThrottleMiddleware.make([minute, day])(ok))
        const m = `"${minute.uid}"`
        const d = `"${day.uid}"`

        for (let i = 0; i < 3; i++) assert.strictEqual((yield* request()).status, 200)
        const byMinute = yield* request()
        assertRateLimited(byMinute, [minute.uid])
        assert.strictEqual(byMinute.headers.get("retry-after"), "60")
        assert.strictEqual(byMinute.headers.get("ratelimit-policy"), `${m};q=3;w=60, ${d};q=5;w=86400`)
        // The day counter did not count the refused request.
        assert.strictEqual(byMinute.headers.get("ratelimit"), `${m};r=0;t=60, ${d};r=2;t=86400`)

        yield* TestClock.adjust("1 minute")
        for (let i = 0; i < 2; i++) assert.strictEqual((yield* request()).status, 200)
        const byDay = yield* request()
        assertRateLimited(byDay, [day.uid])
        assert.strictEqual(byDay.headers.get("retry-after"), String(86400 - 60))
        // ... and the minute counter did not count this one.
        assert.strictEqual(byDay.headers.get("ratelimit"), `${m};r=1;t=60, ${d};r=0;t=${86400 - 60}`)
        const [minuteNow, dayNow] = yield* Throttle.peekAll([minute, day], { identifier: "unknown", cost: 0 })
        assert.strictEqual(minuteNow.remaining, 1)
        assert.strictEqual(dayNow.remaining, 0)
      }).pipe(Effect.provide(memory)))

    it.scoped("in a refused batch, the throttles that allowed report their figures without the request", () =>
      Effect.gen(function*() {
        const burst = yield* Throttle.make({ uid: uid("burst"), rate: "10/min" })
        const daily = yield* Throttle.make({ uid: uid("daily"), rate: "1/day", algorithm: "fixed-window" })
        const request = yield* serve(ThrottleMiddleware.make([burst, daily])(ok))
        const first = yield* request()
        assert.strictEqual(first.headers.get("ratelimit"), `"${burst.uid}";r=9;t=6, "${daily.uid}";r=0;t=86400`)
        const refused = yield* request()
        assertRateLimited(refused, [daily.uid])
        // Not r=8;t=12: the refused request was not counted.
        assert.strictEqual(refused.headers.get("ratelimit"), `"${burst.uid}";r=9;t=6, "${daily.uid}";r=0;t=86400`)

        // The same from a handler that checks throttles itself.
        const inHandler = Throttle.checkAll([burst, daily], { identifier: "unknown" }).pipe(
          Effect.as(HttpServerResponse.text("ok")),
          Effect.catchTag(
            "RateLimitExceeded",
            (error) => Effect.succeed(ThrottleMiddleware.tooManyRequests(error))
          )
        )
        const own = yield* (yield* serve(inHandler))()
        assert.strictEqual(own.status, 429)
        assert.strictEqual(own.headers.get("ratelimit"), `"${burst.uid}";r=9;t=6, "${daily.uid}";r=0;t=86400`)
        assert.strictEqual(own.headers.get("retry-after"), "86400")
      }).pipe(Effect.provide(memory)))

    it.scoped("with a burst, the policy advertises the burst and its refill time, so r never exceeds q", () =>
      Effect.gen(function*() {
        const bursty = yield* Throttle.make({ uid: uid("bursty"), rate: "10/min", burst: 30 })
        const name = `"${bursty.uid}"`
        const request = yield* serve(ThrottleMiddleware.make([bursty])(ok))
        const first = yield* request()
        assert.strictEqual(first.headers.get("ratelimit-policy"), `${name};q=30;w=180`)
        assert.strictEqual(first.headers.get("ratelimit"), `${name};r=29;t=6`)
        for (let i = 0; i < 29; i++) yield* request()
        const refused = yield* request()
        assertRateLimited(refused, [bursty.uid])
        assert.strictEqual(refused.headers.get("ratelimit-policy"), `${name};q=30;w=180`)
        assert.strictEqual(refused.headers.get("ratelimit"), `${name};r=0;t=180`)
        assert.strictEqual(refused.headers.get("retry-after"), "6")
        // The same fields from tooManyRequests, which sees only the verdicts.
        const error = yield* Effect.flip(bursty.check({ identifier: "unknown" }))
        if (error._tag !== "RateLimitExceeded") return assert.fail(error._tag)
        const own = ThrottleMiddleware.tooManyRequests(error)
        assert.strictEqual(own.headers["ratelimit-policy"], `${name};q=30;w=180`)
      }).pipe(Effect.provide(memory)))
  })

  describe("client address", () => {
    const request = (peer: string | undefined, headers: Record<string, string> = {}) => {
      const web = HttpServerRequest.fromWeb(new Request("http://localhost/", { headers }))
      return peer === undefined ? web : web.modify({ remoteAddress: peer })
    }

    it("the peer is the client unless it is a trusted proxy", () => {
      const untrusting = ThrottleMiddleware.clientAddress()
      assert.strictEqual(untrusting(request("203.0.113.5", { "x-forwarded-for": "198.51.100.1" })), "203.0.113.5")
      const client = ThrottleMiddleware.clientAddress({ trustedProxies: ["10.0.0.0/8", "2001:db8:ffff::/48"] })
      // An untrusted peer's X-Forwarded-For is ignored.
      assert.strictEqual(client(request("203.0.113.5", { "x-forwarded-for": "198.51.100.1" })), "203.0.113.5")
      // Through trusted proxies: right to left, skipping trusted hops; what the client wrote on the left is ignored.
      assert.strictEqual(
        client(request("10.0.0.1", { "x-forwarded-for": "6.6.6.6, 198.51.100.1, 10.0.0.2" })),
        "198.51.100.1"
      )
      assert.strictEqual(client(request("2001:db8:ffff::1", { "x-forwarded-for": "198.51.100.7" })), "198.51.100.7")
      // Every hop trusted: the leftmost.
      assert.strictEqual(client(request("10.0.0.1", { "x-forwarded-for": "10.0.0.3, 10.0.0.2" })), "10.0.0.3")
      // A trusted peer without the header is the client.
      assert.strictEqual(client(request("10.0.0.1")), "10.0.0.1")
      // Ports and brackets as proxies write them.
      assert.strictEqual(client(request("10.0.0.1", { "x-forwarded-for": "198.51.100.1:4711" })), "198.51.100.1")
      assert.strictEqual(
        client(request("10.0.0.1", { "x-forwarded-for": "[2001:db8:1:2::5]:443" })),
        "2001:db8:1:2::/64"
      )
      // Another header, for proxies that use one.
      const realIp = ThrottleMiddleware.clientAddress({ trustedProxies: ["10.0.0.0/8"], forwardedHeader: "X-Real-IP" })
      assert.strictEqual(realIp(request("10.0.0.1", { "x-real-ip": "198.51.100.9" })), "198.51.100.9")
    })

    it("RFC 7239 Forwarded: the for parameter of each element, right to left; obfuscated nodes end the walk", () => {
      const client = ThrottleMiddleware.clientAddress({ trustedProxies: ["10.0.0.0/8"], forwardedHeader: "Forwarded" })
      const forwarded = (value: string) => client(request("10.0.0.1", { forwarded: value }))
      assert.strictEqual(forwarded("for=198.51.100.1;proto=https;by=10.0.0.1"), "198.51.100.1")
      // Case-insensitive names, quoted values, ports, IPv6 in brackets (grouped by /64).
      assert.strictEqual(forwarded("For=\"198.51.100.1:4711\""), "198.51.100.1")
      assert.strictEqual(forwarded("for=\"[2001:db8:cafe::17]:4711\""), "2001:db8:cafe::/64")
      // Right to left through trusted hops; what the client wrote on the left is ignored.
      assert.strictEqual(
        forwarded("for=6.6.6.6, for=198.51.100.2;proto=http, for=10.0.0.7;by=10.0.0.1"),
        "198.51.100.2"
      )
      // An element without for, an obfuscated node, or "unknown": the nearest trusted proxy.
      assert.strictEqual(forwarded("proto=https, for=10.0.0.7"), "10.0.0.7")
      assert.strictEqual(forwarded("for=_hidden, for=10.0.0.7"), "10.0.0.7")
      assert.strictEqual(forwarded("for=unknown"), "10.0.0.1")
      assert.strictEqual(forwarded("for=\"garbage"), "10.0.0.1")
      // A comma or semicolon inside a quoted string (text a proxy copied from the client) splits nothing.
      assert.strictEqual(forwarded("for=203.0.113.9;host=\"x, for=1.2.3.4;h=\""), "203.0.113.9")
      assert.strictEqual(forwarded("for=203.0.113.9;host=\"a\\\"b, for=1.2.3.4\""), "203.0.113.9")
      // An untrusted peer's Forwarded is ignored; X-Forwarded-For is not read in this mode.
      assert.strictEqual(client(request("203.0.113.5", { forwarded: "for=198.51.100.1" })), "203.0.113.5")
      assert.strictEqual(client(request("10.0.0.1", { "x-forwarded-for": "198.51.100.1" })), "10.0.0.1")
    })

    it("malformed input never crashes: a bad hop ends the walk at the nearest trusted proxy", () => {
      const client = ThrottleMiddleware.clientAddress({ trustedProxies: ["10.0.0.0/8"] })
      for (
        const garbage of [
          "garbage",
          "",
          ",,,",
          "1.2.3.4.5",
          "256.1.1.1",
          "01.2.3.4",
          "::ffff::1",
          "1:2:3:4:5:6:7:8:9",
          "[::1",
          "[::1]:port",
          "unknown",
          "x".repeat(10_000),
          "\u00e4\u00ff"
        ]
      ) {
        assert.strictEqual(
          client(request("10.0.0.1", { "x-forwarded-for": `${garbage}, 10.0.0.2` })),
          "10.0.0.2",
          JSON.stringify(garbage.slice(0, 20))
        )
      }
      assert.strictEqual(client(request("10.0.0.1", { "x-forwarded-for": "garbage" })), "10.0.0.1")
      // A valid address to the left of garbage is not reached: the garbage came from someone we do not trust.
      assert.strictEqual(
        client(request("10.0.0.1", { "x-forwarded-for": "198.51.100.1, bogus, 10.0.0.2" })),
        "10.0.0.2"
      )
      // No peer address, or one that does not parse: "unknown".
      assert.strictEqual(client(request(undefined, { "x-forwarded-for": "198.51.100.1" })), "unknown")
      assert.strictEqual(client(request("not-an-address")), "unknown")
      // A thousand trusted hops: the walk stops after 64.
      const hops = Array.from({ length: 1000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`).join(", ")
      assert.strictEqual(client(request("10.0.0.1", { "x-forwarded-for": hops })), "10.0.3.168")
    })

    it("IPv6 is grouped by /64 (configurable); IPv4-mapped IPv6 is IPv4", () => {
      const client = ThrottleMiddleware.clientAddress()
      assert.strictEqual(client(request("2001:db8:1:2::1")), "2001:db8:1:2::/64")
      assert.strictEqual(client(request("2001:DB8:1:2:ffff:ffff:ffff:ffff")), "2001:db8:1:2::/64")
      assert.strictEqual(client(request("2001:db8:1:3::1")), "2001:db8:1:3::/64")
      assert.strictEqual(client(request("fe80::1%eth0")), "fe80::/64")
      assert.strictEqual(client(request("::ffff:192.0.2.1")), "192.0.2.1")
      assert.strictEqual(client(request("::ffff:c000:201")), "192.0.2.1")
      assert.strictEqual(client(request("::1")), "::/64")
      const wide = ThrottleMiddleware.clientAddress({ ipv6Prefix: 56, ipv4Prefix: 24 })
      assert.strictEqual(wide(request("2001:db8:1:2::1")), "2001:db8:1::/56")
      assert.strictEqual(wide(request("2001:db8:1:3::1")), "2001:db8:1::/56")
      assert.strictEqual(wide(request("2001:db8:1:102::1")), "2001:db8:1:100::/56")
      assert.strictEqual(wide(request("192.0.2.77")), "192.0.2.0/24")
      const exact = ThrottleMiddleware.clientAddress({ ipv6Prefix: 128 })
      assert.strictEqual(exact(request("2001:db8:0:0:1:0:0:1")), "2001:db8::1:0:0:1")
      // A mapped trusted range is the IPv4 range.
      const mapped = ThrottleMiddleware.clientAddress({ trustedProxies: ["::ffff:10.0.0.0/104"] })
      assert.strictEqual(mapped(request("10.1.2.3", { "x-forwarded-for": "198.51.100.1" })), "198.51.100.1")
    })

    it("every valid address parses, and its /128 identifier is the canonical RFC 5952 form", () => {
      const exact = ThrottleMiddleware.clientAddress({ ipv6Prefix: 128 })
      fc.assert(
        fc.property(fc.oneof(fc.ipV6(), fc.ipV4()), (text) => {
          const identifier = exact(request(text))
          const canonical = new URL(`http://${text.includes(":") ? `[${text}]` : text}/`).hostname.replace(
            /^\[|\]$/g,
            ""
          )
          const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical)
          const expected = mapped === null
            ? canonical
            : [mapped[1], mapped[2]].flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 255]).join(".")
          assert.strictEqual(identifier, expected, text)
        }),
        { numRuns: 2000 }
      )
    })

    it("a string Node does not take for an address is never one here either", () => {
      const client = ThrottleMiddleware.clientAddress()
      const alphabet = fc.constantFrom(..."0123456789abcdefABCDEF:.%[]g ".split(""))
      fc.assert(
        fc.property(fc.stringOf(alphabet, { maxLength: 45 }), (text) => {
          const identifier = client(request(text))
          const bare = text.trim()
          const valid = isIP(bare) !== 0 || /^\[[^\]]+\](?::[0-9]{1,5})?$/.test(bare) ||
            /^[0-9.]+:[0-9]{1,5}$/.test(bare)
          if (!valid) assert.strictEqual(identifier, "unknown", text)
        }),
        { numRuns: 20000 }
      )
      // Found by this property: an empty zone, a zone of characters Node refuses.
      assert.strictEqual(client(request("::%")), "unknown")
      assert.strictEqual(client(request("::%]")), "unknown")
      assert.strictEqual(client(request("fe80::1%")), "unknown")
      assert.notStrictEqual(client(request("fe80::1%eth0")), "unknown")
    })

    it("an invalid configuration is refused when the middleware is made", () => {
      assert.throws(
        () => ThrottleMiddleware.clientAddress({ trustedProxies: ["10.0.0.0/33"] }),
        /invalid trusted proxy/
      )
      assert.throws(() => ThrottleMiddleware.clientAddress({ trustedProxies: ["proxy.internal"] }), /invalid trusted/)
      assert.throws(() => ThrottleMiddleware.clientAddress({ ipv6Prefix: 129 }), /ipv6Prefix/)
      assert.throws(() => ThrottleMiddleware.clientAddress({ ipv4Prefix: -1 }), /ipv4Prefix/)
      assert.throws(() => ThrottleMiddleware.make([]), /at least one throttle/)
    })

    it.scoped("over HTTP: XFF from an untrusted peer is ignored, through a trusted proxy it names the client", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("xff"), rate: "1/min" })
        const request = yield* serve(
          withPeer(ThrottleMiddleware.make(throttle, { trustedProxies: ["10.0.0.0/8"] })(ok))
        )
        // An untrusted client cannot get a fresh counter by writing X-Forwarded-For.
        assert.strictEqual(
          (yield* request({ peer: "203.0.113.5", headers: { "x-forwarded-for": "1.1.1.1" } })).status,
          200
        )
        assert.strictEqual(
          (yield* request({ peer: "203.0.113.5", headers: { "x-forwarded-for": "2.2.2.2" } })).status,
          429
        )
        // Behind the trusted proxy, two clients have two counters ...
        const viaProxy = (xff: string) => request({ peer: "10.0.0.1", headers: { "x-forwarded-for": xff } })
        assert.strictEqual((yield* viaProxy("198.51.100.1, 10.0.0.2")).status, 200)
        assert.strictEqual((yield* viaProxy("198.51.100.2")).status, 200)
        // ... and a client that prepends a fake address is still itself.
        assert.strictEqual((yield* viaProxy("6.6.6.6, 198.51.100.1")).status, 429)
        // Garbage behind the proxy is counted as the proxy, not as a new client.
        assert.strictEqual((yield* viaProxy("garbage, 10.0.0.9")).status, 200)
        assert.strictEqual((yield* viaProxy("more garbage, 10.0.0.9")).status, 429)
        const remaining = (identifier: string) => Effect.map(throttle.peek({ identifier, cost: 0 }), (v) => v.remaining)
        assert.strictEqual(yield* remaining("203.0.113.5"), 0)
        assert.strictEqual(yield* remaining("1.1.1.1"), 1)
        assert.strictEqual(yield* remaining("198.51.100.1"), 0)
        assert.strictEqual(yield* remaining("10.0.0.9"), 0)
        assert.strictEqual(yield* remaining("10.0.0.1"), 1)
      }).pipe(Effect.provide(memory)))

    it.scoped("over HTTP: two addresses in one /64 share a counter, another /64 does not", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("v6"), rate: "1/min" })
        const request = yield* serve(withPeer(ThrottleMiddleware.make(throttle)(ok)))
        assert.strictEqual((yield* request({ peer: "2001:db8:1:2::1" })).status, 200)
        assert.strictEqual((yield* request({ peer: "2001:db8:1:2:aaaa:bbbb:cccc:dddd" })).status, 429)
        assert.strictEqual((yield* request({ peer: "2001:db8:1:3::1" })).status, 200)
        assert.strictEqual((yield* request({ peer: "192.0.2.1" })).status, 200)
        assert.strictEqual((yield* request({ peer: "::ffff:192.0.2.1" })).status, 429, "mapped IPv4 is the IPv4 client")

        const wider = yield* Throttle.make({ uid: uid("v6-56"), rate: "1/min" })
        const request56 = yield* serve(withPeer(ThrottleMiddleware.make(wider, { ipv6Prefix: 56 })(ok)))
        assert.strictEqual((yield* request56({ peer: "2001:db8:1:2::1" })).status, 200)
        assert.strictEqual((yield* request56({ peer: "2001:db8:1:3::1" })).status, 429, "one /56")
      }).pipe(Effect.provide(memory)))

    it.scoped("custom identifier and cost (plain or effectful)", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("custom"), rate: "10/min", algorithm: "fixed-window" })
        const seen: Array<string> = []
        const app = ThrottleMiddleware.make(throttle, {
          identifier: (request, client) =>
            Effect.sync(() => {
              seen.push(client)
              return request.headers["x-api-key"] ?? `ip:${client}`
            }),
          cost: (request) => (request.method === "POST" ? 5 : 1)
        })(ok)
        const request = yield* serve(withPeer(app))
        const get = yield* request({ peer: "192.0.2.1", headers: { "x-api-key": "key-1" } })
        assert.strictEqual(get.headers.get("ratelimit"), `"${throttle.uid}";r=9;t=60`)
        const post = yield* request({ peer: "192.0.2.2", headers: { "x-api-key": "key-1" }, method: "POST" })
        assert.strictEqual(post.headers.get("ratelimit"), `"${throttle.uid}";r=4;t=60`, "one counter per API key")
        assert.strictEqual((yield* throttle.peek({ identifier: "key-1", cost: 0 })).remaining, 4)
        assert.strictEqual((yield* request({ peer: "192.0.2.3" })).status, 200)
        assert.strictEqual((yield* throttle.peek({ identifier: "ip:192.0.2.3", cost: 0 })).remaining, 9)
        assert.deepStrictEqual(seen, ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
      }).pipe(Effect.provide(memory)))
  })

  describe("failures", () => {
    it.scoped("a backend failure is a 503 problem, never a 429", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("down"), rate: "5/min" })
        const down = ThrottleBackend.ThrottleBackend.of({
          name: "down",
          run: () => Effect.fail(new ThrottleBackend.ThrottleBackendError({ backend: "down", reason: "Unavailable" })),
          health: Effect.die("unused")
        })
        let served = 0
        const app = ThrottleMiddleware.make(throttle)(Effect.sync(() => {
          served++
          return HttpServerResponse.text("ok")
        }))
        const request = yield* serve(Effect.provideService(app, ThrottleBackend.ThrottleBackend, down))
        const reply = yield* request()
        assert.strictEqual(reply.status, 503)
        assert.strictEqual(reply.headers.get("content-type"), "application/problem+json")
        assert.strictEqual(reply.body.type, "urn:effect-tenancy:problem:throttle-unavailable")
        assert.notProperty(reply.body, "detail")
        assert.isNull(reply.headers.get("retry-after"))
        assert.isNull(reply.headers.get("ratelimit"))
        assert.strictEqual(served, 0, "fail-closed: the app did not run")

        const debug = yield* serve(
          Effect.provideService(
            ThrottleMiddleware.make(throttle, { debug: true })(ok),
            ThrottleBackend.ThrottleBackend,
            down
          )
        )
        assert.include((yield* debug()).body.detail, "down is unavailable")

        // A fail-open throttle admits the request instead.
        const open = yield* Throttle.make({ uid: uid("open"), rate: "5/min", onBackendError: "fail-open" })
        const lenient = yield* serve(
          Effect.provideService(ThrottleMiddleware.make(open)(ok), ThrottleBackend.ThrottleBackend, down)
        )
        assert.strictEqual((yield* lenient()).status, 200)
      }))

    it.scoped("the app's own errors pass through, with the fields added to the response made of them", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("err"), rate: "5/min" })
        const failing = ThrottleMiddleware.make(throttle)(
          Effect.fail(new Error("boom")) as Effect.Effect<HttpServerResponse.HttpServerResponse, Error>
        )
        const reply = yield* (yield* serve(failing))()
        assert.strictEqual(reply.status, 500)
        assert.strictEqual(reply.headers.get("ratelimit"), `"${throttle.uid}";r=4;t=12`)
        const handled = Effect.catchAll(
          failing,
          () => Effect.succeed(HttpServerResponse.text("handled", { status: 418 }))
        )
        const caught = yield* (yield* serve(handled))()
        assert.strictEqual(caught.status, 418)
        assert.strictEqual(caught.headers.get("ratelimit"), `"${throttle.uid}";r=3;t=24`)
      }).pipe(Effect.provide(memory)))
  })

  describe("per-tier backends", () => {
    for (const how of ["services", "layer"] as const) {
      it.scoped(`enterprise, premium and free tenants see separate counters in their tiers' backends (${how})`, () =>
        Effect.gen(function*() {
          const registry = yield* TenantRegistry.TenantRegistry
          yield* registry.register({ id: "acme", name: "Acme", tier: "enterprise" })
          yield* registry.register({ id: "globex", name: "Globex", tier: "premium" })
          yield* registry.register({ id: "initech", name: "Initech", tier: "free" })
          const tiers = {
            enterprise: yield* ThrottleBackend.makeMemory({ name: "enterprise" }),
            premium: yield* ThrottleBackend.makeMemory({ name: "premium" }),
            free: yield* ThrottleBackend.makeMemory({ name: "free" })
          }
          const layerOf = (tier: keyof typeof tiers) =>
            Layer.succeed(ThrottleBackend.ThrottleBackend, tiers[tier].backend)
          const throttle = yield* Throttle.make({ uid: uid("tier"), rate: "3/min" })
          const handler = Effect.map(CurrentTenant, (tenant) => HttpServerResponse.text(tenant.id))
          const throttled = ThrottleMiddleware.make(throttle)(handler)
          // `services`: built up front, provided with the tenant in one context change (the fast path);
          // `layer`: built on first use per tier.
          const app = how === "services"
            ? TenancyMiddleware.make(TenantResolver.header(), {
              services: yield* TenantLayer.prebuilt({
                key: (tenant) => tenant.tier,
                layers: { enterprise: layerOf("enterprise"), premium: layerOf("premium"), free: layerOf("free") },
                fallback: "free"
              })
            })(throttled)
            : TenancyMiddleware.make(TenantResolver.header(), {
              layer: yield* TenantLayer.make({
                key: (tenant) => tenant.tier,
                layer: (tier) => layerOf(tier as keyof typeof tiers)
              })
            })(throttled)
          const request = yield* serve(withPeer(app))
          const as = (tenant: string) => request({ peer: "192.0.2.1", headers: { "x-tenant-id": tenant } })

          for (let i = 0; i < 3; i++) assert.strictEqual((yield* as("initech")).status, 200)
          assertRateLimited(yield* as("initech"), [throttle.uid])
          const premium = yield* as("globex")
          assert.strictEqual(premium.status, 200)
          assert.strictEqual(premium.body, "globex")
          assert.strictEqual(premium.headers.get("ratelimit"), `"${throttle.uid}";r=2;t=20`)
          const enterprise = yield* as("acme")
          assert.strictEqual(enterprise.status, 200)
          assert.strictEqual(enterprise.headers.get("ratelimit"), `"${throttle.uid}";r=2;t=20`)

          // Each backend holds its own tier's key, and only that.
          for (const tier of ["enterprise", "premium", "free"] as const) {
            assert.strictEqual((yield* tiers[tier].stats).keys, 1, tier)
          }
          const remaining = (tier: keyof typeof tiers, tenant: string) =>
            throttle.peek({ identifier: "192.0.2.1", cost: 0 }).pipe(
              withTenant(tenant),
              Effect.provideService(ThrottleBackend.ThrottleBackend, tiers[tier].backend),
              Effect.map((v) => v.remaining)
            )
          assert.strictEqual(yield* remaining("free", "initech"), 0)
          assert.strictEqual(yield* remaining("premium", "globex"), 2)
          assert.strictEqual(yield* remaining("enterprise", "acme"), 2)
          // The free tier's exhaustion is nowhere else.
          assert.strictEqual(yield* remaining("premium", "initech"), 3)
          assert.strictEqual(yield* remaining("enterprise", "initech"), 3)
          assert.strictEqual(yield* remaining("free", "globex"), 3)
        }).pipe(Effect.provide(TenantRegistry.layerMemory())))
    }
  })

  describe("routers and sockets", () => {
    it.scoped("HttpLayerRouter: the routes the middleware is provided to are throttled", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("layer"), rate: "2/min" })
        const routes = HttpLayerRouter.add("GET", "/limited", ok).pipe(
          Layer.provide(ThrottleMiddleware.layerRouter(throttle).layer)
        )
        const open = HttpLayerRouter.add("GET", "/open", ok)
        const web = yield* Effect.acquireRelease(
          Effect.sync(() =>
            HttpLayerRouter.toWebHandler(
              Layer.mergeAll(routes, open).pipe(Layer.provide(ThrottleBackend.layerMemory()))
            )
          ),
          (web) => Effect.promise(() => web.dispose())
        )
        const call = (path: string) =>
          Effect.promise(async () => {
            const response = await web.handler(new Request(`http://localhost${path}`))
            await response.text()
            return response
          })
        assert.strictEqual((yield* call("/limited")).headers.get("ratelimit"), `"${throttle.uid}";r=1;t=30`)
        assert.strictEqual((yield* call("/limited")).status, 200)
        const refused = yield* call("/limited")
        assert.strictEqual(refused.status, 429)
        assert.strictEqual(refused.headers.get("retry-after"), "30")
        const free = yield* call("/open")
        assert.strictEqual(free.status, 200)
        assert.isNull(free.headers.get("ratelimit"))
      }))

    it.live("over a real socket: the peer address is the identifier and headers reach the client", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("socket"), rate: "2/min" })
        yield* HttpServer.serveEffect(ThrottleMiddleware.make(throttle, { legacyHeaders: true })(ok))
        const server = yield* HttpServer.HttpServer
        const port = server.address._tag === "TcpAddress" ? server.address.port : 0
        const get = () =>
          Effect.promise(async () => {
            // The peer is not trusted: this header must be ignored.
            const response = await fetch(`http://127.0.0.1:${port}/`, { headers: { "x-forwarded-for": "1.2.3.4" } })
            await response.text()
            return response
          })
        assert.strictEqual((yield* get()).status, 200)
        assert.strictEqual((yield* get()).status, 200)
        const refused = yield* get()
        assert.strictEqual(refused.status, 429)
        assert.strictEqual(refused.headers.get("content-type"), "application/problem+json")
        assert.match(refused.headers.get("retry-after") ?? "", /^[1-9][0-9]*$/)
        assert.match(refused.headers.get("ratelimit") ?? "", new RegExp(`^"${throttle.uid}";r=0;t=[1-9][0-9]*$`))
        assert.strictEqual(refused.headers.get("x-ratelimit-remaining"), "0")
        assert.strictEqual((yield* throttle.peek({ identifier: "127.0.0.1", cost: 0 })).remaining, 0)
        assert.strictEqual((yield* throttle.peek({ identifier: "1.2.3.4", cost: 0 })).remaining, 2)
      }).pipe(
        Effect.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })),
        Effect.provide(memory),
        Effect.scoped
      ))
  })
})
