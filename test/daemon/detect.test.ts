import { test } from 'node:test'
import assert from 'node:assert/strict'
import { detectBuilder, parseNixSystems, guixSocket, isLocalStore, storeUrl, nixBuildHookIdle, nixBuildLimits, BuilderUnavailableError } from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'

test('parseNixSystems: system first, then extra-platforms, no duplicates', () => {
  const cfg = 'substituters = https://x\nextra-platforms = i686-linux x86_64-linux\nsystem = x86_64-linux\n'
  assert.deepEqual(parseNixSystems(cfg), ['x86_64-linux', 'i686-linux'])
  assert.deepEqual(parseNixSystems('foo = bar\n'), [])
})

test('nixBuildLimits: max-silent-time and timeout in seconds, 0 when unset or not a whole number', () => {
  assert.deepEqual(nixBuildLimits('max-silent-time = 600\ntimeout = 7200\nsystem = x86_64-linux\n'), { maxSilentTime: 600, timeout: 7200 })
  assert.deepEqual(nixBuildLimits('system = x86_64-linux\n'), { maxSilentTime: 0, timeout: 0 }, 'unset: no limit, as Nix')
  assert.deepEqual(nixBuildLimits('max-silent-time = -3\ntimeout = soon\n'), { maxSilentTime: 0, timeout: 0 }, 'nonsense is no limit, never a negative or NaN on the wire')
  assert.deepEqual(nixBuildLimits('build-timeout = 5\n'), { maxSilentTime: 0, timeout: 0 }, 'only the exact key')
})

test('isLocalStore: only a store the client opens itself', () => {
  assert.equal(isLocalStore('Store URL: local\nVersion: 2.8.0\n'), true)
  assert.equal(isLocalStore('Store URL: local?root=/tmp/r\n'), true)
  assert.equal(isLocalStore('Store URL: daemon\n'), false, 'a daemon runs the builds (and its own hook)')
  assert.equal(isLocalStore('Store URL: unix:///nix/var/nix/daemon-socket/socket\n'), false)
  assert.equal(isLocalStore(''), false, 'no answer: keep Nix as configured')
  assert.equal(storeUrl('Store URL: local?root=/tmp/r\n'), 'local?root=/tmp/r', 'the URL as printed: only a plain `local` is trusted for absent files')
})

test('nixBuildHookIdle: Nix\'s own hook and no machine, inline or in a file', () => {
  const files = new Map([['/etc/nix/machines', '# none yet\n\n'], ['/etc/nix/real', 'ssh://b1 x86_64-linux\n'], ['/etc/nix/nested', '@/etc/nix/real\n']])
  const read = (p: string): string | undefined => files.get(p)
  const cfg = (hook: string, builders: string): string => `build-hook = ${hook}\nbuilders = ${builders}\nsystem = x86_64-linux\n`
  assert.equal(nixBuildHookIdle(cfg('/usr/libexec/nix/build-remote', '@/etc/nix/machines'), read), true, 'a machines file of comments')
  assert.equal(nixBuildHookIdle(cfg('/usr/libexec/nix/build-remote', '@/etc/nix/absent'), read), true, 'an absent machines file')
  assert.equal(nixBuildHookIdle(cfg('/nix/store/x-nix/bin/nix __build-remote', ''), read), true, 'newer Nix names itself with __build-remote')
  assert.equal(nixBuildHookIdle(cfg('/usr/libexec/nix/build-remote', '@/etc/nix/real'), read), false, 'a machine in the file')
  assert.equal(nixBuildHookIdle(cfg('/usr/libexec/nix/build-remote', '@/etc/nix/nested'), read), false, 'a machine in a file the file names')
  assert.equal(nixBuildHookIdle(cfg('/usr/libexec/nix/build-remote', 'ssh://b2 aarch64-linux ; @/etc/nix/machines'), read), false, 'an inline machine')
  assert.equal(nixBuildHookIdle(cfg('/opt/my-hook', ''), read), false, 'a hook of the user\'s own is kept')
  assert.equal(nixBuildHookIdle('system = x86_64-linux\n', read), false, 'no build-hook line: keep Nix as configured')
  const loop = (p: string): string | undefined => `@${p}\n`
  assert.equal(nixBuildHookIdle(cfg('/usr/libexec/nix/build-remote', '@/etc/nix/loop'), loop), false, 'files naming files without end: keep Nix as configured')
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
  // here: a local store (root, no daemon) and no /etc/nix/machines
  assert.equal(nix.idleBuildHook, true, 'the local store with no remote builders is seen')
  assert.equal(nix.localStore, true, 'root without a daemon opens the plain local store')
  const config = execFileSync('nix', ['--extra-experimental-features', 'nix-command', 'show-config']).toString()
  assert.deepEqual(nix.buildLimits, nixBuildLimits(config), 'the build limits as configured, read at detection')
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
