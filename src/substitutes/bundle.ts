// Closure bundles: one stream that carries the cached closures of several store paths, narinfo
// and NAR files together, references first. A builder uses it to take the .drv closures of the
// builds it is about to claim from the node that submitted them, instead of one DHT walk, two
// streams and a cache write per path. Nothing is believed because of who sent it: every narinfo
// must verify under a trusted key and every file against that narinfo, as in SwarmFetcher.
//
// Wire format of /<swarm>/closure/1.0.0 (frame = uint32 big-endian length + UTF-8 JSON, as in
// the NAR protocol):
//   request:  frame { hashParts: string[], maxFileBytes: number, maxBytes?: number }, then the
//             client half-closes
//   response: per path of the union of the closures, references before referrers:
//               frame { hashPart, narinfo: <bytes>, files: [{ compression, size }] },
//               then the narinfo bytes, then the file's bytes (one file: the cheapest to
//               unpack of the narinfo's, uncompressed first);
//             a path held but whose file is over maxFileBytes, or would take the response
//             past maxBytes: frame { hashPart, skipped: true };
//             last: frame { end: true, missing: [requested hash parts not held] }
import { logger } from '@libp2p/logger'
import type { AbortOptions, Connection, PeerId, Stream } from '@libp2p/interface'
import { cheapestToUnpack, verifyBytes, type BinaryCache, type CacheEntry } from '../cache/index.js'
import { parseCompression } from '../nar/index.js'
import { parseNarinfo, verifyNarinfo, type Narinfo, type PublicKey } from '../narinfo/index.js'
import { CoalescingSender, encodeJsonFrame, isStorePathHashPart, MAX_NARINFO_SIZE, ProtocolError, readFrameJson, sendWithBackpressure, StreamReader } from '../transfer/index.js'
import { BundleProtocolError, BundleVerifyError } from './errors.js'

const log = logger('guix-swarm:substitutes:bundle')

/** Paths a request may name (a scheduler asks for one batch of builds' .drv files). */
export const MAX_BUNDLE_REQUEST = 256
/** Paths a response may carry: a closure of .drv files and sources, not a whole system. */
export const MAX_BUNDLE_ENTRIES = 4096
/** Files larger than this go the usual way (ranged, resumable, several providers). */
export const DEFAULT_BUNDLE_MAX_FILE = 1024 * 1024
/** What a client holds in memory from one response. */
const MAX_TAKE_BYTES = 64 * 1024 * 1024
const REQUEST_TIMEOUT_MS = 10_000
/** Entries checked at once while the next ones arrive (a compressed one runs a decompressor). */
const CHECK_CONCURRENCY = 16
/** Files up to this size go into a bundle read at once; larger ones stream. */
const INLINE_FILE_BYTES = 64 * 1024

export interface BundleComponents {
  libp2p: {
    handle: (protocol: string, handler: (stream: Stream, connection: Connection) => void, options?: { runOnLimitedConnection?: boolean }) => Promise<void>
    unhandle: (protocol: string) => Promise<void>
    dialProtocol: (peer: PeerId, protocols: string | string[], options?: AbortOptions) => Promise<Stream>
  }
  cache: BinaryCache
  trusted: () => readonly PublicKey[]
  /**
   * Settles once a path this node is still adding to its cache is there (its publication ended,
   * either way); undefined when none is under way. A request for it waits instead of finding it
   * missing: a submitter's builds go out while their .drv closures are still being published.
   */
  publishing?: (hashPart: string) => Promise<unknown> | undefined
}

/** How long a request waits for paths still being published before it is answered without them. */
export const BUNDLE_PUBLISH_WAIT_MS = 30_000

export interface BundleFetchOptions {
  signal?: AbortSignal
  /** Files larger than this are left out (default DEFAULT_BUNDLE_MAX_FILE). */
  maxFileBytes?: number
  /** Files past this many bytes in all are left out (default and most: 64 MiB). */
  maxBytes?: number
}

/** A verified entry held in memory (ClosureBundles.take). */
export interface TakenEntry {
  narinfoText: string
  narinfo: Narinfo
  /** The NAR, decompressed and checked against NarHash and NarSize. */
  nar: Buffer
}

export interface BundleTaken {
  /** References before referrers. */
  entries: TakenEntry[]
  /** Hash parts the peer held but did not send (files too large): fetch them the usual way. */
  skipped: string[]
  /** Requested hash parts the peer does not hold. */
  missing: string[]
}

type EntryHeader = { hashPart: string, narinfo: number, files: Array<{ compression: string, size: number }> }
type Frame = EntryHeader | { hashPart: string, skipped: true } | { end: true, missing: string[] }

/** The NAR protocol's frames, its framing errors told as this protocol's. */
async function readFrame (reader: StreamReader, where: string): Promise<Record<string, unknown>> {
  try {
    return await readFrameJson(reader, where)
  } catch (err) {
    if (err instanceof ProtocolError) throw new BundleProtocolError(err.message)
    throw err
  }
}

function isSize (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

function parseFrame (m: Record<string, unknown>): Frame {
  if (m.end === true) {
    if (!Array.isArray(m.missing) || !m.missing.every((h) => typeof h === 'string' && isStorePathHashPart(h))) throw new BundleProtocolError('end frame: missing must be a list of hash parts')
    return { end: true, missing: m.missing as string[] }
  }
  if (typeof m.hashPart !== 'string' || !isStorePathHashPart(m.hashPart)) throw new BundleProtocolError('entry frame: bad hashPart')
  if (m.skipped === true) return { hashPart: m.hashPart, skipped: true }
  if (!isSize(m.narinfo) || m.narinfo === 0 || m.narinfo > MAX_NARINFO_SIZE) throw new BundleProtocolError(`entry ${m.hashPart}: bad narinfo size`)
  if (!Array.isArray(m.files) || m.files.length === 0 || m.files.length > 8) throw new BundleProtocolError(`entry ${m.hashPart}: files must list 1..8 files`)
  const files = m.files.map((f: unknown) => {
    const r = f as Record<string, unknown>
    if (typeof r !== 'object' || r === null || typeof r.compression !== 'string' || !isSize(r.size)) throw new BundleProtocolError(`entry ${String(m.hashPart)}: bad file`)
    return { compression: parseCompression(r.compression), size: r.size }
  })
  return { hashPart: m.hashPart, narinfo: m.narinfo, files }
}

/** Serves and fetches closure bundles for one node. */
export class ClosureBundles {
  private started = false
  /** Responses that failed verification, by reason (status, metrics). */
  readonly rejected = { badNarinfo: 0, badFile: 0, protocol: 0 }
  served = 0
  /** Requests refused as malformed (or never sent). */
  badRequests = 0

  constructor (private readonly components: BundleComponents, private readonly protocol: string) {}

  async start (): Promise<void> {
    if (this.started) return
    await this.components.libp2p.handle(this.protocol, (stream, connection) => {
      this.serve(stream, connection).catch((err: Error) => {
        log('serving a bundle to %p failed: %s: %s', connection.remotePeer, err.name, err.message)
        stream.abort(err)
      })
    }, { runOnLimitedConnection: false })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.components.libp2p.unhandle(this.protocol).catch(() => {})
  }

  // ---------------------------------------------------------------------------- serving

  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const reader = new StreamReader(stream, { highWaterMark: 64 * 1024 })
    let request: { hashParts: string[], maxFileBytes: number, maxBytes: number }
    let timer: NodeJS.Timeout | undefined
    try {
      const m = await Promise.race([
        readFrame(reader, 'bundle request'),
        new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new BundleProtocolError(`no request within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS) })
      ])
      if (!Array.isArray(m.hashParts) || m.hashParts.length === 0 || m.hashParts.length > MAX_BUNDLE_REQUEST ||
        !m.hashParts.every((h) => typeof h === 'string' && isStorePathHashPart(h))) throw new BundleProtocolError(`hashParts must be 1..${MAX_BUNDLE_REQUEST} hash parts`)
      if (!isSize(m.maxFileBytes)) throw new BundleProtocolError('maxFileBytes must be a size')
      if (m.maxBytes !== undefined && !isSize(m.maxBytes)) throw new BundleProtocolError('maxBytes must be a size')
      request = { hashParts: m.hashParts as string[], maxFileBytes: m.maxFileBytes, maxBytes: (m.maxBytes as number | undefined) ?? Number.MAX_SAFE_INTEGER }
    } catch (err) {
      this.badRequests++
      throw err
    } finally {
      clearTimeout(timer)
      reader.release()
    }
    const { cache } = this.components
    await this.publishedOrLate(request.hashParts)
    const storeDir = cache.storeDir
    const sent = new Set<string>()
    const missing: string[] = []
    let entries = 0
    let budget = request.maxBytes
    // most entries are a few hundred bytes: gathered into frames of up to 64 KiB
    const out = new CoalescingSender(stream)
    // depth-first, references first; an explicit stack keeps a deep chain off the call stack
    const emit = async (root: string): Promise<boolean> => {
      const stack: Array<{ hashPart: string, entry?: CacheEntry, refs?: string[] }> = [{ hashPart: root }]
      const onStack = new Set<string>([root])
      while (stack.length > 0) {
        const top = stack[stack.length - 1]
        if (top.refs === undefined) {
          top.entry = await cache.getEntry(top.hashPart)
          if (top.entry === undefined) {
            stack.pop()
            if (top.hashPart === root) return false
            continue // a reference this node does not hold: the client's fallback finds it
          }
          top.refs = parseNarinfo(top.entry.narinfo, { storeDir }).references.map((r) => r.slice(0, 32)).reverse()
        }
        const next = top.refs.pop()
        if (next !== undefined) {
          if (!sent.has(next) && !onStack.has(next)) { onStack.add(next); stack.push({ hashPart: next }) }
          continue
        }
        stack.pop()
        if (sent.has(top.hashPart) || top.entry === undefined) continue
        sent.add(top.hashPart)
        if (++entries > MAX_BUNDLE_ENTRIES) return true
        budget -= await this.sendEntry(out, top.entry, Math.min(request.maxFileBytes, budget))
      }
      return true
    }
    for (const h of request.hashParts) {
      if (sent.has(h)) continue
      if (!await emit(h)) missing.push(h)
      if (entries > MAX_BUNDLE_ENTRIES) break
    }
    await out.write(encodeJsonFrame({ end: true, missing }))
    await out.flush()
    await stream.close()
    this.served++
    log('sent %d path(s) to %p for %d requested (%d missing)', sent.size, connection.remotePeer, request.hashParts.length, missing.length)
  }

  /** Wait (at most BUNDLE_PUBLISH_WAIT_MS) for the requested paths this node is still publishing. */
  private async publishedOrLate (hashParts: string[]): Promise<void> {
    const publishing = this.components.publishing
    if (publishing === undefined) return
    const waits = [...new Set(hashParts.map((h) => publishing(h)).filter((p): p is Promise<unknown> => p !== undefined))]
    if (waits.length === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled(waits),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, BUNDLE_PUBLISH_WAIT_MS) })
    ]).finally(() => { clearTimeout(timer) })
  }

  /** One entry with its cheapest file, or a `skipped` frame when that is over `maxFileBytes`. Returns the file bytes sent. */
  private async sendEntry (out: CoalescingSender, entry: CacheEntry, maxFileBytes: number): Promise<number> {
    const { cache } = this.components
    const f = cheapestToUnpack(entry.files)
    // most of a bundle is files of a few KiB: read at once (the rest streams)
    const inline = Math.min(INLINE_FILE_BYTES, maxFileBytes)
    const whole = f !== undefined && f.fileSize <= inline ? cache.readSmallFile(f.url, inline) : undefined
    const size = whole?.length ?? (f === undefined ? undefined : await cache.statFile(f.url))
    if (f === undefined || size === undefined || size > maxFileBytes) {
      await out.write(encodeJsonFrame({ hashPart: entry.hashPart, skipped: true }))
      return 0
    }
    const narinfo = Buffer.from(entry.narinfo, 'utf8')
    await out.write(encodeJsonFrame({ hashPart: entry.hashPart, narinfo: narinfo.length, files: [{ compression: f.compression, size }] }))
    await out.write(narinfo)
    if (whole !== undefined) {
      await out.write(whole)
      return size
    }
    let left = size
    for await (const chunk of await cache.openFile(f.url)) {
      const b = chunk as Buffer
      const take = b.subarray(0, Math.min(b.length, left))
      left -= take.length
      await out.write(take)
      if (left === 0) break
    }
    if (left !== 0) throw new BundleProtocolError(`${f.url} ended ${left} bytes short of its size`)
    return size
  }

  // ---------------------------------------------------------------------------- fetching

  /**
   * Ask `peer` for the closures of `hashParts` (store path hash parts in the cache's store); the
   * entries that verify come back in memory, NARs decompressed, references first. Not cached nor
   * announced: this is for what the node only needs in its store (a build's .drv closure, which
   * its submitter serves), where a cache copy would cost disk writes and two DHT announcements
   * per path. Throws BundleVerifyError when the peer sends a narinfo or file that does not
   * verify, BundleProtocolError when it breaks the format.
   */
  async take (peer: PeerId, hashParts: string[], opts: BundleFetchOptions = {}): Promise<BundleTaken> {
    const { cache } = this.components
    const out: BundleTaken = { entries: [], skipped: [], missing: [] }
    if (hashParts.length === 0) return out
    if (hashParts.length > MAX_BUNDLE_REQUEST) throw new BundleProtocolError(`at most ${MAX_BUNDLE_REQUEST} paths per bundle, got ${hashParts.length}`)
    const maxFileBytes = opts.maxFileBytes ?? DEFAULT_BUNDLE_MAX_FILE
    const maxBytes = Math.min(MAX_TAKE_BYTES, opts.maxBytes ?? MAX_TAKE_BYTES)
    const stream = await this.components.libp2p.dialProtocol(peer, this.protocol, { signal: opts.signal })
    const reader = new StreamReader(stream, { highWaterMark: 4 * 1024 * 1024 })
    const pending: Array<Promise<TakenEntry>> = []
    let bytes = 0
    try {
      await sendWithBackpressure(stream, encodeJsonFrame({ hashParts, maxFileBytes, maxBytes }), opts.signal)
      await stream.close({ signal: opts.signal })
      for (let n = 0; ; n++) {
        opts.signal?.throwIfAborted()
        if (n > MAX_BUNDLE_ENTRIES + 1) throw new BundleProtocolError(`more than ${MAX_BUNDLE_ENTRIES} entries`)
        const frame = parseFrame(await readFrame(reader, 'bundle entry'))
        if ('end' in frame) { out.missing = frame.missing; break }
        if ('skipped' in frame) { out.skipped.push(frame.hashPart); continue }
        for (const f of frame.files) {
          if (f.size > maxFileBytes) throw new BundleProtocolError(`entry ${frame.hashPart}: a ${f.size}-byte file over the ${maxFileBytes} asked for`)
          bytes += f.size
        }
        if (bytes > maxBytes) throw new BundleProtocolError(`response over ${maxBytes} bytes`)
        const text = Buffer.from(await reader.readExact(frame.narinfo, `narinfo of ${frame.hashPart}`)).toString('utf8')
        const v = verifyNarinfo(text, this.components.trusted(), { storeDir: cache.storeDir })
        const got = v.narinfo?.storePath.slice(cache.storeDir.length + 1, cache.storeDir.length + 33)
        if (!v.ok || got !== frame.hashPart) {
          this.rejected.badNarinfo++
          throw new BundleVerifyError(`narinfo of ${frame.hashPart} from ${peer.toString()} not believed: ${v.ok ? 'it is the narinfo of another path' : v.message}`)
        }
        const narinfo = v.narinfo
        const compression = frame.files[0].compression
        if (!narinfo.urls.some((u) => (u.compression ?? 'none') === compression)) throw new BundleVerifyError(`entry ${frame.hashPart} from ${peer.toString()}: a ${compression} file the narinfo has no URL for`)
        // one file is enough to have the NAR: the first, any others are read past
        const file = await reader.readExact(frame.files[0].size, `file of ${frame.hashPart}`)
        for (const f of frame.files.slice(1)) await skip(reader, f.size, frame.hashPart)
        // the bytes are read in order; checking them (a decompressor for a compressed one)
        // overlaps with the next entries, and the results are taken in order
        const checking = (async (): Promise<TakenEntry> => {
          try {
            const nar = await verifyBytes(narinfo, parseCompression(compression), file, `${compression} file of ${narinfo.storePath} from ${peer.toString()}`)
            return { narinfoText: text, narinfo, nar }
          } catch (err) {
            this.rejected.badFile++
            throw new BundleVerifyError(`${compression} file of ${narinfo.storePath} from ${peer.toString()} does not verify: ${(err as Error).name}: ${(err as Error).message}`)
          }
        })()
        checking.catch(() => {}) // awaited below, in order
        pending.push(checking)
        if (pending.length >= CHECK_CONCURRENCY) out.entries.push(await (pending.shift() as Promise<TakenEntry>))
      }
      for (const p of pending.splice(0)) out.entries.push(await p)
    } catch (err) {
      if (err instanceof BundleProtocolError) this.rejected.protocol++
      stream.abort(err as Error)
      await Promise.allSettled(pending)
      throw err
    } finally {
      reader.release()
    }
    log('bundle taken from %p: %d entries, %d skipped, %d missing', peer, out.entries.length, out.skipped.length, out.missing.length)
    return out
  }
}

async function skip (reader: StreamReader, size: number, hashPart: string): Promise<void> {
  for (let left = size; left > 0;) {
    const chunk = await reader.read(left)
    if (chunk === null) throw new BundleProtocolError(`stream ended ${left} bytes into a file of ${hashPart}`)
    left -= chunk.length
  }
}
