// Background DHT announcements: entries wait their turn (a few walks at a time, oldest first),
// and while the node is building they wait for it, up to a bound. Fetchers find a fresh output
// through its builder (named in the queue) meanwhile; a DHT walk costs a small build about as
// much CPU as its whole publishing.
import { logger } from '@libp2p/logger'

const log = logger('guix-swarm:substitutes:announce')

export interface BackgroundAnnouncerInit<T> {
  /** Make one entry findable (a DHT provide); a rejection is logged, not retried here. */
  announce: (item: T) => Promise<unknown>
  /** Walks at once. */
  concurrency: number
  /** Longest an entry waits for a busy node. */
  deferMs: number
  /** Whether the node is busy building now. */
  busy?: () => boolean
  now?: () => number
}

export class BackgroundAnnouncer<T> {
  private readonly queue = new Map<string, { item: T, at: number }>()
  private running = 0
  private timer?: NodeJS.Timeout
  private readonly now: () => number

  constructor (private readonly init: BackgroundAnnouncerInit<T>) {
    this.now = init.now ?? Date.now
  }

  /** Entries waiting (not yet started). */
  get size (): number { return this.queue.size }

  has (key: string): boolean { return this.queue.has(key) }

  /** Queue `item` under `key` (a key already waiting keeps its place). */
  push (key: string, item: T): void {
    if (!this.queue.has(key)) this.queue.set(key, { item, at: this.now() })
    this.pump()
  }

  /** Forget what waits (on stop: the next start's re-provide round announces it). */
  clear (): void {
    this.queue.clear()
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private pump (): void {
    while (this.running < this.init.concurrency && this.queue.size > 0) {
      const [key, { item, at }] = this.queue.entries().next().value as [string, { item: T, at: number }]
      const wait = at + this.init.deferMs - this.now()
      if (wait > 0 && this.init.busy?.() === true) {
        // builds first: look again in a second, or once the oldest has waited long enough
        if (this.timer === undefined) {
          this.timer = setTimeout(() => { this.timer = undefined; this.pump() }, Math.min(wait, 1000))
          this.timer.unref()
        }
        return
      }
      this.queue.delete(key)
      this.running++
      this.init.announce(item)
        .catch((err: Error) => { log('announcing %s: %s', key, err.message) })
        .finally(() => { this.running--; this.pump() })
    }
  }
}
