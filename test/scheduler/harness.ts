// Test harness: real QueueService replicas over real libp2p on 127.0.0.1 (level on disk), each
// with its own Nix store (mount namespace) and a SchedulerService building with real nix-store.
import '../../src/polyfill.js'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_QUEUE_CONFIG, type QueueService, type QueueConfig } from '../../src/crdt/index.js'
import { startNode, type TestLibp2p } from '../crdt/net.js'
import { openBackend, type Backend, type StoreDaemon } from '../../src/daemon/index.js'
import { SchedulerService, type InputFetcher, type OutputPublisher, type SchedulerComponents, type SchedulerConfig } from '../../src/scheduler/index.js'
import { BinaryCache, SMALL_NAR_BYTES } from '../../src/cache/index.js'
import { generateNixKeyPair, type NixKeyPair } from '../../src/narinfo/index.js'
import { nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'

export interface QueueNode {
  dir: string
  libp2p: TestLibp2p
  queue: QueueService
  stop: () => Promise<void>
}

export async function tempDir (prefix = 'guix-swarm-sched-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

/** A queue replica from the crdt test rig, with signatures checked on the main thread. */
export async function startQueueNode (config: Partial<QueueConfig> = {}, now?: () => number): Promise<QueueNode> {
  const node = await startNode({ dir: await tempDir(), config: { verifyWorkers: 0, ...config }, ...(now !== undefined ? { now } : {}) })
  return {
    dir: node.dir,
    libp2p: node.libp2p,
    queue: node.queue,
    stop: async () => {
      await node.stop()
      await rm(node.dir, { recursive: true, force: true })
    }
  }
}

/** Full mesh; waits until gossipsub meshes have formed both ways. */
export async function mesh (nodes: QueueNode[], topic = DEFAULT_QUEUE_CONFIG.topic): Promise<void> {
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) await nodes[i].libp2p.dial(nodes[j].libp2p.getMultiaddrs()[0])
  }
  await waitFor('gossip subscriptions', () => nodes.every(n => n.libp2p.services.pubsub.getSubscribers(topic).length >= nodes.length - 1), 20_000)
}

export async function waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!await cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

/** Publishes by asking the daemon for the output's NAR hash and size (src/cache does the real NARs). */
export function pathInfoPublisher (published: string[] = []): OutputPublisher {
  return {
    async addFromStore (store, storePath) {
      const info = await store.queryPathInfo(storePath)
      published.push(storePath)
      return { storePath, narHash: info.narHash, narSize: info.narSize }
    }
  }
}

/** Copy the closure of `roots` from one store to another (what the swarm fetcher will do over libp2p). */
export async function copyClosure (from: StoreDaemon, to: StoreDaemon, roots: string[]): Promise<void> {
  for (const p of await from.queryRequisites(roots)) {
    if (await to.isValid(p)) continue
    const { info, nar } = await from.exportPath(p)
    await to.importPath({ storePath: info.path, narHash: info.narHash, narSize: info.narSize, references: info.references, ...(info.deriver !== undefined ? { deriver: info.deriver } : {}) }, nar)
  }
}

export interface BuildNode {
  q: QueueNode
  ns: NixNamespace
  nix: Backend
  dir: string
  scheduler: SchedulerService
  published: string[]
  /** The node's binary cache (real NARs, signed narinfos) and its signing key. */
  cache: BinaryCache
  key: NixKeyPair
  /** Every ensureOutputs call: the paths, and the peers the scheduler named as their holders. */
  outputsAsked: Array<{ paths: string[], holders: string[] }>
}

/** The real BinaryCache as the publisher, noting what it was asked to publish. */
export function cachePublisher (cache: BinaryCache, published: string[]): OutputPublisher {
  return {
    async addFromStore (store, storePath) {
      const e = await cache.addFromStore(store, storePath)
      published.push(storePath)
      return e
    }
  }
}

/**
 * Inputs come from whichever peer store holds them: stands in for the swarm fetcher (node wiring
 * comes later), but really moves NARs between separate stores. Imports into one store are
 * serialised so two builds needing the same input do not race on it.
 */
export function peerInputs (self: () => Backend, peers: () => Backend[], asked?: Array<{ paths: string[], holders: string[] }>): InputFetcher {
  let chain: Promise<unknown> = Promise.resolve()
  const serial = async <T>(f: () => Promise<T>): Promise<T> => {
    const p = chain.then(f)
    chain = p.catch(() => {})
    return await p
  }
  const fetch = async (paths: string[]): Promise<string[]> => await serial(async () => {
    const own = self().store
    let missing = await own.filterInvalid(paths)
    for (const peer of peers()) {
      if (missing.length === 0) break
      const invalidThere = new Set(await peer.store.filterInvalid(missing))
      const have = missing.filter(p => !invalidThere.has(p))
      if (have.length > 0) await copyClosure(peer.store, own, have)
      missing = await own.filterInvalid(missing)
    }
    return missing
  })
  return {
    async ensureDerivation (drv) {
      const missing = await fetch([drv])
      if (missing.length > 0) throw new Error(`${drv} is in no peer store`)
    },
    async ensureOutputs (paths, _signal, holders = []) {
      asked?.push({ paths, holders })
      return await fetch(paths)
    }
  }
}

export interface BuildNodeOptions {
  config?: Partial<SchedulerConfig>
  hooks?: SchedulerComponents['hooks']
  peers?: () => Backend[]
  queue?: QueueNode
  /** 'cache' (default): real NARs into the node's BinaryCache; 'pathinfo': only the daemon's hash and size. */
  publish?: 'cache' | 'pathinfo'
}

export async function startBuildNode (opts: BuildNodeOptions = {}): Promise<BuildNode> {
  const q = opts.queue ?? await startQueueNode()
  const dir = await tempDir('guix-swarm-sched-node-')
  const ns = await nixNamespace(dir)
  const nix = await openBackend('nix', { runner: ns.runner, env: ns.env, realStoreDir: ns.realStoreDir, inputs: 'require' })
  const published: string[] = []
  const key = generateNixKeyPair(`sched-test-${Math.random().toString(36).slice(2, 8)}`)
  const cache = new BinaryCache({ dir: join(dir, 'cache'), storeDir: '/nix/store', keys: key, compressions: ['zstd'], uncompressedBelow: SMALL_NAR_BYTES })
  const node: Partial<BuildNode> = { q, ns, nix, dir, published, cache, key, outputsAsked: [] }
  node.scheduler = makeScheduler(node as BuildNode, opts)
  return node as BuildNode
}

export function makeScheduler (node: Omit<BuildNode, 'scheduler'>, opts: BuildNodeOptions = {}): SchedulerService {
  return new SchedulerService({
    queue: node.q.queue,
    store: node.nix.store,
    builder: node.nix.builder,
    publisher: opts.publish === 'pathinfo' ? pathInfoPublisher(node.published) : cachePublisher(node.cache, node.published),
    inputs: peerInputs(() => node.nix, opts.peers ?? (() => []), node.outputsAsked),
    logsDir: join(node.dir, 'logs'),
    gcRootsDir: join(node.dir, 'gcroots'),
    ...(opts.hooks !== undefined ? { hooks: opts.hooks } : {}),
    config: { systems: ['x86_64-linux'], maxBuilds: 2, leaseMs: 1500, settleMs: 300, pollMs: 250, jitterMs: 30, backoffBaseMs: 200, backoffMaxMs: 1000, ...opts.config }
  })
}

export async function stopBuildNode (n: BuildNode): Promise<void> {
  await n.scheduler.stop().catch(() => {})
  await n.q.stop().catch(() => {})
  await n.ns.destroy().catch(() => {})
}

/** Write a Nix file and instantiate it in each namespace; returns the .drv paths it prints, in order. */
export async function instantiate (expr: string, namespaces: NixNamespace[]): Promise<string[]> {
  const dir = await tempDir('guix-swarm-sched-expr-')
  try {
    const f = join(dir, 'drvs.nix')
    await writeFile(f, expr)
    let out: string[] | undefined
    for (const ns of namespaces) {
      const r = await ns.exec('nix-instantiate', [f])
      if (r.code !== 0) throw new Error(`nix-instantiate failed: ${r.stderr.toString()}`)
      const drvs = r.stdout.toString().trim().split('\n')
      if (out !== undefined && JSON.stringify(out) !== JSON.stringify(drvs)) throw new Error('instantiation differs between stores')
      out = drvs
    }
    return out ?? []
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** A trivial derivation as Nix source; `body` is shell run by /bin/sh with $out set. */
export function drvExpr (name: string, body: string, inputs: string[] = []): string {
  const refs = inputs.map(i => `echo \${${i}} >> $out/inputs; `).join('')
  return `derivation { name = "${name}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir $out; ${refs}${body}" ]; }`
}
