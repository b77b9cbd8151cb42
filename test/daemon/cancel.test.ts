// Cancel against real processes that make it hard: a client that ignores SIGTERM and a child in its
// own session (as Nix's builder is, via setsid). The command table and store are stand-ins; the processes are real.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { CliBuilder, NIX_COMMANDS, parseDerivation, type CommandSet, type StoreDaemon } from '../../src/daemon/index.js'
import { VECTORS } from '../helpers/paths.js'
import { join } from 'node:path'

async function pidsWith (needle: string): Promise<number[]> {
  const out: number[] = []
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try { if ((await readFile(`/proc/${p}/cmdline`, 'utf8')).split('\0').includes(needle)) out.push(Number(p)) } catch { /* gone */ }
  }
  return out
}

test('cancel: SIGTERM ignored, builder in its own session: both are gone when build() returns', { timeout: 20_000 }, async () => {
  const text = await readFile(join(VECTORS, 'drv', 'zlhy9ar54c202wgbqji8kp7437fmkk2v-fmt-trivial.drv'), 'utf8')
  const store: StoreDaemon = {
    kind: 'nix',
    storeDir: '/nix/store',
    isValid: async () => true,
    filterInvalid: async () => [],
    queryPathInfo: async () => { throw new Error('unused') },
    queryPathInfos: async () => [],
    queryRequisites: async () => [],
    readDerivation: async () => parseDerivation(text),
    exportPath: async () => { throw new Error('unused') },
    importPath: async () => {}
  }
  const tag = `${Date.now() % 100000}${Math.floor(Math.random() * 1e6)}`
  const client = `30.1${tag}` // the stubborn "nix-store"
  const builder = `30.2${tag}` // the "builder", setsid'd like Nix does
  const commands: CommandSet = {
    ...NIX_COMMANDS,
    serveBuild: undefined, // the client process under test (builds over a connection: serve-build.test.ts)
    build: () => ({ command: '/bin/sh', args: ['-c', `trap '' TERM; /usr/bin/setsid /bin/sleep ${builder} & echo started; /bin/sleep ${client}; wait`] })
  }
  const b = new CliBuilder({ commands, store }, { killGraceMs: 500 })
  const ac = new AbortController()
  const logs: string[] = []
  const done = b.build('/nix/store/zlhy9ar54c202wgbqji8kp7437fmkk2v-fmt-trivial.drv', { signal: ac.signal, onLog: (x) => logs.push(x.toString()) })
  for (let i = 0; i < 200 && ((await pidsWith(builder)).length === 0 || (await pidsWith(client)).length === 0); i++) await new Promise((resolve) => setTimeout(resolve, 25))
  assert.equal((await pidsWith(builder)).length, 1)
  ac.abort()
  assert.deepEqual(await done, { kind: 'canceled' })
  assert.deepEqual(await pidsWith(client), [])
  assert.deepEqual(await pidsWith(builder), [])
  assert.ok(logs.join('').includes('started'), `the build logged 'started' before it was canceled: ${logs.join('')}`)
})
