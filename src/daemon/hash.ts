// NAR hash notation: Nix prints `sha256:<nix-base32>`; the store DB holds hex; SRI (`sha256-<base64>`) shows up in newer tools.
// nix-base32 itself lives in src/nar (the bottom layer beside this one).
import { decodeNixBase32, formatNarHash, NarError } from '../nar/index.js'
import { BadHashError } from './errors.js'

/** Accepts `sha256:<base32|hex>`, bare base32/hex, or SRI `sha256-<base64>`; returns the 32 digest bytes. */
export function parseSha256 (s: string): Buffer {
  if (s.startsWith('sha256-')) {
    const b = Buffer.from(s.slice(7), 'base64')
    if (b.length !== 32) throw new BadHashError(`SRI hash ${s} is not 32 bytes`)
    return b
  }
  const body = s.startsWith('sha256:') ? s.slice(7) : s
  if (/^[0-9a-f]{64}$/.test(body)) return Buffer.from(body, 'hex')
  if (body.length === 52) {
    try {
      return Buffer.from(decodeNixBase32(body, 32))
    } catch (err) {
      if (err instanceof NarError) throw new BadHashError(`not a sha256 hash: ${s} (${err.message})`)
      throw err
    }
  }
  throw new BadHashError(`not a sha256 hash: ${s}`)
}

/** The form Nix prints and narinfo carries: `sha256:<nix-base32>`. */
export const formatSha256: (digest: Uint8Array) => string = formatNarHash
