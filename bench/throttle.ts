/**
 * Throttle checks, side by side in one run, against the anchors:
 * `rate-limiter-flexible` (RateLimiterRedis over ioredis, RateLimiterMemory)
 * and `@effect/experimental` RateLimiter (Redis and memory stores).
 *
 * - Redis, sequential (µs per check, mean of each round, median of rounds):
 *   PING, our script as a bare ioredis EVALSHA (to split our check's time
 *   between the server and the client), our check with each algorithm,
 *   rate-limiter-flexible's
 *   `RateLimiterRedis.consume`, `@effect/experimental`'s `consume`.
 * - Redis, 50 in flight (checks per second): ours, rate-limiter-flexible
 *   (plain async workers, its native use; and from Effect), experimental.
 * - Memory (checks per second): ours (`Throttle.check`, memory backend
 *   provided once), `RateLimiterMemory` through `Effect.tryPromise`,
 *   `RateLimiterMemory` in a plain async loop, experimental memory store;
 *   plus a bare `Effect.sync` Map update for orientation.
 * - The marginal cost of choosing the backend per request: `withTenant`
 *   providing the tenant and its tier's prebuilt backend in one context
 *   change, against `withTenant` with the backend provided once at the app
 *   level (and, for scale, a separate `Effect.provideService` per check).
 *   The difference is small next to `withTenant` itself, so it is taken
 *   from this process's CPU time (median of per-round differences, with
 *   their spread); the wall-time difference is printed beside it.
 * - Heap held by the memory backend after 1,000,000 distinct keys, cap on
 *   (maxKeys 100,000) and off (maxKeys 2,000,000), and the insert rate; the
 *   fill stops after 30 seconds (reported) if the backend is slower than that.
 *
 * Every library limits 1,000,000 per 1,000 seconds per key and keys are spread over
 * 10,000 identifiers, so every check is allowed (the work measured is the
 * allowed path, the common one). Rounds alternate between the cases of a
 * section; ratios are medians of per-round ratios. Redis keys live under a
 * random namespace, removed at the end. Prints a table, then a last line
 * of JSON.
 *
 * Run: npx tsx bench/throttle.ts
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as RateLimiterRedisStore from "@effect/experimental/RateLimiter/Redis"
import { Cause, Context, Effect, Layer } from "effect"
import * as RedisClient from "effect-tenancy/RedisClient"
import { withTenant } from "effect-tenancy/TenantContext"
import * as TenantLayer from "effect-tenancy/TenantLayer"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as ThrottleRedis from "effect-tenancy/ThrottleBackend/Redis"
import { Redis } from "ioredis"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { RateLimiterMemory, RateLimiterRedis } from "rate-limiter-flexible"
import { throttleScript, throttleScriptSha } from "../src/internal/throttleScripts.js"

const redisUrl = process.env.TENANCY_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const namespace = `bench-throttle-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`

const limit = 1_000_000
const windowSeconds = 1000 // @effect/experimental needs window-ms / limit whole
const identifierCount = 10_000
const identifiers = Array.from({ length: identifierCount }, (_, i) => `user-${i}`)

const redisOps = 1_000
const redisRounds = 7
const inflight = 50
const inflightOps = 5_000
const inflightRounds = 5
const memoryOps = 50_000
const memoryRounds = 9
const dynamicOps = 10_000
const dynamicRounds = 21
const heapKeys = 1_000_000
const heapFillBudgetMs = 30_000

const startedAt = performance.now()
const progress = (section: string) =>
  process.stderr.write(`${((performance.now() - startedAt) / 1e3).toFixed(1)}s ${section}...\n`)

const quantile = (xs: ReadonlyArray<number>, q: number) =>
  [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q)]
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const round = (x: number, digits: number) => Number(x.toFixed(digits))

// `global.gc` when node runs with --expose-gc, otherwise switched on here
// (the flag can be set at run time; `gc` is then reachable from a new context).
const gc: () => void = (globalThis as { gc?: () => void }).gc ?? (() => {
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
})()

const heapUsed = () => {
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}

// Mean time of `ops` sequential calls, in µs (per call) or ns.
const timeLoop = <E, R>(ops: number, body: (i: number) => Effect.Effect<unknown, E, R>, unit: 1e3 | 1e6 = 1e3) =>
  Effect.gen(function*() {
    const start = performance.now()
    for (let i = 0; i < ops; i++) yield* body(i)
    return ((performance.now() - start) * unit) / ops
  })

const timeAsync = async (ops: number, body: (i: number) => Promise<unknown>) => {
  const start = performance.now()
  for (let i = 0; i < ops; i++) await body(i)
  return ((performance.now() - start) * 1e3) / ops
}

// Checks per second with `inflight` workers, each running calls one after another.
const inflightEffect = <E, R>(body: (i: number) => Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    let next = 0
    const worker = Effect.gen(function*() {
      while (next < inflightOps) yield* body(next++)
    })
    const start = performance.now()
    yield* Effect.all(Array.from({ length: inflight }, () => worker), { concurrency: "unbounded", discard: true })
    return inflightOps / ((performance.now() - start) / 1e3)
  })

const inflightAsync = async (body: (i: number) => Promise<unknown>) => {
  let next = 0
  const worker = async () => {
    while (next < inflightOps) await body(next++)
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: inflight }, worker))
  return inflightOps / ((performance.now() - start) / 1e3)
}

// Runs every case once (warm-up), then `rounds` rounds alternating between them.
const interleave = <K extends string, R = never>(
  rounds: number,
  cases: Record<K, () => Effect.Effect<number, unknown, R>>
) =>
  Effect.gen(function*() {
    const names = Object.keys(cases) as Array<K>
    const samples = Object.fromEntries(names.map((name) => [name, [] as Array<number>])) as Record<K, Array<number>>
    for (const name of names) yield* cases[name]()
    // Each round starts with the next case: no case always follows the same one.
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < names.length; j++) {
        const name = names[(r + j) % names.length]
        samples[name].push(yield* cases[name]())
      }
    }
    return samples
  })

const redisOptions = () => {
  const url = new URL(redisUrl)
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    ...(url.password === "" ? {} : { password: decodeURIComponent(url.password) }),
    ...(url.username === "" ? {} : { username: decodeURIComponent(url.username) }),
    ...(url.pathname.length > 1 ? { db: Number(url.pathname.slice(1)) } : {})
  }
}

const removeNamespace = (redis: Redis) =>
  Effect.promise(async () => {
    let removed = 0
    for await (const keys of redis.scanStream({ match: `${namespace}:*`, count: 1000 })) {
      if ((keys as Array<string>).length > 0) {
        removed += await redis.unlink(...(keys as Array<string>))
      }
    }
    return removed
  })

const algorithms = ThrottleBackend.algorithmNames

const program = Effect.gen(function*() {
  const redis = yield* Effect.acquireRelease(
    Effect.sync(() => new Redis(redisUrl)),
    (client) => Effect.promise(() => client.quit())
  )
  yield* Effect.promise(() => redis.ping())
  // Loaded up front: the bare EVALSHA case has no NOSCRIPT fallback.
  yield* Effect.promise(() => redis.script("LOAD", throttleScript))
  yield* Effect.addFinalizer(() => Effect.asVoid(removeNamespace(redis)))

  // Our throttles: one per algorithm.
  const throttles = Object.fromEntries(
    yield* Effect.forEach(algorithms, (algorithm) =>
      Effect.map(
        Throttle.make({ uid: `bench-${algorithm}`, rate: { limit, window: `${windowSeconds} seconds` }, algorithm }),
        (throttle) => [algorithm, throttle] as const
      ))
  ) as Record<ThrottleBackend.Algorithm, Throttle.Throttle>
  const gcra = throttles.gcra

  const redisBackend = Context.get(
    yield* Layer.build(
      // A longer timeout than the default 50 ms: on a loaded machine one late
      // reply would end the run (the timer is armed per call either way).
      ThrottleRedis.layer({ namespace: `${namespace}:ours`, persistent: false, timeout: "1 second" }).pipe(
        Layer.provide(RedisClient.layer(redis))
      )
    ),
    ThrottleBackend.ThrottleBackend
  )
  const onRedis = <A, E>(self: Effect.Effect<A, E, ThrottleBackend.ThrottleBackend>) =>
    Effect.provideService(self, ThrottleBackend.ThrottleBackend, redisBackend)

  // rate-limiter-flexible
  const rlfRedis = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: `${namespace}:rlf`,
    points: limit,
    duration: windowSeconds
  })
  const rlfMemory = new RateLimiterMemory({ keyPrefix: "rlf", points: limit, duration: windowSeconds })

  // @effect/experimental: its Redis store opens its own connection.
  const experimentalRedis = Context.get(
    yield* Layer.build(
      RateLimiter.layer.pipe(
        Layer.provide(RateLimiterRedisStore.layerStore({ ...redisOptions(), prefix: `${namespace}:exp:` }))
      )
    ),
    RateLimiter.RateLimiter
  )
  const experimentalMemory = Context.get(
    yield* Layer.build(RateLimiter.layer.pipe(Layer.provide(RateLimiter.layerStoreMemory))),
    RateLimiter.RateLimiter
  )
  const experimentalConsume = (limiter: RateLimiter.RateLimiter, i: number) =>
    limiter.consume({
      key: identifiers[i % identifierCount],
      limit,
      window: `${windowSeconds} seconds`,
      algorithm: "fixed-window"
    })

  // ---------------------------------------------------------------------------
  // Redis, sequential
  // ---------------------------------------------------------------------------
  const redisCases = {
    ping: () => timeLoop(redisOps, () => Effect.promise(() => redis.ping())),
    pingRaw: () => Effect.promise(() => timeAsync(redisOps, () => redis.ping())),
    // Our script's EVALSHA straight through ioredis, with the arguments a GCRA
    // check sends: the server's share and the client's share of our check.
    evalshaRaw: () =>
      Effect.promise(() =>
        timeAsync(redisOps, (i) =>
          redis.evalsha(
            throttleScriptSha,
            1,
            `${namespace}:raw:{g}:bench-gcra:${identifiers[i % identifierCount]}`,
            "c",
            "",
            0,
            1,
            limit,
            windowSeconds * 1000,
            limit,
            1
          ))
      ),
    ...Object.fromEntries(
      algorithms.map((algorithm) => [
        algorithm,
        () =>
          onRedis(
            timeLoop(redisOps, (i) => throttles[algorithm].check({ identifier: identifiers[i % identifierCount] }))
          )
      ])
    ),
    rlf: () => timeLoop(redisOps, (i) => Effect.tryPromise(() => rlfRedis.consume(identifiers[i % identifierCount]))),
    experimental: () => timeLoop(redisOps, (i) => experimentalConsume(experimentalRedis, i))
  } as Record<string, () => Effect.Effect<number, unknown>>
  progress("Redis, sequential")
  const redisSamples = yield* interleave(redisRounds, redisCases)

  // ---------------------------------------------------------------------------
  // Redis, 50 in flight
  // ---------------------------------------------------------------------------
  progress(`Redis, ${inflight} in flight`)
  const inflightSamples = yield* interleave(inflightRounds, {
    ours: () => onRedis(inflightEffect((i) => gcra.check({ identifier: identifiers[i % identifierCount] }))),
    rlf: () => Effect.promise(() => inflightAsync((i) => rlfRedis.consume(identifiers[i % identifierCount]))),
    rlfEffect: () => inflightEffect((i) => Effect.tryPromise(() => rlfRedis.consume(identifiers[i % identifierCount]))),
    experimental: () => inflightEffect((i) => experimentalConsume(experimentalRedis, i))
  })

  // ---------------------------------------------------------------------------
  // memory
  // ---------------------------------------------------------------------------
  const memoryBackend = Context.get(
    yield* Layer.build(ThrottleBackend.layerMemory()),
    ThrottleBackend.ThrottleBackend
  )
  const bare = new Map<string, number>()
  progress("memory")
  const memorySamples = yield* interleave(memoryRounds, {
    ours: () =>
      Effect.provideService(
        timeLoop(memoryOps, (i) => gcra.check({ identifier: identifiers[i % identifierCount] })),
        ThrottleBackend.ThrottleBackend,
        memoryBackend
      ),
    rlf: () => timeLoop(memoryOps, (i) => Effect.tryPromise(() => rlfMemory.consume(identifiers[i % identifierCount]))),
    rlfRaw: () =>
      Effect.promise(() => timeAsync(memoryOps, (i) => rlfMemory.consume(identifiers[i % identifierCount]))),
    experimental: () => timeLoop(memoryOps, (i) => experimentalConsume(experimentalMemory, i)),
    bareSync: () =>
      timeLoop(memoryOps, (i) =>
        Effect.sync(() => {
          const key = identifiers[i % identifierCount]
          bare.set(key, (bare.get(key) ?? 0) + 1)
        }))
  })
  const perSec = (us: number) => 1e6 / us

  // ---------------------------------------------------------------------------
  // the backend chosen per request
  // ---------------------------------------------------------------------------
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme", tier: "premium" })
  const services = yield* TenantLayer.prebuilt({
    key: (tenant) => tenant.tier,
    layers: {
      enterprise: ThrottleBackend.layerMemory({ name: "enterprise" }),
      premium: ThrottleBackend.layerMemory({ name: "premium" }),
      free: ThrottleBackend.layerMemory({ name: "free" })
    },
    fallback: "free"
  })
  const appBackend = Context.get(yield* Layer.build(ThrottleBackend.layerMemory()), ThrottleBackend.ThrottleBackend)
  progress("backend per request")
  // Each round records wall time and this process's CPU time (user + system):
  // the difference between the cases is small next to withTenant itself, and
  // CPU time does not count the time other processes take the cores.
  const dynamicWall: Record<"appLevel" | "perRequest" | "provideServicePerCheck", Array<number>> = {
    appLevel: [],
    perRequest: [],
    provideServicePerCheck: []
  }
  const both = <E, R>(name: keyof typeof dynamicWall, body: (i: number) => Effect.Effect<unknown, E, R>) =>
    Effect.gen(function*() {
      const cpu = process.cpuUsage()
      const wall = yield* timeLoop(dynamicOps, body, 1e6)
      const used = process.cpuUsage(cpu)
      dynamicWall[name].push(wall)
      return ((used.user + used.system) * 1e3) / dynamicOps
    })
  const dynamicSamples = yield* interleave(dynamicRounds, {
    appLevel: () =>
      Effect.provideService(
        both("appLevel", (i) => withTenant(gcra.check({ identifier: identifiers[i % identifierCount] }), "acme")),
        ThrottleBackend.ThrottleBackend,
        appBackend
      ),
    perRequest: () =>
      both(
        "perRequest",
        (i) => withTenant(gcra.check({ identifier: identifiers[i % identifierCount] }), "acme", { services })
      ),
    provideServicePerCheck: () =>
      both(
        "provideServicePerCheck",
        (i) =>
          withTenant(
            Effect.provideService(
              gcra.check({ identifier: identifiers[i % identifierCount] }),
              ThrottleBackend.ThrottleBackend,
              appBackend
            ),
            "acme"
          )
      )
  })
  // The warm-up round is not in the samples.
  for (const wall of Object.values(dynamicWall)) wall.shift()
  const cpuDifferences = dynamicSamples.perRequest.map((p, i) => p - dynamicSamples.appLevel[i])
  const wallDifferences = dynamicWall.perRequest.map((p, i) => p - dynamicWall.appLevel[i])

  // ---------------------------------------------------------------------------
  // heap held at 1,000,000 keys
  // ---------------------------------------------------------------------------
  // The fill has a time budget: a backend whose inserts slow down as keys
  // churn must not hold the run hostage. When it runs out, the figures are
  // for the keys inserted so far, and the output says so.
  const heldMb = (maxKeys: number) =>
    Effect.scoped(Effect.gen(function*() {
      const before = heapUsed()
      const memory = yield* ThrottleBackend.makeMemory({ maxKeys })
      // Straight to the backend's synchronous entry (keys as a throttle writes
      // them): this section measures what is held, not a check's overhead.
      const policy = gcra.policy!
      const runSync = memory.backend.runSync!
      const start = performance.now()
      let inserted = 0
      while (inserted < heapKeys) {
        runSync([{ key: `{g}:bench-gcra:key-${inserted}`, policy, cost: 1 }], "consume", Date.now())
        inserted++
        if ((inserted & 1023) === 0 && performance.now() - start > heapFillBudgetMs) break
      }
      const seconds = (performance.now() - start) / 1e3
      const after = heapUsed()
      const stats = yield* memory.stats
      return {
        mb: (after - before) / (1024 * 1024),
        inserted,
        insertsPerSec: inserted / seconds,
        keys: stats.keys,
        evicted: stats.evicted
      }
    }))
  progress("heap at 1,000,000 keys, cap on")
  const capOn = yield* heldMb(100_000)
  progress("heap at 1,000,000 keys, cap off")
  const capOff = yield* heldMb(2_000_000)

  progress("done")
  const removed = yield* removeNamespace(redis)

  // ---------------------------------------------------------------------------
  // report
  // ---------------------------------------------------------------------------
  const m = (name: string) => median(redisSamples[name])
  const pingUs = m("ping")
  const redisCheckUs = m("gcra")
  const result = {
    pingUs: round(pingUs, 1),
    pingRawUs: round(m("pingRaw"), 1),
    evalshaRawUs: round(m("evalshaRaw"), 1),
    redisCheckUs: round(redisCheckUs, 1),
    redisFixedWindowUs: round(m("fixed-window"), 1),
    redisSlidingWindowUs: round(m("sliding-window"), 1),
    redisTokenBucketUs: round(m("token-bucket"), 1),
    rlfRedisUs: round(m("rlf"), 1),
    experimentalRedisUs: round(m("experimental"), 1),
    inflightOursPerSec: Math.round(median(inflightSamples.ours)),
    inflightRlfPerSec: Math.round(median(inflightSamples.rlf)),
    inflightRlfEffectPerSec: Math.round(median(inflightSamples.rlfEffect)),
    inflightExperimentalPerSec: Math.round(median(inflightSamples.experimental)),
    memoryOursPerSec: Math.round(perSec(median(memorySamples.ours))),
    memoryRlfPerSec: Math.round(perSec(median(memorySamples.rlf))),
    memoryRlfRawPerSec: Math.round(perSec(median(memorySamples.rlfRaw))),
    memoryExperimentalPerSec: Math.round(perSec(median(memorySamples.experimental))),
    memoryBareEffectSyncPerSec: Math.round(perSec(median(memorySamples.bareSync))),
    dynamicAppLevelNs: Math.round(median(dynamicWall.appLevel)),
    dynamicPerRequestNs: Math.round(median(dynamicWall.perRequest)),
    provideServicePerCheckNs: Math.round(median(dynamicWall.provideServicePerCheck)),
    dynamicAppLevelCpuNs: Math.round(median(dynamicSamples.appLevel)),
    dynamicPerRequestCpuNs: Math.round(median(dynamicSamples.perRequest)),
    provideServicePerCheckCpuNs: Math.round(median(dynamicSamples.provideServicePerCheck)),
    // CPU time, median of per-round differences; the wall-time figure and the
    // spread of the CPU differences (25th..75th percentile) beside it.
    dynamicBackendOverheadNs: Math.round(median(cpuDifferences)),
    dynamicBackendOverheadWallNs: Math.round(median(wallDifferences)),
    dynamicBackendOverheadMediansNs: Math.round(median(dynamicWall.perRequest) - median(dynamicWall.appLevel)),
    dynamicBackendOverheadSpreadNs: [
      Math.round(quantile(cpuDifferences, 0.25)),
      Math.round(quantile(cpuDifferences, 0.75))
    ],
    memoryMbCapOn: round(capOn.mb, 1),
    memoryMbCapOff: round(capOff.mb, 1),
    keysInsertedCapOn: capOn.inserted,
    keysHeldCapOn: capOn.keys,
    insertsPerSecCapOn: Math.round(capOn.insertsPerSec),
    keysInsertedCapOff: capOff.inserted,
    keysHeldCapOff: capOff.keys,
    insertsPerSecCapOff: Math.round(capOff.insertsPerSec)
  }
  const ratios = {
    redisCheckMinusPingUs: round(median(redisSamples.gcra.map((c, i) => c - redisSamples.ping[i])), 1),
    inflightOursToRlfRatio: round(median(inflightSamples.ours.map((o, i) => o / inflightSamples.rlf[i])), 3),
    memoryOursToRlfRatio: round(median(memorySamples.rlf.map((r, i) => r / memorySamples.ours[i])), 3),
    memoryOursToRlfRawRatio: round(median(memorySamples.rlfRaw.map((r, i) => r / memorySamples.ours[i])), 3)
  }
  const targets = {
    redisCheckWithinPingPlus15Us: ratios.redisCheckMinusPingUs <= 15,
    inflightAtLeastRlf: ratios.inflightOursToRlfRatio >= 1,
    memoryAtLeast2xRlfFromEffect: ratios.memoryOursToRlfRatio >= 2,
    memoryAtLeastRlfRaw: ratios.memoryOursToRlfRawRatio >= 1,
    // Met only when the CPU-time and wall-time figures (median of per-round
    // differences) and the difference of the wall-time medians are all under 1 µs.
    dynamicBackendUnder1Us: result.dynamicBackendOverheadNs < 1000 && result.dynamicBackendOverheadWallNs < 1000 &&
      result.dynamicBackendOverheadMediansNs < 1000,
    heapFilledTo1M: capOn.inserted === heapKeys && capOff.inserted === heapKeys
  }

  const line = (label: string, value: string) => console.log(`${label.padEnd(52)} ${value.padStart(14)}`)
  console.log(
    `every library: ${limit}/${windowSeconds}s per key, keys over ${identifierCount} identifiers: every check is allowed`
  )
  console.log("Redis, sequential                                          µs/check")
  line("PING (Effect.promise, same loop as the checks)", result.pingUs.toFixed(1))
  line("PING (plain async loop)", result.pingRawUs.toFixed(1))
  line("our script, bare ioredis EVALSHA (GCRA arguments)", result.evalshaRawUs.toFixed(1))
  line("ours, GCRA", result.redisCheckUs.toFixed(1))
  line("ours, fixed window", result.redisFixedWindowUs.toFixed(1))
  line("ours, sliding window", result.redisSlidingWindowUs.toFixed(1))
  line("ours, token bucket", result.redisTokenBucketUs.toFixed(1))
  line("rate-limiter-flexible RateLimiterRedis", result.rlfRedisUs.toFixed(1))
  line("@effect/experimental RateLimiter (Redis)", result.experimentalRedisUs.toFixed(1))
  console.log(`Redis, ${inflight} in flight                                       checks/s`)
  line("ours, GCRA", String(result.inflightOursPerSec))
  line("rate-limiter-flexible (plain async workers)", String(result.inflightRlfPerSec))
  line("rate-limiter-flexible (Effect.tryPromise)", String(result.inflightRlfEffectPerSec))
  line("@effect/experimental", String(result.inflightExperimentalPerSec))
  console.log("memory                                                     checks/s")
  line("ours, GCRA (Throttle.check, backend provided once)", String(result.memoryOursPerSec))
  line("RateLimiterMemory (Effect.tryPromise)", String(result.memoryRlfPerSec))
  line("RateLimiterMemory (plain async loop)", String(result.memoryRlfRawPerSec))
  line("@effect/experimental memory store", String(result.memoryExperimentalPerSec))
  line("bare Effect.sync Map update (orientation)", String(result.memoryBareEffectSyncPerSec))
  console.log("withTenant + check (memory)                            ns/op wall / CPU")
  line("backend provided once at app level", `${result.dynamicAppLevelNs} / ${result.dynamicAppLevelCpuNs}`)
  line(
    "tier backend in the tenant's context change",
    `${result.dynamicPerRequestNs} / ${result.dynamicPerRequestCpuNs}`
  )
  line(
    "separate Effect.provideService per check",
    `${result.provideServicePerCheckNs} / ${result.provideServicePerCheckCpuNs}`
  )
  line(
    "marginal cost of the per-request backend",
    `${result.dynamicBackendOverheadWallNs} / ${result.dynamicBackendOverheadNs}`
  )
  line("  CPU, 25th..75th percentile of rounds", result.dynamicBackendOverheadSpreadNs.join(".."))
  line("  difference of the wall-time medians", String(result.dynamicBackendOverheadMediansNs))
  console.log(`heap held after ${heapKeys} distinct keys (fill budget ${heapFillBudgetMs / 1e3} s)      MiB`)
  for (const [label, held] of [["cap on (maxKeys 100,000)", capOn], ["cap off (maxKeys 2,000,000)", capOff]] as const) {
    line(
      `${label}: ${held.inserted} inserted, ${held.keys} held`,
      `${held.mb.toFixed(1)}${held.inserted < heapKeys ? " (budget out)" : ""}`
    )
    line(`  inserts/s`, String(Math.round(held.insertsPerSec)))
  }
  console.log("targets")
  line(
    "our Redis check - PING <= 15 µs",
    `${ratios.redisCheckMinusPingUs} ${mark(targets.redisCheckWithinPingPlus15Us)}`
  )
  line(
    "in flight: ours / rate-limiter-flexible >= 1",
    `${ratios.inflightOursToRlfRatio} ${mark(targets.inflightAtLeastRlf)}`
  )
  line(
    "memory: ours / RateLimiterMemory (Effect) >= 2",
    `${ratios.memoryOursToRlfRatio} ${mark(targets.memoryAtLeast2xRlfFromEffect)}`
  )
  line(
    "memory: ours / RateLimiterMemory (raw) >= 1",
    `${ratios.memoryOursToRlfRawRatio} ${mark(targets.memoryAtLeastRlfRaw)}`
  )
  line(
    "per-request backend < 1000 ns (CPU / wall / medians)",
    `${result.dynamicBackendOverheadNs} / ${result.dynamicBackendOverheadWallNs} / ${result.dynamicBackendOverheadMediansNs} ${
      mark(targets.dynamicBackendUnder1Us)
    }`
  )
  console.log(`Redis keys removed from ${namespace}:*: ${removed}`)
  console.log(
    JSON.stringify({
      bench: "throttle",
      ...result,
      ...ratios,
      targets,
      allAllowed: true,
      limitPerKey: `${limit}/${windowSeconds}s`,
      identifiers: identifierCount,
      redisOps,
      redisRounds,
      inflight,
      inflightOps,
      inflightRounds,
      memoryOps,
      memoryRounds,
      dynamicOps,
      dynamicRounds,
      heapKeys,
      heapFillBudgetMs
    })
  )
})

const mark = (met: boolean) => (met ? "met" : "MISSED")

// Interrupted (Ctrl-C, SIGTERM): the finalizers still remove the Redis keys.
const fiber = Effect.runFork(Effect.scoped(Effect.provide(program, TenantRegistry.layerMemory())))
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => fiber.unsafeInterruptAsFork(fiber.id()))
}
fiber.addObserver((exit) => {
  if (exit._tag === "Failure") {
    console.error(Cause.pretty(exit.cause))
    process.exitCode = 1
  }
})
