import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { runCli } from '../helpers/cli.js'
import { NODE_FLAGS } from '../../src/cli/node-flags.js'

test('guix-swarm --help lists the command groups and exits 0', async () => {
  const r = await runCli(['--help'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /Usage: guix-swarm/)
})

test('an unknown command exits non-zero with a message', async () => {
  const r = await runCli(['no-such-command'])
  assert.notEqual(r.code, 0)
  assert.match(r.stderr, /unknown command|error/i)
})

test('the launcher starts Node with NODE_FLAGS, and runs as an executable', async () => {
  const bin = fileURLToPath(new URL('../../../bin/guix-swarm.js', import.meta.url))
  const first = (await readFile(bin, 'utf8')).split('\n')[0]
  assert.equal(first, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`, 'the shebang carries exactly the flags the harnesses use')
  const r = await new Promise<{ code: number | null, out: string }>((resolve, reject) => {
    const child = spawn(bin, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out += b.toString() })
    child.on('error', reject)
    child.on('close', (code) => { resolve({ code, out }) })
  })
  assert.equal(r.code, 0, 'bin/guix-swarm.js --help exits 0 through its shebang')
  assert.match(r.out, /Usage: guix-swarm/)
})
