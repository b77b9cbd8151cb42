// Guix narinfo signatures (FORMATS.md §4.3): `Signature: 1;<host>;<base64 of the advanced-form
// sexp>` over sha256 of the narinfo bytes before the first `Signature:`.
import { createHash } from 'node:crypto'
import { hostname } from 'node:os'
import { beToBigInt } from './ed25519-group.js'
import { MalformedSignatureError, SexpError, UnsignableNarinfoError } from './errors.js'
import { ecdsaSign, ecdsaVerify, type EcdsaSignature } from './guix-ecdsa.js'
import { guixPublicKeySexp, type GuixKeyPair, type GuixPublicKey } from './keys.js'
import { atom, atomText, findToken, isAtom, parseSexp, sexpEquals, toAdvanced, tokenAtom, type Sexp } from './sexp.js'

const MARKER = Buffer.from('Signature:')

/** The fields Guix requires inside the signed part; otherwise it treats the narinfo as unsigned. */
export const GUIX_SIGNED_FIELDS = ['StorePath', 'NarHash', 'References'] as const

/** The signed part: bytes up to (not including) the first `Signature:`, or all of it when absent. */
export function guixSignedBody (text: string | Uint8Array): Buffer {
  const b = Buffer.from(text)
  const i = b.indexOf(MARKER)
  return i === -1 ? b : b.subarray(0, i)
}

/** Unsigned big-endian bytes, minimal length: libgcrypt's `%M` for r and s. */
function usg (v: bigint): Uint8Array {
  let hex = v.toString(16)
  if (hex.length % 2 === 1) hex = '0' + hex
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}

export interface GuixSignatureParts {
  version: string
  host: string
  /** The decoded s-expression, as sent. */
  sexp: Sexp
  /** The hash inside `(data … (hash sha256 #…#))`. */
  hash: Uint8Array
  hashAlgo: string
  sig: EcdsaSignature
  /** The embedded `(public-key …)` list. */
  publicKey: Sexp[]
}

/** Split and decode a `Signature:` value; MalformedSignatureError says what is wrong. */
export function parseGuixSignature (value: string): GuixSignatureParts {
  const parts = value.split(';')
  if (parts.length !== 3) throw new MalformedSignatureError(`Signature must be VERSION;HOST;BASE64, got ${parts.length} part(s)`)
  const [version, host, b64] = parts
  if (version !== '1') throw new MalformedSignatureError(`Signature version ${JSON.stringify(version)} is not supported (only 1)`)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new MalformedSignatureError('Signature payload is not base64')
  try {
    const sexp = parseSexp(Buffer.from(b64, 'base64'))
    const sigList = findToken(sexp, 'signature')
    if (sigList === undefined) throw new MalformedSignatureError('signature sexp has no (signature …)')
    const data = findToken(sexp, 'data')
    if (data === undefined) throw new MalformedSignatureError('signature sexp has no (data …)')
    const hashList = findToken(data, 'hash')
    if (hashList === undefined || hashList.length !== 3 || !isAtom(hashList[1]) || !isAtom(hashList[2])) {
      throw new MalformedSignatureError('signature sexp has no (hash ALGO #…#) in its data')
    }
    const sigVal = findToken(sexp, 'sig-val')
    if (sigVal === undefined) throw new MalformedSignatureError('signature sexp has no (sig-val …)')
    if (findToken(sigVal, 'ecdsa') === undefined) throw new MalformedSignatureError('sig-val is not (ecdsa …)')
    const publicKey = findToken(sexp, 'public-key')
    if (publicKey === undefined) throw new MalformedSignatureError('signature sexp has no (public-key …)')
    return {
      version,
      host,
      sexp,
      hashAlgo: atomText(hashList[1]),
      hash: hashList[2],
      sig: { r: beToBigInt(tokenAtom(sigVal, 'r', 'sig-val')), s: beToBigInt(tokenAtom(sigVal, 's', 'sig-val')) },
      publicKey
    }
  } catch (err) {
    if (err instanceof SexpError) throw new MalformedSignatureError(`bad signature s-expression: ${err.message}`)
    throw err
  }
}

/** The `(signature (data …) (sig-val …) (public-key …))` sexp that `guix publish` emits. */
export function guixSignatureSexp (hash: Uint8Array, sig: EcdsaSignature, key: GuixPublicKey): Sexp {
  return [
    atom('signature'),
    [atom('data'), [atom('flags'), atom('rfc6979')], [atom('hash'), atom('sha256'), hash]],
    [atom('sig-val'), [atom('ecdsa'), [atom('r'), usg(sig.r)], [atom('s'), usg(sig.s)]]],
    guixPublicKeySexp(key)
  ]
}

/** The value of a `Signature:` line for a body (the signed bytes). */
export function guixSignatureValue (body: Uint8Array, pair: GuixKeyPair, host = hostname()): string {
  if (host.includes(';') || /[\r\n]/.test(host)) throw new UnsignableNarinfoError(`host name ${JSON.stringify(host)} cannot go in a Signature line`)
  const hash = createHash('sha256').update(body).digest()
  const sig = ecdsaSign(pair.d, hash)
  const text = toAdvanced(guixSignatureSexp(hash, sig, pair.publicKey))
  return `1;${host};${Buffer.from(text, 'utf8').toString('base64')}`
}

export interface GuixSignOptions {
  /** Host name written in the signature (informational); the machine's host name by default. */
  host?: string
}

/**
 * Sign narinfo text the way `guix publish` does: drop any existing `Signature:` lines, make sure
 * StorePath, NarHash and References are in the signed part, and append `Signature:` last.
 */
export function signGuixNarinfo (text: string, pair: GuixKeyPair, opts: GuixSignOptions = {}): string {
  let body = text.split('\n').filter((l) => !l.startsWith('Signature:')).join('\n')
  if (body !== '' && !body.endsWith('\n')) body += '\n'
  if (body.includes('Signature:')) throw new UnsignableNarinfoError('"Signature:" appears inside another field; Guix would cut the signed part there')
  for (const f of GUIX_SIGNED_FIELDS) {
    if (!new RegExp(`^${f}:`, 'm').test(body)) throw new UnsignableNarinfoError(`cannot sign a narinfo without ${f}`)
  }
  return `${body}Signature: ${guixSignatureValue(Buffer.from(body, 'utf8'), pair, opts.host)}\n`
}

export type GuixCheck =
  | { ok: true, key: GuixPublicKey }
  | { ok: false, reason: 'untrusted-key' | 'bad-signature' | 'hash-mismatch', message: string }

/**
 * Check a parsed signature against the signed body and the trusted Guix keys, in Guix's order:
 * the hash in the sexp equals sha256(body), the embedded public key is structurally equal to a
 * trusted one, and the ECDSA equation holds.
 */
export function checkGuixSignature (parts: GuixSignatureParts, body: Uint8Array, trusted: readonly GuixPublicKey[]): GuixCheck {
  const ours = createHash('sha256').update(body).digest()
  if (parts.hashAlgo !== 'sha256' || !ours.equals(parts.hash)) {
    return { ok: false, reason: 'hash-mismatch', message: `the signed hash (${parts.hashAlgo}) does not match sha256 of the narinfo body` }
  }
  const key = trusted.find((k) => sexpEquals(guixPublicKeySexp(k), parts.publicKey))
  if (key === undefined) {
    const q = findToken(parts.publicKey, 'q')
    const qHex = q !== undefined && isAtom(q[1] ?? []) ? Buffer.from(q[1] as Uint8Array).toString('hex').toUpperCase() : '?'
    return { ok: false, reason: 'untrusted-key', message: `signed by an untrusted Guix key (q #${qHex}#)` }
  }
  if (!ecdsaVerify(key.q, parts.hash, parts.sig)) {
    return { ok: false, reason: 'bad-signature', message: 'the ECDSA signature does not verify' }
  }
  return { ok: true, key }
}
