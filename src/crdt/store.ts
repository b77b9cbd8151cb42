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

export class QueueStore {
  constructor (private readonly db: QueueDb) {}

  /** Persist accepted ops with their local receive time, in one atomic batch. */
  async putOps (ops: readonly SeenOp[]): Promise<void> {
    if (ops.length === 0) return
    await this.db.batch(ops.map(s => ({ type: 'put' as const, key: opKey(s.op.author, s.op.seq), value: dagCbor.encode({ b: s.op.bytes, r: s.seenAt }) })))
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

  async saveSnapshot (s: Snapshot): Promise<void> {
    await this.db.put(SNAPSHOT_KEY, dagCbor.encode(s))
  }

  async loadSnapshot (): Promise<Snapshot | undefined> {
    const v = await this.db.get(SNAPSHOT_KEY)
    return v === undefined ? undefined : dagCbor.decode<Snapshot>(v)
  }
}
