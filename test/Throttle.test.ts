import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, HashMap, Layer, Logger, Metric, Option, TestClock } from "effect"
import * as Rate from "effect-tenancy/Rate"
import { withTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"
import * as Throttle from "effect-tenancy/Throttle"
import * as ThrottleBackend from "effect-tenancy/ThrottleBackend"

let serial = 0
const uid = (name: string) => `${name}-${++serial}-${Math.random().toString(36).slice(2, 6)}`

const tenants = Layer.effectDiscard(
  Effect.flatMap(
    TenantRegistry.TenantRegistry,
    (registry) =>
      Effect.forEach(["acme", "globex"], (id) => registry.register({ id, name: id, tier: "premium" }), {
        discard: true
      })
  )
).pipe(Layer.provideMerge(TenantRegistry.layerMemory()))

const memory = ThrottleBackend.layerMemory()

/** A backend that fails while `down` is set, and otherwise answers from a memory store. */
const switchable = (name = "switchable") => {
  const store = ThrottleBackend.unsafeMakeMemoryStore()
  const state = { down: false, calls: 0 }
  const backend = ThrottleBackend.ThrottleBackend.of({
    name,
    run: (requests, mode) =>
      Effect.suspend(() => {
        state.calls++
        return state.down
          ? Effect.fail(new ThrottleBackend.ThrottleBackendError({ backend: name, reason: "Unavailable" }))
          : Effect.map(Effect.clockWith((clock) => clock.currentTimeMillis), (now) => store.run(requests, mode, now))
      }),
    health: Effect.die("unused")
  })
  return { backend, state }
}

describe("Throttle", () => {
  describe("make", () => {
    it.scoped("refuses a second throttle with the same uid until the first one's scope closes", () =>
      Effect.gen(function*() {
        const name = uid("dup")
        yield* Effect.scoped(Throttle.make({ uid: name, rate: "5/min" }))
        yield* Throttle.make({ uid: name, rate: "5/min" })
        const second = yield* Effect.flip(Throttle.make({ uid: name, rate: "10/min" }))
        assert.strictEqual(second._tag, "InvalidThrottle")
        assert.include(second.message, "already exists")
      }))

    it.scoped("refuses bad rates, uids, costs and bursts with typed errors", () =>
      Effect.gen(function*() {
        const rate = yield* Effect.flip(Throttle.make({ uid: uid("r"), rate: "0/min" }))
        assert.strictEqual(rate._tag, "InvalidRate")
        const structured = yield* Effect.flip(
          Throttle.make({ uid: uid("r"), rate: { limit: 5, window: "forever" as never } })
        )
        assert.strictEqual(structured._tag, "InvalidRate")
        const empty = yield* Effect.flip(Throttle.make({ uid: "", rate: "5/min" }))
        assert.strictEqual(empty._tag, "InvalidThrottle")
        const cost = yield* Effect.flip(Throttle.make({ uid: uid("c"), rate: "5/min", cost: 1.5 }))
        assert.include(cost.message, "cost")
        const burst = yield* Effect.flip(Throttle.make({ uid: uid("b"), rate: "5/min", burst: 0 }))
        assert.include(burst.message, "burst")
        const windowBurst = yield* Effect.flip(
          Throttle.make({ uid: uid("b"), rate: "5/min", algorithm: "fixed-window", burst: 3 })
        )
        assert.include(windowBurst.message, "no burst")
        // GCRA's interval must be representable next to an epoch-millisecond timestamp.
        const fast = yield* Effect.flip(Throttle.make({ uid: uid("g"), rate: "10000000/s" }))
        assert.strictEqual(fast._tag, "InvalidThrottle")
        assert.include(fast.message, "sliding-window")
        yield* Throttle.make({ uid: uid("g"), rate: "20000/s" })
        yield* Throttle.make({ uid: uid("g"), rate: "10000000/s", algorithm: "sliding-window" })
      }))

    it.scoped("GCRA at its fastest rate still counts exactly at realistic dates", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("fast"), rate: "20000/s", burst: 10 })
        let admitted = 0
        for (let i = 0; i < 1_000; i++) if (Either.isRight(yield* Effect.either(throttle.check()))) admitted++
        assert.strictEqual(admitted, 10)
        yield* TestClock.adjust("1 millis") // 20 units' worth of time, capped by the burst
        for (let i = 0; i < 1_000; i++) if (Either.isRight(yield* Effect.either(throttle.check()))) admitted++
        assert.strictEqual(admitted, 20)
      }).pipe(
        Effect.provide(memory),
        // Before the memory layer starts its sweeper, which would otherwise run for every 10 s until 2100.
        (program) => Effect.zipRight(TestClock.setTime(Date.UTC(2100, 0, 1)), program)
      ))

    it.scoped("a negative cost at check time is a defect, not a silent pass", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("neg"), rate: "5/min" })
        const exit = yield* Effect.exit(throttle.check({ cost: -1 }))
        assert.isTrue(Exit.isFailure(exit) && exit.cause._tag === "Die")
      }).pipe(Effect.provide(memory)))
  })

  describe("check, peek, refund", () => {
    it.scoped("admits the limit, then refuses with the decision and the exact retry-after", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("gcra"), rate: "3/30s" })
        const remaining: Array<number> = []
        for (let i = 0; i < 3; i++) remaining.push((yield* throttle.check()).remaining)
        assert.deepStrictEqual(remaining, [2, 1, 0])
        const refused = yield* Effect.flip(throttle.check())
        assert.isTrue(Throttle.isRateLimitExceeded(refused))
        if (refused._tag !== "RateLimitExceeded") return
        assert.strictEqual(refused.retryAfterMs, 10_000)
        assert.strictEqual(refused.violated.length, 1)
        assert.strictEqual(refused.violated[0].uid, throttle.uid)
        assert.strictEqual(refused.violated[0].limit, 3)
        yield* TestClock.adjust("9999 millis")
        assert.isTrue(Either.isLeft(yield* Effect.either(throttle.check())), "still refused 1 ms early")
        yield* TestClock.adjust("1 millis")
        assert.isTrue((yield* throttle.check()).allowed)
      }).pipe(Effect.provide(memory)))

    it.scoped("peek consumes nothing; refund gives the cost back", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("peek"), rate: "2/min", algorithm: "fixed-window" })
        for (let i = 0; i < 5; i++) assert.isTrue((yield* throttle.peek()).allowed)
        yield* throttle.check()
        yield* throttle.check()
        const peeked = yield* throttle.peek()
        assert.isFalse(peeked.allowed)
        assert.strictEqual(peeked.remaining, 0)
        const refunded = yield* throttle.refund()
        assert.strictEqual(refunded.remaining, 1)
        assert.isTrue((yield* throttle.check()).allowed)
        assert.isTrue(Either.isLeft(yield* Effect.either(throttle.check())))
      }).pipe(Effect.provide(memory)))

    it.scoped("a cost above what the policy admits is refused with retry-after never", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("big"), rate: "10/min", burst: 4 })
        const refused = yield* Effect.flip(throttle.check({ cost: 5 }))
        assert.strictEqual(refused._tag === "RateLimitExceeded" && refused.retryAfterMs, "never")
        assert.isTrue((yield* throttle.check({ cost: 4 })).allowed)
      }).pipe(Effect.provide(memory)))

    it.scoped("an unlimited throttle never refuses and never calls the backend", () =>
      Effect.gen(function*() {
        const { backend, state } = switchable()
        const throttle = yield* Throttle.make({ uid: uid("free"), rate: Rate.unlimited })
        for (let i = 0; i < 100; i++) yield* throttle.check({ cost: 1000 })
        assert.strictEqual(state.calls, 0)
        const verdict = yield* throttle.check().pipe(Effect.provideService(ThrottleBackend.ThrottleBackend, backend))
        assert.strictEqual(verdict.remaining, Number.POSITIVE_INFINITY)
      }).pipe(Effect.provide(memory)))
  })

  describe("several throttles", () => {
    it.scoped("are all-or-nothing: a request refused by one consumes from neither", () =>
      Effect.gen(function*() {
        const minute = yield* Throttle.make({ uid: uid("minute"), rate: "2/min", algorithm: "fixed-window" })
        const day = yield* Throttle.make({ uid: uid("day"), rate: "3/day", algorithm: "fixed-window" })
        const both = [minute, day]
        yield* Throttle.checkAll(both)
        yield* Throttle.checkAll(both)
        const refused = yield* Effect.flip(Throttle.checkAll(both))
        assert.strictEqual(refused._tag, "RateLimitExceeded")
        if (refused._tag !== "RateLimitExceeded") return
        assert.deepStrictEqual(refused.violated.map((v) => v.uid), [minute.uid])
        assert.strictEqual(refused.verdicts.length, 2)
        assert.strictEqual((yield* day.peek()).remaining, 0, "day: one left, and a peek of one more takes it to 0")
        yield* TestClock.adjust("1 minute")
        yield* Throttle.checkAll(both)
        const dayRefused = yield* Effect.flip(Throttle.checkAll(both))
        assert.deepStrictEqual(
          dayRefused._tag === "RateLimitExceeded" && dayRefused.violated.map((v) => v.uid),
          [day.uid]
        )
        assert.strictEqual((yield* minute.peek()).remaining, 0, "the day's refusal consumed nothing of the minute")
      }).pipe(Effect.provide(memory)))

    it.scoped("a throttle named twice in one batch counts twice", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("twice"), rate: "3/min" })
        const verdicts = yield* Throttle.checkAll([throttle, throttle])
        assert.deepStrictEqual(verdicts.map((v) => v.remaining), [1, 1])
        const refused = yield* Effect.flip(Throttle.checkAll([throttle, throttle]))
        assert.strictEqual(refused._tag, "RateLimitExceeded", "two more do not fit in the one left")
        assert.strictEqual((yield* throttle.check()).remaining, 0, "the refused pair took nothing")
      }).pipe(Effect.provide(memory)))
  })

  describe("keys", () => {
    it.scoped("counters are per tenant and per identifier, and crafted parts cannot collide", () =>
      Effect.gen(function*() {
        const a = yield* Throttle.make({ uid: "k:x", rate: "1/min" })
        const b = yield* Throttle.make({ uid: "k", rate: "1/min" })
        yield* a.check({ identifier: "y" })
        assert.isTrue((yield* b.check({ identifier: "x:y" })).allowed, "uid k:x + y is not uid k + x:y")
        assert.notStrictEqual(yield* a.key("y"), yield* b.key("x:y"))
        const inAcme = yield* withTenant(a.key("1.2.3.4"), "acme")
        assert.strictEqual(inAcme, "{t:acme}:k%3Ax:1.2.3.4")
        assert.strictEqual(yield* b.key("}{"), "{g}:k:%7D%7B")
        yield* withTenant(a.check({ identifier: "z" }), "acme")
        assert.isTrue((yield* withTenant(a.check({ identifier: "z" }), "globex")).allowed, "another tenant")
        assert.isTrue(Either.isLeft(yield* Effect.either(withTenant(a.check({ identifier: "z" }), "acme"))))
      }).pipe(Effect.provide(Layer.merge(memory, tenants))))
  })

  describe("the backend is read at each check", () => {
    it.scoped("nested backends: the inner one has fresh counters; the outer ones are intact afterwards", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("nested"), rate: "5/min" })
        for (let i = 0; i < 3; i++) yield* throttle.check()
        const inner = yield* Effect.gen(function*() {
          const seen: Array<number> = []
          for (let i = 0; i < 5; i++) seen.push((yield* throttle.check()).remaining)
          const refused = yield* Effect.either(throttle.check())
          return { seen, refused: Either.isLeft(refused) }
        }).pipe(Effect.provide(ThrottleBackend.layerMemory()))
        assert.deepStrictEqual(inner.seen, [4, 3, 2, 1, 0])
        assert.isTrue(inner.refused)
        assert.strictEqual((yield* throttle.check()).remaining, 1, "the outer backend had 2 left")
      }).pipe(Effect.provide(memory)))
  })

  describe("backend failures", () => {
    it.scoped("fail-closed surfaces ThrottleBackendError (never a rejection); fail-open admits", () => {
      const { backend, state } = switchable()
      return Effect.gen(function*() {
        state.down = true
        const closed = yield* Throttle.make({ uid: uid("closed"), rate: "1/min" })
        const open = yield* Throttle.make({ uid: uid("open"), rate: "1/min", onBackendError: "fail-open" })
        const failed = yield* Effect.flip(closed.check())
        assert.strictEqual(failed._tag, "ThrottleBackendError")
        for (let i = 0; i < 3; i++) assert.isTrue((yield* open.check()).allowed)
        const mixed = yield* Effect.flip(Throttle.checkAll([open, closed]))
        assert.strictEqual(mixed._tag, "ThrottleBackendError", "fail-open only when every throttle is")
        state.down = false
        yield* open.check()
        assert.strictEqual((yield* Effect.flip(open.check()))._tag, "RateLimitExceeded", "counts again when back")
      }).pipe(Effect.provideService(ThrottleBackend.ThrottleBackend, backend))
    })

    it.scoped("with spans: true, a call to an asynchronous backend runs in a span with the tenant and throttle", () => {
      const seen: Array<{ readonly name: string; readonly attributes: Record<string, unknown> } | undefined> = []
      const store = ThrottleBackend.unsafeMakeMemoryStore()
      const traced = ThrottleBackend.ThrottleBackend.of({
        name: "traced",
        run: (requests, mode) =>
          Effect.flatMap(Effect.option(Effect.currentSpan), (span) => {
            seen.push(
              Option.isSome(span)
                ? { name: span.value.name, attributes: Object.fromEntries(span.value.attributes) }
                : undefined
            )
            return Effect.map(Effect.clockWith((clock) => clock.currentTimeMillis), (now) =>
              store.run(requests, mode, now))
          }),
        health: Effect.die("unused")
      })
      return Effect.gen(function*() {
        const one = yield* Throttle.make({ uid: uid("traced"), rate: "5/min", spans: true })
        const two = yield* Throttle.make({ uid: uid("traced"), rate: "50/day" })
        yield* withTenant(one.check(), "acme")
        yield* Throttle.peekAll([one, two])
        yield* two.check() // no spans asked for: none
        assert.deepStrictEqual(seen, [
          {
            name: "Throttle.check",
            attributes: { "throttle.backend": "traced", "tenant.id": "acme", "throttle.uid": one.uid }
          },
          { name: "Throttle.peekAll", attributes: { "throttle.backend": "traced" } },
          undefined
        ])
      }).pipe(Effect.provideService(ThrottleBackend.ThrottleBackend, traced), Effect.provide(tenants))
    })

    it.scoped("fail-open warns once per backend every 10 s, with the count of warnings held back", () => {
      const { backend, state } = switchable(uid("sampled"))
      const warnings: Array<{ readonly message: string; readonly suppressed: Option.Option<unknown> }> = []
      const capture = Logger.make(({ annotations, logLevel, message }) => {
        if (logLevel._tag !== "Warning") return
        const parts = Array.isArray(message) ? message : [message]
        warnings.push({ message: String(parts[0]), suppressed: HashMap.get(annotations, "suppressed") })
      })
      const latency = Throttle.metrics.backendLatency.pipe(Metric.tagged("backend", backend.name))
      return Effect.gen(function*() {
        state.down = true
        const open = yield* Throttle.make({ uid: uid("open"), rate: "1/min", onBackendError: "fail-open" })
        for (let i = 0; i < 5; i++) assert.isTrue((yield* open.check()).allowed)
        assert.strictEqual((yield* Metric.value(latency)).count, 5, "failed calls are timed too")
        assert.strictEqual(warnings.length, 1)
        assert.include(warnings[0].message, "fail-open")
        assert.isTrue(Option.isNone(warnings[0].suppressed))
        yield* TestClock.adjust("9 seconds")
        yield* open.check()
        assert.strictEqual(warnings.length, 1)
        yield* TestClock.adjust("1 second")
        yield* open.check()
        assert.strictEqual(warnings.length, 2)
        assert.deepStrictEqual(warnings[1].suppressed, Option.some(5))
      }).pipe(
        Effect.provideService(ThrottleBackend.ThrottleBackend, backend),
        Effect.provide(Logger.replace(Logger.defaultLogger, capture))
      )
    })

    it.scoped("insurance: answers from the fallback, opens the circuit, probes after resetAfter, closes", () =>
      Effect.gen(function*() {
        const primary = switchable()
        const insurance = yield* ThrottleBackend.makeMemory()
        const insured = ThrottleBackend.withInsurance(primary.backend, insurance.backend, {
          failures: 2,
          resetAfter: "10 seconds"
        })
        const throttle = yield* Throttle.make({ uid: uid("insured"), rate: "100/day" })
        const check = throttle.check().pipe(Effect.provideService(ThrottleBackend.ThrottleBackend, insured))
        yield* check
        assert.strictEqual(primary.state.calls, 1)
        primary.state.down = true
        yield* check
        yield* check
        assert.strictEqual(yield* insured.circuit, "open")
        const callsWhenOpened = primary.state.calls
        for (let i = 0; i < 10; i++) assert.isTrue((yield* check).allowed)
        assert.strictEqual(primary.state.calls, callsWhenOpened, "an open circuit does not call the primary")
        primary.state.down = false
        yield* TestClock.adjust("10 seconds")
        assert.strictEqual(yield* insured.circuit, "half-open")
        const probe = yield* check
        assert.strictEqual(probe.remaining, 98, "answered by the primary: its own count")
        assert.strictEqual(yield* insured.circuit, "closed")
      }))
  })

  describe("metrics", () => {
    it.scoped("counts allowed and rejected checks per throttle and tenant", () =>
      Effect.gen(function*() {
        const throttle = yield* Throttle.make({ uid: uid("metrics"), rate: "2/min" })
        for (let i = 0; i < 3; i++) yield* Effect.either(withTenant(throttle.check(), "acme"))
        const counter = (metric: Metric.Metric.Counter<number>) =>
          Metric.value(metric.pipe(Metric.tagged("throttle", throttle.uid), Metric.tagged("tenant", "acme")))
        assert.strictEqual((yield* counter(Throttle.metrics.allowed)).count, 2)
        assert.strictEqual((yield* counter(Throttle.metrics.rejected)).count, 1)
        const { backend, state } = switchable()
        state.down = true
        yield* Effect.either(withTenant(throttle.check(), "acme")).pipe(
          Effect.provideService(ThrottleBackend.ThrottleBackend, backend)
        )
        assert.strictEqual((yield* counter(Throttle.metrics.backendErrors)).count, 1)
        assert.strictEqual((yield* counter(Throttle.metrics.rejected)).count, 1, "a backend error is not a rejection")
      }).pipe(Effect.provide(Layer.merge(memory, tenants))))
  })

  describe("memory backend bound", () => {
    it.scoped("keeps at most maxKeys keys, dropping the least recently used", () =>
      Effect.gen(function*() {
        const memory = yield* ThrottleBackend.makeMemory({ maxKeys: 3 })
        const throttle = yield* Throttle.make({ uid: uid("lru"), rate: "1/min" })
        const check = (identifier: string) =>
          Effect.either(throttle.check({ identifier })).pipe(
            Effect.provideService(ThrottleBackend.ThrottleBackend, memory.backend)
          )
        for (const id of ["a", "b", "c"]) yield* check(id)
        // A refused check is a use too: the key being hammered is the last one dropped.
        assert.isTrue(Either.isLeft(yield* check("a")), "a is counted")
        yield* check("d") // evicts the least recently used: b
        assert.strictEqual((yield* memory.stats).keys, 3)
        assert.strictEqual((yield* memory.stats).evicted, 1)
        assert.isTrue(Either.isLeft(yield* check("a")), "a is still refused: its counter was kept")
        assert.isTrue(Either.isRight(yield* check("b")), "b was evicted and starts again")
        yield* TestClock.adjust("59 seconds")
        assert.strictEqual(yield* memory.sweep, 0, "nothing has expired yet")
        yield* TestClock.adjust("1 minute") // the background sweep runs every 10 seconds
        assert.strictEqual((yield* memory.stats).keys, 0)
        assert.strictEqual((yield* memory.stats).swept, 3)
      }))
  })
})
