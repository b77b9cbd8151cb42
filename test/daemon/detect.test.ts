import { test } from 'node:test'
import assert from 'node:assert/strict'
import { detectBuilder, parseNixSystems, guixSocket, BuilderUnavailableError } from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'

test('parseNixSystems: system first, then extra-platforms, no duplicates', () => {
  const cfg = 'substituters = https://x\nextra-platforms = i686-linux x86_64-linux\nsystem = x86_64-linux\n'
  assert.deepEqual(parseNixSystems(cfg), ['x86_64-linux', 'i686-linux'])
  assert.deepEqual(parseNixSystems('foo = bar\n'), [])
})

test('detectBuilder none', async () => {
  assert.deepEqual(await detectBuilder('none'), { kind: 'none', systems: [] })
})

test('detectBuilder finds nix and its native system', { skip: nixSkip() }, async () => {
  const auto = await detectBuilder('auto', { fresh: true })
  // No guix here; a host with guix-daemon would answer guix, which is also right.
  assert.ok(auto.kind === 'nix' || auto.kind === 'guix', `auto-detection picks nix or guix, got ${auto.kind}`)
  const nix = await detectBuilder('nix')
  assert.equal(nix.kind, 'nix')
  const { execFileSync } = await import('node:child_process')
  const native = JSON.parse(execFileSync('nix-instantiate', ['--eval', '--json', '-E', 'builtins.currentSystem']).toString()) as string
  assert.equal(nix.systems[0], native)
  // Cached: the same object comes back.
  assert.equal(await detectBuilder('nix'), nix)
})

test('detectBuilder: a forced kind that is missing is a named error', async () => {
  const env = { ...process.env, PATH: '/nonexistent', GUIX_DAEMON_SOCKET: '/nonexistent/socket' }
  await assert.rejects(detectBuilder('guix', { env, fresh: true }), (e: Error) => e instanceof BuilderUnavailableError && e.name === 'BuilderUnavailableError')
  await assert.rejects(detectBuilder('nix', { env, fresh: true }), BuilderUnavailableError)
  assert.deepEqual(await detectBuilder('auto', { env, fresh: true }), { kind: 'none', systems: [] })
})

test('guixSocket: default, file names, unix:// URIs, remote daemons', () => {
  assert.equal(guixSocket({}), '/var/guix/daemon-socket/socket')
  assert.equal(guixSocket({ GUIX_DAEMON_SOCKET: '/run/g.sock' }), '/run/g.sock')
  assert.equal(guixSocket({ GUIX_DAEMON_SOCKET: 'unix:///run/g.sock' }), '/run/g.sock')
  assert.equal(guixSocket({ GUIX_DAEMON_SOCKET: 'guix://build.example:44146' }), undefined)
})
