// Thin wrappers over libp2p content routing (kad-dht): provide, find (deduplicated), re-provide.
import type { AbortOptions, PeerId, PeerInfo } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { logger } from '@libp2p/logger'
import type { CID } from 'multiformats/cid'

const log = logger('guix-swarm:transfer:routing')

export interface ContentRoutingComponents {
  libp2p: {
    contentRouting: {
      provide: (cid: CID, options?: AbortOptions) => Promise<void>
      findProviders: (cid: CID, options?: AbortOptions) => AsyncIterable<PeerInfo>
    }
    peerId: PeerId
  }
}

export async function provide (components: ContentRoutingComponents, cid: CID, options: AbortOptions = {}): Promise<void> {
  await components.libp2p.contentRouting.provide(cid, options)
}

export interface FindProvidersOptions extends AbortOptions {
  /** Stop after this many distinct providers. */
  limit?: number
  /** Leave our own peer id out (default true). */
  excludeSelf?: boolean
}

/**
 * Distinct providers of `cid`, each yielded once as soon as it is first seen; later
 * sightings of the same peer only add addresses (kad-dht reports a peer more than once).
 */
export async function * findProviders (components: ContentRoutingComponents, cid: CID, options: FindProvidersOptions = {}): AsyncGenerator<PeerInfo> {
  const seen = new Map<string, Multiaddr[]>()
  const self = components.libp2p.peerId
  for await (const found of components.libp2p.contentRouting.findProviders(cid, options)) {
    if ((options.excludeSelf ?? true) && found.id.equals(self)) continue
    const id = found.id.toString()
    const known = seen.get(id)
    if (known != null) {
      for (const ma of found.multiaddrs) if (!known.some((k) => k.equals(ma))) known.push(ma)
      continue
    }
    const multiaddrs: Multiaddr[] = []
    for (const ma of found.multiaddrs) if (!multiaddrs.some((k) => k.equals(ma))) multiaddrs.push(ma)
    seen.set(id, multiaddrs)
    yield { id: found.id, multiaddrs }
    if (options.limit !== undefined && seen.size >= options.limit) return
  }
}

export interface ReproviderComponents extends ContentRoutingComponents {
  /** The CIDs this node holds right now (NARs and store paths). */
  held: () => Iterable<CID> | AsyncIterable<CID> | Promise<Iterable<CID>>
}

export interface ReproviderInit {
  /** Default 12 h: kad-dht provider records expire after 48 h. */
  intervalMs?: number
  /** Provides running at once. */
  concurrency?: number
  /** Per-provide timeout. */
  timeoutMs?: number
}

/** Announces every held CID on start and then every interval. */
export class Reprovider {
  private readonly components: ReproviderComponents
  private readonly intervalMs: number
  private readonly concurrency: number
  private readonly timeoutMs: number
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private controller: AbortController | undefined
  /** Outcome of the last round. */
  lastRound = { provided: 0, failed: 0 }

  constructor (components: ReproviderComponents, init: ReproviderInit = {}) {
    this.components = components
    this.intervalMs = init.intervalMs ?? 12 * 60 * 60 * 1000
    this.concurrency = Math.max(1, init.concurrency ?? 4)
    this.timeoutMs = init.timeoutMs ?? 60_000
  }

  async start (): Promise<void> {
    if (this.controller != null) return
    this.controller = new AbortController()
    this.schedule(0)
  }

  async stop (): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    this.controller?.abort()
    this.controller = undefined
    await this.running?.catch(() => {})
  }

  /** Resolves when the round in progress (if any) is over; for callers that need "announced". */
  async settled (): Promise<void> {
    await this.running?.catch(() => {})
  }

  private schedule (delay: number): void {
    this.timer = setTimeout(() => {
      this.running = this.round().finally(() => {
        if (this.controller != null && !this.controller.signal.aborted) this.schedule(this.intervalMs)
      })
    }, delay)
    this.timer.unref()
  }

  /** Provide every held CID once. */
  async round (): Promise<void> {
    const signal = this.controller?.signal
    const result = { provided: 0, failed: 0 }
    const active = new Set<Promise<void>>()
    for await (const cid of await this.components.held()) {
      if (signal?.aborted === true) break
      const p: Promise<void> = provide(this.components, cid, { signal: signal != null ? AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]) : AbortSignal.timeout(this.timeoutMs) })
        .then(() => { result.provided++ }, (err: Error) => { result.failed++; log('provide %s failed: %s', cid, err.message) })
        .finally(() => { active.delete(p) })
      active.add(p)
      if (active.size >= this.concurrency) await Promise.race(active)
    }
    await Promise.all(active)
    this.lastRound = result
    log('re-provided %d CIDs (%d failed)', result.provided, result.failed)
  }
}
