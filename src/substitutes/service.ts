// The node's substitutes: its binary cache at <data>/nar, served to peers over the transfer
// protocol and to guix/nix clients over HTTP, announced in the DHT (storePathCid for every entry,
// narCid too for large NARs; on start, on add and on a timer), filled by `publish` (local store),
// on-demand fetches and the mirror; trimmed by GC.
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { PeerId } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import { Gauge } from 'prom-client'
import type { CID } from 'multiformats/cid'
import { BinaryCache, SMALL_NAR_BYTES, type CacheEntry, type CacheIndexRecord } from '../cache/index.js'
import { openBackend, storeKindOf, type StoreDaemon } from '../daemon/index.js'
import { readJsonBody, sendJson, type RoutePattern } from '../http/index.js'
import { parseCompression, type Compression } from '../nar/index.js'
import {
  formatGuixPublicKey, formatNixPublicKey, isStoreBaseName, parseNarinfo, readPublicKeysFile, type PublicKey
} from '../narinfo/index.js'
import type { NodeComponents, NodeService } from '../node/index.js'
import {
  findProviders, NarTransferServer, provide, Reprovider, TransferClient, TransferMetrics
} from '../transfer/index.js'
import { NoStoreDaemonError, SubstitutesRequestError, TrustedKeyFileError } from './errors.js'
import { announcedCids, SwarmFetcher, type FetchOutcome } from './fetch.js'
import { GarbageCollector, type GcOptions, type GcReport } from './gc.js'
import { SubstitutesHttp, type BuildLogSource } from './http.js'
import { ClosureBundles } from './bundle.js'
import { FeedFollower, RecentOutputs, type BuildFeed } from './feed.js'
import { Mirror } from './mirror.js'
import { CacheNarSource, NarHashIndex } from './source.js'
import { BackgroundAnnouncer } from './announcer.js'

const log = logger('guix-swarm:substitutes')

const MAX_BODY_BYTES = 1024 * 1024
const PUBLISH_ANNOUNCE_CONCURRENCY = 8
const ANNOUNCE_TIMEOUT_MS = 15_000
/** Background announcements (fetched copies, bundles, publish on submit) running at once. */
const BACKGROUND_ANNOUNCE_CONCURRENCY = 4
/** While the node's builds run, background announcements wait at most this long (see BackgroundAnnouncer). */
export const ANNOUNCE_DEFER_MS = 60_000

export interface SubstitutesInit {
  /** Re-announce every held CID this often (default 12 h; kad provider records live 48 h). */
  reprovideIntervalMs?: number
  /** Budget for finding a trusted narinfo in the swarm on a cache miss (default 30 s). */
  lookupTimeoutMs?: number
  /** How the node reaches its local store daemon for `publish` (tests inject; default openBackend). */
  openStore?: () => Promise<StoreDaemon>
  /**
   * A client of the local store another service of this node already has open (the
   * scheduler's), used instead of opening a second: one client's path-info cache and query
   * coalescing then serve building and publishing alike.
   */
  sharedStore?: () => StoreDaemon | undefined
  /** Where build logs come from (the scheduler's, later). */
  logs?: BuildLogSource
  /** The queue to follow when mirroring; looked up lazily because it may start after us. */
  buildFeed?: () => BuildFeed | undefined
  /** Store paths running builds need (their inputs): GC never evicts them. */
  pinned?: () => ReadonlySet<string>
  /** Whether the node is building now: background announcements wait (up to ANNOUNCE_DEFER_MS). */
  busy?: () => boolean
}

/**
 * How `publish` announces new entries: `wait` for their DHT records, `background` (the caller
 * serves the paths itself meanwhile), or `later`: at the next re-provide round only, for paths
 * whoever needs them finds another way (a submitter's .drv closures: its builders know it from
 * the queue and ask it first).
 */
export type PublishAnnounce = 'wait' | 'background' | 'later'

export interface PublishedPath {
  storePath: string
  narHash: string
  narSize: number
  files: CacheEntry['files']
  /** Whether its DHT records went out (false: announced later, or the re-provider retries). */
  announced: boolean
}

export class SubstitutesService implements NodeService {
  readonly name = 'substitutes'
  readonly cache: BinaryCache
  readonly index = new NarHashIndex()
  readonly metrics = new TransferMetrics()
  readonly client: TransferClient
  readonly server: NarTransferServer
  readonly fetcher: SwarmFetcher
  readonly gc: GarbageCollector
  readonly http: SubstitutesHttp
  readonly mirror: Mirror
  readonly bundles: ClosureBundles
  /** Who built the recent successful builds' outputs (the fetcher asks them before the DHT). */
  readonly recent: RecentOutputs
  private readonly recentFollower: FeedFollower
  private readonly reprovider: Reprovider
  private trusted: PublicKey[] = []
  /** Paths (by hash part) whose publication is under way, with when it ends (see publishing). */
  private readonly inPublication = new Map<string, Promise<unknown>>()
  private store?: Promise<StoreDaemon>
  private readonly apiPatterns: RoutePattern[] = ['/api/publish', '/api/mirror', '/api/gc']
  private autoGc?: Promise<unknown>
  /** Entries whose DHT records did not go out yet. */
  private readonly unannounced = new Map<string, Pick<CacheEntry, 'hashPart' | 'narHash' | 'narSize' | 'storePath'>>()
  private flushTimer?: NodeJS.Timeout
  /** Every held entry (hash part → what announcing and status need), so neither reads the whole cache index. */
  private readonly held = new Map<string, HeldEntry>()
  /** store path → how many holders pinned it (pin()). */
  private readonly pins = new Map<string, number>()
  /** Entries published with `later`: held and served, announced by the next re-provide round. */
  private readonly deferred = new Set<string>()
  /** Entries waiting for their DHT announcement (addedLater). */
  private readonly announceQueue: BackgroundAnnouncer<CacheEntry>

  constructor (private readonly components: NodeComponents, private readonly init: SubstitutesInit = {}) {
    const { config, keys, libp2p } = components
    const compressions: Compression[] | undefined = config.compressions != null && config.compressions.length > 0
      ? config.compressions.map((c) => parseCompression(c))
      : undefined
    this.cache = new BinaryCache({ dir: join(components.dataDir, 'nar'), storeDir: components.storeDir, keys, compressions, uncompressedBelow: SMALL_NAR_BYTES })
    const protocol = components.protocolId('nar', '1.0.0')
    this.server = new NarTransferServer({ libp2p, source: new CacheNarSource(this.cache, this.index), metrics: this.metrics }, { protocol })
    this.client = new TransferClient({ libp2p, metrics: this.metrics }, { protocol })
    this.fetcher = new SwarmFetcher({
      libp2p,
      client: this.client,
      cache: this.cache,
      trusted: () => this.trusted,
      tmpDir: join(components.dataDir, 'nar', '.guix-swarm', 'fetch'),
      // a fetched copy is indexed at once; announcing it (a DHT walk or two) must not hold up the
      // build or client waiting for it, so it runs in the background (failures are retried)
      onAdded: async (entry) => { this.addedLater(entry) },
      hasPeers: () => libp2p.getPeers().length > 0,
      hints: (hashPart) => this.builderOf(hashPart)
    }, { lookupTimeoutMs: init.lookupTimeoutMs })
    this.recent = new RecentOutputs(undefined, components.storeDir.length)
    this.recentFollower = new FeedFollower(() => init.buildFeed?.(), (r) => {
      // a path asked for just before its build succeeded is not "missing" any longer
      for (const h of this.recent.add(r)) this.fetcher.forgetMiss(h)
    })
    this.bundles = new ClosureBundles({ libp2p, cache: this.cache, trusted: () => this.trusted, publishing: (h) => this.inPublication.get(h) }, components.protocolId('closure', '1.0.0'))
    this.announceQueue = new BackgroundAnnouncer<CacheEntry>({
      announce: async (entry) => await this.announceHeld(entry), // addedLater held it
      concurrency: BACKGROUND_ANNOUNCE_CONCURRENCY,
      deferMs: ANNOUNCE_DEFER_MS,
      busy: init.busy
    })
    this.reprovider = new Reprovider({ libp2p, held: async () => await this.heldCids() }, { intervalMs: init.reprovideIntervalMs })
    this.gc = new GarbageCollector({
      cache: this.cache,
      hasOtherProvider: async (r) => await this.hasOtherProvider(r),
      onRemoved: (r: CacheIndexRecord) => { this.removed(r) },
      pinned: () => this.pinnedPaths()
    })
    this.http = new SubstitutesHttp({
      router: components.http,
      cache: this.cache,
      acquire: async (hashPart) => await this.fetcher.acquire(hashPart),
      liveNar: (hashPart) => this.fetcher.liveNar(hashPart),
      guixPublicKey: formatGuixPublicKey(keys.guix.publicKey),
      nixPublicKey: formatNixPublicKey(keys.nix.publicKey),
      logs: init.logs
    })
    this.mirror = new Mirror({
      fetch: async (storePath) => (await this.pullClosure(storePath)).length,
      feed: () => init.buildFeed?.()
    }, { systems: config.mirrorSystems ?? [], tags: config.mirrorTags ?? [] })
  }

  async start (): Promise<void> {
    this.trusted = await this.loadTrustedKeys()
    await this.cache.start()
    const entries = await this.cache.list()
    for (const e of entries) this.hold(e)
    this.http.prime(entries)
    this.registerMetrics()
    await this.server.start()
    await this.bundles.start()
    this.http.start()
    this.routeApi()
    await this.reprovider.start()
    this.components.libp2p.addEventListener('peer:connect', this.onPeerConnect)
    this.recentFollower.start()
    if (this.components.config.mirror === true) this.mirror.start()
    this.maybeAutoGc() // --max-store-size may have been lowered since the last run
    log('serving %s (%d trusted keys)', this.cache.dir, this.trusted.length)
  }

  async stop (): Promise<void> {
    this.mirror.stop()
    this.recentFollower.stop()
    this.announceQueue.clear() // what is left is announced by the next start's re-provide
    this.components.libp2p.removeEventListener('peer:connect', this.onPeerConnect)
    clearTimeout(this.flushTimer)
    for (const p of this.apiPatterns) this.components.http.unroute(p)
    this.http.stop()
    await this.reprovider.stop()
    await this.server.stop()
    await this.bundles.stop()
    await this.autoGc?.catch(() => {})
    await this.cache.stop()
  }

  async status (): Promise<Record<string, unknown>> {
    let bytes = 0
    for (const e of this.held.values()) bytes += e.bytes
    return {
      cacheDir: this.cache.dir,
      entries: this.held.size,
      bytes,
      pinned: this.pins.size,
      lookups: { ...this.fetcher.lookupStats },
      // peers asked before the DHT: builders of recent outputs, submitters of .drv closures
      hints: { recentOutputs: this.recent.size, ...this.fetcher.hintStats },
      maxStoreSize: this.components.config.maxStoreSize ?? null,
      trustedKeys: this.trusted.length,
      unannounced: this.unannounced.size + this.announceQueue.size + this.deferred.size,
      mirror: this.components.config.mirror === true ? this.mirror.status() : false,
      http: { ...this.http.counters },
      bundles: { served: this.bundles.served, badRequests: this.bundles.badRequests, rejected: { ...this.bundles.rejected } },
      transfer: this.metrics.snapshot()
    }
  }

  /** Own keys, then every key in every --trusted-key file; a bad file stops the node (a typo must not silently distrust). */
  private async loadTrustedKeys (): Promise<PublicKey[]> {
    const { keys, config } = this.components
    const out: PublicKey[] = [keys.guix.publicKey, keys.nix.publicKey]
    for (const file of config.trustedKeys ?? []) {
      let found: PublicKey[]
      try {
        found = await readPublicKeysFile(file)
      } catch (err) {
        throw new TrustedKeyFileError(`--trusted-key ${file}: ${(err as Error).name}: ${(err as Error).message}`)
      }
      if (found.length === 0) throw new TrustedKeyFileError(`--trusted-key ${file}: no public key in the file`)
      out.push(...found)
    }
    return out
  }

  // ---------------------------------------------------------------- adding and announcing

  /**
   * Run `work` (which publishes `paths`) with the paths marked as under way: until it settles,
   * closure bundles asked for them wait for it instead of answering them missing. Marked at once,
   * before `work` starts, so a request cannot slip in between.
   */
  async publishing<T> (paths: string[], work: () => Promise<T>): Promise<T> {
    const dir = this.cache.storeDir
    const hashParts = paths.filter((p) => p.startsWith(dir + '/')).map((p) => p.slice(dir.length + 1, dir.length + 33))
    const done = Promise.resolve().then(work)
    const settled = done.then(() => {}, () => {})
    for (const h of hashParts) this.inPublication.set(h, settled)
    try {
      return await done
    } finally {
      for (const h of hashParts) if (this.inPublication.get(h) === settled) this.inPublication.delete(h)
    }
  }

  /** Add the closure of local store paths to the cache, signed with the node's keys, and announce each. */
  async publish (paths: string[], opts: { announce?: PublishAnnounce } = {}): Promise<PublishedPath[]> {
    for (const p of paths) {
      const dir = this.cache.storeDir
      if (!p.startsWith(dir + '/') || !isStoreBaseName(p.slice(dir.length + 1))) {
        throw new SubstitutesRequestError(`${JSON.stringify(p)} is not a store path in ${dir}`)
      }
    }
    const store = await this.openStore()
    const all = await this.cache.addClosure(store, paths)
    // the closure's paths this node held and announced before (the re-provider keeps them so)
    // are not announced again: a Guix output's closure is dozens of paths, a DHT walk each
    const isNew = (e: CacheEntry): boolean => !this.held.has(e.hashPart) || this.unannounced.has(e.hashPart) || this.announceQueue.has(e.hashPart) || this.deferred.has(e.hashPart)
    const entries = all.filter(isNew)
    const announced = new Map<string, boolean>(all.filter((e) => !isNew(e)).map((e) => [e.hashPart, true]))
    if (opts.announce === 'later') {
      for (const e of entries) {
        this.hold(e)
        if (!this.unannounced.has(e.hashPart) && !this.announceQueue.has(e.hashPart)) this.deferred.add(e.hashPart)
        announced.set(e.hashPart, false)
      }
    } else if (opts.announce === 'background') {
      // the caller hands the paths out itself (e.g. a submitter's closure bundles): servable now,
      // findable in the DHT a little later
      for (const e of entries) { this.addedLater(e); announced.set(e.hashPart, false) }
    } else {
      // Each announcement is a DHT round trip (0.15–0.5 s); a few at a time keeps a large
      // closure from taking a round trip per path without flooding the routing table.
      for (let i = 0; i < entries.length; i += PUBLISH_ANNOUNCE_CONCURRENCY) {
        const batch = entries.slice(i, i + PUBLISH_ANNOUNCE_CONCURRENCY)
        const done = await Promise.all(batch.map(async (e) => await this.added(e)))
        batch.forEach((e, j) => announced.set(e.hashPart, done[j]))
      }
    }
    return all.map((e) => ({ storePath: e.storePath, narHash: e.narHash, narSize: e.narSize, files: e.files, announced: announced.get(e.hashPart) ?? false }))
  }

  /** Fetch a store path from the swarm into the cache (no-op when held); `holders` are asked before the DHT. */
  async fetchPath (storePath: string, opts: { holders?: PeerId[] } = {}): Promise<FetchOutcome | undefined> {
    const hashPart = this.hashPartOf(storePath)
    if (await this.cache.has(hashPart)) return undefined
    // no signal: the fetch may be shared with other callers (one giving up must not end theirs)
    return await this.fetcher.fetch(hashPart, undefined, opts.holders)
  }

  /**
   * Fetch a store path and everything it references (from the trusted narinfos' References), so
   * a client can substitute the whole closure from this node. Returns what was fetched.
   */
  async pullClosure (storePath: string, opts: { holders?: PeerId[] } = {}): Promise<FetchOutcome[]> {
    const dir = this.cache.storeDir
    const seen = new Set<string>([this.hashPartOf(storePath)])
    const todo = [storePath]
    const out: FetchOutcome[] = []
    while (todo.length > 0) {
      const p = todo.shift() as string
      const got = await this.fetchPath(p, opts)
      if (got !== undefined) out.push(got)
      const entry = await this.cache.getEntry(this.hashPartOf(p))
      const refs = entry === undefined ? [] : parseNarinfo(entry.narinfo, { storeDir: dir }).references
      for (const r of refs) {
        if (seen.has(r.slice(0, 32))) continue
        seen.add(r.slice(0, 32))
        todo.push(`${dir}/${r}`)
      }
    }
    return out
  }

  /**
   * pullClosure for many paths: every one is tried; returns how many entries were added to the
   * cache and throws the first path's error after trying them all.
   */
  async pullClosures (storePaths: string[], opts: { signal?: AbortSignal, holders?: PeerId[] } = {}): Promise<number> {
    let added = 0
    let first: Error | undefined
    for (const p of storePaths) {
      opts.signal?.throwIfAborted()
      try {
        added += (await this.pullClosure(p, opts)).length
      } catch (err) {
        first ??= err as Error // the others are still worth having
      }
    }
    if (first !== undefined) throw first
    return added
  }

  private hashPartOf (storePath: string): string {
    const dir = this.cache.storeDir
    const base = storePath.slice(dir.length + 1)
    if (!storePath.startsWith(dir + '/') || !isStoreBaseName(base)) throw new SubstitutesRequestError(`${JSON.stringify(storePath)} is not a store path in ${dir}`)
    return base.slice(0, 32)
  }

  async collectGarbage (opts: GcOptions): Promise<GcReport> {
    return await this.gc.collect(opts)
  }

  private async openStore (): Promise<StoreDaemon> {
    if (this.init.openStore != null) return await this.init.openStore()
    const shared = this.init.sharedStore?.()
    if (shared !== undefined) return shared
    const kind = storeKindOf(this.components.builder.kind, this.components.storeDir)
    this.store ??= openBackend(kind, { storeDir: this.components.storeDir }).then((b) => b.store)
    try {
      return await this.store
    } catch (err) {
      this.store = undefined
      throw new NoStoreDaemonError(`no local ${kind} store to publish from: ${(err as Error).message}`)
    }
  }

  /**
   * Keep `storePaths` from GC until the returned release is called (a running build's inputs).
   * Pins count: a path pinned twice stays until both released; releasing twice is harmless.
   */
  pin (storePaths: string[]): () => void {
    for (const p of storePaths) this.pins.set(p, (this.pins.get(p) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      for (const p of storePaths) {
        const n = (this.pins.get(p) ?? 1) - 1
        if (n <= 0) this.pins.delete(p)
        else this.pins.set(p, n)
      }
    }
  }

  private pinnedPaths (): ReadonlySet<string> {
    const out = new Set(this.pins.keys())
    for (const p of this.init.pinned?.() ?? []) out.add(p)
    return out
  }

  /**
   * An entry left the cache (GC): stop announcing it. Our own kad-dht re-provides every record it
   * ever put, so its CIDs are cancelled there (the NAR's only when no other entry has the same
   * NAR); records already on other peers cannot be withdrawn and expire on their own.
   */
  private removed (r: CacheIndexRecord): void {
    this.index.delete(r)
    this.http.forget(r.hashPart)
    this.held.delete(r.hashPart)
    this.unannounced.delete(r.hashPart)
    this.deferred.delete(r.hashPart)
    const [path, nar] = announcedCids(r)
    const cids = nar !== undefined && this.index.hashParts(r.narHash).length === 0 ? [path, nar] : [path]
    for (const cid of cids) {
      this.components.libp2p.contentRouting.cancelReprovide(cid).catch((err: Error) => { log('cancelReprovide %s: %s', cid.toString(), err.message) })
    }
  }

  private registerMetrics (): void {
    const { metrics } = this.components
    for (const name of ['guix_swarm_substitute_lookups', 'guix_swarm_substitute_http']) {
      if (metrics.getSingleMetric(name) != null) metrics.removeSingleMetric(name) // a restarted service: read the new one
    }
    const fetcher = this.fetcher
    const http = this.http
    new Gauge({ // registers itself; collect() reads the counters at scrape time
      name: 'guix_swarm_substitute_lookups',
      help: 'Swarm lookups for HTTP clients since start, by outcome (started, negativeHits, refusedBusy, notFound) and running now',
      labelNames: ['outcome'],
      registers: [metrics],
      collect () { for (const [outcome, n] of Object.entries(fetcher.lookupStats)) this.set({ outcome }, n) }
    })
    new Gauge({ // registers itself
      name: 'guix_swarm_substitute_http',
      help: 'Substitute HTTP front counters since start (narinfo hits/fetched/misses, NAR requests, bytes, streamed, cut)',
      labelNames: ['counter'],
      registers: [metrics],
      collect () { for (const [counter, n] of Object.entries(http.counters)) this.set({ counter }, n) }
    })
  }

  /**
   * `added`, with the announcement queued behind others: a burst of fetched or bundled entries
   * (a builder taking 60 .drv files) must not start two DHT walks each at once, which starves
   * the event loop that is still receiving them. Indexed (servable) at once.
   */
  private addedLater (entry: CacheEntry): void {
    this.hold(entry)
    this.announceQueue.push(entry.hashPart, entry)
  }

  /** A new entry is servable by NAR hash, counted, and no longer a remembered miss. */
  private hold (entry: CacheEntry): void {
    this.index.add(entry)
    this.held.set(entry.hashPart, heldEntry(entry))
    this.fetcher.forgetMiss(entry.hashPart)
  }

  /** Index and announce a new entry, then trim the cache if it grew past --max-store-size. */
  private async added (entry: CacheEntry): Promise<boolean> {
    this.hold(entry)
    return await this.announceHeld(entry)
  }

  /** Announce an entry already held, then trim the cache if it grew past --max-store-size. */
  private async announceHeld (entry: CacheEntry): Promise<boolean> {
    const announced = await this.announce(entry)
    this.maybeAutoGc()
    return announced
  }

  /**
   * Provide an entry's CIDs. With no peer connected a DHT put can only time out, so the
   * entry waits in `unannounced` for the next connection instead of blocking the caller.
   */
  private async announce (entry: Pick<CacheEntry, 'hashPart' | 'narHash' | 'narSize' | 'storePath'>): Promise<boolean> {
    if (this.components.libp2p.getPeers().length === 0) {
      this.unannounced.set(entry.hashPart, entry)
      return false
    }
    const results = await Promise.allSettled(announcedCids(entry).map(async (cid) => {
      await provide({ libp2p: this.components.libp2p }, cid, { signal: AbortSignal.timeout(ANNOUNCE_TIMEOUT_MS) })
    }))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed === undefined) {
      this.unannounced.delete(entry.hashPart)
      this.deferred.delete(entry.hashPart)
      return true
    }
    this.unannounced.set(entry.hashPart, entry)
    log('announcing %s failed, retried on the next connection: %s', entry.storePath, (failed.reason as Error).message)
    return false
  }

  /** A peer connected: announce what could not be announced (after kad has had a moment to add it). */
  private readonly onPeerConnect = (): void => {
    if (this.unannounced.size === 0 || this.flushTimer != null) return
    this.flushTimer = setTimeout(() => {
      void (async () => {
        for (const e of [...this.unannounced.values()]) await this.announce(e)
      })().finally(() => { this.flushTimer = undefined })
    }, 1000)
    this.flushTimer.unref()
  }

  private maybeAutoGc (): void {
    const max = this.components.config.maxStoreSize
    if (max === undefined || this.autoGc != null) return
    this.autoGc = this.gc.collect({ maxSize: max })
      .then((r) => { if (r.removed.length > 0) log('automatic gc freed %d bytes', r.freed) })
      .catch((err: Error) => { log.error('automatic gc failed: %s', err.message) })
      .finally(() => { this.autoGc = undefined })
  }

  /**
   * What the re-provider announces: every held entry, from memory. With no peer connected a DHT
   * put can only fail, so the entries wait in `unannounced` for the first connection instead (a
   * node started alone would otherwise stay unannounced until the next round, hours later).
   */
  private async heldCids (): Promise<CID[]> {
    if (this.components.libp2p.getPeers().length === 0) {
      for (const e of this.held.values()) this.unannounced.set(e.hashPart, e)
      return []
    }
    this.deferred.clear() // this round announces them
    return [...this.held.values()].flatMap((e) => announcedCids(e))
  }


  private builderOf (hashPart: string): PeerId[] {
    const peer = this.recent.holder(hashPart)
    if (peer === undefined || peer === this.components.libp2p.peerId.toString()) return []
    try {
      return [peerIdFromString(peer)]
    } catch {
      return [] // the queue checked the op's author; a hint that does not parse is just no hint
    }
  }

  private async hasOtherProvider (r: CacheIndexRecord): Promise<boolean> {
    // alone, we cannot know of another copy: treat it as the last one
    if (this.components.libp2p.getPeers().length === 0) return false
    const signal = AbortSignal.timeout(15_000)
    // the NAR's CID where it is announced (any path with the same NAR counts), else the path's
    const cid = announcedCids(r).at(-1) as CID
    try {
      for await (const _ of findProviders({ libp2p: this.components.libp2p }, cid, { limit: 1, signal })) return true
    } catch (err) {
      if (!signal.aborted) log('provider lookup for %s failed: %s', r.storePath, (err as Error).message)
    }
    return false
  }

  // ---------------------------------------------------------------- local API

  private routeApi (): void {
    const { http } = this.components
    http.route('POST', '/api/publish', async (req, res) => {
      const paths = await storePaths(req, 'paths')
      sendJson(res, 200, { paths: await this.publish(paths) })
    })
    http.route('POST', '/api/mirror', async (req, res) => { await this.apiMirror(req, res) })
    http.route('POST', '/api/gc', async (req, res) => {
      const body = await readJsonBody(req, MAX_BODY_BYTES) as Record<string, unknown>
      const opts: GcOptions = {}
      if (body.maxSize !== undefined) opts.maxSize = nonNegInt(body.maxSize, 'maxSize')
      else if (this.components.config.maxStoreSize !== undefined) opts.maxSize = this.components.config.maxStoreSize
      if (body.keepDays !== undefined) opts.keepDays = nonNegNumber(body.keepDays, 'keepDays')
      if (body.force !== undefined) opts.force = body.force === true
      if (body.dryRun !== undefined) opts.dryRun = body.dryRun === true
      sendJson(res, 200, await this.collectGarbage(opts))
    })
  }

  private async apiMirror (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const paths = await storePaths(req, 'paths')
    const results = []
    for (const p of paths) {
      try {
        const got = await this.pullClosure(p)
        results.push({
          storePath: p,
          status: got.length === 0 ? 'held' : 'fetched',
          fetched: got.map((g) => g.entry.storePath),
          narFrom: [...new Set(got.flatMap((g) => g.narFrom))],
          badPeers: [...new Set(got.flatMap((g) => g.badPeers))]
        })
      } catch (err) {
        results.push({ storePath: p, status: 'failed', error: { name: (err as Error).name, message: (err as Error).message } })
      }
    }
    sendJson(res, 200, { paths: results })
  }
}

interface HeldEntry extends Pick<CacheEntry, 'hashPart' | 'narHash' | 'narSize' | 'storePath'> { bytes: number }

function heldEntry (e: CacheEntry): HeldEntry {
  return { hashPart: e.hashPart, narHash: e.narHash, narSize: e.narSize, storePath: e.storePath, bytes: Buffer.byteLength(e.narinfo) + e.files.reduce((t, f) => t + f.fileSize, 0) }
}

async function storePaths (req: IncomingMessage, field: string): Promise<string[]> {
  const body = await readJsonBody(req, MAX_BODY_BYTES) as Record<string, unknown> | null
  const v = body?.[field]
  if (!Array.isArray(v) || v.length === 0 || !v.every((p) => typeof p === 'string')) {
    throw new SubstitutesRequestError(`"${field}" must be a non-empty list of store paths`)
  }
  return v as string[]
}

function nonNegInt (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new SubstitutesRequestError(`"${what}" must be a byte count, got ${JSON.stringify(v)}`)
  return v
}

function nonNegNumber (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new SubstitutesRequestError(`"${what}" must be a non-negative number, got ${JSON.stringify(v)}`)
  return v
}

/** The ServiceFactory for src/node/services.ts (with `init` for what only the node can wire, e.g. the queue). */
export function substitutesService (components: NodeComponents, init: SubstitutesInit = {}): SubstitutesService {
  return new SubstitutesService(components, init)
}
