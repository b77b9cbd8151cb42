// Builder.buildMany: several derivations built by ONE nix-store client (--keep-going,
// --log-format internal-json), one outcome and one log per derivation, roots per derivation.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile, readlink, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  CliBuilder, DECLINING_BUILD_HOOK, guixCommands, InternalJsonLogRouter, NIX_COMMANDS, nixStore, writeDecliningBuildHook,
  type BuildOutcome, type ProcessRunner
} from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'
import { instantiate as instantiateIn, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

const skip = nixSkip()
let ns: NixNamespace
let roots: string

before(async () => {
  if (skip !== false) return
  ns = await nixNamespace()
  roots = await mkdtemp(join(tmpdir(), 'guix-swarm-roots-'))
})
after(async () => {
  await ns?.destroy()
  if (roots !== undefined) await rm(roots, { recursive: true, force: true })
})

const nonce = (): string => randomBytes(6).toString('hex')

/** A builder over one `nix-store --realise` client per batch (builds over a connection: serve-build.test.ts). */
function rig (inputs: 'build' | 'require' = 'build', buildHook?: string): { builder: CliBuilder, calls: string[][] } {
  const calls: string[][] = []
  const runner: ProcessRunner = { start: (c, a, o) => { calls.push([c, ...a]); return ns.runner.start(c, a, o) } }
  const store = nixStore({ runner, env: ns.env, realStoreDir: ns.realStoreDir })
  return { builder: new CliBuilder({ commands: NIX_COMMANDS, store, runner, env: ns.env }, { inputs, killGraceMs: 2000, serveBuilds: false, ...(buildHook !== undefined ? { buildHook } : {}) }), calls }
}

const instantiate = async (expr: string): Promise<string[]> => await instantiateIn(ns, expr)

const drv = (name: string, script: string, extra = ''): string =>
  `(derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; ${extra} })`

const isBatch = (c: string[]): boolean => c.includes('--keep-going')

test('four derivations, one client: each its own outcome, its own log and its own roots', { skip, timeout: 60_000 }, async () => {
  const n = nonce()
  const [ok1, bad, ok2, multi] = await instantiate(`[ ${drv(`ok1-${n}`, 'echo hello one; echo to stderr >&2; echo 1 > $out')}
    ${drv(`bad-${n}`, 'echo failing now; exit 3')}
    ${drv(`ok2-${n}`, 'echo hello two; echo 2 > $out')}
    ${drv(`multi-${n}`, 'echo a > $out; echo b > $dev', 'outputs = [ "out" "dev" ];')} ]`)
  const { builder, calls } = rig()
  assert.ok(builder.buildMany !== undefined, 'the nix builder batches')
  const logs = new Map<string, string>()
  const seen: Array<[string, BuildOutcome]> = []
  const items = [ok1, bad, ok2, multi].map((d, i) => ({
    drvPath: d, gcRoot: join(roots, `b${i}-${n}`), onLog: (b: Buffer) => logs.set(d, (logs.get(d) ?? '') + b.toString())
  }))
  const out = await builder.buildMany(items, { signal: new AbortController().signal, maxJobs: 2, onOutcome: (d, o) => seen.push([d, o]) })

  assert.equal(calls.filter(isBatch).length, 1, 'one build client for the batch')
  assert.equal(calls.filter((c) => c.includes('--realise') && !c.includes('--add-root') && !isBatch(c)).length, 0, 'no per-derivation build')
  const o1 = out.get(ok1)
  assert.equal(o1?.kind, 'success')
  const b = out.get(bad)
  assert.equal(b?.kind, 'failed')
  assert.match(b?.kind === 'failed' ? b.message : '', new RegExp(`builder for '${bad}' failed`))
  assert.equal(out.get(ok2)?.kind, 'success')
  const m = out.get(multi)
  assert.deepEqual(m?.kind === 'success' ? Object.keys(m.outputs).sort() : [], ['dev', 'out'])
  assert.deepEqual(seen.map(([d]) => d).sort(), [ok1, bad, ok2, multi].sort(), 'onOutcome once per derivation')

  assert.match(logs.get(ok1) ?? '', /hello one/)
  assert.match(logs.get(ok1) ?? '', /to stderr/)
  assert.doesNotMatch(logs.get(ok1) ?? '', /hello two|failing now/)
  assert.match(logs.get(bad) ?? '', /failing now/)
  assert.doesNotMatch(logs.get(bad) ?? '', /hello one|hello two/)
  assert.match(logs.get(ok2) ?? '', /hello two/)

  // roots named as a single build names them: R for out, R-<output> for the others
  const outs = (o: BuildOutcome | undefined): Record<string, string> => o?.kind === 'success' ? o.outputs : {}
  assert.equal(await readlink(items[0].gcRoot), outs(o1).out)
  assert.equal(await readlink(items[3].gcRoot), outs(m).out)
  assert.equal(await readlink(`${items[3].gcRoot}-dev`), outs(m).dev)
  await assert.rejects(readlink(items[1].gcRoot), { code: 'ENOENT' }, 'no root for a failed build')
  const gcRoots = await ns.exec('nix-store', ['--gc', '--print-roots'])
  assert.match(gcRoots.stdout.toString(), new RegExp(outs(o1).out), 'the root is registered with Nix')
})

test('gcRootBase: a batch that succeeds is rooted by its own client (base, base-2, base-3-dev); after a failure, the built ones get the same names', { skip, timeout: 60_000 }, async () => {
  const n = nonce()
  const [a, b, m] = await instantiate(`[ ${drv(`ra-${n}`, 'echo a > $out')} ${drv(`rb-${n}`, 'echo b > $out')}
    ${drv(`rm-${n}`, 'echo a > $out; echo b > $dev', 'outputs = [ "out" "dev" ];')} ]`)
  const base = join(roots, `batch-${n}`)
  const { builder, calls } = rig()
  const many = builder.buildMany as NonNullable<CliBuilder['buildMany']>
  const out = await many([a, b, m].map((d) => ({ drvPath: d, onLog: () => {} })), { signal: new AbortController().signal, gcRootBase: base })
  const outs = (d: string): Record<string, string> => { const o = out.get(d); return o?.kind === 'success' ? o.outputs : {} }
  assert.equal(await readlink(base), outs(a).out)
  assert.equal(await readlink(`${base}-2`), outs(b).out)
  assert.equal(await readlink(`${base}-3`), outs(m).out)
  assert.equal(await readlink(`${base}-3-dev`), outs(m).dev)
  assert.equal(calls.filter((c) => c.includes('--add-root')).length, 1, 'only the batch client made roots')

  const n2 = nonce()
  const [ok, bad, ok2] = await instantiate(`[ ${drv(`sa-${n2}`, 'echo a > $out')} ${drv(`sb-${n2}`, 'exit 1')} ${drv(`sc-${n2}`, 'echo c > $out')} ]`)
  const base2 = join(roots, `batch-${n2}`)
  const out2 = await many([ok, bad, ok2].map((d) => ({ drvPath: d, onLog: () => {} })), { signal: new AbortController().signal, gcRootBase: base2 })
  assert.equal(out2.get(bad)?.kind, 'failed')
  const o1 = out2.get(ok)
  const o3 = out2.get(ok2)
  assert.equal(await readlink(base2), o1?.kind === 'success' ? o1.outputs.out : '')
  await assert.rejects(readlink(`${base2}-2`), { code: 'ENOENT' })
  assert.equal(await readlink(`${base2}-3`), o3?.kind === 'success' ? o3.outputs.out : '')
})

test('prechecked together: a .drv not in the store and one whose input is unbuilt are reported, the rest is built', { skip, timeout: 60_000 }, async () => {
  const n = nonce()
  const [dep] = await instantiate(`[ ${drv(`dep-${n}`, 'echo d > $out')} ]`)
  const [needsDep, plain, plain2] = await instantiate(`let dep = ${drv(`dep-${n}`, 'echo d > $out')}; in [
    ${drv(`top-${n}`, 'echo ${dep} > $out')} ${drv(`plain-${n}`, 'echo p > $out')} ${drv(`plain2-${n}`, 'echo q > $out')} ]`)
  const absent = `/nix/store/${'3'.repeat(32)}-absent-${n}.drv`
  const { builder, calls } = rig('require')
  const out = await (builder.buildMany as NonNullable<CliBuilder['buildMany']>)(
    [needsDep, plain, plain2, absent].map((d) => ({ drvPath: d, onLog: () => {} })), { signal: new AbortController().signal })
  assert.deepEqual(out.get(absent), { kind: 'missing-inputs', missing: [absent] })
  assert.deepEqual(out.get(needsDep), { kind: 'missing-inputs', missing: [dep] })
  assert.equal(out.get(plain)?.kind, 'success')
  assert.equal(out.get(plain2)?.kind, 'success')
  const validity = calls.filter((c) => c.includes('--check-validity'))
  // .drv files, their inputs, the input .drv files, the input outputs, the outputs: once each for the whole batch
  assert.ok(validity.length <= 5, `validity asked once per step for the whole batch, not per derivation: ${validity.length}`)
  assert.equal(calls.filter(isBatch).length, 1)
})

test('aborting a batch kills its client; every build of it is canceled', { skip, timeout: 30_000 }, async () => {
  const n = nonce()
  const drvs = await instantiate(`[ ${drv(`slow1-${n}`, 'sleep 30; echo > $out')} ${drv(`slow2-${n}`, 'sleep 30; echo > $out')} ]`)
  const { builder } = rig()
  const ac = new AbortController()
  const logs: string[] = []
  const running = (builder.buildMany as NonNullable<CliBuilder['buildMany']>)(
    drvs.map((d) => ({ drvPath: d, onLog: (b: Buffer) => { logs.push(b.toString()); if (/building '/.test(b.toString())) ac.abort() } })),
    { signal: ac.signal, maxJobs: 2 })
  const out = await running
  assert.ok(ac.signal.aborted, 'a build started before the abort')
  assert.deepEqual([...out.values()], [{ kind: 'canceled' }, { kind: 'canceled' }])
  const ps = await ns.exec('pgrep', ['-f', `slow1-${n}`])
  assert.equal(ps.stdout.toString().trim(), '', 'nothing of the batch is left running')
})

test('the declining build hook: Nix asks it, hears "decline-permanently" at once and builds the batch and a single build locally', { skip, timeout: 60_000 }, async () => {
  const n = nonce()
  const dir = await mkdtemp(join(roots, 'hook-'))
  const hook = await writeDecliningBuildHook(dir)
  assert.equal(await readFile(hook, 'utf8'), DECLINING_BUILD_HOOK, 'the hook written is the one documented')
  // the same script, also counting its starts, to see that Nix really ran it
  const marks = join(dir, 'starts')
  await writeFile(hook, DECLINING_BUILD_HOOK.replace('\n', `\necho started >> ${marks}\n`), { mode: 0o755 })
  const [a, b, c] = await instantiate(`[ ${drv(`ha-${n}`, 'echo a > $out')} ${drv(`hb-${n}`, 'echo b > $out')} ${drv(`hc-${n}`, 'echo c > $out')} ]`)
  const { builder, calls } = rig('build', hook)
  const many = builder.buildMany as NonNullable<CliBuilder['buildMany']>
  const out = await many([a, b].map((d) => ({ drvPath: d, onLog: () => {} })), { signal: new AbortController().signal, maxJobs: 2 })
  assert.deepEqual([out.get(a)?.kind, out.get(b)?.kind], ['success', 'success'], `the batch builds: ${JSON.stringify([...out.values()])}`)
  const one = await builder.build(c, { signal: new AbortController().signal, onLog: () => {} })
  assert.equal(one.kind, 'success', `the single build builds: ${JSON.stringify(one)}`)
  const realises = calls.filter((x) => x.includes('--realise') && !x.includes('--dry-run'))
  assert.ok(realises.length >= 2 && realises.every((x) => x.join(' ').includes(`--option build-hook ${hook}`)), `every build client gets the hook: ${JSON.stringify(realises)}`)
  const starts = (await readFile(marks, 'utf8')).split('\n').filter((l) => l !== '').length
  assert.ok(starts >= 2, `Nix started the hook once per build client (${starts} starts)`)
})

test('internal-json routing: lines split across chunks, messages naming a build, everything else to all', () => {
  const a = '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv'
  const b = '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b.drv'
  const got: Array<[string, string]> = []
  const r = new InternalJsonLogRouter([a, b], { line: (d, t) => got.push([d, t]), other: (t) => got.push(['*', t]) })
  const text = [
    `@nix {"action":"start","fields":["${a}","",1,1],"id":7,"level":3,"text":"building '${a}'","type":105}`,
    `@nix {"action":"start","fields":["${b}","",1,1],"id":8,"level":3,"text":"building '${b}'","type":105}`,
    '@nix {"action":"result","fields":["line of a"],"id":7,"type":101}',
    '@nix {"action":"result","fields":["line of b"],"id":8,"type":101}',
    '@nix {"action":"result","fields":[1,2,0,0],"id":9,"type":105}',
    `@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m builder for '\\u001b[35;1m${b}\\u001b[0m' failed with exit code 3"}`,
    '@nix {"action":"msg","level":3,"msg":"unrelated"}',
    'plain text line'
  ].join('\n') + '\n'
  const bytes = Buffer.from(text)
  for (let i = 0; i < bytes.length; i += 7) r.push(bytes.subarray(i, i + 7))
  r.end()
  assert.deepEqual(got, [
    [a, `building '${a}'\n`], [b, `building '${b}'\n`], [a, 'line of a\n'], [b, 'line of b\n'],
    [b, `error: builder for '${b}' failed with exit code 3\n`], ['*', 'unrelated\n'], ['*', 'plain text line\n']
  ])
})

test('guix builds cannot be told apart in one log: the guix builder has no buildMany', () => {
  const store = nixStore()
  const g = new CliBuilder({ commands: guixCommands('/tmp/x.scm'), store })
  assert.equal(g.buildMany, undefined)
})
