// Closure bundles between two real libp2p nodes over TCP, the server reading its BinaryCache on
// disk: a closure arrives references first in one stream, verified, in memory; untrusted
// narinfos, files that do not match, frames that break the format and oversized files are refused.
import '../../src/polyfill.js'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { BinaryCache, type CacheEntry } from '../../src/cache/index.js'
import { packNarSync } from '../../src/nar/index.js'
import { generateKeys, type NodeKeys } from '../../src/narinfo/index.js'
import { BundleProtocolError, BundleVerifyError, ClosureBundles } from '../../src/substitutes/index.js'
import { sendWithBackpressure } from '../../src/transfer/index.js'
import { DirStore } from '../cache/dir-store.js'
import { createNode, stopAll, tempDir, type TestNode } from '../transfer/nodes.js'

const PROTOCOL = '/guix-swarm-test/closure/1.0.0'
let tmp: { dir: string, cleanup: () => Promise<void> }
let a: TestNode, b: TestNode
let keysA: NodeKeys, keysB: NodeKeys, keysEvil: NodeKeys

before(async () => {
  tmp = await tempDir('bundle')
  ;[a, b] = await Promise.all([createNode(), createNode()])
  await a.dial(b.getMultiaddrs()[0])
  keysA = await generateKeys(join(tmp.dir, 'ka'), { name: 'a' })
  keysB = await generateKeys(join(tmp.dir, 'kb'), { name: 'b' })
  keysEvil = await generateKeys(join(tmp.dir, 'ke'), { name: 'evil' })
})
after(async () => {
  await stopAll([a, b])
  await tmp.cleanup()
})

interface Side { cache: BinaryCache, bundles: ClosureBundles }

/** A cache + bundles on `node`, trusting `trusted` (its own key always). */
async function side (node: TestNode, name: string, keys: NodeKeys, trusted: NodeKeys[], protocol = PROTOCOL, publishing?: (hashPart: string) => Promise<unknown> | undefined): Promise<Side> {
  const cache = new BinaryCache({ dir: join(tmp.dir, name, 'cache'), storeDir: '/gnu/store', keys, compressions: ['zstd', 'lzip'], uncompressedBelow: 16 * 1024 })
  await cache.start()
  const bundles = new ClosureBundles({
    libp2p: node,
    cache,
    trusted: () => [keys.guix.publicKey, ...trusted.map((k) => k.guix.publicKey)],
    ...(publishing !== undefined ? { publishing } : {})
  }, protocol)
  return { cache, bundles }
}

/** top → mid → leaf, plus a big file; all in B's cache, signed by `keys`. */
async function publishChain (cache: BinaryCache, store: DirStore): Promise<{ leaf: string, mid: string, top: string, big: string }> {
  const leaf = await store.add('leaf.drv', { 'leaf.drv': 'leaf ' + randomBytes(8).toString('hex') })
  const mid = await store.add('mid.drv', { 'mid.drv': 'mid ' + randomBytes(8).toString('hex') }, [leaf])
  const big = await store.add('big-src', { 'src.tar': randomBytes(300 * 1024) })
  const top = await store.add('top.drv', { 'top.drv': 'top ' + randomBytes(8).toString('hex') }, [mid, big])
  await cache.addClosure(store, [top])
  return { leaf, mid, top, big }
}

const hp = (p: string): string => p.slice('/gnu/store/'.length, '/gnu/store/'.length + 32)

type Chain = Awaited<ReturnType<typeof publishChain>>

/** B serves a fresh chain signed with `serverKeys` (over its own caches `b<name>`) to A, which trusts B's key, while `run` runs. */
async function servingChain (name: string, serverKeys: NodeKeys, run: (s: { sb: Side, sa: Side, store: DirStore, chain: Chain }) => Promise<void>): Promise<void> {
  const sb = await side(b, `b${name}`, serverKeys, [])
  const sa = await side(a, `a${name}`, keysA, [keysB])
  await sb.bundles.start()
  try {
    const store = new DirStore(join(tmp.dir, `store${name}`))
    await run({ sb, sa, store, chain: await publishChain(sb.cache, store) })
  } finally {
    await sb.bundles.stop()
  }
}

test('a closure arrives in one stream, references first, verified, NARs decompressed; unknown ones reported missing; large files skipped', async () => {
  await servingChain('1', keysB, async ({ sb, sa, store, chain: { leaf, mid, top, big } }) => {
    assert.deepEqual((await sb.cache.getEntry(hp(big)))?.files.map((f) => f.compression).sort(), ['lzip', 'zstd'], 'the big one is compressed twice, as guix publish does')
    const unknown = 'a'.repeat(32)
    const r = await sa.bundles.take(b.peerId, [hp(top), unknown])
    const order = r.entries.map((e) => e.narinfo.storePath)
    assert.deepEqual([...order].sort(), [leaf, mid, big, top].sort())
    const before = (x: string, y: string): boolean => order.indexOf(x) < order.indexOf(y)
    assert.ok(before(leaf, mid) && before(mid, top) && before(big, top), `references first: ${order.join(' ')}`)
    assert.deepEqual(r.missing, [unknown])
    assert.deepEqual(r.skipped, [])
    for (const e of r.entries) {
      assert.equal(e.narinfoText, await sb.cache.getNarinfo(hp(e.narinfo.storePath)), 'the narinfo is kept byte for byte')
      const dir = store.paths.get(e.narinfo.storePath)?.dir as string
      assert.ok(e.nar.equals(Buffer.concat([...packNarSync(dir)])), `${e.narinfo.storePath}: the NAR itself, decompressed`)
    }
    assert.deepEqual(await sa.cache.list(), [], 'nothing is cached on the taking side')
    // files over the limit are left to the usual fetch
    const small = await sa.bundles.take(b.peerId, [hp(top)], { maxFileBytes: 64 * 1024 })
    assert.deepEqual(small.skipped, [hp(big)])
    assert.deepEqual(small.entries.map((e) => e.narinfo.storePath), [leaf, mid, top], 'in the same order, without the skipped one')
    // a byte budget: what would go past it is skipped, not an error
    const budget = await sa.bundles.take(b.peerId, [hp(top)], { maxBytes: 1 })
    assert.deepEqual(budget.entries, [])
    assert.deepEqual([...budget.skipped].sort(), [leaf, mid, big, top].map(hp).sort())
    assert.equal(sb.bundles.served, 3)
  })
})

test('a narinfo signed by an untrusted key is refused', async () => {
  await servingChain('2', keysEvil, async ({ sa, chain: { top } }) => {
    await assert.rejects(sa.bundles.take(b.peerId, [hp(top)]), BundleVerifyError)
    assert.equal(sa.bundles.rejected.badNarinfo, 1)
  })
})

/** Serve `PROTOCOL2` on B with a handler that answers with `frames` (raw bytes) whatever is asked. */
async function hostile (protocol: string, answer: (hashPart: string) => Uint8Array[]): Promise<void> {
  await b.handle(protocol, (stream: Stream) => {
    void (async () => {
      const chunks: Uint8Array[] = []
      for await (const c of stream) chunks.push(c instanceof Uint8Array ? c : c.subarray())
      const req = JSON.parse(Buffer.concat(chunks).subarray(4).toString('utf8')) as { hashParts: string[] }
      for (const piece of answer(req.hashParts[0])) await sendWithBackpressure(stream, piece)
      await stream.close()
    })().catch((err: Error) => { stream.abort(err) })
  })
}

function frame (v: unknown): Uint8Array {
  const body = Buffer.from(JSON.stringify(v))
  const out = Buffer.alloc(4 + body.length)
  out.writeUInt32BE(body.length)
  body.copy(out, 4)
  return out
}

test('a file that does not match its trusted narinfo is refused', async () => {
  // an honest cache to take real signed narinfos and files from, served by a peer that flips a byte
  const honest = await side(b, 'b3', keysB, [])
  const { leaf, mid } = await publishChain(honest.cache, new DirStore(join(tmp.dir, 'store3')))
  const entry = async (p: string, flip: boolean): Promise<Uint8Array[]> => {
    const e = await honest.cache.getEntry(hp(p)) as CacheEntry
    const file = Buffer.concat(await (await honest.cache.openFile(e.files[0].url)).toArray() as Buffer[])
    if (flip) file[file.length - 20] ^= 1
    const narinfo = Buffer.from(e.narinfo)
    return [frame({ hashPart: e.hashPart, narinfo: narinfo.length, files: [{ compression: e.files[0].compression, size: file.length }] }), narinfo, file]
  }
  const good = await entry(leaf, false)
  const bad = await entry(mid, true)
  const protocol = '/guix-swarm-test/closure-flip/1.0.0'
  await hostile(protocol, () => [...good, ...bad, frame({ end: true, missing: [] })])
  try {
    const sa = await side(a, 'a3', keysA, [keysB], protocol)
    // the honest entries alone come through
    const honestOnly = '/guix-swarm-test/closure-honest/1.0.0'
    await hostile(honestOnly, () => [...good, frame({ end: true, missing: [] })])
    assert.deepEqual((await (await side(a, 'a3h', keysA, [keysB], honestOnly)).bundles.take(b.peerId, [hp(leaf)])).entries.map((e) => e.narinfo.storePath), [leaf])
    await b.unhandle(honestOnly)
    await assert.rejects(sa.bundles.take(b.peerId, [hp(mid)]), BundleVerifyError)
    assert.equal(sa.bundles.rejected.badFile, 1)
  } finally {
    await b.unhandle(protocol)
  }
})

test('frames that break the format are refused by name: oversized frame, file over the limit asked for, junk', async () => {
  const cases: Array<[string, Uint8Array[]]> = [
    ['oversized', [Buffer.from([0, 1, 0, 0])]],
    ['file over the limit', [frame({ hashPart: 'b'.repeat(32), narinfo: 10, files: [{ compression: 'none', size: 2 * 1024 * 1024 }] })]],
    ['not json', [Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]],
    ['cut short', [frame({ hashPart: 'b'.repeat(32), narinfo: 10, files: [{ compression: 'none', size: 10 }] }), Buffer.from('Store')]],
    ['bad hash part', [frame({ hashPart: '../../etc', narinfo: 10, files: [] })]]
  ]
  for (const [i, [what, pieces]] of cases.entries()) {
    const protocol = `/guix-swarm-test/closure-junk-${i}/1.0.0`
    await hostile(protocol, () => pieces)
    try {
      const sa = await side(a, `a4-${i}`, keysA, [keysB], protocol)
      await assert.rejects(sa.bundles.take(b.peerId, ['c'.repeat(32)]), (e: Error) => e instanceof BundleProtocolError || e.name === 'TruncatedStreamError', what)
    } finally {
      await b.unhandle(protocol)
    }
  }
})

test('the server refuses a malformed request by name and goes on serving', async () => {
  await servingChain('5', keysB, async ({ sb, sa, chain: { top } }) => {
    const junk: Array<[string, Uint8Array]> = [
      ['not json', Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('{{')])],
      ['a path that is not a hash part', frame({ hashParts: ['../../etc/passwd'], maxFileBytes: 10 })],
      ['too many paths', frame({ hashParts: Array.from({ length: 257 }, () => 'c'.repeat(32)), maxFileBytes: 10 })],
      ['no size', frame({ hashParts: ['c'.repeat(32)] })]
    ]
    for (const [what, bytes] of junk) {
      const stream = await a.dialProtocol(b.peerId, PROTOCOL)
      await sendWithBackpressure(stream, bytes)
      await stream.close()
      const got: Uint8Array[] = []
      await assert.rejects((async () => { for await (const c of stream) got.push(c instanceof Uint8Array ? c : c.subarray()) })(), what)
      assert.equal(Buffer.concat(got).length, 0, `${what}: nothing is sent back`)
    }
    assert.equal(sb.bundles.badRequests, junk.length)
    assert.equal((await sa.bundles.take(b.peerId, [hp(top)])).entries.length, 4, 'an honest request right after is served')
  })
})

test('a request for paths still being published waits for them; one whose publication failed is answered missing', async () => {
  const protocol = '/guix-swarm-test/closure-publishing/1.0.0'
  const under = new Map<string, Promise<unknown>>()
  const sb = await side(b, 'b6', keysB, [], protocol, (h) => under.get(h))
  const sa = await side(a, 'a6', keysA, [keysB], protocol)
  await sb.bundles.start()
  try {
    const store = new DirStore(join(tmp.dir, 'store6'))
    const leaf = await store.add('leaf.drv', { 'leaf.drv': 'leaf ' + randomBytes(8).toString('hex') })
    const top = await store.add('top.drv', { 'top.drv': 'top ' + randomBytes(8).toString('hex') }, [leaf])
    const lost = await store.add('lost.drv', { 'lost.drv': 'lost ' + randomBytes(8).toString('hex') })
    // marked as under way before anything is in the cache, as the submitter's hook does
    let publish!: () => void
    let fail!: (err: Error) => void
    under.set(hp(top), new Promise<void>((resolve) => { publish = resolve }))
    under.set(hp(lost), new Promise<void>((_resolve, reject) => { fail = reject }).catch(() => {}))
    const taking = sa.bundles.take(b.peerId, [hp(top), hp(lost)])
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.deepEqual(await sb.cache.list(), [], 'nothing was in the cache while the request was waiting')
    await sb.cache.addClosure(store, [top])
    publish()
    fail(new Error('the disk is full'))
    const r = await taking
    assert.deepEqual(r.entries.map((e) => e.narinfo.storePath), [leaf, top], 'the closure published meanwhile, references first')
    assert.deepEqual(r.missing, [hp(lost)], 'a failed publication leaves its path missing, not the request hanging')
  } finally {
    await sb.bundles.stop()
  }
})
