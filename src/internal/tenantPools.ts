/**
 * Database-per-tenant connection pools: one PostgreSQL database per tenant,
 * one `PgClient` pool per database, built on first use, shared by every
 * effect of that tenant, closed after an idle time-to-live, and bounded by a
 * global connection budget.
 *
 * Two connections, two roles:
 * - `connection` describes how tenant pools connect (host, port, user,
 *   password, or a URL whose database part is replaced by the tenant's
 *   database). It may, and should, be a plain application role: no
 *   SUPERUSER, no CREATEDB.
 * - `admin` is an already-built `SqlClient` connected to a maintenance
 *   database (for example `postgres`) as a role with CREATEDB (or a
 *   superuser). Only `createDatabase` and `dropDatabase` use it; it is not
 *   counted in the budget.
 *
 * Budget accounting: a pool reserves its maximum size (`maxConnectionsPerTenant`)
 * from `maxConnections` when it opens and gives it back only once its pool has
 * ended and every one of its sockets has closed (a closed socket means the
 * server process has exited, so it has left `pg_stat_activity`). The sum of
 * reservations never exceeds the budget, and a pool never holds more sockets
 * than its reservation, so the budget holds for real connections at every
 * instant. The `connections` gauge counts real sockets (tracked through the
 * `stream` factory `pg` accepts). Two consequences: `pg`'s own idle timeout is
 * disabled (a replaced connection would briefly overlap its successor; the
 * pool's idle time-to-live decides instead), and `PgClient.listen` opens one
 * connection outside the pool, which the gauge counts but the budget does not
 * reserve.
 *
 * When a new pool does not fit, idle pools (no holder) are closed least
 * recently used first, only as many as needed and only when that makes room;
 * a pool with a holder is never closed. If even closing every idle pool would
 * not make room, the request fails with `TenantPoolExhausted`
 * (`whenExhausted: "fail"`) or waits until something is released, up to a
 * bound (`whenExhausted: { wait }`), then fails with it.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Net from "node:net"
import type { TenantId } from "../Tenant.js"
import { TenantInUse } from "../TenantError.js"

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

/**
 * A tenant's pool could not be opened without exceeding the global connection
 * budget: every pool that could have been closed to make room is in use. In
 * `wait` mode, it is raised once the wait has run out.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantPoolExhausted extends Schema.TaggedError<TenantPoolExhausted>(
  "effect-tenancy/TenantPoolExhausted"
)("TenantPoolExhausted", {
  tenantId: Schema.String,
  /** Connections the tenant's pool needs. */
  requested: Schema.Int,
  /** The global budget. */
  maxConnections: Schema.Int,
  /** Connections reserved by pools in use when the request gave up. */
  inUse: Schema.Int
}) {
  /** @since 0.1.0 */
  override get message(): string {
    return `No room for the pool of tenant ${JSON.stringify(this.tenantId)}: it needs ${this.requested} ` +
      `connection(s), ${this.inUse} of ${this.maxConnections} are held by pools in use`
  }
}

/**
 * A tenant database operation was refused before it reached the server: the
 * derived database name is not a safe identifier (`unsafe-name`), or the
 * database exists but was not created by this library (`not-managed`), so it
 * is neither adopted nor dropped.
 *
 * @since 0.1.0
 * @category errors
 */
export class TenantDatabaseRefused extends Schema.TaggedError<TenantDatabaseRefused>(
  "effect-tenancy/TenantDatabaseRefused"
)("TenantDatabaseRefused", {
  tenantId: Schema.String,
  database: Schema.String,
  reason: Schema.Literal("unsafe-name", "not-managed")
}) {
  /** @since 0.1.0 */
  override get message(): string {
    const database = JSON.stringify(this.database.slice(0, 64))
    return this.reason === "unsafe-name"
      ? `The name ${database} (tenant ${JSON.stringify(this.tenantId.slice(0, 64))}) does not match ${safeName.source}`
      : `The database ${database} was not created by effect-tenancy; it is left alone`
  }
}

// -----------------------------------------------------------------------------
// Models
// -----------------------------------------------------------------------------

/**
 * What a request does when the budget has no room for its pool.
 *
 * @since 0.1.0
 * @category models
 */
export type WhenExhausted = "fail" | { readonly wait: Duration.DurationInput }

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How tenant pools connect. `database` is always the tenant's (with `url`,
   * its path is replaced). `pg`'s own idle timeout and connection lifetime are
   * not available: the pool's `idleTimeToLive` governs connection lifetimes.
   */
  readonly connection: Omit<
    PgClient.PgClientConfig,
    "database" | "maxConnections" | "minConnections" | "idleTimeout" | "connectionTTL" | "stream"
  >
  /** The client that creates and drops tenant databases (CREATEDB or superuser); outside the budget. */
  readonly admin: SqlClient
  /** Prefix of derived database names (default `tenant_`): `tenant_<id>` with `-` mapped to `_`. */
  readonly prefix?: string | undefined
  /** Replaces the derived name entirely; the result is still checked and quoted. */
  readonly databaseName?: ((tenantId: TenantId) => string) | undefined
  /** Owner of created databases (for example the application role); the admin must be a member of it. */
  readonly databaseOwner?: string | undefined
  /** Template of created databases (default: the server's, `template1`). */
  readonly databaseTemplate?: string | undefined
  /** The size of a tenant's pool (default 4); also what it reserves from the budget. */
  readonly maxConnectionsPerTenant?: number | ((tenantId: TenantId) => number) | undefined
  /** The global budget of connections across every tenant pool. */
  readonly maxConnections: number
  /** How long a pool without holders stays open (default 1 minute). */
  readonly idleTimeToLive?: Duration.DurationInput | undefined
  /** Fail at once, or wait up to a bound (default `{ wait: "5 seconds" }`). */
  readonly whenExhausted?: WhenExhausted | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Pools open, opening or closing (holding a reservation). */
  readonly pools: number
  /** Pools with at least one holder. */
  readonly inUse: number
  /** Connections reserved from the budget. */
  readonly reserved: number
  /** Sockets open to the server (real connections). */
  readonly connections: number
  readonly maxConnections: number
  /** Pools opened since `make`, and pools closed to make room (evictions) or after their idle time-to-live. */
  readonly opened: number
  readonly evicted: number
  readonly expired: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TenantPools {
  /**
   * The tenant's pool, opened on first use. It stays open at least as long as
   * the scope: a held pool is never closed (except when `make`'s scope closes).
   */
  readonly get: (
    tenantId: TenantId
  ) => Effect.Effect<PgClient.PgClient, TenantPoolExhausted | TenantDatabaseRefused | SqlError, Scope.Scope>
  /** The tenant's database name, checked against `^[a-z_][a-z0-9_]{0,62}$`. */
  readonly databaseName: (tenantId: TenantId) => Effect.Effect<string, TenantDatabaseRefused>
  /**
   * Creates the tenant's database through `admin` and marks it as managed by
   * this library. `false` when it exists already (and is managed).
   */
  readonly createDatabase: (tenantId: TenantId) => Effect.Effect<boolean, TenantDatabaseRefused | SqlError>
  /**
   * Closes the tenant's idle pool (refused with `TenantInUse` while it has
   * holders), then drops its database `WITH (FORCE)` (other instances'
   * connections are terminated). Only databases created by `createDatabase`
   * are dropped. `false` when there was no database. New pools for the tenant
   * wait until the drop has finished.
   */
  readonly dropDatabase: (
    tenantId: TenantId
  ) => Effect.Effect<boolean, TenantDatabaseRefused | TenantInUse | SqlError>
  /**
   * Closes the tenant's pool as soon as it has no holder (now, if it has
   * none); the next `get` opens a new one.
   */
  readonly invalidate: (tenantId: TenantId) => Effect.Effect<void>
  readonly stats: Effect.Effect<Stats>
}

/**
 * Process-wide gauges and counters, summed over every `TenantPools`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  pools: Metric.gauge("tenancy_tenant_pools", {
    description: "Tenant database pools open (including opening and closing)"
  }),
  connections: Metric.gauge("tenancy_tenant_pool_connections", {
    description: "Connections open from tenant database pools"
  }),
  reserved: Metric.gauge("tenancy_tenant_pool_connections_reserved", {
    description: "Connections reserved from the budget by open tenant database pools"
  }),
  evictions: Metric.counter("tenancy_tenant_pool_evictions_total", {
    description: "Idle tenant pools closed to make room for another",
    incremental: true
  }),
  exhausted: Metric.counter("tenancy_tenant_pool_exhausted_total", {
    description: "Requests for a tenant pool refused with TenantPoolExhausted",
    incremental: true
  })
} as const

// -----------------------------------------------------------------------------
// Names
// -----------------------------------------------------------------------------

const safeName = /^[a-z_][a-z0-9_]{0,62}$/

/** The comment of a database created for `tenantId`: only that tenant adopts or drops it. */
const managedMarker = (tenantId: string): string => `effect-tenancy:tenant-database:${tenantId}`

const quoteIdentifier = (name: string): string => `"${name.replace(/"/g, "\"\"")}"`

const validRole = (name: string): boolean =>
  name.length > 0 && !name.includes("\u0000") && new TextEncoder().encode(name).length <= 63

const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

const errorCode = (error: SqlError): string | undefined => {
  const cause = error.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

// -----------------------------------------------------------------------------
// Pools
// -----------------------------------------------------------------------------

interface Entry {
  readonly tenantId: TenantId
  readonly database: string
  readonly size: number
  state: "opening" | "open" | "closing" | "closed"
  refCount: number
  lastUsed: number
  /** Close when the last holder leaves (`invalidate`). */
  invalidated: boolean
  /** When the last holder left (clock milliseconds). */
  idleSince: number
  /** The one timer of the entry, running while it may be idle. */
  expiry: Fiber.RuntimeFiber<void> | undefined
  scope: Scope.CloseableScope | undefined
  sockets: number
  drained: Deferred.Deferred<void> | undefined
  readonly ready: Deferred.Deferred<PgClient.PgClient, SqlError>
  readonly closed: Deferred.Deferred<void>
}

type Step =
  | { readonly _tag: "Acquired"; readonly entry: Entry; readonly effects: ReadonlyArray<Effect.Effect<void>> }
  | {
    readonly _tag: "Wait"
    readonly on: Deferred.Deferred<void>
    readonly effects: ReadonlyArray<Effect.Effect<void>>
  }
  | { readonly _tag: "Exhausted"; readonly inUse: number; readonly on: Deferred.Deferred<void> }

/**
 * Builds the pools. Every pool is closed, and every connection ended, when
 * the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<TenantPools, never, Scope.Scope> =>
  Effect.gen(function*() {
    const budget = options.maxConnections
    if (!Number.isInteger(budget) || budget < 1) {
      return yield* Effect.dieMessage(`TenantPools: maxConnections must be a positive integer, got ${budget}`)
    }
    const prefix = options.prefix ?? "tenant_"
    const sizeOf = (tenantId: TenantId): number => {
      const size = typeof options.maxConnectionsPerTenant === "function"
        ? options.maxConnectionsPerTenant(tenantId)
        : options.maxConnectionsPerTenant ?? 4
      return Number.isInteger(size) && size >= 1 ? Math.min(size, budget) : 1
    }
    const idleTimeToLive = Duration.decode(options.idleTimeToLive ?? "1 minute")
    const whenExhausted = options.whenExhausted ?? { wait: "5 seconds" }
    const waitBound = whenExhausted === "fail" ? undefined : Duration.decode(whenExhausted.wait)
    // Pools and background fibers live in a child scope, closed after the
    // shutdown finalizer below has closed every pool in order.
    const mapScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    yield* Effect.addFinalizer((exit) => Scope.close(mapScope, exit))

    const entries = new Map<TenantId, Entry>()
    // Tenants whose database is being created or dropped: one such operation
    // at a time per tenant, and new pools for the tenant wait until it ends.
    const busy = new Map<TenantId, Deferred.Deferred<void>>()
    let reserved = 0
    let sockets = 0
    let tick = 0
    let opened = 0
    let evicted = 0
    let expired = 0
    let shutdown = false

    // Completed (and replaced) whenever room may have appeared: a reservation
    // given back or a pool left without holders.
    let changed = Deferred.unsafeMake<void>(FiberId.none)
    const signal = () => {
      const previous = changed
      changed = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(previous, Exit.void)
    }

    const nameOf = (tenantId: TenantId): Effect.Effect<string, TenantDatabaseRefused> =>
      Effect.suspend(() => {
        const database = options.databaseName !== undefined
          ? options.databaseName(tenantId)
          : `${prefix}${String(tenantId).replace(/-/g, "_")}`
        return typeof database === "string" && safeName.test(database)
          ? Effect.succeed(database)
          : Effect.fail(
            new TenantDatabaseRefused({ tenantId: String(tenantId), database: String(database), reason: "unsafe-name" })
          )
      })

    // Sockets are created by `pg` through this factory, so every real
    // connection of a pool is seen from creation to close.
    const trackedSocket = (entry: Entry) => () => {
      const socket = new Net.Socket()
      entry.sockets++
      sockets++
      metrics.connections.unsafeModify(1, [])
      socket.once("close", () => {
        entry.sockets--
        sockets--
        metrics.connections.unsafeModify(-1, [])
        if (entry.sockets === 0 && entry.drained !== undefined) Deferred.unsafeDone(entry.drained, Exit.void)
      })
      return socket
    }

    const configFor = (entry: Entry): PgClient.PgClientConfig => {
      const connection = options.connection
      return {
        ...connection,
        url: connection.url === undefined
          ? undefined
          : Redacted.make(withDatabase(Redacted.value(connection.url), entry.database)),
        database: entry.database,
        maxConnections: entry.size,
        // 0 disables pg's idle timeout: a replaced connection would overlap its successor.
        idleTimeout: Duration.zero,
        // A bound on waiting for a connection: pg-pool never answers a waiter still
        // queued when the pool ends (an eviction, a deprovision), so without one a
        // wait abandoned by an interrupted `scoped` would hang for good.
        connectTimeout: connection.connectTimeout ?? Duration.seconds(10),
        applicationName: connection.applicationName ?? "effect-tenancy",
        stream: trackedSocket(entry)
      }
    }

    const awaitDrained = (entry: Entry): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (entry.sockets === 0) return Effect.void
        entry.drained ??= Deferred.unsafeMake<void>(FiberId.none)
        // Interruptible, so a connection that never closes cannot hold up the scope's end.
        return Effect.interruptible(Deferred.await(entry.drained))
      })

    // Ends the pool, waits for its sockets to close, then gives its
    // reservation back. `entry.state` is already "closing".
    const finishClose = (entry: Entry): Effect.Effect<void> =>
      Effect.gen(function*() {
        if (entry.scope !== undefined) yield* Scope.close(entry.scope, Exit.void)
        yield* awaitDrained(entry)
        entry.state = "closed"
        reserved -= entry.size
        metrics.reserved.unsafeModify(-entry.size, [])
        metrics.pools.unsafeModify(-1, [])
        if (entries.get(entry.tenantId) === entry) entries.delete(entry.tenantId)
        Deferred.unsafeDone(entry.closed, Exit.void)
        signal()
      })

    const fork = (effect: Effect.Effect<void>): Effect.Effect<void> => Effect.asVoid(Effect.forkIn(effect, mapScope))

    const open = (entry: Entry): Effect.Effect<void> =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(mapScope, ExecutionStrategy.sequential)
        entry.scope = scope
        const exit = yield* Effect.suspend(() => PgClient.make(configFor(entry))).pipe(
          Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make),
          Scope.extend(scope),
          Effect.exit
        )
        if (Exit.isSuccess(exit) && !shutdown) {
          entry.state = "open"
          opened++
          Deferred.unsafeDone(entry.ready, exit)
          if (entry.refCount === 0) {
            signal()
            yield* entry.invalidated ? Effect.all(startClose([entry]), { discard: true }) : scheduleExpiry(entry)
          }
          return
        }
        entry.state = "closing"
        yield* finishClose(entry)
        Deferred.unsafeDone(entry.ready, Exit.isSuccess(exit) ? Exit.interrupt(FiberId.none) : exit)
      })

    const startClose = (victims: ReadonlyArray<Entry>): ReadonlyArray<Effect.Effect<void>> =>
      victims.map((entry) => {
        entry.state = "closing"
        const expiry = entry.expiry
        entry.expiry = undefined
        return Effect.zipRight(
          expiry === undefined ? Effect.void : Fiber.interruptFork(expiry),
          fork(finishClose(entry))
        )
      })

    // At most one timer per pool, started when it becomes idle and none is
    // running; acquire and release only move `idleSince`, so the hot path
    // forks and interrupts nothing.
    const scheduleExpiry = (entry: Entry): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        entry.idleSince = now
        if (entry.expiry !== undefined) return Effect.void
        const idleTimeToLiveMillis = Duration.toMillis(idleTimeToLive)
        const timer = (wait: number): Effect.Effect<void> =>
          Effect.sleep(Duration.millis(wait)).pipe(
            Effect.interruptible,
            Effect.zipRight(Clock.currentTimeMillis),
            Effect.flatMap((now) => {
              if (entry.state !== "open" || entry.refCount > 0) {
                entry.expiry = undefined
                return Effect.void
              }
              const remaining = entry.idleSince + idleTimeToLiveMillis - now
              if (remaining > 0) return timer(remaining)
              entry.expiry = undefined
              expired++
              return Effect.all(startClose([entry]), { discard: true })
            })
          )
        return Effect.map(Effect.forkIn(timer(idleTimeToLiveMillis), mapScope), (fiber) => {
          // The timer may have finished already (a zero time-to-live).
          if (entry.state === "open" && fiber.unsafePoll() === null) entry.expiry = fiber
        })
      })

    const release = (entry: Entry): Effect.Effect<void> =>
      Effect.suspend(() => {
        entry.refCount--
        entry.lastUsed = ++tick
        if (entry.refCount > 0 || entry.state !== "open") return Effect.void
        signal()
        return entry.invalidated ? Effect.all(startClose([entry]), { discard: true }) : scheduleExpiry(entry)
      })

    const inUseReserved = (): number => {
      let total = 0
      for (const entry of entries.values()) if (entry.refCount > 0) total += entry.size
      return total
    }

    // One synchronous decision: take the tenant's pool, open a new one within
    // the budget, or say what to wait for. All shared state changes here,
    // between two yields, so concurrent requests never see half an update.
    const step = (tenantId: TenantId, database: string): Step => {
      const mark = busy.get(tenantId)
      if (mark !== undefined) return { _tag: "Wait", on: mark, effects: [] }
      const existing = entries.get(tenantId)
      if (existing !== undefined) {
        if (existing.state === "closing") return { _tag: "Wait", on: existing.closed, effects: [] }
        existing.refCount++
        existing.lastUsed = ++tick
        return { _tag: "Acquired", entry: existing, effects: [] }
      }
      const size = sizeOf(tenantId)
      let room = budget - reserved
      if (size <= room) {
        const entry: Entry = {
          tenantId,
          database,
          size,
          state: "opening",
          refCount: 1,
          lastUsed: ++tick,
          invalidated: false,
          idleSince: 0,
          expiry: undefined,
          scope: undefined,
          sockets: 0,
          drained: undefined,
          ready: Deferred.unsafeMake(FiberId.none),
          closed: Deferred.unsafeMake(FiberId.none)
        }
        entries.set(tenantId, entry)
        reserved += size
        metrics.reserved.unsafeModify(size, [])
        metrics.pools.unsafeModify(1, [])
        return { _tag: "Acquired", entry, effects: [fork(open(entry))] }
      }
      const idle: Array<Entry> = []
      for (const entry of entries.values()) {
        if (entry.state === "closing") room += entry.size
        else if (entry.state === "open" && entry.refCount === 0) idle.push(entry)
      }
      if (size <= room) return { _tag: "Wait", on: changed, effects: [] }
      idle.sort((a, b) => a.lastUsed - b.lastUsed)
      const victims: Array<Entry> = []
      for (const entry of idle) {
        if (size <= room) break
        victims.push(entry)
        room += entry.size
      }
      if (size > room) return { _tag: "Exhausted", inUse: inUseReserved(), on: changed }
      evicted += victims.length
      metrics.evictions.unsafeUpdate(victims.length, [])
      return { _tag: "Wait", on: changed, effects: startClose(victims) }
    }

    const exhausted = (tenantId: TenantId, inUse: number) =>
      Effect.suspend(() => {
        metrics.exhausted.unsafeUpdate(1, [])
        return Effect.fail(
          new TenantPoolExhausted({ tenantId, requested: sizeOf(tenantId), maxConnections: budget, inUse })
        )
      })

    const get = (tenantId: TenantId) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const database = yield* nameOf(tenantId)
          const scope = yield* Effect.scope
          const deadline = waitBound === undefined
            ? undefined
            : (yield* Clock.currentTimeMillis) + Duration.toMillis(waitBound)
          while (true) {
            if (shutdown) return yield* Effect.interrupt
            const next = step(tenantId, database)
            if (next._tag === "Exhausted") {
              if (deadline === undefined) return yield* exhausted(tenantId, next.inUse)
              const now = yield* Clock.currentTimeMillis
              if (now >= deadline) return yield* exhausted(tenantId, next.inUse)
              const woken = yield* restore(Deferred.await(next.on).pipe(Effect.timeoutOption(deadline - now)))
              if (Option.isNone(woken)) return yield* exhausted(tenantId, inUseReserved())
              continue
            }
            yield* Effect.all(next.effects, { discard: true })
            if (next._tag === "Wait") {
              yield* restore(Effect.ignore(Deferred.await(next.on)))
              continue
            }
            const entry = next.entry
            yield* Scope.addFinalizer(scope, release(entry))
            return yield* restore(Deferred.await(entry.ready))
          }
        })
      )

    const createDatabase = (tenantId: TenantId) =>
      Effect.gen(function*() {
        const database = yield* nameOf(tenantId)
        const owner = options.databaseOwner
        const template = options.databaseTemplate
        if (template !== undefined && !safeName.test(template)) {
          return yield* new TenantDatabaseRefused({ tenantId, database: template, reason: "unsafe-name" })
        }
        // A role name is only quoted: any name PostgreSQL accepts (at most 63 bytes, no NUL).
        if (owner !== undefined && !validRole(owner)) {
          return yield* new TenantDatabaseRefused({ tenantId, database: owner, reason: "unsafe-name" })
        }
        const statement = `CREATE DATABASE ${quoteIdentifier(database)}` +
          (owner === undefined ? "" : ` OWNER ${quoteIdentifier(owner)}`) +
          (template === undefined ? "" : ` TEMPLATE ${quoteIdentifier(template)}`)
        // Not interruptible: an interruption between CREATE and COMMENT would leave an unmarked database.
        return yield* exclusively(tenantId, () => createManaged(tenantId, database, statement))
      }).pipe(
        Effect.withSpan("TenantPools.createDatabase", {
          attributes: { "tenant.id": tenantId },
          captureStackTrace: false
        })
      )

    // CREATE, then mark as managed (a database cannot be created and commented atomically).
    const createManaged = (tenantId: TenantId, database: string, statement: string) =>
      Effect.gen(function*() {
        const created = yield* options.admin.unsafe(statement).pipe(
          Effect.as(true),
          Effect.catchIf((error) => errorCode(error) === "42P04", () => Effect.succeed(false))
        )
        if (!created) {
          if (!(yield* isManaged(database, tenantId))) {
            return yield* new TenantDatabaseRefused({ tenantId, database, reason: "not-managed" })
          }
          return false
        }
        const marker = managedMarker(tenantId).replace(/'/g, "''")
        yield* options.admin.unsafe(`COMMENT ON DATABASE ${quoteIdentifier(database)} IS '${marker}'`).pipe(
          Effect.tapError(() =>
            Effect.ignore(options.admin.unsafe(`DROP DATABASE IF EXISTS ${quoteIdentifier(database)} WITH (FORCE)`))
          )
        )
        return true
      })

    // Whether `database` was created for `tenantId` (two tenants may map to one name:
    // `a-b` and `a_b`); `undefined` when the database does not exist.
    const managedState = (database: string, tenantId: TenantId) =>
      Effect.map(
        options.admin<{ readonly comment: string | null }>`
          SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = ${database}`,
        (rows) => rows.length === 0 ? undefined : rows[0].comment === managedMarker(tenantId)
      )
    const isManaged = (database: string, tenantId: TenantId) =>
      Effect.map(managedState(database, tenantId), (state) => state === true)

    const exclusively = <A, E>(
      tenantId: TenantId,
      f: (restore: <A2, E2, R2>(effect: Effect.Effect<A2, E2, R2>) => Effect.Effect<A2, E2, R2>) => Effect.Effect<A, E>
    ): Effect.Effect<A, E> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          while (busy.has(tenantId)) yield* restore(Deferred.await(busy.get(tenantId)!))
          const mark = Deferred.unsafeMake<void>(FiberId.none)
          busy.set(tenantId, mark)
          return yield* Effect.ensuring(
            f(restore),
            Effect.sync(() => {
              busy.delete(tenantId)
              Deferred.unsafeDone(mark, Exit.void)
            })
          )
        })
      )

    const dropDatabase = (tenantId: TenantId) =>
      Effect.flatMap(nameOf(tenantId), (database) =>
        exclusively(tenantId, (restore) =>
          Effect.gen(function*() {
            while (true) {
              const entry = entries.get(tenantId)
              if (entry === undefined) break
              if (entry.refCount > 0) {
                return yield* new TenantInUse({ tenantId, activeScopes: entry.refCount })
              }
              if (entry.state === "open") yield* Effect.all(startClose([entry]), { discard: true })
              if (entry.state === "opening") yield* restore(Effect.ignore(Deferred.await(entry.ready)))
              else yield* restore(Deferred.await(entry.closed))
            }
            const state = yield* restore(managedState(database, tenantId))
            if (state === undefined) return false
            if (!state) return yield* new TenantDatabaseRefused({ tenantId, database, reason: "not-managed" })
            yield* restore(options.admin.unsafe(`DROP DATABASE IF EXISTS ${quoteIdentifier(database)} WITH (FORCE)`))
            return true
          }))).pipe(
          Effect.withSpan("TenantPools.dropDatabase", {
            attributes: { "tenant.id": tenantId },
            captureStackTrace: false
          })
        )

    const invalidate = (tenantId: TenantId): Effect.Effect<void> =>
      Effect.suspend(() => {
        const entry = entries.get(tenantId)
        if (entry === undefined || entry.state === "closing" || entry.state === "closed") return Effect.void
        entry.invalidated = true
        return entry.state === "open" && entry.refCount === 0
          ? Effect.all(startClose([entry]), { discard: true })
          : Effect.void
      })

    const stats = Effect.sync((): Stats => {
      let inUse = 0
      for (const entry of entries.values()) if (entry.refCount > 0) inUse++
      return {
        pools: entries.size,
        inUse,
        reserved,
        connections: sockets,
        maxConnections: budget,
        opened,
        evicted,
        expired
      }
    })

    // Added after the child scope's finalizer, so it runs first when the
    // scope closes: refuse new requests, close every pool (held ones too: the
    // owner is going away), and wait (bounded) until their connections are gone.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        shutdown = true
        signal()
        for (const mark of busy.values()) Deferred.unsafeDone(mark, Exit.void)
        const all = [...entries.values()]
        const settle = Effect.gen(function*() {
          yield* Effect.forEach(all, (entry) => Effect.ignore(Deferred.await(entry.ready)), { discard: true })
          yield* Effect.all(startClose(all.filter((entry) => entry.state === "open")), { discard: true })
          yield* Effect.forEach(all, (entry) => Deferred.await(entry.closed), { discard: true })
        })
        yield* Effect.interruptible(settle).pipe(Effect.timeoutOption("10 seconds"))
      })
    )

    return {
      get: (tenantId) =>
        get(tenantId).pipe(
          Effect.withSpan("TenantPools.get", { attributes: { "tenant.id": tenantId }, captureStackTrace: false })
        ),
      databaseName: nameOf,
      createDatabase,
      dropDatabase,
      invalidate,
      stats
    } satisfies TenantPools
  })
