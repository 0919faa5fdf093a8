/**
 * API keys that authenticate a request as a tenant.
 *
 * A key is `tnk_<keyId>_<secret>`: `keyId` (12 characters) is public, shown
 * in listings and used to find the key; `secret` (32 random bytes, base64url)
 * is shown once, at creation. Stores keep only the SHA-256 hash of the whole
 * key and compare hashes in constant time. Lookups of malformed, unknown and
 * revoked keys all answer `None`, so a caller cannot tell them apart.
 *
 * Hashing and randomness use Web Crypto (`globalThis.crypto`), so this module
 * needs nothing but `effect`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Encoding from "effect/Encoding"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { TenantId } from "./Tenant.js"
import { TenantNotFound, type TenantStoreError } from "./TenantError.js"
import { TenantStore } from "./TenantStore.js"

/**
 * The public description of a key: never the key or its hash.
 *
 * @since 0.1.0
 * @category models
 */
export class ApiKeyInfo extends Schema.Class<ApiKeyInfo>("effect-tenancy/ApiKeyInfo")({
  keyId: Schema.String,
  tenantId: TenantId,
  name: Schema.String,
  /** What to show for the key in a listing: `tnk_<keyId>_…`. */
  displayPrefix: Schema.String,
  createdAt: Schema.DateTimeUtc,
  revokedAt: Schema.OptionFromNullOr(Schema.DateTimeUtc)
}) {
  /**
   * @since 0.1.0
   */
  get isRevoked(): boolean {
    return Option.isSome(this.revokedAt)
  }
}

/**
 * The revoked or unknown key id given to `revoke`.
 *
 * @since 0.1.0
 * @category errors
 */
export class ApiKeyNotFound extends Schema.TaggedError<ApiKeyNotFound>("effect-tenancy/ApiKeyNotFound")(
  "ApiKeyNotFound",
  { keyId: Schema.String }
) {
  /** @since 0.1.0 */
  override get message(): string {
    return `API key ${JSON.stringify(this.keyId.slice(0, 32))} was not found`
  }
}

/**
 * A new key: the plaintext (shown once, then only its hash exists) and its description.
 *
 * @since 0.1.0
 * @category models
 */
export interface CreatedApiKey {
  readonly key: Redacted.Redacted<string>
  readonly info: ApiKeyInfo
}

/**
 * The key store.
 *
 * @since 0.1.0
 * @category tags
 */
export class TenantApiKeyStore extends Context.Tag("effect-tenancy/TenantApiKeyStore")<TenantApiKeyStore, {
  /** Creates a key for an existing tenant. */
  readonly create: (
    options: { readonly tenantId: TenantId; readonly name?: string | undefined }
  ) => Effect.Effect<CreatedApiKey, TenantNotFound | TenantStoreError>
  /** The key's description, if it is well formed, known and not revoked. */
  readonly lookup: (
    key: Redacted.Redacted<string> | string
  ) => Effect.Effect<Option.Option<ApiKeyInfo>, TenantStoreError>
  /** Revokes a key; later lookups of it answer `None`. */
  readonly revoke: (keyId: string) => Effect.Effect<ApiKeyInfo, ApiKeyNotFound | TenantStoreError>
  /** The keys of a tenant, revoked ones included, oldest first. */
  readonly list: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<ApiKeyInfo>, TenantStoreError>
}>() {}

const keyPattern = /^tnk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/
const keyIdAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

/**
 * A new random key and its parts.
 *
 * @since 0.1.0
 * @category constructors
 */
export const generate: Effect.Effect<{ readonly key: string; readonly keyId: string }> = Effect.sync(() => {
  const idBytes = crypto.getRandomValues(new Uint8Array(12))
  const keyId = Array.from(idBytes, (b) => keyIdAlphabet[b % keyIdAlphabet.length]).join("")
  const secret = Encoding.encodeBase64Url(crypto.getRandomValues(new Uint8Array(32)))
  return { key: `tnk_${keyId}_${secret}`, keyId }
})

/**
 * The key id of a well-formed key.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseKeyId = (key: string): Option.Option<string> => {
  const match = keyPattern.exec(key)
  return match === null ? Option.none() : Option.some(match[1])
}

/**
 * The SHA-256 of a key, as lowercase hex.
 *
 * @since 0.1.0
 * @category hashing
 */
export const hash = (key: string): Effect.Effect<string> =>
  Effect.promise(() => crypto.subtle.digest("SHA-256", new TextEncoder().encode(key))).pipe(
    Effect.map((digest) => Encoding.encodeHex(new Uint8Array(digest)))
  )

/**
 * Compares two strings in time that depends on their length only.
 *
 * @since 0.1.0
 * @category hashing
 */
export const constantTimeEquals = (a: string, b: string): boolean => {
  const length = Math.max(a.length, b.length)
  let diff = a.length ^ b.length
  for (let i = 0; i < length; i++) {
    diff |= (a.charCodeAt(i) | 0) ^ (b.charCodeAt(i) | 0)
  }
  return diff === 0
}

/**
 * Display prefix of a key id.
 *
 * @since 0.1.0
 * @category constructors
 */
export const displayPrefix = (keyId: string): string => `tnk_${keyId}_…`

/**
 * Checks a presented key against a stored record found by its key id:
 * well formed, hash equal (constant time), not revoked.
 *
 * @since 0.1.0
 * @category hashing
 */
export const verify = (
  presented: string,
  stored: { readonly keyHash: string; readonly info: ApiKeyInfo }
): Effect.Effect<Option.Option<ApiKeyInfo>> =>
  Effect.map(hash(presented), (computed) =>
    constantTimeEquals(computed, stored.keyHash) && !stored.info.isRevoked
      ? Option.some(stored.info)
      : Option.none())

/**
 * An in-memory key store over the `TenantStore` in context (to check that
 * tenants exist).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<TenantApiKeyStore["Type"], never, TenantStore> = Effect.gen(function*() {
  const tenants = yield* TenantStore
  // A Map keeps insertion order: `list` returns keys oldest first without sorting.
  const keys = new Map<string, { keyHash: string; info: ApiKeyInfo }>()

  return TenantApiKeyStore.of({
    create: ({ name, tenantId }) =>
      Effect.gen(function*() {
        const tenant = yield* tenants.get(tenantId)
        if (Option.isNone(tenant)) return yield* new TenantNotFound({ tenantId })
        const { key, keyId } = yield* generate
        const info = new ApiKeyInfo({
          keyId,
          tenantId,
          name: name ?? "",
          displayPrefix: displayPrefix(keyId),
          createdAt: yield* DateTime.now,
          revokedAt: Option.none()
        })
        keys.set(keyId, { keyHash: yield* hash(key), info })
        return { key: Redacted.make(key), info }
      }),
    lookup: (input) => {
      const presented = Redacted.isRedacted(input) ? Redacted.value(input) : input
      return Option.match(parseKeyId(presented), {
        onNone: () => Effect.succeedNone,
        onSome: (keyId) => {
          const stored = keys.get(keyId)
          return stored === undefined ? Effect.succeedNone : verify(presented, stored)
        }
      })
    },
    revoke: (keyId) =>
      Effect.gen(function*() {
        const stored = keys.get(keyId)
        if (stored === undefined || stored.info.isRevoked) return yield* new ApiKeyNotFound({ keyId })
        const info = new ApiKeyInfo({ ...stored.info, revokedAt: Option.some(yield* DateTime.now) })
        keys.set(keyId, { keyHash: stored.keyHash, info })
        return info
      }),
    list: (tenantId) =>
      Effect.sync(() => Array.from(keys.values(), (k) => k.info).filter((info) => info.tenantId === tenantId))
  })
})

/**
 * The in-memory key store, over the `TenantStore` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<TenantApiKeyStore, never, TenantStore> = Layer.effect(
  TenantApiKeyStore,
  makeMemory
)
