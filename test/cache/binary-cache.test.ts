// BinaryCache against a small on-disk fake store (test/cache/dir-store.ts): the Guix dialect on
// /gnu/store, idempotency, atomic visibility, failure clean-up, addVerified, verifyFile, serving.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { copyFile, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import {
  BinaryCache, CacheBadUrlPathError, CacheExportMismatchError, CacheFileCorruptError, CacheFileSizeMismatchError,
  CacheMissingFileError, CacheNarHashMismatchError, CacheNarinfoError, CacheNarSizeMismatchError, CacheNotFoundError,
  CacheStoreDirMismatchError, CacheStorePathError, verifyFile, type CacheEntry
} from '../../src/cache/index.js'
import { encodeNixBase32, hashPathSync } from '../../src/nar/index.js'
import { generateKeys, parseNarinfo, parsePublicKey, readSecretKeyFile, verifyNarinfo } from '../../src/narinfo/index.js'
import { VECTORS } from '../helpers/paths.js'
import { DirStore, withTemp } from './dir-store.js'

const GUIX_KEY = join(VECTORS, 'guix', 'test-key.sec')
const GUIX_PUB = join(VECTORS, 'guix', 'test-key.pub')

/** Every regular file under `root` except our private dot directory, with its size. */
async function visibleFiles (root: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    const rel = relative(root, join(e.parentPath ?? e.path, e.name))
    if (rel.startsWith('.guix-swarm') || !e.isFile()) continue
    try {
      out.set(rel, (await stat(join(root, rel))).size)
    } catch {} // removed between readdir and stat
  }
  return out
}

async function smallClosure (store: DirStore): Promise<{ lib: string, app: string, drv: string }> {
  const lib = await store.add('lib-1.0', { 'libfoo.so': randomBytes(3000), README: 'lib\n' })
  const drv = '/gnu/store/' + '0'.repeat(31) + '1-app-1.0.drv'
  const app = await store.add('app-1.0', { 'app.sh': 'app\n'.repeat(1000) }, [lib], drv)
  // a self-reference, as real outputs often have
  store.paths.get(app)?.references.push(app)
  return { lib, app, drv }
}

test('guix dialect on /gnu/store: guix publish layout and field order, verified signature, every file decompresses to the NAR', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const { lib, app, drv } = await smallClosure(store)
    const key = await readSecretKeyFile(GUIX_KEY)
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', keys: key, compressions: ['zstd', 'lzip', 'none'], host: 'builder-7' })
    assert.equal(cache.dialect, 'guix')
    const entries = await cache.addClosure(store, [app])
    assert.deepEqual(entries.map((e) => e.storePath), [lib, app])
    assert.equal(await readFile(join(tmp, 'cache', 'nix-cache-info'), 'utf8'), 'StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n')

    const trusted = [parsePublicKey(await readFile(GUIX_PUB, 'utf8'))]
    for (const e of entries) {
      const base = e.storePath.slice('/gnu/store/'.length)
      assert.equal(await cache.getNarinfo(e.hashPart), e.narinfo)
      assert.equal(await readFile(join(tmp, 'cache', `${e.hashPart}.narinfo`), 'utf8'), e.narinfo)
      const v = verifyNarinfo(e.narinfo, trusted)
      assert.equal(v.ok, true, JSON.stringify(v))
      assert.equal(v.ok && v.kind === 'guix' ? v.host : '', 'builder-7')
      const fields = e.narinfo.trimEnd().split('\n').map((l) => l.slice(0, l.indexOf(':')))
      const withDeriver = e.storePath === app ? ['Deriver'] : []
      assert.deepEqual(fields, ['StorePath', 'URL', 'Compression', 'FileSize', 'URL', 'Compression', 'FileSize', 'URL', 'Compression', 'FileSize',
        'NarHash', 'NarSize', 'References', ...withDeriver, 'Signature'])
      assert.ok(!/^(FileHash|Sig):/m.test(e.narinfo), 'guix publish writes neither FileHash nor Sig')
      const n = parseNarinfo(e.narinfo)
      const dir = store.paths.get(e.storePath)?.dir ?? ''
      assert.equal(n.narHash, hashPathSync(dir).narHash)
      assert.deepEqual(n.urls.map((u) => u.url), [`nar/zstd/${base}`, `nar/lzip/${base}`, `nar/${base}`])
      for (const f of e.files) {
        assert.equal((await stat(join(tmp, 'cache', f.url))).size, f.fileSize)
        assert.equal(await cache.statFile(f.url), f.fileSize)
        assert.equal((await verifyFile(n, f.compression, join(tmp, 'cache', f.url))).narHash, n.narHash)
      }
    }
    const appInfo = parseNarinfo(entries[1].narinfo)
    assert.equal(appInfo.deriver, drv.slice('/gnu/store/'.length))
    assert.deepEqual(appInfo.references, [lib, app].map((p) => p.slice('/gnu/store/'.length)).sort())
  })
})

test('nix dialect with NodeKeys signs Sig: with the node key; several URL groups, FileHash of each file', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'), '/nix/store')
    const p = await store.add('hello', { hello: 'hello\n' })
    const keys = await generateKeys(join(tmp, 'keys'), { name: 'node-test-1' })
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/nix/store', keys, compressions: ['xz', 'zstd'] })
    assert.equal(cache.dialect, 'nix')
    const e = await cache.addFromStore(store, p)
    const v = verifyNarinfo(e.narinfo, [keys.nix.publicKey])
    assert.equal(v.ok && v.kind === 'nix' ? v.keyId : '', 'node-test-1')
    assert.equal(verifyNarinfo(e.narinfo, [keys.guix.publicKey]).ok, false)
    const n = parseNarinfo(e.narinfo, { storeDir: '/nix/store' })
    // Nix takes the LAST group: it must be one it decodes (zstd is, through libarchive)
    assert.deepEqual(n.urls.map((u) => u.compression), ['xz', 'zstd'])
    for (const u of n.urls) {
      const bytes = await readFile(join(tmp, 'cache', u.url))
      assert.equal(u.fileHash, `sha256:${encodeNixBase32(createHash('sha256').update(bytes).digest())}`)
    }
    assert.equal(await readFile(join(tmp, 'cache', 'nix-cache-info'), 'utf8'), 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 100\n')
  })
})

test('uncompressedBelow: a NAR under the limit is kept uncompressed only; a larger one gets every configured compression', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'), '/nix/store')
    const tiny = await store.add('tiny', { f: 'tiny\n' })
    const big = await store.add('big', { f: randomBytes(40_000) })
    const keys = await generateKeys(join(tmp, 'keys'), { name: 'node-test-2' })
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/nix/store', keys, compressions: ['zstd', 'gzip'], uncompressedBelow: 16 * 1024 })
    const t = parseNarinfo((await cache.addFromStore(store, tiny)).narinfo, { storeDir: '/nix/store' })
    assert.deepEqual(t.urls.map((u) => u.compression), ['none'])
    assert.equal(t.urls[0].fileSize, t.narSize, 'the file is the NAR itself')
    await verifyFile(t, 'none', join(tmp, 'cache', t.urls[0].url))
    assert.equal(verifyNarinfo((await cache.getNarinfo(tiny.slice(11, 43)))!, [keys.nix.publicKey]).ok, true, 'signed like any other')
    const b = parseNarinfo((await cache.addFromStore(store, big)).narinfo, { storeDir: '/nix/store' })
    assert.deepEqual(b.urls.map((u) => u.compression), ['zstd', 'gzip'])
  })
})

test('adding is idempotent, and concurrent adds of one path export it once', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const { app } = await smallClosure(store)
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', compressions: ['gzip'] })
    const [a, b, c] = await Promise.all([cache.addFromStore(store, app), cache.addFromStore(store, app), cache.addFromStore(store, app)])
    assert.equal(store.exports, 1)
    assert.deepEqual(a, b)
    assert.deepEqual(a, c)
    const again = await cache.addClosure(store, [app])
    assert.equal(store.exports, 2, 'only the missing reference is exported')
    assert.deepEqual(again[1], a)
    // a fresh instance over the same directory sees the same entries without exporting
    const reopened = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', compressions: ['gzip'] })
    assert.deepEqual(await reopened.addFromStore(store, app), a)
    assert.equal(store.exports, 2)
    assert.equal(a.narinfo.includes('Signature:'), false, 'no key: unsigned')
  })
})

test('files and narinfos appear whole and in order: no partial file, no narinfo before its NARs', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const big = await store.add('big', { blob: randomBytes(24 << 20), small: 'x' })
    const root = join(tmp, 'cache')
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['zstd', 'gzip', 'none'] })
    await cache.start()
    const seen: Array<Map<string, number>> = []
    let done = false
    const watching = (async () => {
      while (!done) {
        seen.push(await visibleFiles(root))
        await new Promise((resolve) => setImmediate(resolve))
      }
    })()
    let entry: CacheEntry
    try {
      entry = await cache.addFromStore(store, big)
    } finally {
      done = true
      await watching
    }
    assert.ok(seen.length > 3, `the watcher looked ${seen.length} times`)
    const final = new Map(entry.files.map((f) => [f.url, f.fileSize]))
    const narinfo = `${entry.hashPart}.narinfo`
    for (const snapshot of seen) {
      for (const [rel, size] of snapshot) {
        if (rel === 'nix-cache-info') continue
        if (rel === narinfo) {
          assert.equal(size, Buffer.byteLength(entry.narinfo), 'narinfo seen partial')
          // visibleFiles lists the narinfo after stat-ing, so check its NARs in the same snapshot
          for (const [url, s] of final) assert.equal(snapshot.get(url), s, `narinfo visible while ${url} was not complete`)
        } else {
          assert.equal(size, final.get(rel), `${rel} seen at ${size} bytes`)
        }
      }
    }
    assert.deepEqual(await readdir(join(root, '.guix-swarm', 'tmp')), [])
  })
})

test('an export that breaks half-way or does not match the daemon leaves nothing behind, and a retry works', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const p = await store.add('flaky', { blob: randomBytes(6 << 20) })
    const root = join(tmp, 'cache')
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['zstd', 'none'] })
    store.fault = 'break-midway'
    await assert.rejects(cache.addFromStore(store, p), /daemon went away mid-NAR/)
    assert.deepEqual([...(await visibleFiles(root)).keys()], ['nix-cache-info'])
    assert.deepEqual(await readdir(join(root, '.guix-swarm', 'tmp')), [])
    store.fault = 'lie'
    await assert.rejects(cache.addFromStore(store, p), CacheExportMismatchError)
    assert.deepEqual([...(await visibleFiles(root)).keys()], ['nix-cache-info'])
    assert.deepEqual(await readdir(join(root, '.guix-swarm', 'tmp')), [])
    assert.equal(await cache.has(p.slice(11, 43)), false)
    store.fault = 'none'
    const e = await cache.addFromStore(store, p)
    assert.equal(await cache.has(e.hashPart), true)
    await assert.rejects(cache.addFromStore(store, '/nix/store/' + p.slice(11)), CacheStorePathError)
  })
})

test('a small NAR (kept uncompressed, written whole) that breaks or does not match the daemon leaves nothing behind', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const p = await store.add('small', { data: randomBytes(3000) })
    const root = join(tmp, 'cache')
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['zstd'], uncompressedBelow: 16 * 1024 })
    for (const [fault, error] of [['break-midway', /daemon went away mid-NAR/], ['lie', CacheExportMismatchError], ['lie-short', CacheExportMismatchError]] as const) {
      store.fault = fault
      await assert.rejects(cache.addFromStore(store, p), error, `${fault}: refused`)
      assert.deepEqual([...(await visibleFiles(root)).keys()], ['nix-cache-info'], `${fault}: nothing visible`)
      assert.deepEqual(await readdir(join(root, '.guix-swarm', 'tmp')), [], `${fault}: no temp file left`)
    }
    store.fault = 'none'
    const e = await cache.addFromStore(store, p)
    assert.deepEqual(e.files.map((f) => f.compression), ['none'], 'kept uncompressed')
    assert.equal(e.files[0].fileSize, e.narSize, 'the file is the NAR')
    const text = await cache.getNarinfo(e.hashPart)
    assert.match(text ?? '', new RegExp(`FileSize: ${e.narSize}\n`), 'the narinfo gives the file\'s size')
  })
})

/** A builder's cache entry copied out as a peer would hand it over: narinfo text plus temp files. */
async function peerEntry (tmp: string): Promise<{ entry: CacheEntry, text: string, temps: Map<string, string>, source: BinaryCache }> {
  const store = new DirStore(join(tmp, 'store'))
  const p = await store.add('peer', { data: randomBytes(200_000), note: 'n\n' })
  const source = new BinaryCache({ dir: join(tmp, 'source'), storeDir: '/gnu/store', keys: await readSecretKeyFile(GUIX_KEY), compressions: ['zstd', 'none'] })
  const entry = await source.addFromStore(store, p)
  const temps = new Map<string, string>()
  for (const f of entry.files) {
    const t = join(tmp, `incoming-${f.compression}-${randomBytes(4).toString('hex')}`)
    await copyFile(join(tmp, 'source', f.url), t)
    temps.set(f.compression, t)
  }
  return { entry, text: entry.narinfo, temps, source }
}

test('addVerified moves verified files in and keeps the narinfo byte for byte', async () => {
  await withTemp(async (tmp) => {
    const { entry, text, temps } = await peerEntry(tmp)
    const mirror = new BinaryCache({ dir: join(tmp, 'mirror'), storeDir: '/gnu/store' })
    const got = await mirror.addVerified({ narinfoText: text, files: [...temps].map(([compression, tempPath]) => ({ compression, tempPath })) })
    assert.deepEqual(got, entry)
    assert.equal(await mirror.getNarinfo(entry.hashPart), text)
    for (const t of temps.values()) await assert.rejects(stat(t), { code: 'ENOENT' }, 'moved, not copied')
    for (const f of entry.files) assert.equal(await mirror.statFile(f.url), f.fileSize)
    assert.equal(verifyNarinfo(text, [parsePublicKey(await readFile(GUIX_PUB, 'utf8'))]).ok, true)
    assert.equal((await mirror.getRecord(entry.hashPart))?.source, 'verified')
    assert.equal((await mirror.getRecord(entry.hashPart))?.signature, 'guix')
  })
})

test('addVerified and verifyFile reject corrupted, truncated or missing files, and nothing becomes visible', async () => {
  await withTemp(async (tmp) => {
    const { entry, text, temps } = await peerEntry(tmp)
    const root = join(tmp, 'mirror')
    const mirror = new BinaryCache({ dir: root, storeDir: '/gnu/store' })
    const n = parseNarinfo(text)
    const files = (): Array<{ compression: string, tempPath: string }> => [...temps].map(([compression, tempPath]) => ({ compression, tempPath }))

    // one flipped byte in the middle of the uncompressed NAR: right size, wrong hash
    const none = temps.get('none') ?? ''
    const good = await readFile(none)
    const bad = Buffer.from(good)
    bad[bad.length >> 1] ^= 0xff
    await writeFile(none, bad)
    await assert.rejects(verifyFile(n, 'none', none), CacheNarHashMismatchError)
    await assert.rejects(mirror.addVerified({ narinfoText: text, files: files() }), CacheNarHashMismatchError)
    await writeFile(none, good)

    // a flipped byte inside the zstd frame: zstd's own checks or the NAR hash catch it
    const zst = temps.get('zstd') ?? ''
    const zgood = await readFile(zst)
    const zbad = Buffer.from(zgood)
    zbad[zbad.length >> 1] ^= 0x55
    await writeFile(zst, zbad)
    await assert.rejects(verifyFile(n, 'zstd', zst), (err: Error) => err instanceof CacheFileCorruptError || err instanceof CacheNarHashMismatchError)
    await assert.rejects(mirror.addVerified({ narinfoText: text, files: files() }), (err: Error) => err instanceof CacheFileCorruptError || err instanceof CacheNarHashMismatchError)

    // truncated: FileSize says otherwise
    await writeFile(zst, zgood)
    await truncate(zst, zgood.length - 10)
    await assert.rejects(verifyFile(n, 'zstd', zst), CacheFileSizeMismatchError)
    await assert.rejects(mirror.addVerified({ narinfoText: text, files: files() }), CacheFileSizeMismatchError)
    // without FileSize the decompressor notices the truncation
    const noSize = { ...n, urls: n.urls.map(({ fileSize: _f, ...u }) => u) }
    await assert.rejects(verifyFile(noSize, 'zstd', zst), CacheFileCorruptError)
    await writeFile(zst, zgood)

    // NarSize lies
    await assert.rejects(verifyFile({ ...n, narSize: n.narSize + 8 }, 'none', none), CacheNarSizeMismatchError)
    // a URL without a file, a file without a URL, a narinfo for another store
    await assert.rejects(mirror.addVerified({ narinfoText: text, files: files().filter((f) => f.compression === 'zstd') }), CacheMissingFileError)
    await assert.rejects(mirror.addVerified({ narinfoText: text, files: [...files(), { compression: 'xz', tempPath: none }] }), CacheMissingFileError)
    await assert.rejects(mirror.addVerified({ narinfoText: text.replaceAll('/gnu/store/', '/nix/store/'), files: files() }), CacheNarinfoError)
    await assert.rejects(mirror.addVerified({ narinfoText: text.replace(/^URL: nar\//m, 'URL: nar/../../'), files: files() }), CacheBadUrlPathError)

    assert.equal(await mirror.has(entry.hashPart), false)
    assert.deepEqual([...(await visibleFiles(root)).keys()].filter((f) => f !== 'nix-cache-info'), [])
    // the caller's files are untouched by a refusal, and good ones then go in
    await mirror.addVerified({ narinfoText: text, files: files() })
    assert.equal(await mirror.has(entry.hashPart), true)
  })
})

test('serving: ranges, sizes, refusals outside the served set; remove, touch, list, totalSize', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const { lib, app } = await smallClosure(store)
    let clock = 1_000
    const root = join(tmp, 'cache')
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['none', 'gzip'], now: () => clock })
    const [libE, appE] = await cache.addClosure(store, [app])
    const url = appE.files[0].url
    const whole = await readFile(join(root, url))
    const ranged = Buffer.concat(await (await cache.openFile(url, { start: 10, end: 99 })).toArray() as Buffer[])
    assert.deepEqual(ranged, whole.subarray(10, 100))
    assert.deepEqual(Buffer.concat(await (await cache.openFile('/' + url)).toArray() as Buffer[]), whole)
    assert.equal(await cache.statFile('nix-cache-info'), Buffer.byteLength(cache.nixCacheInfo()))
    assert.equal(await cache.statFile(`${appE.hashPart}.narinfo`), Buffer.byteLength(appE.narinfo))
    assert.equal(await cache.statFile('nar/gzip/' + '0'.repeat(32) + '-nothing'), undefined)
    await assert.rejects(cache.openFile('nar/gzip/' + '0'.repeat(32) + '-nothing'), CacheNotFoundError)
    for (const bad of ['../etc/passwd', 'nar/../../etc/passwd', '.guix-swarm/index/x.json', 'nar/.hidden', 'index.html', 'nar//x']) {
      await assert.rejects(cache.statFile(bad), CacheBadUrlPathError, bad)
      await assert.rejects(cache.openFile(bad), CacheBadUrlPathError, bad)
    }

    assert.deepEqual((await cache.list()).map((e) => e.storePath), [lib, app].sort())
    const onDisk = [...(await visibleFiles(root))].filter(([f]) => f !== 'nix-cache-info').reduce((s, [, n]) => s + n, 0)
    assert.equal(await cache.totalSize(), onDisk)

    assert.equal((await cache.getRecord(libE.hashPart))?.addedAt, 1_000)
    assert.equal((await cache.getRecord(libE.hashPart))?.lastServedAt, undefined)
    clock = 5_000
    await cache.touch(libE.hashPart)
    assert.equal((await cache.getRecord(libE.hashPart))?.lastServedAt, 5_000)

    assert.equal(await cache.remove(appE.hashPart), true)
    assert.equal(await cache.remove(appE.hashPart), false)
    assert.equal(await cache.has(appE.hashPart), false)
    assert.equal(await cache.getEntry(appE.hashPart), undefined)
    for (const f of appE.files) assert.equal(await cache.statFile(f.url), undefined)
    assert.deepEqual((await cache.list()).map((e) => e.storePath), [lib])
    assert.equal(await cache.getNarinfo('not-a-hash'), undefined)
  })
})

test('an index lost or never written (a narinfo put there by another tool) is rebuilt from the narinfo', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const p = await store.add('orphan', { f: 'orphan\n' })
    const root = join(tmp, 'cache')
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['gzip'] })
    const e = await cache.addFromStore(store, p)
    await rm(join(root, '.guix-swarm', 'index'), { recursive: true })
    assert.deepEqual(await cache.getEntry(e.hashPart), e)
    assert.equal((await cache.getRecord(e.hashPart))?.narSize, e.narSize)
    // index records are not fsynced: a crash can leave one empty, which is rebuilt the same way
    await writeFile(join(root, '.guix-swarm', 'index', `${e.hashPart}.json`), '')
    assert.deepEqual(await cache.getEntry(e.hashPart), e)
  })
})

test('a compressor that dies mid-export fails the add with its own error and leaves nothing behind', { timeout: 30_000 }, async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const p = await store.add('big', { blob: randomBytes(8 << 20) })
    const root = join(tmp, 'cache')
    // zstd refuses '--5' (level -5) at once, while gzip and the NAR stream are still going
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['gzip', 'zstd'], compressOptions: { zstd: { level: -5 } } })
    await assert.rejects(cache.addFromStore(store, p), (err: Error) => err.name === 'CompressionToolFailedError' || err.name === 'CacheSinkClosedError')
    assert.deepEqual([...(await visibleFiles(root)).keys()], ['nix-cache-info'])
    assert.deepEqual(await readdir(join(root, '.guix-swarm', 'tmp')), [])
    assert.equal(await cache.has(p.slice(11, 43)), false)
  })
})

test('start() sweeps temp files abandoned for over a day and keeps recent ones (another writer may own them)', async () => {
  await withTemp(async (tmp) => {
    const root = join(tmp, 'cache')
    await new BinaryCache({ dir: root, storeDir: '/gnu/store' }).start()
    const old = join(root, '.guix-swarm', 'tmp', 'old.part')
    const fresh = join(root, '.guix-swarm', 'tmp', 'fresh.part')
    await writeFile(old, 'x')
    await writeFile(fresh, 'y')
    const twoDaysAgo = new Date(Date.now() - 48 * 3600 * 1000)
    await utimes(old, twoDaysAgo, twoDaysAgo)
    await new BinaryCache({ dir: root, storeDir: '/gnu/store' }).start()
    assert.deepEqual(await readdir(join(root, '.guix-swarm', 'tmp')), ['fresh.part'])
    // and one directory never serves two stores
    await assert.rejects(new BinaryCache({ dir: root, storeDir: '/nix/store' }).start(), CacheStoreDirMismatchError)
  })
})
