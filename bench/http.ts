/**
 * Requests per second of one route, with and without the tenancy middleware
 * (header strategy, in-memory registry), side by side in one run.
 *
 * Both servers run in this process on loopback; autocannon, in a worker
 * thread of this process, keeps `connections` keep-alive connections busy for
 * `seconds` per round.
 * Rounds alternate between the two servers; medians are reported, and the
 * ratio is the median of per-round ratios. Prints a table, then a last line
 * of JSON.
 *
 * Run: npx tsx bench/http.ts
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Context, Effect, Layer } from "effect"
import * as TenancyMiddleware from "effect-tenancy/TenancyMiddleware"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as TenantResolver from "effect-tenancy/TenantResolver"
import { createServer } from "node:http"
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"

const seconds = 2
const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
const connections = 32

const route = HttpRouter.empty.pipe(
  HttpRouter.get("/ping", Effect.succeed(HttpServerResponse.text("pong")))
)

const serve = (app: HttpApp.Default<unknown, TenantRegistry.TenantRegistry>) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" }))
    const server = Context.get(context, HttpServer.HttpServer)
    yield* HttpServer.serveEffect(app).pipe(Effect.provide(context))
    return server.address._tag === "TcpAddress" ? server.address.port : 0
  })

// autocannon runs in a worker thread: in this process, but on the other core,
// so the load generator does not compete with the servers for the event loop.
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const autocannon = require(workerData.autocannon)
autocannon(workerData.options).then((result) => parentPort.postMessage({
  rps: result["2xx"] / result.duration, failed: result.errors + result.non2xx
}))
`
const autocannonPath = createRequire(import.meta.url).resolve("autocannon")

const load = (port: number) =>
  Effect.async<{ readonly rps: number; readonly failed: number }, Error>((resume) => {
    const worker = new Worker(workerSource, {
      eval: true,
      workerData: {
        autocannon: autocannonPath,
        options: {
          url: `http://127.0.0.1:${port}/ping`,
          connections,
          duration: seconds,
          headers: { "x-tenant-id": "acme" }
        }
      }
    })
    worker.once("message", (result) => {
      resume(Effect.succeed(result))
      void worker.terminate()
    })
    worker.once("error", (error) => resume(Effect.fail(error)))
  })

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const program = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme", tier: "enterprise" })
  const barePort = yield* serve(route)
  const tenancyPort = yield* serve(TenancyMiddleware.make(TenantResolver.header())(route))
  yield* load(barePort)
  yield* load(tenancyPort)
  const bare: Array<number> = []
  const tenancy: Array<number> = []
  let failures = 0
  for (let r = 0; r < rounds; r++) {
    const b = yield* load(barePort)
    const t = yield* load(tenancyPort)
    bare.push(b.rps)
    tenancy.push(t.rps)
    failures += b.failed + t.failed
  }
  const ratio = median(tenancy.map((t, i) => t / bare[i]))
  const stats = yield* registry.stats
  console.log(`route GET /ping, ${connections} keep-alive connections, ${rounds} rounds of ${seconds}s each`)
  console.log(`bare                     ${median(bare).toFixed(0).padStart(8)} req/s`)
  console.log(`with tenancy middleware  ${median(tenancy).toFixed(0).padStart(8)} req/s`)
  console.log(
    `ratio = ${ratio.toFixed(3)} (target >= 0.85); failed requests: ${failures}; switches: ${stats.totalSwitches}`
  )
  console.log(JSON.stringify({
    bench: "http",
    bareRps: Math.round(median(bare)),
    tenancyRps: Math.round(median(tenancy)),
    ratio: Number(ratio.toFixed(3)),
    failed: failures,
    connections,
    seconds,
    rounds
  }))
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(TenantRegistry.layerMemory()))).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
