// The Ed25519 curve group (twisted Edwards, a = -1) in BigInt arithmetic, extended coordinates.
// Guix keys are ECDSA keys on this group, so no Ed25519 (EdDSA) library can check them: we need
// the raw group operations. Performance is fine for narinfos (a few ms per scalar multiplication).
import { GuixKeyError } from './errors.js'

/** Field prime 2^255 - 19. */
export const P = (1n << 255n) - 19n
/** Order of the base point (the prime subgroup). */
export const N = (1n << 252n) + 27742317777372353535851937790883648493n
/** Bit length of N (253); libgcrypt truncates hashes to this many bits. */
export const N_BITS = 253

const D = mod(-121665n * inv(121666n, P), P)
const SQRT_M1 = pow(2n, (P - 1n) / 4n, P)

/** A point in extended coordinates: x = X/Z, y = Y/Z, x*y = T/Z. */
export interface Point { X: bigint, Y: bigint, Z: bigint, T: bigint }

export function mod (a: bigint, m: bigint): bigint {
  const r = a % m
  return r >= 0n ? r : r + m
}

export function pow (base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n
  let b = mod(base, m)
  let e = exp
  while (e > 0n) {
    if ((e & 1n) === 1n) result = (result * b) % m
    b = (b * b) % m
    e >>= 1n
  }
  return result
}

/** Modular inverse by Fermat (m is prime here: P or N). */
export function inv (a: bigint, m: bigint): bigint {
  const r = mod(a, m)
  if (r === 0n) throw new RangeError('inverse of zero')
  return pow(r, m - 2n, m)
}

export const IDENTITY: Point = { X: 0n, Y: 1n, Z: 1n, T: 0n }

const BY = mod(4n * inv(5n, P), P)
const BX = recoverX(BY, 0)
/** The standard Ed25519 base point. */
export const BASE: Point = { X: BX, Y: BY, Z: 1n, T: mod(BX * BY, P) }

/** Unified addition for a = -1 (RFC 8032 §5.1.4); also correct for doubling and the identity. */
export function add (p: Point, q: Point): Point {
  const A = mod((p.Y - p.X) * (q.Y - q.X), P)
  const B = mod((p.Y + p.X) * (q.Y + q.X), P)
  const C = mod(2n * p.T * q.T * D, P)
  const Dd = mod(2n * p.Z * q.Z, P)
  const E = B - A
  const F = Dd - C
  const G = Dd + C
  const H = B + A
  return { X: mod(E * F, P), Y: mod(G * H, P), Z: mod(F * G, P), T: mod(E * H, P) }
}

export function double (p: Point): Point {
  const A = (p.X * p.X) % P
  const B = (p.Y * p.Y) % P
  const C = (2n * p.Z * p.Z) % P
  const H = A + B
  const E = mod(H - mod((p.X + p.Y) * (p.X + p.Y), P), P)
  const G = mod(A - B, P)
  const F = C + G
  return { X: mod(E * F, P), Y: mod(G * H, P), Z: mod(F * G, P), T: mod(E * H, P) }
}

/**
 * k·p with a fixed-length Montgomery ladder over 256 bits: the same sequence of group operations
 * for every scalar below 2^256. BigInt itself is not constant time, so this only avoids the
 * grossest key-dependent branching; it is what we use for signing (see guix-ecdsa.ts).
 */
export function multiply (k: bigint, p: Point): Point {
  if (k < 0n || k >= (1n << 256n)) throw new RangeError('scalar out of range')
  let r0 = IDENTITY
  let r1 = p
  for (let i = 255n; i >= 0n; i--) {
    if (((k >> i) & 1n) === 1n) {
      r0 = add(r0, r1)
      r1 = double(r1)
    } else {
      r1 = add(r0, r1)
      r0 = double(r0)
    }
  }
  return r0
}

export function toAffine (p: Point): { x: bigint, y: bigint } {
  const zi = inv(p.Z, P)
  return { x: mod(p.X * zi, P), y: mod(p.Y * zi, P) }
}

export function equals (a: Point, b: Point): boolean {
  return mod(a.X * b.Z - b.X * a.Z, P) === 0n && mod(a.Y * b.Z - b.Y * a.Z, P) === 0n
}

function recoverX (y: bigint, sign: number): bigint {
  const y2 = (y * y) % P
  const u = mod(y2 - 1n, P)
  const v = mod(D * y2 + 1n, P)
  // x = sqrt(u/v) with the p ≡ 5 (mod 8) method of RFC 8032 §5.1.3
  let x = mod(u * pow(v, 3n, P) * pow(u * pow(v, 7n, P), (P - 5n) / 8n, P), P)
  const vx2 = mod(v * x * x, P)
  if (vx2 === mod(-u, P)) x = mod(x * SQRT_M1, P)
  else if (vx2 !== u) throw new GuixKeyError('point is not on the Ed25519 curve')
  if (x === 0n && sign === 1) throw new GuixKeyError('invalid point encoding (x = 0 with sign bit set)')
  if (Number(x & 1n) !== sign) x = P - x
  return x
}

/** Decode a 32-byte EdDSA point encoding (little-endian y, top bit = parity of x). */
export function decodePoint (bytes: Uint8Array): Point {
  if (bytes.length !== 32) throw new GuixKeyError(`point encoding must be 32 bytes, got ${bytes.length}`)
  const copy = Uint8Array.from(bytes)
  const sign = copy[31] >> 7
  copy[31] &= 0x7f
  const y = leToBigInt(copy)
  if (y >= P) throw new GuixKeyError('point encoding has y >= p')
  const x = recoverX(y, sign)
  return { X: x, Y: y, Z: 1n, T: mod(x * y, P) }
}

export function encodePoint (p: Point): Uint8Array {
  const { x, y } = toAffine(p)
  const out = bigIntToLe(y, 32)
  out[31] |= Number(x & 1n) << 7
  return out
}

export function leToBigInt (bytes: Uint8Array): bigint {
  let v = 0n
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i])
  return v
}

export function bigIntToLe (v: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len)
  let x = v
  for (let i = 0; i < len; i++) { out[i] = Number(x & 0xffn); x >>= 8n }
  if (x !== 0n) throw new RangeError(`integer does not fit in ${len} bytes`)
  return out
}

export function beToBigInt (bytes: Uint8Array): bigint {
  let v = 0n
  for (const b of bytes) v = (v << 8n) | BigInt(b)
  return v
}

export function bigIntToBe (v: bigint, len: number): Uint8Array {
  return bigIntToLe(v, len).reverse()
}
