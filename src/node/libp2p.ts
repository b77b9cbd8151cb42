import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { bootstrap } from '@libp2p/bootstrap'
import { mdns } from '@libp2p/mdns'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { logger } from '@libp2p/logger'
import type { NodeConfig } from './config.js'
import type { SwarmLibp2p } from './components.js'
import { ListenError, NodeConfigError } from './errors.js'
import { transferNoise, transferYamuxOptions } from '../transfer/index.js'

const log = logger('guix-swarm:node:libp2p')

/** `/guix-swarm/<name>/<version>` in the main swarm, `/guix-swarm/<swarm>/<name>/<version>` in others. */
export function protocolIdFor (swarm: string, name: string, version: string): string {
  return swarm === 'main' ? `/guix-swarm/${name}/${version}` : `/guix-swarm/${swarm}/${name}/${version}`
}

export function topicFor (swarm: string, name: string): string {
  return swarm === 'main' ? `/guix-swarm/${name}` : `/guix-swarm/${swarm}/${name}`
}

function parseAddrs (values: string[], what: string, needPeerId: boolean): Multiaddr[] {
  return values.map((v) => {
    let ma: Multiaddr
    try {
      ma = multiaddr(v)
    } catch (err) {
      throw new NodeConfigError(`bad ${what} multiaddr "${v}": ${(err as Error).message}`)
    }
    if (needPeerId && ma.getComponents().find((c) => c.name === 'p2p') == null) {
      throw new NodeConfigError(`${what} multiaddr "${v}" lacks the peer id: append /p2p/<peer id> (shown by \`guix-swarm status\` on that node)`)
    }
    return ma
  })
}

/** Build (not start) the libp2p host: TCP + noise + yamux, identify, ping, gossipsub, kad-dht, mDNS, bootstrap. */
export async function createSwarmLibp2p (config: NodeConfig, privateKey: PrivateKey): Promise<SwarmLibp2p> {
  const listen = parseAddrs(config.listen, 'listen', false).map((m) => m.toString())
  const boot = parseAddrs(config.bootstrap, 'bootstrap', true).map((m) => m.toString())
  const peerDiscovery: NonNullable<Libp2pOptions['peerDiscovery']> = []
  if (boot.length > 0) peerDiscovery.push(bootstrap({ list: boot, timeout: 0 }))
  if (config.mdns) {
    peerDiscovery.push(mdns({
      // A tag per swarm keeps separate swarms on one LAN (and concurrent tests) apart.
      serviceTag: config.swarm === 'main' ? '_guix-swarm._udp.local' : `_guix-swarm-${config.swarm}._udp.local`,
      interval: config.mdnsInterval
    }))
  }
  try {
    const node = await createLibp2p({
      privateKey,
      start: false,
      addresses: { listen },
      transports: [tcp()],
      // Stock noise on the wire, fewer socket writes for NAR transfers (src/transfer/noise.ts).
      connectionEncrypters: [transferNoise()],
      // Bounded stream windows, so a paused NAR transfer stream is not reset (LIBP2P.md pitfall 2).
      streamMuxers: [yamux(transferYamuxOptions)],
      peerDiscovery,
      services: {
        identify: identify(),
        ping: ping(),
        // Queue ops carry their author's signature and hash chain, checked by src/crdt; a signed
        // gossip envelope around each only repeated that check (1.3 s of CPU per builder for 200
        // builds). Unsigned messages are identified by their content (sha-256 of the op bytes).
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, globalSignaturePolicy: 'StrictNoSign' }),
        dht: kadDHT({
          protocol: protocolIdFor(config.swarm, 'kad', '1.0.0'),
          clientMode: false,
          // LAN and loopback addresses are what this swarm mostly has; the default mapper drops them.
          peerInfoMapper: passthroughMapper,
          initialQuerySelfInterval: 0
        })
      }
    })
    return node as unknown as SwarmLibp2p
  } catch (err) {
    log.error('creating libp2p failed: %s', (err as Error).message)
    throw err
  }
}

/** Start libp2p, turning a busy port into a clear error. */
export async function startSwarmLibp2p (node: SwarmLibp2p, config: NodeConfig): Promise<void> {
  try {
    await node.start()
  } catch (err) {
    const e = err as Error & { code?: string }
    if (/EADDRINUSE|address already in use/i.test(`${e.code ?? ''} ${e.message}`)) {
      throw new ListenError(`cannot listen on ${config.listen.join(', ')}: address already in use (another guix-swarm node?); choose another with --listen`)
    }
    throw new ListenError(`cannot start libp2p on ${config.listen.join(', ')}: ${e.message}`)
  }
}
