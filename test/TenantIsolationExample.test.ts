/**
 * examples/isolation.ts runs end to end against the local PostgreSQL: the
 * premium tenant lives in its schema, the standard one in the shared RLS
 * table, and nothing is visible without a tenant.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type MockInstance, vi } from "vitest"
import { main } from "../examples/isolation.js"

let silenced: MockInstance | undefined
beforeAll(() => {
  silenced = vi.spyOn(globalThis.console, "log").mockImplementation(() => {})
})
afterAll(() => silenced?.mockRestore())

describe("examples/isolation", () => {
  it.live("hybrid: premium → schema, standard → rls, fail closed without a tenant", () =>
    Effect.gen(function*() {
      const result = yield* main
      assert.deepStrictEqual(result.acme, {
        strategy: "schema",
        notes: ["a note of Acme", "a note of Acme"]
      })
      assert.deepStrictEqual(result.globex, {
        strategy: "rls",
        notes: ["a note of Globex", "a note of Globex"]
      })
      assert.strictEqual(result.withoutTenant, 0)
      assert.isTrue(result.refused)
      assert.strictEqual(result.inAcmeSchema, 2)
      assert.strictEqual(result.inSharedTable, 2)
    }), { timeout: 60_000 })
})
