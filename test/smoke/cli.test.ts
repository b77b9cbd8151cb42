import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers/cli.js'

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
