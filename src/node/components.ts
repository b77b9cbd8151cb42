import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Identify } from '@libp2p/identify'
import type { Ping } from '@libp2p/ping'
import type { GossipSub } from '@libp2p/gossipsub'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Level } from 'level'
import type { Registry } from 'prom-client'
import type { HttpRouter } from '../http/index.js'
import type { NodeKeys } from '../narinfo/index.js'
import type { BuildLimits } from '../daemon/index.js'
import type { NodeConfig } from './config.js'

export interface SwarmServices {
  identify: Identify
  ping: Ping
  pubsub: GossipSub
  dht: KadDHT
  [key: string]: unknown
}

/** The node's libp2p host, with the services every swarm member runs. */
export type SwarmLibp2p = Libp2p<SwarmServices>

/** The root database (one per process: classic-level locks it); services take `db.sublevel('<name>', …)`. */
export type NodeDb = Level<string, string>

/** What the node detected it can build with, after --system overrides. */
export interface NodeBuilder {
  kind: 'guix' | 'nix' | 'none'
  systems: string[]
  /** Nix with a local store and no remote builders: its build hook would only decline (src/daemon/detect.ts). */
  idleBuildHook?: boolean
  /** Nix with a plain local store: absent files mean invalid paths from the start (src/daemon/detect.ts). */
  localStore?: boolean
  /** Nix: max-silent-time and timeout as configured, for builds over a --serve connection (src/daemon/detect.ts). */
  buildLimits?: BuildLimits
}

/** Everything a service may use; passed to each ServiceFactory. */
export interface NodeComponents {
  libp2p: SwarmLibp2p
  /** The libp2p identity (<data>/peer-key): signs what this node authors, e.g. queue ops. */
  privateKey: PrivateKey
  http: HttpRouter
  db: NodeDb
  dataDir: string
  config: NodeConfig
  keys: NodeKeys
  metrics: Registry
  builder: NodeBuilder
  /** Store the node's narinfos speak of (/gnu/store or /nix/store). */
  storeDir: string
  /** Names protocol ids and topics within this node's swarm, e.g. protocolId('caps', '1.0.0'). */
  protocolId: (name: string, version: string) => string
  topic: (name: string) => string
}

/** A part of the node with a lifecycle: the queue, the scheduler, substitutes, … plug in as these. */
export interface NodeService {
  readonly name: string
  start(): Promise<void>
  stop(): Promise<void>
  /** merged into GET /api/status under its name */
  status?(): Record<string, unknown> | Promise<Record<string, unknown>>
  /** merged into each entry of GET /api/peers: what this service knows about that peer */
  peerInfo?(peerId: string): Record<string, unknown> | undefined
}

export type ServiceFactory = (components: NodeComponents) => NodeService
