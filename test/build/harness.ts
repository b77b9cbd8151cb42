// Real `guix-swarm join` processes, each in its own private Nix store (nix-ns), for the building
// tests: builders run the real scheduler on their own daemon; the submitter's store alone holds
// the .drv files. Keys are made before the nodes start so each can trust the others' files.
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import { ensureKeys } from '../../src/narinfo/index.js'
import type { BuildView } from '../../src/crdt/index.js'
import { CLI_ARGV } from '../helpers/cli.js'
import { inNamespace, nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'
import { exited, PROCESS_SWARM, removeDir, tempDir, type TestNode } from '../helpers/swarm.js'

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
  const args = [
    'join', '--data-dir', p.dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0',
    '--builder', opts.builder, '--store-dir', '/nix/store', '--no-mdns', '--swarm', PROCESS_SWARM,
    ...(opts.builder === 'nix' ? ['--system', 'x86_64-linux'] : []),
    ...(opts.bootstrap !== undefined ? ['--bootstrap', opts.bootstrap.addrs[0]] : []),
    ...opts.trust.filter((t) => t !== p).flatMap((t) => ['--trusted-key', t.nixKeyFile]),
    ...(opts.args ?? [])
  ]
  const [cmd, argv] = inNamespace(p.ns.dir, process.execPath, [...CLI_ARGV, ...args])
  const proc: ChildProcess = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: p.ns.env })
  let out = ''
  let err = ''
  proc.stdout?.on('data', (b: Buffer) => { out += b.toString() })
  proc.stderr?.on('data', (b: Buffer) => { err += b.toString() })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { done(); proc.kill('SIGKILL'); reject(new Error(`node not up after 40 s\n${out}\n${err}`)) }, 40_000)
    const onData = (): void => { if (/ is up /.test(out) && /\n {2}discovery /.test(out)) { done(); resolve() } }
    const onExit = (code: number | null): void => { done(); reject(new Error(`node exited with ${String(code)} before it was up\n${out}\n${err}`)) }
    const done = (): void => { clearTimeout(timer); proc.stdout?.off('data', onData); proc.off('exit', onExit) }
    proc.stdout?.on('data', onData)
    proc.on('exit', onExit)
  })
  const url = (await readFile(join(p.dataDir, 'api'), 'utf8')).trim()
  return {
    proc,
    dataDir: p.dataDir,
    url,
    peerId: /node (\S+) is up/.exec(out)?.[1] ?? '',
    addrs: [...out.matchAll(/(\/ip[46]\/\S+\/p2p\/\S+)/g)].map((m) => m[1]),
    stdout: () => out,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      return await exited(proc)
    },
    ns: p.ns,
    nixKey: p.nixKey,
    nixKeyFile: p.nixKeyFile
  }
}

export async function cleanup (members: Array<SwarmMember | undefined>, prepared: Prepared[]): Promise<void> {
  await Promise.all(members.map(async (m) => { await m?.stop() }))
  for (const p of prepared) {
    await removeDir(p.dataDir)
    await p.ns.destroy()
  }
}

/** Instantiate a Nix expression (a list of derivations) in one store; returns the .drv paths. */
export async function instantiate (ns: NixNamespace, expr: string): Promise<string[]> {
  const f = join(ns.dir, '..', `expr-${Date.now()}-${Math.random().toString(36).slice(2)}.nix`)
  await writeFile(f, expr)
  const r = await ns.exec('nix-instantiate', [f])
  assert.equal(r.code, 0, r.stderr.toString())
  return r.stdout.toString().trim().split('\n')
}

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
