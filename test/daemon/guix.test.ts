// The guix backend behind a fake process runner: argument building and output parsing (no Guix here).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import {
  openBackend, guixCommands, NIX_COMMANDS, parseDryRun, classifyExit, missingFromLog, parseRegInfo, closureOrder,
  ImportUnsupportedError, PathNotValidError, formatSha256, type ProcessRunner, type RunningProcess, type Exit
} from '../../src/daemon/index.js'
import { VECTORS } from '../helpers/paths.js'

interface Reply { code?: number, stdout?: string, stderr?: string, hang?: boolean }
interface Call { command: string, args: string[], detached: boolean }

class FakeRunner implements ProcessRunner {
  readonly calls: Call[] = []
  killed: NodeJS.Signals[] = []
  constructor (private readonly reply: (c: Call) => Reply) {}
  start (command: string, args: string[], opts: { detached?: boolean } = {}): RunningProcess {
    const call = { command, args, detached: opts.detached === true }
    this.calls.push(call)
    const r = this.reply(call)
    const stdout = new PassThrough()
    const stderr = new PassThrough()
    let finish: (e: Exit) => void = () => {}
    const exited = new Promise<Exit>((resolve) => { finish = resolve })
    const end = (e: Exit): void => { stdout.end(); stderr.end(); setImmediate(() => finish(e)) }
    setImmediate(() => {
      if (r.stdout !== undefined) stdout.write(r.stdout)
      if (r.stderr !== undefined) stderr.write(r.stderr)
      if (r.hang !== true) end({ code: r.code ?? 0, signal: null })
    })
    return {
      pid: undefined, stdin: null, stdout, stderr, exited,
      kill: (signal) => { this.killed.push(signal); end({ code: null, signal }) }
    }
  }
}

const DRV = '/nix/store/ca6q6gwk8wwdw20zhfqp543ga5hsi20c-fmt-dep.drv' // inputDrvs: fmt-multi, fmt-trivial

/** A guix backend over a temp dir holding one vector .drv (vectors use /nix/store, so storeDir follows). */
async function fixture (reply: (c: Call) => Reply, opts: { substituters?: string[], inputs?: 'build' | 'require' } = {}): Promise<{ runner: FakeRunner, b: Awaited<ReturnType<typeof openBackend>>, done: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'guix-swarm-fakestore-'))
  await copyFile(join(VECTORS, 'drv', DRV.slice('/nix/store/'.length)), join(dir, DRV.slice('/nix/store/'.length)))
  const runner = new FakeRunner(reply)
  // the dir holds only the one .drv, not a whole store: every validity question goes to the (fake) daemon
  const b = await openBackend('guix', { runner, storeDir: '/nix/store', realStoreDir: dir, trustLocalAbsence: false, ...opts })
  return { runner, b, done: async () => await rm(dir, { recursive: true }) }
}

const isRepl = (c: Call, mode: string): boolean => c.command === 'guix' && c.args[0] === 'repl' && c.args[1] === '--' && c.args[3] === mode
const never = new AbortController().signal

test('guix build: offline flags, output paths from the .drv, log streamed', async () => {
  const { runner, b, done } = await fixture((c) => c.args[0] === 'build' ? { stdout: '/nix/store/x\n', stderr: 'building...\n' } : { stdout: '' })
  const log: Buffer[] = []
  const outcome = await b.builder.build(DRV, { signal: never, onLog: (x) => log.push(x) })
  assert.deepEqual(outcome, { kind: 'success', outputs: { out: '/nix/store/7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc-fmt-dep' } })
  const build = runner.calls.find((c) => c.args[0] === 'build')
  assert.deepEqual(build, { command: 'guix', args: ['build', '--verbosity=2', '--no-grafts', '--no-substitutes', DRV], detached: true })
  assert.match(Buffer.concat(log).toString(), /building\.\.\./)
  // validity of the drv, its inputs, then its outputs — all through the Guile helper
  assert.ok(runner.calls.filter((c) => isRepl(c, 'invalid')).length >= 3, 'validity of the drv, its inputs and its outputs was queried through the Guile helper')
  await done()
})

test('guix build with substitute URLs and limits', () => {
  const cmds = guixCommands('/tmp/s.scm')
  assert.deepEqual(cmds.build('/gnu/store/a.drv', { substituters: ['http://127.0.0.1:1', 'http://127.0.0.1:2'], trustedPublicKeys: ['ignored'], maxSilentTime: 60, timeout: 3600 }, '/var/lib/gs/roots/a').args,
    ['build', '--verbosity=2', '--no-grafts', '--substitute-urls=http://127.0.0.1:1 http://127.0.0.1:2', '--max-silent-time=60', '--timeout=3600', '--root=/var/lib/gs/roots/a', '/gnu/store/a.drv'])
  assert.deepEqual(cmds.requisites(['/gnu/store/a']), { command: 'guix', args: ['gc', '--requisites', '/gnu/store/a'] })
  assert.equal(cmds.defaultStoreDir, '/gnu/store')
  // The same flags in Nix's words.
  assert.deepEqual(NIX_COMMANDS.build('/nix/store/a.drv', { substituters: ['http://127.0.0.1:1'], trustedPublicKeys: ['k:1', 'k:2'] }).args,
    ['--realise', '--option', 'substituters', 'http://127.0.0.1:1', '--option', 'trusted-public-keys', 'k:1 k:2', '--option', 'narinfo-cache-negative-ttl', '0', '--', '/nix/store/a.drv'])
})

test('guix build failure and missing inputs are told apart from the log', async () => {
  const failed = await fixture((c) => c.args[0] === 'build'
    ? { code: 1, stderr: `building ${DRV}...\nguix build: error: build of \`${DRV}' failed\n` }
    : { stdout: '' })
  const f = await failed.b.builder.build(DRV, { signal: never, onLog: () => {} })
  assert.equal(f.kind, 'failed')
  assert.equal(f.kind === 'failed' ? f.exitCode : -1, 1)
  await failed.done()

  const gone = '/nix/store/jbdqi2fvjlgf33p2pslhd2a15byd760f-fmt-trivial'
  const missing = await fixture((c) => c.args[0] === 'build' ? { code: 1, stderr: `guix build: error: path \`${gone}' is not valid\n` } : { stdout: '' })
  assert.deepEqual(await missing.b.builder.build(DRV, { signal: never, onLog: () => {} }), { kind: 'missing-inputs', missing: [gone] })
  await missing.done()

  const broken = await fixture((c) => c.args[0] === 'build' ? { code: 1, stderr: 'guix build: error: failed to connect to `/var/guix/daemon-socket/socket\': Connection refused\n' } : { stdout: '' })
  const s = await broken.b.builder.build(DRV, { signal: never, onLog: () => {} })
  assert.equal(s.kind, 'setup-failed')
  assert.match(s.kind === 'setup-failed' ? s.message : '', /Connection refused/)
  await broken.done()
})

test('invalid input derivation is reported before building', async () => {
  const multi = '/nix/store/066ascmmkqnm8ibybk1398firrrmmc82-fmt-multi.drv'
  const { runner, b, done } = await fixture((c) => isRepl(c, 'invalid') && c.args.includes(multi) ? { stdout: multi + '\n' } : { stdout: '' })
  assert.deepEqual(await b.builder.build(DRV, { signal: never, onLog: () => {} }), { kind: 'missing-inputs', missing: [multi] })
  assert.equal(runner.calls.some((c) => c.args[0] === 'build'), false)
  await done()
})

test('inputs: require uses guix build --dry-run', async () => {
  const multi = '/nix/store/066ascmmkqnm8ibybk1398firrrmmc82-fmt-multi.drv'
  const { runner, b, done } = await fixture((c) => c.args.includes('--dry-run')
    ? { stderr: `The following derivations would be built:\n  ${multi}\n  ${DRV}\n` }
    : { stdout: '' }, { inputs: 'require' })
  assert.deepEqual(await b.builder.build(DRV, { signal: never, onLog: () => {} }), { kind: 'missing-inputs', missing: [multi] })
  assert.deepEqual(runner.calls.find((c) => c.args.includes('--dry-run'))?.args, ['build', '--dry-run', '--no-grafts', '--no-substitutes', DRV])
  await done()
})

test('cancel kills the running guix build', async () => {
  const { runner, b, done } = await fixture((c) => c.args[0] === 'build' ? { hang: true } : { stdout: '' })
  const ac = new AbortController()
  const p = b.builder.build(DRV, { signal: ac.signal, onLog: () => {} })
  while (!runner.calls.some((c) => c.args[0] === 'build')) await new Promise((resolve) => setImmediate(resolve))
  ac.abort()
  assert.deepEqual(await p, { kind: 'canceled' })
  assert.equal(runner.killed[0], 'SIGTERM')
  await done()
})

test('guix path info through the Guile helper, parsed like nix-store --dump-db', async () => {
  const p = '/gnu/store/2zq0s6vyhh8pbz2kn0y6jnh0n7vvs6ms-hello-2.12.2'
  const dep = '/gnu/store/0000000000000000000000000000000a-glibc-2.35'
  const runner = new FakeRunner((c) => isRepl(c, 'info')
    ? (c.args[4] === p ? { stdout: `${p}\n${'ab'.repeat(32)}\n1234\n/gnu/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-hello-2.12.2.drv\n2\n${p}\n${dep}\n` } : { code: 1, stderr: `error: path '${c.args[4]}' is not valid\n` })
    : { stdout: '' })
  const guix = await openBackend('guix', { runner })
  assert.equal(guix.store.storeDir, '/gnu/store')
  const info = await guix.store.queryPathInfo(p)
  assert.deepEqual(info, { path: p, narHash: formatSha256(Buffer.from('ab'.repeat(32), 'hex')), narSize: 1234, references: [dep, p], deriver: '/gnu/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-hello-2.12.2.drv' })
  await assert.rejects(guix.store.queryPathInfo(dep), PathNotValidError)
  const call = runner.calls.find((c) => isRepl(c, 'info'))
  assert.ok(call !== undefined, 'path info was queried through the Guile helper')
  assert.match(await readFile(call.args[2], 'utf8'), /query-path-info/)
  await assert.rejects(guix.store.importPath({ storePath: p, narHash: info.narHash, narSize: 1, references: [] }, Readable.from([])), ImportUnsupportedError)
})

test('shared parsers: dry-run sections, missing paths, registration info, closure order', () => {
  const nixDry = 'these 2 derivations will be built:\n  /nix/store/a-x.drv\n  /nix/store/b-y.drv\nthese paths will be fetched (0.01 MiB download, 0.05 MiB unpacked):\n  /nix/store/c-z\n'
  assert.deepEqual(parseDryRun(nixDry), { toBuild: ['/nix/store/a-x.drv', '/nix/store/b-y.drv'], toFetch: ['/nix/store/c-z'] })
  assert.deepEqual(parseDryRun('The following file would be downloaded:\n   /gnu/store/q-hello\n'), { toBuild: [], toFetch: ['/gnu/store/q-hello'] })
  // What nix-store 2.8 really printed for an absent .drv.
  const nixMissing = "don't know how to build these paths:\n  /nix/store/0pqyvyw21p553pf74czgvqks0vjaqp0l-t2.drv\nerror: cannot build missing derivation '/nix/store/0pqyvyw21p553pf74czgvqks0vjaqp0l-t2.drv'\n"
  assert.deepEqual(missingFromLog(nixMissing), ['/nix/store/0pqyvyw21p553pf74czgvqks0vjaqp0l-t2.drv'])
  assert.deepEqual(missingFromLog("error: builder for '/nix/store/a.drv' failed with exit code 3\n"), [])

  assert.equal(classifyExit(NIX_COMMANDS, 'nix-store', 0, null, ''), undefined)
  assert.deepEqual(classifyExit(NIX_COMMANDS, 'nix-store', 101, null, "error: builder for '/nix/store/a.drv' timed out after 5 seconds\n"),
    { kind: 'failed', exitCode: 101, message: "error: builder for '/nix/store/a.drv' timed out after 5 seconds" })
  assert.deepEqual(classifyExit(NIX_COMMANDS, 'nix-store', null, 'SIGKILL', 'building...\n'), { kind: 'setup-failed', message: 'nix-store exited with SIGKILL' })
  assert.deepEqual(classifyExit(NIX_COMMANDS, 'nix-store', 1, null, "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied\n"),
    { kind: 'setup-failed', message: "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied" })

  const reg = '/nix/store/b\n' + '10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6\n120\n\n1\n/nix/store/a\n/nix/store/a\n' + 'dc8c3adc121684a54a80edbc1af14ea5e8015322371a1cbdbf1760ee21a8506e\n360\n/nix/store/a.drv\n0\n'
  const infos = parseRegInfo(reg)
  assert.equal(infos.length, 2)
  assert.equal(infos[0].deriver, undefined)
  assert.equal(infos[1].deriver, '/nix/store/a.drv')
  assert.deepEqual(closureOrder(infos), ['/nix/store/a', '/nix/store/b'])
  assert.throws(() => parseRegInfo('/nix/store/b\nnothex\n1\n\n0\n'), { name: 'UnexpectedOutputError' })
  assert.throws(() => parseRegInfo('/nix/store/b\n' + '0'.repeat(64) + '\n1\n\n2\n/nix/store/c\n'), { name: 'UnexpectedOutputError' })
})
