// Test helper: real libp2p nodes (tcp on 127.0.0.1, noise, yamux, identify, gossipsub) each
// running a QueueService on a real level database in a temp dir.
import '../../src/polyfill.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { Level } from 'level'
import { DEFAULT_QUEUE_CONFIG, QueueService, type QueueConfig } from '../../src/crdt/index.js'

export type TestLibp2p = Libp2p<{ identify: ReturnType<ReturnType<typeof identify>>, pubsub: GossipSub }>

export async function createTestLibp2p (privateKey: PrivateKey): Promise<TestLibp2p> {
  return await createLibp2p({
    privateKey,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, globalSignaturePolicy: 'StrictNoSign' })
    }
  })
}

export interface TestNode {
  dir: string
  key: PrivateKey
  libp2p: TestLibp2p
  db: Level<string, Uint8Array>
  queue: QueueService
  /** Clean stop: service, libp2p, database. */
  stop: () => Promise<void>
}

export async function tempDir (): Promise<string> {
  return await mkdtemp(join(tmpdir(), 'guix-swarm-crdt-'))
}

export async function startNode (opts: { dir?: string, key?: PrivateKey, config?: Partial<QueueConfig>, now?: () => number } = {}): Promise<TestNode> {
  const dir = opts.dir ?? await tempDir()
  const key = opts.key ?? await generateKeyPair('Ed25519')
  const libp2p = await createTestLibp2p(key)
  const db = new Level<string, Uint8Array>(join(dir, 'db'), { valueEncoding: 'view' })
  await db.open()
  const queue = new QueueService({
    libp2p,
    pubsub: libp2p.services.pubsub,
    db: db.sublevel<string, Uint8Array>('queue', { valueEncoding: 'view' }),
    privateKey: key,
    ...(opts.now !== undefined ? { now: opts.now } : {}),
    config: { syncIntervalMs: 1000, ...opts.config }
  })
  await queue.start()
  return {
    dir,
    key,
    libp2p,
    db,
    queue,
    stop: async () => {
      await queue.stop()
      await libp2p.stop()
      await db.close()
    }
  }
}

export async function connect (a: TestNode, b: TestNode): Promise<void> {
  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
}

/** Poll until `cond` holds; fails with `what` after a generous timeout (never a timing assertion). */
export async function waitFor (what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

export async function removeDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

/**
 * Two queue nodes A and B connected, and a bare gossipsub node (the "rogue", its own key) dialled
 * to A and subscribed to the queue topic; resolves once A and the rogue see each other's topic
 * and A sees B's. The caller stops all three (`stopAll`).
 */
export async function rogueBesideTwo (config: Partial<QueueConfig>, rogueKey?: PrivateKey): Promise<{ a: TestNode, b: TestNode, rogue: TestLibp2p, stopAll: () => Promise<void> }> {
  const topic = config.topic ?? DEFAULT_QUEUE_CONFIG.topic
  const a = await startNode({ config })
  const b = await startNode({ config })
  const rogue = await createTestLibp2p(rogueKey ?? await generateKeyPair('Ed25519'))
  const stopAll = async (): Promise<void> => { await rogue.stop(); await a.stop(); await b.stop(); await removeDir(a.dir); await removeDir(b.dir) }
  await connect(a, b)
  await rogue.dial(a.libp2p.getMultiaddrs()[0])
  rogue.services.pubsub.subscribe(topic)
  await waitFor('rogue sees A subscribed', () => rogue.services.pubsub.getSubscribers(topic).some(p => p.equals(a.libp2p.peerId)))
  await waitFor('A sees B subscribed', () => a.libp2p.services.pubsub.getSubscribers(topic).some(p => p.equals(b.libp2p.peerId)))
  return { a, b, rogue, stopAll }
}
