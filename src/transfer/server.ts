// Serving side of /guix-swarm/nar/1.0.0: narinfos and byte ranges of files from a NarSource.
import type { Connection, Stream, StreamHandler, StreamHandlerOptions, AbortOptions } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { ProtocolError, StreamClosedError } from './errors.js'
import { TransferMetrics } from './metrics.js'
import { MAX_NARINFO_SIZE, NAR_PROTOCOL, encodeFrame, readRequest, type Request, type ResponseHeader } from './protocol.js'
import type { NarSource, RandomAccessFile } from './source.js'
import { REQUEST_TIMEOUT_MS, SEND_BUFFERS_KEPT, SEND_CHUNK_SIZE } from './options.js'
import { SendBufferPool, type SendBufferPoolStats } from './send-buffers.js'
import { StreamReader, sendWithBackpressure } from './stream-io.js'

const log = logger('guix-swarm:transfer:server')

/** One read into a pooled buffer: `got` of the `want` bytes asked (fewer only at a short file). */
interface PooledRead { buffer: Uint8Array, got: number, want: number }

export interface NarTransferServerComponents {
  libp2p: {
    handle: (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) => Promise<void>
    unhandle: (protocol: string, options?: AbortOptions) => Promise<void>
  }
  source: NarSource
  metrics?: TransferMetrics
}

export interface NarTransferServerInit {
  /** Defaults to NAR_PROTOCOL; the node may prefix its swarm name. */
  protocol?: string
  maxInboundStreams?: number
  requestTimeoutMs?: number
  /** Bytes per read and send when the source offers positional reads (default SEND_CHUNK_SIZE). */
  sendBufferSize?: number
  /** Send buffers kept for reuse between sends (default SEND_BUFFERS_KEPT). */
  sendBuffersKept?: number
}

export class NarTransferServer {
  readonly protocol: string
  readonly metrics: TransferMetrics
  private readonly components: NarTransferServerComponents
  private readonly maxInboundStreams: number
  private readonly requestTimeoutMs: number
  private readonly sendBuffers: SendBufferPool
  private started = false

  constructor (components: NarTransferServerComponents, init: NarTransferServerInit = {}) {
    this.components = components
    this.protocol = init.protocol ?? NAR_PROTOCOL
    this.metrics = components.metrics ?? new TransferMetrics()
    this.maxInboundStreams = init.maxInboundStreams ?? 64
    this.requestTimeoutMs = init.requestTimeoutMs ?? REQUEST_TIMEOUT_MS
    this.sendBuffers = new SendBufferPool(init.sendBufferSize ?? SEND_CHUNK_SIZE, init.sendBuffersKept ?? SEND_BUFFERS_KEPT)
  }

  /** How the reused send buffers fare (allocated stays small when buffers come back). */
  sendBufferStats (): SendBufferPoolStats {
    return this.sendBuffers.stats()
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.components.libp2p.handle(this.protocol, (stream, connection) => {
      // Never let one peer's stream take the process down: every failure ends here.
      this.handle(stream, connection).catch((err: Error) => {
        // A peer hanging up mid-range (cancel, resume elsewhere) is routine, not an error.
        if (err instanceof StreamClosedError) log('stream from %p ended early: %s', connection.remotePeer, err.message)
        else log.error('stream from %p failed: %s', connection.remotePeer, err.message)
        if (stream.status === 'open') stream.abort(err)
      })
    }, { maxInboundStreams: this.maxInboundStreams })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.components.libp2p.unhandle(this.protocol)
  }

  private async handle (stream: Stream, connection: Connection): Promise<void> {
    const reader = new StreamReader(stream, { highWaterMark: 64 * 1024 })
    const timer = setTimeout(() => {
      stream.abort(new ProtocolError(`no request from ${connection.remotePeer.toString()} within ${this.requestTimeoutMs} ms`))
    }, this.requestTimeoutMs)
    let request: Request
    try {
      request = await readRequest(reader)
    } catch (err) {
      clearTimeout(timer)
      reader.release()
      if (!(err instanceof ProtocolError)) throw err
      this.metrics.badRequests++
      log('bad request from %p: %s: %s', connection.remotePeer, err.name, err.message)
      await this.refuse(stream, { status: 'error', code: 'bad-request', message: `${err.name}: ${err.message}` })
      return
    }
    clearTimeout(timer)
    // The request is all we read; what the peer may still send is not our business.
    reader.release()
    this.metrics.requestsServed++
    if (request.type === 'narinfo') {
      await this.serveNarinfo(stream, request.hashPart)
    } else {
      await this.serveFile(stream, request.key, request.offset, request.length)
    }
  }

  /** Answer with an error header, then end the stream whatever the peer does. */
  private async refuse (stream: Stream, header: ResponseHeader): Promise<void> {
    try {
      if (stream.status === 'open') {
        await sendWithBackpressure(stream, encodeFrame(header))
        await stream.close({ signal: AbortSignal.timeout(5000) })
      }
    } catch (err) {
      log('could not deliver refusal: %s', (err as Error).message)
    }
    if (stream.status === 'open') stream.abort(new ProtocolError('request refused'))
  }

  private async serveNarinfo (stream: Stream, hashPart: string): Promise<void> {
    const text = await this.components.source.openNarinfo(hashPart)
    if (text === undefined) {
      await this.refuse(stream, { status: 'not-found' })
      return
    }
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text
    if (bytes.length > MAX_NARINFO_SIZE) {
      await this.refuse(stream, { status: 'error', code: 'internal', message: `narinfo for ${hashPart} is larger than ${MAX_NARINFO_SIZE} bytes` })
      return
    }
    // header and narinfo in one frame (see CoalescingSender)
    await sendWithBackpressure(stream, Buffer.concat([encodeFrame({ status: 'ok', size: bytes.length }), bytes]))
    this.metrics.bytesServed += bytes.length
    await stream.close()
  }

  private async serveFile (stream: Stream, key: string, offset: number, requested: number | undefined): Promise<void> {
    const total = await this.components.source.statFile(key)
    if (total === undefined) {
      await this.refuse(stream, { status: 'not-found' })
      return
    }
    const length = requested ?? Math.max(0, total - offset)
    if (offset > total || offset + length > total) {
      await this.refuse(stream, { status: 'error', code: 'range', message: `range ${offset}+${length} outside ${key} (${total} bytes)` })
      return
    }
    await sendWithBackpressure(stream, encodeFrame({ status: 'ok', size: length, total }))
    const file = length > 0 ? await this.components.source.openRandomAccess?.(key) : undefined
    const sent = file !== undefined
      ? await this.sendFromFile(stream, key, file, offset, length)
      : await this.sendFromIterable(stream, key, offset, length)
    if (sent !== length) {
      // A short source must not look like a complete range: reset instead of closing.
      throw new StreamClosedError(`source gave ${sent} of ${length} bytes of ${key}`)
    }
    await stream.close()
    log.trace('served %s %d+%d', key, offset, length)
  }

  /**
   * Read into pooled buffers and send them, one read ahead of the send. A buffer goes back to
   * the pool once noise has encrypted it (send-buffers.ts), so a steady transfer allocates
   * nothing. In flight at most: what the stream holds after a refused send, plus one read.
   */
  private async sendFromFile (stream: Stream, key: string, file: RandomAccessFile, offset: number, length: number): Promise<number> {
    const pool = this.sendBuffers
    let requested = 0
    const readNext = async (): Promise<PooledRead> => {
      const buffer = pool.take()
      const want = Math.min(buffer.length, length - requested)
      const position = offset + requested
      requested += want
      let got = 0
      try {
        while (got < want) {
          const { bytesRead } = await file.read(buffer, got, want - got, position + got)
          if (bytesRead === 0) break
          got += bytesRead
        }
      } catch (err) {
        pool.put(buffer)
        throw err
      }
      return { buffer, got, want }
    }
    const ahead = (): Promise<PooledRead> => {
      const p = readNext()
      // Its failure surfaces where it is awaited; until then it must not count as unhandled.
      p.catch(() => {})
      return p
    }
    let sent = 0
    let next: Promise<PooledRead> | undefined = ahead()
    try {
      while (next !== undefined) {
        const read: PooledRead = await next
        const { buffer, got } = read
        next = got === read.want && requested < length ? ahead() : undefined
        if (got === 0) {
          pool.put(buffer)
          break
        }
        if (stream.status !== 'open') {
          pool.put(buffer)
          throw new StreamClosedError(`stream closed after ${sent} of ${length} bytes of ${key}`)
        }
        pool.lend(buffer, got)
        await sendWithBackpressure(stream, buffer.subarray(0, got))
        sent += got
        this.metrics.bytesServed += got
      }
    } finally {
      // A read still running when the send failed: let it end before the file closes.
      await next?.then(({ buffer }) => { pool.put(buffer) }, () => {})
      await file.close()
    }
    return sent
  }

  /** The source's own chunks, sent as they come (sources without positional reads). */
  private async sendFromIterable (stream: Stream, key: string, offset: number, length: number): Promise<number> {
    let sent = 0
    const source = await this.components.source.openFile(key, offset, length)
    for await (const chunk of source) {
      const take = Math.min(chunk.length, length - sent)
      if (take <= 0) break
      if (stream.status !== 'open') throw new StreamClosedError(`stream closed after ${sent} of ${length} bytes of ${key}`)
      await sendWithBackpressure(stream, take === chunk.length ? chunk : chunk.subarray(0, take))
      sent += take
      this.metrics.bytesServed += take
      if (sent === length) break
    }
    return sent
  }
}
