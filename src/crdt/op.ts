// Queue ops: the versioned dag-cbor encoding, signing with the author's libp2p key, and the
// strict decoder every remote op passes before it may touch the state.
import * as nodeCrypto from 'node:crypto'
import { createHash, createPrivateKey, createPublicKey, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { peerIdFromString } from '@libp2p/peer-id'
import { CID } from 'multiformats/cid'
import { create as createDigest } from 'multiformats/hashes/digest'
import { base32 } from 'multiformats/bases/base32'
import type { PrivateKey } from '@libp2p/interface'
import type { Stamp } from './hlc.js'
import {
  BadDerivationPathError, OpAuthorMismatchError, OpBadSignatureError, OpMalformedError,
  OpOversizedError, OpUnknownTypeError, OpBytesShedError
} from './errors.js'

// v2: each op carries the hash of its author's previous op (a signed hash chain)
export const OP_VERSION = 2
/** Ops are small control messages; anything bigger is hostile or a bug. */
export const DEFAULT_MAX_OP_BYTES = 16 * 1024
const SIGN_DOMAIN = new TextEncoder().encode('guix-swarm/queue-op/2\n')
const SHA2_256 = 0x12

export interface NarOutput { path: string, narHash: string, narSize: number }
export interface LogRef { peerId: string, name: string }

export interface SubmitPayload {
  drv: string
  system: string
  priority: number
  tags: Record<string, string>
  /** 1 + retry limit; carried in the op so every replica applies the same limit. */
  maxAttempts: number
  /** ms since epoch before which the build is not claimable. */
  deferUntil?: number
  /**
   * How many attempts may be abandoned (claimed, never finished, superseded by a claim on a
   * later attempt: the builder's lease lapsed) before the build fails. Absent means
   * DEFAULT_MAX_ABANDONED, so submits from before this field still decode and mean the same.
   */
  maxAbandoned?: number
  /**
   * The derivation's input derivations (its inputDrvs), as the submitter read them, so a builder
   * can tell whether the build waits for another queued build without fetching the .drv first.
   * Absent when the submitter could not read the .drv or they would not fit in an op: the
   * builder then reads the .drv. Believed like the rest of the op: a wrong list only changes the
   * order builds are claimed in (the daemon still builds what the .drv says).
   */
  inputs?: string[]
}
export interface PriorityPayload { build: string, priority: number }
export interface CancelPayload { build: string }
export interface ClaimPayload { build: string, attempt: number, leaseMs: number }
export interface RenewPayload { build: string, attempt: number, leaseMs: number }
export interface ReleasePayload { build: string, attempt: number }
export type ResultPayload =
  | { build: string, attempt: number, outcome: 'success', outputs: Record<string, NarOutput> }
  | { build: string, attempt: number, outcome: 'failure', log: LogRef }
  | { build: string, attempt: number, outcome: 'missing-inputs', missing: string[] }
  | { build: string, attempt: number, outcome: 'canceled' }

export interface PayloadByType {
  submit: SubmitPayload
  priority: PriorityPayload
  cancel: CancelPayload
  claim: ClaimPayload
  renew: RenewPayload
  release: ReleasePayload
  result: ResultPayload
}
export type OpType = keyof PayloadByType
export const OP_TYPES: readonly OpType[] = ['submit', 'priority', 'cancel', 'claim', 'renew', 'release', 'result']

interface OpFields<T extends OpType> {
  author: string
  seq: number
  hlc: Stamp
  type: T
  payload: PayloadByType[T]
  /**
   * sha-256 of the same author's op seq-1 (its `digest`); absent on seq 1. Signed, so a valid
   * signature on op n commits to the author's ops 1..n (see README: hash chain).
   */
  prev?: Uint8Array
}
export type OpDraft = { [T in OpType]: Omit<OpFields<T>, 'author' | 'seq' | 'hlc' | 'prev'> }[OpType]

/** A decoded, shape-checked op plus its identity. */
export type Op = { [T in OpType]: OpFields<T> & {
  sig: Uint8Array
  /** The signed encoding, exactly as it travels and is stored. */
  bytes: Uint8Array
  /** CID (dag-cbor, sha2-256) of `bytes`. */
  id: string
  digest: Uint8Array
} }[OpType]

export type OpOfType<T extends OpType> = Extract<Op, { type: T }>

// node:crypto's one-shot hash() (Node >= 20.12; the @types/node here predates it) skips a Hash
// object per call: hashing every op of a 100k-op sync showed up in the joiner's profile.
type OneShotHash = (algorithm: string, data: Uint8Array | string, encoding: 'buffer' | 'hex') => Buffer | string
const oneShot = (nodeCrypto as unknown as { hash?: OneShotHash }).hash

function sha256 (bytes: Uint8Array): Uint8Array {
  return oneShot !== undefined ? oneShot('sha256', bytes, 'buffer') as Buffer : createHash('sha256').update(bytes).digest()
}

/**
 * sha-256 of a string as a 32-char latin1 string (per-build state digests: held for every
 * build, and 32 one-byte chars cost 48 bytes of heap where 64 hex chars cost 80).
 */
export function sha256Latin1 (text: string): string {
  return (oneShot !== undefined ? oneShot('sha256', text, 'buffer') as Buffer : createHash('sha256').update(text).digest()).toString('latin1')
}

function bodyOf (author: string, seq: number, hlc: Stamp, type: OpType, payload: unknown, prev: Uint8Array | undefined): Record<string, unknown> {
  const body: Record<string, unknown> = { v: OP_VERSION, a: author, s: seq, h: [hlc[0], hlc[1]], t: type, p: payload }
  if (prev !== undefined) body.l = prev
  return body
}

function signingInput (body: Record<string, unknown>): Uint8Array {
  const enc = dagCbor.encode(body)
  const out = new Uint8Array(SIGN_DOMAIN.length + enc.length)
  out.set(SIGN_DOMAIN)
  out.set(enc, SIGN_DOMAIN.length)
  return out
}

// multiformats builds base32 strings by concatenation: V8 keeps them as ropes of one-char
// pieces (~1.5 KB each, measured). Copy into a flat string before keeping 100k of them.
function flat (s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1')
}

// Memory per held op (a joiner holds 100k+): node:crypto gives every digest its own
// ArrayBuffer and every typed-array view costs ~100 bytes of heap (4 per op measured 380 of
// the 1.5 KB a submit-only build held). So an op's digest and link (what the hash chain
// needs for as long as the op is held) are copied side by side into a shared slab, and the
// op object keeps offsets. Its bytes (the signed encoding) are one reference the holder may
// drop once they are durable elsewhere (see shedBytes): serving them is the store's job.
const SLAB_BYTES = 64 * 1024
let slab = new Uint8Array(0)
let slabUsed = 0
function room (n: number): { slab: Uint8Array, at: number } {
  if (slabUsed + n > slab.length) { slab = new Uint8Array(SLAB_BYTES); slabUsed = 0 }
  const at = slabUsed
  slabUsed += n
  return { slab, at }
}

/** Where `part` occurs in `whole` (a signed byte string always occurs verbatim), checking `hint` first. */
function offsetIn (whole: Uint8Array, part: Uint8Array, hint: number): number {
  const buf = Buffer.from(whole.buffer, whole.byteOffset, whole.byteLength)
  const i = hint >= 0 && buf.subarray(hint, hint + part.length).equals(part) ? hint : buf.indexOf(part)
  if (i < 0) throw new OpMalformedError('byte string not found in its own encoding')
  return i
}

// Strings repeated across ops (authors, systems, tag values) are kept once.
const interned = new Map<string, string>()
function intern (s: string): string {
  const have = interned.get(s)
  if (have !== undefined) return have
  if (interned.size >= 10_000) interned.clear()
  interned.set(s, s)
  return s
}

// Tag sets repeat across builds (a jobset's every build): one frozen object per distinct set.
const internedTags = new Map<string, Readonly<Record<string, string>>>()
function internTags (tags: Record<string, string>): Record<string, string> {
  const key = JSON.stringify(Object.entries(tags).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
  const have = internedTags.get(key)
  if (have !== undefined) return have as Record<string, string>
  if (internedTags.size >= 10_000) internedTags.clear()
  const frozen = Object.freeze({ ...tags })
  internedTags.set(key, frozen)
  return frozen as Record<string, string>
}

/**
 * The one object held per op. Fields are fixed at construction (one V8 shape for all ops);
 * digest and prev are views made on demand over the slab region [digest | prev].
 */
class HeldOp {
  constructor (
    readonly author: string,
    readonly seq: number,
    readonly hlc: Stamp,
    readonly type: OpType,
    readonly payload: unknown,
    readonly id: string,
    private encoded: Uint8Array | undefined,
    private readonly sigAt: number,
    private readonly slab: Uint8Array,
    private readonly at: number,
    private readonly linked: boolean
  ) {}

  get bytes (): Uint8Array {
    if (this.encoded === undefined) throw new OpBytesShedError(this.author, this.seq)
    return this.encoded
  }

  get sig (): Uint8Array { return this.bytes.subarray(this.sigAt, this.sigAt + 64) }
  get digest (): Uint8Array { return this.slab.subarray(this.at, this.at + 32) }
  get prev (): Uint8Array | undefined { return this.linked ? this.slab.subarray(this.at + 32, this.at + 64) : undefined }
  get bytesHeld (): boolean { return this.encoded !== undefined }
  shed (): void { this.encoded = undefined }
  /** Copy the bytes out of a larger buffer (a sync frame) so holding the op does not pin it. */
  own (): void { if (this.encoded !== undefined && this.encoded.byteLength < this.encoded.buffer.byteLength) this.encoded = this.encoded.slice() }
}

/**
 * Make the op object over `bytes` (kept by reference: callers hand over bytes nobody
 * rewrites; a frame's worth of views is dropped with shedBytes once durable).
 */
function hold (author: string, seq: number, hlc: Stamp, type: OpType, payload: unknown, bytes: Uint8Array, sig: Uint8Array, prev: Uint8Array | undefined): Op {
  // canonical dag-cbor sorts 'sig' (the longest key) last: the signature is the last 64 bytes
  const sigAt = offsetIn(bytes, sig, bytes.length - 64)
  const digest = sha256(bytes)
  const r = room(prev === undefined ? 32 : 64)
  r.slab.set(digest, r.at)
  if (prev !== undefined) r.slab.set(prev, r.at + 32)
  const cid = CID.createV1(dagCbor.code, createDigest(SHA2_256, digest))
  return new HeldOp(author, seq, hlc, type, payload, flat(cid.toString()), bytes, sigAt, r.slab, r.at, prev !== undefined) as unknown as Op
}

/**
 * Drop the op's bytes from memory (they are durable in the store, which serves them from
 * then on). Digest, link and decoded fields stay; `bytes` and `sig` then throw.
 */
export function shedBytes (op: Op): void {
  if (op instanceof HeldOp) op.shed()
}

/** Give a held op its own copy of its bytes (an op held for long must not pin a whole frame). */
export function ownBytes (op: Op): void {
  if (op instanceof HeldOp) op.own()
}

/** Whether `op.bytes` is still in memory (see shedBytes). */
export function bytesHeld (op: Op): boolean {
  return !(op instanceof HeldOp) || op.bytesHeld
}

// @libp2p/crypto's sign rebuilds a node KeyObject from JWK on every call (nine tenths of the
// cost of signing an op); an Ed25519 key is signed with through one KeyObject kept per key.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const signingKeys = new WeakMap<PrivateKey, KeyObject>()
function signWith (key: PrivateKey, input: Uint8Array): Uint8Array {
  if (key.type !== 'Ed25519') {
    const sig = key.sign(input)
    if (!(sig instanceof Uint8Array)) throw new TypeError('expected a synchronous signature')
    return sig
  }
  let k = signingKeys.get(key)
  if (k === undefined) {
    // raw = 32-byte seed ‖ 32-byte public key
    k = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, key.raw.subarray(0, 32)]), format: 'der', type: 'pkcs8' })
    signingKeys.set(key, k)
  }
  return edSign(null, input, k)
}

/**
 * Sign a draft as `author` (whose key is `key`). `prev` is the `digest` of the author's op
 * seq-1 (required from seq 2 on: replicas refuse an op that does not link to its predecessor).
 */
export function signOp (key: PrivateKey, author: string, seq: number, hlc: Stamp, draft: OpDraft, prev?: Uint8Array): Op {
  if ((seq === 1) !== (prev === undefined)) throw new TypeError(`op ${author}#${seq}: prev is required exactly when seq > 1`)
  if (prev !== undefined && prev.length !== 32) throw new TypeError('prev must be a 32-byte sha-256 digest')
  const payload = stripUndefined(draft.payload)
  const body = bodyOf(author, seq, hlc, draft.type, payload, prev)
  const sig = signWith(key, signingInput(body))
  const bytes = dagCbor.encode({ ...body, sig })
  return hold(author, seq, hlc, draft.type, payload, bytes, sig, prev)
}

/** Does `op` name `digest` as its predecessor's hash? */
export function linksTo (op: Op, digest: Uint8Array): boolean {
  return op.prev !== undefined && Buffer.compare(op.prev, digest) === 0
}

/** Build ids: short base32 of the submit op's hash (a replay is the same build, a second submit is not). */
export function buildIdOf (submit: Op): string {
  return flat(base32.baseEncode(submit.digest.subarray(0, 10)))
}

// dag-cbor refuses `undefined`; optional fields are simply left out.
function stripUndefined<T> (value: T): T {
  if (Array.isArray(value)) return value.map(stripUndefined) as T
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = stripUndefined(v)
    return out as T
  }
  return value
}

// ---- strict decoding -------------------------------------------------------------------

type Rec = Record<string, unknown>
const isRec = (v: unknown): v is Rec => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)
function str (v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new OpMalformedError(`${what} must be a string of 1..${max} chars`)
  return v
}
function int (v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new OpMalformedError(`${what} must be an integer in [${min}, ${max}]`)
  return v
}
function keys (r: Rec, allowed: string[], what: string): void {
  for (const k of Object.keys(r)) if (!allowed.includes(k)) throw new OpMalformedError(`unexpected field ${k.slice(0, 40)} in ${what}`)
}

export const MAX_PRIORITY = 1_000_000
/** Abandoned attempts a build survives when its submit does not say (see SubmitPayload). */
export const DEFAULT_MAX_ABANDONED = 3
export const MAX_ATTEMPT = 1000
/** Input derivations a submit op may list (more: the field is left out and builders read the .drv). */
export const MAX_SUBMIT_INPUTS = 128
const BUILD_ID = /^[a-z2-7]{16}$/

// Nix/Guix store path of a derivation: <store>/<32 nix-base32 chars>-<name>.drv
const DRV_PATH = /^(\/[^/\0]+)+\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]*\.drv$/
export function isDerivationPath (p: string): boolean {
  return p.length <= 400 && DRV_PATH.test(p)
}
export function assertDerivationPath (p: string): void {
  if (!isDerivationPath(p)) throw new BadDerivationPathError(p)
}

function buildRef (v: unknown): string {
  if (typeof v !== 'string' || !BUILD_ID.test(v)) throw new OpMalformedError('build must be a build id')
  return v
}

function checkPayload (type: string, p: unknown): unknown {
  if (!isRec(p)) throw new OpMalformedError('payload must be a map')
  switch (type) {
    case 'submit': {
      keys(p, ['drv', 'system', 'priority', 'tags', 'maxAttempts', 'deferUntil', 'maxAbandoned', 'inputs'], 'submit')
      const drv = str(p.drv, 'drv', 400)
      if (!isDerivationPath(drv)) throw new OpMalformedError('drv is not a store path of a .drv')
      const system = intern(str(p.system, 'system', 64))
      const priority = int(p.priority, 'priority', -MAX_PRIORITY, MAX_PRIORITY)
      const maxAttempts = int(p.maxAttempts, 'maxAttempts', 1, 100)
      if (p.deferUntil !== undefined) int(p.deferUntil, 'deferUntil', 0, Number.MAX_SAFE_INTEGER)
      if (p.maxAbandoned !== undefined) int(p.maxAbandoned, 'maxAbandoned', 1, 100)
      if (!isRec(p.tags) || Object.keys(p.tags).length > 32) throw new OpMalformedError('tags must be a map of at most 32 entries')
      for (const [k, v] of Object.entries(p.tags)) { str(k, 'tag key', 64); str(v, 'tag value', 256) }
      const tags = internTags(p.tags as Record<string, string>)
      let inputs: string[] | undefined
      if (p.inputs !== undefined) {
        if (!Array.isArray(p.inputs) || p.inputs.length > MAX_SUBMIT_INPUTS) throw new OpMalformedError(`inputs must be a list of at most ${MAX_SUBMIT_INPUTS} .drv paths`)
        for (const i of p.inputs) if (typeof i !== 'string' || !isDerivationPath(i)) throw new OpMalformedError('inputs: an entry is not a store path of a .drv')
        inputs = p.inputs as string[]
      }
      // a fresh literal of fixed shape: cborg's maps grow property by property (an extra
      // out-of-object property array per build)
      if (p.deferUntil === undefined && p.maxAbandoned === undefined && inputs === undefined) return { drv, system, priority, tags, maxAttempts }
      return {
        drv, system, priority, tags, maxAttempts,
        ...(p.deferUntil !== undefined ? { deferUntil: p.deferUntil } : {}),
        ...(p.maxAbandoned !== undefined ? { maxAbandoned: p.maxAbandoned } : {}),
        ...(inputs !== undefined ? { inputs } : {})
      }
    }
    case 'priority':
      keys(p, ['build', 'priority'], 'priority'); buildRef(p.build); int(p.priority, 'priority', -MAX_PRIORITY, MAX_PRIORITY); return p
    case 'cancel':
      keys(p, ['build'], 'cancel'); buildRef(p.build); return p
    case 'claim': case 'renew':
      keys(p, ['build', 'attempt', 'leaseMs'], type); buildRef(p.build)
      int(p.attempt, 'attempt', 1, MAX_ATTEMPT); int(p.leaseMs, 'leaseMs', 1, 24 * 3600_000); return p
    case 'release':
      keys(p, ['build', 'attempt'], 'release'); buildRef(p.build); int(p.attempt, 'attempt', 1, MAX_ATTEMPT); return p
    case 'result': {
      buildRef(p.build); int(p.attempt, 'attempt', 1, MAX_ATTEMPT)
      switch (p.outcome) {
        case 'success': {
          keys(p, ['build', 'attempt', 'outcome', 'outputs'], 'result')
          if (!isRec(p.outputs) || Object.keys(p.outputs).length === 0 || Object.keys(p.outputs).length > 64) throw new OpMalformedError('outputs must be a map of 1..64 outputs')
          for (const [name, o] of Object.entries(p.outputs)) {
            str(name, 'output name', 64)
            if (!isRec(o)) throw new OpMalformedError('output must be a map')
            keys(o, ['path', 'narHash', 'narSize'], 'output')
            str(o.path, 'output path', 400); str(o.narHash, 'narHash', 128); int(o.narSize, 'narSize', 0, Number.MAX_SAFE_INTEGER)
          }
          return p
        }
        case 'failure':
          keys(p, ['build', 'attempt', 'outcome', 'log'], 'result')
          if (!isRec(p.log)) throw new OpMalformedError('log must be a map')
          keys(p.log, ['peerId', 'name'], 'log'); str(p.log.peerId, 'log peerId', 128); str(p.log.name, 'log name', 256)
          return p
        case 'missing-inputs':
          keys(p, ['build', 'attempt', 'outcome', 'missing'], 'result')
          if (!Array.isArray(p.missing) || p.missing.length > 256) throw new OpMalformedError('missing must be a list of at most 256 paths')
          for (const m of p.missing) str(m, 'missing path', 400)
          return p
        case 'canceled':
          keys(p, ['build', 'attempt', 'outcome'], 'result'); return p
        default: throw new OpMalformedError('unknown result outcome')
      }
    }
    default: throw new OpUnknownTypeError(type)
  }
}

/** Decode and shape-check an op (no signature check: see verifyOp). */
export function decodeOp (bytes: Uint8Array, maxBytes = DEFAULT_MAX_OP_BYTES): Op {
  if (bytes.length > maxBytes) throw new OpOversizedError(bytes.length, maxBytes)
  let raw: unknown
  try { raw = dagCbor.decode(bytes) } catch (err) { throw new OpMalformedError(`not dag-cbor (${(err as Error).message})`) }
  if (!isRec(raw)) throw new OpMalformedError('not a map')
  keys(raw, ['v', 'a', 's', 'h', 't', 'p', 'l', 'sig'], 'op')
  if (raw.v !== OP_VERSION) throw new OpMalformedError(`unsupported version ${String(raw.v).slice(0, 20)}`)
  const author = intern(str(raw.a, 'author', 128))
  const seq = int(raw.s, 'seq', 1, Number.MAX_SAFE_INTEGER)
  const prev = raw.l
  if (seq === 1 ? prev !== undefined : !(prev instanceof Uint8Array) || prev.length !== 32) throw new OpMalformedError('l (previous op hash) must be 32 bytes from seq 2 on, absent on seq 1')
  const h = raw.h
  if (!Array.isArray(h) || h.length !== 2) throw new OpMalformedError('hlc must be [ms, counter]')
  const hlc: Stamp = [int(h[0], 'hlc ms', 0, Number.MAX_SAFE_INTEGER), int(h[1], 'hlc counter', 0, 0xffffffff)]
  if (typeof raw.t !== 'string') throw new OpMalformedError('type must be a string')
  const type = OP_TYPES.find(t => t === raw.t)
  if (type === undefined) throw new OpUnknownTypeError(raw.t)
  const payload = checkPayload(type, raw.p)
  if (!(raw.sig instanceof Uint8Array) || raw.sig.length !== 64) throw new OpMalformedError('sig must be 64 bytes')
  return hold(author, seq, hlc, type, payload, bytes, raw.sig, prev as Uint8Array | undefined)
}

// Verifying through @libp2p/crypto rebuilds a node KeyObject from JWK on every call (a third of
// the cost); keep one KeyObject per author and call node:crypto directly.
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const keyCache = new Map<string, KeyObject>()
function publicKeyOf (author: string): KeyObject {
  let key = keyCache.get(author)
  if (key !== undefined) return key
  try {
    const pid = peerIdFromString(author)
    if (pid.type !== 'Ed25519' || pid.publicKey === undefined) throw new Error('not Ed25519')
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, pid.publicKey.raw]), format: 'der', type: 'spki' })
  } catch {
    throw new OpAuthorMismatchError(author)
  }
  if (keyCache.size > 10_000) keyCache.clear()
  keyCache.set(author, key)
  return key
}

/** Throws OpAuthorMismatchError unless `author` is an Ed25519 peer id; returns its SPKI DER key. */
const derCache = new Map<string, Uint8Array>()
export function checkAuthor (author: string): Uint8Array {
  let der = derCache.get(author)
  if (der === undefined) {
    der = publicKeyOf(author).export({ format: 'der', type: 'spki' }) // costly: once per author
    if (derCache.size > 10_000) derCache.clear()
    derCache.set(author, der)
  }
  return der
}

/** The exact bytes the author signed (for verification off the main thread). */
export function signedInputOf (op: Op): Uint8Array {
  return signingInput(bodyOf(op.author, op.seq, op.hlc, op.type, op.payload, op.prev))
}

/** Ed25519 check of `sig` over `input` by `author`; throws OpAuthorMismatchError for a bad author. */
export function checkSignature (author: string, input: Uint8Array, sig: Uint8Array): boolean {
  return edVerify(null, input, publicKeyOf(author), sig)
}

/** Throws unless `op.sig` is the author's signature over the op. */
export function verifyOp (op: Op): void {
  if (!checkSignature(op.author, signedInputOf(op), op.sig)) throw new OpBadSignatureError(op.author, op.seq)
}
