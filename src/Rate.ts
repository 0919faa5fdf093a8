/**
 * Rates: how many requests (or units of cost) per window.
 *
 * A rate is written `limit/window`: `"1000/hour"`, `"5/min"`, `"10/30s"`,
 * `"200/500ms"`, `"3/2h"`, or given in structured form
 * `{ limit: 10, window: "30 seconds" }`. The limit is a positive integer and
 * the window a whole number of milliseconds from 1 ms to 366 days; anything
 * else (zero or negative limits, fractions, unknown units, numbers too large
 * to count exactly) is an `InvalidRate` naming the input. "No limit" is its
 * own value, `unlimited`, not a large number.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { excerpt } from "./internal/text.js"

/**
 * The input is not a rate. `input` holds at most the first 64 characters of
 * what was given.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRate extends Schema.TaggedError<InvalidRate>("effect-tenancy/InvalidRate")("InvalidRate", {
  input: Schema.String,
  reason: Schema.String
}) {
  /** @since 0.1.0 */
  override get message(): string {
    return `Invalid rate ${JSON.stringify(this.input)}: ${this.reason}`
  }
}

/**
 * At most `limit` per `windowMs` milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export class Limited extends Schema.TaggedClass<Limited>("effect-tenancy/Rate/Limited")("Limited", {
  limit: Schema.Int.pipe(Schema.positive()),
  windowMs: Schema.Int.pipe(Schema.positive())
}) {
  /**
   * The window as a `Duration`.
   *
   * @since 0.1.0
   */
  get window(): Duration.Duration {
    return Duration.millis(this.windowMs)
  }
  /**
   * The time one unit of the limit stands for (GCRA's emission interval), in milliseconds.
   *
   * @since 0.1.0
   */
  get intervalMs(): number {
    return this.windowMs / this.limit
  }
}

/**
 * No limit.
 *
 * @since 0.1.0
 * @category models
 */
export class Unlimited extends Schema.TaggedClass<Unlimited>("effect-tenancy/Rate/Unlimited")("Unlimited", {}) {}

/**
 * @since 0.1.0
 * @category models
 */
export type Rate = Limited | Unlimited

/**
 * The rate without a limit.
 *
 * @since 0.1.0
 * @category constructors
 */
export const unlimited: Unlimited = new Unlimited()

/**
 * @since 0.1.0
 * @category guards
 */
export const isUnlimited = (rate: Rate): rate is Unlimited => rate._tag === "Unlimited"

/**
 * The longest window a rate may have: 366 days.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxWindowMs = 366 * 24 * 60 * 60 * 1000

const units: Readonly<Record<string, number>> = {
  ms: 1,
  millisecond: 1,
  milliseconds: 1,
  s: 1000,
  sec: 1000,
  secs: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  mins: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hrs: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000
}

const textPattern = /^\s*(-?\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)?\s*([a-zA-Z]+)\s*$/

const checked = (input: string, limit: number, windowMs: number): Either.Either<Limited, InvalidRate> => {
  const fail = (reason: string) => Either.left(new InvalidRate({ input: excerpt(input), reason }))
  if (!Number.isFinite(limit) || !Number.isInteger(limit)) return fail("the limit must be a whole number")
  if (limit <= 0) return fail("the limit must be positive (use Rate.unlimited for no limit)")
  if (!Number.isSafeInteger(limit)) return fail("the limit is too large to count exactly")
  if (!Number.isFinite(windowMs) || !Number.isInteger(windowMs)) {
    return fail("the window must be a whole number of milliseconds")
  }
  if (windowMs <= 0) return fail("the window must be positive")
  if (windowMs > maxWindowMs) return fail("the window is longer than 366 days")
  return Either.right(new Limited({ limit, windowMs }))
}

/**
 * Reads `"limit/window"` (`"1000/hour"`, `"10/30s"`, `"200/500ms"`) or
 * `"unlimited"`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (input: string): Either.Either<Rate, InvalidRate> => {
  if (input.trim().toLowerCase() === "unlimited") return Either.right(unlimited)
  const match = textPattern.exec(input)
  if (match === null) {
    return Either.left(
      new InvalidRate({ input: excerpt(input), reason: "expected limit/window, such as 100/min or 10/30s" })
    )
  }
  const [, limitText, countText, unitText] = match
  const unit = units[unitText.toLowerCase()]
  if (unit === undefined) {
    return Either.left(
      new InvalidRate({
        input: excerpt(input),
        reason: `unknown unit ${JSON.stringify(unitText)} (use ms, s, min, h or d)`
      })
    )
  }
  const count = countText === undefined ? 1 : Number(countText)
  return checked(input, Number(limitText), count * unit)
}

/**
 * A rate from its structured form, or from text (see `parse`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  input: string | { readonly limit: number; readonly window: Duration.DurationInput } | Rate
): Effect.Effect<Rate, InvalidRate> => fromInput(input)

/**
 * `make`, as an `Either`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromInput = (
  input: string | { readonly limit: number; readonly window: Duration.DurationInput } | Rate
): Either.Either<Rate, InvalidRate> => {
  if (typeof input === "string") return parse(input)
  if (input instanceof Limited || input instanceof Unlimited) return Either.right(input)
  const description = `${String(input.limit)}/${String(input.window)}`
  const window = Duration.decodeUnknown(input.window)
  if (window._tag === "None" || !Duration.isFinite(window.value)) {
    return Either.left(new InvalidRate({ input: excerpt(description), reason: "the window is not a finite duration" }))
  }
  return checked(description, input.limit, Duration.toMillis(window.value))
}

const canonicalUnits: ReadonlyArray<readonly [string, number]> = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["min", 60_000],
  ["s", 1000],
  ["ms", 1]
]

/**
 * The canonical text of a rate: the largest unit that divides the window
 * (`"1000/h"`, `"10/30s"`, `"200/500ms"`), or `"unlimited"`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (rate: Rate): string => {
  if (rate._tag === "Unlimited") return "unlimited"
  const [unit, size] = canonicalUnits.find(([, size]) => rate.windowMs % size === 0)!
  const count = rate.windowMs / size
  return `${rate.limit}/${count === 1 ? "" : count}${unit}`
}

/**
 * A `Rate` decoded from its text form (and encoded back to the canonical text).
 *
 * @since 0.1.0
 * @category schemas
 */
export const RateFromString: Schema.Schema<Rate, string> = Schema.transformOrFail(
  Schema.String,
  Schema.typeSchema(Schema.Union(Limited, Unlimited)),
  {
    strict: true,
    decode: (input, _, ast) => Either.mapLeft(parse(input), (error) => new ParseResult.Type(ast, input, error.message)),
    encode: (rate) => ParseResult.succeed(format(rate))
  }
).annotations({ identifier: "Rate" })

/**
 * @since 0.1.0
 * @category guards
 */
export const isRate = (u: unknown): u is Rate => u instanceof Limited || u instanceof Unlimited

/**
 * @since 0.1.0
 * @category guards
 */
export const isInvalidRate = (u: unknown): u is InvalidRate => Predicate.isTagged(u, "InvalidRate")
