// The gatekeeper in front of the state: checks every op (size, shape, signature, author,
// clock skew, per-author sequence), holds ops that arrive ahead of a gap, detects
// equivocation, keeps the version vector, and counts every refusal by reason.
import { logger } from '@libp2p/logger'
import type { PrivateKey } from '@libp2p/interface'
import { Hlc } from './hlc.js'
import { bytesHeld, decodeOp, DEFAULT_MAX_OP_BYTES, linksTo, ownBytes, signOp, verifyOp, type Op, type OpDraft } from './op.js'
import { OpEquivocationError, OpFutureClockError, OpPendingOverflowError, OpRejectedError, type RejectReason } from './errors.js'
import { QueueState, type SeenOp } from './state.js'

const log = logger('guix-swarm:crdt:replica')

export interface ReplicaConfig {
  /** How far ahead of the local clock a remote stamp may be (ms). */
  maxSkewMs: number
  maxOpBytes: number
  /** Ops held while waiting for a gap to fill, per author and in total. */
  maxPendingPerAuthor: number
  maxPendingTotal: number
}

export const DEFAULT_REPLICA_CONFIG: ReplicaConfig = {
  maxSkewMs: 60_000,
  maxOpBytes: DEFAULT_MAX_OP_BYTES,
  maxPendingPerAuthor: 4096,
  maxPendingTotal: 65_536
}

export type VersionVector = Record<string, number>

export type IngestResult =
  | { kind: 'applied', applied: SeenOp[] }
  | { kind: 'pending' }
  | { kind: 'duplicate' }
  | { kind: 'rejected', error: OpRejectedError }

export interface ReplicaStats {
  applied: number
  duplicates: number
  pending: number
  rejected: Record<RejectReason, number>
}

interface AuthorLog {
  /** Highest contiguous seq applied (or skipped as compacted by a snapshot source). */
  head: number
  /**
   * Digest of the op at `head`: the next op must name it as `prev`. Undefined when the head
   * was moved over seqs we never saw (a sync source's skip range), so the link is unknown.
   */
  tip?: Uint8Array
  /**
   * Applied ops indexed by seq (dense from 1, holes where compacted or skipped): an array
   * slot costs 8 bytes where a Map entry cost ~50 per op held.
   */
  ops: Array<Op | undefined>
  /** Number of ops in `ops`. */
  held: number
  pending: Map<number, { op: Op, seenAt: number }>
}

export interface IngestOptions {
  /** Local receive time to record (defaults to now()); restored from disk on reload. */
  seenAt?: number
  /** Skip every check: only for ops read back from our own disk. */
  trusted?: boolean
  /** The signature was already checked (by the verify pool); the other checks still run. */
  signatureChecked?: boolean
}

export class QueueReplica {
  readonly state = new QueueState()
  readonly hlc: Hlc
  readonly config: ReplicaConfig
  private readonly logs = new Map<string, AuthorLog>()
  private pendingTotal = 0
  private readonly counters: ReplicaStats = {
    applied: 0,
    duplicates: 0,
    pending: 0,
    rejected: { oversized: 0, malformed: 0, 'unknown-type': 0, 'bad-signature': 0, 'author-mismatch': 0, 'future-clock': 0, equivocation: 0, 'pending-overflow': 0 }
  }

  constructor (readonly now: () => number = Date.now, config: Partial<ReplicaConfig> = {}) {
    this.config = { ...DEFAULT_REPLICA_CONFIG, ...config }
    this.hlc = new Hlc(now)
  }

  private logOf (author: string): AuthorLog {
    let l = this.logs.get(author)
    if (l === undefined) { l = { head: 0, ops: [], held: 0, pending: new Map() }; this.logs.set(author, l) }
    return l
  }

  versionVector (): VersionVector {
    const vv: VersionVector = {}
    for (const [a, l] of this.logs) if (l.head > 0) vv[a] = l.head
    return vv
  }

  stats (): ReplicaStats {
    return { ...this.counters, pending: this.pendingTotal, rejected: { ...this.counters.rejected } }
  }

  /** Check and (if acceptable) apply an op received from anywhere. Never throws for bad input. */
  ingest (input: Uint8Array | Op, opts: IngestOptions = {}): IngestResult {
    try {
      const op = input instanceof Uint8Array ? decodeOp(input, this.config.maxOpBytes) : input
      if (!(input instanceof Uint8Array) && bytesHeld(op) && op.bytes.length > this.config.maxOpBytes) decodeOp(op.bytes, this.config.maxOpBytes)
      if (opts.trusted !== true) {
        if (opts.signatureChecked !== true) verifyOp(op)
        const ahead = op.hlc[0] - this.now()
        if (ahead > this.config.maxSkewMs) throw new OpFutureClockError(op.author, op.seq, ahead, this.config.maxSkewMs)
      }
      return this.sequence(op, opts.seenAt ?? this.now())
    } catch (err) {
      if (!(err instanceof OpRejectedError)) throw err
      this.counters.rejected[err.reason]++
      log('rejected op: %s', err.message)
      return { kind: 'rejected', error: err }
    }
  }

  /** Count a refusal decided outside ingest (e.g. a signature the verify pool refused). */
  refuse (error: OpRejectedError): IngestResult {
    this.counters.rejected[error.reason]++
    log('rejected op: %s', error.message)
    return { kind: 'rejected', error }
  }

  private sequence (op: Op, seenAt: number): IngestResult {
    const l = this.logOf(op.author)
    if (op.seq <= l.head) {
      const have = l.ops[op.seq]
      if (have === undefined) {
        // it must still fit the chain where we hold its neighbours
        const before = l.ops[op.seq - 1]
        const after = l.ops[op.seq + 1]
        if ((before !== undefined && !linksTo(op, before.digest)) || (after !== undefined && !linksTo(after, op.digest))) throw new OpEquivocationError(op.author, op.seq)
        // A seq we skipped (compacted at a snapshot source) or compacted ourselves: the op is
        // signed, and the state is a function of the op set, so taking it back is harmless.
        this.hold(l, op)
        if (op.seq === l.head && l.tip === undefined) l.tip = op.digest
        this.state.apply(op, seenAt)
        this.hlc.observe(op.hlc)
        this.counters.applied++
        return { kind: 'applied', applied: [{ op, seenAt }] }
      }
      if (have.id === op.id) { this.counters.duplicates++; return { kind: 'duplicate' } }
      throw new OpEquivocationError(op.author, op.seq)
    }
    if (op.seq > l.head + 1) {
      const held = l.pending.get(op.seq)
      if (held !== undefined) {
        if (held.op.id === op.id) { this.counters.duplicates++; return { kind: 'duplicate' } }
        throw new OpEquivocationError(op.author, op.seq)
      }
      if (l.pending.size >= this.config.maxPendingPerAuthor || this.pendingTotal >= this.config.maxPendingTotal) throw new OpPendingOverflowError(op.author, op.seq)
      ownBytes(op) // it may wait long: do not let it pin the frame it came in
      l.pending.set(op.seq, { op, seenAt })
      this.pendingTotal++
      return { kind: 'pending' }
    }
    // exactly head+1: it must link to the op we hold at the head (a fork is an equivocation)
    if (!this.fits(l, op)) throw new OpEquivocationError(op.author, op.seq - 1)
    const applied: SeenOp[] = [{ op, seenAt }]
    this.commit(l, op, seenAt)
    this.drain(l, applied)
    return { kind: 'applied', applied }
  }

  private hold (l: AuthorLog, op: Op): void {
    if (l.ops[op.seq] === undefined) l.held++
    l.ops[op.seq] = op
  }

  private fits (l: AuthorLog, op: Op): boolean {
    return op.seq === 1 || l.tip === undefined || linksTo(op, l.tip)
  }

  private commit (l: AuthorLog, op: Op, seenAt: number): void {
    l.head = op.seq
    l.tip = op.digest
    this.hold(l, op)
    this.hlc.observe(op.hlc)
    this.state.apply(op, seenAt)
    this.counters.applied++
  }

  private drain (l: AuthorLog, applied: SeenOp[]): void {
    for (;;) {
      const next = l.pending.get(l.head + 1)
      if (next === undefined) break
      l.pending.delete(l.head + 1)
      this.pendingTotal--
      if (!this.fits(l, next.op)) {
        const err = new OpEquivocationError(next.op.author, next.op.seq - 1)
        this.counters.rejected[err.reason]++
        log('rejected held op: %s', err.message)
        break
      }
      this.commit(l, next.op, next.seenAt)
      applied.push(next)
    }
  }

  /**
   * A snapshot source says it compacted `author`'s ops up to `upTo` that we lack: move the head
   * over them (trusting that source, see README of the sync protocol) and release what waited.
   */
  skipTo (author: string, from: number, upTo: number): SeenOp[] {
    const l = this.logOf(author)
    const applied: SeenOp[] = []
    // only a range adjacent to what we have: never jump over ops we could still get
    if (upTo <= l.head || from > l.head + 1) return applied
    // the skipped ops are unseen, so links across them cannot be checked: the tip is unknown
    // after each one (held ops inside the range are signed and still chain among themselves)
    for (let s = l.head + 1; s <= upTo; s++) {
      const p = l.pending.get(s)
      if (p === undefined) { l.head = s; l.tip = undefined; continue }
      l.pending.delete(s); this.pendingTotal--
      if (this.fits(l, p.op)) { this.commit(l, p.op, p.seenAt); applied.push(p) } else { l.head = s; l.tip = undefined; this.counters.rejected.equivocation++ }
    }
    this.drain(l, applied)
    return applied
  }

  /**
   * Put back an op read from our own disk: no checks, and gaps are compaction gaps, so the
   * head simply follows the highest seq.
   */
  restore (op: Op, seenAt: number): void {
    const l = this.logOf(op.author)
    if (l.ops[op.seq] !== undefined) return
    this.hold(l, op)
    if (op.seq > l.head) { l.head = op.seq; l.tip = op.digest }
    this.hlc.observe(op.hlc)
    this.state.apply(op, seenAt)
  }

  /** Restore heads (and their digests) persisted with a snapshot (covers seqs compacted away). */
  restoreHeads (vv: VersionVector, tips: Record<string, Uint8Array> = {}): void {
    for (const [a, h] of Object.entries(vv)) {
      const l = this.logOf(a)
      if (h > l.head) { l.head = h; l.tip = tips[a] }
    }
  }

  /** Digest of each author's head op where known (persisted with the snapshot). */
  tips (): Record<string, Uint8Array> {
    const out: Record<string, Uint8Array> = {}
    for (const [a, l] of this.logs) if (l.tip !== undefined) out[a] = l.tip
    return out
  }

  /** Sign a new local op with the next seq and a fresh HLC stamp, and apply it. */
  createLocal (key: PrivateKey, author: string, draft: OpDraft): Op {
    const l = this.logOf(author)
    if (l.head > 0 && l.tip === undefined) throw new Error(`cannot extend ${author}'s chain: the digest of its op ${l.head} is unknown`)
    const op = signOp(key, author, l.head + 1, this.hlc.tick(), draft, l.head > 0 ? l.tip : undefined)
    const r = this.sequence(op, this.now())
    if (r.kind !== 'applied') throw new Error(`local op ${author}#${op.seq} not applied (${r.kind})`)
    return op
  }

  /** Ops of `author` with seq in (after, upTo], in order; `undefined` marks a compacted seq. */
  * opsAfter (author: string, after: number, upTo = Infinity): IterableIterator<Op | number> {
    const l = this.logs.get(author)
    if (l === undefined) return
    const end = Math.min(upTo, l.head)
    for (let s = after + 1; s <= end; s++) yield l.ops[s] ?? s
  }

  /** Every op this replica holds, applied or waiting behind a gap (the replica's op set). */
  * heldOps (): IterableIterator<Op> {
    for (const l of this.logs.values()) {
      for (const op of l.ops) if (op !== undefined) yield op
      for (const p of l.pending.values()) yield p.op
    }
  }

  /** Forget ops (compaction); their seqs stay covered by the head. */
  forget (ops: readonly Op[]): void {
    for (const op of ops) {
      const l = this.logs.get(op.author)
      if (l?.ops[op.seq] === undefined) continue
      l.ops[op.seq] = undefined
      l.held--
    }
  }

  /** Number of ops held (not counting pending). */
  get opCount (): number {
    let n = 0
    for (const l of this.logs.values()) n += l.held
    return n
  }
}
