// The Guile helper that the guix backend runs through `guix repl`, run here by plain guile against
// stand-in (guix …) modules: checks the script's own Scheme (argument handling, output format).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { REPO_ROOT } from '../helpers/paths.js'
import { guixScriptPath, parseRegInfo, runToEnd, defaultRunner, formatSha256 } from '../../src/daemon/index.js'

const STUBS = join(REPO_ROOT, 'test', 'daemon', 'guile-stubs') // .scm files stay in the source tree, also for dist runs
const guileSkip = ((): string | false => {
  try { execFileSync('guile', ['--version'], { stdio: 'pipe' }); return false } catch { return 'guile is not installed (Debian: guile-3.0)' }
})()

const TOP = '/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top'
const DEP = '/gnu/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-dep'
const ABSENT = '/gnu/store/cccccccccccccccccccccccccccccccc-absent'

async function guile (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const r = await runToEnd(defaultRunner, 'guile', ['--no-auto-compile', '-L', STUBS, await guixScriptPath(), ...args])
  return { code: r.code, stdout: r.stdout.toString(), stderr: r.stderr.toString() }
}

test('store-info script: info prints registration info that parseRegInfo reads', { skip: guileSkip }, async () => {
  const r = await guile('info', TOP, DEP)
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(parseRegInfo(r.stdout), [
    { path: TOP, narHash: formatSha256(Buffer.alloc(32, 171)), narSize: 1234, references: [TOP, DEP].sort(), deriver: '/gnu/store/dddddddddddddddddddddddddddddddd-top.drv' },
    { path: DEP, narHash: formatSha256(Buffer.alloc(32, 1)), narSize: 8, references: [] }
  ])
})

test('store-info script: invalid lists only invalid paths; info on one fails like nix-store', { skip: guileSkip }, async () => {
  const inv = await guile('invalid', TOP, ABSENT, DEP)
  assert.equal(inv.code, 0, inv.stderr)
  assert.equal(inv.stdout, ABSENT + '\n')
  const info = await guile('info', ABSENT)
  assert.equal(info.code, 1)
  assert.match(info.stderr, new RegExp(`path '${ABSENT}' is not valid`))
  const dump = await guile('dump', TOP)
  assert.equal(dump.code, 0, dump.stderr)
  assert.equal(dump.stdout, `NAR-OF ${TOP}`)
})
