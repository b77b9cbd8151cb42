// SchedulerService: turns the replicated queue into builds on the local daemon. Claims the best
// claimable build while slots are free, waits a settle window, starts only if its claim still
// wins, renews the lease while building, aborts the moment the claim is lost or the build is
// canceled, publishes outputs as signed NARs and records the result.
import { mkdir, readdir, rm } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { logger } from '@libp2p/logger'
import { isFinished, type BuildChange, type BuildRecord, type Claimable, type NarOutput, type QueueService, type ResultRequest } from '../crdt/index.js'
import { PathNotValidError, type Builder, type BuildOutcome, type Derivation, type StoreDaemon } from '../daemon/index.js'
import { backoffMs, resolveConfig, tagsMet, type SchedulerConfig } from './config.js'
import { PublishFailedError } from './errors.js'
import { HookRunner, type HookConfig, type HookEvent } from './hooks.js'
import { LogStore } from './logs.js'
import { localInputs, type InputFetcher, type OutputPublisher } from './ports.js'

const log = logger('guix-swarm:scheduler')

const DRV_CACHE_MAX = 10_000
const STOPPING = 'scheduler stopping'
/** How long a node counts as busy after its last run ended (see SchedulerService.busy). */
export const BUSY_GRACE_MS = 3000

/** The queue surface the scheduler uses (a QueueService satisfies it). */
export type SchedulerQueue = Pick<QueueService, 'claimable' | 'get' | 'byDerivation' | 'claim' | 'renew' | 'release' | 'result' | 'view' | 'peerIdString' | 'addEventListener' | 'removeEventListener'>

export interface SchedulerComponents {
  queue: SchedulerQueue
  store: StoreDaemon
  /** null: `--builder none`, the node never claims (hooks still run). */
  builder: Builder | null
  publisher: OutputPublisher
  /** Default: everything must already be valid locally. */
  inputs?: InputFetcher
  /** Build logs live here (compressed when the build ends). */
  logsDir: string
  /** If set, outputs are GC roots here from the build until they are published. */
  gcRootsDir?: string
  hooks?: Partial<HookConfig>
  config?: Partial<SchedulerConfig>
  now?: () => number
}

/** `queued`: settled and started, waiting for the builds before it in its batch (built one by one). */
export type RunPhase = 'settling' | 'preparing' | 'queued' | 'building' | 'publishing' | 'finishing'

export interface RunningBuild {
  id: string
  attempt: number
  derivation: string
  phase: RunPhase
  since: number
}

export type DecisionAction = 'claimed' | 'started' | 'lost' | 'skipped' | 'succeeded' | 'failed' | 'missing-inputs' | 'released' | 'aborted'

export interface Decision {
  at: number
  build: string
  attempt?: number
  action: DecisionAction
  reason: string
  /** On an attempt's last decision: milliseconds spent in each phase. */
  phases?: Partial<Record<RunPhase, number>>
}

export interface SchedulerStatus {
  builder: string
  maxBuilds: number
  slotsUsed: number
  slotsFree: number
  systems: string[]
  tags: string[]
  running: RunningBuild[]
  decisions: Decision[]
  hookFailures: number
  /** Batches handed to the builder so far, the builds in them, and the batch size the next claim pass aims for. */
  batching: { batches: number, builds: number, size: number }
  /**
   * Present while the daemon keeps failing to start builds: hand-overs in a row that ended only
   * in setup failures, the last message, and (from SETUP_STRIKES on) until when this node
   * claims nothing (epoch ms).
   */
  setupFailures?: { inARow: number, last: string, pausedUntil?: number }
}

/**
 * Hand-overs in a row that end only in setup failures before the node stops claiming for a
 * while: a broken daemon would otherwise claim, fail and release build after build, holding
 * every other node back by a settle window and a lease each time.
 */
export const SETUP_STRIKES = 3

export interface StopOptions {
  /** Release held claims so others take over at once (default). false: vanish as a crash would. */
  release?: boolean
}

interface Run extends RunningBuild {
  /** performance.now() when the current phase began, and time spent in finished phases. */
  phaseStart: number
  phases: Partial<Record<RunPhase, number>>
  controller: AbortController
  abortReason?: string
  renewTimer?: NodeJS.Timeout
  done?: Promise<void>
}

/** Builds claimed in one pass: settled together, handed to the builder together, holding one slot until the builder is done. */
interface Batch {
  runs: Run[]
  done?: Promise<void>
}

export class SchedulerService {
  readonly name = 'scheduler'
  readonly config: SchedulerConfig
  readonly logs: LogStore
  readonly hooks: HookRunner
  private readonly queue: SchedulerQueue
  private readonly store: StoreDaemon
  private readonly builder: Builder | null
  private readonly publisher: OutputPublisher
  private readonly inputs: InputFetcher
  private readonly now: () => number
  private readonly self: string
  private readonly runs = new Map<string, Run>()
  /** Local time the last run ended (see busy). */
  private lastRunEndedAt = -Infinity
  /** Batches holding a build slot (claimed, settling, preparing or building). */
  private readonly holding = new Set<Batch>()
  /** Recent wall time per build inside a batch (EWMA, ms); undefined until one batch has built. */
  private meanBuildMs?: number
  private readonly batchCount = { batches: 0, builds: 0 }
  private readonly decisions: Decision[] = []
  /** Last skip reason per build, so a repeated scan does not flood the decision log. */
  private readonly skipReasons = new Map<string, string>()
  /** Hand-overs to the builder in a row that ended only in setup failures (see SETUP_STRIKES). */
  private readonly setupTrouble = { inARow: 0, last: '', pausedUntil: 0 }
  /** Builds this node must not claim before a local time (its own setup failures, unavailable .drv). */
  private readonly localBackoff = new Map<string, { until: number, count: number }>()
  /** Derivations read from the local store (each read once: every store query is a process). */
  private readonly drvCache = new Map<string, Derivation>()
  private readonly drvReading = new Map<string, Promise<Derivation>>()
  private readingAhead = false
  /** Peers seen holding claims, by the local time last seen (see activeBuilders). */
  private readonly claimers = new Map<string, number>()
  private started = false
  /** Stopped without releasing: write no more ops. */
  private silent = false
  private pumping = false
  private again = false
  private pumpTimer?: NodeJS.Timeout
  private pollTimer?: NodeJS.Timeout
  private readonly lifetime = new AbortController()

  constructor (private readonly components: SchedulerComponents) {
    this.config = resolveConfig(components.config)
    this.queue = components.queue
    this.store = components.store
    this.builder = components.builder
    this.publisher = components.publisher
    this.inputs = components.inputs ?? localInputs(components.store)
    this.now = components.now ?? Date.now
    this.self = components.queue.peerIdString()
    this.logs = new LogStore(components.logsDir)
    this.hooks = new HookRunner({ programs: components.hooks?.programs ?? {}, timeoutMs: components.hooks?.timeoutMs ?? 30_000 })
  }

  private get claiming (): boolean {
    return this.builder !== null && this.config.maxBuilds > 0 && this.config.systems.length > 0
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.logs.init()
    if (this.components.gcRootsDir !== undefined) await mkdir(this.components.gcRootsDir, { recursive: true })
    this.started = true
    this.silent = false
    this.queue.addEventListener('build', this.onBuild)
    if (this.claiming) {
      this.pollTimer = setInterval(() => { void this.pump() }, this.config.pollMs)
      this.pollTimer.unref()
      this.schedulePump(0)
    }
    log('started: %s, %d slots, systems %o, tags %o', this.builder?.kind ?? 'no builder', this.config.maxBuilds, this.config.systems, this.config.tags)
  }

  async stop (opts: StopOptions = {}): Promise<void> {
    if (!this.started) return
    this.started = false
    this.silent = opts.release === false
    this.queue.removeEventListener('build', this.onBuild)
    clearInterval(this.pollTimer)
    clearTimeout(this.pumpTimer)
    this.lifetime.abort()
    for (const run of this.runs.values()) this.abortRun(run, STOPPING)
    await Promise.allSettled([...this.runs.values()].map(async (r) => await r.done))
    await this.hooks.stop()
  }

  status (): SchedulerStatus & Record<string, unknown> {
    const used = this.slotsUsed
    return {
      builder: this.builder?.kind ?? 'none',
      maxBuilds: this.claiming ? this.config.maxBuilds : 0,
      slotsUsed: used,
      // a node paused by setup failures takes nothing: peers and `guix-swarm peers` should see that
      slotsFree: this.claiming && this.now() >= this.setupTrouble.pausedUntil ? Math.max(0, this.config.maxBuilds - used) : 0,
      systems: [...this.config.systems],
      tags: [...this.config.tags],
      running: [...this.runs.values()].map(({ id, attempt, derivation, phase, since }) => ({ id, attempt, derivation, phase, since })),
      decisions: [...this.decisions],
      hookFailures: this.hooks.failures.length,
      batching: { ...this.batchCount, size: this.batchSize() },
      ...(this.setupTrouble.inARow > 0
        ? { setupFailures: { inARow: this.setupTrouble.inARow, last: this.setupTrouble.last, ...(this.setupTrouble.pausedUntil > this.now() ? { pausedUntil: this.setupTrouble.pausedUntil } : {}) } }
        : {})
    }
  }

  /** The log of `buildId`'s attempt (latest held here by default), decompressed; undefined if this node has none. */
  async readLog (buildId: string, attempt?: number): Promise<{ name: string, attempt: number, log: Buffer } | undefined> {
    const held = await this.logs.attempts(buildId)
    const n = attempt ?? held.at(-1)
    if (n === undefined || !held.includes(n)) return undefined
    const name = `${buildId}.${n}`
    const text = await this.logs.read(name)
    return text === undefined ? undefined : { name, attempt: n, log: text }
  }

  /** A log by the name a LogRef carries. */
  async readLogByName (name: string): Promise<Buffer | undefined> { return await this.logs.read(name) }

  // ---- events --------------------------------------------------------------------------

  private readonly onBuild = (evt: Event): void => {
    const { record, previous } = (evt as CustomEvent<BuildChange>).detail
    this.fireHooks(record, previous)
    if (isFinished(record.phase)) { this.skipReasons.delete(record.id); this.localBackoff.delete(record.id) }
    const last = record.attempts.at(-1)
    if (last !== undefined && last.result === undefined && !last.released) this.claimers.set(last.claimer, this.now())
    const run = this.runs.get(record.id)
    if (run !== undefined) {
      const lost = this.whyNotOurs(run)
      if (lost !== undefined) this.abortRun(run, lost)
    }
    if (this.claiming) this.schedulePump(this.config.jitterMs)
  }

  private fireHooks (record: BuildRecord, previous: BuildRecord | undefined): void {
    if (!this.hooks.has('build-submitted') && !this.hooks.has('build-success') && !this.hooks.has('build-failure') && !this.hooks.has('build-canceled')) return
    if (previous === undefined && record.submitter === this.self) this.hook('build-submitted', record)
    if (!isFinished(record.phase) || (previous !== undefined && isFinished(previous.phase))) return
    if (record.phase === 'succeeded') {
      if (record.attempts.find(a => a.result?.outcome === 'success')?.claimer === this.self) this.hook('build-success', record)
    } else if (record.phase === 'failed') {
      if (record.attempts.at(-1)?.claimer === this.self) this.hook('build-failure', record)
    } else if (record.submitter === this.self || this.runs.has(record.id)) {
      this.hook('build-canceled', record)
    }
  }

  private hook (event: HookEvent, record: BuildRecord): void {
    let build: unknown
    try { build = this.queue.view(record.id) } catch { build = { id: record.id, derivation: record.derivation } }
    void this.hooks.run(event, { event, node: this.self, build })
  }

  // ---- claiming ------------------------------------------------------------------------

  private schedulePump (delayMs: number): void {
    if (!this.started || this.pumpTimer !== undefined) return
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = undefined
      void this.pump()
    }, delayMs > 0 ? Math.floor(Math.random() * delayMs) : 0)
  }

  private async pump (): Promise<void> {
    if (!this.started || !this.claiming) return
    if (this.pumping) { this.again = true; return }
    this.pumping = true
    try {
      do {
        this.again = false
        await this.fill()
      } while (this.again && this.started)
    } catch (e) {
      log.error('claim scan failed: %s', (e as Error).message)
    } finally {
      this.pumping = false
    }
  }

  private decide (d: Omit<Decision, 'at'>): void {
    if (d.action === 'skipped') {
      if (this.skipReasons.get(d.build) === d.reason) return
      this.skipReasons.set(d.build, d.reason)
    } else {
      this.skipReasons.delete(d.build)
    }
    this.decisions.push({ at: this.now(), ...d })
    if (this.decisions.length > this.config.decisionLog) this.decisions.splice(0, this.decisions.length - this.config.decisionLog)
    log('%s %s%s: %s', d.action, d.build, d.attempt !== undefined ? `#${d.attempt}` : '', d.reason)
  }

  /** Batches holding a build slot: publishing and recording happen outside the daemon, so they free it. */
  private get slotsUsed (): number { return this.holding.size }

  /**
   * Whether this node has builds now (claimed, settling, running or publishing), or had one less
   * than BUSY_GRACE_MS ago: a draining queue leaves short gaps between batches, and background
   * work (DHT walks) started in one takes CPU from the next batch (profiled: an eighth of a
   * builder's CPU while 200 builds ran).
   */
  get busy (): boolean { return this.runs.size > 0 || this.now() - this.lastRunEndedAt < BUSY_GRACE_MS }

  /**
   * How many builds one slot claims at once: as many as fit in batchBudgetMs at the recent mean
   * build time (one until a build has been timed), so batching only ever groups short builds,
   * where the fixed cost per daemon client and settle window dominates.
   */
  private batchSize (): number {
    if (this.config.maxBatch <= 1 || this.meanBuildMs === undefined) return 1
    return Math.max(1, Math.min(this.config.maxBatch, Math.floor(this.config.batchBudgetMs / Math.max(1, this.meanBuildMs))))
  }

  /**
   * Builders seen claiming or renewing within two lease periods, this node included. With one,
   * claims follow the queue's order exactly; with k, each node picks within a window of the
   * eligible builds of the top priority (see pickOrder), so nodes whose slots free at the same
   * moment rarely claim the same build and lose a settle window over it.
   */
  private activeBuilders (): string[] {
    const since = this.now() - 2 * this.config.leaseMs
    const peers = [this.self]
    for (const [peer, at] of this.claimers) {
      if (at < since) this.claimers.delete(peer)
      else if (peer !== this.self) peers.push(peer)
    }
    return peers
  }

  private static hash (peer: string, id: string): string { return createHash('sha256').update(peer).update(id).digest('hex') }

  /**
   * Rendezvous hashing over the active builders: a build "belongs" to the builder with the
   * smallest sha-256(peer ‖ build). A node takes its own builds first (in queue order), then the
   * others by its own hash, so batches claimed at the same moment by different nodes mostly
   * split the queue instead of overlapping (every node computes the same owners from the same
   * set of builders).
   */
  private pickKey (id: string, peers: string[]): [number, string] {
    const mine = SchedulerService.hash(this.self, id)
    for (const p of peers) if (p !== this.self && SchedulerService.hash(p, id) < mine) return [1, mine]
    return [0, '']
  }

  private async fill (): Promise<void> {
    if (this.now() < this.setupTrouble.pausedUntil) return // the poll timer comes back
    let free = this.config.maxBuilds - this.slotsUsed
    const candidates = this.queue.claimable(this.config.systems, this.config.scanLimit)
    const peers = this.activeBuilders()
    const k = peers.length
    const size = this.batchSize()
    const window = k === 1 ? 1 : 2 * k * size
    if (free <= 0) { this.readAhead(candidates, this.config.maxBuilds * size * k + window); return }
    const eligible: Claimable[] = []
    const enough = free * size * k + window - 1
    await this.readMany(candidates.filter(c => !this.runs.has(c.id) && this.queue.get(c.id)?.inputs === undefined).slice(0, enough).map(c => c.derivation))
    for (const c of candidates) {
      if (eligible.length >= enough || !this.started) break
      if (this.runs.has(c.id)) continue
      const why = await this.whyNotClaim(c)
      if (why !== undefined) { this.decide({ build: c.id, attempt: c.attempt, action: 'skipped', reason: why }); continue }
      eligible.push(c)
    }
    // k builders draw from the same eligible builds: take about a k-th share per slot, so the
    // last builds spread over the swarm instead of queueing in one node's batch
    const per = Math.max(1, Math.min(size, Math.ceil(eligible.length / (k * free))))
    while (free > 0 && eligible.length > 0 && this.started) {
      // the checks above may have awaited: take the queue's word again
      const fresh = new Map(this.queue.claimable(this.config.systems, this.config.scanLimit).map(x => [x.id, x]))
      const batch: Claimable[] = []
      const drvs = new Set<string>()
      const keys = new Map<string, [number, string]>()
      const key = (id: string): [number, string] => {
        let v = keys.get(id)
        if (v === undefined) { v = this.pickKey(id, peers); keys.set(id, v) }
        return v
      }
      while (batch.length < per && eligible.length > 0) {
        const top = eligible[0].priority
        let pick = 0
        for (let i = 1; i < Math.min(window, eligible.length); i++) {
          if (eligible[i].priority !== top) continue
          const [a, ra] = key(eligible[i].id)
          const [b, rb] = key(eligible[pick].id)
          if (a < b || (a === b && ra < rb)) pick = i
        }
        const [c] = eligible.splice(pick, 1)
        const f = fresh.get(c.id)
        // one build per derivation in a batch: a batch's outcomes are per derivation
        if (f === undefined || this.runs.has(c.id) || drvs.has(f.derivation)) continue
        drvs.add(f.derivation)
        batch.push(f)
      }
      if (batch.length === 0) continue
      this.begin(batch)
      free--
    }
    if (free <= 0) this.readAhead(this.queue.claimable(this.config.systems, this.config.scanLimit), this.config.maxBuilds * size * k + window)
  }

  /** Why this node should not claim `c` now, or undefined if it should. */
  private async whyNotClaim (c: Claimable): Promise<string | undefined> {
    const r = this.queue.get(c.id)
    if (r === undefined) return 'unknown build'
    if (!tagsMet(r.tags, this.config.tags)) return `needs tags ${JSON.stringify(r.tags)}; this node offers ${JSON.stringify(this.config.tags)}`
    const until = this.backoffUntil(r)
    const now = this.now()
    if (until > now) return `backing off until ${new Date(until).toISOString()}` // stable text: logged once per backoff
    // the submit says what the .drv needs; otherwise the .drv is read (fetched when not here)
    let inputs: Iterable<string> | undefined = r.inputs
    if (inputs === undefined) {
      try {
        inputs = (await this.derivation(r.derivation, this.lifetime.signal)).inputDrvs.keys()
      } catch (e) {
        this.backoffLocally(r.id)
        return `derivation not available here: ${(e as Error).message}`
      }
    }
    for (const input of inputs) {
      const builds = this.queue.byDerivation(input)
      if (builds.length === 0 || builds.some(b => b.phase === 'succeeded')) continue
      const pending = builds.find(b => !isFinished(b.phase))
      if (pending !== undefined) return `input ${input} is build ${pending.id}, not built yet`
    }
    return undefined
  }

  /** The derivation from the local store, fetched through the input port when it is not valid here. */
  private async derivation (path: string, signal: AbortSignal): Promise<Derivation> {
    const cached = this.drvCache.get(path)
    if (cached !== undefined) return cached
    let pending = this.drvReading.get(path)
    if (pending === undefined) {
      pending = (async () => {
        try {
          return await this.store.readDerivation(path) // checks validity first
        } catch (e) {
          if (!(e instanceof PathNotValidError)) throw e
          await this.inputs.ensureDerivation(path, signal)
          return await this.store.readDerivation(path)
        }
      })()
      this.drvReading.set(path, pending)
      void pending.then((d) => { this.remember(path, d) }, () => {}).finally(() => this.drvReading.delete(path))
    }
    return await pending
  }

  private remember (path: string, d: Derivation): void {
    if (this.drvCache.size >= DRV_CACHE_MAX) this.drvCache.delete(this.drvCache.keys().next().value as string)
    this.drvCache.set(path, d)
  }

  /**
   * Read the derivations not cached yet with ONE store query when the store has the batch form
   * (each `readDerivation` is a daemon client process); the ones not valid here are left to
   * `derivation`, which fetches them. Never throws.
   */
  private async readMany (paths: string[]): Promise<void> {
    const readDerivations = this.store.readDerivations?.bind(this.store)
    const todo = [...new Set(paths)].filter(p => !this.drvCache.has(p) && !this.drvReading.has(p))
    if (readDerivations === undefined || todo.length < 2) return
    try {
      for (const [p, d] of await readDerivations(todo)) if (!(d instanceof Error)) this.remember(p, d)
    } catch (e) {
      log('reading %d derivations at once failed: %s', todo.length, (e as Error).message)
    }
  }

  /**
   * Read the derivations of the next few candidates in the background while the slots are busy,
   * so a freed slot is claimed without waiting on the store.
   */
  private readAhead (candidates: Claimable[], count: number): void {
    if (this.readingAhead) return
    // as many as the next scan may look at (see fill)
    // a .drv is needed ahead only when the submit did not list its inputs (claim order needs
    // them); one listed is read once claimed, unless this node submitted it and so has it now
    const needed = (c: Claimable): boolean => {
      const r = this.queue.get(c.id)
      return r?.inputs === undefined || r.submitter === this.self
    }
    const todo = candidates.filter(c => !this.runs.has(c.id) && !this.drvCache.has(c.derivation) && needed(c)).slice(0, count)
    if (todo.length === 0) return
    this.readingAhead = true
    void (async () => {
      // what this store has is read now (one query); a .drv it lacks is fetched ahead only when
      // the submit did not list its inputs (otherwise it is fetched once claimed, by its claimer)
      await this.readMany(todo.map(c => c.derivation))
      for (const c of todo) {
        if (!this.started) break
        if (this.queue.get(c.id)?.inputs !== undefined) continue
        await this.derivation(c.derivation, this.lifetime.signal).catch(() => {})
      }
    })().finally(() => { this.readingAhead = false })
  }

  /** Local time before which the next attempt of `r` should not start here. */
  private backoffUntil (r: BuildRecord): number {
    let until = this.localBackoff.get(r.id)?.until ?? 0
    const last = r.attempts.at(-1)
    const res = last?.result
    if (res?.outcome === 'failure') {
      until = Math.max(until, res.hlc[0] + backoffMs(this.config, r.failures))
    } else if (res?.outcome === 'missing-inputs') {
      // inputs that are builds of the queue and have succeeded since: retry at once
      const resolved = (res.missing ?? []).length > 0 && (res.missing ?? []).every(m => this.queue.byDerivation(m).some(b => b.phase === 'succeeded'))
      if (!resolved) {
        let n = 0
        for (let i = r.attempts.length - 1; i >= 0 && r.attempts[i].result?.outcome === 'missing-inputs'; i--) n++
        until = Math.max(until, res.hlc[0] + backoffMs(this.config, n))
      }
    }
    return until
  }

  /** undefined while `run` still holds the winning claim of a live build; else why not. */
  private whyNotOurs (run: Run): string | undefined {
    const r = this.queue.get(run.id)
    if (r === undefined) return 'build vanished'
    if (r.phase === 'succeeded' && r.attempts.find(a => a.result?.outcome === 'success')?.number !== run.attempt) return 'succeeded elsewhere'
    if (r.canceled && r.phase === 'canceled') return 'canceled'
    const a = r.attempts.find(x => x.number === run.attempt)
    if (a === undefined) return undefined // our claim op has not been applied yet
    if (a.claimer !== this.self) return `claim lost to ${a.claimer}`
    // our claim may be the one that used up the lapsed-lease limit: the build is failed for everyone
    if (r.phase === 'failed' && a.result === undefined) return 'build failed (its leases kept lapsing)'
    if (a.released) return 'released'
    const last = r.attempts.at(-1)!
    if (last.number > run.attempt) return `attempt ${last.number} claimed by ${last.claimer} (our lease lapsed there)`
    return undefined
  }

  private enter (run: Run, phase: RunPhase): void {
    const t = performance.now()
    run.phases[run.phase] = (run.phases[run.phase] ?? 0) + Math.round(t - run.phaseStart)
    run.phase = phase
    run.phaseStart = t
  }

  /** A decision that ends an attempt: carries where its time went. */
  private final (run: Run, action: DecisionAction, reason: string): void {
    this.enter(run, run.phase)
    this.decide({ build: run.id, attempt: run.attempt, action, reason, phases: { ...run.phases } })
  }

  private abortRun (run: Run, reason: string): void {
    if (run.controller.signal.aborted) return
    run.abortReason = reason
    run.controller.abort(new Error(reason))
  }

  private begin (cs: Claimable[]): void {
    const batch: Batch = { runs: [] }
    for (const c of cs) {
      const run: Run = { id: c.id, attempt: c.attempt, derivation: c.derivation, phase: 'settling', since: this.now(), phaseStart: performance.now(), phases: {}, controller: new AbortController() }
      this.runs.set(c.id, run)
      batch.runs.push(run)
    }
    this.holding.add(batch)
    batch.done = this.runBatch(batch)
      .catch((e: unknown) => { log.error('batch of %s: %s', batch.runs.map(r => `${r.id}#${r.attempt}`).join(' '), (e as Error).message) })
      .finally(() => {
        this.holding.delete(batch)
        for (const run of batch.runs) {
          clearInterval(run.renewTimer)
          if (this.runs.get(run.id) === run) this.runs.delete(run.id)
        }
        this.lastRunEndedAt = this.now()
        if (this.started) this.schedulePump(0)
      })
    for (const run of batch.runs) run.done = batch.done
  }

  // ---- one batch of attempts -------------------------------------------------------------

  private async op (what: string, f: () => Promise<unknown>): Promise<boolean> {
    if (this.silent) return false
    try {
      await f()
      return true
    } catch (e) {
      log.error('%s failed: %s', what, (e as Error).message)
      return false
    }
  }

  /** Claim every build of the batch, settle once, start the ones still ours, build them, publish and record each. */
  private async runBatch (batch: Batch): Promise<void> {
    const leaseMs = this.config.leaseMs
    // one claim op per build, appended together (stamped in the batch's order)
    const claimed = await Promise.all(batch.runs.map(async r => await this.op('claim', async () => await this.queue.claim(r.id, r.attempt, leaseMs))))
    const live = batch.runs.filter((_, i) => claimed[i])
    const of = batch.runs.length > 1 ? ` (one of ${batch.runs.length} claimed together)` : ''
    for (const r of live) this.decide({ build: r.id, attempt: r.attempt, action: 'claimed', reason: `best claimable for ${this.config.systems.join(',')}${of}` })
    if (live.length === 0) return
    // the .drv files (fetched from the swarm when not here) arrive while the claims settle
    void this.readMany(live.map(r => r.derivation)).then(() => {
      for (const r of live) void this.derivation(r.derivation, this.lifetime.signal).catch(() => {})
    })
    await sleep(this.config.settleMs, undefined, { signal: live.length === 1 ? live[0].controller.signal : this.lifetime.signal }).catch(() => {})
    const starting: Run[] = []
    const releases: Array<Promise<unknown>> = []
    for (const run of live) {
      const lost = run.abortReason ?? this.whyNotOurs(run)
      if (lost === undefined) { starting.push(run); continue }
      this.final(run, 'lost', lost)
      if (lost === STOPPING && this.whyNotOurs(run) === undefined) releases.push(this.op('release', async () => await this.queue.release(run.id, run.attempt)))
    }
    await Promise.all(releases)
    if (starting.length === 0) return
    // The first renew marks the attempt as building for everyone; the build need not wait for
    // it. Only a lone build gets one now: batches form only of short builds, which the daemon
    // builds one by one, so "building" for all of them at once said little, and those renews
    // were a third of a builder's ops and gossip messages. A batch's builds show as claimed
    // until their results, or until the renews below (every third of the lease).
    if (starting.length === 1) void this.op('renew', async () => await this.queue.renew(starting[0].id, starting[0].attempt, leaseMs))
    for (const run of starting) {
      const signal = run.controller.signal
      run.renewTimer = setInterval(() => {
        if (!signal.aborted) void this.op('renew', async () => await this.queue.renew(run.id, run.attempt, leaseMs))
      }, Math.max(1, Math.floor(leaseMs / 3)))
      this.decide({ build: run.id, attempt: run.attempt, action: 'started', reason: 'claim still wins after the settle window' })
      this.enter(run, 'preparing')
    }

    const dir = this.components.gcRootsDir
    const parts = starting.map(run => ({
      run,
      writer: this.logs.open(run.id, run.attempt),
      root: dir !== undefined ? join(dir, `${run.id}-${run.attempt}`) : undefined
    }))
    const finishing: Array<Promise<void>> = []
    /** Each settled build's log is closed and its finish begun (what the slot waits for). */
    const handedOver: Array<Promise<void>> = []
    // the builder is done with one build: publish and record it beside the next
    const settle = (part: typeof parts[number], outcome: BuildOutcome): void => {
      let handOver!: () => void
      handedOver.push(new Promise<void>(resolve => { handOver = resolve }))
      finishing.push((async () => {
        try {
          await part.writer.close().catch((e: unknown) => { log.error('compressing log %s: %s', part.writer.name, (e as Error).message) })
          this.enter(part.run, 'publishing')
          const finished = this.finish(part.run, outcome, part.writer.name) // decides at once when there is nothing to publish
          handOver()
          await finished
        } finally {
          handOver()
          clearInterval(part.run.renewTimer)
          if (part.root !== undefined) await this.removeRoots(part.root)
        }
      })().catch((e: unknown) => { log.error('build %s#%d: %s', part.run.id, part.run.attempt, (e as Error).message) }))
    }
    // a batch the daemon builds whole is rooted by its one client under one base name (no
    // store process per output); removed once every part is published
    const batchRoot = dir !== undefined && parts.length > 1 ? join(dir, `batch-${parts[0].run.id}-${parts[0].run.attempt}`) : undefined
    try {
      await this.prepare(parts.map(p => ({ run: p.run, log: p.writer.write })), parts.length === 1 ? parts[0].run.controller.signal : this.lifetime.signal)
      const t0 = performance.now()
      await this.build(parts, settle, batchRoot)
      await Promise.all(handedOver)
      const per = (performance.now() - t0) / parts.length
      this.meanBuildMs = this.meanBuildMs === undefined ? per : 0.7 * this.meanBuildMs + 0.3 * per
      this.batchCount.batches++
      this.batchCount.builds += parts.length
    } finally {
      // the daemon is done: the slot is free for the next batch while these publish
      this.holding.delete(batch)
      if (this.started) this.schedulePump(0)
      await Promise.all(finishing)
      if (batchRoot !== undefined) await this.removeRoots(batchRoot)
    }
  }

  /** Make the inputs' outputs valid here (one fetch for the whole batch); what stays missing is said in the logs. */
  private async prepare (parts: Array<{ run: Run, log: (chunk: Buffer) => void }>, signal: AbortSignal): Promise<void> {
    const wanted = new Map<string, Array<(chunk: Buffer) => void>>()
    // the nodes that built inputs in the queue hold their outputs: asked before the DHT
    const holders = new Set<string>()
    try {
      for (const { run, log: write } of parts) {
        const drv = await this.derivation(run.derivation, signal)
        for (const [inputDrv, names] of drv.inputDrvs) {
          const d = await this.derivation(inputDrv, signal).catch(() => undefined)
          for (const n of names) {
            const o = d?.outputs.get(n)
            if (o !== undefined) wanted.set(o.path, [...(wanted.get(o.path) ?? []), write])
          }
          for (const b of this.queue.byDerivation(inputDrv)) {
            for (const a of b.attempts) if (a.result?.outcome === 'success' && a.claimer !== this.self) holders.add(a.claimer)
          }
        }
      }
      const stillMissing = await this.inputs.ensureOutputs([...wanted.keys()], signal, [...holders])
      for (const p of stillMissing) for (const write of wanted.get(p) ?? []) write(Buffer.from(`guix-swarm: input not available here: ${p}\n`))
    } catch (e) {
      if (!signal.aborted) for (const { log: write } of parts) write(Buffer.from(`guix-swarm: preparing inputs failed: ${(e as Error).message}\n`))
    }
  }

  /**
   * Hand the batch to the builder: all at once through `buildMany` when it has one (aborting any
   * build of the batch kills the batch; the others are then released), else one after another.
   */
  private async build<P extends { run: Run, writer: { write: (chunk: Buffer) => void }, root?: string }> (parts: P[], settle: (part: P, outcome: BuildOutcome) => void, gcRootBase?: string): Promise<void> {
    const builder = this.builder!
    const buildMany = builder.buildMany?.bind(builder)
    if (parts.length > 1 && buildMany !== undefined) {
      for (const p of parts) this.enter(p.run, 'building')
      const signal = AbortSignal.any(parts.map(p => p.run.controller.signal))
      const outcomes = signal.aborted
        ? new Map<string, BuildOutcome>()
        : await buildMany(parts.map(p => ({ drvPath: p.run.derivation, onLog: p.writer.write, ...(p.root !== undefined ? { gcRoot: p.root } : {}) })), { signal, maxJobs: 1, ...(gcRootBase !== undefined ? { gcRootBase } : {}) })
      const outcomeOf = (p: P): BuildOutcome => outcomes.get(p.run.derivation) ?? (signal.aborted ? { kind: 'canceled' } : { kind: 'setup-failed', message: `the builder gave no outcome for ${p.run.derivation}` })
      // one path-info query for all the batch's outputs: the store remembers them, so publishing
      // each output starts no store process of its own
      const outputs = parts.flatMap(p => { const o = outcomeOf(p); return o.kind === 'success' ? Object.values(o.outputs) : [] })
      if (outputs.length > 1) await this.store.queryPathInfos(outputs).catch((e: unknown) => { log('path infos of a batch: %s', (e as Error).message) })
      const settled = parts.map(outcomeOf)
      this.noteHandOver(settled)
      parts.forEach((p, i) => settle(p, settled[i]))
      return
    }
    for (const p of parts.slice(1)) this.enter(p.run, 'queued')
    for (const p of parts) {
      const signal = p.run.controller.signal
      this.enter(p.run, 'building')
      const outcome = signal.aborted ? { kind: 'canceled' as const } : await builder.build(p.run.derivation, { signal, onLog: p.writer.write, ...(p.root !== undefined ? { gcRoot: p.root } : {}) })
      this.noteHandOver([outcome])
      settle(p, outcome)
    }
  }

  private async finish (run: Run, outcome: BuildOutcome, logName: string): Promise<void> {
    const { id, attempt } = run
    if (outcome.kind === 'canceled' && !run.controller.signal.aborted) {
      // another build of its batch was aborted and the batch with it: hand this one back, uncounted
      this.final(run, 'released', 'its batch was stopped for another build')
      await this.op('release', async () => await this.queue.release(id, attempt))
      return
    }
    // a build that ended anyway while we were stopping still gets recorded (op() is a no-op after a crash-stop)
    if (outcome.kind === 'canceled' || (run.controller.signal.aborted && run.abortReason !== STOPPING)) {
      const reason = run.abortReason ?? 'build canceled'
      this.final(run, 'aborted', reason)
      // stopping gracefully: hand the build back at once instead of letting the lease lapse
      if (reason === STOPPING) await this.op('release', async () => await this.queue.release(id, attempt))
      return
    }
    const ours = (): boolean => this.whyNotOurs(run) === undefined
    switch (outcome.kind) {
      case 'success': {
        let outputs: Record<string, NarOutput>
        try {
          outputs = await this.publish(outcome.outputs)
        } catch (e) {
          this.backoffLocally(id)
          this.final(run, 'released', (e as Error).message)
          await this.op('release', async () => await this.queue.release(id, attempt))
          return
        }
        this.enter(run, 'finishing')
        if (!ours()) { this.final(run, 'lost', `built, but ${this.whyNotOurs(run) ?? ''}`); return }
        await this.op('result', async () => await this.queue.result(id, attempt, { outcome: 'success', outputs }))
        this.final(run, 'succeeded', Object.values(outputs).map(o => o.path).join(' '))
        return
      }
      case 'failed':
        await this.record(run, { outcome: 'failure', log: { peerId: this.self, name: logName } }, 'failed', outcome.message)
        return
      case 'missing-inputs':
        await this.record(run, { outcome: 'missing-inputs', missing: outcome.missing.slice(0, 64) }, 'missing-inputs', outcome.missing.join(' '))
        return
      case 'setup-failed':
        // not the derivation's fault: hand it back, uncounted, and stay away from it for a while
        this.backoffLocally(id)
        this.final(run, 'released', `setup failed: ${outcome.message}`)
        await this.op('release', async () => await this.queue.release(id, attempt))
    }
  }

  private async record (run: Run, result: ResultRequest, action: DecisionAction, reason: string): Promise<void> {
    this.enter(run, 'finishing')
    const lost = this.whyNotOurs(run)
    if (lost !== undefined) { this.final(run, 'lost', lost); return }
    await this.op('result', async () => await this.queue.result(run.id, run.attempt, result))
    this.final(run, action, reason)
  }

  /**
   * Whether the daemon works, from what one hand-over to it gave: any build it ran (even one
   * that failed) clears the count; one that only failed setup adds to it, and from
   * SETUP_STRIKES in a row on the node claims nothing for a backoff that grows with each.
   */
  private noteHandOver (outcomes: BuildOutcome[]): void {
    const t = this.setupTrouble
    if (outcomes.some(o => o.kind === 'success' || o.kind === 'failed' || o.kind === 'missing-inputs')) {
      if (t.inARow >= SETUP_STRIKES) log.error('builder works again after %d hand-overs that failed setup: claiming', t.inARow)
      t.inARow = 0; t.last = ''; t.pausedUntil = 0
      return
    }
    const failed = outcomes.find((o): o is Extract<BuildOutcome, { kind: 'setup-failed' }> => o.kind === 'setup-failed')
    if (failed === undefined) return // canceled: says nothing about the daemon
    t.inARow++
    t.last = failed.message
    if (t.inARow < SETUP_STRIKES) return
    const pause = backoffMs(this.config, t.inARow - SETUP_STRIKES + 1)
    t.pausedUntil = this.now() + pause
    log.error('builder failed setup %d times in a row (last: %s): claiming nothing for %d s', t.inARow, failed.message, Math.round(pause / 1000))
  }

  private backoffLocally (id: string): void {
    const count = (this.localBackoff.get(id)?.count ?? 0) + 1
    this.localBackoff.set(id, { until: this.now() + backoffMs(this.config, count), count })
  }

  private async publish (outputs: Record<string, string>): Promise<Record<string, NarOutput>> {
    const out: Record<string, NarOutput> = {}
    for (const [name, path] of Object.entries(outputs)) {
      try {
        const e = await this.publisher.addFromStore(this.store, path)
        out[name] = { path, narHash: e.narHash, narSize: e.narSize }
      } catch (e) {
        throw new PublishFailedError(path, e)
      }
    }
    return out
  }

  private async removeRoots (root: string): Promise<void> {
    const dir = this.components.gcRootsDir!
    const base = root.slice(dir.length + 1)
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      if (f === base || f.startsWith(`${base}-`)) await rm(join(dir, f), { force: true }).catch(() => {})
    }
  }
}
