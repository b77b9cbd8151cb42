// The scheduler on the node: adapts NodeComponents to src/scheduler's SchedulerService. Builds run
// on the local daemon; the .drv closures and input outputs they need come from the swarm through
// this node's substitutes (trusted narinfo, verified NAR) and are imported into the local store;
// outputs become signed NARs in the node's cache, announced in the DHT. Submitting through this
// node publishes the submitted .drv closures first. Build logs are served whichever node holds
// them: locally from the scheduler's LogStore, else fetched over the `build-log` protocol.
import { Readable } from 'node:stream'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, Stream } from '@libp2p/interface'
import type { BuildRecord } from '../crdt/index.js'
import { cheapestToUnpack, type CacheFile } from '../cache/index.js'
import { NIX_COMMANDS, openBackend, storeKindOf, writeDecliningBuildHook, type Backend, type StoreDaemon } from '../daemon/index.js'
import { HttpNotFoundError, HttpBadRequestError, type RouteParams } from '../http/index.js'
import { decompressStream } from '../nar/index.js'
import { parseNarinfo, type Narinfo } from '../narinfo/index.js'
import {
  DerivationUnavailableError, HOOK_EVENTS, SchedulerService, logName,
  type HookEvent, type InputFetcher, type OutputPublisher, type SchedulerConfig
} from '../scheduler/index.js'
import { MAX_BUNDLE_REQUEST, type BuildLogSource, type SubstitutesService, type TakenEntry } from '../substitutes/index.js'
import { sendWithBackpressure } from '../transfer/index.js'
import type { NodeComponents, NodeService } from './components.js'
import { NodeError } from './errors.js'
import { queueNodeOf, queueOf } from './queue.js'

const log = logger('guix-swarm:node:scheduler')

/** A log bigger than this is not sent over the swarm (logs are text; a runaway one is cut). */
const MAX_LOG_BYTES = 64 * 1024 * 1024
const LOG_FETCH_TIMEOUT_MS = 15_000
const LOG_STATUS_OK = 0
const LOG_STATUS_MISSING = 1

/** The node has no queue service to schedule from (a services list without it). */
export class SchedulerNoQueueError extends NodeError {
  override name = 'SchedulerNoQueueError'
}

/** A peer's answer on the build-log protocol was malformed or cut short. */
export class BuildLogProtocolError extends NodeError {
  override name = 'BuildLogProtocolError'
}

/** The build has no log on this node nor on the peer that ran it. */
export class BuildLogNotFoundError extends HttpNotFoundError {
  override name = 'BuildLogNotFoundError'
}

export interface SchedulerNodeInit {
  /** The node's substitutes service: publisher, swarm fetcher (required to build from other stores). */
  substitutes?: () => SubstitutesService | undefined
  /** How to reach the local daemon (tests inject; default openBackend). */
  openBackend?: (kind: 'nix' | 'guix', opts: Parameters<typeof openBackend>[1]) => Promise<Backend>
  /** Overrides of the scheduler config (tests shorten intervals). */
  config?: Partial<SchedulerConfig>
}

/** `EVENT=PROGRAM` specs (validated by the node config) to the scheduler's hook table. */
export function parseHookSpecs (specs: readonly string[]): Partial<Record<HookEvent, string>> {
  const out: Partial<Record<HookEvent, string>> = {}
  for (const s of specs) {
    const eq = s.indexOf('=')
    const event = s.slice(0, eq) as HookEvent
    if (eq <= 0 || !(HOOK_EVENTS as readonly string[]).includes(event)) throw new NodeError(`--hook ${s}: expected EVENT=PROGRAM with EVENT one of ${HOOK_EVENTS.join(', ')}`)
    out[event] = s.slice(eq + 1)
  }
  return out
}

/**
 * Fetch `storePath`'s closure from the swarm into the cache (verified against trusted keys), then
 * import what the local store lacks, references first. The store re-checks each NAR's hash.
 */
export async function importFromSwarm (subs: SubstitutesService, store: StoreDaemon, storePath: string, signal?: AbortSignal): Promise<number> {
  return await importManyFromSwarm(subs, store, [storePath], { signal })
}

/** A path of a closure to import, known from a bundle taken in memory or from the node's cache (its files). */
type Known = { storePath: string, narinfo: Narinfo } & ({ taken: TakenEntry } | { files: CacheFile[] })

interface ImportPlan {
  /** What the store lacks and can be imported now, references first. */
  order: Known[]
  /** Paths the store lacks that neither the bundles nor the cache have. */
  missing: string[]
  /** Requested paths whose closure is not complete (they need something in `missing`). */
  incomplete: string[]
}

/**
 * importFromSwarm for several paths at once: closure bundles taken from the peers in `from`
 * (the nodes that submitted the builds, which published their .drv closures) straight into
 * memory, the DHT for whatever they did not have, then ONE import of everything the store lacks.
 */
export async function importManyFromSwarm (subs: SubstitutesService, store: StoreDaemon, storePaths: string[], opts: { from?: string[], signal?: AbortSignal } = {}): Promise<number> {
  // GC must not evict what this import is about to read from the cache (released when imported)
  const unpinTop = subs.pin(storePaths)
  let unpinClosure = (): void => {}
  try {
    const t0 = performance.now()
    const storeDir = subs.cache.storeDir
    const taken = new Map<string, TakenEntry>()
    // the submitters (or builders) named: bundles first, then asked again before the DHT
    const holders = (opts.from ?? []).flatMap((p) => { try { return [peerIdFromString(p)] } catch { return [] } })
    let plan = await planImport(subs, store, storePaths, taken)
    for (const peer of holders) {
      if (plan.missing.length === 0) break
      const wanted = plan.missing.map((p) => p.slice(storeDir.length + 1, storeDir.length + 33))
      for (let i = 0; i < wanted.length; i += MAX_BUNDLE_REQUEST) {
        try {
          for (const e of (await subs.bundles.take(peer, wanted.slice(i, i + MAX_BUNDLE_REQUEST), { signal: opts.signal })).entries) taken.set(e.narinfo.storePath, e)
        } catch (err) {
          opts.signal?.throwIfAborted()
          log('closure bundle from %p: %s: %s', peer, (err as Error).name, (err as Error).message)
          break
        }
      }
      plan = await planImport(subs, store, storePaths, taken)
    }
    const t1 = performance.now()
    let pullError: Error | undefined
    if (plan.missing.length > 0) {
      // the rest (large files, a bundle that failed) into the cache, the submitters asked before
      // the DHT: they published these closures and announce them only in their next re-provide
      await subs.pullClosures(plan.missing, { signal: opts.signal, holders }).catch((err: Error) => { pullError = err })
      plan = await planImport(subs, store, storePaths, taken)
    }
    opts.signal?.throwIfAborted()
    const fromCache = plan.order.filter((k) => !('taken' in k))
    unpinClosure = subs.pin(fromCache.map((k) => k.storePath))
    log('closures of %d path(s): %d taken in %d ms, %d from the cache, %d to import%s', storePaths.length, taken.size, Math.round(t1 - t0),
      fromCache.length, plan.order.length, plan.missing.length > 0 ? `, ${plan.missing.length} not found` : '')
    const imported = await importPlanned(subs, store, plan.order, opts.signal)
    if (plan.incomplete.length > 0) {
      throw pullError ?? new DerivationUnavailableError(plan.incomplete[0], `its closure lacks ${plan.missing.slice(0, 3).join(' ')}${plan.missing.length > 3 ? ' …' : ''}`)
    }
    return imported
  } finally {
    unpinTop()
    unpinClosure()
  }
}

/**
 * Walk the closures of `roots` over what is known (bundles in memory, then the cache), ask the
 * store once which of them it lacks, and order those references first. A path the store has
 * needs nothing below it (a valid path's references are valid).
 */
async function planImport (subs: SubstitutesService, store: StoreDaemon, roots: string[], taken: Map<string, TakenEntry>): Promise<ImportPlan> {
  const storeDir = subs.cache.storeDir
  const known = new Map<string, Known | null>()
  const queue = [...new Set(roots)]
  for (let i = 0; i < queue.length; i++) {
    const p = queue[i]
    if (known.has(p)) continue
    const t = taken.get(p)
    let k: Known | null = null
    if (t !== undefined) {
      k = { storePath: p, narinfo: t.narinfo, taken: t }
    } else {
      const entry = await subs.cache.getEntry(p.slice(storeDir.length + 1, storeDir.length + 33))
      if (entry !== undefined) k = { storePath: p, narinfo: parseNarinfo(entry.narinfo, { storeDir }), files: entry.files }
    }
    known.set(p, k)
    if (k !== null) for (const r of k.narinfo.references) if (!known.has(`${storeDir}/${r}`)) queue.push(`${storeDir}/${r}`)
  }
  const invalid = new Set(await store.filterInvalid([...known.keys()]))
  const order: Known[] = []
  const missing: string[] = []
  const complete = new Map<string, boolean>()
  // depth-first, references first; iterative so a long chain cannot overflow the stack
  for (const root of new Set(roots)) {
    const stack: Array<{ p: string, refs?: string[], ok: boolean }> = [{ p: root, ok: true }]
    while (stack.length > 0) {
      const top = stack[stack.length - 1]
      if (top.refs === undefined) {
        if (complete.has(top.p)) { stack.pop(); if (stack.length > 0 && complete.get(top.p) === false) stack[stack.length - 1].ok = false; continue }
        if (!invalid.has(top.p)) { complete.set(top.p, true); stack.pop(); continue }
        const k = known.get(top.p)
        if (k == null) {
          missing.push(top.p)
          complete.set(top.p, false)
          stack.pop()
          if (stack.length > 0) stack[stack.length - 1].ok = false
          continue
        }
        complete.set(top.p, true) // provisional: a reference cycle back here is a self-reference
        top.refs = k.narinfo.references.map((r) => `${storeDir}/${r}`).filter((r) => r !== top.p).reverse()
      }
      const next = top.refs.pop()
      if (next !== undefined) { stack.push({ p: next, ok: true }); continue }
      stack.pop()
      complete.set(top.p, top.ok)
      if (top.ok) order.push(known.get(top.p) as Known)
      else if (stack.length > 0) stack[stack.length - 1].ok = false
    }
  }
  return { order, missing, incomplete: roots.filter((r) => complete.get(r) === false) }
}

/** Import planned paths (references first) through one import process when the store has the batch form. */
async function importPlanned (subs: SubstitutesService, store: StoreDaemon, order: Known[], signal?: AbortSignal): Promise<number> {
  if (order.length === 0) return 0
  const storeDir = subs.cache.storeDir
  const items = order.map((k) => {
    const { storePath: p, narinfo: info } = k
    let nar: AsyncIterable<Uint8Array>
    if ('taken' in k) {
      nar = Readable.from([k.taken.nar])
    } else {
      const file = cheapestToUnpack(k.files)
      if (file === undefined) throw new DerivationUnavailableError(p, 'the cache has no NAR file for it')
      // opened when the import reaches it: a batch must not hold a descriptor per path
      nar = (async function * (): AsyncGenerator<Uint8Array> {
        const raw = await subs.cache.openFile(file.url)
        yield * (file.compression === 'none' ? raw : raw.pipe(decompressStream(file.compression)))
      })()
    }
    return {
      info: {
        storePath: p,
        narHash: info.narHash,
        narSize: info.narSize,
        references: info.references.map((r) => `${storeDir}/${r}`),
        ...(info.deriver !== undefined ? { deriver: `${storeDir}/${info.deriver}` } : {})
      },
      nar
    }
  })
  signal?.throwIfAborted()
  let imported: number
  if (store.importPaths !== undefined) {
    imported = await store.importPaths(items)
  } else {
    imported = 0
    for (const item of items) { signal?.throwIfAborted(); await store.importPath(item.info, item.nar); imported++ }
  }
  if (imported > 0) log('imported %d path(s)', imported)
  return imported
}

/** .drv files fetched and imported together (one closure bundle per submitter, one import). */
const DRV_BATCH = 64
/** Batches in flight at once (a slow fallback through the DHT must not stall every claim). */
const DRV_BATCHES = 2
/** Claimable builds looked at for .drv files to fetch ahead, best first (the first DRV_BATCH missing ones are). */
const PREFETCH_AHEAD = 512

interface Deferred { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void }

function deferred (): Deferred {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

export interface SwarmInputsHooks {
  /** The .drv files of the builds this node could claim next, best first (fetched ahead). */
  ahead?: () => string[]
  /** Peers that should hold a .drv's closure: the nodes that submitted builds of it. */
  holders?: (drv: string) => string[]
}

/**
 * The InputFetcher port over the node's substitutes: .drv closures and input outputs from the
 * swarm. The scheduler reads candidates' derivations one at a time; a request for one .drv joins
 * a batch with the other requested and next claimable ones, fetched as closure bundles from
 * their submitters (one stream per submitter) and imported by one store process.
 */
export function swarmInputs (subs: SubstitutesService, store: StoreDaemon, hooks: SwarmInputsHooks = {}): InputFetcher {
  const waiting = new Map<string, Deferred>()
  const inflight = new Map<string, Promise<void>>()
  let running = 0
  // requests made together (a claimed batch's .drv files) start as one batch
  let pumpTimer: NodeJS.Timeout | undefined
  const pumpSoon = (): void => {
    pumpTimer ??= setTimeout(() => { pumpTimer = undefined; pump() }, 2)
  }
  const pump = (): void => {
    while (running < DRV_BATCHES && waiting.size > 0) {
      const batch = [...waiting.entries()].slice(0, DRV_BATCH)
      for (const [drv, d] of batch) { waiting.delete(drv); inflight.set(drv, d.promise) }
      running++
      void runBatch(batch).finally(() => {
        for (const [drv] of batch) inflight.delete(drv)
        running--
        pump()
      })
    }
  }
  const runBatch = async (batch: Array<[string, Deferred]>): Promise<void> => {
    const t0 = performance.now()
    const drvs = batch.map(([d]) => d)
    // one bundle per submitter: group the batch by the first node that submitted each .drv
    const groups = new Map<string, string[]>()
    for (const d of drvs) {
      const from = hooks.holders?.(d)[0] ?? ''
      let g = groups.get(from)
      if (g === undefined) { g = []; groups.set(from, g) }
      g.push(d)
    }
    try {
      for (const [from, group] of groups) {
        await importManyFromSwarm(subs, store, group, { from: from === '' ? [] : [from] }).catch((err: Error) => { log('fetching %d .drv closure(s): %s: %s', group.length, err.name, err.message) })
      }
    } finally {
      const still = new Set(await store.filterInvalid(drvs).catch(() => drvs))
      for (const [drv, d] of batch) {
        if (still.has(drv)) d.reject(new DerivationUnavailableError(drv, 'its closure could not be fetched from the swarm'))
        else d.resolve()
      }
      log('fetched %d of %d .drv closure(s) in %d ms', drvs.length - still.size, drvs.length, Math.round(performance.now() - t0))
    }
  }
  const request = (drv: string): Promise<void> => {
    const already = inflight.get(drv) ?? waiting.get(drv)?.promise
    if (already !== undefined) return already
    const d = deferred()
    d.promise.catch(() => {}) // a prefetch nobody awaits must not be an unhandled rejection
    waiting.set(drv, d)
    return d.promise
  }
  const prefetch = async (): Promise<void> => {
    const next = (hooks.ahead?.() ?? []).filter((d) => !inflight.has(d) && !waiting.has(d))
    if (next.length === 0) return
    // the store remembers what it found valid: asking about the ones fetched before is cheap
    for (const d of await store.filterInvalid(next)) {
      if (waiting.size >= DRV_BATCH) break
      void request(d)
    }
  }
  return {
    async ensureDerivation (drv, signal) {
      if (await store.isValid(drv)) return
      const mine = request(drv)
      // the next claimable ones join the same batch; the batch starts once they are queued
      await prefetch().catch((err: Error) => { log('prefetch failed: %s', err.message) })
      pumpSoon()
      // the signal is often the scheduler's lifetime: its listener must go once the race is over
      let onAbort = (): void => {}
      try {
        await Promise.race([mine, new Promise<never>((_resolve, reject) => {
          onAbort = () => { reject(signal.reason) }
          if (signal.aborted) onAbort()
          signal.addEventListener('abort', onAbort, { once: true })
        })])
      } catch (err) {
        if (err instanceof DerivationUnavailableError || signal.aborted) throw err
        throw new DerivationUnavailableError(drv, `${(err as Error).name}: ${(err as Error).message}`)
      } finally {
        signal.removeEventListener('abort', onAbort)
      }
      if (!await store.isValid(drv)) throw new DerivationUnavailableError(drv, 'still not valid after importing its closure')
    },
    async ensureOutputs (paths, signal, holders = []) {
      const missing = paths.length === 0 ? [] : await store.filterInvalid(paths)
      if (missing.length > 0) {
        // small outputs (and their closures) in one bundle from the nodes that built them
        await importManyFromSwarm(subs, store, missing, { signal, from: holders }).catch((err: Error) => { log('inputs %s not fetched: %s: %s', missing.join(' '), err.name, err.message) })
      }
      return missing.length === 0 ? [] : await store.filterInvalid(missing)
    }
  }
}

/**
 * Outputs published through the substitutes service: NAR + signed narinfo in the cache, then
 * announced in the DHT in the background. The result op need not wait for the DHT (two walks
 * per path, on a busy node seconds): whoever reads the result knows the builder and asks it
 * first (RecentOutputs in src/substitutes, the holders in the scheduler's prepare).
 */
function substitutesPublisher (subs: SubstitutesService): OutputPublisher {
  return {
    async addFromStore (_store, storePath) {
      const published = await subs.publish([storePath], { announce: 'background' })
      const mine = published.find((p) => p.storePath === storePath)
      if (mine === undefined) throw new NodeError(`publishing ${storePath} returned no entry for it`)
      return { storePath, narHash: mine.narHash, narSize: mine.narSize }
    }
  }
}

/** The scheduler as a node service, plus build logs (API, HTTP front, swarm protocol) and publish-on-submit. */
export class SchedulerNodeService implements NodeService {
  readonly name = 'scheduler'
  scheduler?: SchedulerService
  private store?: StoreDaemon
  private builderClient?: Backend['builder']
  get storeClient (): StoreDaemon | undefined { return this.store }
  private removeSubmitHook?: () => void
  private readonly protocol: string

  constructor (private readonly components: NodeComponents, private readonly init: SchedulerNodeInit = {}) {
    this.protocol = components.protocolId('build-log', '1.0.0')
  }

  async start (): Promise<void> {
    const c = this.components
    const queue = queueOf(c)
    if (queue === undefined) throw new SchedulerNoQueueError('the scheduler needs the queue service to start first')
    const subs = this.init.substitutes?.()
    const kind = storeKindOf(c.builder.kind, c.storeDir)
    // Nix's own hook would start once per build client only to decline; ours declines at once.
    const buildHook = kind === 'nix' && c.builder.idleBuildHook === true ? await writeDecliningBuildHook(c.dataDir) : undefined
    if (buildHook !== undefined) log('no remote builders configured: Nix builds get the declining hook %s', buildHook)
    // the node's fresh store holds no valid path to learn from; a plain local one needs none
    const localHere = kind === 'nix' && c.builder.localStore === true && c.storeDir === (process.env.NIX_STORE_DIR ?? NIX_COMMANDS.defaultStoreDir)
    const backend = await (this.init.openBackend ?? openBackend)(kind, {
      ...(buildHook !== undefined ? { buildHook } : {}),
      ...(localHere ? { trustLocalAbsence: true } : {}),
      // as configured, read at detection: a build over a --serve connection must send them
      ...(c.builder.buildLimits ?? {}),
      storeDir: c.storeDir,
      // Inputs reach the store through swarmInputs (verified NAR import), so the daemon needs no
      // substituter and must never build an input itself: missing ones are reported and retried.
      substituters: [],
      trustedPublicKeys: [],
      inputs: 'require'
    })
    this.store = backend.store
    this.builderClient = backend.builder
    const hookSpecs = c.config.hooks ?? []
    this.scheduler = new SchedulerService({
      queue,
      store: backend.store,
      builder: c.builder.kind === 'none' || subs === undefined ? null : backend.builder,
      publisher: subs !== undefined ? substitutesPublisher(subs) : { addFromStore: async (s, p) => { throw new NodeError(`no substitutes service to publish ${p} (${s.storeDir})`) } },
      ...(subs !== undefined
        ? {
            inputs: swarmInputs(subs, backend.store, {
              ahead: () => this.claimableDerivations(),
              // the nodes that submitted it published its closure (this one's store lacks it)
              holders: (drv) => [...new Set(queue.byDerivation(drv).map((b) => b.submitter))].filter((p) => p !== c.libp2p.peerId.toString())
            })
          }
        : {}),
      logsDir: join(c.dataDir, 'logs'),
      gcRootsDir: join(c.dataDir, 'gcroots'),
      hooks: { programs: parseHookSpecs(hookSpecs) },
      config: {
        maxBuilds: c.config.maxBuilds,
        systems: c.builder.kind === 'none' ? [] : [...c.builder.systems],
        tags: [...(c.config.tags ?? [])],
        ...(c.config.lease !== undefined ? { leaseMs: c.config.lease * 1000 } : {}),
        ...this.init.config
      }
    })
    await this.scheduler.start()
    const qn = queueNodeOf(c)
    if (qn !== undefined && subs !== undefined) this.removeSubmitHook = qn.addSubmitHook(async (drvs) => { await this.publishSubmitted(subs, drvs) })
    await c.libp2p.handle(this.protocol, (stream: Stream, _conn: Connection) => { void this.serveLog(stream) }, { runOnLimitedConnection: false })
    c.http.route('GET', '/api/builds/:id/log', async (req, res, p, url) => { await this.apiLog(req, res, p, url) })
    log('scheduler started (%s, %d slot(s), systems %s)', c.builder.kind, this.scheduler.config.maxBuilds, this.scheduler.config.systems.join(','))
  }

  async stop (): Promise<void> {
    this.removeSubmitHook?.()
    this.components.http.unroute('/api/builds/:id/log')
    await this.components.libp2p.unhandle(this.protocol).catch(() => {})
    await this.scheduler?.stop()
    // the store's and the builder's long-lived connections (nix-store --serve) end with the node
    await Promise.all([this.store?.close?.(), this.builderClient?.close?.()])
  }

  status (): Record<string, unknown> {
    const store = this.store?.connection?.()
    return this.scheduler === undefined ? {} : { ...this.scheduler.status(), ...(store !== undefined ? { store } : {}) }
  }

  /** What the HTTP front's /log/<drv> serves: the latest build of that derivation. */
  readonly logSource: BuildLogSource = {
    openLog: async (drvBaseName) => {
      const queue = queueOf(this.components)
      if (queue === undefined || !/^[0-9a-z]{32}-[^/]+\.drv$/.test(drvBaseName)) return undefined
      const builds = queue.byDerivation(`${this.components.storeDir}/${drvBaseName}`)
      const latest = [...builds].sort((a, b) => b.submitHlc[0] - a.submitHlc[0])
      for (const b of latest) {
        const found = await this.findLog(b).catch(() => undefined)
        if (found !== undefined) return { size: found.log.length, stream: Readable.from([found.log]) }
      }
      return undefined
    }
  }

  /** The .drv files of the builds this node could claim next, best first (what to prefetch). */
  private claimableDerivations (): string[] {
    const queue = queueOf(this.components)
    const systems = this.scheduler?.config.systems ?? []
    if (queue === undefined || systems.length === 0) return []
    // builds whose submit lists their inputs are claimed first and fetched then: only their own
    return queue.claimable(systems, PREFETCH_AHEAD).filter((c) => queue.get(c.id)?.inputs === undefined).map((c) => c.derivation)
  }

  // ---- submit ---------------------------------------------------------------------------

  /**
   * Publish the closures of the submitted .drv files this node's store has, so builders can fetch
   * them. The builds enter the queue meanwhile: a builder's bundle request for them waits for it.
   */
  private async publishSubmitted (subs: SubstitutesService, drvs: string[]): Promise<void> {
    const store = this.store
    if (store === undefined) return
    const local = drvs.filter((d) => d.startsWith(this.components.storeDir + '/'))
    if (local.length === 0) return
    await subs.publishing(local, async () => { await this.publishLocal(subs, store, local) })
  }

  private async publishLocal (subs: SubstitutesService, store: StoreDaemon, local: string[]): Promise<void> {
    let invalid: Set<string>
    try {
      invalid = new Set(await store.filterInvalid(local))
    } catch (err) {
      // no daemon here: the builders must find the .drv elsewhere (or report it unavailable)
      log('cannot check the submitted derivations locally: %s', (err as Error).message)
      return
    }
    // already in the cache: published before (e.g. `guix-swarm publish`), announced or queued for it
    const held = await Promise.all(local.map(async (d) => await subs.cache.has(d.slice(this.components.storeDir.length + 1, this.components.storeDir.length + 33))))
    const valid = local.filter((d, i) => !invalid.has(d) && !held[i])
    if (valid.length === 0) return
    // builders take these from this node (closure bundles, or the NAR protocol asking this node
    // first: they know it from the queue), so the DHT records wait for the next re-provide round
    // instead of competing with the builds for the CPU (two hundred submits were 200 DHT walks)
    const published = await subs.publish(valid, { announce: 'later' })
    log('published %d path(s) for %d submitted derivation(s)', published.length, valid.length)
  }

  // ---- logs -----------------------------------------------------------------------------

  /** The log of a build's attempt (default: the latest attempt whose log any node holds). */
  async findLog (record: BuildRecord, attempt?: number): Promise<{ attempt: number, peerId: string, log: Buffer } | undefined> {
    const scheduler = this.scheduler
    if (scheduler === undefined) return undefined
    const candidates = [...record.attempts].reverse().filter((a) => attempt === undefined || a.number === attempt)
    for (const a of candidates) {
      const name = a.result?.log?.name ?? logName(record.id, a.number)
      const holder = a.result?.log?.peerId ?? a.claimer
      const local = await scheduler.readLogByName(name)
      if (local !== undefined) return { attempt: a.number, peerId: this.components.libp2p.peerId.toString(), log: local }
      if (holder === this.components.libp2p.peerId.toString()) continue
      // an attempt that never started has no log anywhere
      if (!a.started && a.result === undefined) continue
      const remote = await this.fetchLog(holder, name).catch((err: Error) => { log('log %s from %s: %s', name, holder, err.message); return undefined })
      if (remote !== undefined) return { attempt: a.number, peerId: holder, log: remote }
    }
    return undefined
  }

  private async apiLog (_req: IncomingMessage, res: ServerResponse, p: RouteParams, url: URL): Promise<void> {
    const queue = queueOf(this.components)
    const record = queue?.get(p.id)
    if (record === undefined) throw new BuildLogNotFoundError(`no build ${p.id} in the queue`)
    const a = url.searchParams.get('attempt')
    let attempt: number | undefined
    if (a !== null && a !== '') {
      attempt = Number(a)
      if (!Number.isSafeInteger(attempt) || attempt < 1) throw new HttpBadRequestError(`"attempt" must be a positive integer, got ${JSON.stringify(a).slice(0, 40)}`)
    }
    const found = await this.findLog(record, attempt)
    if (found === undefined) throw new BuildLogNotFoundError(`no node has a log of build ${p.id}${attempt !== undefined ? ` attempt ${attempt}` : ''}`)
    res.writeHead(200, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': found.log.length,
      'x-build-attempt': String(found.attempt),
      'x-log-peer': found.peerId
    })
    res.end(found.log)
  }

  /** Request: the log name and a newline. Answer: one status byte, then the log until the stream ends. */
  private async serveLog (stream: Stream): Promise<void> {
    try {
      let req = ''
      for await (const chunk of stream) {
        req += Buffer.from(chunk instanceof Uint8Array ? chunk : chunk.subarray()).toString('utf8')
        if (req.includes('\n') || req.length > 200) break
      }
      const name = req.split('\n')[0]
      let text: Buffer | undefined
      try { text = await this.scheduler?.readLogByName(name) } catch { text = undefined } // a bad name is "no such log"
      if (text === undefined || text.length > MAX_LOG_BYTES) {
        stream.send(Uint8Array.of(LOG_STATUS_MISSING))
      } else {
        await sendWithBackpressure(stream, Uint8Array.of(LOG_STATUS_OK))
        for (let i = 0; i < text.length; i += 64 * 1024) await sendWithBackpressure(stream, text.subarray(i, i + 64 * 1024))
      }
      await stream.close()
    } catch (err) {
      log('serving a log failed: %s', (err as Error).message)
      stream.abort(err as Error)
    }
  }

  private async fetchLog (peer: string, name: string): Promise<Buffer | undefined> {
    const signal = AbortSignal.timeout(LOG_FETCH_TIMEOUT_MS)
    const stream = await this.components.libp2p.dialProtocol(peerIdFromString(peer), this.protocol, { signal })
    try {
      await sendWithBackpressure(stream, Buffer.from(name + '\n'))
      await stream.close() // half-close: the request is complete
      const parts: Buffer[] = []
      let size = 0
      for await (const chunk of stream) {
        const b = Buffer.from(chunk instanceof Uint8Array ? chunk : chunk.subarray())
        size += b.length
        if (size > MAX_LOG_BYTES + 1) throw new BuildLogProtocolError(`log ${name} from ${peer} exceeds ${MAX_LOG_BYTES} bytes`)
        parts.push(b)
      }
      const all = Buffer.concat(parts)
      if (all.length === 0) throw new BuildLogProtocolError(`empty answer for log ${name} from ${peer}`)
      if (all[0] === LOG_STATUS_MISSING) return undefined
      if (all[0] !== LOG_STATUS_OK) throw new BuildLogProtocolError(`unknown status ${all[0]} for log ${name} from ${peer}`)
      return all.subarray(1)
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }
}

/** Scheduler services by node, so the substitutes' /log route can find the logs. */
const schedulers = new WeakMap<NodeComponents, SchedulerNodeService>()

/** A BuildLogSource for the substitutes' HTTP front that asks this node's scheduler, once it runs. */
export function buildLogsOf (components: NodeComponents): BuildLogSource {
  return { openLog: async (drv) => await schedulers.get(components)?.logSource.openLog(drv) }
}

/** The store client of the node's running scheduler, if it has one (the substitutes service shares it). */
export function schedulerStoreOf (components: NodeComponents): StoreDaemon | undefined {
  return schedulers.get(components)?.storeClient
}

/** Whether the node's scheduler holds builds now (the substitutes service defers announcements meanwhile). */
export function schedulerBusyOf (components: NodeComponents): boolean {
  return schedulers.get(components)?.scheduler?.busy === true
}

/** The ServiceFactory for src/node/services.ts. */
export function schedulerService (components: NodeComponents, init: SchedulerNodeInit = {}): SchedulerNodeService {
  const s = new SchedulerNodeService(components, init)
  schedulers.set(components, s)
  return s
}
