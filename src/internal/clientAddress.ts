/**
 * Client addresses for throttling: strict IPv4 / IPv6 parsing (no DNS, no
 * platform calls), CIDR ranges, the `X-Forwarded-For` walk over trusted
 * proxies, and the identifier of an address (IPv6 grouped by prefix).
 *
 * Nothing here throws on request input: an address that does not parse is
 * `undefined`, and the caller decides what that means.
 *
 * @internal
 */

/** @internal */
export interface Address {
  readonly v4: boolean
  /** 4 bytes (IPv4) or 16 (IPv6). IPv4-mapped IPv6 addresses are IPv4. */
  readonly bytes: Uint8Array
}

/** @internal */
export interface Cidr extends Address {
  readonly prefix: number
}

// Hand-written scanners: a request's address is parsed on every request.

// The 32-bit value of a dotted-quad in input[start, end), or -1. Leading zeros
// are refused: "010" is octal to some parsers and decimal to others.
const scanV4 = (input: string, start: number, end: number): number => {
  let result = 0
  let parts = 0
  let value = 0
  let digits = 0
  for (let i = start; i < end; i++) {
    const c = input.charCodeAt(i)
    if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return -1
      value = value * 10 + (c - 48)
      if (++digits > 3 || value > 255) return -1
    } else if (c === 46) {
      if (digits === 0 || ++parts > 3) return -1
      result = result * 256 + value
      value = 0
      digits = 0
    } else {
      return -1
    }
  }
  if (digits === 0 || parts !== 3) return -1
  return result * 256 + value
}

const hexValue = (c: number): number =>
  c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1

const parseV4 = (input: string): Address | undefined => {
  const n = scanV4(input, 0, input.length)
  return n === -1
    ? undefined
    : { v4: true, bytes: new Uint8Array([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]) }
}

const zonePattern = /^[0-9a-zA-Z.:-]+$/

const parseV6 = (input: string): Address | undefined => {
  // A zone ("fe80::1%eth0") names an interface of the host, not another client.
  const zone = input.indexOf("%")
  const end = zone === -1 ? input.length : zone
  // A zone is one or more of [0-9a-zA-Z.:-] (as for Node's `isIP`): "::%" and "::%]" are not addresses.
  if (end < 2 || end > 45 || (zone !== -1 && !zonePattern.test(input.slice(zone + 1)))) return undefined
  const groups = new Array<number>(8)
  let count = 0
  // Where "::" stands (as a group index), or -1.
  let gap = -1
  let i = 0
  if (input.charCodeAt(0) === 58) {
    if (input.charCodeAt(1) !== 58) return undefined
    gap = 0
    i = 2
  }
  while (i < end) {
    const start = i
    let value = 0
    let digits = 0
    for (let h = hexValue(input.charCodeAt(i)); i < end && h !== -1; h = hexValue(input.charCodeAt(++i))) {
      value = value * 16 + h
      digits++
    }
    if (i < end && input.charCodeAt(i) === 46) {
      // An IPv4 tail ("::ffff:192.0.2.1") is the last two groups.
      const n = count > 6 ? -1 : scanV4(input, start, end)
      if (n === -1) return undefined
      groups[count++] = n >>> 16
      groups[count++] = n & 0xffff
      i = end
      break
    }
    if (digits === 0 || digits > 4 || count === 8) return undefined
    groups[count++] = value
    if (i === end) break
    if (input.charCodeAt(i) !== 58) return undefined
    i++
    if (input.charCodeAt(i) === 58) {
      if (gap !== -1) return undefined
      gap = count
      i++
    } else if (i === end) {
      return undefined
    }
  }
  // "::" stands for at least one group of zeros.
  if (gap === -1 ? count !== 8 : count > 7) return undefined
  const bytes = new Uint8Array(16)
  for (let g = 0; g < count; g++) {
    const at = gap === -1 || g < gap ? g : g + 8 - count
    bytes[2 * at] = groups[g] >> 8
    bytes[2 * at + 1] = groups[g] & 0xff
  }
  return unmap({ v4: false, bytes })
}

// ::ffff:a.b.c.d is the IPv4 client a.b.c.d (dual-stack sockets report IPv4 peers so).
const unmap = (address: Address): Address => {
  const b = address.bytes
  if (address.v4) return address
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return address
  return b[10] === 0xff && b[11] === 0xff ? { v4: true, bytes: b.slice(12) } : address
}

/**
 * Parses an address as sockets and proxies write it: `192.0.2.1`,
 * `2001:db8::1`, `::ffff:192.0.2.1`, `fe80::1%eth0`, with an optional port
 * (`192.0.2.1:8080`, `[2001:db8::1]:8080`). Anything else is `undefined`.
 *
 * @internal
 */
export const parse = (input: string): Address | undefined => {
  const text = input.trim()
  if (text.length === 0 || text.length > 64) return undefined
  if (text.startsWith("[")) {
    const end = text.indexOf("]")
    if (end === -1) return undefined
    const rest = text.slice(end + 1)
    if (rest !== "" && !/^:[0-9]{1,5}$/.test(rest)) return undefined
    return parseV6(text.slice(1, end))
  }
  const colon = text.indexOf(":")
  if (colon === -1) return parseV4(text)
  if (text.indexOf(":", colon + 1) === -1) {
    // One colon: an IPv4 address with a port.
    return /^[0-9]{1,5}$/.test(text.slice(colon + 1)) ? parseV4(text.slice(0, colon)) : undefined
  }
  return parseV6(text)
}

/**
 * Parses `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128).
 * An IPv4-mapped IPv6 range `::ffff:a.b.c.d/n` (n ≥ 96) is the IPv4 range.
 *
 * @internal
 */
export const parseCidr = (input: string): Cidr | undefined => {
  const text = input.trim()
  const slash = text.indexOf("/")
  const address = parse(slash === -1 ? text : text.slice(0, slash))
  if (address === undefined) return undefined
  const written = slash === -1 ? undefined : text.slice(slash + 1)
  if (written !== undefined && !/^(?:0|[1-9][0-9]{0,2})$/.test(written)) return undefined
  const bits = address.bytes.length * 8
  let prefix = written === undefined ? bits : Number(written)
  // A mapped range was written in IPv6 bits.
  if (address.v4 && text.slice(0, slash === -1 ? undefined : slash).includes(":") && written !== undefined) {
    if (prefix < 96) return undefined
    prefix -= 96
  }
  if (prefix > bits) return undefined
  return { v4: address.v4, bytes: mask(address.bytes, prefix), prefix }
}

/** The address with every bit past `prefix` cleared. @internal */
export const mask = (bytes: Uint8Array, prefix: number): Uint8Array => {
  const out = new Uint8Array(bytes.length)
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.min(8, Math.max(0, prefix - i * 8))
    out[i] = keep === 0 ? 0 : bytes[i] & (0xff << (8 - keep))
  }
  return out
}

/** @internal */
export const contains = (cidr: Cidr, address: Address): boolean => {
  if (cidr.v4 !== address.v4) return false
  const full = cidr.prefix >> 3
  for (let i = 0; i < full; i++) if (cidr.bytes[i] !== address.bytes[i]) return false
  const rest = cidr.prefix & 7
  if (rest === 0) return true
  const m = 0xff << (8 - rest) & 0xff
  return (address.bytes[full] & m) === cidr.bytes[full]
}

const formatV6 = (bytes: Uint8Array): string => {
  const groups = new Array<number>(8)
  for (let i = 0; i < 8; i++) groups[i] = (bytes[2 * i] << 8) | bytes[2 * i + 1]
  // RFC 5952: the longest run (of two or more) of zero groups becomes "::", the first on a tie.
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  let out = ""
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += "::"
      i += bestLength - 1
      continue
    }
    if (out !== "" && !out.endsWith(":")) out += ":"
    out += groups[i].toString(16)
  }
  return out
}

/**
 * The canonical text of an address grouped by `prefix` bits: `192.0.2.1`,
 * `198.51.100.0/24`, `2001:db8:1:2::/64`, `2001:db8::1` (a /128).
 *
 * @internal
 */
export const format = (address: Address, prefix: number): string => {
  const bits = address.bytes.length * 8
  const p = Math.min(prefix, bits)
  const bytes = p === bits ? address.bytes : mask(address.bytes, p)
  const text = address.v4 ? Array.from(bytes).join(".") : formatV6(bytes)
  return p === bits ? text : `${text}/${p}`
}

/** @internal */
export interface Settings {
  readonly trusted: ReadonlyArray<Cidr>
  /** Longest run of trusted hops walked in the forwarded header. */
  readonly maxHops: number
  /** The header is RFC 7239 `Forwarded` (`for=...;proto=...`), not a list of addresses. */
  readonly rfc7239: boolean
}

/**
 * The `for` parameter of each element of an RFC 7239 `Forwarded` field
 * (`for=192.0.2.60;proto=http, For="[2001:db8:cafe::17]:4711"`), unquoted;
 * `undefined` for an element without one. Commas and semicolons inside a
 * quoted string do not split (a proxy may quote client-controlled text in
 * another parameter). An obfuscated (`_hidden`) or `unknown` node comes back
 * as written and then does not parse as an address, which ends the walk.
 */
const forParameters = (field: string): Array<string | undefined> => {
  const found: Array<string | undefined> = []
  let value: string | undefined = undefined
  let pair = ""
  let quoted = false
  const endPair = () => {
    const eq = pair.indexOf("=")
    if (value === undefined && eq !== -1 && pair.slice(0, eq).trim().toLowerCase() === "for") {
      const raw = pair.slice(eq + 1).trim()
      value = raw.length >= 2 && raw.startsWith("\"") && raw.endsWith("\"")
        ? raw.slice(1, -1).replace(/\\(.)/g, "$1")
        : raw
    }
    pair = ""
  }
  for (let i = 0; i < field.length; i++) {
    const c = field[i]
    if (quoted) {
      pair += c
      if (c === "\\" && i + 1 < field.length) pair += field[++i]
      else if (c === "\"") quoted = false
    } else if (c === "\"") {
      quoted = true
      pair += c
    } else if (c === ";") {
      endPair()
    } else if (c === ",") {
      endPair()
      found.push(value)
      value = undefined
    } else {
      pair += c
    }
  }
  endPair()
  found.push(value)
  return found
}

const isTrusted = (settings: Settings, address: Address): boolean => {
  for (const cidr of settings.trusted) if (contains(cidr, address)) return true
  return false
}

/**
 * The client of a request: the peer, unless the peer is a trusted proxy; then
 * the forwarded header is walked from the right, skipping trusted hops, and
 * the first untrusted address is the client. An entry that does not parse
 * ends the walk at the last address known good (the nearest trusted proxy),
 * so a garbled header can neither crash the request nor mint new clients.
 * No peer address (or one that does not parse) is `undefined`.
 *
 * @internal
 */
export const client = (
  settings: Settings,
  remoteAddress: string | undefined,
  forwarded: string | undefined
): Address | undefined => {
  const peer = remoteAddress === undefined ? undefined : parse(remoteAddress)
  if (peer === undefined) return undefined
  if (forwarded === undefined || settings.trusted.length === 0 || !isTrusted(settings, peer)) return peer
  let current = peer
  if (settings.rfc7239) {
    const hops = forParameters(forwarded)
    for (let i = hops.length - 1, walked = 0; i >= 0 && walked < settings.maxHops; i--, walked++) {
      const text = hops[i]
      const hop = text === undefined ? undefined : parse(text)
      if (hop === undefined) return current
      current = hop
      if (!isTrusted(settings, hop)) return hop
    }
    return current
  }
  // From the right, one comma-separated hop at a time (no split of the whole header).
  for (let end = forwarded.length, walked = 0; end >= 0 && walked < settings.maxHops; walked++) {
    const comma = forwarded.lastIndexOf(",", end - 1)
    const hop = parse(forwarded.slice(comma + 1, end))
    if (hop === undefined) return current
    current = hop
    if (!isTrusted(settings, hop)) return hop
    end = comma
  }
  return current
}
