// Requesting side of /guix-swarm/nar/1.0.0: one request per stream.
import type { AbortOptions, PeerId, Stream } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { AllProvidersFailedError, MalformedFrameError, NoProvidersError, NotFoundError, OversizedFrameError, RemoteError, TruncatedStreamError } from './errors.js'
import { TransferMetrics } from './metrics.js'
import { MAX_NARINFO_SIZE, NAR_PROTOCOL, encodeFrame, readResponseHeader, type Request } from './protocol.js'
import { RECEIVE_HIGH_WATER_MARK } from './options.js'
import { StreamReader, sendWithBackpressure } from './stream-io.js'
import { fetchFile, type FetchFileOptions, type FetchResult } from './fetcher.js'

const log = logger('guix-swarm:transfer:client')

export interface TransferClientComponents {
  libp2p: {
    dialProtocol: (peer: PeerId, protocols: string | string[], options?: AbortOptions) => Promise<Stream>
  }
  metrics?: TransferMetrics
}

export interface TransferClientInit {
  /** Defaults to NAR_PROTOCOL; must match the server's. */
  protocol?: string
  receiveHighWaterMark?: number
}

/** An open `file` response: iterate it for exactly `size` bytes. */
export interface FileResponse extends AsyncIterable<Uint8Array> {
  /** Bytes in this response (the requested range). */
  readonly size: number
  /** Size of the whole file on the provider. */
  readonly total: number
  /** Give up on the rest of the range (resets the stream). */
  cancel: () => void
}

export interface OpenFileOptions extends AbortOptions {
  offset?: number
  length?: number
}

export class TransferClient {
  readonly protocol: string
  readonly metrics: TransferMetrics
  private readonly components: TransferClientComponents
  private readonly highWaterMark: number
  /** key → peers whose bytes failed verification for it. */
  private readonly bad = new Map<string, Set<string>>()
  private readonly inFlight = new Map<string, Promise<FetchResult>>()

  constructor (components: TransferClientComponents, init: TransferClientInit = {}) {
    this.components = components
    this.protocol = init.protocol ?? NAR_PROTOCOL
    this.metrics = components.metrics ?? new TransferMetrics()
    this.highWaterMark = init.receiveHighWaterMark ?? RECEIVE_HIGH_WATER_MARK
  }

  markBad (key: string, peer: PeerId | string): void {
    const id = peer.toString()
    let set = this.bad.get(key)
    if (set == null) { set = new Set(); this.bad.set(key, set) }
    set.add(id)
    log('marked %s bad for %s', id, key)
  }

  isBad (key: string, peer: PeerId | string): boolean {
    return this.bad.get(key)?.has(peer.toString()) ?? false
  }

  badPeers (key: string): string[] {
    return [...(this.bad.get(key) ?? [])]
  }

  private async request (peer: PeerId, request: Request, signal?: AbortSignal): Promise<{ stream: Stream, reader: StreamReader, header: Awaited<ReturnType<typeof readResponseHeader>> }> {
    const stream = await this.components.libp2p.dialProtocol(peer, this.protocol, { signal })
    const onAbort = (): void => { stream.abort(signal?.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    const reader = new StreamReader(stream, { highWaterMark: this.highWaterMark })
    try {
      signal?.throwIfAborted()
      await sendWithBackpressure(stream, encodeFrame(request), signal)
      await stream.close({ signal })
      const header = await readResponseHeader(reader)
      return { stream, reader, header }
    } catch (err) {
      signal?.removeEventListener('abort', onAbort)
      reader.release()
      if (stream.status === 'open') stream.abort(err as Error)
      throw err
    } finally {
      // Keep the abort wiring only while the body is being read (see openFile).
      if (signal != null) stream.addEventListener('close', () => { signal.removeEventListener('abort', onAbort) }, { once: true })
    }
  }

  /** Ask one peer for a byte range of `key`. Throws NotFoundError, RemoteError or a ProtocolError. */
  async openFile (peer: PeerId, key: string, options: OpenFileOptions = {}): Promise<FileResponse> {
    const offset = options.offset ?? 0
    const request: Request = options.length === undefined
      ? { type: 'file', key, offset }
      : { type: 'file', key, offset, length: options.length }
    const { stream, reader, header } = await this.request(peer, request, options.signal)
    const fail = (err: Error): never => {
      reader.release()
      if (stream.status === 'open') stream.abort(err)
      throw err
    }
    if (header.status === 'not-found') fail(new NotFoundError(`${peer.toString()} does not have ${key}`))
    if (header.status === 'error') fail(new RemoteError(header.code, `${peer.toString()} refused ${key} ${offset}+${options.length ?? '*'}: ${header.message}`))
    if (header.status !== 'ok') throw new MalformedFrameError('unreachable')
    const total = header.total
    if (total === undefined) return fail(new MalformedFrameError(`${peer.toString()}: file response without total size`))
    const expected = options.length ?? Math.max(0, total - offset)
    if (header.size !== expected || offset + header.size > total) {
      return fail(new MalformedFrameError(`${peer.toString()}: asked ${key} ${offset}+${expected}, answer announces ${header.size} of ${total}`))
    }
    const size = header.size
    const metrics = this.metrics
    return {
      size,
      total,
      cancel: () => { reader.release(); if (stream.status === 'open') stream.abort(new Error('cancelled')) },
      async * [Symbol.asyncIterator] () {
        let got = 0
        try {
          while (got < size) {
            let chunk: Uint8Array | null
            try {
              chunk = await reader.read(size - got)
            } catch (err) {
              throw new TruncatedStreamError(size, got, `${key} from ${peer.toString()} (${(err as Error).message})`)
            }
            if (chunk == null) throw new TruncatedStreamError(size, got, `${key} from ${peer.toString()}`)
            got += chunk.length
            metrics.bytesFetched += chunk.length
            yield chunk
          }
        } finally {
          reader.release()
          if (got < size && stream.status === 'open') stream.abort(new Error('reader stopped early'))
        }
      }
    }
  }

  /** The narinfo text from the first provider that has it; the caller checks its signatures. */
  async fetchNarinfo (hashPart: string, providers: PeerId[], options: AbortOptions = {}): Promise<string> {
    if (providers.length === 0) throw new NoProvidersError(`${hashPart}.narinfo`)
    const failures: Array<{ peer: string, error: Error }> = []
    for (const peer of providers) {
      options.signal?.throwIfAborted()
      try {
        return await this.narinfoFrom(peer, hashPart, options.signal)
      } catch (err) {
        if (options.signal?.aborted === true) throw err
        failures.push({ peer: peer.toString(), error: err as Error })
        log('narinfo %s from %p failed: %s', hashPart, peer, (err as Error).message)
      }
    }
    if (failures.every((f) => f.error instanceof NotFoundError)) throw new NotFoundError(`no provider has ${hashPart}.narinfo`)
    throw new AllProvidersFailedError(`${hashPart}.narinfo`, failures)
  }

  private async narinfoFrom (peer: PeerId, hashPart: string, signal?: AbortSignal): Promise<string> {
    const { stream, reader, header } = await this.request(peer, { type: 'narinfo', hashPart }, signal)
    try {
      if (header.status === 'not-found') throw new NotFoundError(`${peer.toString()} does not have ${hashPart}.narinfo`)
      if (header.status === 'error') throw new RemoteError(header.code, `${peer.toString()}: ${header.message}`)
      if (header.size > MAX_NARINFO_SIZE) throw new OversizedFrameError(header.size, MAX_NARINFO_SIZE, `narinfo from ${peer.toString()}`)
      const body = await reader.readExact(header.size, `narinfo from ${peer.toString()}`)
      this.metrics.bytesFetched += body.length
      try {
        return new TextDecoder('utf-8', { fatal: true }).decode(body)
      } catch {
        throw new MalformedFrameError(`narinfo from ${peer.toString()} is not UTF-8`)
      }
    } finally {
      reader.release()
      if (stream.status === 'open') stream.abort(new Error('done'))
    }
  }

  /**
   * Download `key` into `options.dest`, verified. Concurrent calls for the same dest share
   * one download.
   */
  async fetchFile (key: string, options: FetchFileOptions): Promise<FetchResult> {
    const running = this.inFlight.get(options.dest)
    if (running != null) return await running
    const p = fetchFile(this, key, options).finally(() => { this.inFlight.delete(options.dest) })
    this.inFlight.set(options.dest, p)
    return await p
  }
}
