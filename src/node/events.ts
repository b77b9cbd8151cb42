// Server-sent events of build changes (`GET /api/events`, or `POST` with `{ids}` for long lists):
// a follower hears of each change as the replica applies it, instead of asking for every build
// again and again (`submit --follow` of 200 builds used to send 400 requests a second).
//
// Stream: `event: ready` ({builds}) once the subscription is live; then, for a subscription to
// ids, one `event: build` (a BuildView) per id as it is now; then `event: build` per change.
// Changes within one turn of the event loop are sent once, as the build is after them. Views of
// subscribed builds are looked at again every `recheckMs` too, because some changes come with
// time and no op (a lapsed lease). Comments (`: keepalive`) keep idle streams open. A client that
// reads too slowly gets `event: overflow` and the stream ends: it reconnects and reads afresh.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { logger } from '@libp2p/logger'
import type { BuildChange, BuildView, QueueService } from '../crdt/index.js'
import { HttpError, readJsonBody } from '../http/index.js'

const log = logger('guix-swarm:node:events')

export interface BuildEventsOptions {
  /** Comment sent on an idle stream this often (default 15 s). */
  keepaliveMs?: number
  /** Subscribed builds looked at again this often for changes that come with time (default 5 s). */
  recheckMs?: number
  /** A stream with more than this many bytes unsent is ended with `overflow` (default 4 MiB). */
  maxBufferedBytes?: number
  /** Streams open at once (default 64); more get 503. */
  maxSubscribers?: number
  /** Ids one subscription may name (default 10 000, a submit's most). */
  maxIds?: number
}

/** The events endpoint is at its limit of open streams. */
export class TooManySubscribersError extends HttpError {
  override name = 'TooManySubscribersError'
  constructor (max: number) { super(`already ${max} event streams open; try again later`, 503) }
}

/** `ids` is malformed or too long. */
export class InvalidSubscriptionError extends HttpError {
  override name = 'InvalidSubscriptionError'
  constructor (message: string) { super(message, 400) }
}

interface Subscriber {
  res: ServerResponse
  /** The builds asked for; undefined: all of them. */
  ids?: ReadonlySet<string>
  /** JSON of the view last sent per subscribed id (only for subscriptions to ids: bounded by them). */
  sent: Map<string, string>
  /** Unsent bytes past which the stream overflows: maxBufferedBytes, more for a large first snapshot. */
  limit: number
}

const MAX_BODY_BYTES = 2 * 1024 * 1024

export class BuildEvents {
  private readonly subscribers = new Set<Subscriber>()
  private readonly changed = new Set<string>()
  private flushing = false
  private keepalive?: NodeJS.Timeout
  private recheck?: NodeJS.Timeout
  private readonly opts: Required<BuildEventsOptions>

  constructor (private readonly queue: QueueService, opts: BuildEventsOptions = {}) {
    this.opts = { keepaliveMs: 15_000, recheckMs: 5_000, maxBufferedBytes: 4 * 1024 * 1024, maxSubscribers: 64, maxIds: 10_000, ...opts }
  }

  start (): void {
    this.queue.addEventListener('build', this.onChange)
  }

  /** Ends every open stream (the node is stopping). */
  stop (): void {
    this.queue.removeEventListener('build', this.onChange)
    for (const s of [...this.subscribers]) this.drop(s)
    this.changed.clear()
  }

  get open (): number { return this.subscribers.size }

  /** The route handler: GET with `?ids=a,b`, or POST with `{"ids": [...]}`; neither: every build. */
  async handle (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const ids = req.method === 'POST' ? await this.idsFromBody(req) : this.idsFromQuery(url)
    if (this.subscribers.size >= this.opts.maxSubscribers) throw new TooManySubscribersError(this.opts.maxSubscribers)
    const initial: string[] = []
    // an unknown id throws the queue's UnknownBuildError, before anything is sent
    for (const id of ids ?? []) initial.push(JSON.stringify(this.queue.view(id)))
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no' // a proxy in front must not hold events back
    })
    // the views of up to maxIds builds go out at once: never an overflow by themselves
    const snapshot = initial.reduce((n, text) => n + text.length + 20, 0)
    const sub: Subscriber = { res, ...(ids !== undefined ? { ids } : {}), sent: new Map(), limit: this.opts.maxBufferedBytes + 2 * snapshot }
    this.subscribers.add(sub)
    res.on('close', () => { this.subscribers.delete(sub); this.idle() })
    this.write(sub, 'ready', JSON.stringify({ builds: this.queue.replica.state.size }))
    let i = 0
    for (const id of ids ?? []) {
      sub.sent.set(id, initial[i])
      this.write(sub, 'build', initial[i++])
    }
    this.timers()
    log('event stream opened (%s); %d open', ids === undefined ? 'all builds' : `${ids.size} build(s)`, this.subscribers.size)
  }

  private idsFromQuery (url: URL): ReadonlySet<string> | undefined {
    const text = url.searchParams.get('ids')
    if (text === null || text === '') return undefined
    return this.checkIds(text.split(','))
  }

  private async idsFromBody (req: IncomingMessage): Promise<ReadonlySet<string> | undefined> {
    const body = await readJsonBody(req, MAX_BODY_BYTES)
    const ids = (body as { ids?: unknown } | null)?.ids
    if (ids === undefined) return undefined
    if (!Array.isArray(ids)) throw new InvalidSubscriptionError('expected {"ids": [<build id>, ...]}')
    return this.checkIds(ids)
  }

  private checkIds (ids: unknown[]): ReadonlySet<string> {
    if (ids.length > this.opts.maxIds) throw new InvalidSubscriptionError(`at most ${this.opts.maxIds} ids per event stream, got ${ids.length}`)
    for (const id of ids) {
      if (typeof id !== 'string' || !/^[0-9a-zA-Z_-]{1,128}$/.test(id)) throw new InvalidSubscriptionError(`not a build id: ${JSON.stringify(id)?.slice(0, 80) ?? String(id)}`)
    }
    return new Set(ids as string[])
  }

  private readonly onChange = (evt: Event): void => {
    if (this.subscribers.size === 0) return
    this.changed.add((evt as CustomEvent<BuildChange>).detail.record.id)
    if (this.flushing) return
    this.flushing = true
    // a batch of ops changes a build several times in one turn: send it once, as it ends up
    setImmediate(() => { this.flushing = false; this.flush() })
  }

  private flush (): void {
    const ids = [...this.changed]
    this.changed.clear()
    this.sendViews((sub) => sub.ids === undefined ? ids : ids.filter((id) => sub.ids?.has(id) === true))
  }

  /** Subscribed builds again: a lease that lapsed changes a view with no op. */
  private recheckAll (): void {
    this.sendViews((sub) => sub.ids ?? [])
  }

  /** The views of the builds `pick` names for each subscriber, each view made once. */
  private sendViews (pick: (sub: Subscriber) => Iterable<string>): void {
    const json = new Map<string, string | undefined>()
    for (const sub of [...this.subscribers]) {
      for (const id of pick(sub)) {
        if (!json.has(id)) json.set(id, this.viewJson(id))
        const text = json.get(id)
        if (text !== undefined) this.send(sub, id, text)
      }
    }
  }

  private viewJson (id: string): string | undefined {
    let v: BuildView
    try { v = this.queue.view(id) } catch { return undefined } // compacted away meanwhile
    return JSON.stringify(v)
  }

  private send (sub: Subscriber, id: string, text: string): void {
    if (sub.ids !== undefined) {
      if (sub.sent.get(id) === text) return
      sub.sent.set(id, text)
    }
    this.write(sub, 'build', text)
  }

  private write (sub: Subscriber, event: string, data: string): void {
    if (sub.res.writableLength > sub.limit) {
      log('event stream overflowed (%d bytes unsent): ended', sub.res.writableLength)
      sub.res.end('event: overflow\ndata: {}\n\n')
      this.subscribers.delete(sub)
      return
    }
    sub.res.write(`event: ${event}\ndata: ${data}\n\n`)
  }

  private drop (sub: Subscriber): void {
    this.subscribers.delete(sub)
    sub.res.end()
  }

  private timers (): void {
    if (this.keepalive !== undefined) return
    this.keepalive = setInterval(() => { for (const s of this.subscribers) s.res.write(': keepalive\n\n') }, this.opts.keepaliveMs)
    this.recheck = setInterval(() => { this.recheckAll() }, this.opts.recheckMs)
    this.keepalive.unref()
    this.recheck.unref()
  }

  /** No stream open: no timers. */
  private idle (): void {
    if (this.subscribers.size > 0) return
    clearInterval(this.keepalive)
    clearInterval(this.recheck)
    this.keepalive = undefined
    this.recheck = undefined
  }
}
