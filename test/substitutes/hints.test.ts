// A fresh build output is announced in the DHT after its result op, so a fetcher is first told who
// built it (RecentOutputs, from the queue) and asks that peer before walking the DHT. Real libp2p
// nodes over TCP with kad-dht, a real cache on disk, and no DHT record anywhere: the path arrives
// through the hint alone, verified; a hint that sends an untrusted narinfo is refused by name and
// the DHT is asked after it.
import '../../src/polyfill.js'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import { BinaryCache } from '../../src/cache/index.js'
import type { BuildRecord } from '../../src/crdt/index.js'
import { generateKeys, type NodeKeys } from '../../src/narinfo/index.js'
import { CacheNarSource, NarHashIndex, RecentOutputs, SubstituteNotFoundError, SwarmFetcher } from '../../src/substitutes/index.js'
import { NarTransferServer, TransferClient } from '../../src/transfer/index.js'
import { DirStore } from '../cache/dir-store.js'
import { connect, createNode, stopAll, tempDir, type TestNode } from '../transfer/nodes.js'

const PROTOCOL = '/guix-swarm-test/nar-hints/1.0.0'
let tmp: { dir: string, cleanup: () => Promise<void> }
let builder: TestNode, fetcherNode: TestNode, liar: TestNode
let keysBuilder: NodeKeys, keysLiar: NodeKeys, keysFetcher: NodeKeys
const servers: NarTransferServer[] = []

before(async () => {
  tmp = await tempDir('hints')
  ;[builder, fetcherNode, liar] = await Promise.all([createNode(), createNode(), createNode()])
  await connect(fetcherNode, builder)
  await connect(fetcherNode, liar)
  ;[keysBuilder, keysLiar, keysFetcher] = await Promise.all(['b', 'l', 'f'].map(async (n) => await generateKeys(join(tmp.dir, `k${n}`), { name: n })))
})
after(async () => {
  for (const s of servers) await s.stop()
  await stopAll([builder, fetcherNode, liar])
  await tmp.cleanup()
})

/** A node serving its cache over the NAR protocol, holding one fresh path signed with `keys`; nothing is announced. */
async function holder (node: TestNode, name: string, keys: NodeKeys, contents: string): Promise<{ path: string, hashPart: string }> {
  const cache = new BinaryCache({ dir: join(tmp.dir, name, 'cache'), storeDir: '/gnu/store', keys, uncompressedBelow: 16 * 1024 })
  await cache.start()
  const store = new DirStore(join(tmp.dir, name, 'store'))
  const path = await store.add('out', { out: contents })
  const [entry] = await cache.addClosure(store, [path])
  const index = new NarHashIndex()
  index.add(entry)
  const server = new NarTransferServer({ libp2p: node, source: new CacheNarSource(cache, index) }, { protocol: PROTOCOL })
  await server.start()
  servers.push(server)
  return { path, hashPart: entry.hashPart }
}

function fetcher (name: string, hints: (hashPart: string) => PeerId[]): { f: SwarmFetcher, walks: () => number } {
  let walks = 0
  const routing = fetcherNode.contentRouting
  const cache = new BinaryCache({ dir: join(tmp.dir, name, 'cache'), storeDir: '/gnu/store', keys: keysFetcher })
  const f = new SwarmFetcher({
    // the real DHT, counting the walks asked of it
    libp2p: { peerId: fetcherNode.peerId, contentRouting: { provide: routing.provide.bind(routing), findProviders: (cid, o) => { walks++; return routing.findProviders(cid, o) } } },
    client: new TransferClient({ libp2p: fetcherNode }, { protocol: PROTOCOL }),
    cache,
    trusted: () => [keysBuilder.guix.publicKey],
    tmpDir: join(tmp.dir, name, 'tmp'),
    onAdded: async () => {},
    hasPeers: () => fetcherNode.getPeers().length > 0,
    hints
  }, { lookupTimeoutMs: 3000 })
  return { f, walks: () => walks }
}

test('a fresh output nobody announced arrives from the peer the queue names as its builder, without a DHT walk', async () => {
  const { path, hashPart } = await holder(builder, 'b1', keysBuilder, 'built ' + randomBytes(8).toString('hex'))
  const asked: string[] = []
  const { f, walks } = fetcher('f1', (h) => { asked.push(h); return h === hashPart ? [builder.peerId] : [] })
  const got = await f.fetch(hashPart)
  assert.equal(got.entry.storePath, path, 'the fetched entry is the hinted path')
  assert.equal(got.narinfoFrom, builder.peerId.toString(), 'the narinfo came from the builder')
  assert.deepEqual(got.narFrom, [builder.peerId.toString()], 'the NAR came from the builder')
  assert.deepEqual(asked, [hashPart], 'the hint was asked once')
  assert.equal(walks(), 0, 'no DHT walk: the builder held the narinfo and the small NAR')
  assert.deepEqual(f.hintStats, { asked: 1, believed: 1 })
})

test('a hinted peer whose narinfo is not trusted is refused, then the DHT is asked', async () => {
  const { hashPart } = await holder(liar, 'l1', keysLiar, 'forged ' + randomBytes(8).toString('hex'))
  const { f, walks } = fetcher('f2', () => [liar.peerId])
  await assert.rejects(f.fetch(hashPart), (err: Error) => {
    assert.ok(err instanceof SubstituteNotFoundError, `a SubstituteNotFoundError, got ${err.name}: ${err.message}`)
    assert.match(err.message, /no trusted narinfo from 1 provider/, 'the refusal names the untrusted hint')
    return true
  })
  assert.equal(walks(), 1, 'the DHT was walked after the hint failed')
  assert.deepEqual(f.hintStats, { asked: 1, believed: 0 })
})

/** A succeeded (or other) record with the fields RecentOutputs reads. */
function record (phase: BuildRecord['phase'], claimer: string, outputs: string[]): BuildRecord {
  const result = { outcome: 'success' as const, opId: 'x', hlc: [0, 0] as [number, number], outputs: Object.fromEntries(outputs.map((p, i) => [`out${i}`, { path: p, narHash: 'sha256:x', narSize: 1 }])) }
  return { phase, attempts: [{ number: 1, claimer, result: phase === 'succeeded' ? result : undefined }] } as unknown as BuildRecord
}

test('RecentOutputs names the claimer of a build\'s successful attempt for each output, keeps the newest only, ignores unfinished builds', () => {
  const r = new RecentOutputs(2, '/gnu/store'.length)
  const p = (c: string): string => `/gnu/store/${c.repeat(32)}-x`
  assert.deepEqual(r.add(record('building', 'peerA', [p('a')])), [], 'an unfinished build indexes nothing')
  assert.equal(r.holder('a'.repeat(32)), undefined)
  assert.deepEqual(r.add(record('succeeded', 'peerA', [p('a'), p('b')])), ['a'.repeat(32), 'b'.repeat(32)])
  assert.equal(r.holder('b'.repeat(32)), 'peerA')
  r.add(record('succeeded', 'peerC', [p('c')]))
  assert.equal(r.size, 2, 'bounded')
  assert.equal(r.holder('a'.repeat(32)), undefined, 'the oldest went first')
  assert.equal(r.holder('c'.repeat(32)), 'peerC')
})
