// Scheduler settings and the retry backoff they imply.
import { availableParallelism } from 'node:os'
import { SchedulerConfigError } from './errors.js'

export interface SchedulerConfig {
  /** Concurrent builds (slots). Default: one per core. */
  maxBuilds: number
  /** Systems this node builds for (e.g. x86_64-linux); empty means it never claims. */
  systems: string[]
  /**
   * Tags this node offers, e.g. `big-memory` or `gpu=nvidia`. A build's tag `k: v` is met by an
   * offered `k=v`, and also by a bare `k` when v is '' or 'true'.
   */
  tags: string[]
  /** Lease length; renewed every third of it. */
  leaseMs: number
  /** How long to wait after claiming for competing claims before starting. */
  settleMs: number
  /** Re-scan for claimable builds this often even without queue events (lapsed leases, backoffs). */
  pollMs: number
  /** Random delay (0..jitterMs) before claiming, so nodes woken by the same op do not all claim the same build. */
  jitterMs: number
  /** Backoff before the next attempt after a failure, missing inputs or a setup failure: base·2^(n-1), capped. */
  backoffBaseMs: number
  backoffMaxMs: number
  /** How many recent claim decisions status() keeps. */
  decisionLog: number
  /** Claimable builds looked at per scan (best first); bounds the work a huge queue costs per event. */
  scanLimit: number
  /**
   * Most builds one slot claims in one pass, settles once and hands to the daemon together (one
   * client process for all when the builder has `buildMany`). 1 turns batching off.
   */
  maxBatch: number
  /**
   * Batches grow only while recent builds are short: a slot takes up to batchBudgetMs / (mean
   * build time) builds at once (at most maxBatch), so long builds are claimed one at a time.
   */
  batchBudgetMs: number
}

export const DEFAULT_SCHEDULER_CONFIG: SchedulerConfig = {
  maxBuilds: availableParallelism(),
  systems: [],
  tags: [],
  leaseMs: 60_000,
  settleMs: 500,
  pollMs: 1000,
  jitterMs: 50,
  backoffBaseMs: 5_000,
  backoffMaxMs: 5 * 60_000,
  decisionLog: 100,
  scanLimit: 1000,
  maxBatch: 16,
  batchBudgetMs: 10_000
}

export function resolveConfig (partial: Partial<SchedulerConfig> = {}): SchedulerConfig {
  const c = { ...DEFAULT_SCHEDULER_CONFIG, ...partial }
  const positive = (v: number, what: string): void => {
    if (!Number.isFinite(v) || v <= 0) throw new SchedulerConfigError(`${what} must be a positive number, got ${v}`)
  }
  if (!Number.isInteger(c.maxBuilds) || c.maxBuilds < 0) throw new SchedulerConfigError(`maxBuilds must be a whole number ≥ 0, got ${c.maxBuilds}`)
  positive(c.leaseMs, 'leaseMs'); positive(c.scanLimit, 'scanLimit'); positive(c.pollMs, 'pollMs'); positive(c.backoffBaseMs, 'backoffBaseMs'); positive(c.backoffMaxMs, 'backoffMaxMs')
  if (!Number.isInteger(c.maxBatch) || c.maxBatch < 1) throw new SchedulerConfigError(`maxBatch must be a whole number ≥ 1, got ${c.maxBatch}`)
  if (!Number.isFinite(c.batchBudgetMs) || c.batchBudgetMs < 0) throw new SchedulerConfigError(`batchBudgetMs must be ≥ 0, got ${c.batchBudgetMs}`)
  if (c.settleMs < 0 || c.jitterMs < 0) throw new SchedulerConfigError('settleMs and jitterMs must be ≥ 0')
  // the claim must still be ours when we start: the settle window has to fit well inside the lease
  if (c.settleMs * 2 >= c.leaseMs) throw new SchedulerConfigError(`settleMs (${c.settleMs}) must be under half of leaseMs (${c.leaseMs})`)
  return c
}

/** Delay before retry number `n` (1 = the first retry). */
export function backoffMs (c: Pick<SchedulerConfig, 'backoffBaseMs' | 'backoffMaxMs'>, n: number): number {
  if (n <= 0) return 0
  return Math.min(c.backoffMaxMs, c.backoffBaseMs * 2 ** Math.min(n - 1, 30))
}

/** Whether a build with `required` tags may run on a node offering `offered`. */
export function tagsMet (required: Record<string, string>, offered: readonly string[]): boolean {
  const have = new Set(offered)
  for (const [k, v] of Object.entries(required)) {
    if (have.has(`${k}=${v}`)) continue
    if ((v === '' || v === 'true') && have.has(k)) continue
    return false
  }
  return true
}
