// NAR hash notation: Nix prints `sha256:<nix-base32>`; the store DB holds hex; SRI (`sha256-<base64>`) shows up in newer tools.
import { BadHashError } from './errors.js'

const ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'

/** nix-base32 (FORMATS.md §1.5): the bytes as one little-endian integer, most significant digit first. */
export function toNixBase32 (bytes: Uint8Array): string {
  const len = Math.ceil(bytes.length * 8 / 5)
  let s = ''
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5
    const i = b >> 3
    const j = b & 7
    const c = ((bytes[i] ?? 0) >> j) | ((bytes[i + 1] ?? 0) << (8 - j))
    s += ALPHABET[c & 31]
  }
  return s
}

export function fromNixBase32 (s: string, size: number): Buffer {
  if (s.length !== Math.ceil(size * 8 / 5)) throw new BadHashError(`nix-base32 string of ${s.length} characters cannot hold ${size} bytes`)
  const out = Buffer.alloc(size)
  for (let k = 0; k < s.length; k++) {
    const digit = ALPHABET.indexOf(s[s.length - 1 - k])
    if (digit < 0) throw new BadHashError(`invalid nix-base32 character '${s[s.length - 1 - k]}' in ${s}`)
    const b = k * 5
    const i = b >> 3
    const j = b & 7
    out[i] |= (digit << j) & 0xff
    const carry = digit >> (8 - j)
    if (i + 1 < size) out[i + 1] |= carry
    else if (carry !== 0) throw new BadHashError(`nix-base32 value ${s} overflows ${size} bytes`)
  }
  return out
}

/** Accepts `sha256:<base32|hex>`, bare base32/hex, or SRI `sha256-<base64>`; returns the 32 digest bytes. */
export function parseSha256 (s: string): Buffer {
  if (s.startsWith('sha256-')) {
    const b = Buffer.from(s.slice(7), 'base64')
    if (b.length !== 32) throw new BadHashError(`SRI hash ${s} is not 32 bytes`)
    return b
  }
  const body = s.startsWith('sha256:') ? s.slice(7) : s
  if (/^[0-9a-f]{64}$/.test(body)) return Buffer.from(body, 'hex')
  if (body.length === 52) return fromNixBase32(body, 32)
  throw new BadHashError(`not a sha256 hash: ${s}`)
}

/** The form Nix prints and narinfo carries: `sha256:<nix-base32>`. */
export function formatSha256 (digest: Uint8Array): string {
  return 'sha256:' + toNixBase32(digest)
}
