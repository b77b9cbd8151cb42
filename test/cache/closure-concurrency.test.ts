// addClosure exports several paths at once (issue 5) but a narinfo never appears before those
// of its references, a failure publishes no referrer, and overlapping closures added at once
// all finish.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { BinaryCache } from '../../src/cache/index.js'
import { parseNarinfo } from '../../src/narinfo/index.js'
import { DirStore, withTemp } from './dir-store.js'

const hashPart = (p: string): string => p.slice('/gnu/store/'.length, '/gnu/store/'.length + 32)

test('while a reference is held back, unrelated paths go in but its referrer waits; entries come back in closure order', { timeout: 30_000 }, async () => {
  await withTemp(async (tmp) => {
    // hashes are random: draw until the closure order is lib, the others, app, so that the
    // others can only go in while lib is held if a second worker runs beside lib's
    let store: DirStore, lib: string, app: string, others: string[]
    for (let k = 0; ; k++) {
      store = new DirStore(join(tmp, `store-${k}`))
      lib = await store.add('lib', { 'lib.so': randomBytes(2000) })
      app = await store.add('app', { bin: 'app' }, [lib])
      others = await Promise.all([1, 2, 3].map(async (i) => await store.add(`other-${i}`, { f: String(i) })))
      const order = await store.queryRequisites([app, ...others])
      if (order[0] === lib && order[order.length - 1] === app) break
    }
    let release = (): void => {}
    const held = new Promise<void>((resolve) => { release = resolve })
    let libAsked = (): void => {}
    const libStarted = new Promise<void>((resolve) => { libAsked = resolve })
    store.gate = async (p) => { if (p === lib) { libAsked(); await held } }
    const root = join(tmp, 'cache')
    const cache = new BinaryCache({ dir: root, storeDir: '/gnu/store', compressions: ['zstd'] })
    const progress: string[] = []
    const adding = cache.addClosure(store, [app, ...others], { concurrency: 2, onProgress: (_d, _t, e) => progress.push(e.storePath) })
    await libStarted
    // the other worker carries on with what does not need lib
    for (const o of others) while (!await cache.has(hashPart(o))) await new Promise((resolve) => setImmediate(resolve))
    assert.equal(await cache.has(hashPart(app)), false, 'app is not published before lib')
    assert.equal(await cache.has(hashPart(lib)), false)
    release()
    const entries = await adding
    const order = await store.queryRequisites([app, ...others])
    assert.deepEqual(entries.map((e) => e.storePath), order)
    assert.ok(progress.indexOf(lib) < progress.indexOf(app), 'progress reports lib before app')
  })
})

test('a reference that fails: its referrer is not published, the error is the reference\'s, nothing is left writing', async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const lib = await store.add('lib', { 'lib.so': randomBytes(2000) })
    const app = await store.add('app', { bin: 'app' }, [lib])
    store.gate = async (p) => { if (p === lib) throw new Error('daemon refused lib') }
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', compressions: ['zstd'] })
    await assert.rejects(cache.addClosure(store, [app], { concurrency: 2 }), /daemon refused lib/)
    assert.deepEqual(await cache.list(), [])
  })
})

test('overlapping closures added at once all finish; every narinfo\'s references are in the cache', { timeout: 60_000 }, async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    // a random DAG: each path references some earlier ones
    const paths: string[] = []
    for (let i = 0; i < 16; i++) {
      const refs = paths.filter(() => Math.random() < 0.3)
      paths.push(await store.add(`p${i}`, { f: randomBytes(64) }, refs))
    }
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', compressions: ['zstd'] })
    const picks = Array.from({ length: 6 }, () => paths.filter(() => Math.random() < 0.4))
    picks.push([paths[15]], [paths[0], paths[7]])
    const results = await Promise.all(picks.filter((p) => p.length > 0).map(async (p) => await cache.addClosure(store, p, { concurrency: 3 })))
    for (const r of results) {
      for (const e of r) {
        for (const ref of parseNarinfo(e.narinfo).references) assert.ok(await cache.has(ref.slice(0, 32)), `${e.storePath} references ${ref}, which is in the cache`)
      }
    }
    const exported = store.exports
    assert.ok(exported <= paths.length, `each path exported once at most (${exported} exports for ${paths.length} paths)`)
  })
})

test('small paths go in several at once; paths to compress take one compressor slot per core', { timeout: 30_000 }, async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const large = await Promise.all(Array.from({ length: 6 }, async (_, i) => await store.add(`large-${i}`, { f: randomBytes(4000) })))
    const small = await Promise.all(Array.from({ length: 6 }, async (_, i) => await store.add(`small-${i}`, { f: String(i) })))
    const running = { large: 0, small: 0 }
    const most = { large: 0, small: 0 }
    // each export waits (at most a second) for as many of its kind as the assertions below look
    // for: a fixed 30 ms let a loaded machine (two test files at once) start them one by one
    const wanted = { large: 2, small: availableParallelism() + 1 }
    store.gate = async (p) => {
      const kind = large.includes(p) ? 'large' : 'small'
      running[kind]++
      most[kind] = Math.max(most[kind], running[kind])
      const until = Date.now() + 1000
      while (most[kind] < wanted[kind] && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10)) // overlap, if the cache lets them
      running[kind]--
    }
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', compressions: ['zstd'], uncompressedBelow: 2000 })
    const entries = await cache.addClosure(store, [...large, ...small])
    assert.equal(entries.length, 12, 'every path went in')
    assert.ok(most.large <= availableParallelism(), `at most one compressing path per core (${most.large})`)
    assert.ok(most.large >= 2 || availableParallelism() === 1, `compressing paths overlap up to the cores (${most.large})`)
    assert.ok(most.small > availableParallelism(), `small paths are not held to the compressor slots (${most.small} at once)`)
  })
})

test('referrers that finish compressing first do not hold the compressor slots their reference needs', { timeout: 30_000 }, async () => {
  await withTemp(async (tmp) => {
    const store = new DirStore(join(tmp, 'store'))
    const lib = await store.add('lib', { f: randomBytes(4000) })
    const apps = await Promise.all(Array.from({ length: availableParallelism() }, async (_, i) => await store.add(`app-${i}`, { f: randomBytes(4000) }, [lib])))
    // lib is slow to describe, so every referrer takes a compressor slot before it does
    const query = store.queryPathInfo.bind(store)
    store.queryPathInfo = async (p) => {
      if (p === lib) await new Promise((resolve) => setTimeout(resolve, 200))
      return await query(p)
    }
    const cache = new BinaryCache({ dir: join(tmp, 'cache'), storeDir: '/gnu/store', compressions: ['zstd'], uncompressedBelow: 2000 })
    const entries = await cache.addClosure(store, apps)
    assert.deepEqual(entries.map((e) => e.storePath).sort(), [lib, ...apps].sort(), 'the whole closure went in')
  })
})
