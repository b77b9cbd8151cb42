// Real nix-store builds in a private per-test /nix (test/helpers/nix-ns.ts).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdir, readFile, readlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openBackend, type Backend, type BuildOutcome } from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

const skip = nixSkip()
let ns: NixNamespace
let nix: Backend

before(async () => {
  if (skip !== false) return
  ns = await nixNamespace()
  nix = await openBackend('nix', { runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir, killGraceMs: 2000 })
})
after(async () => { await ns?.destroy() })

const nonce = (): string => randomBytes(6).toString('hex')

/** Instantiate a Nix expression in the namespace's store; returns the .drv path. */
async function instantiate (expr: string, attr?: string): Promise<string> {
  const f = join(ns.dir, '..', `expr-${nonce()}.nix`)
  await writeFile(f, expr)
  const r = await ns.exec('nix-instantiate', [f, ...(attr !== undefined ? ['-A', attr] : [])])
  assert.equal(r.code, 0, r.stderr.toString())
  return r.stdout.toString().trim()
}

const drvExpr = (name: string, script: string): string =>
  `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }`

async function build (drv: string, signal = new AbortController().signal): Promise<{ outcome: BuildOutcome, log: string }> {
  const chunks: Buffer[] = []
  const outcome = await nix.builder.build(drv, { signal, onLog: (b) => chunks.push(b) })
  return { outcome, log: Buffer.concat(chunks).toString() }
}

test('a successful build streams its log and names its outputs', { skip }, async () => {
  const n = nonce()
  const drv = await instantiate(drvExpr(`ok-${n}`, `echo building-${n}; echo hi ${n} > $out`))
  const { outcome, log } = await build(drv)
  assert.equal(outcome.kind, 'success', JSON.stringify(outcome))
  assert.ok(log.includes(`building-${n}`), log)
  const out = outcome.kind === 'success' ? outcome.outputs.out : ''
  assert.match(out, new RegExp(`^/nix/store/[a-z0-9]{32}-ok-${n}$`))
  assert.equal(await nix.store.isValid(out), true)
  assert.equal(await readFile(join(ns.realStoreDir, out.slice('/nix/store/'.length)), 'utf8'), `hi ${n}\n`)
})

test('multiple outputs come back by name', { skip }, async () => {
  const n = nonce()
  const drv = await instantiate(`derivation { name = "multi-${n}"; outputs = [ "out" "dev" ]; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo a > $out; echo b > $dev" ]; }`)
  const root = join(ns.dir, '..', `root-${n}`)
  // roots are made by the client process; a build connection holds its outputs by temporary roots instead (serve-build.test.ts)
  const client = await openBackend('nix', { runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir, serveBuilds: false })
  const outcome = await client.builder.build(drv, { signal: new AbortController().signal, onLog: () => {}, gcRoot: root })
  assert.equal(outcome.kind, 'success')
  if (outcome.kind !== 'success') return
  assert.deepEqual(Object.keys(outcome.outputs).sort(), ['dev', 'out'])
  assert.ok(outcome.outputs.dev.endsWith(`-multi-${n}-dev`), `the dev output is named -multi-${n}-dev: ${outcome.outputs.dev}`)
  // Rooted: readable links to the outputs, and the GC refuses to delete them.
  assert.equal(await readlink(root), outcome.outputs.out)
  assert.equal(await readlink(root + '-dev'), outcome.outputs.dev)
  const del = await ns.exec('nix-store', ['--delete', outcome.outputs.dev])
  assert.notEqual(del.code, 0)
  assert.match(del.stderr.toString(), /still alive/)
})

test('a failing builder is "failed" with its log', { skip }, async () => {
  const n = nonce()
  const drv = await instantiate(drvExpr(`fail-${n}`, `echo failing-${n}; exit 3`))
  const { outcome, log } = await build(drv)
  assert.equal(outcome.kind, 'failed', JSON.stringify(outcome))
  if (outcome.kind !== 'failed') return
  assert.equal(outcome.exitCode, 100)
  assert.match(outcome.message, /failed with exit code 3/)
  assert.ok(log.includes(`failing-${n}`), `the failure log mentions failing-${n}: ${log}`)
})

test('a .drv that is not in the store is "missing-inputs"', { skip }, async () => {
  const absent = `/nix/store/${'0'.repeat(32)}-absent-${nonce()}.drv`
  assert.deepEqual((await build(absent)).outcome, { kind: 'missing-inputs', missing: [absent] })
})

test('inputs: require reports unbuilt input derivations instead of building them', { skip }, async () => {
  const n = nonce()
  const expr = `let a = ${drvExpr(`in-${n}`, 'echo a > $out')}; in ${drvExpr(`top-${n}`, '/bin/cat ${a} > $out')}`
  const drv = await instantiate(expr)
  const strict = await openBackend('nix', { runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir, inputs: 'require' })
  const outcome = await strict.builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })
  assert.equal(outcome.kind, 'missing-inputs', JSON.stringify(outcome))
  if (outcome.kind !== 'missing-inputs') return
  assert.equal(outcome.missing.length, 1)
  assert.match(outcome.missing[0], new RegExp(`-in-${n}\\.drv$`))
  // The default mode builds the input too.
  assert.equal((await build(drv)).outcome.kind, 'success')
  assert.equal((await strict.builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })).kind, 'success')
})

async function processesWith (needle: string): Promise<number[]> {
  const out: number[] = []
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8')
      if (cmd.includes(needle)) out.push(Number(p))
    } catch { /* exited meanwhile */ }
  }
  return out
}

test('cancel kills the build tree and reports "canceled"', { skip, timeout: 25_000 }, async () => {
  const secs = `30.${Date.now() % 1_000_000}${Math.floor(Math.random() * 1000)}` // a unique argv to find the builder by
  const drv = await instantiate(`derivation { name = "sleep-${nonce()}"; system = builtins.currentSystem; builder = "/bin/sleep"; args = [ "${secs}" ]; }`)
  const ac = new AbortController()
  const log: Buffer[] = []
  const done = nix.builder.build(drv, { signal: ac.signal, onLog: (b) => log.push(b) })
  // Wait until the builder really runs before canceling.
  for (let i = 0; i < 200 && (await processesWith(secs)).length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50))
  assert.ok((await processesWith(secs)).length > 0, 'sleep builder started')
  ac.abort()
  assert.deepEqual(await done, { kind: 'canceled' })
  assert.deepEqual(await processesWith(secs), [], 'no stray builder')
  const drvInfo = await nix.store.readDerivation(drv)
  assert.equal(await nix.store.isValid(drvInfo.outputs.get('out')?.path ?? ''), false)
})

test('already aborted: nothing starts', { skip }, async () => {
  const ac = new AbortController()
  ac.abort()
  const drv = await instantiate(drvExpr(`never-${nonce()}`, 'echo x > $out'))
  assert.deepEqual((await build(drv, ac.signal)).outcome, { kind: 'canceled' })
})

test('an unreachable daemon or a missing nix-store is "setup-failed"', { skip }, async () => {
  const drv = await instantiate(drvExpr(`setup-${nonce()}`, 'echo x > $out'))
  const noDaemon = await openBackend('nix', { env: { ...process.env, NIX_REMOTE: 'unix:///nonexistent/guix-swarm-test.sock' } })
  const a = await noDaemon.builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })
  assert.equal(a.kind, 'setup-failed', JSON.stringify(a))
  assert.match(a.kind === 'setup-failed' ? a.message : '', /nonexistent\/guix-swarm-test\.sock/)
  const noNix = await openBackend('nix', { env: { ...process.env, PATH: '/nonexistent' } })
  const b = await noNix.builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })
  assert.equal(b.kind, 'setup-failed', JSON.stringify(b))
  assert.match(b.kind === 'setup-failed' ? b.message : '', /SpawnFailedError: cannot start nix-store/)
})

test('store queries: path info, closure order, invalid paths, bad paths', { skip }, async () => {
  const n = nonce()
  const drv = await instantiate(`let a = ${drvExpr(`qa-${n}`, 'echo a > $out')}; in ${drvExpr(`qb-${n}`, 'echo ${a} > $out')}`)
  const built = await build(drv)
  assert.equal(built.outcome.kind, 'success')
  const out = built.outcome.kind === 'success' ? built.outcome.outputs.out : ''
  const info = await nix.store.queryPathInfo(out)
  assert.equal(info.deriver, drv)
  assert.equal(info.references.length, 1)
  const hashQ = await ns.exec('nix-store', ['--query', '--hash', out])
  assert.equal(info.narHash, hashQ.stdout.toString().trim())
  const sizeQ = await ns.exec('nix-store', ['--query', '--size', out])
  assert.equal(info.narSize, Number(sizeQ.stdout.toString().trim()))
  assert.deepEqual(await nix.store.queryRequisites([out]), [info.references[0], out])
  const absent = `/nix/store/${'1'.repeat(32)}-absent`
  assert.deepEqual(await nix.store.filterInvalid([out, absent]), [absent])
  await assert.rejects(nix.store.queryPathInfo(absent), { name: 'PathNotValidError' })
  await assert.rejects(nix.store.exportPath(absent), { name: 'PathNotValidError' })
  await assert.rejects(nix.store.isValid('/etc/passwd'), { name: 'NotAStorePathError' })
  await assert.rejects(nix.store.readDerivation(out), { name: 'NotAStorePathError' })
})
