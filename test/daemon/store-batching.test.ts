// Fewer store processes (issue 5): path infos asked once for many paths and remembered, closures
// from known infos, NARs packed in this process from the store's files and checked against the
// registered narHash; the dump process stays the fallback. Real nix-store in a private /nix.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { nixStore, type CliStore, type ProcessRunner } from '../../src/daemon/index.js'
import { BinaryCache } from '../../src/cache/index.js'
import { nixSkip } from '../helpers/nix.js'
import { builtChain as builtChainIn, instantiate as instantiateIn, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

const skip = nixSkip()
let ns: NixNamespace

before(async () => { if (skip === false) ns = await nixNamespace() })
after(async () => { await ns?.destroy() })

const nonce = (): string => randomBytes(6).toString('hex')

/**
 * A store client that records the argv of every process it starts. One process per question is
 * what these tests count, so the long-lived connection stays off (test/daemon/serve.test.ts
 * covers it); processes remain the fallback and Guix's way.
 */
function counted (opts: { realStoreDir?: string, packInProcess?: boolean, trustLocalAbsence?: boolean | 'learn' } = {}): { store: CliStore, calls: string[][] } {
  const calls: string[][] = []
  const runner: ProcessRunner = { start: (c, a, o) => { calls.push([c, ...a]); return ns.runner.start(c, a, o) } }
  return { store: nixStore({ runner, env: ns.env, realStoreDir: opts.realStoreDir ?? ns.realStoreDir, packInProcess: opts.packInProcess, trustLocalAbsence: opts.trustLocalAbsence, serve: false }), calls }
}

const verb = (call: string[]): string => call[1]

const instantiate = async (expr: string): Promise<string[]> => await instantiateIn(ns, expr)

const drvExpr = (name: string, script: string): string =>
  `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }`

const builtChain = async (): Promise<string[]> => await builtChainIn(ns)

async function nixDump (path: string): Promise<Buffer> {
  const r = await ns.exec('nix-store', ['--dump', path])
  assert.equal(r.code, 0, r.stderr.toString())
  return r.stdout
}

test('the closure of 40 fresh .drv files costs one store process, and their NARs none: byte for byte nix-store --dump', { skip }, async () => {
  const n = nonce()
  const drvs = await instantiate(`[ ${Array.from({ length: 40 }, (_, i) => `(${drvExpr(`d${i}-${n}`, `echo ${i} > $out`)})`).join(' ')} ]`)
  const { store, calls } = counted()
  const order = await store.queryRequisites(drvs)
  assert.deepEqual([...order].sort(), [...drvs].sort())
  assert.deepEqual(calls.map(verb), ['--dump-db'], 'one --dump-db for all 40 paths, no --requisites')
  for (const d of drvs.slice(0, 10)) {
    const { info, nar } = await store.exportPath(d)
    assert.deepEqual(await buffer(nar), await nixDump(d), `${d}: our NAR is nix-store --dump's`)
    assert.equal(info.path, d)
  }
  assert.equal(calls.length, 1, `no process after the first query: ${calls.map(verb).join(' ')}`)
  // asked again: remembered
  await store.queryPathInfos(drvs)
  assert.equal(calls.length, 1, 'infos are remembered')
})

test('a closure that is not known yet is asked for (requisites + infos), in reference order, with the same infos as a fresh client', { skip }, async () => {
  const [top, mid, bottom] = await builtChain()
  const { store, calls } = counted()
  const order = await store.queryRequisites([top])
  assert.deepEqual(order, [bottom, mid, top])
  assert.deepEqual(calls.map(verb), ['--dump-db', '--query', '--dump-db'])
  assert.ok(calls[2].includes(bottom) && !calls[2].includes(top), 'the second --dump-db asks only for what the first did not answer')
  // all known now: no process at all, same answer
  assert.deepEqual(await store.queryRequisites([top]), order)
  assert.equal(calls.length, 3)
  const fresh = counted().store
  assert.deepEqual(await store.queryPathInfos(order), await fresh.queryPathInfos(order))
  // every kind of file (executable, symlink, directory, plain root file) packs like nix-store --dump
  for (const p of order) assert.deepEqual(await buffer((await store.exportPath(p)).nar), await nixDump(p), p)
  assert.equal(calls.length, 3)
})

test('packInProcess: false, or a store this process does not see, uses nix-store --dump; same bytes', { skip }, async () => {
  const [top] = await builtChain()
  const forced = counted({ packInProcess: false })
  const a = await forced.store.exportPath(top)
  assert.deepEqual(await buffer(a.nar), await nixDump(top))
  assert.ok(forced.calls.some((c) => c.includes('--dump')), 'the dump process ran')

  const empty = await mkdtemp(join(tmpdir(), 'guix-swarm-notstore-'))
  try {
    const blind = counted({ realStoreDir: empty })
    const b = await blind.store.exportPath(top)
    assert.deepEqual(await buffer(b.nar), await nixDump(top))
    assert.ok(blind.calls.some((c) => c.includes('--dump')), 'fell back to the dump process')
  } finally {
    await rm(empty, { recursive: true, force: true })
  }
})

test('a store path whose files no longer match its registered narHash: the NAR stream fails with NarHashMismatchError and the cache publishes nothing', { skip }, async () => {
  const [top, mid, bottom] = await builtChain()
  const { store } = counted()
  await store.queryPathInfos([top, mid])
  // tamper with the store behind Nix's back (root can)
  const file = join(ns.realStoreDir, mid.slice('/nix/store/'.length), 'ref')
  await chmod(file, 0o644)
  await writeFile(file, 'tampered\n')
  const { nar } = await store.exportPath(mid)
  await assert.rejects(buffer(nar as Readable), { name: 'NarHashMismatchError' })

  const dir = await mkdtemp(join(tmpdir(), 'guix-swarm-cache-'))
  try {
    const cache = new BinaryCache({ dir, storeDir: '/nix/store', compressions: ['zstd'] })
    await assert.rejects(cache.addClosure(store, [top]), { name: 'NarHashMismatchError' })
    assert.equal(await cache.has(mid.slice('/nix/store/'.length, '/nix/store/'.length + 32)), false)
    assert.equal(await cache.has(top.slice('/nix/store/'.length, '/nix/store/'.length + 32)), false, 'no referrer published over a missing reference')
    assert.deepEqual((await cache.list()).map((e) => e.storePath), [bottom], 'only the untouched reference')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('importPath remembers what it registered: the info a fresh client reads from the store', { skip }, async () => {
  const [top, mid, bottom] = await builtChain()
  const to = await nixNamespace()
  try {
    const { store: from } = counted()
    const calls: string[][] = []
    const runner: ProcessRunner = { start: (c, a, o) => { calls.push([c, ...a]); return to.runner.start(c, a, o) } }
    const dest = nixStore({ runner, env: to.env, realStoreDir: to.realStoreDir, serve: false })
    for (const p of [bottom, mid, top]) {
      const { info, nar } = await from.exportPath(p)
      await dest.importPath({ storePath: p, ...info }, nar)
    }
    const before = calls.length
    const remembered = await dest.queryPathInfos([bottom, mid, top])
    assert.equal(calls.length, before, 'no query after the imports')
    const fresh = nixStore({ runner: to.runner, env: to.env, realStoreDir: to.realStoreDir })
    assert.deepEqual(remembered, await fresh.queryPathInfos([bottom, mid, top]))
  } finally {
    await to.destroy()
  }
})

test('validity: once a valid path was found under realStoreDir, paths missing there are invalid without asking; a blind view asks, but remembers what is valid', { skip }, async () => {
  const [top, mid] = await builtChain()
  const absent = `/nix/store/${'2'.repeat(32)}-absent`
  const { store, calls } = counted()
  assert.deepEqual(await store.filterInvalid([top, absent]), [absent]) // learns: top is valid and on disk
  const before = calls.length
  assert.deepEqual(await store.filterInvalid([absent]), [absent])
  assert.equal(await store.isValid(absent), false)
  assert.equal(calls.length, before, 'no process for paths missing on disk')
  assert.deepEqual(await store.filterInvalid([mid, absent, top]), [absent])
  assert.equal(calls.length, before + 1)
  assert.ok(!calls[calls.length - 1].includes(absent), 'only the paths on disk are asked about')

  const empty = await mkdtemp(join(tmpdir(), 'guix-swarm-notstore-'))
  try {
    const blind = counted({ realStoreDir: empty })
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(await blind.store.filterInvalid([top, absent]), [absent])
      assert.equal(await blind.store.isValid(top), true, 'a valid path this process cannot see is still valid')
    }
    assert.equal(blind.calls.length, 2, 'every question about a path not yet seen valid went to the store (absent both times, top once)')
    assert.ok(blind.calls.every((c) => c.includes(absent)), 'the path missing from the view was asked about each time')
  } finally {
    await rm(empty, { recursive: true, force: true })
  }
})

test('trustLocalAbsence true (a plain local store): paths missing on disk are invalid from the first question, present ones are still asked', { skip }, async () => {
  const [top] = await builtChain()
  const absent = `/nix/store/${'3'.repeat(32)}-absent`
  const { store, calls } = counted({ trustLocalAbsence: true })
  assert.deepEqual(await store.filterInvalid([absent]), [absent])
  assert.equal(await store.isValid(absent), false)
  assert.equal(calls.length, 0, 'no process before any valid path was seen')
  // a file on disk whose path the store never registered is asked about, and found invalid
  const stray = `/nix/store/${'4'.repeat(32)}-stray`
  await writeFile(join(ns.realStoreDir, stray.slice('/nix/store/'.length)), 'not registered')
  assert.deepEqual(await store.filterInvalid([top, stray, absent]), [stray, absent])
  assert.equal(calls.length, 1, 'one process for the paths on disk')
  assert.ok(!calls[0].includes(absent) && calls[0].includes(stray), 'only the paths on disk are asked about')
  const learning = counted({ trustLocalAbsence: 'learn' })
  assert.deepEqual(await learning.store.filterInvalid([absent]), [absent])
  assert.equal(learning.calls.length, 1, 'the default asks until it has seen a valid path on disk')
})

test('queries made at the same moment share one store process; an invalid path fails only the caller that asked for it', { skip }, async () => {
  const [top, mid, leaf] = await builtChain()
  const absent = `/nix/store/${'3'.repeat(32)}-absent`
  const { store, calls } = counted({ realStoreDir: '/nonexistent-view' })
  const [v1, v2] = await Promise.all([store.filterInvalid([top]), store.filterInvalid([mid, absent])])
  assert.deepEqual([v1, v2], [[], [absent]])
  assert.equal(calls.filter((c) => c.includes('--check-validity')).length, 1, 'one validity process for both callers')
  const before = calls.length
  const [infos, missing] = await Promise.allSettled([store.queryPathInfos([top, mid]), store.queryPathInfos([leaf, absent])])
  assert.equal(infos.status, 'fulfilled')
  assert.deepEqual(infos.status === 'fulfilled' ? infos.value.map((i) => i.path) : [], [top, mid])
  assert.equal(missing.status, 'rejected')
  assert.equal(missing.status === 'rejected' ? (missing.reason as Error).name : '', 'PathNotValidError')
  assert.ok(calls.length - before <= 3, `one merged query, then a validity check and the valid ones again: ${calls.length - before}`)
  // what a merged query learned is remembered: a path with known info is valid without asking
  const now = calls.length
  assert.deepEqual(await store.filterInvalid([top, mid, leaf]), [])
  assert.equal(calls.length, now)
})
