// Issue 2's done-criterion: `cache export` writes a static cache that a real Nix 2.8 client,
// pointed at a plain static HTTP server, substitutes from with signatures required; a wrong key
// is refused. Each test has its own private Nix store (nix-ns), so nothing leaves the host store.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseNarinfo, parsePublicKey, verifyNarinfo } from '../../src/narinfo/index.js'
import { verifyFile, type CacheFile } from '../../src/cache/index.js'
import type { Compression } from '../../src/nar/index.js'
import { CLI_ARGV, runCli, type RunResult } from '../helpers/cli.js'
import { nixSkip } from '../helpers/nix.js'
import { inNamespace, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'
import { VECTORS } from '../helpers/paths.js'
import { serveDirectory } from './static-server.js'

const NIX_KEY = join(VECTORS, 'keys', 'fmt-test-1.sec')
const NIX_PUB = join(VECTORS, 'keys', 'fmt-test-1.pub')
const WRONG_PUB = join(VECTORS, 'keys', 'wrong-key-1.pub')
const GUIX_KEY = join(VECTORS, 'guix', 'test-key.sec')
const GUIX_PUB = join(VECTORS, 'guix', 'test-key.pub')

/** The real CLI as a separate process inside the namespace, so it talks to that private store. */
async function cliIn (ns: NixNamespace, args: string[]): Promise<RunResult> {
  const [cmd, argv] = inNamespace(ns.dir, process.execPath, [...CLI_ARGV, ...args])
  const child = spawn(cmd, argv, { env: ns.env, stdio: ['ignore', 'pipe', 'pipe'] })
  const out: Buffer[] = []
  const err: Buffer[] = []
  child.stdout.on('data', (b: Buffer) => out.push(b))
  child.stderr.on('data', (b: Buffer) => err.push(b))
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  return { code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }
}

/** Build a fresh two-path closure: `top` references `dep`. */
async function buildClosure (ns: NixNamespace, tag: string): Promise<{ top: string, dep: string }> {
  const n = `${tag.replace(/[^a-z0-9]/g, '-')}-${randomBytes(6).toString('hex')}`
  const f = join(ns.dir, '..', `${n}.nix`)
  await writeFile(f, `let dep = derivation { name = "cache-dep-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo dep ${n} > $out" ]; };
    in derivation { name = "cache-top-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`)
  const drv = (await ns.exec('nix-instantiate', [f])).stdout.toString().trim()
  const built = await ns.exec('nix-store', ['--realise', drv, '--option', 'substituters', ''])
  assert.equal(built.code, 0, built.stderr.toString())
  const top = built.stdout.toString().trim()
  const dep = (await readFile(join(ns.realStoreDir, top.slice('/nix/store/'.length)), 'utf8')).trim()
  assert.match(dep, /^\/nix\/store\/[a-z0-9]{32}-cache-dep-/)
  return { top, dep }
}

const pub = async (file: string): Promise<string> => (await readFile(file, 'utf8')).trim()

// 'lzip,zstd': two URL groups in one narinfo; Nix takes the last
for (const compression of ['none', 'xz', 'zstd', 'gzip', 'lzip', 'lzip,zstd'] as const) {
  test(`cache export (${compression}) is substituted by a real Nix client from a static server; a wrong key is refused`, { skip: nixSkip(), timeout: 120_000 }, async () => {
    const ns = await nixNamespace()
    const cacheDir = join(ns.dir, '..', 'cache')
    const server = await serveDirectory(cacheDir)
    try {
      const { top, dep } = await buildClosure(ns, compression)
      const exported = await cliIn(ns, ['cache', 'export', top, '--to', cacheDir, '--key', NIX_KEY, '--compression', compression, '--json'])
      assert.equal(exported.code, 0, exported.stderr)
      const summary = JSON.parse(exported.stdout) as { paths: Array<{ storePath: string, files: CacheFile[] }>, signature: string }
      assert.deepEqual(summary.paths.map((p) => p.storePath), [dep, top], 'closure order: references first')
      assert.equal(summary.signature, 'nix')
      assert.match(exported.stderr, /\[2\/2\] /)

      const info = await readFile(join(cacheDir, 'nix-cache-info'), 'utf8')
      assert.equal(info, 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 100\n')
      const topInfo = await readFile(join(cacheDir, `${top.slice(11, 43)}.narinfo`), 'utf8')
      assert.deepEqual(parseNarinfo(topInfo, { storeDir: '/nix/store' }).urls.map((u) => u.compression), compression.split(','))
      assert.match(topInfo, /^Sig: fmt-test-1:/m)
      assert.match(topInfo, /^Deriver: [a-z0-9]{32}-cache-top-.*\.drv$/m)
      assert.ok(parseNarinfo(topInfo, { storeDir: '/nix/store' }).references.includes(dep.slice(11)), topInfo)

      const del = await ns.exec('nix-store', ['--delete', top, dep])
      assert.equal(del.code, 0, del.stderr.toString())
      assert.equal((await ns.exec('nix-store', ['--check-validity', top])).code !== 0, true)

      // wrong key: refused after reading only the narinfo
      const refused = await ns.exec('nix-store', ['-r', top, '--option', 'substituters', server.url, '--option', 'trusted-public-keys', await pub(WRONG_PUB)])
      assert.notEqual(refused.code, 0)
      assert.match(refused.stderr.toString(), /is not signed by any of the keys/)
      assert.ok(server.requests.includes(`GET /${top.slice(11, 43)}.narinfo`), server.requests.join('\n'))
      assert.ok(!server.requests.some((r) => r.includes(' /nar/')), server.requests.join('\n'))

      // right key, fresh narinfo cache (the refusal above is cached for an hour otherwise)
      const xdg = join(ns.dir, '..', 'xdg-fresh')
      await mkdir(xdg)
      const got = await ns.exec('nix-store', ['-r', top, '--option', 'substituters', server.url, '--option', 'trusted-public-keys', await pub(NIX_PUB)], { env: { XDG_CACHE_HOME: xdg } })
      assert.equal(got.code, 0, got.stderr.toString())
      assert.match(got.stderr.toString(), new RegExp(`copying path '${top}' from '${server.url}'`))
      for (const p of [top, dep]) {
        const check = await ns.exec('nix-store', ['--verify-path', p])
        assert.equal(check.code, 0, check.stderr.toString())
      }
      const nars = server.requests.filter((r) => r.startsWith('GET /nar/'))
      const last = compression.split(',').at(-1) ?? ''
      assert.deepEqual(nars.sort(), [dep, top].map((p) => `GET /${last === 'none' ? 'nar' : `nar/${last}`}/${p.slice(11)}`).sort(), server.requests.join('\n'))
    } finally {
      await server.close()
      await ns.destroy()
    }
  })
}

test('cache export with a Guix key signs with Signature:, several compressions in one pass, each file decompresses to the NAR', { skip: nixSkip(), timeout: 120_000 }, async () => {
  const ns = await nixNamespace()
  const cacheDir = join(ns.dir, '..', 'cache')
  try {
    const { top, dep } = await buildClosure(ns, 'guixkey')
    const compressions: Compression[] = ['zstd', 'lzip', 'gzip']
    // -c before the path: repeatable, it must not swallow the positional argument
    const r = await cliIn(ns, ['cache', 'export', ...compressions.flatMap((c) => ['-c', c]), top, '--to', cacheDir, '--key', GUIX_KEY,
      '--dialect', 'guix', '--host', 'test-host', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const guixPub = parsePublicKey(await readFile(GUIX_PUB, 'utf8'))
    const nixPub = parsePublicKey(await pub(NIX_PUB))
    for (const p of [top, dep]) {
      const text = await readFile(join(cacheDir, `${p.slice(11, 43)}.narinfo`), 'utf8')
      const v = verifyNarinfo(text, [guixPub])
      assert.equal(v.ok, true, JSON.stringify(v))
      assert.equal(v.ok && v.kind === 'guix' ? v.host : '', 'test-host')
      assert.equal(verifyNarinfo(text, [nixPub]).ok, false)
      // guix publish order: StorePath, URL groups, NarHash, NarSize, References, Deriver, Signature last
      const keys = text.trimEnd().split('\n').map((l) => l.slice(0, l.indexOf(':')))
      assert.deepEqual(keys, ['StorePath', ...compressions.flatMap(() => ['URL', 'Compression', 'FileSize']), 'NarHash', 'NarSize', 'References', 'Deriver', 'Signature'])
      const n = parseNarinfo(text, { storeDir: '/nix/store' })
      const expectedHash = (await ns.exec('nix-store', ['-q', '--hash', p])).stdout.toString().trim()
      assert.equal(n.narHash, expectedHash)
      for (const c of compressions) {
        const url = n.urls.find((u) => u.compression === c)?.url ?? ''
        assert.equal(url, c === 'none' ? `nar/${p.slice(11)}` : `nar/${c}/${p.slice(11)}`)
        const d = await verifyFile(n, c, join(cacheDir, url))
        assert.equal(d.narHash, expectedHash)
      }
    }
    assert.deepEqual(await readdir(join(cacheDir, '.guix-swarm', 'tmp')), [], 'no temp files left behind')
  } finally {
    await ns.destroy()
  }
})

test('cache export refuses a missing key file and an unknown compression with exit 2', async () => {
  const bad = await runCli(['cache', 'export', '/nix/store/00000000000000000000000000000000-x', '--to', '/nonexistent-cache-dir-never-created', '--compression', 'br'])
  assert.equal(bad.code, 2, bad.stderr)
  assert.match(bad.stderr, /br/)
  const nokey = await runCli(['cache', 'export', '/nix/store/00000000000000000000000000000000-x', '--to', '/nonexistent-cache-dir-never-created', '--key', '/nonexistent.sec'])
  assert.equal(nokey.code, 2, nokey.stderr)
})
