/**
 * Where the tests find the real PostgreSQL and Redis of the machine, and
 * helpers to give each test file its own database or key namespace.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Redacted, type Scope } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import * as net from "node:net"

export const databaseUrl = process.env.TENANCY_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
export const redisUrl = process.env.TENANCY_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"

const withDatabase = (url: string, database: string) => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** Creates a uniquely named database for the scope and returns its URL; drops it when the scope closes. */
export const freshDatabaseUrl = (prefix: string): Effect.Effect<string, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const name = `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
    const admin = yield* Layer.build(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
    const sql = Context.get(admin, SqlClient)
    yield* Effect.acquireRelease(
      sql.unsafe(`CREATE DATABASE "${name}"`),
      () => sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).pipe(Effect.orDie)
    )
    return withDatabase(databaseUrl, name)
  })

/** A fresh, uniquely named database for the duration of a layer; dropped afterwards. */
export const freshDatabase = (prefix: string): Layer.Layer<PgClient.PgClient | SqlClient, unknown> =>
  Layer.unwrapScoped(
    Effect.map(freshDatabaseUrl(prefix), (url) => PgClient.layer({ url: Redacted.make(url), maxConnections: 10 }))
  )

/**
 * A TCP proxy on a free local port to `target`, for outage tests: `cut`
 * closes the listener and destroys every open connection, as a crashed or
 * partitioned server would look to a client.
 */
export const tcpProxy = (target: { readonly host: string; readonly port: number }) =>
  Effect.map(switchableProxy(target), (proxy) => ({ port: proxy.port, cut: Effect.sync(proxy.close) }))

/** A local port with nothing listening on it. */
export const closedPort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** The same URL with another port. */
export const withPort = (url: string, port: number): string => {
  const u = new URL(url)
  u.port = String(port)
  return u.toString()
}

/**
 * An ioredis client for a test, connected (status "ready") before it is
 * returned and closed with the scope. Code under test treats a client that is
 * not ready as unavailable, so a test must not race the connection: on a busy
 * machine the handshake can take longer than the test's first command.
 */
export const redisClient = (options: RedisOptions = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1, ...options })),
    (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
  ).pipe(
    Effect.tap((client) =>
      client.status === "ready" || options.lazyConnect === true
        ? Effect.void
        : Effect.async<void, Error>((resume) => {
          const ready = () => {
            client.off("error", failed)
            resume(Effect.void)
          }
          const failed = (error: Error) => {
            client.off("ready", ready)
            resume(Effect.fail(error))
          }
          client.once("ready", ready).once("error", failed)
        }).pipe(Effect.orDie)
    )
  )

/**
 * A TCP proxy to `target` that can be taken down and brought back: `down`
 * destroys every open connection and refuses new ones (as a crashed server
 * would look), `up` accepts again, so clients that reconnect recover.
 */
export const switchableProxy = (target: { readonly host: string; readonly port: number }) =>
  Effect.acquireRelease(
    Effect.async<
      {
        readonly port: number
        readonly down: Effect.Effect<void>
        readonly up: Effect.Effect<void>
        readonly close: () => void
      }
    >(
      (resume) => {
        const sockets = new Set<net.Socket>()
        let accepting = true
        const server = net.createServer((client) => {
          if (!accepting) {
            client.destroy()
            return
          }
          const upstream = net.connect(target.port, target.host)
          sockets.add(client)
          sockets.add(upstream)
          const drop = () => {
            client.destroy()
            upstream.destroy()
            sockets.delete(client)
            sockets.delete(upstream)
          }
          client.on("error", drop).on("close", drop)
          upstream.on("error", drop).on("close", drop)
          client.pipe(upstream).pipe(client)
        })
        const down = Effect.sync(() => {
          accepting = false
          for (const socket of sockets) socket.destroy()
          sockets.clear()
        })
        const up = Effect.sync(() => {
          accepting = true
        })
        const close = () => {
          accepting = false
          server.close()
          for (const socket of sockets) socket.destroy()
        }
        server.listen(0, "127.0.0.1", () => {
          resume(Effect.succeed({ port: (server.address() as net.AddressInfo).port, down, up, close }))
        })
      }
    ),
    (proxy) => Effect.sync(proxy.close)
  )
