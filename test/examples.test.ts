import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type MockInstance, vi } from "vitest"
import { program as quickstart } from "../examples/quickstart.js"
import { program as stores } from "../examples/stores.js"
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

  it.live("the tour runs to the end", () =>
    Effect.gen(function*() {
      const result = yield* tour
      assert.strictEqual(result.mismatches, 0)
      assert.strictEqual(result.stats.totalTenants, 2)
      assert.strictEqual(result.stats.activeSwitches, 0)
      assert.include(result.events.join(" "), "TenantUnregistered(initech)")
      assert.deepStrictEqual(result.http.map((r) => r.status), [200, 200, 200, 403, 404, 401, 403, 401, 200])
    }))
})
