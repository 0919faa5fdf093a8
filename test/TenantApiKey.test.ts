import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as ApiKey from "effect-tenancy/TenantApiKey"
import * as TenantStore from "effect-tenancy/TenantStore"
import { suite } from "./suites/TenantApiKeySuite.js"

suite("memory", Layer.provideMerge(ApiKey.layerMemory, TenantStore.layerMemory))

describe("TenantApiKey helpers", () => {
  it.effect("keys are random and well formed; hashes are SHA-256 hex", () =>
    Effect.gen(function*() {
      const a = yield* ApiKey.generate
      const b = yield* ApiKey.generate
      assert.notStrictEqual(a.key, b.key)
      assert.deepStrictEqual(ApiKey.parseKeyId(a.key), Option.some(a.keyId))
      assert.strictEqual(
        yield* ApiKey.hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
      )
    }))

  it("constantTimeEquals compares whole strings", () => {
    assert.isTrue(ApiKey.constantTimeEquals("abcdef", "abcdef"))
    assert.isFalse(ApiKey.constantTimeEquals("abcdef", "abcdeg"))
    assert.isFalse(ApiKey.constantTimeEquals("abcdef", "abcde"))
    assert.isFalse(ApiKey.constantTimeEquals("", "a"))
    assert.isTrue(ApiKey.constantTimeEquals("", ""))
  })
})
