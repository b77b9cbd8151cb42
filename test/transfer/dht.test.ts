import '../../src/polyfill.js'
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { findProviders, narCid, provide, storePathCid, Reprovider, InvalidHashPartError, InvalidNarHashError } from '../../src/transfer/index.js'
import { connect, createNode, stopAll, type TestNode } from './nodes.js'
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'

describe('content ids', () => {
  it('narCid is CIDv1 raw with the NAR hash as sha2-256 multihash', () => {
    const digest = createHash('sha256').update('a nar').digest()
    const cid = narCid(digest)
    assert.equal(cid.version, 1)
    assert.equal(cid.code, 0x55)
    assert.equal(cid.multihash.code, 0x12)
    assert.deepEqual(Buffer.from(cid.multihash.digest), digest)
    assert.ok(CID.parse(cid.toString()).equals(cid), `${cid.toString()} does not round-trip`)
    assert.throws(() => narCid(new Uint8Array(20)), InvalidNarHashError)
  })

  it('storePathCid is deterministic, domain-separated and checks the hash part', () => {
    const hp = '0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r'
    const a = storePathCid(hp)
    assert.ok(a.equals(storePathCid(hp)), 'the same hash part gave another CID')
    const expected = createHash('sha256').update(`guix-swarm:storepath:${hp}`).digest()
    assert.deepEqual(Buffer.from(a.multihash.digest), expected)
    assert.ok(!a.equals(storePathCid(hp.replace(/^./, 'z'))), 'different hash parts gave the same CID')
    assert.throws(() => storePathCid('E'.repeat(32)), InvalidHashPartError)
    assert.throws(() => storePathCid('a'.repeat(31)), InvalidHashPartError)
  })
})

describe('DHT provide / findProviders over 3 real nodes', { timeout: 120_000 }, () => {
  let a: TestNode, b: TestNode, c: TestNode
  before(async () => {
    [a, b, c] = await Promise.all([createNode(), createNode(), createNode()])
    await connect(a, b)
    await connect(c, b)
  })
  after(async () => { await stopAll([a, b, c]) })

  it('C finds A (once, deduplicated) for a CID only A provides', async () => {
    const cid = narCid(createHash('sha256').update('dht test nar').digest())
    await provide({ libp2p: a }, cid, { signal: AbortSignal.timeout(20_000) })
    const found = []
    for await (const p of findProviders({ libp2p: c }, cid, { signal: AbortSignal.timeout(20_000), limit: 5 })) {
      found.push(p)
      if (p.id.equals(a.peerId)) break
    }
    const ids = found.map((p) => p.id.toString())
    assert.ok(ids.includes(a.peerId.toString()), `A not among ${ids.join(', ')}`)
    assert.equal(new Set(ids).size, ids.length)
    const entry = found.find((p) => p.id.equals(a.peerId))
    assert.ok(entry != null && entry.multiaddrs.length > 0, `provider entry without addresses: ${JSON.stringify(entry?.multiaddrs.map(String))}`)
  })

  it('Reprovider announces every held CID on start', async () => {
    const cids = [1, 2, 3].map((i) => storePathCid(`${i}`.repeat(32)))
    const r = new Reprovider({ libp2p: c, held: () => cids }, { intervalMs: 60_000 })
    await r.start()
    // settled() only covers a round already running; wait for the first round to begin.
    while (r.lastRound.provided + r.lastRound.failed === 0) {
      await r.settled()
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await r.stop()
    assert.deepEqual(r.lastRound, { provided: 3, failed: 0 })
    for (const cid of cids) {
      let hit = false
      for await (const p of findProviders({ libp2p: a }, cid, { signal: AbortSignal.timeout(20_000) })) {
        if (p.id.equals(c.peerId)) { hit = true; break }
      }
      assert.ok(hit, `C not found as provider of ${cid.toString()}`)
    }
  })
})
