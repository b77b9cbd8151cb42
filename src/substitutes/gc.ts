// Evicting NARs (with their narinfos) from the node's cache: least recently served first, and
// never the last copy the swarm knows of unless forced — a provider record of someone else in the
// DHT is what "another copy exists" means here.
import { logger } from '@libp2p/logger'
import type { BinaryCache, CacheIndexRecord } from '../cache/index.js'

const log = logger('guix-swarm:substitutes:gc')
const DAY_MS = 24 * 60 * 60 * 1000

export interface GcOptions {
  /** Evict until the cache holds at most this many bytes. */
  maxSize?: number
  /** Evict whatever was not served (nor added) for this many days. */
  keepDays?: number
  /** Evict even when no other provider is known (the swarm may lose the path). */
  force?: boolean
  /** Report what would go, remove nothing. */
  dryRun?: boolean
}

export interface GcRemoved { storePath: string, bytes: number, lastUsedAt: number }

export interface GcReport {
  before: number
  after: number
  freed: number
  removed: GcRemoved[]
  /** Candidates kept because no other node provides them. */
  keptLastCopies: string[]
  /** Candidates kept because something running needs them. */
  keptPinned: string[]
  dryRun: boolean
}

export interface GarbageCollectorComponents {
  cache: BinaryCache
  /** Does any other peer provide this entry's NAR? */
  hasOtherProvider: (record: CacheIndexRecord) => Promise<boolean>
  /** Called after an entry is removed (drop it from the NAR index). */
  onRemoved: (record: CacheIndexRecord) => void
  /** Store paths a running build needs: never evicted. */
  pinned?: () => ReadonlySet<string>
  now?: () => number
}

const bytesOf = (r: CacheIndexRecord): number => r.narinfoSize + r.files.reduce((s, f) => s + f.fileSize, 0)
const lastUse = (r: CacheIndexRecord): number => r.lastServedAt ?? r.addedAt

export class GarbageCollector {
  private running?: Promise<GcReport>

  constructor (private readonly components: GarbageCollectorComponents) {}

  /** One collection; concurrent calls wait for the one running (GC is not re-entrant). */
  async collect (opts: GcOptions): Promise<GcReport> {
    while (this.running != null) await this.running.catch(() => {})
    const p = this.doCollect(opts).finally(() => { this.running = undefined })
    this.running = p
    return await p
  }

  private async doCollect (opts: GcOptions): Promise<GcReport> {
    const { cache } = this.components
    const now = (this.components.now ?? Date.now)()
    const records: CacheIndexRecord[] = []
    for (const e of await cache.list()) {
      const r = await cache.getRecord(e.hashPart)
      if (r !== undefined) records.push(r)
    }
    // least recently used first; store path breaks ties so runs are reproducible
    records.sort((a, b) => lastUse(a) - lastUse(b) || (a.storePath < b.storePath ? -1 : 1))
    const before = records.reduce((s, r) => s + bytesOf(r), 0)
    let size = before
    const pinned = this.components.pinned?.() ?? new Set<string>()
    const report: GcReport = { before, after: before, freed: 0, removed: [], keptLastCopies: [], keptPinned: [], dryRun: opts.dryRun === true }
    const cutoff = opts.keepDays !== undefined ? now - opts.keepDays * DAY_MS : undefined
    for (const r of records) {
      const stale = cutoff !== undefined && lastUse(r) < cutoff
      const over = opts.maxSize !== undefined && size > opts.maxSize
      if (!stale && !over) continue
      if (pinned.has(r.storePath)) { report.keptPinned.push(r.storePath); continue }
      if (opts.force !== true && !await this.components.hasOtherProvider(r)) {
        report.keptLastCopies.push(r.storePath)
        continue
      }
      const bytes = bytesOf(r)
      if (opts.dryRun !== true) {
        if (!await cache.remove(r.hashPart)) continue
        this.components.onRemoved(r)
      }
      size -= bytes
      report.removed.push({ storePath: r.storePath, bytes, lastUsedAt: lastUse(r) })
    }
    report.after = size
    report.freed = before - size
    log('gc: %d removed, %d bytes freed, %d last copies kept', report.removed.length, report.freed, report.keptLastCopies.length)
    return report
  }
}
