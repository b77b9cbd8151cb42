// Anti-entropy over one libp2p stream. Both ends send their version vector, then stream the
// ops the other lacks in bounded batches (length-prefixed dag-cbor frames, honouring 'drain'),
// then an `end` frame. Seqs a side compacted away travel as `skip` ranges (see README.md).
import * as dagCbor from '@ipld/dag-cbor'
import { logger } from '@libp2p/logger'
import type { Stream } from '@libp2p/interface'
import { SyncProtocolError } from './errors.js'
import type { VersionVector } from './replica.js'

const log = logger('guix-swarm:crdt:sync')

export interface SyncLimits {
  /** Largest frame accepted or sent (bytes). */
  maxFrameBytes: number
  /** Ops per `ops` frame. */
  batchOps: number
}

export const DEFAULT_SYNC_LIMITS: SyncLimits = { maxFrameBytes: 1024 * 1024, batchOps: 512 }

export type SyncFrame =
  | { t: 'vv', vv: VersionVector }
  | { t: 'ops', ops: Uint8Array[] }
  | { t: 'skip', a: string, from: number, to: number }
  | { t: 'end' }

/** What the engine needs from the queue. */
export interface SyncPeerSide {
  versionVector: () => VersionVector
  /** Encoded ops of `author` after `after` up to `upTo`, in seq order; a number stands for a compacted seq. */
  opsAfter: (author: string, after: number, upTo: number) => AsyncIterable<Uint8Array | number> | Iterable<Uint8Array | number>
  /** Take a batch of remote ops (checked, applied, persisted); resolves when durable. */
  receive: (ops: Uint8Array[]) => Promise<void>
  receiveSkip: (author: string, from: number, to: number) => Promise<void>
  /** Resolves when everything handed to receive() is applied and durable. */
  settle?: () => Promise<void>
}

export interface SyncSummary { sent: number, received: number, skipsSent: number }

function checkFrame (raw: unknown): SyncFrame {
  if (raw === null || typeof raw !== 'object') throw new SyncProtocolError('frame is not a map')
  const f = raw as Record<string, unknown>
  switch (f.t) {
    case 'vv': {
      if (f.vv === null || typeof f.vv !== 'object') throw new SyncProtocolError('vv frame without a map')
      for (const v of Object.values(f.vv)) if (!Number.isSafeInteger(v) || (v as number) < 0) throw new SyncProtocolError('vv entry is not a seq')
      return f as SyncFrame
    }
    case 'ops':
      if (!Array.isArray(f.ops) || !f.ops.every(o => o instanceof Uint8Array)) throw new SyncProtocolError('ops frame without a list of ops')
      return f as SyncFrame
    case 'skip':
      if (typeof f.a !== 'string' || !Number.isSafeInteger(f.from) || !Number.isSafeInteger(f.to) || (f.from as number) < 1 || (f.to as number) < (f.from as number)) throw new SyncProtocolError('bad skip frame')
      return f as SyncFrame
    case 'end': return f as SyncFrame
    default: throw new SyncProtocolError('unknown frame type')
  }
}

/**
 * Splits a byte stream into 4-byte-length-prefixed frames, refusing oversized ones early.
 * Chunks are queued as they come and each frame is copied out once (a frame inside one chunk
 * is a view of it): growing one buffer chunk by chunk copied a 170 KB ops frame ~3 times.
 */
export async function * readFrames (source: AsyncIterable<Uint8Array | { subarray: () => Uint8Array }>, maxFrameBytes: number): AsyncGenerator<SyncFrame> {
  const queue: Buffer[] = []
  let have = 0
  /** Take `n` bytes (n <= have) off the front of the queue. */
  const take = (n: number): Buffer => {
    if (n === 0) return Buffer.alloc(0)
    const head = queue[0]
    if (head.length >= n) {
      if (head.length === n) queue.shift(); else queue[0] = head.subarray(n)
      have -= n
      return head.subarray(0, n)
    }
    const out = Buffer.allocUnsafeSlow(n)
    let at = 0
    while (at < n) {
      const c = queue[0]
      const k = Math.min(c.length, n - at)
      c.copy(out, at, 0, k)
      at += k
      if (k === c.length) queue.shift(); else queue[0] = c.subarray(k)
    }
    have -= n
    return out
  }
  let len = -1
  for await (const chunk of source) {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    if (bytes.length === 0) continue
    queue.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    have += bytes.length
    for (;;) {
      if (len < 0) {
        if (have < 4) break
        len = take(4).readUInt32BE(0)
        if (len > maxFrameBytes) throw new SyncProtocolError(`frame of ${len} bytes exceeds ${maxFrameBytes}`)
      }
      if (have < len) break
      const body = take(len)
      len = -1
      let raw: unknown
      try { raw = dagCbor.decode(body) } catch { throw new SyncProtocolError('frame is not dag-cbor') }
      yield checkFrame(raw)
    }
  }
  if (have > 0 || len >= 0) throw new SyncProtocolError('stream ended inside a frame')
}

export function encodeFrame (frame: SyncFrame): Uint8Array {
  const body = dagCbor.encode(frame)
  const out = new Uint8Array(4 + body.length)
  new DataView(out.buffer).setUint32(0, body.length)
  out.set(body, 4)
  return out
}

async function sendFrame (stream: Stream, frame: SyncFrame): Promise<void> {
  if (stream.send(encodeFrame(frame))) return
  // backpressure: wait for the 'drain' event (onDrain() resolves too early, see LIBP2P.md)
  await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => { cleanup(); resolve() }
    const onClose = (): void => { cleanup(); reject(new SyncProtocolError('stream closed while sending')) }
    const cleanup = (): void => { stream.removeEventListener('drain', onDrain); stream.removeEventListener('close', onClose) }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
  })
}

async function sendMissing (stream: Stream, side: SyncPeerSide, mine: VersionVector, theirs: VersionVector, limits: SyncLimits, summary: SyncSummary): Promise<void> {
  const budget = limits.maxFrameBytes - 1024
  for (const [author, head] of Object.entries(mine)) {
    const have = theirs[author] ?? 0
    if (head <= have) continue
    let batch: Uint8Array[] = []
    let size = 0
    let skipFrom = 0
    let skipTo = 0
    const flushOps = async (): Promise<void> => {
      if (batch.length === 0) return
      await sendFrame(stream, { t: 'ops', ops: batch })
      summary.sent += batch.length
      batch = []; size = 0
    }
    const flushSkip = async (): Promise<void> => {
      if (skipFrom === 0) return
      await sendFrame(stream, { t: 'skip', a: author, from: skipFrom, to: skipTo })
      summary.skipsSent++
      skipFrom = 0
    }
    for await (const item of side.opsAfter(author, have, head)) {
      if (typeof item === 'number') {
        await flushOps()
        if (skipFrom === 0) skipFrom = item
        skipTo = item
        continue
      }
      await flushSkip()
      if (batch.length >= limits.batchOps || size + item.length > budget) await flushOps()
      batch.push(item)
      size += item.length + 4
    }
    await flushOps()
    await flushSkip()
  }
  await sendFrame(stream, { t: 'end' })
}

/** Run one anti-entropy exchange on an open stream (either end). */
export async function runSync (stream: Stream, side: SyncPeerSide, limits: SyncLimits = DEFAULT_SYNC_LIMITS): Promise<SyncSummary> {
  const summary: SyncSummary = { sent: 0, received: 0, skipsSent: 0 }
  const mine = side.versionVector()
  await sendFrame(stream, { t: 'vv', vv: mine })
  let sending: Promise<void> | undefined
  let ended = false
  try {
    for await (const frame of readFrames(stream, limits.maxFrameBytes)) {
      if (sending === undefined) {
        if (frame.t !== 'vv') throw new SyncProtocolError('first frame must be the version vector')
        sending = sendMissing(stream, side, mine, frame.vv, limits, summary)
        sending.catch(() => {}) // awaited below; avoid an unhandled rejection meanwhile
        continue
      }
      if (ended) throw new SyncProtocolError('frame after end')
      switch (frame.t) {
        case 'ops':
          if (frame.ops.length > limits.batchOps) throw new SyncProtocolError('ops frame over the batch limit')
          await side.receive(frame.ops)
          summary.received += frame.ops.length
          break
        case 'skip': await side.receiveSkip(frame.a, frame.from, frame.to); break
        case 'end': ended = true; break
        case 'vv': throw new SyncProtocolError('second version vector')
      }
      if (ended) break
    }
    if (sending === undefined || !ended) throw new SyncProtocolError('stream ended before the exchange finished')
    await side.settle?.()
    await sending
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
  log('sync done: sent %d, received %d', summary.sent, summary.received)
  return summary
}
