// QueueService: the replicated queue on a libp2p node. Gossip for new ops, anti-entropy
// streams on connect and periodically, level persistence, compaction, events, queries.
import { logger } from '@libp2p/logger'
import type { Connection, Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { QueueReplica, type ReplicaConfig, type ReplicaStats, type VersionVector } from './replica.js'
import { reasonOf, stateAt, isFinished, type BuildRecord, type BuildState, type Claimable, type SeenOp } from './state.js'
import { assertDerivationPath, buildIdOf, bytesHeld, checkAuthor, DEFAULT_MAX_ABANDONED, MAX_SUBMIT_INPUTS, shedBytes, decodeOp, linksTo, verifyOp, type NarOutput, type LogRef, type Op, type OpDraft } from './op.js'
import { QueueStore, type QueueDb } from './store.js'
import { runSync, DEFAULT_SYNC_LIMITS, type SyncSummary } from './sync.js'
import { OpBadSignatureError, OpBrokenChainError, OpRejectedError, UnknownBuildError } from './errors.js'
import { VerifyPool } from './verify-pool.js'
import { decodeGossip, encodeGossip, DEFAULT_GOSSIP_LIMITS } from './gossip.js'
import { availableParallelism } from 'node:os'

const log = logger('guix-swarm:crdt')

/** How long the larger peer id waits, after a connect, for the other end to start the exchange. */
const CONNECT_GRACE_MS = 2000

export interface QueueConfig extends ReplicaConfig {
  topic: string
  syncProtocol: string
  /** Anti-entropy with one random connected peer this often (0 = only on connect). */
  syncIntervalMs: number
  snapshotIntervalMs: number
  /** Finished builds older than this (by the HLC of the op that finished them) are compacted. */
  compactHorizonMs: number
  maxFrameBytes: number
  batchOps: number
  /** Refused ops or broken sync frames from one peer before it is dropped. */
  garbageLimit: number
  banMs: number
  defaultMaxAttempts: number
  /** Abandoned attempts (lapsed leases) a build survives unless its submit says otherwise. */
  defaultMaxAbandoned: number
  /**
   * Worker threads checking signatures of sync batches (0 = on the main thread). Started only
   * when a batch has many runs to check (hash chains make it one signature per run).
   */
  verifyWorkers: number
  /**
   * Local ops authored within this long of the first one not yet gossiped share one message
   * (0: those of the same tick). A batch's results come one by one as its builds publish:
   * with 0, a builder sent about twice as many messages, each a signature check, a disk write
   * and a round of frames on every node.
   */
  gossipGatherMs: number
}

export const DEFAULT_QUEUE_CONFIG: QueueConfig = {
  maxSkewMs: 60_000,
  maxOpBytes: 16 * 1024,
  maxPendingPerAuthor: 4096,
  maxPendingTotal: 65_536,
  topic: '/guix-swarm/queue/3',
  syncProtocol: '/guix-swarm/queue-sync/1.0.0',
  syncIntervalMs: 30_000,
  snapshotIntervalMs: 60_000,
  compactHorizonMs: 7 * 24 * 3600_000,
  maxFrameBytes: DEFAULT_SYNC_LIMITS.maxFrameBytes,
  batchOps: DEFAULT_SYNC_LIMITS.batchOps,
  garbageLimit: 16,
  banMs: 10 * 60_000,
  defaultMaxAttempts: 3,
  defaultMaxAbandoned: DEFAULT_MAX_ABANDONED,
  verifyWorkers: Math.min(4, availableParallelism()),
  gossipGatherMs: 50
}

/** The libp2p surface the queue uses (a full Libp2p satisfies it). */
export type QueueLibp2p = Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol' | 'hangUp' | 'getPeers' | 'addEventListener' | 'removeEventListener'>

export interface QueueComponents {
  libp2p: QueueLibp2p
  pubsub: Pick<GossipSub, 'subscribe' | 'unsubscribe' | 'publish' | 'topicValidators' | 'addEventListener' | 'removeEventListener'>
  /** A sublevel with string keys and Uint8Array values (`{ valueEncoding: 'view' }`). */
  db: QueueDb
  privateKey: PrivateKey
  now?: () => number
  config?: Partial<QueueConfig>
}

export interface SubmitRequest {
  drv: string
  system: string
  priority?: number
  tags?: Record<string, string>
  maxAttempts?: number
  /** Lapsed leases (abandoned attempts) before the build fails. */
  maxAbandoned?: number
  deferUntil?: number
  /** The .drv's input derivations (see SubmitPayload.inputs); left out when they would not fit in the op. */
  inputs?: string[]
}

export type ResultRequest =
  | { outcome: 'success', outputs: Record<string, NarOutput> }
  | { outcome: 'failure', log: LogRef }
  | { outcome: 'missing-inputs', missing: string[] }
  | { outcome: 'canceled' }

export interface BuildChange { record: BuildRecord, previous?: BuildRecord }

export interface AttemptView {
  number: number
  peerId: string
  /** `abandoned`: a later attempt was claimed while this one was open; `lapsed`: the last attempt's lease ran out here. */
  state: 'claimed' | 'building' | 'lapsed' | 'abandoned' | 'released' | 'succeeded' | 'failed' | 'missing-inputs' | 'canceled'
  claimedAt: number
  leaseEndsAt: number | null
  contenders: number
  result: BuildRecord['attempts'][number]['result'] | null
}

/** The JSON shape the API shows for a build. */
export interface BuildView {
  id: string
  derivation: string
  system: string
  state: BuildState
  priority: number
  tags: Record<string, string>
  submitter: string
  submittedAt: number
  maxAttempts: number
  failures: number
  /** Attempts abandoned by their builders (lapsed leases), counted apart from failures. */
  abandoned?: number
  maxAbandoned?: number
  canceled: boolean
  deferUntil: number | null
  attempts: AttemptView[]
  reason: string
}

export interface QueueStatus {
  builds: number
  byState: Record<BuildState, number>
  ops: number
  authors: number
  stateHash: string
  stats: ReplicaStats & { syncs: number, syncFailures: number, droppedPeers: number, compacted: number, gossipPublished: number, gossipMessages: number }
}

export class QueueService extends EventTarget {
  readonly name = 'queue'
  readonly replica: QueueReplica
  readonly config: QueueConfig
  private readonly now: () => number
  private readonly store: QueueStore
  private readonly self: string
  private readonly garbage = new Map<string, number>()
  private readonly banned = new Map<string, number>()
  private readonly syncing = new Map<string, Promise<SyncSummary>>()
  /** Exchanges begun with each peer, either way (see onConnect). */
  private readonly exchanges = new Map<string, number>()
  private readonly graceTimers = new Set<NodeJS.Timeout>()
  private timers: NodeJS.Timeout[] = []
  private pool?: VerifyPool
  private started = false
  private counters = { syncs: 0, syncFailures: 0, droppedPeers: 0, compacted: 0, gossipPublished: 0, gossipMessages: 0 }
  /** Local ops waiting for the next gossip message, the promise that sends it, and what sends it now (see publish). */
  private gossipPending: Op[] = []
  private gossipSend?: Promise<void>
  private gossipNow?: () => void
  /** Local ops on their way to disk, gossiped once written: stop() waits for them. */
  private readonly appending = new Set<Promise<void>>()
  /** Serialises disk writes so ops land in the order they were applied. */
  private writeChain: Promise<void> = Promise.resolve()
  /** Ops waiting for the write after the running one, and that write (see groupWrite). */
  private writeGroup: SeenOp[] = []
  private nextWrite?: Promise<void>

  constructor (private readonly components: QueueComponents) {
    super()
    this.now = components.now ?? Date.now
    this.config = { ...DEFAULT_QUEUE_CONFIG, ...components.config }
    this.replica = new QueueReplica(this.now, this.config)
    this.store = new QueueStore(components.db)
    this.self = components.libp2p.peerId.toString()
    this.replica.state.onChange((record, previous) => {
      if (this.started) this.dispatchEvent(new CustomEvent<BuildChange>('build', { detail: { record, ...(previous !== undefined ? { previous } : {}) } }))
    })
  }

  // ---- lifecycle -----------------------------------------------------------------------

  async start (): Promise<void> {
    if (this.started) return
    const t0 = performance.now()
    let n = 0
    for await (const s of this.store.ops()) { this.replica.restore(s.op, s.seenAt); shedBytes(s.op); n++ }
    const snap = await this.store.loadSnapshot()
    if (snap !== undefined) this.replica.restoreHeads(snap.vv, snap.tips)
    log('restored %d ops, %d builds in %d ms', n, this.replica.state.size, Math.round(performance.now() - t0))
    const { libp2p, pubsub } = this.components
    pubsub.topicValidators.set(this.config.topic, this.validate)
    pubsub.subscribe(this.config.topic)
    await libp2p.handle(this.config.syncProtocol, this.onSyncStream, { runOnLimitedConnection: false })
    libp2p.addEventListener('peer:connect', this.onConnect)
    if (this.config.syncIntervalMs > 0) this.timers.push(setInterval(() => { void this.syncRandom() }, this.config.syncIntervalMs))
    if (this.config.snapshotIntervalMs > 0) this.timers.push(setInterval(() => { void this.checkpoint() }, this.config.snapshotIntervalMs))
    for (const t of this.timers) t.unref()
    this.started = true
    for (const peer of libp2p.getPeers()) void this.syncWith(peer).catch(() => {})
  }

  async stop (): Promise<void> {
    if (!this.started) return
    // ops being written go out with the last message (a release on shutdown must reach the swarm)
    await Promise.allSettled([...this.appending])
    await this.flushGossip()
    this.started = false
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    for (const t of this.graceTimers) clearTimeout(t)
    this.graceTimers.clear()
    const { libp2p, pubsub } = this.components
    libp2p.removeEventListener('peer:connect', this.onConnect)
    pubsub.topicValidators.delete(this.config.topic)
    pubsub.unsubscribe(this.config.topic)
    await libp2p.unhandle(this.config.syncProtocol)
    await Promise.allSettled([...this.syncing.values()])
    await this.writeChain
    await this.pool?.close()
    this.pool = undefined
    await this.checkpoint()
  }

  /** Compact what is past the horizon, then record the snapshot (heads + state hash). */
  async checkpoint (): Promise<void> {
    const horizon = this.now() - this.config.compactHorizonMs
    const dropped: Op[] = []
    for (const r of this.replica.state.records()) {
      if (isFinished(r.phase) && r.finishedAt !== undefined && r.finishedAt < horizon) dropped.push(...this.replica.state.compactBuild(r.id))
    }
    // heads first: they must cover the seqs before the ops disappear from disk
    await this.store.saveSnapshot({ vv: this.replica.versionVector(), tips: this.replica.tips(), stateHash: this.replica.state.stateHash(), builds: this.replica.state.size, savedAt: this.now() })
    if (dropped.length > 0) {
      this.replica.forget(dropped)
      await this.store.deleteOps(dropped)
      this.counters.compacted += dropped.length
      log('compacted %d ops of finished builds', dropped.length)
    }
  }

  // ---- local ops -------------------------------------------------------------------------

  private async append (draft: OpDraft): Promise<Op> {
    return (await this.appendMany([draft]))[0]
  }

  /** Author several ops (a submit of many builds): one write for all, then gossip. */
  private async appendMany (drafts: OpDraft[]): Promise<Op[]> {
    const ops: Op[] = []
    let failed: unknown
    try {
      for (const draft of drafts) ops.push(this.replica.createLocal(this.components.privateKey, this.self, draft))
    } catch (err) {
      failed = err // the ops made before it are applied: they still go to disk and out
    }
    const seenAt = this.now()
    // durable before anyone hears of them; gossiped within gossipGatherMs (their bytes are
    // dropped from memory once sent), without holding up the caller
    const written = this.persist(ops.map((op) => ({ op, seenAt })), false).then(() => { this.publish(ops) })
    this.appending.add(written)
    try {
      await written
    } finally {
      this.appending.delete(written)
    }
    if (failed !== undefined) throw failed
    return ops
  }

  /**
   * Write ops to disk (in apply order). Once durable, their bytes are dropped from memory
   * unless `shed` is false: the store serves them to peers (a joiner of 100k ops held ~35 MB
   * of op bytes it never needs again).
   */
  private async persist (ops: SeenOp[], shed = true): Promise<void> {
    await this.groupWrite(ops)
    if (shed) for (const s of ops) shedBytes(s.op)
  }

  /**
   * Group commit: ops that arrive while a write is running (a batch's claims, a burst of gossip)
   * go to disk together in the next one, in arrival order; each caller still resumes only once
   * its own ops are durable. One level batch per op cost a native call and a thread-pool round
   * trip each.
   */
  private async groupWrite (ops: SeenOp[]): Promise<void> {
    for (const s of ops) this.writeGroup.push(s)
    let write = this.nextWrite
    if (write === undefined) {
      write = this.writeChain.then(async () => {
        const group = this.writeGroup
        this.writeGroup = []
        this.nextWrite = undefined // later ops form the group after this one
        await this.store.putOps(group)
      })
      this.nextWrite = write
      this.writeChain = write.catch(() => {})
    }
    await write
  }

  /** What sync sends for `author` after `after`: bytes from memory where held, else from the store. */
  private async * opBytesAfter (author: string, after: number, upTo: number): AsyncGenerator<Uint8Array | number> {
    let disk: AsyncGenerator<{ seq: number, bytes: Uint8Array }> | undefined
    let stored: { seq: number, bytes: Uint8Array } | undefined
    try {
      for (const item of this.replica.opsAfter(author, after, upTo)) {
        if (typeof item === 'number') { yield item; continue }
        if (bytesHeld(item)) { yield item.bytes; continue }
        disk ??= this.store.opBytes(author, item.seq)
        while (stored === undefined || stored.seq < item.seq) {
          const r = await disk.next()
          if (r.done === true) { stored = undefined; break }
          stored = r.value
        }
        if (stored?.seq === item.seq) { yield stored.bytes; continue }
        // compacted between the memory and the disk read: it goes as a skip, as compacted seqs do
        log('op %s#%d left the store while being sent', author, item.seq)
        yield item.seq
      }
    } finally {
      await disk?.return(undefined)
    }
  }

  /**
   * Gossip local ops (already on disk). Ops authored within gossipGatherMs of the first one
   * waiting (a submit of many, a batch's claims, its results as its builds publish) leave as one
   * message; the caller does not wait for it (stop() sends what waits at once).
   */
  private publish (ops: Op[]): void {
    if (ops.length === 0) return
    if (!this.started) {
      for (const op of ops) shedBytes(op) // anti-entropy delivers them once we run
      return
    }
    for (const op of ops) this.gossipPending.push(op)
    this.gossipSend ??= new Promise<void>((resolve) => {
      if (this.config.gossipGatherMs > 0) {
        const t = setTimeout(resolve, this.config.gossipGatherMs)
        this.gossipNow = () => { clearTimeout(t); resolve() }
      } else {
        const t = setImmediate(resolve)
        this.gossipNow = () => { clearImmediate(t); resolve() }
      }
    }).then(async () => { await this.sendGossip() })
  }

  /** Send what waits for the gathering window now (before stopping: a release must not wait for the lease). */
  private async flushGossip (): Promise<void> {
    this.gossipNow?.()
    await this.gossipSend
  }

  private async sendGossip (): Promise<void> {
    const ops = this.gossipPending
    this.gossipPending = []
    this.gossipSend = undefined // ops authored from here on go in the next message
    this.gossipNow = undefined
    const messages = encodeGossip(ops.map((op) => op.bytes), DEFAULT_GOSSIP_LIMITS)
    for (const op of ops) shedBytes(op) // durable: the store serves them from here on
    for (const message of messages) {
      try {
        await this.components.pubsub.publish(this.config.topic, message)
        this.counters.gossipMessages++
      } catch (err) {
        // no subscribers yet, or a transient error: anti-entropy delivers them later
        log('gossip publish of %d bytes failed: %s', message.length, (err as Error).message)
      }
    }
    this.counters.gossipPublished += ops.length
  }

  async submit (requests: SubmitRequest[]): Promise<string[]> {
    for (const r of requests) assertDerivationPath(r.drv)
    const ops = await this.appendMany(requests.map((r): OpDraft => ({
      type: 'submit',
      payload: {
        drv: r.drv,
        system: r.system,
        priority: r.priority ?? 0,
        tags: r.tags ?? {},
        maxAttempts: r.maxAttempts ?? this.config.defaultMaxAttempts,
        // left out at the protocol default, so nodes that predate the field accept the op
        ...((r.maxAbandoned ?? this.config.defaultMaxAbandoned) !== DEFAULT_MAX_ABANDONED ? { maxAbandoned: r.maxAbandoned ?? this.config.defaultMaxAbandoned } : {}),
        ...(r.deferUntil !== undefined ? { deferUntil: r.deferUntil } : {}),
        ...(fitsInOp(r.inputs) ? { inputs: r.inputs } : {})
      }
    })))
    return ops.map((op) => buildIdOf(op))
  }

  private known (id: string): BuildRecord {
    const r = this.replica.state.get(id)
    if (r === undefined) throw new UnknownBuildError(id)
    return r
  }

  async setPriority (id: string, priority: number): Promise<Op> { this.known(id); return await this.append({ type: 'priority', payload: { build: id, priority } }) }
  async cancel (id: string): Promise<Op> { this.known(id); return await this.append({ type: 'cancel', payload: { build: id } }) }
  async claim (id: string, attempt: number, leaseMs: number): Promise<Op> { this.known(id); return await this.append({ type: 'claim', payload: { build: id, attempt, leaseMs } }) }
  async renew (id: string, attempt: number, leaseMs: number): Promise<Op> { this.known(id); return await this.append({ type: 'renew', payload: { build: id, attempt, leaseMs } }) }
  async release (id: string, attempt: number): Promise<Op> { this.known(id); return await this.append({ type: 'release', payload: { build: id, attempt } }) }
  async result (id: string, attempt: number, result: ResultRequest): Promise<Op> {
    this.known(id)
    return await this.append({ type: 'result', payload: { build: id, attempt, ...result } })
  }

  // ---- queries -----------------------------------------------------------------------------

  get (id: string): BuildRecord | undefined { return this.replica.state.get(id) }
  byDerivation (drv: string): BuildRecord[] { return this.replica.state.byDerivation(drv) }
  byState (state: BuildState): BuildRecord[] { return this.replica.state.byState(state, this.now()) }
  claimable (systems: readonly string[], limit?: number): Claimable[] { return this.replica.state.claimable(systems, this.now(), limit) }
  stateHash (): string { return this.replica.state.stateHash() }
  versionVector (): VersionVector { return this.replica.versionVector() }
  peerIdString (): string { return this.self }

  /** The API's JSON view of a build, judged at the local time now. */
  view (id: string): BuildView {
    const r = this.known(id)
    const now = this.now()
    const last = r.attempts.at(-1)
    return {
      id: r.id,
      derivation: r.derivation,
      system: r.system,
      state: stateAt(r, now),
      priority: r.priority,
      tags: r.tags,
      submitter: r.submitter,
      submittedAt: r.submitHlc[0],
      maxAttempts: r.maxAttempts,
      failures: r.failures,
      abandoned: r.abandoned,
      maxAbandoned: r.maxAbandoned,
      canceled: r.canceled,
      deferUntil: r.deferUntil ?? null,
      attempts: r.attempts.map(a => {
        const open = a.result === undefined && !a.released
        const leaseEndsAt = open ? a.leaseSeenAt + a.leaseMs : null
        const state: AttemptView['state'] = a.result !== undefined
          ? (a.result.outcome === 'success' ? 'succeeded' : a.result.outcome === 'failure' ? 'failed' : a.result.outcome)
          : a.released ? 'released' : a.abandoned ? 'abandoned' : (leaseEndsAt !== null && leaseEndsAt <= now) || a !== last ? 'lapsed' : a.started ? 'building' : 'claimed'
        return { number: a.number, peerId: a.claimer, state, claimedAt: a.claimHlc[0], leaseEndsAt, contenders: a.contenders, result: a.result ?? null }
      }),
      reason: reasonOf(r, now)
    }
  }

  status (): QueueStatus {
    const now = this.now()
    const byState = Object.fromEntries(['queued', 'deferred', 'claimed', 'building', 'succeeded', 'failed', 'canceled'].map(s => [s, 0])) as Record<BuildState, number>
    for (const r of this.replica.state.records()) byState[stateAt(r, now)]++
    const vv = this.replica.versionVector()
    return {
      builds: this.replica.state.size,
      byState,
      ops: this.replica.opCount,
      authors: Object.keys(vv).length,
      stateHash: this.replica.state.stateHash(),
      stats: { ...this.replica.stats(), ...this.counters }
    }
  }

  stats (): QueueStatus['stats'] { return { ...this.replica.stats(), ...this.counters } }

  // ---- remote input -------------------------------------------------------------------

  private isBanned (peer: string): boolean {
    const until = this.banned.get(peer)
    if (until === undefined) return false
    if (until > this.now()) return true
    this.banned.delete(peer)
    return false
  }

  /** Count garbage from a peer; past the limit, hang up and refuse it for a while. */
  private blame (peer: PeerId, n = 1): void {
    const key = peer.toString()
    const count = (this.garbage.get(key) ?? 0) + n
    this.garbage.set(key, count)
    if (count >= this.config.garbageLimit && !this.isBanned(key)) {
      this.banned.set(key, this.now() + this.config.banMs)
      this.garbage.delete(key)
      this.counters.droppedPeers++
      log('dropping peer %s after %d refused ops or frames', key, count)
      void this.components.libp2p.hangUp(peer).catch(() => {})
    }
  }

  /**
   * Gossipsub validator: only messages whose every op passes every check are accepted (and so
   * relayed). A batch is checked as a sync batch is: one signature per run of an author's
   * linked ops; any refused op refuses the message.
   */
  private readonly validate = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    if (this.isBanned(peer.toString())) return TopicValidatorResult.Reject
    let items: Uint8Array[]
    try {
      items = decodeGossip(msg.data, DEFAULT_GOSSIP_LIMITS)
    } catch (err) {
      if (!(err instanceof OpRejectedError)) throw err
      this.replica.refuse(err); this.blame(peer)
      return TopicValidatorResult.Reject
    }
    if (items.length > 1) {
      const { refused, fresh } = await (await this.takeBatch(items))()
      if (refused > 0) { this.blame(peer, refused); return TopicValidatorResult.Reject }
      return fresh ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    }
    const r = this.replica.ingest(items[0])
    switch (r.kind) {
      case 'rejected': this.blame(peer); return TopicValidatorResult.Reject
      case 'duplicate': return TopicValidatorResult.Ignore
      case 'pending': return TopicValidatorResult.Accept
      case 'applied':
        await this.persist(r.applied) // durable before gossipsub acknowledges and relays it
        return TopicValidatorResult.Accept
    }
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    // Both ends see the connection: if both started an exchange, a joiner would take in (and
    // decode, check and hold memory for) the whole history twice, once per stream. The
    // exchange is two-way, so the end with the smaller peer id starts it; the other end starts
    // one only if none began within a grace period (that end may not have seen a new
    // connection, e.g. a peer restarted before its old connection was noticed closed).
    const peer = evt.detail
    const key = peer.toString()
    if (this.self < key) { void this.syncWith(peer).catch(() => {}); return }
    const seen = this.exchanges.get(key) ?? 0
    const timer = setTimeout(() => {
      this.graceTimers.delete(timer)
      if ((this.exchanges.get(key) ?? 0) === seen) void this.syncWith(peer).catch(() => {})
    }, CONNECT_GRACE_MS)
    timer.unref()
    this.graceTimers.add(timer)
  }

  private readonly onSyncStream = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer
    if (this.isBanned(peer.toString())) { stream.abort(new Error('banned')); return }
    try {
      await this.exchange(stream, peer)
    } catch (err) {
      log('inbound sync with %p failed: %s', peer, (err as Error).message)
    }
  }

  /**
   * Take one sync batch. Ops are decoded and grouped into runs (consecutive seqs of one author,
   * as the sender streams them); inside a run every op must name its predecessor's hash, so ONE
   * valid signature on the run's newest op vouches for all of them (hash chain, README). A
   * broken link or a bad signature refuses the whole run. Apply and persist happen later, in
   * arrival order; returns how many ops were refused and whether any was new (applied or held).
   */
  private async takeBatch (batch: Uint8Array[]): Promise<() => Promise<{ refused: number, fresh: boolean }>> {
    let refused = 0
    const runs: Op[][] = []
    for (const bytes of batch) {
      try {
        const op = decodeOp(bytes, this.config.maxOpBytes)
        checkAuthor(op.author)
        const run = runs.at(-1)
        const last = run?.at(-1)
        if (run !== undefined && last !== undefined && last.author === op.author && last.seq + 1 === op.seq) run.push(op)
        else runs.push([op])
      } catch (err) {
        if (!(err instanceof OpRejectedError)) throw err
        this.replica.refuse(err); refused++
      }
    }
    const good: Op[][] = []
    for (const run of runs) {
      const broken = run.findIndex((op, i) => i > 0 && !linksTo(op, run[i - 1].digest))
      if (broken < 0) { good.push(run); continue }
      this.replica.refuse(new OpBrokenChainError(run[broken].author, run[broken].seq))
      refused += run.length // the whole run: its signature cannot vouch for it
    }
    const newest = good.map(run => run[run.length - 1])
    const verdicts = this.verifyNewest(newest)
    return async () => {
      const ok = await verdicts
      const applied: SeenOp[] = []
      let fresh = false
      good.forEach((run, i) => {
        if (!ok[i]) {
          this.replica.refuse(new OpBadSignatureError(newest[i].author, newest[i].seq))
          refused += run.length
          return
        }
        for (const op of run) {
          const r = this.replica.ingest(op, { signatureChecked: true })
          if (r.kind === 'applied') { applied.push(...r.applied); fresh = true } else if (r.kind === 'pending') fresh = true
          else if (r.kind === 'rejected') refused++
        }
      })
      await this.persist(applied)
      return { refused, fresh }
    }
  }

  /** Check one signature per run: inline for a few, on the (lazily started) pool for many. */
  private async verifyNewest (ops: Op[]): Promise<boolean[]> {
    if (ops.length >= 16 && this.config.verifyWorkers > 0 && this.started) {
      this.pool ??= new VerifyPool(this.config.verifyWorkers)
      const ok = await this.pool.verify(ops)
      if (ok.length === ops.length) return ok
    }
    return ops.map(op => {
      try { verifyOp(op); return true } catch (err) { if (err instanceof OpRejectedError) return false; throw err }
    })
  }

  private async exchange (stream: Stream, peer: PeerId): Promise<SyncSummary> {
    const key = peer.toString()
    if (this.exchanges.size > 10_000 && !this.exchanges.has(key)) this.exchanges.clear()
    this.exchanges.set(key, (this.exchanges.get(key) ?? 0) + 1)
    let refused = 0
    let skipped = false
    // batches are verified ahead (pool) but applied strictly in order; at most 4 in flight
    let chain: Promise<void> = Promise.resolve()
    let inFlight = 0
    const settle = async (): Promise<void> => { await chain }
    try {
      const summary = await runSync(stream, {
        versionVector: () => this.replica.versionVector(),
        opsAfter: (a, after, upTo) => this.opBytesAfter(a, after, upTo),
        receive: async (batch) => {
          const apply = await this.takeBatch(batch)
          inFlight++
          chain = chain.then(async () => { refused += (await apply()).refused }).finally(() => { inFlight-- })
          if (inFlight >= 4) await chain
          if (refused >= this.config.garbageLimit) throw new Error(`peer sent ${refused} refused ops`)
        },
        receiveSkip: async (a, from, to) => {
          await settle()
          const applied = this.replica.skipTo(a, from, to)
          skipped = true
          await this.persist(applied)
        },
        settle
      }, { maxFrameBytes: this.config.maxFrameBytes, batchOps: this.config.batchOps })
      this.counters.syncs++
      if (refused > 0) this.blame(peer, refused)
      return summary
    } catch (err) {
      await chain.catch(() => {})
      this.counters.syncFailures++
      this.blame(peer, Math.max(refused, 1))
      throw err
    } finally {
      // heads moved over compacted seqs must survive a restart
      if (skipped) await this.store.saveSnapshot({ vv: this.replica.versionVector(), tips: this.replica.tips(), stateHash: this.replica.state.stateHash(), builds: this.replica.state.size, savedAt: this.now() })
    }
  }

  /** One anti-entropy exchange with `peer` (joins a running one). */
  async syncWith (peer: PeerId): Promise<SyncSummary> {
    const key = peer.toString()
    const running = this.syncing.get(key)
    if (running !== undefined) return await running
    if (!this.started || this.isBanned(key)) return { sent: 0, received: 0, skipsSent: 0 }
    const p = (async () => {
      const stream = await this.components.libp2p.dialProtocol(peer, this.config.syncProtocol)
      return await this.exchange(stream, peer)
    })()
    this.syncing.set(key, p)
    try {
      return await p
    } catch (err) {
      log('sync with %s failed: %s', key, (err as Error).message)
      throw err
    } finally {
      this.syncing.delete(key)
    }
  }

  private async syncRandom (): Promise<void> {
    const peers = this.components.libp2p.getPeers()
    if (peers.length === 0) return
    await this.syncWith(peers[Math.floor(Math.random() * peers.length)]).catch(() => {})
  }
}

/** Input lists up to this many bytes go in a submit op, which must stay under DEFAULT_MAX_OP_BYTES with its other fields. */
const MAX_INPUTS_BYTES = 8 * 1024

function fitsInOp (inputs: string[] | undefined): inputs is string[] {
  if (inputs === undefined || inputs.length > MAX_SUBMIT_INPUTS) return false
  let bytes = 0
  for (const i of inputs) bytes += Buffer.byteLength(i) + 3 // CBOR text header
  return bytes <= MAX_INPUTS_BYTES
}
