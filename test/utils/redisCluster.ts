/**
 * A local three-node Redis Cluster for tests: three `redis-server
 * --cluster-enabled yes` processes on random free loopback ports, joined with
 * `redis-cli --cluster create`, stopped (and their temporary folder removed)
 * when the scope closes. Needs `redis-server` and `redis-cli` on the PATH
 * (the Debian package `redis-server` ships both).
 */
import { Effect, Schedule, type Scope } from "effect"
import { Cluster } from "ioredis"
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

export interface RedisClusterNodes {
  readonly ports: ReadonlyArray<number>
  readonly startupNodes: ReadonlyArray<{ readonly host: string; readonly port: number }>
}

class ClusterSetupError extends Error {}

const cli = (args: ReadonlyArray<string>, timeoutMs = 10_000) =>
  Effect.async<string, ClusterSetupError>((resume) => {
    const child = execFile("redis-cli", [...args], { timeout: timeoutMs }, (error, stdout, stderr) => {
      resume(
        error === null
          ? Effect.succeed(stdout)
          : Effect.fail(new ClusterSetupError(`redis-cli ${args.join(" ")}: ${error.message} ${stderr}`))
      )
    })
    return Effect.sync(() => child.kill())
  })

const isFree = (port: number) =>
  Effect.async<boolean>((resume) => {
    const server = net.createServer()
    server.once("error", () => resume(Effect.succeed(false)))
    server.listen(port, "127.0.0.1", () => server.close(() => resume(Effect.succeed(true))))
  })

// A port P with P and its cluster bus port P + 10000 both free.
const freePort = (taken: ReadonlyArray<number>): Effect.Effect<number> =>
  Effect.gen(function*() {
    for (;;) {
      const port = 20_000 + Math.floor(Math.random() * 30_000)
      if (taken.some((p) => Math.abs(p - port) < 2 || Math.abs(p + 10_000 - port) < 2)) continue
      if ((yield* isFree(port)) && (yield* isFree(port + 10_000))) return port
    }
  })

const stop = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000)
    child.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

const startNode = (dir: string, port: number) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      spawn("redis-server", [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        path.join(dir, `nodes-${port}.conf`),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        dir,
        "--logfile",
        path.join(dir, `redis-${port}.log`)
      ], { stdio: "ignore" })
    ),
    stop
  ).pipe(
    Effect.tap((child) =>
      cli(["-p", String(port), "ping"], 1000).pipe(
        Effect.filterOrFail((out) => out.trim() === "PONG", () => new ClusterSetupError(`node ${port}: no PONG`)),
        Effect.filterOrFail(
          () => child.exitCode === null,
          () => new ClusterSetupError(`redis-server on ${port} exited`)
        ),
        Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 50 })
      )
    )
  )

/** Checks that the Redis binaries needed for a local cluster are on this machine. */
export const clusterBinariesAvailable = (): boolean =>
  ["redis-server", "redis-cli"].every((bin) => spawnSync(bin, ["--version"]).status === 0)

/**
 * Starts the cluster for the scope: three masters, no replicas, all 16384
 * slots covered, `cluster_state:ok` on every node.
 */
export const redisCluster: Effect.Effect<RedisClusterNodes, ClusterSetupError, Scope.Scope> = Effect
  .gen(function*() {
    if (!clusterBinariesAvailable()) {
      return yield* Effect.fail(new ClusterSetupError("redis-server and redis-cli must be installed"))
    }
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-tenancy-cluster-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const ports: Array<number> = []
    for (let i = 0; i < 3; i++) ports.push(yield* freePort(ports))
    yield* Effect.forEach(ports, (port) => startNode(dir, port), { concurrency: "unbounded", discard: true })
    yield* cli(
      ["--cluster", "create", ...ports.map((port) => `127.0.0.1:${port}`), "--cluster-replicas", "0", "--cluster-yes"],
      30_000
    )
    yield* Effect.forEach(ports, (port) =>
      cli(["-p", String(port), "cluster", "info"]).pipe(
        Effect.filterOrFail(
          (info) => /cluster_state:ok/.test(info) && /cluster_slots_assigned:16384/.test(info),
          () => new ClusterSetupError(`node ${port}: cluster not ok yet`)
        ),
        Effect.retry({ schedule: Schedule.spaced("200 millis"), times: 100 })
      ), { discard: true })
    return { ports, startupNodes: ports.map((port) => ({ host: "127.0.0.1", port })) }
  })

/** An ioredis `Cluster` client on the nodes, ready, closed with the scope. */
export const clusterClient = (nodes: RedisClusterNodes) =>
  Effect.acquireRelease(
    Effect.async<Cluster, ClusterSetupError>((resume) => {
      const cluster = new Cluster([...nodes.startupNodes], { redisOptions: { maxRetriesPerRequest: 1 } })
      const onError = (error: Error) => {
        cluster.off("ready", onReady)
        cluster.disconnect()
        resume(Effect.fail(new ClusterSetupError(`cluster client: ${error.message}`)))
      }
      const onReady = () => {
        cluster.off("error", onError)
        resume(Effect.succeed(cluster))
      }
      cluster.once("ready", onReady)
      cluster.once("error", onError)
    }),
    (cluster) => Effect.promise(() => cluster.quit().catch(() => cluster.disconnect()))
  )
