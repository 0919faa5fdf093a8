import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Cause, Config, ConfigError, Context, Deferred, Duration, Effect, Exit, Layer, Option, Scope } from "effect"
import * as RedisClient from "effect-tenancy/RedisClient"
import { algorithmNames, type Policy, ThrottleBackend, ThrottleBackendError } from "effect-tenancy/ThrottleBackend"
import * as ThrottleBackendRedis from "effect-tenancy/ThrottleBackend/Redis"
import { type Cluster, Redis } from "ioredis"
import * as net from "node:net"
import { throttleScriptSha } from "../src/internal/throttleScripts.js"
import { suite } from "./suites/ThrottleBackendSuite.js"
import { clusterClient, redisCluster, type RedisClusterNodes } from "./utils/redisCluster.js"
import { closedPort, redisClient, redisUrl, tcpProxy, withPort } from "./utils/services.js"

// Every key this file writes starts with `fileNamespace`.
const fileNamespace = `test-throttle-${Math.random().toString(36).slice(2, 10)}`
let namespaces = 0
const freshNamespace = () => `${fileNamespace}-${++namespaces}`
let tags = 0
const freshKey = (name: string) => `{t:r${++tags}}:${name}`

const RedisLive = Layer.unwrapScoped(Effect.map(redisClient(), (client) => RedisClient.layer(client)))

// `RedisClient` is typed for a single-server client; the backend takes a Cluster too.
const clusterRedisClient = (cluster: Cluster) => RedisClient.make(cluster)

const redisLayer = (options: ThrottleBackendRedis.Options) =>
  ThrottleBackendRedis.layer({ namespace: freshNamespace(), persistent: false, ...options }).pipe(
    Layer.provide(RedisLive)
  )

/** The namespace's keys, through a client of its own. */
const keysOf = (namespace: string) =>
  Effect.gen(function*() {
    const client = yield* redisClient()
    const keys: Array<string> = []
    let cursor = "0"
    do {
      const [next, found] = yield* Effect.promise(() => client.scan(cursor, "MATCH", `${namespace}:*`, "COUNT", 1000))
      cursor = next
      keys.push(...found)
    } while (cursor !== "0")
    return keys.sort()
  }).pipe(Effect.scoped)

const consume = (key: string, policy: Policy, cost = 1) =>
  Effect.flatMap(ThrottleBackend, (backend) => backend.run([{ key, policy, cost }], "consume")).pipe(
    Effect.map((decisions) => decisions[0])
  )

const expectBackendError = <A>(exit: Exit.Exit<A, ThrottleBackendError>) => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const failure = Cause.failureOption((exit as Exit.Failure<A, ThrottleBackendError>).cause)
  assert.isTrue(Option.isSome(failure), `expected a typed failure, got ${Cause.pretty((exit as any).cause)}`)
  const error = Option.getOrThrow(failure)
  assert.instanceOf(error, ThrottleBackendError)
  return error
}

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    const exit = yield* Effect.exit(effect)
    return { exit, ms: performance.now() - start }
  })

suite(
  "redis (client clock)",
  redisLayer({
    clock: "client",
    // The TestClock does not follow real time: keep keys long enough in real time.
    expiryMargin: "10 minutes",
    timeout: "5 seconds"
  }),
  { runs: 150 }
)

describe("ThrottleBackend/Redis", () => {
  it.scopedLive("server clock: real short windows (5 per 200 ms) for every algorithm", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const backend = Context.get(yield* Layer.build(redisLayer({ timeout: "2 seconds" })), ThrottleBackend)
      for (const algorithm of algorithmNames) {
        const policy: Policy = { algorithm, limit: 5, windowMs: 200 }
        const key = freshKey(`server-${algorithm}`)
        // Start just after a window edge of the server's clock, so that ten calls fall in one window.
        for (;;) {
          const [seconds, micros] = yield* Effect.promise(() => client.time())
          const ms = (Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)) % 200
          if (ms >= 5 && ms <= 100) break
          yield* Effect.sleep(Duration.millis(ms < 5 ? 5 - ms : 205 - ms))
        }
        const decisions = yield* Effect.forEach(
          Array.from({ length: 10 }),
          () => Effect.map(backend.run([{ key, policy, cost: 1 }], "consume"), (d) => d[0]),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(decisions.filter((d) => d.allowed).length, 5, algorithm)
        const waits = decisions.filter((d) => !d.allowed).map((d) => d.retryAfterMs as number)
        assert.isTrue(waits.every((ms) => ms > 0 && ms <= 240), `${algorithm}: ${waits}`)
        yield* Effect.sleep(Duration.millis(Math.max(...waits) + 10))
        const [later] = yield* backend.run([{ key, policy, cost: 1 }], "consume")
        assert.isTrue(later.allowed, algorithm)
      }
    }))

  it.scopedLive(
    "1,000 concurrent checks against a limit of 100 admit exactly 100, for every algorithm",
    () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(redisLayer({ timeout: "10 seconds" }))
        for (const algorithm of algorithmNames) {
          const policy: Policy = { algorithm, limit: 100, windowMs: 3_600_000 }
          const key = freshKey(`concurrent-${algorithm}`)
          const decisions = yield* Effect.forEach(Array.from({ length: 1000 }), () => consume(key, policy), {
            concurrency: "unbounded"
          }).pipe(Effect.provide(context))
          assert.strictEqual(decisions.filter((d) => d.allowed).length, 100, algorithm)
        }
      }),
    { timeout: 60_000 }
  )

  it.scopedLive("NOSCRIPT: the script is loaded again when the server has forgotten it", () =>
    Effect.gen(function*() {
      const client = yield* redisClient()
      const context = yield* Layer.build(redisLayer({ timeout: "2 seconds" }))
      const policy: Policy = { algorithm: "gcra", limit: 3, windowMs: 60_000 }
      const key = freshKey("noscript")
      assert.isTrue((yield* Effect.provide(consume(key, policy), context)).allowed)
      // SCRIPT FLUSH empties the shared server's script cache: every user of it reloads on NOSCRIPT.
      yield* Effect.promise(() => client.script("FLUSH"))
      assert.deepStrictEqual(yield* Effect.promise(() => client.script("EXISTS", throttleScriptSha)), [0])
      const after = yield* Effect.provide(consume(key, policy), context)
      assert.deepStrictEqual([after.allowed, after.remaining], [true, 1])
      assert.isTrue((yield* Effect.provide(consume(key, policy), context)).allowed)
      assert.isFalse((yield* Effect.provide(consume(key, policy), context)).allowed)
      assert.deepStrictEqual(yield* Effect.promise(() => client.script("EXISTS", throttleScriptSha)), [1])
    }))

  it.scopedLive("non-persistent: the namespace's keys are removed when the layer's scope closes", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const policy: Policy = { algorithm: "fixed-window", limit: 3, windowMs: 3_600_000 }
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        ThrottleBackendRedis.layer({ namespace, persistent: false, timeout: "2 seconds" }).pipe(
          Layer.provide(RedisLive)
        ),
        scope
      )
      for (let i = 0; i < 25; i++) yield* Effect.provide(consume(freshKey(`gone-${i}`), policy), context)
      assert.strictEqual((yield* keysOf(namespace)).length, 25)
      // Another namespace that starts with the same text is not touched.
      const neighbour = `${namespace}0`
      const kept = yield* Layer.build(
        ThrottleBackendRedis.layer({ namespace: neighbour, timeout: "2 seconds" }).pipe(Layer.provide(RedisLive))
      )
      yield* Effect.provide(consume(freshKey("neighbour"), policy), kept)
      // Nor a namespace nested in it.
      const nested = `${namespace}:prod`
      const keptNested = yield* Layer.build(
        ThrottleBackendRedis.layer({ namespace: nested, timeout: "2 seconds" }).pipe(Layer.provide(RedisLive))
      )
      yield* Effect.provide(consume(freshKey("nested"), policy), keptNested)
      yield* Scope.close(scope, Exit.void)
      const nestedKeys = yield* keysOf(nested)
      assert.strictEqual(nestedKeys.length, 1)
      assert.deepStrictEqual(yield* keysOf(namespace), nestedKeys)
      assert.strictEqual((yield* keysOf(neighbour)).length, 1)
    }))

  it.effect("bad options: a named defect from layer, a ConfigError from layerConfig", () =>
    Effect.gen(function*() {
      const build = (options: ThrottleBackendRedis.Options) =>
        Effect.exit(Effect.scoped(Layer.build(ThrottleBackendRedis.layer(options).pipe(Layer.provide(RedisLive)))))
      for (
        const [options, text] of [
          [{ namespace: "a{b}" }, "namespace"],
          [{ namespace: "" }, "namespace"],
          [{ timeout: 0 }, "timeout"],
          [{ timeout: "3000000000 millis" }, "timeout"],
          [{ expiryMargin: Duration.infinity }, "expiryMargin"]
        ] as const
      ) {
        const exit = yield* build(options)
        assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause), JSON.stringify(options))
        if (Exit.isFailure(exit)) assert.include(Cause.pretty(exit.cause), text)
      }
      const fromConfig = yield* Effect.exit(
        Effect.scoped(
          Layer.build(
            ThrottleBackendRedis.layerConfig({ namespace: Config.succeed("ok"), timeout: Config.succeed(0) }).pipe(
              Layer.provide(RedisLive)
            )
          )
        )
      )
      assert.isTrue(Exit.isFailure(fromConfig) && Cause.isFailType(fromConfig.cause))
      if (Exit.isFailure(fromConfig)) {
        const error = Cause.failureOption(fromConfig.cause)
        assert.isTrue(Option.isSome(error) && ConfigError.isConfigError(error.value))
        assert.include(Cause.pretty(fromConfig.cause), "timeout")
      }
    }))

  it.scopedLive("persistent (the default): counters outlive the layer and carry on in the next one", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const layer = ThrottleBackendRedis.layer({ namespace, timeout: "2 seconds" }).pipe(Layer.provide(RedisLive))
      const policy: Policy = { algorithm: "gcra", limit: 3, windowMs: 3_600_000 }
      const key = freshKey("persistent")
      const first = yield* Effect.scoped(
        Effect.flatMap(
          Layer.build(layer),
          (context) => Effect.provide(Effect.all([consume(key, policy), consume(key, policy)]), context)
        )
      )
      assert.deepStrictEqual(first.map((d) => d.remaining), [2, 1])
      assert.strictEqual((yield* keysOf(namespace)).length, 1)
      const second = yield* Effect.scoped(
        Effect.flatMap(
          Layer.build(layer),
          (context) => Effect.provide(Effect.all([consume(key, policy), consume(key, policy)]), context)
        )
      )
      assert.deepStrictEqual(second.map((d) => d.allowed), [true, false])
      const keys = yield* keysOf(namespace)
      assert.strictEqual(keys.length, 1)
      // The key expires with its counter.
      const client = yield* redisClient()
      const ttl = yield* Effect.promise(() => client.pttl(keys[0]))
      assert.isTrue(ttl > 3_500_000 && ttl <= 3_600_000, `pttl ${ttl}`)
    }))

  it.scopedLive("a cut connection mid-test is a ThrottleBackendError within the timeout, never a hang", () =>
    Effect.gen(function*() {
      const target = new URL(redisUrl)
      const proxy = yield* tcpProxy({ host: target.hostname, port: Number(target.port || 6379) })
      const client = yield* Effect.acquireRelease(
        Effect.sync(() =>
          new Redis(withPort(redisUrl, proxy.port), { maxRetriesPerRequest: 1, retryStrategy: () => 50 })
        ),
        (client) => Effect.sync(() => client.disconnect())
      )
      client.on("error", () => {})
      yield* Effect.promise(() => client.ping())
      const context = yield* Layer.build(
        ThrottleBackendRedis.layer({ namespace: freshNamespace(), timeout: "50 millis", persistent: false }).pipe(
          Layer.provide(RedisClient.layer(client))
        )
      )
      const policy: Policy = { algorithm: "gcra", limit: 1000, windowMs: 60_000 }
      const key = freshKey("outage")
      const check = Effect.provide(consume(key, policy), context)
      assert.isTrue((yield* check).allowed)
      const health = yield* Effect.provide(Effect.flatMap(ThrottleBackend, (b) => b.health), context)
      assert.strictEqual(health.status, "up")
      // Checks in flight when the connection is cut.
      const inFlight = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 50 }), () => timed(check), { concurrency: "unbounded" })
      )
      yield* proxy.cut
      for (const { exit, ms } of yield* inFlight.await.pipe(Effect.flatten)) {
        if (Exit.isFailure(exit)) expectBackendError(exit)
        assert.isBelow(ms, 1000)
      }
      for (let i = 0; i < 5; i++) {
        const { exit, ms } = yield* timed(check)
        const error = expectBackendError(exit)
        assert.include(["Unavailable", "Timeout"], error.reason)
        assert.isBelow(ms, 500, `took ${ms} ms`)
      }
      const down = yield* Effect.provide(Effect.flatMap(ThrottleBackend, (b) => b.health), context)
      assert.strictEqual(down.status, "down")
    }))

  it.scopedLive("a closed port is a ThrottleBackendError within the timeout", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis(withPort(redisUrl, port), { maxRetriesPerRequest: 1, retryStrategy: () => 100 })),
        (client) => Effect.sync(() => client.disconnect())
      )
      client.on("error", () => {})
      const context = yield* Layer.build(
        ThrottleBackendRedis.layer({ namespace: freshNamespace(), timeout: "50 millis" }).pipe(
          Layer.provide(RedisClient.layer(client))
        )
      )
      const policy: Policy = { algorithm: "fixed-window", limit: 10, windowMs: 1000 }
      for (let i = 0; i < 5; i++) {
        const { exit, ms } = yield* timed(Effect.provide(consume(freshKey("closed"), policy), context))
        const error = expectBackendError(exit)
        assert.include(["Unavailable", "Timeout"], error.reason)
        assert.isBelow(ms, 500, `took ${ms} ms`)
      }
    }))

  it.scopedLive("a server that never answers times out", () =>
    Effect.gen(function*() {
      const sockets = new Set<net.Socket>()
      const server = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer((socket) => {
            sockets.add(socket)
            socket.on("error", () => {})
          })
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.sync(() => {
            for (const socket of sockets) socket.destroy()
            server.close()
          })
      )
      const port = (server.address() as net.AddressInfo).port
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis(withPort(redisUrl, port), { maxRetriesPerRequest: 1 })),
        (client) => Effect.sync(() => client.disconnect())
      )
      client.on("error", () => {})
      const context = yield* Layer.build(
        ThrottleBackendRedis.layer({ namespace: freshNamespace(), timeout: "50 millis" }).pipe(
          Layer.provide(RedisClient.layer(client))
        )
      )
      const policy: Policy = { algorithm: "token-bucket", limit: 10, windowMs: 1000 }
      const { exit, ms } = yield* timed(Effect.provide(consume(freshKey("silent"), policy), context))
      assert.strictEqual(expectBackendError(exit).reason, "Timeout")
      assert.isTrue(ms >= 45 && ms < 500, `took ${ms} ms`)
    }))

  it.scopedLive(
    "one check or one batch is one EVALSHA on the wire, and nothing else (read with MONITOR)",
    () =>
      Effect.gen(function*() {
        const client = yield* redisClient()
        const context = yield* Layer.build(
          ThrottleBackendRedis.layer({ namespace: freshNamespace(), persistent: false, timeout: "2 seconds" }).pipe(
            Layer.provide(RedisClient.layer(client))
          )
        )
        const backend = Context.get(context, ThrottleBackend)
        const tenant = freshKey("wire")
        const requests = algorithmNames.map((algorithm, i) => ({
          key: `${tenant}:${i}`,
          policy: { algorithm, limit: 1_000_000, windowMs: 60_000 } satisfies Policy,
          cost: 1
        }))
        // Loads the script if the server does not have it yet (EVALSHA, NOSCRIPT, EVAL).
        yield* backend.run([requests[0]], "consume")
        // The server's view of this client's address: MONITOR names each command's sender by it.
        const info = yield* Effect.promise(() => client.client("INFO") as Promise<string>)
        const address = /addr=(\S+)/.exec(info)?.[1]
        assert.isDefined(address)

        const seen: Array<string> = []
        const marker = `done-${Math.random().toString(36).slice(2)}`
        const markerSeen = yield* Deferred.make<void>()
        const monitorClient = yield* redisClient()
        const monitor = yield* Effect.acquireRelease(
          Effect.promise(() => monitorClient.monitor()),
          (monitor) => Effect.sync(() => monitor.disconnect())
        )
        monitor.on("monitor", (_time: string, args: Array<string>, source: string) => {
          if (source !== address) return // other test files share the server; Lua's own calls say "lua"
          if (args[0]?.toLowerCase() === "echo" && args[1] === marker) Deferred.unsafeDone(markerSeen, Exit.void)
          else seen.push(args[0]?.toLowerCase() ?? "")
        })

        const checks = 300
        const batches = 50
        for (let i = 0; i < checks; i++) yield* backend.run([requests[i % requests.length]], "consume")
        for (let i = 0; i < batches; i++) yield* backend.run(requests, i % 2 === 0 ? "consume" : "peek")
        // Sent after every check has been answered: once MONITOR shows it, it has shown them all.
        yield* Effect.promise(() => client.echo(marker))
        yield* Deferred.await(markerSeen).pipe(
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "no marker" })
        )

        const counts = new Map<string, number>()
        for (const command of seen) counts.set(command, (counts.get(command) ?? 0) + 1)
        assert.deepStrictEqual(Object.fromEntries(counts), { evalsha: checks + batches })
      }),
    { timeout: 60_000 }
  )
})

// -----------------------------------------------------------------------------
// Redis Cluster
// -----------------------------------------------------------------------------

describe("ThrottleBackend/Redis on a Redis Cluster", () => {
  let nodes: RedisClusterNodes | undefined
  const clusterScope = Effect.runSync(Scope.make())
  beforeAll(() => Effect.runPromise(Effect.map(Scope.extend(redisCluster, clusterScope), (n) => (nodes = n))), 60_000)
  afterAll(() => Effect.runPromise(Scope.close(clusterScope, Exit.void)), 30_000)

  const ClusterLive = Layer.unwrapScoped(
    Effect.suspend(() => clusterClient(nodes!)).pipe(
      Effect.map((cluster) => Layer.succeed(RedisClient.RedisClient, clusterRedisClient(cluster)))
    )
  )

  suite(
    "redis cluster (client clock)",
    ThrottleBackendRedis.layer({
      namespace: freshNamespace(),
      clock: "client",
      expiryMargin: "10 minutes",
      persistent: false,
      timeout: "5 seconds"
    }).pipe(Layer.provide(ClusterLive)),
    { runs: 100 }
  )

  it.scopedLive(
    "non-persistent cleanup scans every master; a cross-slot batch is an error, not a rejection",
    () =>
      Effect.gen(function*() {
        const namespace = freshNamespace()
        const policy: Policy = { algorithm: "gcra", limit: 5, windowMs: 3_600_000 }
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(
          ThrottleBackendRedis.layer({ namespace, persistent: false, timeout: "2 seconds" }).pipe(
            Layer.provide(ClusterLive)
          ),
          scope
        )
        // Keys of 60 tenants spread over the three masters.
        for (let i = 0; i < 60; i++) {
          assert.isTrue((yield* Effect.provide(consume(freshKey(`spread-${i}`), policy), context)).allowed)
        }
        const count = Effect.gen(function*() {
          let total = 0
          const perNode: Array<number> = []
          for (const node of nodes!.startupNodes) {
            const client = yield* Effect.acquireRelease(
              Effect.sync(() => new Redis(node.port, node.host)),
              (client) => Effect.sync(() => client.disconnect())
            )
            const keys = yield* Effect.promise(() => client.keys(`${namespace}:*`))
            perNode.push(keys.length)
            total += keys.length
          }
          return { total, perNode }
        }).pipe(Effect.scoped)
        const before = yield* count
        assert.strictEqual(before.total, 60)
        assert.isTrue(before.perNode.every((n) => n > 0), `keys per node: ${before.perNode}`)
        const crossSlot = yield* Effect.provide(
          Effect.exit(Effect.flatMap(ThrottleBackend, (backend) =>
            backend.run([
              { key: freshKey("a"), policy, cost: 1 },
              { key: freshKey("b"), policy, cost: 1 }
            ], "consume"))),
          context
        )
        assert.strictEqual(expectBackendError(crossSlot).reason, "BadResponse")
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual((yield* count).total, 0)
      }),
    { timeout: 60_000 }
  )
})

afterAll(() =>
  Effect.gen(function*() {
    const client = yield* redisClient()
    let cursor = "0"
    do {
      const [next, keys] = yield* Effect.promise(() => client.scan(cursor, "MATCH", `${fileNamespace}*`, "COUNT", 1000))
      if (keys.length > 0) yield* Effect.promise(() => client.del(...keys))
      cursor = next
    } while (cursor !== "0")
  }).pipe(Effect.scoped, Effect.runPromise)
)
