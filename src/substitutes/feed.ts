// Following the queue from the substitutes service: the queue may start after us (or not run at
// all), so a follower looks for it until it is there, then hands every build change — and, once,
// the builds that had already succeeded — to its consumer.
import type { BuildChange, BuildRecord } from '../crdt/index.js'

/** The queue, as the substitutes service sees it: an EventTarget of 'build' events (src/crdt QueueService). */
export interface BuildFeed extends EventTarget {
  /** Builds in a state, to catch up on start (src/crdt QueueService.byState). */
  byState?: (state: 'succeeded') => BuildRecord[]
}

const ATTACH_RETRY_MS = 2000

export class FeedFollower {
  private feed?: BuildFeed
  private retryTimer?: NodeJS.Timeout
  private running = false

  constructor (private readonly getFeed: () => BuildFeed | undefined, private readonly onRecord: (record: BuildRecord) => void, private readonly onAttach?: () => void) {}

  get following (): boolean { return this.feed != null }

  start (): void {
    this.running = true
    this.attach()
  }

  stop (): void {
    this.running = false
    clearTimeout(this.retryTimer)
    this.feed?.removeEventListener('build', this.onBuild)
    this.feed = undefined
  }

  private attach (): void {
    if (!this.running || this.feed != null) return
    const feed = this.getFeed()
    if (feed == null) {
      this.retryTimer = setTimeout(() => { this.attach() }, ATTACH_RETRY_MS)
      this.retryTimer.unref()
      return
    }
    this.feed = feed
    feed.addEventListener('build', this.onBuild)
    for (const r of feed.byState?.('succeeded') ?? []) this.onRecord(r)
    this.onAttach?.()
  }

  private readonly onBuild = (evt: Event): void => {
    this.onRecord((evt as CustomEvent<BuildChange>).detail.record)
  }
}

/** The outputs of a succeeded build (empty for anything else). */
export function successfulOutputs (record: BuildRecord): string[] {
  return Object.values(successfulAttempt(record)?.result?.outputs ?? {}).map((o) => o.path)
}

function successfulAttempt (record: BuildRecord): BuildRecord['attempts'][number] | undefined {
  if (record.phase !== 'succeeded') return undefined
  return record.attempts.find((a) => a.result?.outcome === 'success')
}

/**
 * Who built what, for the most recent successful builds: output hash part → the peer whose
 * attempt succeeded. A builder records its result as soon as its outputs are in its cache and
 * announces them in the DHT afterwards, so for a fresh output this is the quickest way to a
 * holder (and the only one until the announcement lands). A hint, never trusted: the narinfo
 * the holder sends is verified like any other. Bounded: older outputs are found through the DHT.
 */
export class RecentOutputs {
  private readonly holders = new Map<string, string>()

  constructor (private readonly max = 16_384, private readonly storeDirLength = '/gnu/store'.length) {}

  /** Index a build's outputs if it succeeded; returns the hash parts indexed. */
  add (record: BuildRecord): string[] {
    const attempt = successfulAttempt(record)
    if (attempt === undefined) return []
    const added: string[] = []
    for (const o of Object.values(attempt.result?.outputs ?? {})) {
      const hashPart = o.path.slice(this.storeDirLength + 1, this.storeDirLength + 33)
      this.holders.delete(hashPart) // re-inserted as the newest
      this.holders.set(hashPart, attempt.claimer)
      if (this.holders.size > this.max) this.holders.delete(this.holders.keys().next().value as string)
      added.push(hashPart)
    }
    return added
  }

  /** The peer (id string) that built the output with this hash part, if it is among the recent ones. */
  holder (hashPart: string): string | undefined {
    return this.holders.get(hashPart)
  }

  get size (): number { return this.holders.size }
}
