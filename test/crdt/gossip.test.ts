// Gossip batches: ops authored together leave as one message and are checked like a sync
// batch (one signature per linked run); a batch with any bad op is refused whole and counted.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { encode as cborEncode } from '@ipld/dag-cbor'
import { signOp, decodeGossip, encodeGossip, signedInputOf, DEFAULT_QUEUE_CONFIG, OpMalformedError, OpOversizedError } from '../../src/crdt/index.js'
import { connect, removeDir, rogueBesideTwo, startNode, waitFor } from './net.js'
import { drv, makeAuthor, next, submit } from './fixtures.js'

const TOPIC = DEFAULT_QUEUE_CONFIG.topic
const SYS = 'x86_64-linux'
const refusedOf = (s: { rejected: Record<string, number> }): number => Object.values(s.rejected).reduce((x, y) => x + y, 0)

test('gossip envelopes: a lone op goes as itself, a group as one array, split within the limits, order kept', async () => {
  const a = await makeAuthor()
  const ops = Array.from({ length: 7 }, (_, i) => next(a, [1000 + i, 0], submit(i)).bytes)
  assert.deepEqual(encodeGossip([ops[0]]), [ops[0]], 'a single op is sent as its own bytes')
  assert.deepEqual(decodeGossip(ops[0]), [ops[0]], 'and read back as one op')
  const [one] = encodeGossip(ops)
  assert.deepEqual(decodeGossip(one), ops, 'a group is one message, in authoring order')
  const split = encodeGossip(ops, { maxOps: 3, maxMessageBytes: 1 << 20 })
  assert.equal(split.length, 3, 'seven ops at three per message')
  assert.deepEqual(split.flatMap((m) => decodeGossip(m, { maxOps: 3, maxMessageBytes: 1 << 20 })), ops, 'split messages keep the order')
  const small = encodeGossip(ops, { maxOps: 100, maxMessageBytes: ops[0].length * 2 + 30 })
  assert.ok(small.every((m) => m.length <= ops[0].length * 2 + 30), 'no message over the byte limit')
  assert.deepEqual(small.flatMap((m) => decodeGossip(m)), ops, 'byte-limited split keeps every op in order')

  assert.throws(() => decodeGossip(new Uint8Array(0)), OpMalformedError)
  assert.throws(() => decodeGossip(cborEncode([ops[0]])), OpMalformedError, 'an array of one is not what a node sends')
  assert.throws(() => decodeGossip(cborEncode([ops[0], 7])), OpMalformedError, 'items must be op bytes')
  assert.throws(() => decodeGossip(new Uint8Array([0x82, 0x41])), OpMalformedError, 'truncated CBOR')
  assert.throws(() => decodeGossip(cborEncode(ops), { maxOps: 3, maxMessageBytes: 1 << 20 }), OpMalformedError, 'too many ops')
  assert.throws(() => decodeGossip(cborEncode(ops), { maxOps: 100, maxMessageBytes: 100 }), OpOversizedError, 'too many bytes')
})

test('an op is signed as @libp2p/crypto signs (Ed25519 is deterministic)', async () => {
  const a = await makeAuthor()
  const op = next(a, [1000, 0], submit(1))
  assert.deepEqual(Buffer.from(op.sig), Buffer.from(a.key.sign(signedInputOf(op)) as Uint8Array), 'same signature as the library key')
})

test('ops authored together cross the network as one gossip message and are all applied', async (t) => {
  const cfg = { syncIntervalMs: 0 } // only gossip can carry them
  const a = await startNode({ config: cfg })
  const b = await startNode({ config: cfg })
  t.after(async () => { await a.stop(); await b.stop(); await removeDir(a.dir); await removeDir(b.dir) })
  await connect(a, b)
  await waitFor('A and B see each other subscribed', () => a.libp2p.services.pubsub.getSubscribers(TOPIC).some(p => p.equals(b.libp2p.peerId)) &&
    b.libp2p.services.pubsub.getSubscribers(TOPIC).some(p => p.equals(a.libp2p.peerId)))

  const before = a.queue.stats()
  const ids = await a.queue.submit(Array.from({ length: 40 }, (_, i) => ({ drv: drv(i), system: SYS })))
  await waitFor('40 builds on B', () => ids.every((id) => b.queue.get(id) !== undefined))
  let s = a.queue.stats()
  assert.equal(s.gossipMessages - before.gossipMessages, 1, 'one message for a submit of 40')
  assert.equal(s.gossipPublished - before.gossipPublished, 40, 'carrying 40 ops')

  // five claims started in the same turn (as a scheduler claims a batch) share one message
  await Promise.all(ids.slice(0, 5).map(async (id) => await a.queue.claim(id, 1, 60_000)))
  await waitFor('claims on B', () => ids.slice(0, 5).every((id) => b.queue.view(id).state === 'claimed'))
  const after = a.queue.stats()
  assert.equal(after.gossipMessages - s.gossipMessages, 1, 'one message for five claims')
  s = b.queue.stats()
  assert.equal(refusedOf(s), 0, 'B refused nothing')
  assert.equal(b.queue.stateHash(), a.queue.stateHash(), 'A and B agree')
})

test('ops authored apart within gossipGatherMs share one message; a stop sends what waits at once', async (t) => {
  const a = await startNode({ config: { syncIntervalMs: 0, gossipGatherMs: 300 } })
  const b = await startNode({ config: { syncIntervalMs: 0 } })
  t.after(async () => { await b.stop(); await removeDir(a.dir); await removeDir(b.dir) })
  await connect(a, b)
  await waitFor('A and B see each other subscribed', () => a.libp2p.services.pubsub.getSubscribers(TOPIC).some(p => p.equals(b.libp2p.peerId)) &&
    b.libp2p.services.pubsub.getSubscribers(TOPIC).some(p => p.equals(a.libp2p.peerId)))
  const ids = await a.queue.submit(Array.from({ length: 3 }, (_, i) => ({ drv: drv(100 + i), system: SYS })))
  await waitFor('3 builds on B', () => ids.every((id) => b.queue.get(id) !== undefined))
  const s = a.queue.stats()
  // three claims in three turns, 20 ms apart, as a batch's results come while its builds publish
  for (const id of ids) {
    await a.queue.claim(id, 1, 60_000)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  await waitFor('claims on B', () => ids.every((id) => b.queue.view(id).state === 'claimed'))
  assert.equal(a.queue.stats().gossipMessages - s.gossipMessages, 1, 'one message for claims authored 20 ms apart')
  // an op authored as the node stops (still on its way to disk) leaves with the stop, not
  // after the window (nor never)
  const releasing = a.queue.release(ids[0], 1)
  await a.stop() // A's libp2p is gone after this: only the flushed message can carry it
  await releasing
  await waitFor('the release on B', () => b.queue.view(ids[0]).state === 'queued')
})

test('a gossip batch with one bad op is refused whole, counted, and not relayed', async (t) => {
  const { a, b, rogue, stopAll } = await rogueBesideTwo({ syncIntervalMs: 0, garbageLimit: 100 })
  t.after(stopAll)

  // an author the rogue writes as; its chain is real, but the batch breaks it or forges a signature
  const w = await makeAuthor()
  const o1 = next(w, [Date.now(), 0], submit(1))
  const o2 = next(w, [Date.now(), 1], submit(2))
  const o3 = next(w, [Date.now(), 2], submit(3))
  const unlinked = signOp(w.key, w.id, 4, [Date.now(), 3], submit(4), new Uint8Array(32)) // seq 4 naming a wrong predecessor
  const stranger = await makeAuthor()
  const forged = signOp(stranger.key, w.id, 4, [Date.now(), 3], submit(5), o3.digest) // w's name, another key
  const publish = async (m: Uint8Array): Promise<void> => { await rogue.services.pubsub.publish(TOPIC, m).catch(() => {}) }

  await publish(cborEncode([o1.bytes, o2.bytes, o3.bytes, unlinked.bytes]))
  // counted once per refused run (the sender is blamed for all four ops)
  await waitFor('A refused the broken chain', () => a.queue.stats().rejected['bad-signature'] >= 1)
  await publish(cborEncode([o1.bytes, o2.bytes, o3.bytes, forged.bytes]))
  await waitFor('A refused the forged tail', () => a.queue.stats().rejected['bad-signature'] >= 2)
  await publish(cborEncode([o1.bytes, 'not op bytes']))
  await waitFor('A refused the malformed batch', () => a.queue.stats().rejected.malformed >= 1)
  assert.equal(a.queue.status().builds, 0, 'nothing of a refused batch was applied')

  // the same three ops, honestly batched, are taken and relayed
  await publish(cborEncode([o1.bytes, o2.bytes, o3.bytes]))
  await waitFor('the honest batch reached B through A', () => b.queue.status().builds === 3)
  assert.equal(refusedOf(b.queue.stats()), 0, 'B never saw the refused batches')
  assert.equal(a.queue.status().builds, 3, 'A applied the honest batch')
})
