// Real node processes for the substitutes tests, each optionally inside its own private Nix store
// (nix-ns), so "B has a path, A never had it, the client is a third store" is literally true.
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import { inNamespace, type NixNamespace } from '../helpers/nix-ns.js'
import { startNode, removeDir, type TestNode } from '../helpers/swarm.js'

export interface NsNodeOptions {
  /** Run the node inside this private store (needed to publish from it). */
  ns?: NixNamespace
  bootstrap?: TestNode[]
  args?: string[]
  timeoutMs?: number
}

/** `guix-swarm join` for a Nix store (/nix/store narinfos), no builder, no mDNS, loopback only. */
export async function startSubstituteNode (opts: NsNodeOptions = {}): Promise<TestNode> {
  const ns = opts.ns
  return await startNode({
    args: [
      '--builder', 'none', '--store-dir', '/nix/store', '--no-mdns',
      ...(opts.bootstrap ?? []).flatMap((n) => ['--bootstrap', n.addrs[0]]),
      ...(opts.args ?? [])
    ],
    ...(ns != null ? { launch: { wrap: (c: string, a: string[]) => inNamespace(ns.dir, c, a), env: ns.env } } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {})
  })
}

export async function stopAll (nodes: Array<TestNode | undefined>): Promise<void> {
  await Promise.all(nodes.map(async (n) => { if (n != null) { await n.stop(); await removeDir(n.dataDir) } }))
}

/** Build a fresh closure in `ns`: `top` references `dep`. The same `name` gives the same paths in any store. */
export async function buildClosure (ns: NixNamespace, name = `subst-${randomBytes(6).toString('hex')}`): Promise<{ top: string, dep: string }> {
  const f = join(ns.dir, '..', `${name}.nix`)
  await writeFile(f, `let dep = derivation { name = "dep-${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo dep ${name} > $out" ]; };
    in derivation { name = "top-${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out; i=0; while [ $i -lt 3000 ]; do echo line $i of ${name}; i=$((i+1)); done >> $out" ]; }`)
  const drv = (await ns.exec('nix-instantiate', [f])).stdout.toString().trim()
  const built = await ns.exec('nix-store', ['--realise', drv, '--option', 'substituters', ''])
  assert.equal(built.code, 0, built.stderr.toString())
  const top = built.stdout.toString().trim()
  const dep = (await readFile(join(ns.realStoreDir, top.slice('/nix/store/'.length)), 'utf8')).split('\n')[0].trim()
  assert.match(dep, /^\/nix\/store\/[a-z0-9]{32}-dep-/)
  return { top, dep }
}

/** Build a path of `bytes` random (incompressible) bytes in `ns`: a NAR large enough to be served while it arrives. */
export async function buildLarge (ns: NixNamespace, bytes: number, name = `large-${randomBytes(6).toString('hex')}`): Promise<string> {
  const f = join(ns.dir, '..', `${name}.nix`)
  await writeFile(f, `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/usr/bin/head -c ${bytes} /dev/urandom > $out" ]; }`)
  const drv = (await ns.exec('nix-instantiate', [f])).stdout.toString().trim()
  const built = await ns.exec('nix-store', ['--realise', drv, '--option', 'substituters', ''])
  assert.equal(built.code, 0, built.stderr.toString())
  return built.stdout.toString().trim()
}

export const hashPartOf = (storePath: string): string => storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)

/** POST to a node's API (JSON). */
export async function api<T> (node: TestNode, path: string, body: unknown): Promise<T> {
  const res = await fetch(node.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const text = await res.text()
  assert.equal(res.status, 200, `${path}: ${res.status} ${text}`)
  return JSON.parse(text) as T
}

export interface Published { paths: Array<{ storePath: string, narHash: string, narSize: number, announced: boolean, files: Array<{ url: string, compression: string, fileSize: number }> }> }

/**
 * Publish and retry until every DHT record went out: kad fills its routing table a moment after
 * identify, the way the re-provider would retry (publish is idempotent).
 */
export async function publishAnnounced (node: TestNode, paths: string[]): Promise<Published> {
  for (let i = 0; ; i++) {
    const r = await api<Published>(node, '/api/publish', { paths })
    if (r.paths.every((p) => p.announced) || i >= 10) return r
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
}

/** A real `nix-store -r PATH` in `client`'s private store from `from`'s HTTP front, with a fresh narinfo cache in `xdg`. */
export async function substitute (client: NixNamespace, path: string, from: { url: string }, key: string, xdg: string): Promise<{ code: number | null, stderr: string }> {
  await mkdir(xdg, { recursive: true })
  const r = await client.exec('nix-store', ['-r', path, '--option', 'substituters', from.url, '--option', 'trusted-public-keys', key], { env: { XDG_CACHE_HOME: xdg } })
  return { code: r.code, stderr: r.stderr.toString() }
}

/**
 * The happy path of a real client: `nix-store -r paths[0]` from `from`, trusting only the Nix key
 * of `signer` (the node that signed the narinfos), succeeds, and every path in `paths` verifies.
 */
export async function assertSubstitutes (client: NixNamespace, from: { url: string }, signer: { dataDir: string }, paths: string[]): Promise<void> {
  const key = (await readFile(join(signer.dataDir, 'keys', 'nix-key.pub'), 'utf8')).trim()
  const got = await substitute(client, paths[0], from, key, join(client.dir, '..', 'xdg'))
  assert.equal(got.code, 0, got.stderr)
  for (const p of paths) assert.equal((await client.exec('nix-store', ['--verify-path', p])).code, 0, `${p} verifies`)
}
