// The long-lived store connection (`nix-store --serve --write`): the same answers as one process
// per question, from one process; imports checked before the path is named; a failed request
// costs only its connection; a Nix that cannot serve falls back to processes. Real nix-store in
// private /nix directories.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { buffer } from 'node:stream/consumers'
import { CliStore, NIX_COMMANDS, nixStore, type ProcessRunner } from '../../src/daemon/index.js'
import { ServePool } from '../../src/daemon/serve.js'
import { nixSkip } from '../helpers/nix.js'
import { builtChain as builtChainIn, instantiate, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

const skip = nixSkip()
let ns: NixNamespace

before(async () => { if (skip === false) ns = await nixNamespace() })
after(async () => { await ns?.destroy() })

const nonce = (): string => randomBytes(6).toString('hex')

function counting (inner: ProcessRunner): { runner: ProcessRunner, calls: string[][] } {
  const calls: string[][] = []
  return { runner: { start: (c, a, o) => { calls.push([c, ...a]); return inner.start(c, a, o) } }, calls }
}

/** Wait until process `pid` no longer exists (and its parent saw it go). */
async function waitUntilGone (pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try { process.kill(pid, 0) } catch { await new Promise((resolve) => setTimeout(resolve, 100)); return }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  assert.fail(`process ${pid} still runs`)
}

async function * chunks (b: Buffer): AsyncGenerator<Buffer> { yield b }

const drvExpr = (name: string, script: string): string =>
  `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }`

const builtChain = async (): Promise<string[]> => await builtChainIn(ns)

test('one connection answers validity, path infos and closures as the per-question processes do', { skip }, async () => {
  const [top, mid, bottom] = await builtChain()
  const absent = `/nix/store/${'5'.repeat(32)}-absent`
  const { runner, calls } = counting(ns.runner)
  const served = nixStore({ runner, env: ns.env, realStoreDir: ns.realStoreDir, trustLocalAbsence: false })
  const plain = nixStore({ runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir, serve: false, trustLocalAbsence: false })
  try {
    assert.deepEqual(await served.queryRequisites([top]), [bottom, mid, top], 'closure in reference order')
    assert.deepEqual(await served.queryPathInfos([top, mid, bottom]), await plain.queryPathInfos([top, mid, bottom]), 'the same infos as --dump-db')
    assert.deepEqual(await served.filterInvalid([top, absent]), [absent])
    await assert.rejects(served.queryPathInfo(absent), { name: 'PathNotValidError' })
    assert.deepEqual(calls.map((c) => c[1]), ['--serve'], 'every question went to one long-lived process')
    assert.deepEqual(served.connection(), { mode: 'serve', opened: 1 })
  } finally {
    await served.close()
  }
})

test('a path built by another client after the connection called it invalid is valid on the next question', { skip }, async () => {
  const [drv] = await instantiate(ns, drvExpr(`late-${nonce()}`, 'echo late > $out'))
  const out = (await ns.exec('nix-store', ['--query', '--outputs', drv])).stdout.toString().trim()
  // no disk shortcut: every question goes to the server, whose own cache must not answer
  const store = nixStore({ runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir, trustLocalAbsence: false })
  try {
    assert.equal(await store.isValid(out), false)
    await assert.rejects(store.queryPathInfo(out), { name: 'PathNotValidError' })
    const r = await ns.exec('nix-store', ['--realise', '--option', 'substituters', '', drv])
    assert.equal(r.code, 0, r.stderr.toString())
    assert.equal(await store.isValid(out), true, 'the server asked its database again')
    assert.equal((await store.queryPathInfo(out)).deriver, drv)
    assert.equal(store.connectionsOpened, 1)
  } finally {
    await store.close()
  }
})

for (const [size, large] of [['small', false], ['large', true]] as const) {
  test(`${size} imports over a connection: references first, registered as a fresh client reads them; a NAR that does not match registers nothing and costs only its connection`, { skip }, async () => {
    const [top, mid, bottom] = await builtChain()
    const to = await nixNamespace()
    const from = nixStore({ runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir })
    const { runner, calls } = counting(to.runner)
    // a chain's NARs are a few hundred bytes: "large" moves the bar below them
    const dest = nixStore({ runner, env: to.env, realStoreDir: to.realStoreDir, ...(large ? { sharedImportBytes: 0 } : {}) })
    const check = nixStore({ runner: to.runner, env: to.env, realStoreDir: to.realStoreDir, serve: false, trustLocalAbsence: false })
    try {
      // the bottom path with a corrupted NAR: refused before its trailer names it
      const b = await from.exportPath(bottom)
      const bytes = await buffer(b.nar)
      const bad = Buffer.from(bytes)
      bad[bad.length - 20] ^= 1
      await assert.rejects(dest.importPaths([{ info: { storePath: bottom, ...b.info }, nar: chunks(bad) }]), { name: 'NarHashMismatchError' })
      assert.deepEqual(await check.filterInvalid([bottom]), [bottom], 'nothing registered')

      const items = []
      for (const p of [bottom, mid, top]) {
        const { info, nar } = await from.exportPath(p)
        items.push({ info: { storePath: p, ...info }, nar: chunks(await buffer(nar)) })
      }
      assert.equal(await dest.importPaths(items), 3)
      assert.deepEqual(await check.queryPathInfos([bottom, mid, top]), await from.queryPathInfos([bottom, mid, top]), 'same infos in both stores')
      if (large) {
        // one connection for questions; large imports have their own, and the failed one was dropped
        assert.deepEqual(calls.map((c) => c[1]), ['--serve', '--serve', '--serve'], 'questions, the failed import, the next import: no other process ran')
      } else {
        // small imports share the questions' connection: the failed one cost it, the next question opened another
        assert.deepEqual(calls.map((c) => c[1]), ['--serve', '--serve'], 'questions and the failed import, then questions and the next import: no other process ran')
      }
      assert.equal(await dest.importPaths(items), 0, 'already valid: nothing to do')
    } finally {
      await Promise.all([from.close(), dest.close()])
      await to.destroy()
    }
  })
}

test('a request the server fails (closure of an invalid path) is a PathNotValidError; the pool opens a new connection for the next', { skip }, async () => {
  const [top] = await builtChain()
  const { runner, calls } = counting(ns.runner)
  const pool = new ServePool(runner, NIX_COMMANDS.serve ?? assert.fail('Nix has a serve command'), ns.env)
  try {
    const absent = `/nix/store/${'6'.repeat(32)}-absent`
    await assert.rejects(pool.use(async (c) => await c.queryClosure([absent])), { name: 'PathNotValidError' })
    const r = await pool.use(async (c) => await c.queryClosure([top]))
    assert.equal(r?.value.length, 3)
    assert.equal(calls.length, 2, 'a second connection')
  } finally {
    await pool.close()
  }
})

test('a connection whose server died while idle is replaced, and the question still answered', { skip }, async () => {
  const [top] = await builtChain()
  const pids: number[] = []
  const runner: ProcessRunner = { start: (c, a, o) => { const p = ns.runner.start(c, a, o); if (p.pid !== undefined) pids.push(p.pid); return p } }
  const store = nixStore({ runner, env: ns.env, realStoreDir: ns.realStoreDir, trustLocalAbsence: false })
  try {
    assert.deepEqual(await store.filterInvalid([top]), [])
    // the server goes away between questions (OOM killer, an operator's kill)
    process.kill(pids[0], 'SIGKILL')
    await waitUntilGone(pids[0])
    assert.equal((await store.queryPathInfo(top)).path, top, 'answered on a new connection')
    assert.equal(store.connectionsOpened, 2)
  } finally {
    await store.close()
  }
})

test('a nix-store that cannot serve: one process per question, as before', { skip }, async () => {
  const [top] = await builtChain()
  const { runner, calls } = counting(ns.runner)
  const store = new CliStore({ commands: { ...NIX_COMMANDS, serve: { command: 'nix-store', args: ['--no-such-operation'] } }, runner, env: ns.env, realStoreDir: ns.realStoreDir, trustLocalAbsence: false })
  assert.deepEqual(await store.filterInvalid([top]), [])
  assert.equal((await store.queryPathInfo(top)).path, top)
  assert.equal(store.connectionsOpened, 0)
  assert.deepEqual(store.connection(), { mode: 'processes', opened: 0 })
  assert.deepEqual(calls.map((c) => c[1]), ['--no-such-operation', '--check-validity', '--dump-db'], 'tried once, then processes')
})

test('an idle connection does not keep the process that opened it alive', { skip }, async () => {
  // a child that asks one question and never closes the store: it must still exit on its own
  const script = `
    import { nixStore } from ${JSON.stringify(new URL('../../src/daemon/index.js', import.meta.url).href)}
    const store = nixStore({ trustLocalAbsence: false })
    const invalid = await store.filterInvalid([${JSON.stringify(`/nix/store/${'7'.repeat(32)}-absent`)}])
    process.stdout.write(JSON.stringify({ invalid, opened: store.connectionsOpened }))
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: ns.env, stdio: ['ignore', 'pipe', 'inherit'], cwd: fileURLToPath(new URL('.', import.meta.url)) })
  const out: Buffer[] = []
  child.stdout.on('data', (b: Buffer) => out.push(b))
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const [code, signal] = await once(child, 'exit') as [number | null, string | null]
  clearTimeout(killer)
  assert.equal(signal, null, 'the child had to be killed: the idle connection kept it running')
  assert.equal(code, 0)
  assert.deepEqual(JSON.parse(Buffer.concat(out).toString()), { invalid: [`/nix/store/${'7'.repeat(32)}-absent`], opened: 1 })
})
