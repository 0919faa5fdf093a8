/**
 * A read-through cache in front of any `TenantStore`, in two levels: an
 * in-process `Cache` (L1) and Redis (L2, shared by every instance).
 *
 * - Reads go L1 → Redis → primary store. Concurrent reads of one key in one
 *   instance share a single lookup. "Not found" is cached too, briefly, so a
 *   flood of unknown ids does not reach the primary.
 * - Writes go to the primary first, then invalidate: the Redis entries of the
 *   tenant are replaced by short-lived tombstones, the local L1 entries are
 *   dropped, and a message on `${prefix}:tenant-invalidate` tells every other
 *   instance to drop its L1 entries. A write returns after the local
 *   invalidation, so a read that follows it in the same instance sees it.
 * - Redis is an optimisation, never a dependency: every command is bounded by
 *   `redisTimeout`, and when Redis fails or is slow, reads are served by the
 *   primary and writes still succeed (with a warning and a metric).
 * - `list` and `count` are not cached.
 * - Metrics: see `metrics`.
 *
 * Redis keys are `${prefix}:tenant:{<id>}` and `${prefix}:tenant-ident:{<identifier>}`.
 * The library issues only GET, SET (with PX, and NX when filling the cache),
 * DEL, PUBLISH, SUBSCRIBE, UNSUBSCRIBE and PING; it never scans the keyspace.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { Cluster, Redis } from "ioredis"
import { HealthStatus } from "../Health.js"
import { makeSampledWarning } from "../internal/sampledWarning.js"
import { RedisClient } from "../RedisClient.js"
import { isTenantId, type Tenant, TenantFromJson, type TenantId } from "../Tenant.js"
import type { TenantStoreError } from "../TenantError.js"
import { TenantStore } from "../TenantStore.js"

/**
 * Options of the cache. Every field has a default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The namespace of the Redis keys and of the invalidation channel:
   * 1 to 64 characters of `[A-Za-z0-9:_-]`. Default `"tenancy"`.
   */
  readonly prefix?: string | undefined
  /** How long Redis keeps a tenant record. Default 5 minutes. */
  readonly ttl?: Duration.DurationInput | undefined
  /** How long Redis (and L1) keep a "not found" answer. Default 5 seconds. */
  readonly negativeTtl?: Duration.DurationInput | undefined
  /**
   * How long an instance keeps a tenant in memory. This also bounds how stale
   * an instance can be when it misses an invalidation message (Redis
   * unreachable, subscriber reconnecting). Zero turns the in-process level off:
   * every read goes to Redis, and no subscriber connection is needed. Default
   * 10 seconds.
   */
  readonly localTtl?: Duration.DurationInput | undefined
  /** How many lookups an instance keeps in memory. Default 10 000. */
  readonly localCapacity?: number | undefined
  /** The longest a single Redis command may take before it counts as failed. Default 100 millis. */
  readonly redisTimeout?: Duration.DurationInput | undefined
  /**
   * The connection to receive invalidation messages on. Redis pub/sub needs a
   * dedicated connection, so this must not be the `RedisClient` connection
   * itself. When omitted, the cache opens one with `client.duplicate()` and
   * closes it when the layer's scope closes: this is the only connection
   * effect-tenancy ever opens by itself (and it is not opened when `localTtl`
   * is zero). A connection given here stays the caller's to close; the cache
   * unsubscribes from its channel when its scope closes.
   */
  readonly subscriber?: Redis | Cluster | undefined
}

/**
 * The counters the cache reports. `redisErrors` counts failed or timed-out
 * Redis commands (reads then fall through to the primary store).
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  l1Hits: Metric.counter("tenancy_tenant_cache_l1_hits_total", {
    description: "Tenant lookups answered by the in-process cache",
    incremental: true
  }),
  l2Hits: Metric.counter("tenancy_tenant_cache_l2_hits_total", {
    description: "Tenant lookups answered by Redis",
    incremental: true
  }),
  misses: Metric.counter("tenancy_tenant_cache_misses_total", {
    description: "Tenant lookups that neither the in-process cache nor Redis could answer",
    incremental: true
  }),
  primaryLoads: Metric.counter("tenancy_tenant_cache_primary_loads_total", {
    description: "Tenant lookups read from the primary store by the cache",
    incremental: true
  }),
  redisErrors: Metric.counter("tenancy_tenant_cache_redis_errors_total", {
    description: "Redis commands of the tenant cache that failed or timed out",
    incremental: true
  })
} as const

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

const prefixPattern = /^[A-Za-z0-9:_-]{1,64}$/

interface Settings {
  readonly prefix: string
  readonly ttl: Duration.Duration
  readonly negativeTtl: Duration.Duration
  readonly localTtl: Duration.Duration
  readonly localCapacity: number
  readonly redisTimeout: Duration.Duration
}

interface InvalidOption {
  readonly option: string
  readonly message: string
}

const duration = (
  option: string,
  input: Duration.DurationInput | undefined,
  fallback: Duration.DurationInput,
  minimum: { readonly millis: number; readonly message: string } = {
    millis: 1,
    message: "must be a finite duration of at least 1 millisecond"
  }
): Either.Either<Duration.Duration, InvalidOption> => {
  const decoded = Duration.decodeUnknown(input ?? fallback)
  return Option.isSome(decoded) && Duration.isFinite(decoded.value) &&
      Duration.toMillis(decoded.value) >= minimum.millis
    ? Either.right(decoded.value)
    : Either.left({ option, message: minimum.message })
}

const settings = (options: Omit<Options, "subscriber">): Either.Either<Settings, InvalidOption> =>
  Either.gen(function*() {
    const prefix = options.prefix ?? "tenancy"
    if (!prefixPattern.test(prefix)) {
      return yield* Either.left({ option: "prefix", message: "must be 1 to 64 characters of [A-Za-z0-9:_-]" })
    }
    const localCapacity = options.localCapacity ?? 10_000
    if (!Number.isSafeInteger(localCapacity) || localCapacity < 1) {
      return yield* Either.left({ option: "localCapacity", message: "must be a positive integer" })
    }
    return {
      prefix,
      localCapacity,
      ttl: yield* duration("ttl", options.ttl, Duration.minutes(5)),
      negativeTtl: yield* duration("negativeTtl", options.negativeTtl, Duration.seconds(5)),
      localTtl: yield* duration("localTtl", options.localTtl, Duration.seconds(10), {
        millis: 0,
        message: "must be a finite duration (zero turns the in-process level off)"
      }),
      redisTimeout: yield* duration("redisTimeout", options.redisTimeout, Duration.millis(100))
    }
  })

// -----------------------------------------------------------------------------
// Keys and values
// -----------------------------------------------------------------------------

/** What a lookup is keyed by: a tenant id, or a public identifier. */
class CacheKey extends Data.Class<{ readonly kind: "id" | "identifier"; readonly name: TenantId }> {}

// The braces are Redis Cluster hash tags: every key about one name lands in one slot.
const redisKey = (prefix: string, key: CacheKey): string =>
  key.kind === "id" ? `${prefix}:tenant:{${key.name}}` : `${prefix}:tenant-ident:{${key.name}}`

const redisKeyPattern = /^(.+):(tenant|tenant-ident):\{([^{}]+)\}$/

const parseRedisKey = (prefix: string, key: string): CacheKey | undefined => {
  const match = redisKeyPattern.exec(key)
  if (match === null || match[1] !== prefix || !isTenantId(match[3])) return undefined
  return new CacheKey({ kind: match[2] === "tenant" ? "id" : "identifier", name: match[3] })
}

// Neither sentinel is valid JSON, so neither can be mistaken for a tenant record.
const notFoundValue = "!not-found"
const tombstoneValue = "!invalidated"

/**
 * How long a tombstone keeps a key from being refilled after a write. A read
 * that began before the write may still be on its way back from the primary
 * with the old record; it fills the cache only with `SET NX`, which fails
 * while the tombstone is there, and it does not fill at all when its primary
 * read took longer than half of this window.
 */
const tombstoneWindow = Duration.seconds(2)
const fillDeadlineMillis = Duration.toMillis(tombstoneWindow) / 2

const pxMillis = (duration: Duration.Duration): number => Math.max(1, Math.round(Duration.toMillis(duration)))

type Cached = Data.TaggedEnum<{
  /** Redis answered: a record, or "not found". */
  Hit: { readonly tenant: Option.Option<Tenant> }
  /** Nothing usable: fill the key after reading the primary. */
  Miss: {}
  /** A write happened moments ago, or Redis did not answer: do not fill the key. */
  Skip: {}
}>
const Cached = Data.taggedEnum<Cached>()

const decodeTenant = Schema.decodeEither(TenantFromJson)
const encodeTenant = Schema.encodeEither(TenantFromJson)

const matchesKey = (key: CacheKey, tenant: Tenant): boolean =>
  key.kind === "id" ? tenant.id === key.name : tenant.identifier === key.name

const InvalidationMessage = Schema.parseJson(Schema.Array(Schema.String))
const decodeInvalidationMessage = Schema.decodeEither(InvalidationMessage)

/** A load of the L1 level: `stale` once an invalidation of its key overlapped it. */
interface Lookup {
  readonly key: string
  stale: boolean
  readonly deferred: Deferred.Deferred<Option.Option<Tenant>, TenantStoreError>
}

// A definite refusal from the primary means nothing was written; any other
// failure (a store error, an interruption) may hide a write that did happen.
const refusals: ReadonlySet<string> = new Set(["TenantNotFound", "TenantConflict", "TenantAlreadyExists"])

const mayHaveWritten = <A, E>(exit: Exit.Exit<A, E>): boolean =>
  Exit.isSuccess(exit) || Option.match(Cause.failureOption(exit.cause), {
    onNone: () => true,
    onSome: (error) =>
      !(typeof error === "object" && error !== null && "_tag" in error && refusals.has(String(error._tag)))
  })

// -----------------------------------------------------------------------------
// Redis commands
// -----------------------------------------------------------------------------

class RedisCommandError extends Data.TaggedError("RedisCommandError")<{
  readonly command: string
  readonly reason: string
}> {}

// Only the message: ioredis errors carry the command's arguments (keys, tenant JSON).
const describeFailure = (cause: unknown): string => {
  const message = cause instanceof Error ? cause.message : String(cause)
  return message.length > 200 ? `${message.slice(0, 200)}…` : message
}

/**
 * Runs one Redis command, failing with `RedisCommandError` when it fails or
 * does not answer within `timeout`. The bound is a timer rather than
 * `Effect.timeout`: it must hold in uninterruptible regions too (the
 * invalidation that follows a write), and a forked race per command would
 * cost about as much as the command itself.
 */
const command = (timeout: Duration.Duration) => {
  const millis = Duration.toMillis(timeout)
  const noReply = `no reply within ${Duration.format(timeout)}`
  return <A>(name: string, run: () => Promise<A>): Effect.Effect<A, RedisCommandError> =>
    Effect.async<A, RedisCommandError>((resume) => {
      let done = false
      const finish = (result: Effect.Effect<A, RedisCommandError>) => {
        if (done) return
        done = true
        clearTimeout(timer)
        resume(result)
      }
      const fail = (reason: string) => finish(Effect.fail(new RedisCommandError({ command: name, reason })))
      const timer = setTimeout(() => fail(noReply), millis)
      try {
        run().then((a) => finish(Effect.succeed(a)), (cause) => fail(describeFailure(cause)))
      } catch (cause) {
        fail(describeFailure(cause))
      }
      return Effect.sync(() => {
        done = true
        clearTimeout(timer)
      })
    })
}

const warn = (error: RedisCommandError, consequence: string) =>
  Effect.zipRight(
    Metric.increment(metrics.redisErrors),
    Effect.logWarning(`Tenant cache: Redis ${error.command} failed (${error.reason}); ${consequence}`)
  )

const annotate = (key: CacheKey) =>
  // Only a tenant id is logged; an identifier lookup is logged without its name.
  key.kind === "id" ? Effect.annotateLogs("tenant.id", key.name) : Effect.annotateLogs("tenant.lookup", "identifier")

// -----------------------------------------------------------------------------
// L1: the in-process level
// -----------------------------------------------------------------------------

interface Local {
  readonly read: (key: CacheKey) => Effect.Effect<Option.Option<Tenant>, TenantStoreError>
  /** Drops the entries of `keys`; lookups of them in flight are not kept either. */
  readonly invalidate: (keys: ReadonlyArray<CacheKey>) => Effect.Effect<void>
  readonly invalidateAll: Effect.Effect<void>
}

// The in-process level is a Map kept in least-recently-used order, with its
// own single flight. (Effect 3.22's `Cache` appends to an internal key list on
// every miss and trims it only past its capacity, so with fewer tenants than
// the capacity and entries that expire, its memory grows without bound.)
const makeLocal = (options: {
  readonly localTtl: Duration.Duration
  readonly negativeTtl: Duration.Duration
  readonly localCapacity: number
  readonly keyOf: (key: CacheKey) => string
  readonly load: (key: CacheKey) => Effect.Effect<Option.Option<Tenant>, TenantStoreError>
}): Effect.Effect<Local> =>
  Effect.sync(() => {
    const { keyOf, load } = options
    const foundTtl = Duration.toMillis(options.localTtl)
    const notFoundTtl = Duration.toMillis(Duration.min(options.localTtl, options.negativeTtl))

    const entries = new Map<string, { readonly tenant: Option.Option<Tenant>; readonly expiresAt: number }>()
    // Loads in flight, by key. An invalidation marks a load stale and forgets
    // it: its result may predate the write, so it is returned to its callers
    // but not kept, and later reads start a fresh load.
    const loads = new Map<string, Lookup>()

    const keep = (k: string, tenant: Option.Option<Tenant>, now: number) => {
      entries.delete(k)
      entries.set(k, { tenant, expiresAt: now + (Option.isSome(tenant) ? foundTtl : notFoundTtl) })
      if (entries.size > options.localCapacity) {
        const oldest = entries.keys().next()
        if (!oldest.done) entries.delete(oldest.value)
      }
    }

    const read = (key: CacheKey): Effect.Effect<Option.Option<Tenant>, TenantStoreError> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const k = keyOf(key)
        const entry = entries.get(k)
        if (entry !== undefined) {
          if (entry.expiresAt > now) {
            entries.delete(k)
            entries.set(k, entry) // most recently used last
            return Effect.as(Metric.increment(metrics.l1Hits), entry.tenant)
          }
          entries.delete(k)
        }
        const pending = loads.get(k)
        if (pending !== undefined) {
          // Join the load in flight. If its fiber was interrupted (a client
          // went away), that is not this caller's failure: look again.
          return Effect.catchAllCause(
            Deferred.await(pending.deferred),
            (cause) => Cause.isInterruptedOnly(cause) ? read(key) : Effect.failCause(cause)
          )
        }
        const lookup: Lookup = { key: k, stale: false, deferred: Deferred.unsafeMake(FiberId.none) }
        loads.set(k, lookup)
        return load(key).pipe(
          Effect.onExit((exit) =>
            Effect.flatMap(Clock.currentTimeMillis, (done) => {
              if (loads.get(k) === lookup) loads.delete(k)
              if (Exit.isSuccess(exit) && !lookup.stale) keep(k, exit.value, done)
              return Deferred.done(lookup.deferred, exit)
            })
          )
        )
      })

    const forget = (k: string) => {
      entries.delete(k)
      const lookup = loads.get(k)
      if (lookup !== undefined) {
        lookup.stale = true
        loads.delete(k)
      }
    }

    return {
      read,
      invalidate: (keys) => Effect.sync(() => keys.forEach((key) => forget(keyOf(key)))),
      invalidateAll: Effect.sync(() => {
        entries.clear()
        for (const lookup of loads.values()) lookup.stale = true
        loads.clear()
      })
    }
  })

// -----------------------------------------------------------------------------
// Invalidation messages
// -----------------------------------------------------------------------------

/**
 * Listens on `channel` and drops the L1 entries each message names. Messages
 * sent while the connection was down are lost: once it is back, subscribes
 * again and drops everything held locally.
 */
const subscribe = (options: {
  readonly client: Redis | Cluster
  readonly subscriber: Redis | Cluster | undefined
  readonly channel: string
  readonly prefix: string
  readonly redisTimeout: Duration.Duration
  readonly local: Local
}): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { channel, local, prefix } = options
    const owned = options.subscriber === undefined
    const subscriber = options.subscriber ?? (yield* Effect.acquireRelease(
      Effect.sync(() => options.client.duplicate()),
      (connection) => Effect.sync(() => connection.disconnect())
    ))
    const messages = yield* Queue.unbounded<string>()
    const reconnections = yield* Queue.sliding<void>(1)
    let disconnected = false
    const onMessage = (from: string, message: string) => {
      if (from === channel) Queue.unsafeOffer(messages, message)
    }
    const onClose = () => {
      disconnected = true
    }
    const onReady = () => {
      if (!disconnected) return
      disconnected = false
      Queue.unsafeOffer(reconnections, undefined)
    }
    // Connection errors of the subscriber show in the SUBSCRIBE retries below.
    const onError = () => {}
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        subscriber.on("message", onMessage)
        subscriber.on("close", onClose)
        subscriber.on("ready", onReady)
        if (owned) subscriber.on("error", onError)
      }),
      () =>
        Effect.sync(() => {
          subscriber.off("message", onMessage)
          subscriber.off("close", onClose)
          subscriber.off("ready", onReady)
          subscriber.off("error", onError)
        })
    )
    if (!owned) {
      yield* Effect.addFinalizer(() =>
        Effect.ignore(command(options.redisTimeout)("UNSUBSCRIBE", () => subscriber.unsubscribe(channel)))
      )
    }

    const onInvalidation = (message: string) => {
      const decoded = decodeInvalidationMessage(message)
      const keys = Either.isRight(decoded) ? decoded.right.map((k) => parseRedisKey(prefix, k)) : [undefined]
      return keys.every((key) => key !== undefined)
        ? local.invalidate(keys)
        : Effect.logWarning("Tenant cache: ignoring a malformed invalidation message")
    }
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(messages), onInvalidation)))

    // The first attempt is awaited (bounded) so that a healthy instance starts subscribed.
    const firstAttempt = yield* Deferred.make<void>()
    const timeout = Duration.max(options.redisTimeout, Duration.seconds(1))
    const subscribeOnce = command(timeout)("SUBSCRIBE", () => subscriber.subscribe(channel)).pipe(
      Effect.tapError((error) => warn(error, "invalidations from other instances are missed until it succeeds")),
      Effect.ensuring(Deferred.succeed(firstAttempt, undefined)),
      Effect.retry(Schedule.union(Schedule.exponential("100 millis"), Schedule.spaced("10 seconds"))),
      Effect.zipRight(local.invalidateAll)
    )
    yield* Queue.offer(reconnections, undefined)
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Queue.take(reconnections), subscribeOnce)))
    yield* Deferred.await(firstAttempt)
  })

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

const makeWith = (
  config: Settings,
  subscriberOption: Redis | Cluster | undefined
): Effect.Effect<TenantStore["Type"], never, TenantStore | RedisClient | Scope.Scope> =>
  Effect.gen(function*() {
    const primary = yield* TenantStore
    const redisClient = yield* RedisClient
    const client = redisClient.client
    const { prefix } = config
    const channel = `${prefix}:tenant-invalidate`
    const redis = command(config.redisTimeout)
    const scope = yield* Effect.scope
    const keyOf = (key: CacheKey) => redisKey(prefix, key)

    // L2 -------------------------------------------------------------------

    // The last value decoded per key: decoding a record costs more than the
    // GET that fetched it, and most GETs return the value of the previous one.
    const decoded = new Map<string, { readonly value: string; readonly tenant: Tenant }>()
    const remember = (k: string, value: string, tenant: Tenant) => {
      decoded.delete(k)
      decoded.set(k, { value, tenant })
      if (decoded.size > config.localCapacity) decoded.delete(decoded.keys().next().value!)
    }
    const decodeCached = (k: string, key: CacheKey, value: string): Tenant | undefined => {
      const last = decoded.get(k)
      if (last !== undefined && last.value === value) return last.tenant
      const result = decodeTenant(value)
      if (Either.isLeft(result) || !matchesKey(key, result.right)) {
        decoded.delete(k)
        return undefined
      }
      remember(k, value, result.right)
      return result.right
    }

    // Keys whose invalidation could not reach Redis: until the retry lands (or
    // the Redis entry has surely expired), this instance bypasses Redis for them.
    const dirty = new Map<string, number>()
    const notReadyWarning = makeSampledWarning()

    // While the client is not connected, a command would only queue in ioredis
    // and wait for `redisTimeout`: skip Redis at once (the warning at most every 10 s).
    const notReady = Effect.zipRight(
      Metric.increment(metrics.redisErrors),
      Effect.suspend(() =>
        notReadyWarning("not-ready", `Tenant cache: Redis is ${client.status}; reading from the primary store`)
      )
    )

    const readRedis = (key: CacheKey): Effect.Effect<Cached> => {
      const k = keyOf(key)
      const dirtyUntil = dirty.get(k)
      if (dirtyUntil !== undefined) {
        if (dirtyUntil > Date.now()) return Effect.succeed(Cached.Skip())
        dirty.delete(k)
      }
      if (client.status !== "ready") return Effect.as(notReady, Cached.Skip())
      return redis("GET", () => client.get(k)).pipe(
        Effect.flatMap((value): Effect.Effect<Cached> => {
          if (value === null) return Effect.succeed(Cached.Miss())
          if (value === tombstoneValue) return Effect.succeed(Cached.Skip())
          if (value === notFoundValue) return Effect.succeed(Cached.Hit({ tenant: Option.none() }))
          const tenant = decodeCached(k, key, value)
          if (tenant !== undefined) return Effect.succeed(Cached.Hit({ tenant: Option.some(tenant) }))
          return Effect.logWarning("Tenant cache: dropping a cached value that is not a valid tenant record").pipe(
            Effect.zipRight(redis("DEL", () => client.del(k))),
            Effect.as(Cached.Miss()),
            Effect.catchAll((error) => Effect.as(warn(error, "the value is ignored"), Cached.Skip())),
            annotate(key)
          )
        }),
        Effect.catchAll((error) =>
          Effect.as(warn(error, "reading from the primary store").pipe(annotate(key)), Cached.Skip())
        )
      )
    }

    const fillRedis = (key: CacheKey, tenant: Option.Option<Tenant>, startedAt: number) =>
      Effect.gen(function*() {
        const elapsed = (yield* Clock.currentTimeMillis) - startedAt
        // A command queued by a reconnecting client could land long after a tombstone expired.
        if (elapsed > fillDeadlineMillis || client.status !== "ready") return
        const value = Option.match(tenant, {
          onNone: () => Either.right(notFoundValue),
          onSome: (tenant) => encodeTenant(tenant)
        })
        if (Either.isLeft(value)) return yield* Effect.logWarning("Tenant cache: a tenant record could not be encoded")
        const ttl = pxMillis(Option.isSome(tenant) ? config.ttl : config.negativeTtl)
        const k = keyOf(key)
        const filled = yield* redis("SET", () => client.set(k, value.right, "PX", ttl, "NX")).pipe(
          Effect.catchAll((error) => Effect.as(warn(error, "the record is not cached in Redis"), null))
        )
        if (filled !== null && Option.isSome(tenant)) remember(k, value.right, tenant.value)
      }).pipe(annotate(key))

    // Primary --------------------------------------------------------------

    const readPrimary = (key: CacheKey): Effect.Effect<Option.Option<Tenant>, TenantStoreError> =>
      Effect.zipRight(
        Metric.increment(metrics.primaryLoads),
        key.kind === "id" ? primary.get(key.name) : primary.getByIdentifier(key.name)
      )

    const readThrough = (key: CacheKey): Effect.Effect<Option.Option<Tenant>, TenantStoreError> =>
      Effect.gen(function*() {
        const cached = yield* readRedis(key)
        if (cached._tag === "Hit") {
          yield* Metric.increment(metrics.l2Hits)
          return cached.tenant
        }
        yield* Metric.increment(metrics.misses)
        // A write that can make this read stale commits after the primary read begins.
        const startedAt = yield* Clock.currentTimeMillis
        const tenant = yield* readPrimary(key)
        if (cached._tag === "Miss") yield* fillRedis(key, tenant, startedAt)
        return tenant
      })

    const local = Duration.isZero(config.localTtl)
      ? undefined
      : yield* makeLocal({ ...config, keyOf, load: readThrough })
    const read = local?.read ?? readThrough

    // Writes ---------------------------------------------------------------

    const invalidate = (keys: ReadonlyArray<CacheKey>) =>
      Effect.gen(function*() {
        const redisKeys = Array.from(new Set(keys.map(keyOf)))
        // Redis first: an instance that drops its L1 entry must not find the old record in Redis.
        const tombstones = Effect.forEach(
          redisKeys,
          (k) => redis("SET", () => client.set(k, tombstoneValue, "PX", pxMillis(tombstoneWindow))),
          { concurrency: "unbounded", discard: true }
        )
        yield* tombstones.pipe(
          Effect.catchAll((error) =>
            Effect.gen(function*() {
              // The old record may still be in Redis: this instance stops reading
              // these keys from Redis, and the tombstones are retried in the background.
              const until = Date.now() + Duration.toMillis(config.ttl)
              for (const k of redisKeys) dirty.set(k, until)
              yield* warn(error, "retrying; other instances may read a stale record until then")
              yield* tombstones.pipe(
                Effect.retry({ schedule: Schedule.exponential("100 millis").pipe(Schedule.upTo(config.ttl)) }),
                Effect.tap(() => Effect.sync(() => redisKeys.forEach((k) => dirty.delete(k)))),
                Effect.ignore,
                // Forked from the write's finalizer, which is uninterruptible: this
                // fiber must stay interruptible so that closing the scope stops it.
                Effect.interruptible,
                Effect.forkIn(scope)
              )
            })
          )
        )
        if (local !== undefined) yield* local.invalidate(keys)
        yield* redis("PUBLISH", () => client.publish(channel, JSON.stringify(redisKeys))).pipe(
          Effect.catchAll((error) => warn(error, "other instances may keep a stale record in memory until it expires"))
        )
      })

    const writeThrough = <A, E>(
      id: TenantId,
      keys: ReadonlyArray<CacheKey>,
      write: Effect.Effect<A, E>
    ): Effect.Effect<A, E> =>
      write.pipe(
        Effect.onExit((exit) => mayHaveWritten(exit) ? invalidate(keys) : Effect.void),
        Effect.annotateLogs("tenant.id", id)
      )

    const byId = (id: TenantId) => new CacheKey({ kind: "id", name: id })
    const byIdentifier = (identifier: TenantId) => new CacheKey({ kind: "identifier", name: identifier })

    if (local !== undefined) {
      yield* subscribe({ ...config, client, subscriber: subscriberOption, channel, local })
    }

    // The store ------------------------------------------------------------

    return TenantStore.of({
      get: (id) => read(byId(id)),
      getByIdentifier: (identifier) => read(byIdentifier(identifier)),
      list: (options) => primary.list(options),
      count: (options) => primary.count(options),
      create: (tenant) =>
        writeThrough(tenant.id, [byId(tenant.id), byIdentifier(tenant.identifier)], primary.create(tenant)),
      update: (options) =>
        Effect.flatMap(primary.get(options.tenant.id), (previous) =>
          writeThrough(
            options.tenant.id,
            [
              byId(options.tenant.id),
              byIdentifier(options.tenant.identifier),
              ...Option.toArray(Option.map(previous, (tenant) => byIdentifier(tenant.identifier)))
            ],
            primary.update(options)
          )),
      delete: (options) => {
        // The identifier to invalidate is read first; the delete is then pinned to
        // that version, so a rename in between cannot leave the new identifier cached.
        const attempt = Effect.flatMap(primary.get(options.id), (previous) =>
          writeThrough(
            options.id,
            [byId(options.id), ...Option.toArray(Option.map(previous, (tenant) => byIdentifier(tenant.identifier)))],
            primary.delete(
              options.expectedVersion === undefined && Option.isSome(previous)
                ? { id: options.id, expectedVersion: previous.value.version }
                : options
            )
          ))
        return options.expectedVersion === undefined
          ? Effect.retry(attempt, { times: 5, while: (e) => e._tag === "TenantConflict" })
          : attempt
      },
      health: Effect.zipWith(primary.health, redisClient.health, (store, redis) => {
        const details = [
          ...(store.detail === undefined ? [] : [store.detail]),
          ...(redis.isUp
            ? []
            : [`Redis is unavailable (${redis.detail ?? "no reply"}); reads are served from the primary store`])
        ]
        return new HealthStatus({
          component: "tenant-store:redis-cache",
          status: store.status,
          latencyMs: store.latencyMs,
          ...(details.length === 0 ? {} : { detail: details.join("; ") })
        })
      }, { concurrent: true })
    })
  })

/**
 * Builds the cache over the `TenantStore` in context (the primary). The
 * subscriber connection, when the cache opens it, and the background fibers
 * live as long as the scope. An invalid option is a defect.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<TenantStore["Type"], never, TenantStore | RedisClient | Scope.Scope> =>
  Either.match(settings(options), {
    onLeft: (invalid) => Effect.dieMessage(`TenantStore/Redis: option '${invalid.option}' ${invalid.message}`),
    onRight: (config) => makeWith(config, options.subscriber)
  })

/**
 * The cache as a layer: it needs the primary `TenantStore` and provides the
 * cached one.
 *
 * ```ts
 * const Store = TenantStoreRedis.layer({ prefix: "myapp" }).pipe(
 *   Layer.provide(PrimaryStoreLayer),
 *   Layer.provide(RedisClient.layer(redis))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<TenantStore, never, TenantStore | RedisClient> =>
  Layer.scoped(TenantStore, make(options))

/**
 * The cache as a layer, with its options read from `Config`. An invalid
 * option is a `ConfigError`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Omit<Options, "subscriber">>
): Layer.Layer<TenantStore, ConfigError.ConfigError, TenantStore | RedisClient> =>
  Layer.scoped(
    TenantStore,
    Effect.flatMap(
      Config.unwrap(config),
      (options) =>
        Either.match(settings(options), {
          onLeft: (invalid) => Effect.fail(ConfigError.InvalidData([invalid.option], invalid.message)),
          onRight: (settings) => makeWith(settings, undefined)
        })
    )
  )
