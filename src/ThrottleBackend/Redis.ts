/**
 * The Redis throttle backend: every `run` (a batch of requests, any
 * algorithm, any mode) is one EVALSHA of one Lua script, atomic on the
 * server. The counters' keys are all in `KEYS` (`<namespace>:<key>`; the
 * `Throttle` module puts the tenant's `{t:<id>}` hash tag in its keys, so a
 * tenant's batch lands in one Cluster slot), the script is reloaded (`EVAL`)
 * when the server answers NOSCRIPT, and every key written expires
 * (`PX`) when its counter is back to empty.
 *
 * The script computes the same decisions as the memory backend (the shared
 * conformance suite checks both against the pure algorithms). Time is the
 * server's `TIME` by default, so that every instance of a service shares one
 * clock; `clock: "client"` sends the fiber's `Clock` instead (for tests under
 * `TestClock`, or a fleet with well synchronised clocks).
 *
 * Failures never look like rejections: a client that is not connected, a
 * reply later than `timeout` (default 50 millis) or an unexpected reply is a
 * `ThrottleBackendError` (`Unavailable`, `Timeout`, `BadResponse`), for the
 * throttle's resilience policy to handle.
 *
 * Works with an `ioredis` `Redis` or `Cluster` client, taken from
 * `RedisClient` (the application's connection; never opened here). On a
 * single `Redis` connection, the checks made in one turn of the event loop
 * share socket writes (a few EVALSHA per write).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Cluster, Redis } from "ioredis"
import * as Health from "../Health.js"
import { excerpt } from "../internal/text.js"
import { throttleScript, throttleScriptSha } from "../internal/throttleScripts.js"
import { RedisClient } from "../RedisClient.js"
import type { Decision, Mode, Request } from "../ThrottleBackend.js"
import { ThrottleBackend, ThrottleBackendError } from "../ThrottleBackend.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Prefix of every key: a counter's key is `<namespace>:<key>`. Default
   * `throttle`. 1 to 200 characters, without `{` or `}` (a key's hash tag
   * comes after the namespace).
   */
  readonly namespace?: string | undefined
  /**
   * The longest a check may wait for Redis before it fails with reason
   * `Timeout` (default 50 millis). A timed-out `consume` may still have been
   * counted by the server.
   */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Whose clock decides: `server` (default, Redis `TIME`) or `client` (the
   * fiber's `Clock`, sent with each call; `TestClock` drives it).
   */
  readonly clock?: "server" | "client" | undefined
  /**
   * Time added to every key's expiry. The decisions never depend on it (a
   * stored counter carries its own expiry, read with the same clock that
   * wrote it); it only keeps keys longer in Redis. Useful with
   * `clock: "client"` when the client's clock does not follow real time
   * (`TestClock`): set it longer than the test runs. Default 0.
   */
  readonly expiryMargin?: Duration.DurationInput | undefined
  /**
   * `true` (default): counters outlive the layer. `false`: when the layer's
   * scope closes, every key of the namespace is deleted (SCAN on every master
   * node), for tests and throwaway environments. Use a namespace of its own.
   * Only keys that start with a hash tag are removed (`<namespace>:{...`, as
   * every `Throttle` key does), so a namespace nested in this one
   * (`throttle:prod` under `throttle`) is left alone.
   */
  readonly persistent?: boolean | undefined
  /** The backend's name in errors, logs and health (default `redis`). */
  readonly name?: string | undefined
}

interface Settings {
  readonly namespace: string
  readonly timeoutMs: number
  readonly clientClock: boolean
  readonly marginMs: number
  readonly persistent: boolean
  readonly name: string
}

// The longest delay a Node timer takes; a longer one fires at once.
const maxTimerMs = 2 ** 31 - 1

/**
 * The options, checked: the reason they are refused, or the settings.
 */
const settings = (options: Options | undefined): Either.Either<Settings, string> => {
  const namespace = options?.namespace ?? "throttle"
  if (namespace.length === 0 || namespace.length > 200 || /[{}]/.test(namespace)) {
    return Either.left(
      `namespace must have 1 to 200 characters and no "{" or "}", got ${JSON.stringify(excerpt(namespace))}`
    )
  }
  const timeout = Duration.decodeUnknown(options?.timeout ?? Duration.millis(50))
  const timeoutMs = Option.isSome(timeout) ? Duration.toMillis(timeout.value) : Number.NaN
  if (!(timeoutMs > 0 && timeoutMs <= maxTimerMs)) {
    return Either.left(`timeout must be a duration above zero and at most ${maxTimerMs} ms`)
  }
  const margin = Duration.decodeUnknown(options?.expiryMargin ?? Duration.zero)
  const marginMs = Option.isSome(margin) ? Duration.toMillis(margin.value) : Number.NaN
  if (!(marginMs >= 0 && Number.isFinite(marginMs))) {
    return Either.left("expiryMargin must be a finite duration of zero or more")
  }
  return Either.right({
    namespace,
    timeoutMs,
    clientClock: options?.clock === "client",
    marginMs: Math.ceil(marginMs),
    persistent: options?.persistent ?? true,
    name: options?.name ?? "redis"
  })
}

const algorithmCodes = {
  "gcra": "1",
  "fixed-window": "2",
  "sliding-window": "3",
  "token-bucket": "4"
} as const

const modeCodes = { consume: "c", peek: "p", refund: "r" } as const

type Client = Redis | Cluster

// Only the message: ioredis errors may carry the command's arguments.
const describe = (cause: unknown): string => {
  const message = cause instanceof Error ? cause.message : String(cause)
  return message.length > 200 ? `${message.slice(0, 200)}…` : message
}

// Server errors that mean "not now" rather than "wrong".
const transient = /^(LOADING|BUSY|CLUSTERDOWN|MASTERDOWN|TRYAGAIN|READONLY|NOREPLICAS)\b/

const classify = (cause: unknown): "Unavailable" | "BadResponse" =>
  cause instanceof Error && cause.name === "ReplyError" && !transient.test(cause.message)
    ? "BadResponse"
    : "Unavailable"

const isNoScript = (cause: unknown): boolean => cause instanceof Error && cause.message.startsWith("NOSCRIPT")

// A Lua reply value: an integer, or a number as a string when not integral.
const toNumber = (value: unknown): number =>
  typeof value === "number" ? value : typeof value === "string" ? Number(value) : Number.NaN

const decode = (reply: unknown, count: number): ReadonlyArray<Decision> | undefined => {
  if (!Array.isArray(reply) || reply.length !== count * 5) return undefined
  const decisions: Array<Decision> = new Array(count)
  for (let i = 0; i < count; i++) {
    const at = i * 5
    const limit = toNumber(reply[at + 1])
    const remaining = toNumber(reply[at + 2])
    const resetAfterMs = toNumber(reply[at + 3])
    const retryAfter = toNumber(reply[at + 4])
    if (Number.isNaN(limit + remaining + resetAfterMs + retryAfter)) return undefined
    decisions[i] = {
      allowed: reply[at] === 1,
      limit,
      remaining,
      resetAfterMs,
      retryAfterMs: retryAfter < 0 ? "never" : retryAfter
    }
  }
  return decisions
}

// Calls sent in one socket write (see `evaluate`): measured with 50 checks
// in flight, 4 to 16 do about as well, 1 and "all" worse.
const batchSize = 8

const isCluster = (client: Client): client is Cluster => "isCluster" in client && client.isCluster === true

type Resume = (effect: Effect.Effect<ReadonlyArray<Decision>, ThrottleBackendError>) => void

/**
 * A call in flight: its arguments, its continuation and its deadline. One
 * object per call and no closure but the reply's two callbacks (a check's
 * client side is a few microseconds; every allocation shows).
 */
class Call {
  done = false
  constructor(
    readonly count: number,
    readonly args: Array<string>,
    readonly resume: Resume,
    readonly deadline: number
  ) {}
}

/**
 * Timeouts for calls that all share one duration: their deadlines come in
 * the order of the calls, so one queue and one timer (armed for the oldest
 * pending call) serve them all. A `setTimeout` + `clearTimeout` per call
 * costs about as much as the rest of the client side of a check, and
 * `Effect.timeout` forks a fiber per call. A call that ends is marked `done`;
 * the timer skips it.
 */
class Deadlines {
  private queue: Array<Call> = []
  private head = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  constructor(readonly timeoutMs: number, readonly expire: (call: Call) => void) {}

  private arm() {
    const queue = this.queue
    while (this.head < queue.length && queue[this.head].done) this.head++
    if (this.head >= queue.length) {
      this.queue = []
      this.head = 0
      return
    }
    this.timer = setTimeout(() => this.fire(), Math.max(0, queue[this.head].deadline - performance.now()))
  }

  private fire() {
    this.timer = undefined
    const now = performance.now()
    const expired: Array<Call> = []
    const queue = this.queue
    while (this.head < queue.length) {
      const call = queue[this.head]
      if (!call.done) {
        if (call.deadline > now) break
        expired.push(call)
        call.done = true
      }
      this.head++
    }
    if (this.head > 1024 && this.head * 2 > queue.length) {
      this.queue = queue.slice(this.head)
      this.head = 0
    }
    this.arm()
    // Last: an expiry ends its call, which moves the queue's head.
    for (const call of expired) this.expire(call)
  }

  deadline(): number {
    return performance.now() + this.timeoutMs
  }

  add(call: Call) {
    this.queue.push(call)
    if (this.timer === undefined) this.arm()
  }

  /** Ends a call: drops the ended calls at the front, so the queue holds about what is in flight. */
  end(call: Call) {
    call.done = true
    const queue = this.queue
    while (this.head < queue.length && queue[this.head].done) this.head++
    if (this.head >= queue.length) {
      queue.length = 0
      this.head = 0
    }
  }

  close() {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }
}

const escapeGlob = (text: string) => text.replace(/[*?[\]\\]/g, (c) => `\\${c}`)

/**
 * Builds the backend over the `RedisClient` connection. Scoped: with
 * `persistent: false` its namespace is cleared when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: Options
): Effect.Effect<ThrottleBackend["Type"], never, RedisClient | Scope.Scope> =>
  // Options written in code: a mistake is a defect, named here (`layerConfig` fails with a ConfigError).
  Either.match(settings(options), {
    onLeft: (reason) => Effect.dieMessage(`ThrottleBackend/Redis: ${reason}`),
    onRight: makeWith
  })

const makeWith = (config: Settings): Effect.Effect<ThrottleBackend["Type"], never, RedisClient | Scope.Scope> =>
  Effect.gen(function*() {
    const client: Client = (yield* RedisClient).client
    const { name, namespace, timeoutMs } = config
    const noReply = `no reply within ${timeoutMs} ms`
    const prefix = `${namespace}:`
    const margin = String(config.marginMs)

    const fail = (reason: ThrottleBackendError["reason"], detail: string, cause?: unknown) =>
      new ThrottleBackendError(
        cause === undefined ? { backend: name, reason, detail } : { backend: name, reason, detail, cause }
      )

    const timeoutError = () => fail("Timeout", noReply)
    const deadlines = new Deadlines(timeoutMs, (call) => call.resume(Effect.fail(timeoutError())))
    yield* Effect.addFinalizer(() => Effect.sync(() => deadlines.close()))

    const settle = (call: Call, reply: unknown) => {
      if (call.done) return
      deadlines.end(call)
      const decisions = decode(reply, call.count)
      call.resume(
        decisions === undefined
          ? Effect.fail(fail("BadResponse", "the script's reply does not have the expected shape"))
          : Effect.succeed(decisions)
      )
    }
    const failed = (call: Call, cause: unknown) => {
      if (call.done) return
      deadlines.end(call)
      call.resume(Effect.fail(fail(classify(cause), describe(cause), cause)))
    }

    // EVALSHA, then EVAL once if the server does not know the script, all
    // within the call's deadline.
    const send = (call: Call) => {
      try {
        client.evalsha(throttleScriptSha, call.count, call.args).then(
          (reply) => settle(call, reply),
          (cause) => {
            if (call.done) return
            if (!isNoScript(cause)) return failed(call, cause)
            client.eval(throttleScript, call.count, call.args).then(
              (reply) => settle(call, reply),
              (cause) => failed(call, cause)
            )
          }
        )
      } catch (cause) {
        failed(call, cause)
      }
    }

    // Calls made in one turn of the event loop (the checks of fibers resumed
    // by one read of replies, say) share socket writes: the first leaves at
    // once, the next ones in groups of `batchSize` (the stream corked while
    // they are sent), the rest when the turn's microtasks run. A write per
    // command is about a quarter of a check's client CPU with 50 in flight,
    // and as many reads on the server; one write for the whole turn would
    // leave the server idle while the client prepares it. Only on a single
    // connection that is ready (a Cluster's commands go to several nodes; a
    // client not ready queues commands itself).
    const batching = !isCluster(client)
    let turn = false
    let batch: Array<Call> = []
    const flush = () => {
      if (batch.length === 0) return
      const calls = batch
      batch = []
      const stream = (client as Redis).stream
      const cork = calls.length > 1 && client.status === "ready" && stream !== undefined && stream !== null
      if (cork) stream.cork()
      try {
        for (let i = 0; i < calls.length; i++) send(calls[i])
      } finally {
        if (cork) stream.uncork()
      }
    }
    const endTurn = () => {
      turn = false
      flush()
    }

    const evaluate = (args: Array<string>, count: number) =>
      Effect.async<ReadonlyArray<Decision>, ThrottleBackendError>((resume) => {
        const call = new Call(count, args, resume, deadlines.deadline())
        deadlines.add(call)
        if (!batching) return send(call)
        if (!turn) {
          turn = true
          queueMicrotask(endTurn)
          return send(call)
        }
        if (batch.push(call) >= batchSize) flush()
        // No canceler: it would cost more than the rest of this function. An
        // interrupted check is abandoned; its reply (or its deadline) ends it.
      })

    const notReady = () => Effect.fail(fail("Unavailable", `the Redis client is ${client.status}`))

    // Fail fast while the connection is lost: a command would wait in ioredis'
    // offline queue until the timeout. Before the client's first connection
    // (a service starting, a lazy client), commands are sent and wait for it.
    let connectedOnce = client.status === "ready"
    if (!connectedOnce) {
      const onReady = () => {
        connectedOnce = true
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => client.once("ready", onReady)),
        () => Effect.sync(() => client.off("ready", onReady))
      )
    }
    const usable = () => {
      const status = client.status
      return status === "ready" ||
        (!connectedOnce && (status === "wait" || status === "connecting" || status === "connect"))
    }

    const call = (requests: ReadonlyArray<Request>, mode: Mode, now: string) => {
      const count = requests.length
      const args: Array<string> = new Array(count + 3 + count * 5)
      args[count] = modeCodes[mode]
      args[count + 1] = now
      args[count + 2] = margin
      for (let i = 0; i < count; i++) {
        const request = requests[i]
        const policy = request.policy
        args[i] = prefix + request.key
        const at = count + 3 + i * 5
        args[at] = algorithmCodes[policy.algorithm]
        args[at + 1] = String(policy.limit)
        args[at + 2] = String(policy.windowMs)
        args[at + 3] = String(policy.burst ?? policy.limit)
        args[at + 4] = String(request.cost)
      }
      return evaluate(args, count)
    }

    const run = (
      requests: ReadonlyArray<Request>,
      mode: Mode
    ): Effect.Effect<ReadonlyArray<Decision>, ThrottleBackendError> => {
      if (requests.length === 0) return Effect.succeed([])
      if (!usable()) return notReady()
      return config.clientClock
        ? Effect.flatMap(Clock.currentTimeMillis, (now) => call(requests, mode, String(now)))
        : call(requests, mode, "")
    }

    const ping = Effect.async<void, ThrottleBackendError>((resume) => {
      if (!usable()) return resume(notReady())
      client.ping().then(
        () => resume(Effect.void),
        (cause) => resume(Effect.fail(fail(classify(cause), describe(cause), cause)))
      )
    })

    if (!config.persistent) {
      yield* Effect.addFinalizer(() => clear(client, namespace, name))
    }

    return ThrottleBackend.of({
      name,
      run,
      health: Health.probe(`throttle:${name}`, ping, { timeout: Math.max(timeoutMs, 1000) })
    })
  })

// Deletes every key of the namespace: SCAN on each master (a Cluster's keys
// are spread over its masters), UNLINK one key per command (keys of one node
// may sit in different slots). Bounded in time; a failure is logged, never raised.
const clear = (client: Client, namespace: string, name: string): Effect.Effect<void> => {
  const nodes = (): ReadonlyArray<Redis> => isCluster(client) ? client.nodes("master") : [client]
  const clearNode = (node: Redis) =>
    Effect.tryPromise(async () => {
      let cursor = "0"
      let removed = 0
      do {
        const [next, keys] = await node.scan(cursor, "MATCH", `${escapeGlob(namespace)}:{*`, "COUNT", 1000)
        cursor = next
        if (keys.length > 0) {
          await node.pipeline(keys.map((key) => ["unlink", key])).exec()
          removed += keys.length
        }
      } while (cursor !== "0")
      return removed
    })
  return Effect.suspend(() => {
    if (client.status !== "ready") {
      return Effect.logWarning(
        `Throttle backend ${name}: Redis is ${client.status}; the keys of namespace ${namespace} were not removed`
      )
    }
    return Effect.forEach(nodes(), clearNode, { concurrency: "unbounded", discard: true }).pipe(
      Effect.timeout(Duration.seconds(10)),
      Effect.catchAllCause((cause) =>
        Effect.logWarning(`Throttle backend ${name}: could not remove the keys of namespace ${namespace}`, cause)
      )
    )
  })
}

/**
 * The Redis backend as a layer, over the `RedisClient` connection.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<ThrottleBackend, never, RedisClient> =>
  Layer.scoped(ThrottleBackend, make(options))

/**
 * The Redis backend with its options read from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<ThrottleBackend, ConfigError.ConfigError, RedisClient> =>
  Layer.scoped(
    ThrottleBackend,
    Effect.flatMap(Config.unwrap(config), (options) =>
      Either.match(settings(options), {
        onLeft: (reason) => Effect.fail(ConfigError.InvalidData([], `ThrottleBackend/Redis: ${reason}`)),
        onRight: makeWith
      }))
  )
