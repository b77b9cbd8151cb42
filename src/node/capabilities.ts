import type { Connection, IdentifyResult, PeerId, Stream } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { VERSION } from '../version.js'
import type { NodeComponents, NodeService } from './components.js'
import { NodeError } from './errors.js'

const log = logger('guix-swarm:node:capabilities')

/** What a peer says it can do. */
export interface Capabilities {
  builder: 'guix' | 'nix' | 'none'
  systems: string[]
  maxBuilds: number
  freeSlots: number
  storeDir: string
  version: string
}

export class CapabilitiesMessageError extends NodeError {
  override name = 'CapabilitiesMessageError'
}

const MAX_MESSAGE = 16 * 1024
const EXCHANGE_TIMEOUT_MS = 10_000

export function parseCapabilities (bytes: Uint8Array): Capabilities {
  if (bytes.length > MAX_MESSAGE) throw new CapabilitiesMessageError(`capabilities message of ${bytes.length} bytes exceeds ${MAX_MESSAGE}`)
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder().decode(bytes))
  } catch (err) {
    throw new CapabilitiesMessageError(`capabilities message is not JSON: ${(err as Error).message}`)
  }
  const o = v as Record<string, unknown>
  const ok = v != null && typeof v === 'object' &&
    (o.builder === 'guix' || o.builder === 'nix' || o.builder === 'none') &&
    Array.isArray(o.systems) && o.systems.length <= 64 && o.systems.every((s) => typeof s === 'string' && s.length <= 64) &&
    Number.isInteger(o.maxBuilds) && (o.maxBuilds as number) >= 0 &&
    Number.isInteger(o.freeSlots) && (o.freeSlots as number) >= 0 &&
    typeof o.storeDir === 'string' && o.storeDir.length <= 256 &&
    typeof o.version === 'string' && o.version.length <= 64
  if (!ok) throw new CapabilitiesMessageError(`malformed capabilities message: ${JSON.stringify(v).slice(0, 200)}`)
  return { builder: o.builder, systems: o.systems, maxBuilds: o.maxBuilds, freeSlots: o.freeSlots, storeDir: o.storeDir, version: o.version } as Capabilities
}

async function readAll (stream: Stream): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let size = 0
  for await (const chunk of stream) {
    const buf = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    size += buf.length
    if (size > MAX_MESSAGE) throw new CapabilitiesMessageError(`capabilities message exceeds ${MAX_MESSAGE} bytes`)
    parts.push(buf)
  }
  return Buffer.concat(parts)
}

/**
 * Capability advertisement as a tiny request/response protocol rather than gossip: a peer
 * learns another's capabilities the moment they connect (identify tells us it speaks the
 * protocol), with no periodic broadcast and no wait for a gossip mesh, and only connected
 * peers — which are the ones that can be asked to build — are tracked. Both sides send
 * their own capabilities in one exchange; a change (e.g. free slots) is pushed to every
 * connected peer by re-running the exchange.
 */
export class CapabilitiesService implements NodeService {
  readonly name = 'capabilities'
  readonly protocol: string
  private local: Capabilities
  private readonly remote = new Map<string, Capabilities>()
  private readonly inflight = new Map<string, Promise<void>>()
  private started = false

  constructor (private readonly components: NodeComponents) {
    this.protocol = components.protocolId('caps', '1.0.0')
    this.local = {
      builder: components.builder.kind,
      systems: components.builder.systems,
      maxBuilds: components.config.maxBuilds,
      freeSlots: components.config.maxBuilds,
      storeDir: components.storeDir,
      version: VERSION
    }
  }

  private readonly onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    if (evt.detail.protocols.includes(this.protocol)) void this.exchange(evt.detail.peerId)
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    this.remote.delete(evt.detail.toString())
  }

  async start (): Promise<void> {
    const { libp2p } = this.components
    await libp2p.handle(this.protocol, (stream, connection) => { void this.answer(stream, connection) })
    libp2p.addEventListener('peer:identify', this.onIdentify)
    libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    const { libp2p } = this.components
    libp2p.removeEventListener('peer:identify', this.onIdentify)
    libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    await libp2p.unhandle(this.protocol)
  }

  /** This node's advertised capabilities. */
  get own (): Capabilities {
    return { ...this.local, systems: [...this.local.systems] }
  }

  /** What connected peers advertise, by peer id string. */
  peers (): ReadonlyMap<string, Capabilities> {
    return this.remote
  }

  /** Change what this node advertises (e.g. free slots) and tell connected peers. */
  async update (change: Partial<Omit<Capabilities, 'version'>>): Promise<void> {
    this.local = { ...this.local, ...change }
    const peers = this.components.libp2p.getPeers()
    await Promise.allSettled(peers.map(async (p) => {
      const protocols = (await this.components.libp2p.peerStore.get(p).catch(() => undefined))?.protocols ?? []
      if (protocols.includes(this.protocol)) await this.exchange(p)
    }))
  }

  status (): Record<string, unknown> {
    return { ...this.own, protocol: this.protocol, knownPeers: this.remote.size }
  }

  peerInfo (peerId: string): Record<string, unknown> | undefined {
    const c = this.remote.get(peerId)
    return c == null ? undefined : { ...c }
  }

  private encodeOwn (): Uint8Array {
    return new TextEncoder().encode(JSON.stringify(this.local))
  }

  /** Outbound: send ours, half-close, read theirs. One at a time per peer. */
  async exchange (peerId: PeerId): Promise<void> {
    const key = peerId.toString()
    const running = this.inflight.get(key)
    if (running != null) await running.catch(() => {})
    const p = this.doExchange(peerId).finally(() => {
      if (this.inflight.get(key) === p) this.inflight.delete(key)
    })
    this.inflight.set(key, p)
    await p.catch((err: Error) => log('exchange with %s failed: %s', key, err.message))
  }

  private async doExchange (peerId: PeerId): Promise<void> {
    const signal = AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)
    const stream = await this.components.libp2p.dialProtocol(peerId, this.protocol, { signal })
    try {
      stream.send(this.encodeOwn())
      await stream.close({ signal })
      const caps = parseCapabilities(await readAll(stream))
      this.remote.set(peerId.toString(), caps)
      log('peer %s advertises %o', peerId.toString(), caps)
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  /** Inbound: read theirs (until they half-close), answer with ours. */
  private async answer (stream: Stream, connection: Connection): Promise<void> {
    try {
      const caps = parseCapabilities(await readAll(stream))
      this.remote.set(connection.remotePeer.toString(), caps)
      stream.send(this.encodeOwn())
      await stream.close()
    } catch (err) {
      log('inbound capabilities from %s failed: %s', connection.remotePeer.toString(), (err as Error).message)
      stream.abort(err as Error)
    }
  }
}

export function capabilitiesService (components: NodeComponents): CapabilitiesService {
  return new CapabilitiesService(components)
}
