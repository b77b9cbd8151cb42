// Serving side of /guix-swarm/nar/1.0.0: narinfos and byte ranges of files from a NarSource.
import type { Connection, Stream, StreamHandler, StreamHandlerOptions, AbortOptions } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { ProtocolError, StreamClosedError } from './errors.js'
import { TransferMetrics } from './metrics.js'
import { MAX_NARINFO_SIZE, NAR_PROTOCOL, encodeFrame, readRequest, type Request, type ResponseHeader } from './protocol.js'
import type { NarSource } from './source.js'
import { REQUEST_TIMEOUT_MS } from './options.js'
import { StreamReader, sendWithBackpressure } from './stream-io.js'

const log = logger('guix-swarm:transfer:server')

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
}

export class NarTransferServer {
  readonly protocol: string
  readonly metrics: TransferMetrics
  private readonly components: NarTransferServerComponents
  private readonly maxInboundStreams: number
  private readonly requestTimeoutMs: number
  private started = false

  constructor (components: NarTransferServerComponents, init: NarTransferServerInit = {}) {
    this.components = components
    this.protocol = init.protocol ?? NAR_PROTOCOL
    this.metrics = components.metrics ?? new TransferMetrics()
    this.maxInboundStreams = init.maxInboundStreams ?? 64
    this.requestTimeoutMs = init.requestTimeoutMs ?? REQUEST_TIMEOUT_MS
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
    await sendWithBackpressure(stream, encodeFrame({ status: 'ok', size: bytes.length }))
    await sendWithBackpressure(stream, bytes)
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
    if (sent !== length) {
      // A short source must not look like a complete range: reset instead of closing.
      throw new StreamClosedError(`source gave ${sent} of ${length} bytes of ${key}`)
    }
    await stream.close()
    log.trace('served %s %d+%d', key, offset, length)
  }
}
