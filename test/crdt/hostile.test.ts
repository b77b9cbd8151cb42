// Hostile peers on a real network: refused ops are counted, never applied, never relayed;
// a peer that keeps sending garbage is dropped; a broken sync stream is refused.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signOp, DEFAULT_QUEUE_CONFIG } from '../../src/crdt/index.js'
import { createTestLibp2p, removeDir, rogueBesideTwo, startNode, waitFor } from './net.js'
import { drv, submit } from './fixtures.js'

const TOPIC = DEFAULT_QUEUE_CONFIG.topic

test('garbage on gossip is refused, counted, not relayed, and its sender dropped', async (t) => {
  const rogueKey = await generateKeyPair('Ed25519')
  const { a, b, rogue, stopAll } = await rogueBesideTwo({ garbageLimit: 4, syncIntervalMs: 0 }, rogueKey)
  t.after(stopAll)

  const me = peerIdFromPrivateKey(rogueKey).toString()
  const other = await generateKeyPair('Ed25519')
  const future = signOp(rogueKey, me, 1, [Date.now() + 10 * 60_000, 0], submit(1))
  const forged = signOp(other, me, 1, [Date.now(), 0], submit(2)) // signed by someone else
  const garbage = [new Uint8Array([1, 2, 3]), future.bytes, forged.bytes, new Uint8Array(20_000)]
  for (const g of garbage) await rogue.services.pubsub.publish(TOPIC, g).catch(() => {})
  await waitFor('A refused all four', () => Object.values(a.queue.stats().rejected).reduce((x, y) => x + y, 0) >= 4)
  const r = a.queue.stats().rejected
  assert.equal(r.malformed, 1); assert.equal(r['future-clock'], 1); assert.equal(r['bad-signature'], 1)
  // the 20 kB message may be cut by gossipsub itself or by our size check: either way refused
  assert.equal(a.queue.status().builds, 0)
  await waitFor('A dropped the rogue', () => a.queue.stats().droppedPeers === 1 && !a.libp2p.getPeers().some(p => p.equals(rogue.peerId)))

  // a good op from A still flows to B, and B never saw any of the garbage
  const [id] = await a.queue.submit([{ drv: drv(3), system: 'x86_64-linux' }])
  await waitFor('good op on B', () => b.queue.get(id) !== undefined)
  assert.equal(Object.values(b.queue.stats().rejected).reduce((x, y) => x + y, 0), 0)
  assert.equal(b.queue.status().builds, 1)
})

test('a sync stream with a broken frame is refused and counted', async (t) => {
  const a = await startNode({ config: { syncIntervalMs: 0 } })
  const rogue = await createTestLibp2p(await generateKeyPair('Ed25519'))
  t.after(async () => { await rogue.stop(); await a.stop(); await removeDir(a.dir) })
  await rogue.dial(a.libp2p.getMultiaddrs()[0])
  const before = a.queue.stats().syncFailures
  const stream = await rogue.dialProtocol(a.libp2p.peerId, DEFAULT_QUEUE_CONFIG.syncProtocol)
  const frame = new Uint8Array(8)
  new DataView(frame.buffer).setUint32(0, 0x7fffffff) // claims a 2 GiB frame
  stream.send(frame)
  await waitFor('A refused the stream', () => a.queue.stats().syncFailures > before)
  assert.equal(a.queue.status().builds, 0)
})
