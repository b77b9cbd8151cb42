// The materialised queue: a deterministic function of the SET of ops seen. Each build keeps
// its own ops and is recomputed from them whenever one arrives, so delivery order,
// duplicates and replays cannot change the result; indexes are updated incrementally.
import { createHash } from 'node:crypto'
import { compareStamp, type Stamp } from './hlc.js'
import { buildIdOf, sha256Latin1, MAX_ATTEMPT, DEFAULT_MAX_ABANDONED, type LogRef, type NarOutput, type Op, type OpOfType, type SubmitPayload } from './op.js'

export type Phase = 'queued' | 'claimed' | 'building' | 'succeeded' | 'failed' | 'canceled'
/** What users see: the phase, with leases and defer-until judged at a given local time. */
export type BuildState = Phase | 'deferred'
export const BUILD_STATES: readonly BuildState[] = ['queued', 'deferred', 'claimed', 'building', 'succeeded', 'failed', 'canceled']

export interface SeenOp { op: Op, seenAt: number }

export interface AttemptResult {
  outcome: 'success' | 'failure' | 'missing-inputs' | 'canceled'
  opId: string
  hlc: Stamp
  outputs?: Record<string, NarOutput>
  log?: LogRef
  missing?: string[]
}

export interface Attempt {
  number: number
  /** Winner of the claim: smallest (HLC, author) among claims of this attempt. */
  claimer: string
  claimOpId: string
  claimHlc: Stamp
  /** How many distinct claims competed for this attempt. */
  contenders: number
  /** The winner renewed at least once: it is building. */
  started: boolean
  released: boolean
  /**
   * Claimed, never finished (no result, not released) and superseded by a claim on a later
   * attempt: the builder stopped renewing and its lease lapsed. Decided by the op set alone.
   */
  abandoned?: boolean
  leaseMs: number
  /** Local time the winner's latest claim/renew was first seen here (leases are judged on it). */
  leaseSeenAt: number
  result?: AttemptResult
}

export interface BuildRecord {
  id: string
  derivation: string
  system: string
  tags: Record<string, string>
  submitter: string
  submitOpId: string
  submitHlc: Stamp
  maxAttempts: number
  /**
   * Abandoned attempts allowed before the build fails (the submit's, else the default).
   * computeRecord always sets this and `abandoned`; optional only for records written by hand.
   */
  maxAbandoned?: number
  deferUntil?: number
  /** The submit's input derivations (SubmitPayload.inputs), while the build is not finished; else undefined. */
  inputs?: readonly string[]
  priority: number
  canceled: boolean
  phase: Phase
  failures: number
  /** Attempts abandoned by their builder (counted apart from failures: not the build's fault). */
  abandoned?: number
  attempts: Attempt[]
  /** HLC ms of the op that finished the build (compaction horizon is measured from it). */
  finishedAt?: number
  /** sha-256 of the canonical form as 32 latin1 chars (one per byte), feeds stateHash(). */
  digest: string
}

export interface Claimable { id: string, attempt: number, priority: number, system: string, derivation: string }

const NO_ATTEMPTS = Object.freeze([]) as unknown as Attempt[]

const FINISHED: ReadonlySet<Phase> = new Set(['succeeded', 'failed', 'canceled'])
export const isFinished = (p: Phase): boolean => FINISHED.has(p)

function order (a: SeenOp, b: SeenOp): number {
  return compareStamp(a.op.hlc, b.op.hlc) || (a.op.author < b.op.author ? -1 : a.op.author > b.op.author ? 1 : a.op.seq - b.op.seq)
}

interface AttemptAcc {
  claims: SeenOp[]
  renews: SeenOp[]
  releases: Set<string>
  results: SeenOp[]
}

/** The pure fold of one build's ops. `ops` may be in any order. */
export function computeRecord (id: string, submitSeen: SeenOp, others: readonly SeenOp[]): BuildRecord {
  const submit = submitSeen.op as OpOfType<'submit'>
  const p: SubmitPayload = submit.payload
  const sorted = [...others].sort(order)
  let priority = p.priority
  let prioritySource: SeenOp = submitSeen
  let canceled = false
  let cancelMs: number | undefined
  const acc = new Map<number, AttemptAcc>()
  const accOf = (n: number): AttemptAcc => {
    let a = acc.get(n)
    if (a === undefined) { a = { claims: [], renews: [], releases: new Set(), results: [] }; acc.set(n, a) }
    return a
  }
  for (const s of sorted) {
    const op = s.op
    switch (op.type) {
      case 'priority':
        if (order(s, prioritySource) > 0) { priority = op.payload.priority; prioritySource = s }
        break
      case 'cancel':
        if (!canceled) { canceled = true; cancelMs = op.hlc[0] }
        break
      case 'claim': accOf(op.payload.attempt).claims.push(s); break
      case 'renew': accOf(op.payload.attempt).renews.push(s); break
      case 'release': accOf(op.payload.attempt).releases.add(op.author); break
      case 'result': accOf(op.payload.attempt).results.push(s); break
      case 'submit': break
    }
  }
  const attempts: Attempt[] = []
  let failures = 0
  let successMs: number | undefined
  let lastFailureMs = 0
  for (const n of [...acc.keys()].sort((a, b) => a - b)) {
    const a = acc.get(n)!
    if (a.claims.length === 0) continue // renews/results without a claim change nothing
    const win = a.claims[0] // sorted, so the smallest (HLC, author) wins everywhere alike
    const claimer = win.op.author
    let leaseOp = win
    let leaseSeenAt = win.seenAt
    let started = false
    for (const r of a.renews) {
      if (r.op.author !== claimer) continue
      started = true
      leaseOp = r
      leaseSeenAt = Math.max(leaseSeenAt, r.seenAt)
    }
    const leaseMs = (leaseOp.op as OpOfType<'claim' | 'renew'>).payload.leaseMs
    const resSeen = a.results.find(r => r.op.author === claimer) // first by HLC: results are final
    let result: AttemptResult | undefined
    if (resSeen !== undefined) {
      const rp = (resSeen.op as OpOfType<'result'>).payload
      result = { outcome: rp.outcome, opId: resSeen.op.id, hlc: resSeen.op.hlc }
      if (rp.outcome === 'success') { result.outputs = rp.outputs; successMs = Math.min(successMs ?? Infinity, resSeen.op.hlc[0]) }
      if (rp.outcome === 'failure') { result.log = rp.log; failures++; lastFailureMs = Math.max(lastFailureMs, resSeen.op.hlc[0]) }
      if (rp.outcome === 'missing-inputs') result.missing = rp.missing
    }
    attempts.push({
      number: n,
      claimer,
      claimOpId: win.op.id,
      claimHlc: win.op.hlc,
      contenders: new Set(a.claims.map(c => c.op.id)).size,
      started,
      released: a.releases.has(claimer),
      abandoned: false,
      leaseMs,
      leaseSeenAt,
      ...(result !== undefined ? { result } : {})
    })
  }
  // an open attempt followed by a claimed one was given up: its lease lapsed and another
  // builder took the next attempt (the later claim is in the op set, so every replica agrees)
  let abandoned = 0
  let lastAbandonMs = 0
  for (let i = 0; i + 1 < attempts.length; i++) {
    const a = attempts[i]
    if (a.result !== undefined || a.released) continue
    a.abandoned = true
    abandoned++
    lastAbandonMs = Math.max(lastAbandonMs, attempts[i + 1].claimHlc[0])
  }
  const maxAbandoned = p.maxAbandoned ?? DEFAULT_MAX_ABANDONED
  let phase: Phase
  let finishedAt: number | undefined
  const last = attempts.at(-1)
  if (successMs !== undefined) { phase = 'succeeded'; finishedAt = successMs } else if (canceled) { phase = 'canceled'; finishedAt = cancelMs } else if (failures >= p.maxAttempts) { phase = 'failed'; finishedAt = lastFailureMs } else if (abandoned >= maxAbandoned) { phase = 'failed'; finishedAt = lastAbandonMs } else if (last !== undefined && last.result === undefined && !last.released) { phase = last.started ? 'building' : 'claimed' } else { phase = 'queued' }

  // one literal of fixed shape (no conditional spreads, which give records out-of-object
  // property arrays), and the shared empty list for the usual build that was never claimed
  const record: BuildRecord = {
    id,
    derivation: p.drv,
    system: p.system,
    tags: p.tags,
    submitter: submit.author,
    submitOpId: submit.id,
    submitHlc: submit.hlc,
    maxAttempts: p.maxAttempts,
    maxAbandoned,
    deferUntil: p.deferUntil,
    // only claiming needs them: a finished build does not hold them (memory at 100k builds)
    inputs: phase === 'queued' || phase === 'claimed' || phase === 'building' ? p.inputs : undefined,
    priority,
    canceled,
    phase,
    failures,
    abandoned,
    attempts: attempts.length === 0 ? NO_ATTEMPTS : attempts,
    finishedAt,
    digest: ''
  }
  record.digest = digestOf(record)
  return record
}

// The canonical form leaves out what compaction may drop (renews, losing claims of finished
// builds) and everything local (receive times), so compacted and full replicas hash alike.
function digestOf (r: BuildRecord): string {
  const done = isFinished(r.phase)
  const canon = [r.id, r.derivation, r.system, Object.entries(r.tags).sort(), r.submitter, r.submitOpId, r.maxAttempts, r.deferUntil ?? null,
    r.priority, r.canceled, r.phase, r.failures,
    r.attempts.map(a => [a.number, a.claimer, a.claimOpId, a.released, a.result?.opId ?? null, done ? null : [a.started, a.contenders]]),
    // appended (and only when not the default) so builds that never had a lease lapse keep their digests
    ...((r.abandoned ?? 0) > 0 || (r.maxAbandoned ?? DEFAULT_MAX_ABANDONED) !== DEFAULT_MAX_ABANDONED ? [r.abandoned ?? 0, r.maxAbandoned ?? DEFAULT_MAX_ABANDONED, r.attempts.map(a => a.abandoned === true)] : [])]
  return sha256Latin1(JSON.stringify(canon))
}

/** Claimability of a record at local time `now`: the attempt number to claim, or undefined. */
export function nextAttempt (r: BuildRecord, now: number): number | undefined {
  if (isFinished(r.phase)) return undefined
  if (r.deferUntil !== undefined && r.deferUntil > now) return undefined
  const last = r.attempts.at(-1)
  if (last === undefined) return 1
  const open = last.result === undefined && !last.released && last.leaseSeenAt + last.leaseMs > now
  if (open) return undefined
  return last.number < MAX_ATTEMPT ? last.number + 1 : undefined
}

export function stateAt (r: BuildRecord, now: number): BuildState {
  if (r.phase === 'claimed' || r.phase === 'building') {
    const last = r.attempts.at(-1)!
    return last.leaseSeenAt + last.leaseMs > now ? r.phase : 'queued'
  }
  if (r.phase === 'queued' && r.deferUntil !== undefined && r.deferUntil > now) return 'deferred'
  return r.phase
}

const short = (peer: string): string => peer.length > 12 ? `${peer.slice(0, 6)}…${peer.slice(-4)}` : peer
const secs = (ms: number): string => `${Math.max(0, Math.round(ms / 1000))} s`

const abandonedNote = (abandoned: number, max: number): string => abandoned > 0 ? `; ${abandoned} of ${max} allowed abandoned` : ''

/** Why the build is where it is, in words, at local time `now`. */
export function reasonOf (r: BuildRecord, now: number): string {
  const last = r.attempts.at(-1)
  const abandoned = r.abandoned ?? 0
  const maxAbandoned = r.maxAbandoned ?? DEFAULT_MAX_ABANDONED
  switch (r.phase) {
    case 'succeeded': {
      const a = r.attempts.find(x => x.result?.outcome === 'success')!
      return `attempt ${a.number} by ${short(a.claimer)} succeeded${r.canceled ? ' (a cancel arrived too late to matter)' : ''}`
    }
    case 'canceled': return 'canceled'
    case 'failed':
      if (r.failures >= r.maxAttempts) return `failed ${r.failures} of ${r.maxAttempts} allowed attempts`
      return `failed: the leases kept lapsing, ${abandoned} attempts abandoned by their builders (limit ${maxAbandoned}); the build itself failed ${r.failures} times`
    default: break
  }
  if (last !== undefined && last.result === undefined && !last.released) {
    const ends = last.leaseSeenAt + last.leaseMs - now
    if (ends > 0) return `${r.phase === 'building' ? 'building' : 'claimed'}: attempt ${last.number} by ${short(last.claimer)}, lease ends in ${secs(ends)}`
    const fails = abandoned + 1 >= maxAbandoned ? ', and the build then fails' : ''
    return `lease of ${short(last.claimer)} on attempt ${last.number} lapsed ${secs(-ends)} ago; claimable as attempt ${last.number + 1}, whose claim abandons attempt ${last.number} (${abandoned + 1} of ${maxAbandoned} allowed${fails})`
  }
  if (r.deferUntil !== undefined && r.deferUntil > now) return `deferred for ${secs(r.deferUntil - now)}`
  if (last === undefined) return `waiting for a ${r.system} builder (priority ${r.priority})`
  const why = last.released ? `released by ${short(last.claimer)}` : `attempt ${last.number} ended: ${last.result!.outcome}`
  return `${why}; claimable as attempt ${last.number + 1} (${r.failures} of ${r.maxAttempts} attempts failed${abandonedNote(abandoned, maxAbandoned)})`
}

// ---- priority index ------------------------------------------------------------------

// The index holds the records themselves (their id, priority and submit stamp never change
// within one record object): no separate key object per build.
type Key = Pick<BuildRecord, 'id' | 'priority' | 'submitHlc'>
function cmpKey (a: Key, b: Key): number {
  return (b.priority - a.priority) || compareStamp(a.submitHlc, b.submitHlc) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}
const keyOf = (r: BuildRecord): Key => r

/**
 * Unfinished builds of one system in claim order: higher priority first, then oldest submit.
 * Bucketed by priority so that inserts land near the end of a bucket (submits arrive roughly
 * in HLC order) instead of shifting one 100k-entry array on every insert.
 */
class PriorityIndex {
  private readonly buckets = new Map<number, Key[]>()
  private order: number[] = [] // priorities, descending

  private static find (arr: Key[], k: Key): number {
    let lo = 0; let hi = arr.length
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (cmpKey(arr[mid], k) < 0) lo = mid + 1; else hi = mid }
    return lo
  }

  insert (k: Key): void {
    let b = this.buckets.get(k.priority)
    if (b === undefined) {
      b = []
      this.buckets.set(k.priority, b)
      this.order = [...this.buckets.keys()].sort((x, y) => y - x)
    }
    if (b.length === 0 || cmpKey(b[b.length - 1], k) < 0) b.push(k)
    else b.splice(PriorityIndex.find(b, k), 0, k)
  }

  remove (k: Key): void {
    const b = this.buckets.get(k.priority)
    if (b === undefined) return
    const i = PriorityIndex.find(b, k)
    if (i < b.length && b[i].id === k.id) b.splice(i, 1)
    if (b.length === 0) { this.buckets.delete(k.priority); this.order = this.order.filter(p => p !== k.priority) }
  }

  * keys (): IterableIterator<Key> {
    for (const p of this.order) yield * (this.buckets.get(p) ?? [])
  }
}

// ---- the state ---------------------------------------------------------------------------

// Most builds are a lone submit: `ops` stays the shared empty list until a second op arrives.
const NO_OPS = Object.freeze([]) as unknown as SeenOp[]
// The submit is held as the bare op: its receive time plays no part in the state (only
// claims' and renews' do), and a {op, seenAt} pair per build cost 48 bytes.
interface Entry { submit?: Op, ops: SeenOp[], record?: BuildRecord }

export type ChangeListener = (record: BuildRecord, previous: BuildRecord | undefined) => void

export class QueueState {
  private readonly entries = new Map<string, Entry>()
  /** Build ids per derivation: a bare id for the usual single build, a list otherwise. */
  private readonly byDrv = new Map<string, string | string[]>()
  /** Finished builds by phase (unfinished ones are all in `bySystem`: one index entry per build). */
  private readonly byPhase = new Map<Phase, Set<string>>()
  private readonly bySystem = new Map<string, PriorityIndex>()
  private listener?: ChangeListener

  onChange (listener: ChangeListener | undefined): void { this.listener = listener }

  private count = 0
  get size (): number { return this.count }
  /** Bumped whenever a record is replaced: stateHash() is recomputed only after a change. */
  private version = 0
  private hashed?: { version: number, hash: string }

  /** Add one op (already validated). Returns the affected build id. */
  apply (op: Op, seenAt: number): string {
    const id = op.type === 'submit' ? buildIdOf(op) : op.payload.build
    let e = this.entries.get(id)
    if (e === undefined) { e = { submit: undefined, ops: NO_OPS, record: undefined }; this.entries.set(id, e) } // every field up front: one shape, no property array
    if (op.type === 'submit') {
      if (e.submit !== undefined) return id
      e.submit = op
    } else {
      if (e.ops.some(s => s.op.id === op.id)) return id
      const seen = { op, seenAt }
      if (e.ops === NO_OPS) e.ops = [seen]; else e.ops.push(seen)
    }
    this.refresh(id, e)
    return id
  }

  private refresh (id: string, e: Entry): void {
    if (e.submit === undefined) return // ops for a build whose submit has not arrived yet wait here
    const prev = e.record
    const next = computeRecord(id, { op: e.submit, seenAt: 0 }, e.ops)
    e.record = next
    this.version++
    if (prev !== undefined && prev.digest === next.digest && prev.attempts.at(-1)?.leaseSeenAt === next.attempts.at(-1)?.leaseSeenAt) return
    this.reindex(prev, next)
    this.listener?.(next, prev)
  }

  private reindex (prev: BuildRecord | undefined, next: BuildRecord): void {
    if (prev === undefined) {
      this.count++
      const ids = this.byDrv.get(next.derivation)
      if (ids === undefined) this.byDrv.set(next.derivation, next.id)
      else if (typeof ids === 'string') { if (ids !== next.id) this.byDrv.set(next.derivation, [ids, next.id]) } else if (!ids.includes(next.id)) ids.push(next.id)
    } else {
      if (isFinished(prev.phase)) this.byPhase.get(prev.phase)?.delete(next.id)
      else this.bySystem.get(prev.system)?.remove(keyOf(prev))
    }
    if (isFinished(next.phase)) {
      let ph = this.byPhase.get(next.phase)
      if (ph === undefined) { ph = new Set(); this.byPhase.set(next.phase, ph) }
      ph.add(next.id)
    } else {
      let idx = this.bySystem.get(next.system)
      if (idx === undefined) { idx = new PriorityIndex(); this.bySystem.set(next.system, idx) }
      idx.insert(keyOf(next))
    }
  }

  get (id: string): BuildRecord | undefined { return this.entries.get(id)?.record }

  byDerivation (drv: string): BuildRecord[] {
    const ids = this.byDrv.get(drv) ?? []
    return (typeof ids === 'string' ? [ids] : ids).map(id => this.get(id)!).sort((a, b) => compareStamp(a.submitHlc, b.submitHlc))
  }

  /** Builds in a user-facing state at local time `now`. */
  byState (state: BuildState, now: number): BuildRecord[] {
    if (state === 'succeeded' || state === 'failed' || state === 'canceled') return [...(this.byPhase.get(state) ?? [])].map(id => this.get(id)!)
    const out: BuildRecord[] = []
    for (const idx of this.bySystem.values()) {
      for (const k of idx.keys()) {
        const r = this.get(k.id)!
        if (stateAt(r, now) === state) out.push(r)
      }
    }
    return out
  }

  /** Claimable builds for `systems` at local time `now`, best first. */
  claimable (systems: readonly string[], now: number, limit = Infinity): Claimable[] {
    const out: Array<Claimable & { key: Key }> = []
    for (const system of new Set(systems)) {
      const idx = this.bySystem.get(system)
      if (idx === undefined) continue
      let n = 0
      for (const k of idx.keys()) {
        if (n >= limit) break
        const r = this.get(k.id)!
        const attempt = nextAttempt(r, now)
        if (attempt === undefined) continue
        out.push({ id: r.id, attempt, priority: r.priority, system, derivation: r.derivation, key: k })
        n++
      }
    }
    out.sort((a, b) => cmpKey(a.key, b.key))
    return out.slice(0, limit).map(({ key: _k, ...c }) => c)
  }

  /** All materialised builds (order unspecified). */
  * records (): IterableIterator<BuildRecord> {
    for (const e of this.entries.values()) if (e.record !== undefined) yield e.record
  }

  /** Ops held for a build (submit first, with receive time 0: it is not kept); used by tests. */
  opsOf (id: string): SeenOp[] {
    const e = this.entries.get(id)
    if (e === undefined) return []
    return e.submit !== undefined ? [{ op: e.submit, seenAt: 0 }, ...e.ops] : [...e.ops]
  }

  /** Drop ops that no longer matter for a finished build; returns the dropped ones. */
  compactBuild (id: string): Op[] {
    const e = this.entries.get(id)
    if (e?.record === undefined || !isFinished(e.record.phase)) return []
    const winners = new Set(e.record.attempts.map(a => a.claimOpId))
    const keep: SeenOp[] = []; const dropped: Op[] = []
    for (const s of e.ops) {
      const drop = s.op.type === 'renew' || (s.op.type === 'claim' && !winners.has(s.op.id))
      if (drop) dropped.push(s.op); else keep.push(s)
    }
    if (dropped.length > 0) { e.ops = keep; e.record = computeRecord(id, { op: e.submit!, seenAt: 0 }, keep); this.version++ }
    return dropped
  }

  /**
   * sha-256 over the canonical form of every build, sorted by id. Kept until the next change:
   * every status answer shows it, and at 100k builds it takes 0.14 s.
   */
  stateHash (): string {
    if (this.hashed?.version === this.version) return this.hashed.hash
    const h = createHash('sha256')
    const recs = [...this.records()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    for (const r of recs) h.update(r.id).update(r.digest, 'latin1')
    this.hashed = { version: this.version, hash: h.digest('hex') }
    return this.hashed.hash
  }
}
