import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as dagCbor from '@ipld/dag-cbor'
import { readFrames, encodeFrame, SyncProtocolError, signOp, decodeOp } from '../../src/crdt/index.js'
import { VerifyPool } from '../../src/crdt/verify-pool.js'
import { makeAuthor, next, submit } from './fixtures.js'

async function * chunks (bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}
const concat = (xs: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(xs))

test('frames survive any chunking; oversized, torn and foreign frames are refused', async () => {
  const frames = [encodeFrame({ t: 'vv', vv: { a: 3 } }), encodeFrame({ t: 'ops', ops: [new Uint8Array([1, 2])] }), encodeFrame({ t: 'skip', a: 'x', from: 2, to: 4 }), encodeFrame({ t: 'end' })]
  const all = concat(frames)
  for (const size of [1, 3, 7, all.length]) {
    const got = []
    for await (const f of readFrames(chunks(all, size), 1024)) got.push(f.t)
    assert.deepEqual(got, ['vv', 'ops', 'skip', 'end'])
  }
  const drain = async (bytes: Uint8Array, max = 1024): Promise<void> => { for await (const _ of readFrames(chunks(bytes, 5), max)) { /* consume */ } }
  await assert.rejects(drain(frames[1], 4), SyncProtocolError) // over the frame limit
  await assert.rejects(drain(all.subarray(0, all.length - 1)), SyncProtocolError) // torn
  await assert.rejects(drain(encodeFrame({ t: 'boom' } as never)), SyncProtocolError)
  await assert.rejects(drain(encodeFrame({ t: 'skip', a: 'x', from: 5, to: 2 })), SyncProtocolError)
})

test('the verify pool accepts good signatures and refuses tampered ones', async (t) => {
  const pool = new VerifyPool(2)
  t.after(async () => { await pool.close() })
  const [a, b] = await Promise.all([makeAuthor(), makeAuthor()])
  const good = Array.from({ length: 40 }, (_, i) => next(a, [1000 + i, 0], submit(i)))
  const forged = signOp(b.key, a.id, 41, [2000, 0], submit(99), a.tip) // b's signature under a's name
  // the same op with one bit of its signature flipped (re-encoded, so only the signature differs)
  const raw = dagCbor.decode<Record<string, unknown>>(good[3].bytes)
  const sig = Uint8Array.from(raw.sig as Uint8Array); sig[5] ^= 0x10
  const flipped = decodeOp(dagCbor.encode({ ...raw, sig }))
  assert.deepEqual(flipped.payload, good[3].payload)
  const ok = await pool.verify([...good, forged, flipped])
  assert.equal(ok.length, 42)
  assert.ok(ok.slice(0, 40).every(x => x), 'all 40 good signatures are accepted')
  assert.deepEqual(ok.slice(40), [false, false])
})
