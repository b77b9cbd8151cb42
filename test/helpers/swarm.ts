// Starts real `guix-swarm join` processes for tests and waits until they are up.
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { CLI_ARGV, startCli } from './cli.js'
import { spawn } from 'node:child_process'

export interface TestNode {
  proc: ChildProcess
  dataDir: string
  url: string
  peerId: string
  /** libp2p multiaddrs with /p2p/ */
  addrs: string[]
  stdout: () => string
  stderr: () => string
  /** SIGTERM and wait for exit; returns the exit code. */
  stop: () => Promise<number | null>
}

export interface StartNodeOptions {
  dataDir?: string
  args?: string[]
  /** Run under `ip netns exec NS`. */
  netns?: string
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
  /** Run the node through this wrapper (e.g. a private Nix store's mount namespace) with exactly this environment. */
  launch?: { wrap: (command: string, args: string[]) => [string, string[]], env: NodeJS.ProcessEnv }
}

/** Default swarm of nodes this test process starts: shared within the process, apart from others. */
export const PROCESS_SWARM = `t${process.pid}x${randomBytes(2).toString('hex')}`

/** A unique swarm name so concurrent tests' mDNS does not mix. */
export function testSwarmName (): string {
  return `t${randomBytes(5).toString('hex')}`
}

export async function tempDir (prefix = 'gs-node-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

export async function removeDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

/** Wait for the process to exit; resolves with its code. */
export async function exited (proc: ChildProcess): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode
  return await new Promise((resolve) => proc.once('exit', (code) => resolve(code)))
}

/**
 * Start `guix-swarm join --builder none` with loopback defaults (`--listen /ip4/127.0.0.1/tcp/0
 * --http 127.0.0.1:0`, overridable through args) and wait for its banner and API.
 */
export async function startNode (opts: StartNodeOptions = {}): Promise<TestNode> {
  const dataDir = opts.dataDir ?? await tempDir()
  const args = opts.args ?? []
  const defaults: string[] = []
  if (!args.includes('--listen')) defaults.push('--listen', '/ip4/127.0.0.1/tcp/0')
  if (!args.includes('--http')) defaults.push('--http', '127.0.0.1:0')
  if (!args.includes('--builder')) defaults.push('--builder', 'none')
  // Never join the real "main" swarm, nor another test process's nodes, by mDNS.
  if (!args.includes('--swarm')) defaults.push('--swarm', PROCESS_SWARM)
  const joinArgs = ['join', '--data-dir', dataDir, ...defaults, ...args]
  const env = { ...process.env, ...opts.env }
  const launch = opts.launch
  const proc = launch != null
    ? spawn(...launch.wrap(process.execPath, [...CLI_ARGV, ...joinArgs]), { stdio: ['ignore', 'pipe', 'pipe'], env: launch.env })
    : opts.netns == null
      ? startCli(joinArgs, { env })
      : spawn('ip', ['netns', 'exec', opts.netns, process.execPath, ...CLI_ARGV, ...joinArgs], { stdio: ['ignore', 'pipe', 'pipe'], env })
  let out = ''
  let err = ''
  proc.stdout?.on('data', (b: Buffer) => { out += b.toString() })
  proc.stderr?.on('data', (b: Buffer) => { err += b.toString() })
  const timeoutMs = opts.timeoutMs ?? 30_000
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); proc.kill('SIGKILL'); reject(new Error(`node in ${dataDir} not up after ${timeoutMs} ms\nstdout: ${out}\nstderr: ${err}`)) }, timeoutMs)
    const onData = (): void => { if (/ is up /.test(out) && /\n {2}discovery /.test(out)) { cleanup(); resolve() } }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`node in ${dataDir} exited with ${String(code)} before it was up\nstdout: ${out}\nstderr: ${err}`)) }
    const cleanup = (): void => { clearTimeout(timer); proc.stdout?.off('data', onData); proc.off('exit', onExit) }
    proc.stdout?.on('data', onData)
    proc.on('exit', onExit)
  })
  try {
    await ready
  } catch (err) {
    // A temp dir we made is ours to remove when the node never came up.
    if (opts.dataDir == null) await removeDir(dataDir)
    throw err
  }
  const url = (await readFile(join(dataDir, 'api'), 'utf8')).trim()
  const peerId = /node (\S+) is up/.exec(out)?.[1] ?? ''
  const addrs = [...out.matchAll(/(\/ip[46]\/\S+\/p2p\/\S+)/g)].map((m) => m[1])
  return {
    proc,
    dataDir,
    url,
    peerId,
    addrs,
    stdout: () => out,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      return await exited(proc)
    }
  }
}

/** A first node, then `count - 1` more bootstrapping from it, all pushed onto `nodes` (the caller stops them). */
export async function startBootstrapped (nodes: TestNode[], count: number, args: string[]): Promise<void> {
  const first = await startNode({ args })
  nodes.push(first)
  nodes.push(...await Promise.all(Array.from({ length: count - 1 }, async () => await startNode({ args: [...args, '--bootstrap', first.addrs[0]] }))))
}

/** Poll `fn` until it returns a truthy value or the time runs out (then throw with `what`). */
export async function waitFor<T> (fn: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 20_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last != null ? `: ${(last as Error).message}` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

export interface ApiPeer { peerId: string, addresses: string[], builder?: string, systems?: string[], maxBuilds?: number, freeSlots?: number }

/** GET /api/peers of a node (straight HTTP: cheap to poll). */
export async function apiPeers (node: TestNode): Promise<ApiPeer[]> {
  const res = await fetch(`${node.url}/api/peers`)
  return ((await res.json()) as { peers: ApiPeer[] }).peers
}

/** Wait until every node lists every other (with advertised capabilities). */
export async function waitForFullMesh (nodes: TestNode[], timeoutMs = 20_000): Promise<void> {
  await waitFor(async () => {
    for (const n of nodes) {
      const peers = await apiPeers(n)
      for (const m of nodes) {
        if (m === n) continue
        const p = peers.find((x) => x.peerId === m.peerId)
        if (p?.builder == null) return false
      }
    }
    return true
  }, `${nodes.length} nodes to see each other`, timeoutMs)
}
