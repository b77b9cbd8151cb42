// skipRepeatedMerges on real libp2p nodes over TCP: the protocol merge js-libp2p makes for every
// stream goes through the wrapper, and a repeat within the TTL is not written again; the record
// still holds what was merged; a patch, a delete or the TTL passing make the next merge real.
import '../../src/polyfill.js'
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { skipRepeatedMerges, type MergeCounters } from '../../src/node/peer-store.js'
import { createNode, stopAll, type TestNode } from '../transfer/nodes.js'

let a: TestNode, b: TestNode
let counters: MergeCounters
let clock = Date.now()

before(async () => {
  ;[a, b] = await Promise.all([createNode(), createNode()])
  counters = skipRepeatedMerges(a.peerStore, { ttlMs: 60_000, now: () => clock })
  await a.dial(b.getMultiaddrs()[0])
})
after(async () => { await stopAll([a, b]) })

test('the protocol merge of each stream libp2p opens goes through the wrapper; repeats are skipped', async () => {
  const proto = '/guix-swarm-test/short/1.0.0'
  await b.handle(proto, async (stream) => { await stream.close() })
  // identify patches the record once connected: wait for it, so it does not land mid-loop
  const deadline = Date.now() + 10_000
  while (!(await a.peerStore.get(b.peerId).then((p) => p.protocols.includes(proto), () => false))) {
    if (Date.now() > deadline) assert.fail('identify never told a about the protocol')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const start = { ...counters }
  for (let i = 0; i < 5; i++) {
    const stream = await a.dialProtocol(b.peerId, proto)
    await stream.close()
  }
  assert.ok(counters.merged + counters.skipped - start.merged - start.skipped >= 5, `each stream's merge was seen: ${JSON.stringify(counters)}`)
  // identify may still patch the record once meanwhile (making one merge real again)
  assert.ok(counters.skipped - start.skipped >= 2, `the repeats were skipped: ${JSON.stringify(counters)}`)
  assert.ok((await a.peerStore.get(b.peerId)).protocols.includes(proto), 'the record holds the protocol')
})

test('a repeat is skipped until a patch, a delete or the TTL makes the next one real', async () => {
  const id = b.peerId
  const addr = multiaddr('/ip4/127.0.0.1/tcp/4999')
  const real = async (data: Parameters<typeof a.peerStore.merge>[1]): Promise<boolean> => {
    const before = counters.merged
    await a.peerStore.merge(id, data)
    return counters.merged > before
  }
  assert.equal(await real({ multiaddrs: [addr] }), true, 'first merge of an address: written')
  assert.equal(await real({ multiaddrs: [addr] }), false, 'the same again: skipped')
  assert.ok((await a.peerStore.get(id)).addresses.some((x) => x.multiaddr.equals(addr)), 'the record holds the address')
  assert.equal(await real({ protocols: ['/x/1'] }), true, 'other protocols: written')
  assert.equal(await real({ protocols: ['/x/1'] }), false, 'and skipped when repeated')
  await a.peerStore.patch(id, { protocols: ['/y/1'] })
  assert.equal(await real({ protocols: ['/x/1'] }), true, 'after a patch (which may have removed it), written again')
  assert.ok((await a.peerStore.get(id)).protocols.includes('/x/1'), 'and the record holds it again')
  assert.equal(await real({ tags: { t: { value: 1 } } }), true, 'tags are never skipped')
  assert.equal(await real({ tags: { t: { value: 1 } } }), true, 'not even repeated')
  assert.equal(await real({ protocols: ['/x/1'] }), false, 'a merge only adds: the protocol is still there, skipped')
  await a.peerStore.delete(id)
  assert.equal(await real({ protocols: ['/x/1'] }), true, 'after a delete, written again')
  assert.ok((await a.peerStore.get(id)).protocols.includes('/x/1'), 'the new record holds it')
  clock += 60_001
  assert.equal(await real({ protocols: ['/x/1'] }), true, 'past the TTL the record is refreshed')
})
