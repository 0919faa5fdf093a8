/**
 * The conformance suite of `TenantApiKeyStore`, run against every
 * implementation. The layer must also provide the `TenantStore` the keys'
 * tenants live in.
 */
import { assert, describe, it } from "@effect/vitest"
import { DateTime, Effect, type Layer, Option, Redacted } from "effect"
import { Tenant, unsafeMakeTenantId } from "effect-tenancy/Tenant"
import { TenantApiKeyStore } from "effect-tenancy/TenantApiKey"
import { TenantStore } from "effect-tenancy/TenantStore"

const randomPrefix = () => `k${Math.random().toString(36).slice(2, 8)}`

const createTenant = (id: string) =>
  Effect.flatMap(TenantStore, (store) =>
    store.create(
      new Tenant({
        id: unsafeMakeTenantId(id),
        identifier: unsafeMakeTenantId(id),
        name: id,
        status: "active",
        tier: "free",
        metadata: {},
        createdAt: DateTime.unsafeMake(0),
        updatedAt: DateTime.unsafeMake(0),
        version: 0
      })
    ))

export const suite = <E>(name: string, layer: Layer.Layer<TenantStore | TenantApiKeyStore, E>) =>
  describe(`TenantApiKeyStore conformance: ${name}`, () => {
    it.layer(layer, { timeout: "30 seconds" })((it) => {
      it.effect("a created key looks up to its tenant; only the hash is kept", () =>
        Effect.gen(function*() {
          const keys = yield* TenantApiKeyStore
          const p = randomPrefix()
          const tenant = yield* createTenant(`${p}-acme`)
          const created = yield* keys.create({ tenantId: tenant.id, name: "ci" })
          const plaintext = Redacted.value(created.key)
          assert.match(plaintext, /^tnk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/)
          assert.notInclude(String(created.key), plaintext, "the key is redacted when printed")
          assert.strictEqual(created.info.tenantId, tenant.id)
          assert.strictEqual(created.info.name, "ci")
          assert.isTrue(plaintext.startsWith(created.info.displayPrefix.replace("…", "")))
          assert.notInclude(JSON.stringify(created.info), plaintext.slice(18))
          const found = yield* keys.lookup(created.key)
          assert.strictEqual(Option.getOrThrow(found).tenantId, tenant.id)
          const foundByString = yield* keys.lookup(plaintext)
          assert.strictEqual(Option.getOrThrow(foundByString).keyId, created.info.keyId)
        }))

      it.effect("malformed, unknown, tampered and revoked keys all answer None", () =>
        Effect.gen(function*() {
          const keys = yield* TenantApiKeyStore
          const p = randomPrefix()
          const tenant = yield* createTenant(`${p}-globex`)
          const created = yield* keys.create({ tenantId: tenant.id })
          const plaintext = Redacted.value(created.key)
          const last = plaintext[plaintext.length - 1]
          const tampered = plaintext.slice(0, -1) + (last === "A" ? "B" : "A")
          const unknown = `tnk_zzzzzzzzzzzz_${plaintext.slice(-43)}`
          for (const candidate of ["", "nonsense", "tnk_", `${plaintext}x`, tampered, unknown, "' OR 1=1 --"]) {
            assert.isTrue(Option.isNone(yield* keys.lookup(candidate)), candidate)
          }
          const revoked = yield* keys.revoke(created.info.keyId)
          assert.isTrue(revoked.isRevoked)
          assert.isTrue(Option.isNone(yield* keys.lookup(created.key)))
          const again = yield* Effect.flip(keys.revoke(created.info.keyId))
          assert.strictEqual(again._tag, "ApiKeyNotFound")
        }))

      it.effect("keys belong to existing tenants and are listed per tenant", () =>
        Effect.gen(function*() {
          const keys = yield* TenantApiKeyStore
          const p = randomPrefix()
          const missing = yield* Effect.flip(keys.create({ tenantId: unsafeMakeTenantId(`${p}-nobody`) }))
          assert.strictEqual(missing._tag, "TenantNotFound")
          const a = yield* createTenant(`${p}-a`)
          const b = yield* createTenant(`${p}-b`)
          const first = yield* keys.create({ tenantId: a.id, name: "first" })
          yield* keys.create({ tenantId: a.id, name: "second" })
          yield* keys.create({ tenantId: b.id, name: "other" })
          yield* keys.revoke(first.info.keyId)
          const listed = yield* keys.list(a.id)
          assert.deepStrictEqual(listed.map((k) => [k.name, k.isRevoked]), [["first", true], ["second", false]])
          assert.deepStrictEqual((yield* keys.list(b.id)).map((k) => k.name), ["other"])
        }))
    })
  })
