// Real `guix-swarm join` processes, each in its own private Nix store (nix-ns), for the building
// tests: builders run the real scheduler on their own daemon; the submitter's store alone holds
// the .drv files. Keys are made before the nodes start so each can trust the others' files.
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import { ensureKeys } from '../../src/narinfo/index.js'
import type { BuildView } from '../../src/crdt/index.js'
import { inNamespace, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'
import { startNode, removeDir, tempDir, type TestNode } from '../helpers/swarm.js'

export interface SwarmMember extends TestNode {
  ns: NixNamespace
  /** The node's Nix public key line (`name:base64`). */
  nixKey: string
  nixKeyFile: string
}

export interface Prepared { ns: NixNamespace, dataDir: string, nixKey: string, nixKeyFile: string }

/** A private store and a data dir with keys, before the node starts. */
export async function prepare (): Promise<Prepared> {
  const ns = await nixNamespace()
  const dataDir = await tempDir('gs-build-')
  // Nix keeps trusted keys by name: nodes on one host must not all be named after the host
  await ensureKeys(join(dataDir, 'keys'), { name: `gs-test-${randomBytes(4).toString('hex')}` })
  const nixKeyFile = join(dataDir, 'keys', 'nix-key.pub')
  return { ns, dataDir, nixKeyFile, nixKey: (await readFile(nixKeyFile, 'utf8')).trim() }
}

/** Start `join` inside the prepared store. `builder`: nix or none; `args` add to the defaults. */
export async function startMember (p: Prepared, opts: { builder: 'nix' | 'none', bootstrap?: TestNode, trust: Prepared[], args?: string[] }): Promise<SwarmMember> {
  const node = await startNode({
    dataDir: p.dataDir,
    args: [
      '--builder', opts.builder, '--store-dir', '/nix/store', '--no-mdns',
      ...(opts.builder === 'nix' ? ['--system', 'x86_64-linux'] : []),
      ...(opts.bootstrap !== undefined ? ['--bootstrap', opts.bootstrap.addrs[0]] : []),
      ...opts.trust.filter((t) => t !== p).flatMap((t) => ['--trusted-key', t.nixKeyFile]),
      ...(opts.args ?? [])
    ],
    launch: { wrap: (c, a) => inNamespace(p.ns.dir, c, a), env: p.ns.env },
    timeoutMs: 40_000
  })
  return { ...node, ns: p.ns, nixKey: p.nixKey, nixKeyFile: p.nixKeyFile }
}

export async function cleanup (members: Array<SwarmMember | undefined>, prepared: Prepared[]): Promise<void> {
  await Promise.all(members.map(async (m) => { await m?.stop() }))
  for (const p of prepared) {
    await removeDir(p.dataDir)
    await p.ns.destroy()
  }
}

export { instantiate } from '../helpers/nix-ns.js'

/** A trivial derivation; `inputs` name other let-bound derivations it refers to. */
export function drvExpr (name: string, body: string, inputs: string[] = []): string {
  const refs = inputs.map((i) => `echo \${${i}} >> $out/inputs; `).join('')
  return `derivation { name = "${name}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir $out; ${refs}${body}" ]; }`
}

export async function getJson<T> (node: TestNode, path: string): Promise<T> {
  const res = await fetch(node.url + path)
  const text = await res.text()
  assert.equal(res.status, 200, `${path}: ${res.status} ${text}`)
  return JSON.parse(text) as T
}

export async function postJson<T> (node: TestNode, path: string, body: unknown, status = 201): Promise<T> {
  const res = await fetch(node.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const text = await res.text()
  assert.equal(res.status, status, `${path}: ${res.status} ${text}`)
  return JSON.parse(text) as T
}

export async function view (node: TestNode, id: string): Promise<BuildView> {
  return await getJson<BuildView>(node, `/api/builds/${id}`)
}
