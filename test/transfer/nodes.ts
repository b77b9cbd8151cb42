// Real libp2p nodes on 127.0.0.1 for the transfer tests (tcp + noise + yamux + kad-dht).
import '../../src/polyfill.js'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper, type SingleKadDHT } from '@libp2p/kad-dht'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { transferNoise, transferYamuxOptions } from '../../src/transfer/index.js'

export type TestNode = Libp2p<{ dht: SingleKadDHT, identify: ReturnType<ReturnType<typeof identify>>, ping: ReturnType<ReturnType<typeof ping>> }>

export async function createNode (): Promise<TestNode> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [transferNoise()],
    streamMuxers: [yamux(transferYamuxOptions)],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: '/guix-swarm-test/kad/1.0.0',
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        initialQuerySelfInterval: 0
      })
    }
  })
  return node as unknown as TestNode
}

/**
 * A bare node (tcp + yamux + identify, no DHT) encrypting with the node's noise (`transfer`) or
 * the library's own (`stock`), to compare the two or test one against the other.
 */
export async function createEncryptedNode (encrypter: 'transfer' | 'stock'): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [encrypter === 'transfer' ? transferNoise() : noise()],
    streamMuxers: [yamux(transferYamuxOptions)],
    services: { identify: identify() }
  })
}

/** Dial b from a and wait until both routing tables have taken the other in (so DHT queries work). */
export async function connect (a: TestNode, b: TestNode): Promise<void> {
  const before = [a.services.dht.routingTable.size, b.services.dht.routingTable.size]
  await a.dial(b.getMultiaddrs()[0])
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (a.services.dht.routingTable.size > before[0] && b.services.dht.routingTable.size > before[1]) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('routing tables never took the new peer in')
}

export async function tempDir (prefix: string): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `guix-swarm-transfer-${prefix}-`))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}

export async function stopAll (nodes: TestNode[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => { await n.stop() }))
}
