import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, TestClock } from "effect"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { suite } from "./suites/ThrottleBackendSuite.js"

// The suite moves the TestClock over years; a sweep every 10 s would wake millions of times. The sweep
// cannot change a decision (it only drops expired entries); it is tested on its own below.
suite("memory", ThrottleBackend.layerMemory({ sweepInterval: "3650 days" }))

// A full garbage collection, for measuring what is retained.
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

describe("ThrottleBackend.layerMemory bounds", () => {
  const policy: ThrottleBackend.Policy = { algorithm: "gcra", limit: 10, windowMs: 60_000 }

  it.scoped(
    "1,000,000 distinct keys with maxKeys 10,000 keep 10,000 keys and bounded memory",
    () =>
      Effect.gen(function*() {
        const memory = yield* ThrottleBackend.makeMemory({ maxKeys: 10_000 })
        const run = memory.backend.runSync!
        const now = yield* Clock.currentTimeMillis
        gc()
        const heapBefore = process.memoryUsage().heapUsed
        const retained: Array<number> = []
        for (let i = 0; i < 1_000_000; i++) {
          run([{ key: `flood:${i}`, policy, cost: 1 }], "consume", now)
          if (i % 250_000 === 249_999) {
            gc()
            retained.push(process.memoryUsage().heapUsed - heapBefore)
          }
        }
        const stats = yield* memory.stats
        assert.strictEqual(stats.keys, 10_000)
        assert.strictEqual(stats.evicted, 990_000)
        // 10,000 entries hold a few MB, and no more after 1,000,000 keys than after 250,000
        // (without the cap, a million entries retain well over 100 MB).
        const mb = retained.map((bytes) => (bytes / 1024 / 1024).toFixed(1))
        assert.isBelow(Math.max(...retained), 16 * 1024 * 1024, `retained MB: ${mb}`)
        assert.isBelow(retained[3] - retained[0], 2 * 1024 * 1024, `retained MB: ${mb}`)
        // The most recent keys are the ones kept.
        const [latest] = run([{ key: "flood:999999", policy, cost: 0 }], "peek", now)
        assert.strictEqual(latest.remaining, 9)
        const [oldest] = run([{ key: "flood:0", policy, cost: 0 }], "peek", now)
        assert.strictEqual(oldest.remaining, 10)
      }),
    { timeout: 60_000 }
  )

  it.scoped("the sweep removes expired entries, on its own schedule and on demand", () =>
    Effect.gen(function*() {
      const memory = yield* ThrottleBackend.makeMemory({ sweepInterval: "1 second" })
      const short: ThrottleBackend.Policy = { algorithm: "fixed-window", limit: 5, windowMs: 1000 }
      const long: ThrottleBackend.Policy = { algorithm: "fixed-window", limit: 5, windowMs: 3_600_000 }
      for (let i = 0; i < 100; i++) {
        yield* memory.backend.run([{ key: `short:${i}`, policy: short, cost: 1 }], "consume")
      }
      yield* memory.backend.run([{ key: "long", policy: long, cost: 1 }], "consume")
      assert.strictEqual((yield* memory.stats).keys, 101)
      // The scheduled sweep runs after its interval, once the short window is over.
      yield* TestClock.adjust("1 second")
      const stats = yield* memory.stats
      assert.strictEqual(stats.keys, 1)
      assert.strictEqual(stats.swept, 100)
      assert.strictEqual(yield* memory.sweep, 0)
      const [kept] = yield* memory.backend.run([{ key: "long", policy: long, cost: 0 }], "peek")
      assert.strictEqual(kept.remaining, 4)
    }))
})
