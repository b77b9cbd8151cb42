// nix-base32 (FORMATS.md §1.5): the bytes read as one little-endian integer, written in base 32
// most significant digit first, over an alphabet without e, o, u, t.
import { NixBase32AlphabetError, NixBase32LengthError, NixBase32OverflowError } from './errors.js'

export const NIX_BASE32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'

const DIGIT = new Int8Array(128).fill(-1)
for (let i = 0; i < NIX_BASE32_ALPHABET.length; i++) DIGIT[NIX_BASE32_ALPHABET.charCodeAt(i)] = i

/** Number of characters nix-base32 uses for `byteLength` bytes: ceil(8n/5). */
export function nixBase32Length (byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5)
}

export function encodeNixBase32 (bytes: Uint8Array): string {
  const len = nixBase32Length(bytes.length)
  let out = ''
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5
    const i = b >> 3
    const j = b & 7
    const lo = bytes[i] ?? 0
    const hi = bytes[i + 1] ?? 0
    out += NIX_BASE32_ALPHABET[((lo >> j) | (hi << (8 - j))) & 31]
  }
  return out
}

/**
 * Strict decode. `byteLength` defaults to the only length whose encoding has this many
 * characters; rejects characters outside the alphabet, a length that fits no byte count
 * (or not the one asked for), and a value with bits set beyond the byte length.
 */
export function decodeNixBase32 (text: string, byteLength?: number): Uint8Array {
  const n = byteLength ?? Math.floor((text.length * 5) / 8)
  if (nixBase32Length(n) !== text.length) {
    throw new NixBase32LengthError(`nix-base32 string of ${text.length} characters does not encode ${byteLength === undefined ? 'a whole number of' : n} bytes`)
  }
  const out = new Uint8Array(n)
  for (let k = 0; k < text.length; k++) {
    const code = text.charCodeAt(k)
    const d = code < 128 ? DIGIT[code] : -1
    if (d === -1) throw new NixBase32AlphabetError(`invalid nix-base32 character ${JSON.stringify(text[k])} at position ${k}`)
    const b = (text.length - 1 - k) * 5
    const i = b >> 3
    const j = b & 7
    out[i] |= (d << j) & 0xff
    const carry = d >> (8 - j)
    if (carry !== 0) {
      if (i + 1 >= n) throw new NixBase32OverflowError(`nix-base32 value overflows ${n} bytes (character ${k})`)
      out[i + 1] |= carry
    }
  }
  return out
}
