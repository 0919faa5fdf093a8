import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type MockInstance, vi } from "vitest"
import { program as quickstart } from "../examples/quickstart.js"
import { program as stores } from "../examples/stores.js"
import { demo as throttle } from "../examples/throttle.js"
import { tour } from "../examples/tour.js"

// The examples print for people; keep the test output readable.
let silenced: MockInstance | undefined
beforeAll(() => {
  silenced = vi.spyOn(globalThis.console, "log").mockImplementation(() => {})
})
afterAll(() => silenced?.mockRestore())

describe("examples", () => {
  it.live("quickstart runs", () =>
    Effect.gen(function*() {
      const [acme, globex, refused] = yield* quickstart
      assert.strictEqual(acme, "Acme Corporation (acme) on the enterprise tier")
      assert.strictEqual(globex, "Globex Inc (globex) on the free tier")
      assert.strictEqual(refused, "TenantSuspended")
    }))

  it.live("stores: the registry on Postgres behind the Redis cache", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* stores, "TenantSuspended")
    }))

  it.live("throttle: two throttles behind the tenancy middleware, a backend per tier", () =>
    Effect.gen(function*() {
      const outcomes = yield* throttle
      assert.deepStrictEqual(outcomes.map((o) => o.status), [200, 200, 200, 200, 200, 429, 200, 200])
      const refused = outcomes[5]
      assert.match(refused.retryAfter ?? "", /^[1-9][0-9]*$/, "the 429 says when to retry, in whole seconds")
      assert.include(refused.rateLimit ?? "", "r=0", "the refused policy shows nothing remaining")
    }))

  it.live("the tour runs to the end", () =>
    Effect.gen(function*() {
      const result = yield* tour
      assert.strictEqual(result.mismatches, 0)
      assert.strictEqual(result.stats.totalTenants, 2)
      assert.strictEqual(result.stats.activeSwitches, 0)
      assert.include(result.events.join(" "), "TenantUnregistered(initech)")
      assert.deepStrictEqual(result.http.map((r) => r.status), [200, 200, 200, 403, 404, 401, 403, 401, 200])
      assert.deepStrictEqual(
        result.throttling.map((outcome) => outcome.split(" ")[0]),
        ["allowed", "allowed", "allowed", "allowed", "allowed", "429", "allowed"],
        "globex's sixth request is refused by the per-minute throttle; acme's tier has its own counters"
      )
      // Without TENANCY_DATABASE_URL the tour starts an embedded Postgres: that path is what `npm start` runs.
      assert.isDefined(result.isolation, "the isolation section ran")
      assert.strictEqual(result.isolation?.acme.strategy, "schema")
      assert.strictEqual(result.isolation?.globex.strategy, "rls")
      assert.strictEqual(result.isolation?.withoutTenant, 0)
      assert.isTrue(result.isolation?.refused)
    }), 120_000)
})
