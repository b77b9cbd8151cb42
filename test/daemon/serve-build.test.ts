// Builds over a long-lived `nix-store --serve --write` connection: the same outcomes and per-build
// logs as a `nix-store --realise` client, no process per batch, cancellation that leaves nothing
// running, and outputs held by the connection's temporary roots until it closes. Real Nix in a
// private /nix.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { CliBuilder, NIX_COMMANDS, nixStore, type BuildOutcome, type ProcessRunner } from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'
import { instantiate, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

const skip = nixSkip()
let ns: NixNamespace

before(async () => { if (skip === false) ns = await nixNamespace() })
after(async () => { await ns?.destroy() })

const nonce = (): string => randomBytes(6).toString('hex')
const drvExpr = (name: string, script: string): string =>
  `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }`

function rig (): { builder: CliBuilder, calls: string[][] } {
  const calls: string[][] = []
  const runner: ProcessRunner = { start: (c, a, o) => { calls.push([c, ...a]); return ns.runner.start(c, a, o) } }
  const store = nixStore({ runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir })
  return { builder: new CliBuilder({ commands: NIX_COMMANDS, store, runner, env: ns.env }, { inputs: 'build', killGraceMs: 2000 }), calls }
}

/** pids of processes whose command line contains `text`. */
async function pidsWith (text: string): Promise<number[]> {
  const r = await promisify(execFile)('pgrep', ['-f', text]).catch(() => ({ stdout: '' }))
  return r.stdout.split('\n').filter((l) => l !== '').map(Number).filter((p) => p !== process.pid)
}

test('batches over one connection: outcomes per build, each log its own, no client process per batch', { skip }, async () => {
  const n = nonce()
  const drvs = await instantiate(ns, `[ ${['ok-a', 'bad', 'ok-b'].map((k) => `(${drvExpr(`${k}-${n}`, k === 'bad' ? `echo failing-${k}-${n}; exit 3` : `echo hello-${k}-${n}; echo ${k} > $out`)})`).join(' ')} ]`)
  const { builder, calls } = rig()
  try {
    const logs = new Map(drvs.map((d) => [d, '']))
    const outcomes = await builder.buildMany!(drvs.map((d) => ({ drvPath: d, onLog: (b: Buffer) => { logs.set(d, (logs.get(d) ?? '') + b.toString()) } })), { signal: new AbortController().signal })
    const [a, bad, b] = drvs.map((d) => outcomes.get(d))
    assert.equal(a?.kind, 'success', JSON.stringify(a))
    assert.equal(b?.kind, 'success', JSON.stringify(b))
    assert.equal(bad?.kind, 'failed', JSON.stringify(bad))
    if (bad?.kind === 'failed') {
      assert.equal(bad.exitCode, 100)
      assert.match(bad.message, /failed with exit code 3/)
    }
    assert.match(logs.get(drvs[0]) ?? '', new RegExp(`hello-ok-a-${n}`))
    assert.doesNotMatch(logs.get(drvs[0]) ?? '', new RegExp(`hello-ok-b-${n}|failing`), 'a build\'s log holds only its own lines')
    assert.match(logs.get(drvs[1]) ?? '', new RegExp(`failing-bad-${n}`))
    // a single build afterwards: the same connection
    const [single] = await instantiate(ns, drvExpr(`single-${n}`, 'echo single > $out'))
    let log = ''
    const one = await builder.build(single, { signal: new AbortController().signal, onLog: (x) => { log += x.toString() } })
    assert.equal(one.kind, 'success', JSON.stringify(one))
    assert.ok(one.kind === 'success' && log.includes('building'), `the single build's log: ${log}`)
    assert.equal(calls.filter((c) => c[1] === '--realise').length, 0, 'no client process per batch')
    assert.equal(calls.filter((c) => c[1] === '--serve').length, 1, 'one connection for both batches')
  } finally {
    await builder.close()
  }
})

test('cancel over the connection: canceled, the builder is gone, and the next build gets a new connection', { skip, timeout: 60_000 }, async () => {
  const n = nonce()
  const tag = `3.${Date.now() % 100000}${Math.floor(Math.random() * 1e5)}`
  const [slow] = await instantiate(ns, drvExpr(`slow-${n}`, `echo started; /bin/sleep 3${tag}; echo x > $out`))
  const { builder, calls } = rig()
  try {
    const ac = new AbortController()
    let log = ''
    const done = builder.build(slow, { signal: ac.signal, onLog: (x) => { log += x.toString() } })
    for (let i = 0; i < 400 && (await pidsWith(`^/bin/sleep 3${tag}`)).length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 25))
    assert.equal((await pidsWith(`^/bin/sleep 3${tag}`)).length, 1, 'the builder runs')
    ac.abort()
    const outcome: BuildOutcome = await done
    assert.deepEqual(outcome, { kind: 'canceled' })
    assert.deepEqual(await pidsWith(`^/bin/sleep 3${tag}`), [], 'nothing of the build is left running')
    assert.match(log, /started/)
    const [next] = await instantiate(ns, drvExpr(`after-${n}`, 'echo after > $out'))
    assert.equal((await builder.build(next, { signal: new AbortController().signal, onLog: () => {} })).kind, 'success')
    assert.equal(calls.filter((c) => c[1] === '--serve').length, 2, 'the killed connection was replaced')
  } finally {
    await builder.close()
  }
})

test('outputs built over a connection are held by its temporary roots until it closes', { skip }, async () => {
  const [drv] = await instantiate(ns, drvExpr(`held-${nonce()}`, 'echo held > $out'))
  const { builder } = rig()
  const outcome = await builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })
  assert.equal(outcome.kind, 'success', JSON.stringify(outcome))
  if (outcome.kind !== 'success') return
  const held = await ns.exec('nix-store', ['--delete', outcome.outputs.out])
  assert.notEqual(held.code, 0, 'the garbage collector must not take an output the connection built')
  assert.match(held.stderr.toString(), /still alive/)
  await builder.close()
  const freed = await ns.exec('nix-store', ['--delete', outcome.outputs.out])
  assert.equal(freed.code, 0, `once the connection closed, the output is collectable: ${freed.stderr.toString()}`)
})
