// Pulling one store path from the swarm into the local cache: store path → DHT providers →
// narinfo (believed only when signed by a trusted key, whoever sent it) → NAR providers → each
// NAR file downloaded, decompressed and checked against NarHash/NarSize before it is renamed
// into the cache. Nothing unverified is ever visible to a reader of the cache.
import { join } from 'node:path'
import { mkdir, rm } from 'node:fs/promises'
import type { PeerId } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { verifyFile, type BinaryCache, type CacheEntry } from '../cache/index.js'
import { parseCompression } from '../nar/index.js'
import { narHashBytes, verifyNarinfo, type Narinfo, type PublicKey } from '../narinfo/index.js'
import { findProviders, narCid, storePathCid, type ContentRoutingComponents, type TransferClient } from '../transfer/index.js'
import { SubstituteFetchError, SubstituteNotFoundError } from './errors.js'
import { narFileKey } from './source.js'

const log = logger('guix-swarm:substitutes:fetch')

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
}

export interface SwarmFetcherInit {
  /** Total time to find a trusted narinfo (DHT walk included); default 30 s. */
  lookupTimeoutMs?: number
  /** Providers asked for the narinfo / the NAR at most; default 8. */
  maxProviders?: number
}

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
  private readonly inFlight = new Map<string, Promise<FetchOutcome>>()

  constructor (private readonly components: SwarmFetcherComponents, init: SwarmFetcherInit = {}) {
    this.lookupTimeoutMs = init.lookupTimeoutMs ?? 30_000
    this.maxProviders = init.maxProviders ?? 8
  }

  /** Fetch `hashPart` into the cache; concurrent calls for one path share the work. */
  async fetch (hashPart: string, signal?: AbortSignal): Promise<FetchOutcome> {
    const running = this.inFlight.get(hashPart)
    if (running != null) return await running
    const p = this.doFetch(hashPart, signal).finally(() => this.inFlight.delete(hashPart))
    this.inFlight.set(hashPart, p)
    return await p
  }

  private async doFetch (hashPart: string, outer?: AbortSignal): Promise<FetchOutcome> {
    const deadline = AbortSignal.timeout(this.lookupTimeoutMs)
    const signal = outer != null ? AbortSignal.any([outer, deadline]) : deadline
    const { narinfo, text, from, holders } = await this.trustedNarinfo(hashPart, signal)
    const providers = await this.narProviders(narinfo, holders, from, outer)
    await mkdir(this.components.tmpDir, { recursive: true })
    const files: Array<{ compression: string, tempPath: string }> = []
    const narFrom = new Set<string>()
    try {
      for (const u of narinfo.urls) {
        const compression = parseCompression(u.compression ?? 'none')
        const key = narFileKey(narinfo.narHash, compression)
        const dest = join(this.components.tmpDir, `${hashPart}.${compression}`)
        try {
          const result = await this.components.client.fetchFile(key, {
            providers,
            expectedSize: u.fileSize,
            dest,
            signal: outer,
            verify: async (tmp) => { await verifyFile(narinfo, compression, tmp) }
          })
          for (const p of result.providers) narFrom.add(p)
        } catch (err) {
          const bad = this.components.client.badPeers(key)
          throw new SubstituteFetchError(`${narinfo.storePath}: no provider delivered a ${compression} NAR that verifies (${providers.length} tried${bad.length > 0 ? `, bad: ${bad.join(', ')}` : ''}): ${(err as Error).name}: ${(err as Error).message}`)
        }
        files.push({ compression, tempPath: dest })
      }
      // fetchFile ran verifyFile on exactly these bytes before renaming them to dest
      const entry = await this.components.cache.addVerified({ narinfoText: text, files, verify: false })
      await this.components.onAdded(entry)
      const badPeers = [...new Set(narinfo.urls.flatMap((u) => this.components.client.badPeers(narFileKey(narinfo.narHash, u.compression ?? 'none'))))]
      log('fetched %s: narinfo from %s, NAR from %s%s', narinfo.storePath, from, [...narFrom].join(','), badPeers.length > 0 ? `, bad: ${badPeers.join(',')}` : '')
      return { entry, narinfoFrom: from, narFrom: [...narFrom], badPeers }
    } finally {
      await Promise.all(files.map(async (f) => await rm(f.tempPath, { force: true })))
    }
  }

  /** Ask the store path's providers in turn until one hands over a narinfo we can believe. */
  private async trustedNarinfo (hashPart: string, signal: AbortSignal): Promise<{ narinfo: Narinfo, text: string, from: string, holders: PeerId[] }> {
    const { client, cache } = this.components
    const holders: PeerId[] = []
    const refused: string[] = []
    if (!this.components.hasPeers()) throw new SubstituteNotFoundError(`${hashPart}: no peers to ask`)
    try {
      for await (const peer of findProviders(this.components, storePathCid(hashPart), { limit: this.maxProviders, signal })) {
        holders.push(peer.id)
        let text: string
        try {
          text = await client.fetchNarinfo(hashPart, [peer.id], { signal })
        } catch (err) {
          refused.push(`${peer.id.toString()}: ${(err as Error).name}`)
          continue
        }
        const v = verifyNarinfo(text, this.components.trusted(), { storeDir: cache.storeDir })
        if (!v.ok) {
          refused.push(`${peer.id.toString()}: ${v.reason}`)
          log('narinfo %s from %p not believed: %s', hashPart, peer.id, v.message)
          continue
        }
        const got = v.narinfo.storePath.slice(cache.storeDir.length + 1, cache.storeDir.length + 33)
        if (got !== hashPart) {
          refused.push(`${peer.id.toString()}: narinfo for another path`)
          continue
        }
        return { narinfo: v.narinfo, text, from: peer.id.toString(), holders }
      }
    } catch (err) {
      if (!signal.aborted) throw err
      // the lookup ran out of time: what we have is the answer
    }
    throw new SubstituteNotFoundError(`${hashPart}: ${holders.length === 0 ? 'no provider in the DHT' : `no trusted narinfo from ${holders.length} provider(s) (${refused.join('; ')})`}`)
  }

  /** Peers to ask for the NAR: the narinfo's sender first, then the other holders, then the NAR hash's providers. */
  private async narProviders (narinfo: Narinfo, holders: PeerId[], from: string, outer?: AbortSignal): Promise<PeerId[]> {
    const out: PeerId[] = []
    const add = (p: PeerId): void => { if (!out.some((q) => q.equals(p))) out.push(p) }
    const first = holders.find((p) => p.toString() === from)
    if (first != null) add(first)
    for (const p of holders) add(p)
    const deadline = AbortSignal.timeout(Math.min(this.lookupTimeoutMs, 10_000))
    const signal = outer != null ? AbortSignal.any([outer, deadline]) : deadline
    try {
      for await (const peer of findProviders(this.components, narCid(narHashBytes(narinfo.narHash)), { limit: this.maxProviders, signal })) add(peer.id)
    } catch (err) {
      if (!signal.aborted) throw err
    }
    return out
  }
}
