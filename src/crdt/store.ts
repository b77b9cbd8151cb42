// Persistence of the queue in a caller-provided level sublevel. Ops are the truth (written
// before an op is acknowledged or relayed); the snapshot record is a cache of the version
// vector (which also covers seqs compacted away) and the state hash it corresponds to.
import * as dagCbor from '@ipld/dag-cbor'
import { logger } from '@libp2p/logger'
import { decodeOp, type Op } from './op.js'
import type { SeenOp } from './state.js'
import type { VersionVector } from './replica.js'

const log = logger('guix-swarm:crdt:store')

/** The subset of an abstract-level sublevel the queue uses (string keys, Uint8Array values). */
export interface QueueDb {
  put: (key: string, value: Uint8Array) => Promise<void>
  get: (key: string) => Promise<Uint8Array | undefined>
  batch: (ops: Array<{ type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }>) => Promise<void>
  iterator: (options: { gt?: string, lt?: string }) => AsyncIterable<[string, Uint8Array]> & { close: () => Promise<void> }
}

export interface Snapshot {
  vv: VersionVector
  /** Digest of each author's head op, so the chain can be extended after its op was compacted. */
  tips?: Record<string, Uint8Array>
  stateHash: string
  builds: number
  savedAt: number
}

const SEQ_WIDTH = 15
const opKey = (author: string, seq: number): string => `o!${author}!${seq.toString().padStart(SEQ_WIDTH, '0')}`
const SNAPSHOT_KEY = 'm!snapshot'

// dag-cbor of {b: bytes, r: uint}: map(2), "b", bytes header + bytes, "r", uint (canonical:
// the shortest header for each length and value, keys sorted)
function headerSize (n: number): number { return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9 }
function recordSize (len: number, seenAt: number): number { return 1 + 2 + headerSize(len) + len + 2 + headerSize(seenAt) }
function writeHeader (out: Uint8Array, at: number, major: number, n: number): number {
  const m = major << 5
  if (n < 24) { out[at] = m | n; return at + 1 }
  if (n < 0x100) { out[at] = m | 24; out[at + 1] = n; return at + 2 }
  if (n < 0x10000) { out[at] = m | 25; out[at + 1] = n >> 8; out[at + 2] = n & 0xff; return at + 3 }
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  if (n < 0x100000000) { out[at] = m | 26; view.setUint32(at + 1, n); return at + 5 }
  out[at] = m | 27; view.setBigUint64(at + 1, BigInt(n)); return at + 9
}
/** Writes the record into `out`, sized by recordSize (seenAt a non-negative safe integer). */
function writeRecord (out: Uint8Array, bytes: Uint8Array, seenAt: number): number {
  let at = 0
  out[at++] = 0xa2 // map(2)
  out[at++] = 0x61; out[at++] = 0x62 // "b"
  at = writeHeader(out, at, 2, bytes.length)
  out.set(bytes, at); at += bytes.length
  out[at++] = 0x61; out[at++] = 0x72 // "r"
  return writeHeader(out, at, 0, seenAt)
}

export class QueueStore {
  constructor (private readonly db: QueueDb) {}

  /** Persist accepted ops with their local receive time, in one atomic batch. */
  async putOps (ops: readonly SeenOp[]): Promise<void> {
    if (ops.length === 0) return
    // one arena for the batch's values (one allocation, not one ArrayBuffer per op): the
    // record is the dag-cbor map {b: op bytes, r: receive time}, written by hand
    if (!ops.every(s => Number.isSafeInteger(s.seenAt) && s.seenAt >= 0)) {
      await this.db.batch(ops.map(s => ({ type: 'put' as const, key: opKey(s.op.author, s.op.seq), value: dagCbor.encode({ b: s.op.bytes, r: s.seenAt }) })))
      return
    }
    const sizes = ops.map(s => recordSize(s.op.bytes.length, s.seenAt))
    const arena = new Uint8Array(sizes.reduce((a, n) => a + n, 0))
    let at = 0
    await this.db.batch(ops.map((s, i) => {
      const value = arena.subarray(at, at + sizes[i])
      writeRecord(value, s.op.bytes, s.seenAt)
      at += sizes[i]
      return { type: 'put' as const, key: opKey(s.op.author, s.op.seq), value }
    }))
  }

  async deleteOps (ops: readonly Op[]): Promise<void> {
    if (ops.length === 0) return
    await this.db.batch(ops.map(op => ({ type: 'del' as const, key: opKey(op.author, op.seq) })))
  }

  /** Every stored op, in (author, seq) order. */
  async * ops (): AsyncGenerator<SeenOp> {
    const it = this.db.iterator({ gt: 'o!', lt: 'o"' })
    try {
      for await (const [key, value] of it) {
        try {
          const rec = dagCbor.decode<{ b: Uint8Array, r: number }>(value)
          yield { op: decodeOp(rec.b, Infinity), seenAt: rec.r }
        } catch (err) {
          // a torn or foreign record must not stop the restore of everything else
          log.error('skipping unreadable op record %s: %s', key, (err as Error).message)
        }
      }
    } finally {
      await it.close()
    }
  }

  /**
   * The stored bytes of `author`'s ops from seq `from` on, in seq order (ops whose bytes were
   * shed from memory are served from here). Gaps are seqs not stored (compacted).
   */
  async * opBytes (author: string, from: number): AsyncGenerator<{ seq: number, bytes: Uint8Array }> {
    const prefix = `o!${author}!`
    const it = this.db.iterator({ gt: opKey(author, from - 1), lt: `o!${author}"` })
    try {
      for await (const [key, value] of it) {
        const seq = Number(key.slice(prefix.length))
        try {
          yield { seq, bytes: dagCbor.decode<{ b: Uint8Array }>(value).b }
        } catch (err) {
          log.error('skipping unreadable op record %s: %s', key, (err as Error).message)
        }
      }
    } finally {
      await it.close()
    }
  }

  async saveSnapshot (s: Snapshot): Promise<void> {
    await this.db.put(SNAPSHOT_KEY, dagCbor.encode(s))
  }

  async loadSnapshot (): Promise<Snapshot | undefined> {
    const v = await this.db.get(SNAPSHOT_KEY)
    return v === undefined ? undefined : dagCbor.decode<Snapshot>(v)
  }
}
