// Pulling one store path from the swarm into the local cache: store path → its builder (a hint
// from the queue), then DHT providers → narinfo (believed only when signed by a trusted key,
// whoever sent it) → NAR providers → each NAR file downloaded, decompressed and checked against
// NarHash/NarSize before it is renamed into the cache. Nothing unverified is ever visible to a
// reader of the cache.
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { mkdir, rm } from 'node:fs/promises'
import type { PeerId } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { verifyFile, type BinaryCache, type CacheEntry } from '../cache/index.js'
import { parseCompression } from '../nar/index.js'
import { narHashBytes, verifyNarinfo, type Narinfo, type PublicKey } from '../narinfo/index.js'
import { findProviders, narCid, storePathCid, type ContentRoutingComponents, type FetchResult, type TransferClient } from '../transfer/index.js'
import { SubstituteFetchError, SubstituteLookupBusyError, SubstituteNotFoundError } from './errors.js'
import { LiveNar } from './live.js'
import { narFileKey } from './source.js'

const log = logger('guix-swarm:substitutes:fetch')
/** Misses remembered at most (about 100 bytes each). */
const MAX_REMEMBERED_MISSES = 100_000
/**
 * NAR files up to this size are fetched whole from the peers that sent the narinfo (no walk for
 * the NAR hash), so NARs this small are announced under their store path only.
 */
export const SMALL_NAR_FILE_BYTES = 4 * 1024 * 1024

/**
 * What an entry is announced under: its store path's CID, and its NAR's for a large NAR only. A
 * small NAR is fetched from the peers that sent its narinfo (SwarmFetcher), so nobody walks the
 * DHT for its NAR hash, and a build's trivial outputs cost one DHT walk each instead of two.
 */
export function announcedCids (entry: Pick<CacheEntry, 'hashPart' | 'narHash' | 'narSize'>): CID[] {
  const path = storePathCid(entry.hashPart)
  return entry.narSize > SMALL_NAR_FILE_BYTES ? [path, narCid(narHashBytes(entry.narHash))] : [path]
}

export interface SwarmFetcherComponents extends ContentRoutingComponents {
  client: TransferClient
  cache: BinaryCache
  /** Keys whose signatures make a narinfo believable (read at each fetch: the list may change). */
  trusted: () => readonly PublicKey[]
  /** Where downloads are written before they move into the cache (same filesystem as the cache). */
  tmpDir: string
  /** Called once a fetched entry is in the cache (index it, announce it). */
  onAdded: (entry: CacheEntry) => Promise<void>
  /** Whether any peer is connected: with none, a DHT query only waits for its timeout. */
  hasPeers: () => boolean
  /**
   * Peers likely to hold a path without a DHT walk (the node whose build made it, from the
   * queue), asked first; what they send is verified like anything from the DHT.
   */
  hints?: (hashPart: string) => PeerId[]
}

export interface SwarmFetcherInit {
  /** Total time to find a trusted narinfo (DHT walk included); default 30 s. */
  lookupTimeoutMs?: number
  /** Providers asked for the narinfo / the NAR at most; default 8. */
  maxProviders?: number
  /**
   * NAR files larger than this are served while they arrive (`acquire`); smaller ones are fetched
   * and verified whole first. Default 4 MiB.
   */
  streamAboveBytes?: number
  /** How long `acquire` remembers that the swarm has no trusted copy of a path; default 60 s. */
  negativeTtlMs?: number
  /** `acquire` lookups walking the DHT at once (default 16) and waiting for a turn (default 256); more are refused at once. */
  maxLookups?: number
  maxQueuedLookups?: number
}

/** Counters of `acquire`'s swarm lookups (what HTTP clients and scanners cost the DHT). */
export interface LookupStats {
  /** DHT walks started. */
  started: number
  /** Answered "not available" from the negative cache, without a walk. */
  negativeHits: number
  /** Refused because too many walks were running and waiting. */
  refusedBusy: number
  /** Walks that found no trusted narinfo (now in the negative cache). */
  notFound: number
  /** Running now. */
  running: number
}

/** What `acquire` found: the path is in the cache now, or its NAR is arriving (`live`). */
export type Acquired =
  | { kind: 'cached' }
  | { kind: 'live', narinfoText: string, live: LiveNar }

interface TrustedNarinfo { narinfo: Narinfo, text: string, from: string, holders: PeerId[] }

export interface FetchOutcome {
  entry: CacheEntry
  /** Peer ids whose narinfo was believed (first) and whose bytes made the NAR files. */
  narinfoFrom: string
  narFrom: string[]
  /** Peers whose bytes failed verification. */
  badPeers: string[]
}

export class SwarmFetcher {
  private readonly lookupTimeoutMs: number
  private readonly maxProviders: number
  private readonly streamAboveBytes: number
  private readonly inFlight = new Map<string, Promise<FetchOutcome>>()
  /** Large NARs being served while they arrive, by hash part. */
  private readonly live = new Map<string, LiveNar>()
  /** Lookups in progress, so a narinfo request and the NAR request after it share one. */
  private readonly acquiring = new Map<string, Promise<Acquired>>()
  private readonly negativeTtlMs: number
  private readonly maxLookups: number
  private readonly maxQueuedLookups: number
  /** hash part → when its "not in the swarm" answer expires; insertion-ordered, so the oldest go first. */
  private readonly misses = new Map<string, number>()
  private readonly lookupQueue: Array<() => void> = []
  readonly lookupStats: LookupStats = { started: 0, negativeHits: 0, refusedBusy: 0, notFound: 0, running: 0 }
  /** Narinfos asked of known or hinted peers, and how many were believed (no DHT walk needed). */
  readonly hintStats = { asked: 0, believed: 0 }

  constructor (private readonly components: SwarmFetcherComponents, init: SwarmFetcherInit = {}) {
    this.lookupTimeoutMs = init.lookupTimeoutMs ?? 30_000
    this.maxProviders = init.maxProviders ?? 8
    this.streamAboveBytes = init.streamAboveBytes ?? SMALL_NAR_FILE_BYTES
    this.negativeTtlMs = init.negativeTtlMs ?? 60_000
    this.maxLookups = init.maxLookups ?? 16
    this.maxQueuedLookups = init.maxQueuedLookups ?? 256
  }

  /** The download of `hashPart` being served while it arrives, if any. */
  liveNar (hashPart: string): LiveNar | undefined {
    return this.live.get(hashPart)
  }

  /**
   * For the HTTP front: make `hashPart` servable. A small NAR (or a narinfo with several files) is
   * fetched and verified whole, then it is `cached`; a large one starts downloading and comes back
   * `live` at once, with its trusted narinfo. Rejects like `fetch` when nobody has it.
   */
  async acquire (hashPart: string): Promise<Acquired> {
    const live = this.live.get(hashPart)
    if (live != null) return { kind: 'live', narinfoText: live.narinfoText, live }
    const running = this.inFlight.get(hashPart)
    if (running != null) { await running; return { kind: 'cached' } }
    const pending = this.acquiring.get(hashPart)
    if (pending != null) return await pending
    const p = this.doAcquire(hashPart).finally(() => this.acquiring.delete(hashPart))
    this.acquiring.set(hashPart, p)
    return await p
  }

  /**
   * A DHT walk for a client's request, bounded: a path nobody had a minute ago is answered from
   * memory, and a flood of unknown hashes (a scanner) queues behind a few walks or is refused,
   * instead of starting a walk per request.
   */
  private async lookup (hashPart: string): Promise<TrustedNarinfo> {
    const now = Date.now()
    const until = this.misses.get(hashPart)
    if (until !== undefined && until > now) {
      this.lookupStats.negativeHits++
      throw new SubstituteNotFoundError(`${hashPart}: no trusted copy in the swarm (remembered for ${Math.round((until - now) / 1000)} s more)`)
    }
    if (until !== undefined) this.misses.delete(hashPart)
    if (!this.components.hasPeers()) throw new SubstituteNotFoundError(`${hashPart}: no peers to ask`)
    if (this.lookupStats.running >= this.maxLookups) {
      if (this.lookupQueue.length >= this.maxQueuedLookups) {
        this.lookupStats.refusedBusy++
        throw new SubstituteLookupBusyError(`${hashPart}: ${this.lookupStats.running} swarm lookups running and ${this.lookupQueue.length} waiting; try again later`)
      }
      await new Promise<void>((resolve) => this.lookupQueue.push(resolve))
    }
    this.lookupStats.running++
    this.lookupStats.started++
    try {
      return await this.trustedNarinfo(hashPart, AbortSignal.timeout(this.lookupTimeoutMs))
    } catch (err) {
      if (err instanceof SubstituteNotFoundError) {
        this.lookupStats.notFound++
        if (this.misses.size >= MAX_REMEMBERED_MISSES) this.misses.delete(this.misses.keys().next().value as string)
        this.misses.set(hashPart, Date.now() + this.negativeTtlMs)
      }
      throw err
    } finally {
      this.lookupStats.running--
      this.lookupQueue.shift()?.()
    }
  }

  /** Forget a remembered miss (the path was just added or published here). */
  forgetMiss (hashPart: string): void {
    this.misses.delete(hashPart)
  }

  private async doAcquire (hashPart: string): Promise<Acquired> {
    const found = await this.lookup(hashPart)
    const { narinfo } = found
    const u = narinfo.urls.length === 1 ? narinfo.urls[0] : undefined
    const compression = u === undefined ? undefined : parseCompression(u.compression ?? 'none')
    // without FileSize a compressed file's Content-Length is unknown: it cannot be streamed
    const size = u?.fileSize ?? (compression === 'none' ? narinfo.narSize : undefined)
    if (u === undefined || compression === undefined || size === undefined || size <= this.streamAboveBytes) {
      await this.fetchWith(hashPart, undefined, found)
      return { kind: 'cached' }
    }
    const key = narFileKey(narinfo.narHash, compression)
    // peers caught lying about this file are not asked again; with none left it is not available
    const providers = (await this.narProviders(narinfo, found.holders, found.from)).filter((p) => !this.components.client.isBad(key, p))
    if (providers.length === 0) throw new SubstituteFetchError(`${narinfo.storePath}: every provider of ${key} delivered bytes that did not verify`)
    await mkdir(this.components.tmpDir, { recursive: true })
    const tempPath = join(this.components.tmpDir, `${hashPart}.${compression}.live`)
    const live = new LiveNar({ narinfo, text: found.text, url: u.url, compression, size, key, providers, client: this.components.client, tempPath })
    this.live.set(hashPart, live)
    // fetch() callers (mirror, pull, a narinfo request) wait for this download instead of starting another
    const outcome = this.storeLive(hashPart, live, found).finally(() => {
      this.live.delete(hashPart)
      this.inFlight.delete(hashPart)
    })
    this.inFlight.set(hashPart, outcome)
    outcome.catch((err: Error) => { log('streaming %s failed: %s: %s', narinfo.storePath, err.name, err.message) })
    return { kind: 'live', narinfoText: found.text, live }
  }

  /** Once the live download verified, move it into the cache like any fetched entry. */
  private async storeLive (hashPart: string, live: LiveNar, found: TrustedNarinfo): Promise<FetchOutcome> {
    const compression = parseCompression(found.narinfo.urls[0].compression ?? 'none')
    const tempPath = join(this.components.tmpDir, `${hashPart}.${compression}.live`)
    try {
      await live.verified
      // LiveNar hashed exactly these bytes while writing them
      const entry = await this.components.cache.addVerified({ narinfoText: found.text, files: [{ compression, tempPath }], verify: false })
      await this.components.onAdded(entry)
      return { entry, narinfoFrom: found.from, narFrom: [...live.contributors], badPeers: this.components.client.badPeers(narFileKey(found.narinfo.narHash, compression)) }
    } finally {
      await rm(tempPath, { force: true })
    }
  }

  /**
   * Fetch `hashPart` into the cache; concurrent calls for one path share the work. `holders`:
   * peers the caller knows to hold it (e.g. the node that submitted a build, for its .drv
   * closure), asked before the DHT like the builder hints.
   */
  async fetch (hashPart: string, signal?: AbortSignal, holders: PeerId[] = []): Promise<FetchOutcome> {
    return await this.fetchWith(hashPart, signal, undefined, holders)
  }

  /** `fetch`, skipping the DHT walk when the trusted narinfo is already at hand (`found`). */
  private async fetchWith (hashPart: string, signal?: AbortSignal, found?: TrustedNarinfo, holders: PeerId[] = []): Promise<FetchOutcome> {
    const running = this.inFlight.get(hashPart)
    if (running != null) return await running
    const p = this.doFetch(hashPart, signal, found, holders).finally(() => this.inFlight.delete(hashPart))
    this.inFlight.set(hashPart, p)
    return await p
  }

  private async doFetch (hashPart: string, outer?: AbortSignal, found?: TrustedNarinfo, known: PeerId[] = []): Promise<FetchOutcome> {
    const deadline = AbortSignal.timeout(this.lookupTimeoutMs)
    const signal = outer != null ? AbortSignal.any([outer, deadline]) : deadline
    const t0 = performance.now()
    const { narinfo, text, from, holders } = found ?? await this.trustedNarinfo(hashPart, signal, known)
    const t1 = performance.now()
    // A small file comes from the peers that just handed us its narinfo (they hold the NAR they
    // announced), without a second DHT walk for the NAR hash: that walk cost more than the
    // transfer. Large files, or holders that fail, take every provider the DHT knows.
    const small = narinfo.urls.every((u) => u.fileSize !== undefined && u.fileSize <= this.streamAboveBytes)
    let lookedUp = !small || holders.length === 0
    let providers = lookedUp ? await this.narProviders(narinfo, holders, from, outer) : holderOrder(holders, from)
    await mkdir(this.components.tmpDir, { recursive: true })
    const files: Array<{ compression: string, tempPath: string }> = []
    const narFrom = new Set<string>()
    try {
      for (const u of narinfo.urls) {
        const compression = parseCompression(u.compression ?? 'none')
        const key = narFileKey(narinfo.narHash, compression)
        const dest = join(this.components.tmpDir, `${hashPart}.${compression}`)
        const options = {
          expectedSize: u.fileSize,
          dest,
          signal: outer,
          verify: async (tmp: string) => { await verifyFile(narinfo, compression, tmp) }
        }
        try {
          let result: FetchResult
          try {
            result = await this.components.client.fetchFile(key, { ...options, providers })
          } catch (err) {
            if (lookedUp || outer?.aborted === true) throw err
            log('%s: the narinfo holders did not deliver (%s); asking the DHT for the NAR', narinfo.storePath, (err as Error).message)
            providers = await this.narProviders(narinfo, holders, from, outer)
            lookedUp = true
            result = await this.components.client.fetchFile(key, { ...options, providers })
          }
          for (const p of result.providers) narFrom.add(p)
        } catch (err) {
          const bad = this.components.client.badPeers(key)
          throw new SubstituteFetchError(`${narinfo.storePath}: no provider delivered a ${compression} NAR that verifies (${providers.length} tried${bad.length > 0 ? `, bad: ${bad.join(', ')}` : ''}): ${(err as Error).name}: ${(err as Error).message}`)
        }
        files.push({ compression, tempPath: dest })
      }
      const t2 = performance.now()
      // fetchFile ran verifyFile on exactly these bytes before renaming them to dest
      const entry = await this.components.cache.addVerified({ narinfoText: text, files, verify: false })
      log('%s: narinfo in %d ms, NAR in %d ms, cached in %d ms', narinfo.storePath, Math.round(t1 - t0), Math.round(t2 - t1), Math.round(performance.now() - t2))
      await this.components.onAdded(entry)
      const badPeers = [...new Set(narinfo.urls.flatMap((u) => this.components.client.badPeers(narFileKey(narinfo.narHash, u.compression ?? 'none'))))]
      log('fetched %s: narinfo from %s, NAR from %s%s', narinfo.storePath, from, [...narFrom].join(','), badPeers.length > 0 ? `, bad: ${badPeers.join(',')}` : '')
      return { entry, narinfoFrom: from, narFrom: [...narFrom], badPeers }
    } finally {
      await Promise.all(files.map(async (f) => await rm(f.tempPath, { force: true })))
    }
  }

  /** Ask the known and hinted peers, then the store path's providers, in turn until one hands over a narinfo we can believe. */
  private async trustedNarinfo (hashPart: string, signal: AbortSignal, known: PeerId[] = []): Promise<TrustedNarinfo> {
    const { client, cache } = this.components
    const holders: PeerId[] = []
    const refused: string[] = []
    if (!this.components.hasPeers()) throw new SubstituteNotFoundError(`${hashPart}: no peers to ask`)
    const ask = async (peer: PeerId): Promise<TrustedNarinfo | undefined> => {
      if (holders.some((h) => h.equals(peer))) return undefined
      holders.push(peer)
      let text: string
      try {
        text = await client.fetchNarinfo(hashPart, [peer], { signal })
      } catch (err) {
        refused.push(`${peer.toString()}: ${(err as Error).name}`)
        return undefined
      }
      const v = verifyNarinfo(text, this.components.trusted(), { storeDir: cache.storeDir })
      if (!v.ok) {
        refused.push(`${peer.toString()}: ${v.reason}`)
        log('narinfo %s from %p not believed: %s', hashPart, peer, v.message)
        return undefined
      }
      const got = v.narinfo.storePath.slice(cache.storeDir.length + 1, cache.storeDir.length + 33)
      if (got !== hashPart) {
        refused.push(`${peer.toString()}: narinfo for another path`)
        return undefined
      }
      return { narinfo: v.narinfo, text, from: peer.toString(), holders }
    }
    try {
      for (const peer of [...known, ...(this.components.hints?.(hashPart) ?? [])]) {
        this.hintStats.asked++
        const found = await ask(peer)
        if (found !== undefined) { this.hintStats.believed++; return found }
      }
      for await (const peer of findProviders(this.components, storePathCid(hashPart), { limit: this.maxProviders, signal })) {
        const found = await ask(peer.id)
        if (found !== undefined) return found
      }
    } catch (err) {
      if (!signal.aborted) throw err
      // the lookup ran out of time: what we have is the answer
    }
    throw new SubstituteNotFoundError(`${hashPart}: ${holders.length === 0 ? 'no provider in the DHT' : `no trusted narinfo from ${holders.length} provider(s) (${refused.join('; ')})`}`)
  }

  /**
   * Peers to ask for the NAR: the narinfo's sender first, then the other holders, then the store
   * path's other providers, then (for a NAR large enough to be announced by its hash) the NAR
   * hash's providers.
   */
  private async narProviders (narinfo: Narinfo, holders: PeerId[], from: string, outer?: AbortSignal): Promise<PeerId[]> {
    const out = holderOrder(holders, from)
    const add = (p: PeerId): void => { if (!out.some((q) => q.equals(p))) out.push(p) }
    const deadline = AbortSignal.timeout(Math.min(this.lookupTimeoutMs, 10_000))
    const signal = outer != null ? AbortSignal.any([outer, deadline]) : deadline
    const hashPart = narinfo.storePath.slice(this.components.cache.storeDir.length + 1, this.components.cache.storeDir.length + 33)
    // where the holders announced it
    const cids = announcedCids({ hashPart, narHash: narinfo.narHash, narSize: narinfo.narSize })
    try {
      for (const cid of cids) {
        for await (const peer of findProviders(this.components, cid, { limit: this.maxProviders, signal })) add(peer.id)
      }
    } catch (err) {
      if (!signal.aborted) throw err
    }
    return out
  }
}

/** The store path's holders, the one whose narinfo we believed first. */
function holderOrder (holders: PeerId[], from: string): PeerId[] {
  const first = holders.find((p) => p.toString() === from)
  return first === undefined ? [...holders] : [first, ...holders.filter((p) => !p.equals(first))]
}
