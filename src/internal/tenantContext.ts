/**
 * The tenant context switch: one change of the fiber's refs that provides
 * `CurrentTenant`, annotates logs and spans with `tenant.id`, and is undone
 * exactly once however the inner effect ends.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import type { Tenant } from "../Tenant.js"

/** @internal */
export class CurrentTenant extends Context.Tag("effect-tenancy/CurrentTenant")<CurrentTenant, Tenant>() {}

/** @internal */
export const annotationKey = "tenant.id"

const annotationCacheLimit = 4096
const annotationCache = new WeakMap<HashMap.HashMap<string, unknown>, Map<string, HashMap.HashMap<string, unknown>>>()

/**
 * `HashMap.set(annotations, "tenant.id", id)`, memoized per (annotations, id).
 *
 * Setting a `FiberRef` compares the old and new values with `Equal.equals`,
 * which hashes both maps; a memoized map keeps its cached hash, so entering
 * the same tenant from the same annotations again costs a lookup instead of
 * an allocation and two full hashes. The cache is weak in the outer map and
 * cleared when an inner map grows past a bound.
 *
 * @internal
 */
export const withTenantAnnotation = (
  annotations: HashMap.HashMap<string, unknown>,
  id: string
): HashMap.HashMap<string, unknown> => {
  let byId = annotationCache.get(annotations)
  if (byId === undefined) {
    byId = new Map()
    annotationCache.set(annotations, byId)
  }
  let next = byId.get(id)
  if (next === undefined) {
    if (byId.size >= annotationCacheLimit) byId.clear()
    next = HashMap.set(annotations, annotationKey, id)
    byId.set(id, next)
  }
  return next
}

/**
 * Runs `self` with `tenant` as the current tenant. The caller must be inside
 * an uninterruptible region and pass `self` already wrapped in its `restore`;
 * `onLeave` runs exactly once, when the refs are restored.
 *
 * One `updateFiberRefs` sets the context, the log annotations and the span
 * annotations together, and one restores them: `Effect.provideService` +
 * `annotateLogs` + `annotateSpans` would be three `fiberRefLocally`
 * brackets. The caller's uninterruptible region makes a second bracket
 * (`onExit`) unnecessary: the continuation always runs.
 *
 * @internal
 */
export const switchTo = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  tenant: Tenant,
  onLeave: () => void,
  services?: Context.Context<never>
): Effect.Effect<A, E, Exclude<R, CurrentTenant>> => {
  let prevContext: Context.Context<never>
  let prevLogs: HashMap.HashMap<string, unknown>
  let prevSpans: HashMap.HashMap<string, unknown>
  const enter = Effect.updateFiberRefs((fiberId, refs) => {
    prevContext = FiberRefs.getOrDefault(refs, FiberRef.currentContext)
    prevLogs = FiberRefs.getOrDefault(refs, FiberRef.currentLogAnnotations)
    prevSpans = FiberRefs.getOrDefault(refs, FiberRef.currentTracerSpanAnnotations)
    return FiberRefs.updateManyAs(refs, {
      entries: [
        [FiberRef.currentContext, [[
          fiberId,
          services === undefined
            ? Context.add(prevContext, CurrentTenant, tenant)
            : Context.add(Context.merge(prevContext, services), CurrentTenant, tenant)
        ]]],
        [FiberRef.currentLogAnnotations, [[fiberId, withTenantAnnotation(prevLogs, tenant.id)]]],
        [FiberRef.currentTracerSpanAnnotations, [[fiberId, withTenantAnnotation(prevSpans, tenant.id)]]]
      ]
    })
  })
  const leave = Effect.updateFiberRefs((fiberId, refs) => {
    onLeave()
    return FiberRefs.updateManyAs(refs, {
      entries: [
        [FiberRef.currentContext, [[fiberId, prevContext]]],
        [FiberRef.currentLogAnnotations, [[fiberId, prevLogs]]],
        [FiberRef.currentTracerSpanAnnotations, [[fiberId, prevSpans]]]
      ]
    })
  })
  return Effect.flatMap(
    Effect.zipRight(enter, Effect.exit(self as Effect.Effect<A, E>)),
    (exit) => Effect.zipRight(leave, exit)
  )
}
