import { assert, describe, it } from "@effect/vitest"
import { DateTime, Effect, Either, FastCheck as fc, Schema } from "effect"
import * as Tenant from "effect-tenancy/Tenant"
import { InvalidTenantId } from "effect-tenancy/TenantError"

const validId = fc.tuple(
  fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz"),
  fc.array(fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789-"), { minLength: 1, maxLength: 61 }),
  fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789")
).map(([head, middle, last]) => head + middle.join("") + last).filter((s) => !s.startsWith("pg-"))

const hostile = [
  "",
  "a",
  "ab",
  "pg_x",
  "pg-catalog",
  "Acme",
  "acme-",
  "-acme",
  "1acme",
  "acme corp",
  "acme_corp",
  "acme'; DROP TABLE tenants; --",
  "acme\"",
  "acme\u0000x",
  "acmé",
  "аcme", // Cyrillic a
  "acme\n",
  "a".repeat(64),
  "a".repeat(10_000),
  "../etc/passwd",
  "{t:acme}"
]

describe("TenantId", () => {
  it.prop("accepts every valid id", [validId], ([id]) => {
    assert.isTrue(Tenant.isTenantId(id))
    assert.isTrue(Either.isRight(Tenant.decodeTenantId(id)))
    assert.isTrue(Either.isRight(Schema.decodeUnknownEither(Tenant.TenantId)(id)))
  }, { fastCheck: { numRuns: 500 } })

  it.prop("rejects strings with a character outside [a-z0-9-]", [
    validId,
    fc.nat(),
    fc.string({ unit: "binary", minLength: 1, maxLength: 3 }).filter((s) => /[^a-z0-9-]/.test(s))
  ], ([id, at, bad]) => {
    const i = at % (id.length + 1)
    const candidate = id.slice(0, i) + bad + id.slice(i)
    const result = Tenant.decodeTenantId(candidate)
    assert.isTrue(Either.isLeft(result))
    assert.isFalse(Tenant.isTenantId(candidate))
  }, { fastCheck: { numRuns: 500 } })

  for (const input of hostile) {
    it.effect(`rejects ${JSON.stringify(input.slice(0, 30))}${input.length > 30 ? "…" : ""}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Tenant.makeTenantId(input))
        assert.instanceOf(error, InvalidTenantId)
        assert.strictEqual(error._tag, "InvalidTenantId")
        assert.isAtMost(error.input.length, 65)
        assert.isTrue(error.message.startsWith("Invalid tenant id"))
        assert.isTrue(Either.isLeft(Schema.decodeUnknownEither(Tenant.TenantId)(input)))
      }))
  }

  it("rejects non-strings without throwing", () => {
    for (const input of [undefined, null, 42, {}, ["acme"]]) {
      const result = Tenant.decodeTenantId(input)
      assert.isTrue(Either.isLeft(result))
      assert.isFalse(Tenant.isTenantId(input))
    }
  })

  it("names the rule that failed", () => {
    const tooShort = Tenant.decodeTenantId("ab")
    const reserved = Tenant.decodeTenantId("pg-stats")
    assert.isTrue(Either.isLeft(tooShort) && tooShort.left.reason.includes("at least 3"))
    assert.isTrue(Either.isLeft(reserved) && reserved.left.reason.includes("pg-"))
  })
})

describe("TenantStatus", () => {
  const all = Tenant.TenantStatus.literals
  const legal = new Set([
    "provisioning>active",
    "provisioning>deleting",
    "active>suspended",
    "suspended>active",
    "suspended>deleting",
    "deleting>deleted"
  ])

  it("allows exactly the lifecycle transitions", () => {
    for (const from of all) {
      for (const to of all) {
        assert.strictEqual(Tenant.canTransition(from, to), legal.has(`${from}>${to}`), `${from} -> ${to}`)
      }
    }
  })

  it("transition bumps the version, or fails with InvalidStatusTransition", () => {
    const now = DateTime.unsafeMake(0)
    const later = DateTime.unsafeMake(1000)
    const tenant = makeTenant({ status: "active", createdAt: now, updatedAt: now })
    const suspended = Tenant.transition(tenant, "suspended", later)
    assert.isTrue(Either.isRight(suspended))
    if (Either.isRight(suspended)) {
      assert.strictEqual(suspended.right.status, "suspended")
      assert.strictEqual(suspended.right.version, tenant.version + 1)
      assert.isTrue(DateTime.Equivalence(suspended.right.updatedAt, later))
    }
    const illegal = Tenant.transition(tenant, "deleted", later)
    assert.isTrue(Either.isLeft(illegal))
    if (Either.isLeft(illegal)) {
      assert.strictEqual(illegal.left._tag, "InvalidStatusTransition")
      assert.strictEqual(illegal.left.from, "active")
      assert.strictEqual(illegal.left.to, "deleted")
    }
  })
})

const makeTenant = (overrides: Partial<ConstructorParameters<typeof Tenant.Tenant>[0]> = {}) =>
  new Tenant.Tenant({
    id: Tenant.unsafeMakeTenantId("acme"),
    identifier: Tenant.unsafeMakeTenantId("acme"),
    name: "Acme Corporation",
    status: "active",
    tier: "enterprise",
    metadata: { region: "eu-west-1", seats: 50, flags: ["beta"], billing: { plan: null } },
    createdAt: DateTime.unsafeMake("2026-01-01T00:00:00Z"),
    updatedAt: DateTime.unsafeMake("2026-01-02T00:00:00Z"),
    version: 3,
    ...overrides
  })

describe("Tenant", () => {
  it.effect("round-trips through JSON", () =>
    Effect.gen(function*() {
      const tenant = makeTenant()
      const json = yield* Schema.encode(Tenant.TenantFromJson)(tenant)
      const parsed = JSON.parse(json)
      assert.strictEqual(parsed.createdAt, "2026-01-01T00:00:00.000Z")
      assert.strictEqual(parsed.metadata.seats, 50)
      const back = yield* Schema.decode(Tenant.TenantFromJson)(json)
      assert.instanceOf(back, Tenant.Tenant)
      assert.deepStrictEqual(Schema.encodeSync(Tenant.Tenant)(back), Schema.encodeSync(Tenant.Tenant)(tenant))
      assert.isTrue(back.isActive)
    }))

  it.effect("refuses records that break the schema", () =>
    Effect.gen(function*() {
      const encoded = Schema.encodeSync(Tenant.Tenant)(makeTenant())
      const cases: Array<unknown> = [
        { ...encoded, id: "Not Valid" },
        { ...encoded, name: "   " },
        { ...encoded, tier: "has space" },
        { ...encoded, status: "archived" },
        { ...encoded, version: -1 },
        { ...encoded, metadata: { n: Number.NaN } },
        { ...encoded, createdAt: "yesterday" }
      ]
      for (const input of cases) {
        const result = Schema.decodeUnknownEither(Tenant.Tenant)(input)
        assert.isTrue(Either.isLeft(result), JSON.stringify(input))
      }
    }))
})
