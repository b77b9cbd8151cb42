// Signing keys of both kinds: Guix `signing-key.{pub,sec}` (libgcrypt s-expressions holding an
// ECDSA key on the Ed25519 group) and Nix `name:base64` Ed25519 keys (FORMATS.md §3.1, §4.3).
import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto'
import { chmod, link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { BASE, beToBigInt, bigIntToBe, decodePoint, encodePoint, multiply, N } from './ed25519-group.js'
import { GuixKeyError, KeyExistsError, NixKeyError, UnknownKeyFormatError } from './errors.js'
import { atom, findToken, isAtom, parseSexp, toAdvanced, tokenAtom, type Sexp } from './sexp.js'

const log = logger('guix-swarm:narinfo:keys')

export interface GuixPublicKey {
  readonly kind: 'guix'
  /** 32-byte EdDSA-encoded point, exactly as in `(q #…#)`. */
  readonly q: Uint8Array
}

export interface GuixKeyPair {
  readonly kind: 'guix'
  readonly publicKey: GuixPublicKey
  /** The secret scalar as libgcrypt stores it (big-endian MPI; may exceed the group order). */
  readonly d: bigint
}

export interface NixPublicKey {
  readonly kind: 'nix'
  readonly name: string
  /** 32-byte Ed25519 public key. */
  readonly key: Uint8Array
}

export interface NixKeyPair {
  readonly kind: 'nix'
  readonly name: string
  readonly publicKey: NixPublicKey
  /** 32-byte Ed25519 seed (the first half of Nix's 64-byte secret). */
  readonly seed: Uint8Array
  readonly privateKey: KeyObject
}

export type PublicKey = GuixPublicKey | NixPublicKey
export type KeyPair = GuixKeyPair | NixKeyPair

export interface NodeKeys { guix: GuixKeyPair, nix: NixKeyPair }

export const KEY_FILES = {
  guixPublic: 'signing-key.pub',
  guixSecret: 'signing-key.sec',
  nixPublic: 'nix-key.pub',
  nixSecret: 'nix-key.sec'
} as const

// ---------------------------------------------------------------- Guix

/** libgcrypt prints MPIs in "STD" format: minimal big-endian, with a 00 byte when the top bit is set. */
function mpiBytes (v: bigint): Uint8Array {
  if (v === 0n) return new Uint8Array(0)
  let hex = v.toString(16)
  if (hex.length % 2 === 1) hex = '0' + hex
  if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = '00' + hex
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}

export function guixPublicKeySexp (key: GuixPublicKey): Sexp {
  return [atom('public-key'), [atom('ecc'), [atom('curve'), atom('Ed25519')], [atom('q'), key.q]]]
}

function guixSecretKeySexp (pair: GuixKeyPair): Sexp {
  return [atom('private-key'), [atom('ecc'), [atom('curve'), atom('Ed25519')], [atom('q'), pair.publicKey.q], [atom('d'), mpiBytes(pair.d)]]]
}

export function formatGuixPublicKey (key: GuixPublicKey): string {
  return toAdvanced(guixPublicKeySexp(key))
}

export function formatGuixSecretKey (pair: GuixKeyPair): string {
  return toAdvanced(guixSecretKeySexp(pair))
}

/**
 * A fresh key the way libgcrypt makes one for `(genkey (ecdsa (curve Ed25519) …))`: 32 random
 * bytes read big-endian with bit 255 cleared, bit 254 set and the low 3 bits cleared.
 */
export function generateGuixKeyPair (): GuixKeyPair {
  const buf = randomBytes(32)
  buf[0] &= 0x7f
  buf[0] |= 0x40
  buf[31] &= 0xf8
  return guixKeyPairFromScalar(beToBigInt(buf))
}

export function guixKeyPairFromScalar (d: bigint): GuixKeyPair {
  if (d <= 0n || d >= (1n << 256n) || d % N === 0n) throw new GuixKeyError('secret scalar d is out of range')
  const q = encodePoint(multiply(d, BASE))
  return { kind: 'guix', publicKey: { kind: 'guix', q }, d }
}

function curveOf (s: Sexp, where: string): void {
  const curve = Buffer.from(tokenAtom(s, 'curve', where)).toString('latin1')
  if (curve !== 'Ed25519') throw new GuixKeyError(`${where}: curve is ${curve}, only Ed25519 is supported`)
}

function qOf (s: Sexp, where: string): Uint8Array {
  let q = tokenAtom(s, 'q', where)
  // libgcrypt also accepts the 0x40-prefixed "native" encoding of an EdDSA point
  if (q.length === 33 && q[0] === 0x40) q = q.subarray(1)
  if (q.length !== 32) throw new GuixKeyError(`${where}: q must be 32 bytes, got ${q.length}`)
  decodePoint(q) // throws when q is not a curve point
  return Uint8Array.from(q)
}

/** Parse a Guix public key: `(public-key (ecc (curve Ed25519) (q #…#)))`, any s-expression syntax. */
export function parseGuixPublicKey (text: string | Uint8Array | Sexp[]): GuixPublicKey {
  // a Uint8Array is file content; an already parsed key is a list
  const s = typeof text === 'string' || text instanceof Uint8Array ? parseSexpAsKey(text) : text
  const pk = findToken(s, 'public-key')
  if (pk === undefined) throw new GuixKeyError('not a Guix public key: no (public-key …)')
  curveOf(pk, 'public-key')
  return { kind: 'guix', q: qOf(pk, 'public-key') }
}

/** Parse a Guix secret key file (`(private-key …)`, or libgcrypt's whole `(key-data …)`); q must match d. */
export function parseGuixSecretKey (text: string | Uint8Array): GuixKeyPair {
  const s = parseSexpAsKey(text)
  const sk = findToken(s, 'private-key')
  if (sk === undefined) throw new GuixKeyError('not a Guix secret key: no (private-key …)')
  curveOf(sk, 'private-key')
  const q = qOf(sk, 'private-key')
  const d = beToBigInt(tokenAtom(sk, 'd', 'private-key'))
  const pair = guixKeyPairFromScalar(d)
  if (!Buffer.from(pair.publicKey.q).equals(Buffer.from(q))) throw new GuixKeyError('private-key: q does not equal d·B')
  return pair
}

function parseSexpAsKey (text: string | Uint8Array): Sexp {
  const s = parseSexp(text)
  if (isAtom(s)) throw new GuixKeyError('a key must be a list, not an atom')
  return s
}

// ---------------------------------------------------------------- Nix

const KEY_NAME = /^[^:\s]+$/

function splitNixKey (text: string, what: string): { name: string, bytes: Buffer } {
  const trimmed = text.trim()
  const colon = trimmed.indexOf(':')
  if (colon <= 0) throw new NixKeyError(`${what} must look like NAME:BASE64`)
  const name = trimmed.slice(0, colon)
  const b64 = trimmed.slice(colon + 1)
  if (!KEY_NAME.test(name)) throw new NixKeyError(`${what}: bad key name ${JSON.stringify(name)}`)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new NixKeyError(`${what}: key is not base64`)
  return { name, bytes: Buffer.from(b64, 'base64') }
}

export function parseNixPublicKey (text: string): NixPublicKey {
  const { name, bytes } = splitNixKey(text, 'Nix public key')
  if (bytes.length !== 32) throw new NixKeyError(`Nix public key ${name}: expected 32 bytes, got ${bytes.length}`)
  return { kind: 'nix', name, key: Uint8Array.from(bytes) }
}

export function parseNixSecretKey (text: string): NixKeyPair {
  const { name, bytes } = splitNixKey(text, 'Nix secret key')
  if (bytes.length !== 64) throw new NixKeyError(`Nix secret key ${name}: expected 64 bytes, got ${bytes.length}`)
  const pair = nixKeyPairFromSeed(name, bytes.subarray(0, 32))
  if (!Buffer.from(pair.publicKey.key).equals(bytes.subarray(32))) throw new NixKeyError(`Nix secret key ${name}: its public half does not match its seed`)
  return pair
}

export function nixKeyPairFromSeed (name: string, seed: Uint8Array): NixKeyPair {
  if (!KEY_NAME.test(name)) throw new NixKeyError(`bad Nix key name ${JSON.stringify(name)}`)
  if (seed.length !== 32) throw new NixKeyError(`Nix key seed must be 32 bytes, got ${seed.length}`)
  // PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410): a fixed 16-byte prefix, then the seed
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(seed)])
  const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' })
  if (typeof jwk.x !== 'string') throw new NixKeyError('could not derive the Ed25519 public key')
  const key = Uint8Array.from(Buffer.from(jwk.x, 'base64url'))
  return { kind: 'nix', name, publicKey: { kind: 'nix', name, key }, seed: Uint8Array.from(seed), privateKey }
}

export function generateNixKeyPair (name: string): NixKeyPair {
  return nixKeyPairFromSeed(name, randomBytes(32))
}

export function formatNixPublicKey (key: NixPublicKey): string {
  return `${key.name}:${Buffer.from(key.key).toString('base64')}`
}

export function formatNixSecretKey (pair: NixKeyPair): string {
  return `${pair.name}:${Buffer.concat([pair.seed, pair.publicKey.key]).toString('base64')}`
}

// ---------------------------------------------------------------- either kind

function looksLikeSexp (text: string): boolean {
  return /^\s*\(/.test(text)
}

/** A public key file of either kind: a Guix s-expression or a Nix `name:base64` line. */
export function parsePublicKey (text: string): PublicKey {
  if (looksLikeSexp(text)) return parseGuixPublicKey(text)
  if (/^\s*[^:\s]+:[A-Za-z0-9+/=]+\s*$/.test(text)) return parseNixPublicKey(text)
  throw new UnknownKeyFormatError('neither a Guix (public-key …) s-expression nor a Nix NAME:BASE64 key')
}

/** A secret key file of either kind. */
export function parseSecretKey (text: string): KeyPair {
  if (looksLikeSexp(text)) return parseGuixSecretKey(text)
  if (/^\s*[^:\s]+:[A-Za-z0-9+/=]+\s*$/.test(text)) return parseNixSecretKey(text)
  throw new UnknownKeyFormatError('neither a Guix (private-key …) s-expression nor a Nix NAME:BASE64 key')
}

/** The public keys of a Guix ACL (`/etc/guix/acl`): `(acl (entry (public-key …) (tag …)) …)`. */
export function parseGuixAcl (text: string | Uint8Array): GuixPublicKey[] {
  const s = parseSexpAsKey(text)
  const list = s as Sexp[]
  if (!(list.length > 0 && isAtom(list[0]) && Buffer.from(list[0]).toString('latin1') === 'acl')) {
    throw new GuixKeyError('not a Guix ACL: expected (acl (entry …) …)')
  }
  const keys: GuixPublicKey[] = []
  for (const entry of list.slice(1)) {
    const pk = findToken(entry, 'public-key')
    if (pk !== undefined) keys.push(parseGuixPublicKey(pk))
  }
  return keys
}

/**
 * Every trusted key in a file: one Guix public key, a Guix ACL, or Nix `name:base64` keys
 * separated by whitespace (as in Nix's trusted-public-keys).
 */
export function parsePublicKeys (text: string): PublicKey[] {
  if (looksLikeSexp(text)) {
    const s = parseSexpAsKey(text)
    const head = (s as Sexp[])[0]
    if (head !== undefined && isAtom(head) && Buffer.from(head).toString('latin1') === 'acl') return parseGuixAcl(text)
    return [parseGuixPublicKey(s)]
  }
  const words = text.split(/\s+/).filter((w) => w !== '')
  if (words.length === 0) throw new UnknownKeyFormatError('no key in file')
  return words.map((w) => parsePublicKey(w))
}

export async function readPublicKeysFile (path: string): Promise<PublicKey[]> {
  return parsePublicKeys(await readFile(path, 'utf8'))
}

export async function readPublicKeyFile (path: string): Promise<PublicKey> {
  return parsePublicKey(await readFile(path, 'utf8'))
}

export async function readSecretKeyFile (path: string): Promise<KeyPair> {
  return parseSecretKey(await readFile(path, 'utf8'))
}

export function defaultNixKeyName (): string {
  return `${hostname()}-1`
}

async function exists (path: string): Promise<boolean> {
  try {
    await readFile(path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}

/**
 * Write a key file completely before it appears under its name: a temp file, then link() (which
 * fails when the name exists, so two nodes starting on one dir never overwrite each other's key
 * and never read a half-written one), or rename() when replacing on purpose.
 * Returns false when the file already existed and was left alone.
 */
async function writeKeyFile (path: string, text: string, mode: number, overwrite: boolean): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  await writeFile(tmp, text, { mode, flag: 'wx' })
  try {
    await chmod(tmp, mode)
    if (overwrite) {
      await rename(tmp, path)
      return true
    }
    try {
      await link(tmp, path)
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
      throw err
    }
  } finally {
    await rm(tmp, { force: true })
  }
}

async function writeSecret (path: string, text: string, overwrite: boolean): Promise<boolean> {
  return await writeKeyFile(path, text, 0o600, overwrite)
}

async function writePublic (path: string, text: string, overwrite: boolean): Promise<boolean> {
  return await writeKeyFile(path, text, 0o644, overwrite)
}

export interface GenerateKeysOptions {
  /** Nix key name; defaults to `<hostname>-1`. */
  name?: string
  /** Replace existing key files instead of refusing. */
  force?: boolean
}

/** Write a fresh set of the four key files into dir; refuses to overwrite unless force. */
export async function generateKeys (dir: string, opts: GenerateKeysOptions = {}): Promise<NodeKeys> {
  // generate first: a bad key name fails before anything touches the disk
  const guix = generateGuixKeyPair()
  const nix = generateNixKeyPair(opts.name ?? defaultNixKeyName())
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const force = opts.force === true
  if (!force) {
    for (const f of Object.values(KEY_FILES)) {
      if (await exists(join(dir, f))) throw new KeyExistsError(`${join(dir, f)} already exists (use --force to replace it)`)
    }
  }
  const written = [
    await writeSecret(join(dir, KEY_FILES.guixSecret), formatGuixSecretKey(guix), force),
    await writePublic(join(dir, KEY_FILES.guixPublic), formatGuixPublicKey(guix.publicKey), force),
    await writeSecret(join(dir, KEY_FILES.nixSecret), formatNixSecretKey(nix), force),
    await writePublic(join(dir, KEY_FILES.nixPublic), formatNixPublicKey(nix.publicKey), force)
  ]
  // someone created a file between our check and our write
  if (written.includes(false)) throw new KeyExistsError(`key files appeared in ${dir} while generating; not overwriting them`)
  log('generated keys in %s (nix key %s)', dir, nix.name)
  return { guix, nix }
}

/**
 * The node's keys in dir (mode 0700): loads them, generating whichever kind is missing first.
 * A missing .pub next to an existing .sec is re-derived from the secret key.
 */
export async function ensureKeys (dir: string, opts: { name?: string } = {}): Promise<NodeKeys> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const p = (f: string): string => join(dir, f)

  if (!(await exists(p(KEY_FILES.guixSecret)))) {
    const pair = generateGuixKeyPair()
    if (await writeSecret(p(KEY_FILES.guixSecret), formatGuixSecretKey(pair), false)) log('generated Guix signing key in %s', dir)
  }
  const guix = parseGuixSecretKey(await readFile(p(KEY_FILES.guixSecret), 'utf8'))
  if (!(await exists(p(KEY_FILES.guixPublic)))) await writePublic(p(KEY_FILES.guixPublic), formatGuixPublicKey(guix.publicKey), false)

  if (!(await exists(p(KEY_FILES.nixSecret)))) {
    const pair = generateNixKeyPair(opts.name ?? defaultNixKeyName())
    if (await writeSecret(p(KEY_FILES.nixSecret), formatNixSecretKey(pair), false)) log('generated Nix signing key %s in %s', pair.name, dir)
  }
  const nix = parseNixSecretKey(await readFile(p(KEY_FILES.nixSecret), 'utf8'))
  if (!(await exists(p(KEY_FILES.nixPublic)))) await writePublic(p(KEY_FILES.nixPublic), formatNixPublicKey(nix.publicKey), false)

  return { guix, nix }
}

/** Big-endian bytes of the Guix secret scalar, padded to 32 (RFC 6979's int2octets). */
export function guixSecretOctets (pair: GuixKeyPair): Uint8Array {
  return bigIntToBe(pair.d, 32)
}
