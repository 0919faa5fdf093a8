/**
 * Text helpers shared by error messages.
 *
 * @internal
 */

/**
 * At most the first 64 characters of untrusted input, for an error: enough
 * to recognise it, never a whole payload.
 *
 * @internal
 */
export const excerpt = (input: string): string => (input.length > 64 ? `${input.slice(0, 64)}…` : input)
