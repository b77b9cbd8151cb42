// The replicated build queue on the node: adapts NodeComponents to the crdt QueueService and
// serves it under /api/builds. The queue itself (ops, state, gossip, sync, persistence) is src/crdt.
import { arch } from 'node:process'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { logger } from '@libp2p/logger'
import { Gauge } from 'prom-client'
import {
  QueueService, BUILD_STATES, isDerivationPath, UnknownBuildError, BadDerivationPathError,
  type BuildRecord, type BuildState, type BuildView, type QueueConfig, type SubmitRequest
} from '../crdt/index.js'
import { openBackend, storeKindOf, type Backend, type StoreDaemon } from '../daemon/index.js'
import { HttpError, HttpBadRequestError, HttpNotFoundError, readJsonBody, sendJson, type RouteParams } from '../http/index.js'
import type { NodeComponents, NodeService } from './components.js'
import { BuildEvents, type BuildEventsOptions } from './events.js'

const log = logger('guix-swarm:node:queue')

/** Same bound the op codec enforces (src/crdt op.ts); checked here so the API answers 400, not 500. */
const MAX_PRIORITY = 1_000_000
const MAX_BODY_BYTES = 1024 * 1024
const MAX_DERIVATIONS_PER_SUBMIT = 10_000
const DEFAULT_LIST_LIMIT = 1000
const FINISHED: ReadonlySet<BuildState> = new Set<BuildState>(['succeeded', 'failed', 'canceled'])

/** A submitted path is not a store path of a `.drv`. */
export class InvalidDerivationPathError extends HttpError {
  override name = 'InvalidDerivationPathError'
  constructor (path: unknown) { super(`not a well-formed store path of a .drv: ${JSON.stringify(path)?.slice(0, 200) ?? String(path)}`, 400) }
}

/** A request field (priority, tags, system, state, …) is missing or malformed. */
export class InvalidBuildRequestError extends HttpError {
  override name = 'InvalidBuildRequestError'
  constructor (message: string) { super(message, 400) }
}

/** `?state=` names no build state. */
export class UnknownBuildStateError extends HttpError {
  override name = 'UnknownBuildStateError'
  constructor (state: string) { super(`unknown build state ${JSON.stringify(state).slice(0, 80)} (one of: ${BUILD_STATES.join(', ')})`, 400) }
}

/** No build with this id in the local replica (a 404 carrying the crdt error's name, so API and library agree). */
export class BuildNotFoundError extends HttpNotFoundError {
  override name = 'UnknownBuildError'
}

/** The queue's UnknownBuildError as the API's 404 of the same name; any other error as it is. */
function notFound (err: unknown): unknown {
  return err instanceof UnknownBuildError ? new BuildNotFoundError(err.message) : err
}

/** The build is finished: changing its priority or canceling it would mean nothing. */
export class BuildFinishedError extends HttpError {
  override name = 'BuildFinishedError'
  constructor (id: string, state: BuildState, what: string) { super(`build ${id} is already ${state}: cannot ${what} it`, 409) }
}

/** The system string Nix and Guix use for this machine, when no builder tells us. */
export function hostSystem (): string {
  const cpu: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', arm: 'armhf', riscv64: 'riscv64', ppc64: 'powerpc64le' }
  return `${cpu[arch] ?? arch}-linux`
}

export interface QueueNodeOptions {
  /** Overrides of the crdt queue config (tests shorten intervals). */
  config?: Partial<QueueConfig>
  /** Reads the system of a local derivation; default: the node's daemon, if it has one. */
  readSystem?: (drv: string) => Promise<string | undefined>
  /** A store client this node already has open (the scheduler's), used before opening another. */
  sharedStore?: () => StoreDaemon | undefined
  /** Settings of the event streams (/api/events); tests shorten them. */
  events?: BuildEventsOptions
}

/**
 * Runs once a submit request is validated, with the derivations named, while its builds enter the
 * queue; e.g. the scheduler publishes the .drv closures so builders can fetch them (builders that
 * ask meanwhile are made to wait). The request is answered when every hook is done. A hook that
 * throws fails the request: its builds are canceled and its error is the response.
 */
export type SubmitHook = (derivations: string[]) => Promise<void>

/** Find the queue a node runs, from another service's factory (e.g. the scheduler's). */
const queues = new WeakMap<NodeComponents, QueueService>()
export function queueOf (components: NodeComponents): QueueService | undefined {
  return queues.get(components)
}

/** The queue node service itself (its submit hooks), from another service's factory. */
const queueNodes = new WeakMap<NodeComponents, QueueNodeService>()
export function queueNodeOf (components: NodeComponents): QueueNodeService | undefined {
  return queueNodes.get(components)
}

/** The queue as a node service: the crdt QueueService plus its HTTP routes, status and metrics. */
export class QueueNodeService implements NodeService {
  readonly name = 'queue'
  readonly queue: QueueService
  private backend?: Promise<Backend | undefined>
  private readonly submitHooks = new Set<SubmitHook>()
  private readonly events: BuildEvents

  constructor (private readonly components: NodeComponents, private readonly opts: QueueNodeOptions = {}) {
    this.queue = new QueueService({
      libp2p: components.libp2p,
      pubsub: components.libp2p.services.pubsub,
      db: components.db.sublevel<string, Uint8Array>('queue', { valueEncoding: 'view' }),
      privateKey: components.privateKey,
      // per-swarm names: a --swarm never hears another swarm's queue
      // queue/3: a gossip message may carry a batch of ops (a queue/2 node would refuse it as malformed)
      config: { topic: components.topic('queue/3'), syncProtocol: components.protocolId('queue-sync', '1.0.0'), ...opts.config }
    })
    this.events = new BuildEvents(this.queue, opts.events)
    queues.set(components, this.queue)
    queueNodes.set(components, this)
  }

  async start (): Promise<void> {
    await this.queue.start()
    const { http } = this.components
    http.route('POST', '/api/builds', async (req, res) => { await this.submit(req, res) })
    http.route('GET', '/api/builds', async (_req, res, _p, url) => { this.list(res, url) })
    http.route('GET', '/api/builds/:id', async (_req, res, p) => { sendJson(res, 200, this.view(p)) })
    http.route('POST', '/api/builds/:id/priority', async (req, res, p) => { await this.priority(req, res, p) })
    http.route('POST', '/api/builds/:id/cancel', async (_req, res, p) => { await this.cancel(res, p) })
    http.route('GET', '/api/events', async (req, res, _p, url) => { await this.subscribe(req, res, url) })
    http.route('POST', '/api/events', async (req, res, _p, url) => { await this.subscribe(req, res, url) })
    this.events.start()
    this.registerMetrics()
  }

  async stop (): Promise<void> {
    const { http } = this.components
    for (const p of ['/api/builds', '/api/builds/:id', '/api/builds/:id/priority', '/api/builds/:id/cancel', '/api/events']) http.unroute(p)
    this.events.stop()
    await this.queue.stop()
  }

  status (): Record<string, unknown> {
    return { ...this.queue.status(), eventStreams: this.events.open }
  }

  /** Run `hook` before each submit is recorded; returns a function that removes it. */
  addSubmitHook (hook: SubmitHook): () => void {
    this.submitHooks.add(hook)
    return () => { this.submitHooks.delete(hook) }
  }

  // ---- routes ---------------------------------------------------------------------------

  private async submit (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req, MAX_BODY_BYTES)
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new InvalidBuildRequestError('expected a JSON object {derivations: [...], priority?, tags?, system?}')
    const b = body as Record<string, unknown>
    const drvs = b.derivations ?? (b.derivation !== undefined ? [b.derivation] : undefined)
    if (!Array.isArray(drvs) || drvs.length === 0) throw new InvalidBuildRequestError('"derivations" must be a non-empty array of .drv store paths')
    if (drvs.length > MAX_DERIVATIONS_PER_SUBMIT) throw new InvalidBuildRequestError(`at most ${MAX_DERIVATIONS_PER_SUBMIT} derivations per request, got ${drvs.length}`)
    for (const d of drvs) if (typeof d !== 'string' || !isDerivationPath(d)) throw new InvalidDerivationPathError(d)
    const priority = optInt(b.priority, 'priority', -MAX_PRIORITY, MAX_PRIORITY)
    const maxAttempts = optInt(b.maxAttempts, 'maxAttempts', 1, 100)
    const maxAbandoned = optInt(b.maxAbandoned, 'maxAbandoned', 1, 100)
    const deferUntil = optInt(b.deferUntil, 'deferUntil', 0, Number.MAX_SAFE_INTEGER)
    const tags = parseTags(b.tags)
    if (b.system !== undefined && (typeof b.system !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(b.system))) {
      throw new InvalidBuildRequestError(`"system" must be a system name like x86_64-linux, got ${JSON.stringify(b.system).slice(0, 80)}`)
    }
    const requests: SubmitRequest[] = []
    const read = await this.readDerivations(drvs as string[])
    for (const drv of drvs as string[]) {
      const system = (b.system as string | undefined) ?? await this.systemOf(drv, read.get(drv)?.system)
      const inputs = read.get(drv)?.inputs
      requests.push({
        drv,
        system,
        ...(inputs !== undefined ? { inputs } : {}),
        ...(priority !== undefined ? { priority } : {}),
        ...(tags !== undefined ? { tags } : {}),
        ...(maxAttempts !== undefined ? { maxAttempts } : {}),
        ...(maxAbandoned !== undefined ? { maxAbandoned } : {}),
        ...(deferUntil !== undefined ? { deferUntil } : {})
      })
    }
    // started before the builds are queued (each marks what it is about to publish), awaited after:
    // builders claim and settle while the submitter is still publishing
    const hooked = Promise.all([...this.submitHooks].map(async (hook) => { await hook(requests.map((r) => r.drv)) }))
    hooked.catch(() => {}) // awaited below
    let ids: string[]
    try {
      ids = await this.queue.submit(requests)
    } catch (err) {
      await hooked.catch(() => {})
      if (err instanceof BadDerivationPathError) throw new InvalidDerivationPathError(err.message)
      throw err
    }
    try {
      await hooked
    } catch (err) {
      // nothing must build what could not be published: the request fails as a whole
      await Promise.allSettled(ids.map(async (id) => await this.queue.cancel(id)))
      log('submit of %d build(s) failed in a submit hook, canceled: %s', ids.length, (err as Error).message)
      throw err
    }
    log('submitted %d build(s): %s', ids.length, ids.join(' '))
    sendJson(res, 201, { ids, builds: ids.map((id, i) => ({ id, derivation: requests[i].drv, system: requests[i].system })) })
  }

  private list (res: ServerResponse, url: URL): void {
    const state = url.searchParams.get('state')
    const drv = url.searchParams.get('derivation')
    const limitText = url.searchParams.get('limit')
    const limit = limitText === null ? DEFAULT_LIST_LIMIT : Number(limitText)
    if (!Number.isSafeInteger(limit) || limit < 0) throw new InvalidBuildRequestError(`"limit" must be a non-negative integer, got ${JSON.stringify(limitText)}`)
    let records: BuildRecord[]
    if (state !== null && state !== '') {
      if (!(BUILD_STATES as readonly string[]).includes(state)) throw new UnknownBuildStateError(state)
      records = this.queue.byState(state as BuildState)
    } else {
      records = [...this.queue.replica.state.records()]
    }
    if (drv !== null && drv !== '') records = records.filter((r) => r.derivation === drv)
    // queue order: what would be built first comes first
    records.sort((a, b) => b.priority - a.priority || a.submitHlc[0] - b.submitHlc[0] || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    const builds = records.slice(0, limit).map((r) => this.queue.view(r.id))
    sendJson(res, 200, { total: records.length, builds })
  }

  private view (p: RouteParams): BuildView {
    try {
      return this.queue.view(p.id)
    } catch (err) {
      throw notFound(err)
    }
  }

  private async subscribe (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    try {
      await this.events.handle(req, res, url)
    } catch (err) {
      throw notFound(err)
    }
  }

  private async priority (req: IncomingMessage, res: ServerResponse, p: RouteParams): Promise<void> {
    const body = await readJsonBody(req, MAX_BODY_BYTES)
    const value = (body as { priority?: unknown } | null)?.priority
    const priority = optInt(value, 'priority', -MAX_PRIORITY, MAX_PRIORITY)
    if (priority === undefined) throw new InvalidBuildRequestError('expected {"priority": <integer>}')
    const v = this.view(p)
    if (FINISHED.has(v.state)) throw new BuildFinishedError(v.id, v.state, 'change the priority of')
    await this.queue.setPriority(v.id, priority)
    sendJson(res, 200, this.queue.view(v.id))
  }

  private async cancel (res: ServerResponse, p: RouteParams): Promise<void> {
    const v = this.view(p)
    // canceling twice is a no-op, not an error: the user's intent already holds
    if (v.canceled) { sendJson(res, 200, v); return }
    if (FINISHED.has(v.state)) throw new BuildFinishedError(v.id, v.state, 'cancel')
    await this.queue.cancel(v.id)
    sendJson(res, 200, this.queue.view(v.id))
  }

  // ---- helpers --------------------------------------------------------------------------

  /** The derivation's own system when the local daemon has it, else what this node builds for. */
  private async systemOf (drv: string, read: string | undefined): Promise<string> {
    const fallback = this.components.builder.systems[0] ?? hostSystem()
    if (this.opts.readSystem === undefined) return read ?? fallback
    try {
      return (await this.opts.readSystem(drv)) ?? fallback
    } catch (err) {
      log('system of %s not read (%s); using %s', drv, (err as Error).message, fallback)
      return fallback
    }
  }

  /**
   * System and input derivations of the submitted .drv files this node's store has, with one
   * store query: the inputs go into the submit ops so builders can order builds without
   * fetching every .drv first. Unreadable ones (no daemon here, not in this store) are left out.
   */
  private async readDerivations (drvs: string[]): Promise<Map<string, { system: string, inputs: string[] }>> {
    const out = new Map<string, { system: string, inputs: string[] }>()
    const { builder, storeDir } = this.components
    const local = drvs.filter((d) => d.startsWith(storeDir + '/'))
    if (local.length === 0 || this.opts.readSystem !== undefined) return out
    // a node that does not build may still have the store the .drv files were made in
    const kind = storeKindOf(builder.kind, storeDir)
    const shared = this.opts.sharedStore?.()
    if (shared === undefined) {
      this.backend ??= openBackend(kind, { storeDir }).catch((err: Error) => {
        log('cannot open the %s daemon: %s', kind, err.message)
        return undefined
      })
    }
    const store = shared ?? (await this.backend)?.store
    if (store === undefined) return out
    try {
      const read = store.readDerivations !== undefined
        ? await store.readDerivations(local)
        : new Map(await Promise.all(local.map(async (d) => [d, await store.readDerivation(d).catch((e: Error) => e)] as const)))
      for (const [d, drv] of read) if (!(drv instanceof Error)) out.set(d, { system: drv.system, inputs: [...drv.inputDrvs.keys()] })
    } catch (err) {
      log('reading %d submitted derivation(s): %s', local.length, (err as Error).message)
    }
    return out
  }

  private registerMetrics (): void {
    const { metrics } = this.components
    if (metrics.getSingleMetric('guix_swarm_queue_builds') != null) return
    const queue = (): QueueService | undefined => queueOf(this.components)
    new Gauge({ // registers itself; collect() reads the replica at scrape time
      name: 'guix_swarm_queue_builds',
      help: 'Builds in the local queue replica, by state',
      labelNames: ['state'],
      registers: [metrics],
      collect () {
        const s = queue()?.status()
        if (s !== undefined) for (const [state, n] of Object.entries(s.byState)) this.set({ state }, n)
      }
    })
    new Gauge({ // registers itself
      name: 'guix_swarm_queue_rejected_ops',
      help: 'Queue ops refused since start, by reason',
      labelNames: ['reason'],
      registers: [metrics],
      collect () {
        const s = queue()?.stats()
        if (s !== undefined) for (const [reason, n] of Object.entries(s.rejected)) this.set({ reason }, n)
      }
    })
  }
}

function optInt (v: unknown, what: string, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new InvalidBuildRequestError(`"${what}" must be an integer in [${min}, ${max}], got ${JSON.stringify(v).slice(0, 80)}`)
  }
  return v
}

function parseTags (v: unknown): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'object' || Array.isArray(v)) throw new InvalidBuildRequestError('"tags" must be an object of string values')
  const entries = Object.entries(v as Record<string, unknown>)
  if (entries.length > 32) throw new InvalidBuildRequestError(`at most 32 tags, got ${entries.length}`)
  for (const [k, val] of entries) {
    if (k.length === 0 || k.length > 64) throw new InvalidBuildRequestError(`tag key ${JSON.stringify(k).slice(0, 80)} must be 1..64 characters`)
    if (typeof val !== 'string' || val.length === 0 || val.length > 256) throw new InvalidBuildRequestError(`tag ${k} must have a string value of 1..256 characters`)
  }
  return Object.fromEntries(entries) as Record<string, string>
}

export function queueService (components: NodeComponents, opts: QueueNodeOptions = {}): QueueNodeService {
  return new QueueNodeService(components, opts)
}
