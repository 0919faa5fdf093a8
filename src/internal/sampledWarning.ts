/**
 * Warnings about an outage, at most one per interval per subject.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

interface State {
  last: number
  held: number
}

/**
 * A warning that is logged at most once per `intervalMs` for each subject
 * (for example a backend's name): while a backend is down, every request
 * fails the same way, and one line per request would bury the logs. The
 * warnings held back in between are counted and the count is logged with
 * the next warning (`suppressed`). The subjects kept are bounded.
 *
 * @internal
 */
export const makeSampledWarning = (intervalMs: number = 10_000, maxSubjects: number = 1_000) => {
  const states = new Map<string, State>()
  return (subject: string, message: string, cause?: unknown): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      let state = states.get(subject)
      if (state === undefined) {
        if (states.size >= maxSubjects) states.clear()
        state = { last: Number.NEGATIVE_INFINITY, held: 0 }
        states.set(subject, state)
      }
      // A clock that went back counts as time passed: it must not mute the warnings.
      if (now >= state.last && now - state.last < intervalMs) {
        state.held++
        return Effect.void
      }
      const suppressed = state.held
      state.last = now
      state.held = 0
      const log = cause === undefined ? Effect.logWarning(message) : Effect.logWarning(message, cause)
      return suppressed === 0 ? log : Effect.annotateLogs(log, "suppressed", suppressed)
    })
}
