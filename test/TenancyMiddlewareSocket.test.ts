import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import { HttpServerRequest } from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Random } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import { CurrentTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import { createServer } from "node:http"
import { Agent, request as httpRequest } from "node:http"

const tenants = Array.from({ length: 50 }, (_, i) => `tenant-${String(i).padStart(2, "0")}`)

// The handler reads its tenant before and after a random pause, and from a forked fiber.
const app = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/whoami",
    Effect.gen(function*() {
      const request = yield* HttpServerRequest
      const before = (yield* CurrentTenant).id
      yield* Effect.sleep(`${yield* Random.nextIntBetween(0, 15)} millis`)
      const child = yield* Effect.fork(
        Effect.zipRight(Effect.sleep("1 millis"), Effect.map(CurrentTenant, (t) => t.id))
      )
      const after = (yield* CurrentTenant).id
      return yield* HttpServerResponse.json({
        requestId: request.headers["x-request-id"],
        before,
        after,
        child: yield* Fiber.join(child)
      })
    })
  )
)

const get = (agent: Agent, port: number, tenant: string, requestId: string) =>
  Effect.async<{ status: number; body: any }, Error>((resume) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port,
        path: "/whoami",
        agent,
        headers: { "x-tenant-id": tenant, "x-request-id": requestId }
      },
      (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on(
          "end",
          () =>
            resume(Effect.succeed({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) }))
        )
        res.on("error", (e) => resume(Effect.fail(e)))
      }
    )
    req.on("error", (e) => resume(Effect.fail(e)))
    req.end()
  })

describe("TenancyMiddleware over a real socket", () => {
  it.live(
    "5,000 concurrent requests across 50 tenants: every response names its own tenant",
    () =>
      Effect.gen(function*() {
        const registry = yield* TenantRegistry.TenantRegistry
        yield* Effect.forEach(tenants, (id) => registry.register({ id, name: id }), { discard: true })
        yield* HttpServer.serveEffect(TenancyMiddleware.make(TenantResolver.header())(app))
        const server = yield* HttpServer.HttpServer
        const port = server.address._tag === "TcpAddress" ? server.address.port : 0
        const agent = yield* Effect.acquireRelease(
          Effect.sync(() => new Agent({ keepAlive: true, maxSockets: 1000 })),
          (a) => Effect.sync(() => a.destroy())
        )
        const responses = yield* Effect.forEach(
          Array.from({ length: 5000 }, (_, i) => i),
          (i) => Effect.map(get(agent, port, tenants[(i * 7) % 50], `r-${i}`), (r) => ({ i, ...r })),
          { concurrency: "unbounded" }
        )
        let leaks = 0
        for (const { body, i, status } of responses) {
          const expected = tenants[(i * 7) % 50]
          assert.strictEqual(status, 200)
          if (
            body.requestId !== `r-${i}` || body.before !== expected || body.after !== expected ||
            body.child !== expected
          ) {
            leaks++
          }
        }
        assert.strictEqual(leaks, 0)
        const stats = yield* registry.stats
        assert.strictEqual(stats.totalSwitches, 5000)
        assert.strictEqual(stats.activeSwitches, 0)
      }).pipe(
        Effect.provide(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })),
        Effect.provide(TenantRegistry.layerMemory()),
        Effect.scoped
      ),
    120_000
  )
})
