/**
 * The Redis connection the Redis-backed modules use (tenant cache, throttle
 * backend, quotas). It wraps an `ioredis` client that the application
 * creates and owns: effect-tenancy never opens a Redis connection behind the
 * caller's back (the one exception, documented where it happens, is the
 * dedicated subscriber connection Redis pub/sub requires).
 *
 * Only the type of `ioredis` is imported here, so this module loads without it.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { Cluster, Redis } from "ioredis"
import * as Health from "./Health.js"
import type { HealthStatus } from "./Health.js"

/**
 * @since 0.1.0
 * @category tags
 */
export class RedisClient extends Context.Tag("effect-tenancy/RedisClient")<RedisClient, {
  /** The application's client: a single node or a Cluster. */
  readonly client: Redis | Cluster
  /** PINGs the server. Never fails. */
  readonly health: Effect.Effect<HealthStatus>
}>() {}

/**
 * Wraps an existing client. Closing it stays the caller's job.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  client: Redis | Cluster,
  options?: { readonly component?: string | undefined }
): RedisClient["Type"] =>
  RedisClient.of({
    client,
    health: Health.probe(options?.component ?? "redis", Effect.tryPromise(() => client.ping()), { timeout: 1000 })
  })

/**
 * Provides an existing client.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  client: Redis | Cluster,
  options?: { readonly component?: string | undefined }
): Layer.Layer<RedisClient> => Layer.succeed(RedisClient, make(client, options))

/**
 * Provides a client built by `acquire` and closed (`QUIT`) when the layer's
 * scope closes: for applications that want the layer to own the connection.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerScoped = <E, R>(
  acquire: Effect.Effect<Redis | Cluster, E, R>,
  options?: { readonly component?: string | undefined }
): Layer.Layer<RedisClient, E, R> =>
  Layer.scoped(
    RedisClient,
    Effect.map(
      Effect.acquireRelease(acquire, (client) =>
        Effect.promise(() => client.quit().then(() => undefined, () => client.disconnect()))),
      (client) =>
        make(client, options)
    )
  )
