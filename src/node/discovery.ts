import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { logger } from '@libp2p/logger'
import type { NodeComponents, NodeDb, NodeService } from './components.js'

const log = logger('guix-swarm:node:discovery')

const MIN_BACKOFF_MS = 1_000
const MAX_BACKOFF_MS = 30_000
const CHECK_EVERY_MS = 1_000
/** Peers remembered across restarts, and how many of the most recent are redialled on start. */
const MAX_KNOWN = 200
const REDIAL_ON_START = 20

function knownPeersDb (db: NodeDb) {
  return db.sublevel<string, string>('known-peers', { valueEncoding: 'utf8' })
}
type KnownPeersDb = ReturnType<typeof knownPeersDb>

interface KnownPeer { addrs: string[], lastSeen: number }

interface Target {
  peerId: PeerId
  addr: Multiaddr
  nextAttempt: number
  backoff: number
  dialing: boolean
}

/**
 * Keeps the node in the swarm (the node itself dials what mDNS and bootstrap discover): it
 * redials bootstrap peers whenever the connection is gone, so a restarted bootstrap node is
 * found again (with backoff), and it remembers peers it has met in the database so that a
 * restarted node rejoins even when its bootstrap peers are down.
 */
export class DiscoveryService implements NodeService {
  readonly name = 'discovery'
  private readonly targets: Target[]
  private readonly known: KnownPeersDb
  private timer?: NodeJS.Timeout
  private running = false

  constructor (private readonly components: NodeComponents) {
    this.targets = components.config.bootstrap.map((s) => {
      const addr = multiaddr(s)
      const id = addr.getComponents().findLast((c) => c.name === 'p2p')?.value ?? ''
      return { peerId: peerIdFromString(id), addr, nextAttempt: 0, backoff: MIN_BACKOFF_MS, dialing: false }
    })
    this.known = knownPeersDb(components.db)
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail
    const target = this.targets.find((t) => t.peerId.equals(id))
    if (target != null) target.backoff = MIN_BACKOFF_MS
    void this.remember(id)
  }

  async start (): Promise<void> {
    const { libp2p } = this.components
    this.running = true
    libp2p.addEventListener('peer:connect', this.onConnect)
    // Connections made before this service started (bootstrap dials are quick) count too.
    for (const p of libp2p.getPeers()) void this.remember(p)
    void this.redialKnown()
    this.check()
    this.timer = setInterval(() => { this.check() }, CHECK_EVERY_MS)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    this.running = false
    if (this.timer != null) clearInterval(this.timer)
    const { libp2p } = this.components
    libp2p.removeEventListener('peer:connect', this.onConnect)
  }

  status (): Record<string, unknown> {
    const { libp2p } = this.components
    return {
      bootstrap: this.targets.map((t) => ({ peerId: t.peerId.toString(), address: t.addr.toString(), connected: libp2p.getConnections(t.peerId).length > 0 }))
    }
  }

  /** Redial bootstrap peers we are not connected to, each on its own backoff. */
  private check (): void {
    const { libp2p } = this.components
    const now = Date.now()
    for (const t of this.targets) {
      if (!this.running || t.dialing || now < t.nextAttempt || t.peerId.equals(libp2p.peerId)) continue
      if (libp2p.getConnections(t.peerId).length > 0) continue
      t.dialing = true
      libp2p.dial(t.addr, { signal: AbortSignal.timeout(10_000) }).then(() => {
        log('connected to bootstrap peer %s', t.addr.toString())
        t.backoff = MIN_BACKOFF_MS
        t.nextAttempt = 0
      }, (err: Error) => {
        log('bootstrap peer %s unreachable (%s); retry in %d ms', t.addr.toString(), err.message, t.backoff)
        t.nextAttempt = Date.now() + t.backoff
        t.backoff = Math.min(t.backoff * 2, MAX_BACKOFF_MS)
      }).finally(() => { t.dialing = false })
    }
  }

  private async remember (id: PeerId): Promise<void> {
    try {
      const conns = this.components.libp2p.getConnections(id)
      // Only addresses the peer listens on are worth redialling; an inbound connection's remote port is ephemeral.
      const stored = await this.components.libp2p.peerStore.get(id).catch(() => undefined)
      const addrs = stored?.addresses.map((a) => a.multiaddr.toString()) ?? []
      if (addrs.length === 0) {
        for (const c of conns) if (c.direction === 'outbound') addrs.push(c.remoteAddr.toString())
      }
      if (addrs.length === 0 || !this.running) return
      const entry: KnownPeer = { addrs: [...new Set(addrs)].slice(0, 16), lastSeen: Date.now() }
      await this.known.put(id.toString(), JSON.stringify(entry))
    } catch (err) {
      log('cannot remember peer %s: %s', id.toString(), (err as Error).message)
    }
  }

  private async redialKnown (): Promise<void> {
    const entries: Array<[string, KnownPeer]> = []
    try {
      for await (const [k, v] of this.known.iterator()) {
        try {
          entries.push([k, JSON.parse(v) as KnownPeer])
        } catch {}
      }
    } catch (err) {
      log('cannot read known peers: %s', (err as Error).message)
      return
    }
    entries.sort((a, b) => b[1].lastSeen - a[1].lastSeen)
    // Forget the oldest beyond the cap so the table does not grow for ever.
    for (const [k] of entries.slice(MAX_KNOWN)) await this.known.del(k).catch(() => {})
    const { libp2p } = this.components
    await Promise.allSettled(entries.slice(0, REDIAL_ON_START).map(async ([k, v]) => {
      if (!this.running) return
      const id = peerIdFromString(k)
      if (id.equals(libp2p.peerId) || libp2p.getConnections(id).length > 0) return
      await libp2p.peerStore.merge(id, { multiaddrs: v.addrs.map((a) => multiaddr(a)) })
      await libp2p.dial(id, { signal: AbortSignal.timeout(10_000) })
      log('reconnected to known peer %s', k)
    }))
  }
}

export function discoveryService (components: NodeComponents): DiscoveryService {
  return new DiscoveryService(components)
}
