// Moving paths between three separate Nix stores as NAR + metadata, through files as the network would.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { openBackend, MissingReferencesError, NarHashMismatchError, PathNotValidError, type Backend, type PathInfo } from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

const skip = nixSkip()
const nodes: Array<{ ns: NixNamespace, nix: Backend }> = []
let wire: string

before(async () => {
  if (skip !== false) return
  wire = await mkdtemp(join(tmpdir(), 'guix-swarm-wire-'))
  for (let i = 0; i < 3; i++) {
    const ns = await nixNamespace()
    nodes.push({ ns, nix: await openBackend('nix', { runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir }) })
  }
})
after(async () => {
  for (const n of nodes) await n.ns.destroy()
  if (wire !== undefined) await rm(wire, { recursive: true, force: true })
})

const never = new AbortController().signal

/** Send the closure of `roots` from one store to another, each NAR through a file; returns what was sent. */
async function transfer (from: Backend, to: Backend, roots: string[]): Promise<PathInfo[]> {
  const sent: PathInfo[] = []
  for (const path of await from.store.queryRequisites(roots)) {
    const { info, nar } = await from.store.exportPath(path)
    const file = join(wire, randomBytes(8).toString('hex') + '.nar')
    await pipeline(nar, createWriteStream(file))
    // Only the metadata a node can carry over the network goes along.
    const meta = JSON.parse(JSON.stringify({ storePath: info.path, narHash: info.narHash, narSize: info.narSize, references: info.references, deriver: info.deriver }))
    await to.store.importPath(meta, createReadStream(file))
    sent.push(info)
  }
  return sent
}

test('build in A, move the .drv closure to B, build there, move the output to C, verify', { skip, timeout: 60_000 }, async () => {
  const [a, b, c] = nodes
  const n = randomBytes(6).toString('hex')
  const expr = `let
    dep = derivation { name = "dep-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir $out; echo dep ${n} > $out/file" ]; };
  in derivation { name = "top-${n}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; /bin/cat \${dep}/file > $out/copy; /bin/ln -s \${dep} $out/dep" ]; }`
  const f = join(wire, `top-${n}.nix`)
  await writeFile(f, expr)
  const inst = await a.ns.exec('nix-instantiate', [f])
  assert.equal(inst.code, 0, inst.stderr.toString())
  const drv = inst.stdout.toString().trim()

  const built = await a.nix.builder.build(drv, { signal: never, onLog: () => {} })
  assert.equal(built.kind, 'success', JSON.stringify(built))
  const out = built.kind === 'success' ? built.outputs.out : ''

  // B has nothing yet.
  assert.equal(await b.nix.store.isValid(out), false)
  assert.equal(await b.nix.store.isValid(drv), false)
  assert.deepEqual(await b.nix.builder.build(drv, { signal: never, onLog: () => {} }), { kind: 'missing-inputs', missing: [drv] })

  // The .drv closure: top.drv and dep.drv, dependencies first.
  const drvClosure = await transfer(a.nix, b.nix, [drv])
  assert.equal(drvClosure.length, 2)
  assert.equal(drvClosure[1].path, drv)
  assert.equal(await b.nix.store.isValid(drv), true)
  assert.deepEqual(await b.nix.store.readDerivation(drv), await a.nix.store.readDerivation(drv))

  const rebuilt = await b.nix.builder.build(drv, { signal: never, onLog: () => {} })
  assert.deepEqual(rebuilt, built, 'same output path from an independent store')
  assert.deepEqual(await b.nix.store.queryPathInfo(out), await a.nix.store.queryPathInfo(out), 'deterministic: same NAR hash')

  // The output's runtime closure (out refers to dep) to C, which never built anything.
  const outClosure = await transfer(b.nix, c.nix, [out])
  assert.equal(outClosure.length, 2)
  const infoC = await c.nix.store.queryPathInfo(out)
  assert.equal(infoC.narHash, outClosure[1].narHash)
  assert.deepEqual(infoC.references, outClosure[1].references)
  assert.equal(infoC.deriver, drv)
  assert.equal(await c.nix.store.isValid(drv), false, 'C got outputs only')
  const verify = await c.ns.exec('nix-store', ['--verify-path', out])
  assert.equal(verify.code, 0, verify.stderr.toString())
  const verifyDep = await c.ns.exec('nix-store', ['--verify-path', outClosure[0].path])
  assert.equal(verifyDep.code, 0, verifyDep.stderr.toString())
})

/**
 * A fresh trivial derivation built in store A: its .drv and output paths. `withDependency`: the
 * output refers to that of a second derivation built with it (a two-path closure).
 */
async function builtInA (prefix: string, opts: { withDependency?: boolean } = {}): Promise<{ drv: string, out: string, n: string }> {
  const [a] = nodes
  const n = randomBytes(6).toString('hex')
  const f = join(wire, `${prefix}-${n}.nix`)
  const drvOf = (name: string, script: string): string => `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "${script}" ]; }`
  await writeFile(f, opts.withDependency === true
    ? `let d = ${drvOf(`${prefix}-d-${n}`, `echo ${n} > $out`)}; in ${drvOf(`${prefix}-r-${n}`, 'echo ${d} > $out')}`
    : drvOf(`${prefix}-${n}`, `echo ${n} > $out`))
  const drv = (await a.ns.exec('nix-instantiate', [f])).stdout.toString().trim()
  const built = await a.nix.builder.build(drv, { signal: never, onLog: () => {} })
  assert.equal(built.kind, 'success', `${prefix}-${n} was built in A`)
  return { drv, out: built.kind === 'success' ? built.outputs.out : '', n }
}

test('importPath refuses a NAR that does not match, and references that are missing', { skip, timeout: 60_000 }, async () => {
  const [a, b] = nodes
  const { out } = await builtInA('pair', { withDependency: true })
  const info = await a.nix.store.queryPathInfo(out)
  assert.equal(info.references.length, 1)
  const dep = info.references[0]
  const depExport = await a.nix.store.exportPath(dep)
  const depNar = Buffer.concat(await depExport.nar.toArray() as Buffer[])
  const depMeta = { storePath: dep, narHash: depExport.info.narHash, narSize: depExport.info.narSize, references: depExport.info.references }

  // Reference not valid in B yet.
  const outNar = Buffer.concat(await (await a.nix.store.exportPath(out)).nar.toArray() as Buffer[])
  await assert.rejects(b.nix.store.importPath({ storePath: out, narHash: info.narHash, narSize: info.narSize, references: info.references }, Readable.from([outNar])),
    (e: Error) => e instanceof MissingReferencesError && e.missing[0] === dep)

  // One flipped byte, the same length: the hash check stops it before Nix registers anything.
  const bad = Buffer.from(depNar)
  bad[bad.length - 30] ^= 1
  await assert.rejects(b.nix.store.importPath(depMeta, Readable.from([bad])), NarHashMismatchError)
  // Truncated and over-long NARs.
  await assert.rejects(b.nix.store.importPath(depMeta, Readable.from([depNar.subarray(0, depNar.length - 8)])), NarHashMismatchError)
  await assert.rejects(b.nix.store.importPath(depMeta, Readable.from([depNar, Buffer.alloc(8)])), NarHashMismatchError)
  assert.equal(await b.nix.store.isValid(dep), false)
  await assert.rejects(b.nix.store.queryPathInfo(dep), PathNotValidError)

  // The right bytes, in small chunks, with the hash given in hex this time.
  const hex = Buffer.from((await import('../../src/daemon/index.js')).parseSha256(depMeta.narHash)).toString('hex')
  const chunks = Array.from({ length: Math.ceil(depNar.length / 7) }, (_, i) => depNar.subarray(i * 7, i * 7 + 7))
  await b.nix.store.importPath({ ...depMeta, narHash: 'sha256:' + hex }, Readable.from(chunks))
  assert.equal((await b.nix.store.queryPathInfo(dep)).narHash, depMeta.narHash)
  // Importing again is a no-op.
  await b.nix.store.importPath(depMeta, Readable.from([depNar]))
  await b.nix.store.importPath({ storePath: out, narHash: info.narHash, narSize: info.narSize, references: info.references, deriver: info.deriver }, Readable.from([outNar]))
  assert.deepEqual(await b.nix.store.queryPathInfo(out), info)
})

test('our export stream is byte for byte what nix-store --export writes', { skip }, async () => {
  const [a] = nodes
  const { drv, out } = await builtInA('exp')
  for (const path of [drv, out]) {
    const real = await a.ns.exec('nix-store', ['--export', path])
    assert.equal(real.code, 0)
    const { info, nar } = await a.nix.store.exportPath(path)
    const { exportTrailer } = await import('../../src/daemon/index.js')
    const ours = Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), ...(await nar.toArray() as Buffer[]),
      exportTrailer({ storePath: info.path, narHash: info.narHash, narSize: info.narSize, references: info.references, deriver: info.deriver })])
    assert.ok(ours.equals(real.stdout), path)
  }
})

test('importPaths: a closure in one import, references first; a bad NAR in the batch is never registered', { skip, timeout: 60_000 }, async () => {
  const [a, , c] = nodes
  const { out } = await builtInA('batch', { withDependency: true })
  const items = await Promise.all((await a.nix.store.queryRequisites([out])).map(async (p) => {
    const { info, nar } = await a.nix.store.exportPath(p)
    const bytes = Buffer.concat(await nar.toArray() as Buffer[])
    return { info: { storePath: info.path, narHash: info.narHash, narSize: info.narSize, references: info.references }, bytes }
  }))
  assert.equal(items.length, 2)
  const importPaths = c.nix.store.importPaths?.bind(c.nix.store)
  assert.ok(importPaths !== undefined, 'the nix store has the batch import')
  // referrer before its reference: refused before any process starts
  await assert.rejects(importPaths([...items].reverse().map((i) => ({ info: i.info, nar: Readable.from([i.bytes]) }))),
    (e: Error) => e instanceof MissingReferencesError && e.missing[0] === items[0].info.storePath)
  // the second NAR flipped: it is not registered (the first may be)
  const bad = Buffer.from(items[1].bytes)
  bad[bad.length - 30] ^= 1
  await assert.rejects(importPaths([{ info: items[0].info, nar: Readable.from([items[0].bytes]) }, { info: items[1].info, nar: Readable.from([bad]) }]), NarHashMismatchError)
  assert.equal(await c.nix.store.isValid(out), false)
  // the right bytes: both in one import (or just the one left), then a no-op
  const imported = await importPaths(items.map((i) => ({ info: i.info, nar: Readable.from([i.bytes]) })))
  assert.ok(imported >= 1 && imported <= 2, `imported ${imported}`)
  assert.equal(await importPaths(items.map((i) => ({ info: i.info, nar: Readable.from([i.bytes]) }))), 0)
  assert.deepEqual((await c.nix.store.queryPathInfo(out)).narHash, items[1].info.narHash)
  // a fresh client reads both from the store, as registered
  const fresh = await openBackend('nix', { runner: c.ns.runner, env: c.ns.env, realStoreDir: c.ns.realStoreDir })
  assert.deepEqual(await fresh.store.filterInvalid(items.map((i) => i.info.storePath)), [])
})

test('a fresh store learns from its first import that a path missing on disk is invalid: no store process to ask', { skip, timeout: 60_000 }, async () => {
  const [a] = nodes
  const { out, n } = await builtInA('learn')
  const { info, nar } = await a.nix.store.exportPath(out)
  const bytes = Buffer.concat(await nar.toArray() as Buffer[])
  // a builder's store: empty, and this client has asked it nothing yet
  const ns = await nixNamespace()
  try {
    const calls: string[] = []
    const fresh = await openBackend('nix', { runner: { start: (c, args, o) => { calls.push(args[0]); return ns.runner.start(c, args, o) } }, env: ns.env, realStoreDir: ns.realStoreDir })
    assert.equal(await fresh.store.importPaths?.([{ info: { storePath: info.path, narHash: info.narHash, narSize: info.narSize, references: info.references }, nar: Readable.from([bytes]) }]), 1, 'imported')
    const before = calls.length
    const absent = `/nix/store/${'2'.repeat(32)}-absent-${n}`
    assert.deepEqual(await fresh.store.filterInvalid([absent, out]), [absent], 'the absent path is invalid, the imported one valid')
    assert.deepEqual(calls.slice(before), [], `no store process was started for them: ${calls.slice(before).join(' ')}`)
  } finally {
    await ns.destroy()
  }
})
