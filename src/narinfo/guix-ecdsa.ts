// ECDSA over the Ed25519 group, as libgcrypt does it for Guix keys (FORMATS.md §4.3).
// Signing follows libgcrypt 1.10's ecc-ecdsa.c and dsa-common.c step by step, so for the same
// key and hash our (r, s) equal libgcrypt's (checked against guile-gcrypt in the tests).
//
// Side channels: signing uses a fixed 256-step Montgomery ladder (multiply() in
// ed25519-group.ts), but JavaScript BigInt arithmetic is not constant time. That is acceptable
// for a build farm signing its own narinfos; it is not hardened against local timing attackers.
import { createHmac } from 'node:crypto'
import { BASE, add, beToBigInt, bigIntToBe, decodePoint, inv, IDENTITY, equals, mod, multiply, N, N_BITS, toAffine, type Point } from './ed25519-group.js'

export interface EcdsaSignature { r: bigint, s: bigint }

/** libgcrypt's _gcry_dsa_normalize_hash: the hash as a big-endian integer, cut to the top 253 bits. */
export function hashToInteger (hash: Uint8Array): bigint {
  const bits = hash.length * 8
  const e = beToBigInt(hash)
  return bits > N_BITS ? e >> BigInt(bits - N_BITS) : e
}

function hmac (key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = createHmac('sha256', key)
  for (const p of parts) h.update(p)
  return new Uint8Array(h.digest())
}

/**
 * RFC 6979 nonce exactly as libgcrypt's _gcry_dsa_gen_rfc6979_k computes it for SHA-256:
 * x is written as 32 octets, h1 is reduced with bits2octets, candidates are the top 253 bits of
 * HMAC output and rejected unless 0 < k < n; `extraLoops` skips that many valid candidates
 * (libgcrypt asks for another k when r or s came out zero).
 */
export function rfc6979Nonce (d: bigint, hash: Uint8Array, extraLoops = 0): bigint {
  if (hash.length !== 32) throw new RangeError('RFC 6979 here is defined for SHA-256 digests only')
  const qlen = Math.ceil(N_BITS / 8)
  const x = bigIntToBe(d, qlen)
  let z1 = hashToInteger(hash)
  if (z1 >= N) z1 -= N
  const h1 = bigIntToBe(z1, qlen)
  let V: Uint8Array = new Uint8Array(32).fill(1)
  let K: Uint8Array = new Uint8Array(32)
  K = hmac(K, V, Uint8Array.of(0), x, h1)
  V = hmac(K, V)
  K = hmac(K, V, Uint8Array.of(1), x, h1)
  V = hmac(K, V)
  let loops = extraLoops
  for (;;) {
    // one 256-bit block covers the 253 bits of n
    V = hmac(K, V)
    const k = beToBigInt(V) >> BigInt(256 - N_BITS)
    if (k > 0n && k < N) {
      if (loops === 0) return k
      loops--
    }
    K = hmac(K, V, Uint8Array.of(0))
    V = hmac(K, V)
  }
}

/** Deterministic ECDSA signature of a SHA-256 digest with secret scalar d (libgcrypt's algorithm). */
export function ecdsaSign (d: bigint, hash: Uint8Array): EcdsaSignature {
  const e = hashToInteger(hash)
  for (let extra = 0; ; extra++) {
    const k = rfc6979Nonce(d, hash, extra)
    const r = mod(toAffine(multiply(k, BASE)).x, N)
    if (r === 0n) continue
    const s = mod(inv(k, N) * (e + mod(d, N) * r), N)
    if (s === 0n) continue
    return { r, s }
  }
}

/** Plain double-and-add for verification (public data, no secrets involved). */
function mulPublic (k: bigint, p: Point): Point {
  let acc = IDENTITY
  let base = p
  let e = k
  while (e > 0n) {
    if ((e & 1n) === 1n) acc = add(acc, base)
    base = add(base, base)
    e >>= 1n
  }
  return acc
}

/** ECDSA verification with q as the 32-byte EdDSA point encoding; false on any failure. */
export function ecdsaVerify (q: Uint8Array | Point, hash: Uint8Array, sig: EcdsaSignature): boolean {
  const { r, s } = sig
  if (r <= 0n || r >= N || s <= 0n || s >= N) return false
  let Q: Point
  try {
    Q = q instanceof Uint8Array ? decodePoint(q) : q
  } catch {
    return false
  }
  const e = hashToInteger(hash)
  const w = inv(s, N)
  const X = add(mulPublic(mod(e * w, N), BASE), mulPublic(mod(r * w, N), Q))
  if (equals(X, IDENTITY)) return false
  return mod(toAffine(X).x, N) === r
}
