// The substitute server on the node's HTTP front: what `guix publish` serves and what Nix
// expects of a binary cache (FORMATS.md §3.4, §4.4). Narinfos always carry Content-Length (Guix
// pipelines and reads exactly that many bytes); a path nobody has is a 404, never a 5xx (Nix
// turns 5xx into a hard error after retries). A path the node lacks is fetched from the swarm
// and verified completely before a byte is sent (fetch-then-serve).
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { logger } from '@libp2p/logger'
import { CacheBadUrlPathError, type BinaryCache } from '../cache/index.js'
import { openForSend, sendFileRange, SEND_FILE_CHUNK, type HttpRouter, type RoutePattern } from '../http/index.js'
import type { Acquired } from './fetch.js'
import type { LiveNar } from './live.js'
import type { Readable } from 'node:stream'

const log = logger('guix-swarm:substitutes:http')

/** Guix caches a 200 for max-age (else 36 h); a narinfo never changes once signed. */
export const NARINFO_MAX_AGE = 36 * 60 * 60
/** Short, so a path published a minute later is found (Guix: 2 min by default; Nix: its own negative TTL). */
export const NOT_FOUND_MAX_AGE = 60
const NARINFO_CACHE_CONTROL = `public, max-age=${NARINFO_MAX_AGE}`
/** NAR files are content-addressed by their URL's store path: immutable. */
export const NAR_MAX_AGE = 365 * 24 * 60 * 60

/** Narinfos kept in memory (about 1 KiB each): they are immutable once signed, and served far more often than NARs. */
const NARINFO_MEMO_ENTRIES = 20_000

const NARINFO_ROUTE = /^\/(?<hash>[0123456789abcdfghijklmnpqrsvwxyz]{32})\.narinfo$/
const NAR_ROUTE = '/nar/*'
const LOG_ROUTE = '/log/:drv'

interface NarinfoResponse { body: Buffer, headers: string[] }

/** Build logs by derivation basename; the scheduler plugs its log store in here later. */
export interface BuildLogSource {
  openLog: (drvBaseName: string) => Promise<{ size: number, stream: Readable } | undefined>
}

export interface SubstitutesHttpComponents {
  router: HttpRouter
  cache: BinaryCache
  /**
   * Make a path the node lacks servable: fetched into the cache, or (a large NAR) arriving and
   * readable while it does. Rejects when nobody has a trusted copy.
   */
  acquire: (hashPart: string) => Promise<Acquired>
  /** The large NAR of a path being served while it arrives, if any. */
  liveNar: (hashPart: string) => LiveNar | undefined
  guixPublicKey: string
  nixPublicKey: string
  logs?: BuildLogSource
}

export class SubstitutesHttp {
  private readonly patterns: RoutePattern[] = []
  /** Last time we recorded a serve of each entry; index writes are throttled to one a minute. */
  private readonly touched = new Map<string, number>()
  /**
   * hash part → the whole 200 response (body bytes and header list, built once), insertion-ordered
   * so the oldest goes first when full: a hit costs no allocation and no filesystem call.
   */
  private readonly memo = new Map<string, NarinfoResponse>()
  readonly counters = { narinfoHits: 0, narinfoFetched: 0, narinfoMisses: 0, narRequests: 0, narBytes: 0, narStreamed: 0, narStreamsCut: 0 }

  constructor (private readonly components: SubstitutesHttpComponents) {}

  start (): void {
    const add = (method: string, pattern: RoutePattern, handler: (req: IncomingMessage, res: ServerResponse, params: Record<string, string>) => Promise<void> | void): void => {
      this.components.router.route(method, pattern, handler)
      this.patterns.push(pattern)
    }
    add('GET', '/nix-cache-info', (_req, res) => { this.text(res, 200, this.components.cache.nixCacheInfo(), 'text/plain; charset=utf-8', 24 * 60 * 60) })
    add('GET', NARINFO_ROUTE, (_req, res, params) => this.narinfo(res, params.hash))
    add('GET', NAR_ROUTE, async (req, res, params) => { await this.nar(req, res, `nar/${params['*']}`) })
    add('GET', '/signing-key.pub', (_req, res) => { this.text(res, 200, this.components.guixPublicKey + '\n', 'text/plain; charset=utf-8', 3600) })
    add('GET', '/nix-key.pub', (_req, res) => { this.text(res, 200, this.components.nixPublicKey + '\n', 'text/plain; charset=utf-8', 3600) })
    add('GET', LOG_ROUTE, async (req, res, params) => { await this.log(req, res, params.drv) })
  }

  stop (): void {
    for (const p of this.patterns) this.components.router.unroute(p)
    this.patterns.length = 0
  }

  private text (res: ServerResponse, status: number, body: string, type: string, maxAge: number): void {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': `public, max-age=${maxAge}` })
    res.end(body)
  }

  private notFound (res: ServerResponse, what: string): void {
    this.text(res, 404, `${what} not found\n`, 'text/plain; charset=utf-8', NOT_FOUND_MAX_AGE)
  }

  /** Drop a removed entry's narinfo from memory (GC). */
  forget (hashPart: string): void {
    this.memo.delete(hashPart)
  }

  /** Keep narinfos the node already read (its cache listing at start) ready to serve. */
  prime (entries: Iterable<{ hashPart: string, narinfo: string }>): void {
    for (const e of entries) {
      if (this.memo.size >= NARINFO_MEMO_ENTRIES) return
      this.remember(e.hashPart, e.narinfo)
    }
  }

  private remember (hashPart: string, text: string): NarinfoResponse {
    if (this.memo.size >= NARINFO_MEMO_ENTRIES) this.memo.delete(this.memo.keys().next().value as string)
    const body = Buffer.from(text)
    const r = { body, headers: ['content-type', 'text/x-nix-narinfo', 'content-length', String(body.length), 'cache-control', NARINFO_CACHE_CONTROL] }
    this.memo.set(hashPart, r)
    return r
  }

  private narinfo (res: ServerResponse, hashPart: string): Promise<void> | undefined {
    const hit = this.memo.get(hashPart)
    if (hit !== undefined) {
      // the hot path (a client walking a closure): synchronous, nothing allocated but the response
      this.counters.narinfoHits++
      res.writeHead(200, hit.headers)
      res.end(hit.body)
      return undefined
    }
    return this.narinfoMiss(res, hashPart)
  }

  private async narinfoMiss (res: ServerResponse, hashPart: string): Promise<void> {
    const { cache } = this.components
    let text = await cache.getNarinfo(hashPart)
    if (text === undefined) {
      try {
        const got = await this.components.acquire(hashPart)
        if (got.kind === 'live') {
          // trusted and arriving: the client may ask for the NAR now (not remembered: not cached yet)
          this.counters.narinfoFetched++
          const body = Buffer.from(got.narinfoText)
          res.writeHead(200, ['content-type', 'text/x-nix-narinfo', 'content-length', String(body.length), 'cache-control', NARINFO_CACHE_CONTROL])
          res.end(body)
          return
        }
        text = await cache.getNarinfo(hashPart)
        this.counters.narinfoFetched++
      } catch (err) {
        // nobody has it, or nothing verified, or the swarm failed us: all "not available" to a client
        log('%s.narinfo not available: %s: %s', hashPart, (err as Error).name, (err as Error).message)
      }
      if (text === undefined) {
        this.counters.narinfoMisses++
        this.notFound(res, `${hashPart}.narinfo`)
        return
      }
    } else {
      this.counters.narinfoHits++
    }
    const r = this.remember(hashPart, text)
    res.writeHead(200, r.headers)
    res.end(r.body)
  }

  private async nar (req: IncomingMessage, res: ServerResponse, urlPath: string): Promise<void> {
    const { cache } = this.components
    this.counters.narRequests++
    let size: number | undefined
    try {
      size = await cache.statFile(urlPath)
    } catch (err) {
      if (err instanceof CacheBadUrlPathError) { this.notFound(res, urlPath); return }
      throw err
    }
    const hashPart = /\/([0123456789abcdfghijklmnpqrsvwxyz]{32})-[^/]+$/.exec(urlPath)?.[1]
    if (size === undefined && hashPart !== undefined && !await cache.has(hashPart)) {
      // arriving now (its narinfo was just served), or not asked for yet (a client that skipped
      // the narinfo, or asked another node for it)
      let live = this.components.liveNar(hashPart)
      if (live === undefined) {
        const got = await this.components.acquire(hashPart).catch(() => undefined)
        if (got?.kind === 'live') live = got.live
      }
      if (live !== undefined && live.url === urlPath && await this.serveLive(req, res, live)) return
      size = await cache.statFile(urlPath)
    }
    if (size === undefined) { this.notFound(res, urlPath); return }
    const range = parseRange(req.headers.range, size)
    const headers: Record<string, string | number> = {
      'content-type': 'application/x-nix-archive',
      'accept-ranges': 'bytes',
      'cache-control': `public, max-age=${NAR_MAX_AGE}, immutable`
    }
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': 0 })
      res.end()
      return
    }
    const start = range?.start ?? 0
    const end = range?.end ?? size - 1
    const length = size === 0 ? 0 : end - start + 1
    if (range != null) headers['content-range'] = `bytes ${start}-${end}/${size}`
    headers['content-length'] = length
    if (req.method === 'HEAD' || length === 0) {
      res.writeHead(range != null ? 206 : 200, headers)
      res.end()
      return
    }
    // statFile accepted urlPath, so it names a file of the cache's documented static layout
    let fd: number
    try {
      fd = await openForSend(join(cache.dir, urlPath))
    } catch {
      this.notFound(res, urlPath) // evicted between stat and open
      return
    }
    res.writeHead(range != null ? 206 : 200, headers)
    if (hashPart !== undefined) this.touch(hashPart)
    const sent = await sendFileRange(res, fd, { start, length })
    this.counters.narBytes += sent
    // fewer bytes: the client hung up, routine for substituters that cancel
    if (sent < length) log('%s: stream ended after %d of %d bytes', urlPath, sent, length)
  }

  /**
   * Serve a NAR while it arrives: everything the download released (all but its last bytes until
   * it verified); on a verification failure the response is destroyed, so the client never has a
   * complete body. False when the download ended before this reader could join (serve the cache).
   */
  private async serveLive (req: IncomingMessage, res: ServerResponse, live: LiveNar): Promise<boolean> {
    try {
      await live.attach()
    } catch {
      return false
    }
    try {
      const size = live.size
      const range = parseRange(req.headers.range, size)
      const headers: Array<string> = ['content-type', 'application/x-nix-archive', 'accept-ranges', 'bytes', 'cache-control', `public, max-age=${NAR_MAX_AGE}, immutable`]
      if (range === 'unsatisfiable') {
        res.writeHead(416, [...headers, 'content-range', `bytes */${size}`, 'content-length', '0'])
        res.end()
        return true
      }
      const start = range?.start ?? 0
      const end = range?.end ?? size - 1
      const length = end - start + 1
      if (range != null) headers.push('content-range', `bytes ${start}-${end}/${size}`)
      headers.push('content-length', String(length))
      res.writeHead(range != null ? 206 : 200, headers)
      if (req.method === 'HEAD') { res.end(); return true }
      this.counters.narStreamed++
      let pos = start
      const buf = Buffer.allocUnsafe(Math.min(SEND_FILE_CHUNK, length))
      // a client that leaves while the download stalls must not keep this reader waiting
      const gone = new AbortController()
      const onClose = (): void => { gone.abort() }
      res.once('close', onClose)
      try {
        while (pos <= end && !res.destroyed) {
          try {
            await live.wait(pos, gone.signal)
          } catch (err) {
            if (gone.signal.aborted) return true
            // the NAR did not verify (or no provider finished it): cut the client off mid-body
            this.counters.narStreamsCut++
            log('%s: cut after %d of %d bytes: %s', live.url, pos - start, length, (err as Error).message)
            res.destroy(err as Error)
            return true
          }
          const n = await live.read(buf, pos, Math.min(buf.length, live.releasable - pos, end + 1 - pos))
          if (n <= 0) { res.destroy(new Error(`${live.url}: temp file shorter than received`)); return true }
          pos += n
          this.counters.narBytes += n
          // the buffer is reused: wait until the socket took these bytes (or the client left)
          await new Promise<void>((resolve) => {
            if (gone.signal.aborted) { resolve(); return }
            const done = (): void => { gone.signal.removeEventListener('abort', done); resolve() }
            gone.signal.addEventListener('abort', done, { once: true })
            res.write(buf.subarray(0, n), done)
          })
        }
        if (!res.destroyed) res.end()
        return true
      } finally {
        res.off('close', onClose)
      }
    } finally {
      live.release()
    }
  }

  private touch (hashPart: string): void {
    const now = Date.now()
    if (now - (this.touched.get(hashPart) ?? 0) < 60_000) return
    this.touched.set(hashPart, now)
    this.components.cache.touch(hashPart).catch((err: Error) => { log('touch %s: %s', hashPart, err.message) })
  }

  private async log (req: IncomingMessage, res: ServerResponse, drv: string): Promise<void> {
    const found = await this.components.logs?.openLog(drv)
    if (found === undefined) { this.notFound(res, `log of ${drv}`); return }
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': found.size, 'cache-control': 'no-cache' })
    if (req.method === 'HEAD') { found.stream.destroy(); res.end(); return }
    await pipeline(found.stream, res).catch(() => {})
  }
}

/**
 * One `bytes=` range (RFC 9110 §14.1.2): undefined to serve the whole file (no header, a
 * multi-range or a unit we do not know), 'unsatisfiable' for 416, else inclusive bounds.
 */
export function parseRange (header: string | undefined, size: number): { start: number, end: number } | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m == null) return undefined
  const [, a, b] = m
  if (a === '' && b === '') return undefined
  if (a === '') {
    const n = Number(b)
    if (n === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(a)
  if (start >= size) return 'unsatisfiable'
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
  if (end < start) return undefined // invalid range: ignored, the whole file is served
  return { start, end }
}
