// The store writes op records by hand (one arena per batch); they must be exactly the
// dag-cbor {b, r} records restore reads back and older nodes wrote.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as dagCbor from '@ipld/dag-cbor'
import { QueueStore, type QueueDb, type Op } from '../../src/crdt/index.js'

test('op records written from the batch arena equal dag-cbor {b, r} at every header size', async () => {
  const written: Uint8Array[] = []
  const db: QueueDb = {
    put: async () => {},
    get: async () => undefined,
    batch: async (ops) => { for (const o of ops) if (o.type === 'put') written.push(o.value) },
    iterator: () => { throw new Error('not used') }
  }
  const store = new QueueStore(db)
  const lengths = [0, 1, 23, 24, 255, 256, 321, 65_535, 65_536]
  const times = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 1_764_000_000_000, Number.MAX_SAFE_INTEGER]
  const batch = lengths.flatMap((len, i) => times.map((seenAt, j) => ({ op: { author: 'a', seq: i * 100 + j + 1, bytes: new Uint8Array(len).fill(i + 1) } as unknown as Op, seenAt })))
  await store.putOps(batch)
  assert.equal(written.length, batch.length)
  batch.forEach((s, i) => assert.deepEqual(Buffer.from(written[i]), Buffer.from(dagCbor.encode({ b: s.op.bytes, r: s.seenAt })), `len ${s.op.bytes.length}, r ${s.seenAt}`))
  // a receive time that is not a whole non-negative number still gets a valid record
  written.length = 0
  await store.putOps([{ op: batch[0].op, seenAt: 1.5 }])
  assert.deepEqual(dagCbor.decode(written[0]), { b: batch[0].op.bytes, r: 1.5 })
})
