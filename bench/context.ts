/**
 * The cost of a tenant context switch, side by side with its floor.
 *
 * In one process and one Effect loop, per operation:
 * - `withTenant`: validate the id, look it up in the in-memory registry,
 *   check it is active, count it, provide `CurrentTenant`, annotate logs and
 *   spans, restore on exit;
 * - `provideService`: a bare `Effect.provideService` of one service (the floor);
 * - `readCurrentTenant`: `yield* CurrentTenant` inside a tenant;
 * - `baseline`: `Effect.void`.
 *
 * Rounds alternate between the cases; the median of each case is reported,
 * and the ratio is the median of the per-round ratios.
 * Prints a table, then a last line of JSON.
 *
 * Run: npx tsx bench/context.ts
 */
import { Context, Effect } from "effect"
import { CurrentTenant, withTenant } from "effect-tenancy/TenantContext"
import * as TenantRegistry from "effect-tenancy/TenantRegistry"

class Probe extends Context.Tag("bench/Probe")<Probe, { readonly n: number }>() {}

const opsPerRound = 20_000
const rounds = 21

const timeLoop = <R>(body: Effect.Effect<unknown, unknown, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    for (let i = 0; i < opsPerRound; i++) {
      yield* body
    }
    return ((performance.now() - start) * 1e6) / opsPerRound
  })

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

const program = Effect.gen(function*() {
  const registry = yield* TenantRegistry.TenantRegistry
  yield* registry.register({ id: "acme", name: "Acme" })
  for (let i = 0; i < 100; i++) yield* registry.register({ id: `tenant-${i}`, name: `Tenant ${i}` })
  const probe = Probe.of({ n: 1 })

  const cases = {
    baseline: timeLoop(Effect.void),
    provideService: timeLoop(Effect.provideService(Effect.void, Probe, probe)),
    withTenant: timeLoop(withTenant(Effect.void, "acme")),
    readCurrentTenant: withTenant(timeLoop(CurrentTenant), "acme")
  }
  const samples: Record<keyof typeof cases, Array<number>> = {
    baseline: [],
    provideService: [],
    withTenant: [],
    readCurrentTenant: []
  }
  // Warm up, then alternate.
  for (const c of Object.values(cases)) yield* c
  for (let r = 0; r < rounds; r++) {
    for (const [name, c] of Object.entries(cases)) {
      samples[name as keyof typeof cases].push(yield* c)
    }
  }
  const result = {
    baselineNs: median(samples.baseline),
    provideServiceNs: median(samples.provideService),
    withTenantNs: median(samples.withTenant),
    readCurrentTenantNs: median(samples.readCurrentTenant)
  }
  // Each round measures both cases under the same machine noise: compare within rounds.
  const ratio = median(samples.withTenant.map((w, i) => w / samples.provideService[i]))
  const stats = yield* registry.stats
  console.log("operation                     ns/op")
  console.log(`Effect.void (baseline)   ${result.baselineNs.toFixed(0).padStart(10)}`)
  console.log(`Effect.provideService    ${result.provideServiceNs.toFixed(0).padStart(10)}`)
  console.log(`withTenant (memory)      ${result.withTenantNs.toFixed(0).padStart(10)}`)
  console.log(`yield* CurrentTenant     ${result.readCurrentTenantNs.toFixed(0).padStart(10)}`)
  console.log(`withTenant / provideService = ${ratio.toFixed(2)} (target <= 1.5)`)
  console.log(`switches counted: ${stats.totalSwitches}, active after the run: ${stats.activeSwitches}`)
  console.log(
    JSON.stringify({
      bench: "context",
      ...Object.fromEntries(Object.entries(result).map(([k, v]) => [k, Math.round(v)])),
      withTenantToProvideServiceRatio: Number(ratio.toFixed(3)),
      opsPerRound,
      rounds
    })
  )
})

Effect.runPromise(Effect.provide(program, TenantRegistry.layerMemory())).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
