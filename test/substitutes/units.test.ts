// Unit tests on real BinaryCaches in temp dirs (a fake on-disk store feeds them): GC policy, the
// transfer source's key mapping, HTTP range parsing, mirror filters.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BinaryCache, type CacheEntry } from '../../src/cache/index.js'
import type { BuildRecord } from '../../src/crdt/index.js'
import { announcedCids, CacheNarSource, GarbageCollector, matchesFilters, NarHashIndex, narFileKey, parseRange, successfulOutputs } from '../../src/substitutes/index.js'
import { narHashBytes } from '../../src/narinfo/index.js'
import { narCid, storePathCid } from '../../src/transfer/index.js'
import { DirStore } from '../cache/dir-store.js'
import { runCli } from '../helpers/cli.js'

const DAY = 24 * 60 * 60 * 1000

async function withCache (fn: (cache: BinaryCache, store: DirStore, clock: { t: number }) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-subst-unit-'))
  const clock = { t: 1_000 * DAY }
  const cache = new BinaryCache({ dir: join(dir, 'cache'), storeDir: '/gnu/store', compressions: ['none'], now: () => clock.t })
  const store = new DirStore(join(dir, 'store'))
  try {
    await fn(cache, store, clock)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const size = (e: CacheEntry): number => Buffer.byteLength(e.narinfo) + e.files.reduce((s, f) => s + f.fileSize, 0)

test('gc evicts least recently served first, keeps last copies unless forced, takes narinfos with NARs, and reports bytes', async () => {
  await withCache(async (cache, store, clock) => {
    const add = async (name: string): Promise<CacheEntry> => { clock.t += 1000; return await cache.addFromStore(store, await store.add(name, { f: name.repeat(500) })) }
    const lonely = await add('lonely') // the only copy in the swarm, and the least recently used
    const old = await add('old')
    const mid = await add('mid')
    const fresh = await add('fresh')
    clock.t += 1000
    await cache.touch(old.hashPart) // served recently: now the freshest of all
    const elsewhere = new Set([old.narHash, mid.narHash, fresh.narHash])
    const removed: string[] = []
    const gc = new GarbageCollector({ cache, hasOtherProvider: async (r) => elsewhere.has(r.narHash), onRemoved: (r) => removed.push(r.storePath), now: () => clock.t })
    const total = [old, mid, fresh, lonely].reduce((s, e) => s + size(e), 0)

    const dry = await gc.collect({ maxSize: total - size(mid), dryRun: true })
    assert.deepEqual(dry.removed.map((r) => r.storePath), [mid.storePath])
    assert.equal((await cache.list()).length, 4, 'a dry run removes nothing')
    assert.deepEqual(removed, [])

    // room for two entries: lonely (least recently used) is kept as a last copy, so mid and then
    // fresh go; old (recently served) stays
    const r = await gc.collect({ maxSize: size(old) + size(lonely) })
    assert.deepEqual(r.removed.map((x) => x.storePath), [mid.storePath, fresh.storePath])
    assert.deepEqual(r.keptLastCopies, [lonely.storePath])
    assert.equal(r.freed, size(mid) + size(fresh))
    assert.equal(r.after, total - r.freed)
    assert.deepEqual(removed, [mid.storePath, fresh.storePath])
    assert.equal(await cache.getNarinfo(mid.hashPart), undefined)
    assert.equal(await cache.statFile(mid.files[0].url), undefined, 'the NAR went with its narinfo')
    assert.ok(await cache.has(old.hashPart), `the cache still holds ${old.hashPart}`)

    // keep-days: only what was not used for that long; forced, even the last copy
    clock.t += 10 * DAY
    await cache.touch(old.hashPart)
    const k = await gc.collect({ keepDays: 5, force: true })
    assert.deepEqual(k.removed.map((x) => x.storePath), [lonely.storePath])
    assert.deepEqual((await cache.list()).map((e) => e.storePath), [old.storePath])
  })
})

test('the transfer source maps <narHash>.<compression> keys to cache files and nothing else', async () => {
  await withCache(async (cache, store) => {
    const e = await cache.addFromStore(store, await store.add('pkg', { f: 'hello' }))
    const index = new NarHashIndex()
    index.add(e)
    const source = new CacheNarSource(cache, index)
    const key = narFileKey(e.narHash, 'none')
    assert.match(key, /^[0-9a-z]{52}\.none$/)
    const onDisk = await readFile(join(cache.dir, e.files[0].url))
    assert.equal(await source.statFile(key), onDisk.length)
    const chunks: Buffer[] = []
    for await (const c of await source.openFile(key, 3, 10)) chunks.push(Buffer.from(c))
    assert.deepEqual(Buffer.concat(chunks), onDisk.subarray(3, 13))
    assert.equal(await source.statFile(narFileKey(e.narHash, 'zstd')), undefined, 'no such compression')
    assert.equal(await source.statFile('nar.none'), undefined)
    assert.equal(await source.statFile(`${'0'.repeat(52)}.none`), undefined)
    assert.equal(await source.openNarinfo(e.hashPart), e.narinfo)
    // positional reads, as the transfer server does them into its reused buffers
    const fh = await source.openRandomAccess(key)
    assert.ok(fh !== undefined, 'a held file opens for positional reads')
    const buf = Buffer.alloc(10)
    try {
      assert.equal((await fh.read(buf, 0, 10, 3)).bytesRead, 10)
    } finally {
      await fh.close()
    }
    assert.deepEqual(buf, onDisk.subarray(3, 13))
    assert.equal(await source.openRandomAccess(narFileKey(e.narHash, 'zstd')), undefined)
    index.delete(e)
    assert.equal(await source.statFile(key), undefined)
    assert.equal(await source.openRandomAccess(key), undefined)
  })
})

test('HTTP ranges: one bytes= range is honoured, unsatisfiable ones get 416, anything else serves the whole file', () => {
  assert.equal(parseRange(undefined, 100), undefined)
  assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 })
  assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 })
  assert.deepEqual(parseRange('bytes=90-500', 100), { start: 90, end: 99 })
  assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 })
  assert.deepEqual(parseRange('bytes=-1000', 100), { start: 0, end: 99 })
  assert.equal(parseRange('bytes=100-', 100), 'unsatisfiable')
  assert.equal(parseRange('bytes=-0', 100), 'unsatisfiable')
  assert.equal(parseRange('bytes=5-2', 100), undefined)
  assert.equal(parseRange('bytes=0-1,5-6', 100), undefined)
  assert.equal(parseRange('items=0-1', 100), undefined)
})

test('mirror filters: systems and tags (key or key=value); only succeeded builds have outputs to pull', () => {
  const rec = (phase: BuildRecord['phase'], system = 'x86_64-linux', tags: Record<string, string> = {}): BuildRecord => ({
    id: 'x', derivation: '/gnu/store/x.drv', system, tags, submitter: 'p', submitOpId: 'o', submitHlc: [0, 0], maxAttempts: 3, priority: 0,
    canceled: false, phase, failures: 0, digest: '',
    attempts: [{ number: 1, claimer: 'p', claimOpId: 'c', claimHlc: [0, 0], contenders: 1, started: true, released: false, leaseMs: 1, leaseSeenAt: 0, result: phase === 'succeeded' ? { outcome: 'success', opId: 'r', hlc: [0, 0], outputs: { out: { path: '/gnu/store/aaa-out', narHash: 'h', narSize: 1 }, doc: { path: '/gnu/store/bbb-doc', narHash: 'h', narSize: 1 } } } : undefined }]
  } as BuildRecord)
  assert.deepEqual(successfulOutputs(rec('succeeded')).sort(), ['/gnu/store/aaa-out', '/gnu/store/bbb-doc'])
  assert.deepEqual(successfulOutputs(rec('building')), [])
  assert.equal(matchesFilters(rec('succeeded'), { systems: [], tags: [] }), true)
  assert.equal(matchesFilters(rec('succeeded', 'aarch64-linux'), { systems: ['x86_64-linux'], tags: [] }), false)
  assert.equal(matchesFilters(rec('succeeded', 'x86_64-linux', { channel: 'stable' }), { systems: [], tags: ['channel=stable'] }), true)
  assert.equal(matchesFilters(rec('succeeded', 'x86_64-linux', { channel: 'stable' }), { systems: [], tags: ['channel=next'] }), false)
  assert.equal(matchesFilters(rec('succeeded', 'x86_64-linux', { channel: 'stable' }), { systems: [], tags: ['channel'] }), true)
  assert.equal(matchesFilters(rec('succeeded'), { systems: [], tags: ['channel'] }), false)
})

test('publish, pull and gc refuse malformed arguments with exit 2 before asking any node', async () => {
  for (const args of [['publish', 'not-a-store-path'], ['pull', '/nix/store/short-x'], ['gc', '--max-size', 'lots'], ['gc', '--keep-days', '-1']]) {
    const r = await runCli([...args, '--api', 'http://127.0.0.1:9'])
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
  }
})

test('gc never evicts what a running build needs, even forced', async () => {
  await withCache(async (cache, store) => {
    const a = await cache.addFromStore(store, await store.add('input', { f: 'a' }))
    const b = await cache.addFromStore(store, await store.add('other', { f: 'b' }))
    const gc = new GarbageCollector({ cache, hasOtherProvider: async () => true, onRemoved: () => {}, pinned: () => new Set([a.storePath]) })
    const r = await gc.collect({ maxSize: 0, force: true })
    assert.deepEqual(r.keptPinned, [a.storePath])
    assert.deepEqual(r.removed.map((x) => x.storePath), [b.storePath])
    assert.ok(await cache.has(a.hashPart), `the cache holds ${a.hashPart}`)
  })
})

test('an entry is announced under its store path; a NAR over 4 MiB under its NAR hash too', () => {
  const entry = { hashPart: '0123456789abcdfghijklmnpqrsvwxyz', narHash: 'sha256:' + '1'.repeat(52) }
  const path = storePathCid(entry.hashPart).toString()
  const nar = narCid(narHashBytes(entry.narHash)).toString()
  assert.deepEqual(announcedCids({ ...entry, narSize: 4 * 1024 * 1024 }).map(String), [path], 'small: the store path only')
  assert.deepEqual(announcedCids({ ...entry, narSize: 4 * 1024 * 1024 + 1 }).map(String), [path, nar], 'large: both')
})
