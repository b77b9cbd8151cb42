// Mirroring: follow the queue's successful builds and pull every output into the local cache,
// so the node keeps serving them when their builders go offline. Outputs are fetched like any
// other substitute (trusted narinfo, verified NARs), one at a time, in the order builds succeed.
import { logger } from '@libp2p/logger'
import type { BuildRecord } from '../crdt/index.js'
import { FeedFollower, successfulOutputs, type BuildFeed } from './feed.js'

const log = logger('guix-swarm:substitutes:mirror')

export interface MirrorComponents {
  /** Fetch one store path's closure into the cache; resolves with how many paths were fetched (0: all held). */
  fetch: (storePath: string) => Promise<number>
  /** The queue to follow, if the node runs one. */
  feed: () => BuildFeed | undefined
}

export interface MirrorFilters {
  /** Only builds for these systems (empty: any). */
  systems: string[]
  /** Only builds carrying every one of these tags, `key=value` or `key` (empty: any). */
  tags: string[]
  /** Tries per output before giving up until the next restart (default 5). */
  maxTries?: number
}

export function matchesFilters (record: Pick<BuildRecord, 'system' | 'tags'>, filters: Pick<MirrorFilters, 'systems' | 'tags'>): boolean {
  if (filters.systems.length > 0 && !filters.systems.includes(record.system)) return false
  for (const t of filters.tags) {
    const eq = t.indexOf('=')
    const key = eq < 0 ? t : t.slice(0, eq)
    if (!(key in record.tags)) return false
    if (eq >= 0 && record.tags[key] !== t.slice(eq + 1)) return false
  }
  return true
}

export class Mirror {
  private readonly follower: FeedFollower
  private readonly queue: string[] = []
  private readonly queued = new Set<string>()
  private readonly tries = new Map<string, number>()
  private draining?: Promise<void>
  private running = false
  readonly counters = { fetched: 0, held: 0, failed: 0, skipped: 0 }

  constructor (private readonly components: MirrorComponents, private readonly filters: MirrorFilters) {
    this.follower = new FeedFollower(components.feed, (r) => { this.consider(r) }, () => { log('following the queue') })
  }

  start (): void {
    this.running = true
    this.follower.start()
  }

  stop (): void {
    this.running = false
    this.follower.stop()
  }

  status (): Record<string, unknown> {
    return { following: this.follower.following, pending: this.queue.length, filters: { systems: this.filters.systems, tags: this.filters.tags }, ...this.counters }
  }

  /** Mirror these store paths now (also how an operator mirrors without a queue). */
  follow (paths: Iterable<string>): void {
    for (const p of paths) {
      if (this.queued.has(p)) continue
      this.queued.add(p)
      this.queue.push(p)
    }
    this.drain()
  }

  private consider (record: BuildRecord): void {
    const outputs = successfulOutputs(record)
    if (outputs.length === 0) return
    if (!matchesFilters(record, this.filters)) { this.counters.skipped++; return }
    this.follow(outputs)
  }

  private drain (): void {
    if (this.draining != null) return
    this.draining = (async () => {
      while (this.running && this.queue.length > 0) {
        const p = this.queue.shift() as string
        try {
          const got = await this.components.fetch(p)
          if (got === 0) this.counters.held++
          else this.counters.fetched++
          this.queued.delete(p)
        } catch (err) {
          const n = (this.tries.get(p) ?? 0) + 1
          this.tries.set(p, n)
          log('mirroring %s failed (try %d): %s', p, n, (err as Error).message)
          if (n < (this.filters.maxTries ?? 5)) {
            // the builder may not have announced yet: try again later, behind the others
            setTimeout(() => { this.queue.push(p); this.drain() }, 2000 * n).unref()
          } else {
            this.counters.failed++
            this.queued.delete(p)
          }
        }
      }
    })().finally(() => { this.draining = undefined })
  }
}
