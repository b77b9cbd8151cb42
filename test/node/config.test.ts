// Configuration precedence, validation, identity and the data dir lock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../helpers/cli.js'
import { SETTINGS, DataDirLock, loadOrCreatePeerKey, resolveConfig, resolveDataDir, settingsFromEnv, validateSettings, effectiveStoreDir, DEFAULT_P2P_PORT } from '../../src/node/index.js'

async function withDir<T> (fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-config-'))
  try { return await fn(dir) } finally { await rm(dir, { recursive: true, force: true }) }
}

test('defaults need no config at all', async () => {
  await withDir(async (dir) => {
    const c = await resolveConfig({ dataDir: dir, env: {} })
    assert.equal(c.dataDir, dir)
    assert.deepEqual(c.listen, [`/ip4/0.0.0.0/tcp/${DEFAULT_P2P_PORT}`])
    assert.equal(c.http, '127.0.0.1:8746')
    assert.equal(c.mdns, true)
    assert.equal(c.builder, 'auto')
    assert.ok(c.maxBuilds >= 1, `maxBuilds is at least 1, got ${c.maxBuilds}`)
    assert.equal(effectiveStoreDir(c, 'nix'), '/nix/store')
    assert.equal(effectiveStoreDir(c, 'guix'), '/gnu/store')
    assert.equal(effectiveStoreDir({ ...c, storeDir: '/s' }, 'nix'), '/s')
  })
})

test('precedence: flags > environment > config file > defaults', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'config.json'), JSON.stringify({ http: '127.0.0.1:1', maxBuilds: 7, swarm: 'file', mdns: false, bootstrap: ['/ip4/1.2.3.4/tcp/1/p2p/x'] }))
    const env = { GUIX_SWARM_HTTP: '127.0.0.1:2', GUIX_SWARM_SWARM: 'env', GUIX_SWARM_LISTEN: '/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/tcp/5' }
    const c = await resolveConfig({ dataDir: dir, env, flags: { swarm: 'flag' } })
    assert.equal(c.swarm, 'flag')
    assert.equal(c.http, '127.0.0.1:2')
    assert.deepEqual(c.listen, ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/5'])
    assert.equal(c.maxBuilds, 7)
    assert.equal(c.mdns, false)
    assert.deepEqual(c.bootstrap, ['/ip4/1.2.3.4/tcp/1/p2p/x'])
  })
})

test('bad settings are refused with where and what', async () => {
  assert.throws(() => validateSettings({ maxbuilds: 3 }, 'config.json'), { name: 'NodeConfigError', message: /config.json: unknown setting "maxbuilds"/ })
  assert.throws(() => validateSettings({ builder: 'make' }, 'x'), /"builder" must be one of auto, guix, nix, none/)
  assert.throws(() => validateSettings({ swarm: 'Has Space' }, 'x'), /"swarm" must be a swarm name/)
  assert.throws(() => settingsFromEnv({ GUIX_SWARM_MDNS: 'maybe' }), /GUIX_SWARM_MDNS/)
  assert.throws(() => settingsFromEnv({ GUIX_SWARM_MAX_BUILDS: 'lots' }), /"maxBuilds" must be a positive integer/)
  await withDir(async (dir) => {
    await writeFile(join(dir, 'config.json'), '{nope')
    await assert.rejects(resolveConfig({ dataDir: dir, env: {} }), { name: 'NodeConfigError', message: /config.json: not valid JSON/ })
  })
})

test('data dir: flag, then GUIX_SWARM_DATA_DIR, then XDG_DATA_HOME', () => {
  assert.equal(resolveDataDir('/a', { GUIX_SWARM_DATA_DIR: '/b' }), '/a')
  assert.equal(resolveDataDir(undefined, { GUIX_SWARM_DATA_DIR: '/b', XDG_DATA_HOME: '/x' }), '/b')
  assert.equal(resolveDataDir(undefined, { XDG_DATA_HOME: '/x' }), '/x/guix-swarm')
  assert.match(resolveDataDir(undefined, {}), /\.local\/share\/guix-swarm$/)
})

test('the peer key is created once (0600) and loaded after', async () => {
  await withDir(async (dir) => {
    const k1 = await loadOrCreatePeerKey(dir)
    const st = await stat(join(dir, 'peer-key'))
    assert.equal(st.mode & 0o777, 0o600)
    const k2 = await loadOrCreatePeerKey(dir)
    assert.ok(k1.equals(k2), 'the key loaded the second time equals the first')
    await writeFile(join(dir, 'peer-key'), 'garbage')
    await assert.rejects(loadOrCreatePeerKey(dir), { name: 'PeerKeyError' })
  })
})

test('data dir lock: held locks refuse, stale locks (dead pid) are taken over', async () => {
  await withDir(async (dir) => {
    const a = new DataDirLock(dir)
    await a.acquire()
    assert.equal((await readFile(a.file, 'utf8')).trim(), String(process.pid))
    // A live other process holds it: pretend by writing our parent's pid.
    await writeFile(a.file, `${process.ppid}\n`)
    await assert.rejects(new DataDirLock(dir).acquire(), { name: 'DataDirInUseError', message: new RegExp(`pid ${process.ppid}`) })
    // A dead process's lock is stale.
    const child = spawn(process.execPath, ['-e', ''])
    const deadPid = child.pid as number
    await new Promise((resolve) => child.on('exit', resolve))
    await writeFile(a.file, `${deadPid}\n`)
    const b = new DataDirLock(dir)
    await b.acquire()
    assert.equal((await readFile(b.file, 'utf8')).trim(), String(process.pid))
    await b.release()
    await assert.rejects(stat(b.file), { code: 'ENOENT' })
  })
})

test('join --help lists every flag and environment variable and the precedence', async () => {
  const r = await runCli(['join', '--help'])
  assert.equal(r.code, 0, r.stderr)
  for (const s of SETTINGS) {
    assert.ok(r.stdout.includes(s.env), `${s.env} in help`)
    assert.ok(r.stdout.includes(s.flag.replace('[no-]', '')), `${s.flag} in help`)
  }
  assert.match(r.stdout, /highest precedence first/)
  assert.match(r.stdout, /--data-dir/)
})
