// Reading and writing libp2p v3 streams with backpressure in both directions.
// LIBP2P.md pitfalls 1 and 2: onDrain() resolves too early, and for-await reading never
// pushes back, so writers wait for the 'drain' event and readers pause/resume the stream.
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { StreamClosedError, TruncatedStreamError } from './errors.js'

/** Send one buffer; when the stream says its buffer is full, wait for 'drain' (reject on 'close' or abort). */
export async function sendWithBackpressure (stream: Stream, data: Uint8Array, signal?: AbortSignal): Promise<void> {
  if (stream.status !== 'open') throw new StreamClosedError(`cannot send on a ${stream.status} stream`)
  if (stream.send(data)) return
  await waitForDrain(stream, signal)
}

/**
 * Gathers small writes into sends of up to `limit` bytes. Each send is its own yamux frame, noise
 * message and pair of socket writes, and the receiving yamux answers every data frame with a
 * window update: a closure bundle of 200 `.drv` files went out as ≈650 frames of ≈320 bytes.
 * Larger writes go out as they are, after what was gathered. Call flush() before waiting on
 * the peer and at the end.
 */
export class CoalescingSender {
  private parts: Uint8Array[] = []
  private size = 0

  constructor (private readonly stream: Stream, private readonly limit = 64 * 1024) {}

  async write (data: Uint8Array): Promise<void> {
    if (data.length === 0) return
    if (this.size + data.length > this.limit) await this.flush()
    if (data.length >= this.limit) {
      await sendWithBackpressure(this.stream, data)
      return
    }
    this.parts.push(data)
    this.size += data.length
  }

  async flush (): Promise<void> {
    if (this.size === 0) return
    const data = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size)
    this.parts = []
    this.size = 0
    await sendWithBackpressure(this.stream, data)
  }
}

export async function waitForDrain (stream: Stream, signal?: AbortSignal): Promise<void> {
  if (!stream.writableNeedsDrain) return
  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const onDrain = (): void => { cleanup(); resolve() }
    const onClose = (): void => { cleanup(); reject(new StreamClosedError('stream closed while waiting for drain')) }
    const onAbort = (): void => { cleanup(); reject(signal?.reason ?? new Error('aborted')) }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort)
  })
}


export interface StreamReaderOptions {
  /** Pause the stream once this many bytes wait unread (resumed below half of it). */
  highWaterMark?: number
}

/**
 * Pull-based reader over a stream's 'message' events: pauses the stream when unread bytes
 * pile up, so yamux stops granting window and the sender waits instead of us buffering.
 * Bytes that arrived before a reset are still handed out; the error comes after them.
 */
export class StreamReader {
  private readonly chunks: Uint8Array[] = []
  private queued = 0
  private ended = false
  private error: Error | undefined
  private wake: (() => void) | undefined
  private paused = false
  private resuming = false
  private readonly highWaterMark: number
  /** Total bytes handed to the caller. */
  consumed = 0

  constructor (private readonly stream: Stream, options: StreamReaderOptions = {}) {
    this.highWaterMark = options.highWaterMark ?? 4 * 1024 * 1024
    // Paused, the stream holds up to one yamux window in its own buffer: let it.
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, this.highWaterMark * 4)
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('end', this.onEnd)
    stream.addEventListener('close', this.onClose)
    if (stream.readableEnded) this.ended = true
  }

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    const data = evt.data
    // A list holds the pieces of what arrived (noise frames, TCP reads): keep them as they
    // are; list.subarray() would copy every byte once more.
    if (data instanceof Uint8Array) {
      this.chunks.push(data)
    } else {
      for (const piece of data) if (piece.length > 0) this.chunks.push(piece)
    }
    this.queued += data.byteLength
    // Not while resume() is dispatching: pausing inside it would leave yamux granting window
    // to a paused stream (resume() calls sendResume() after the dispatch); read() re-checks.
    if (!this.resuming) this.maybePause()
    this.notify()
  }

  private maybePause (): void {
    if (!this.paused && this.queued >= this.highWaterMark && this.stream.readStatus === 'readable') {
      this.paused = true
      this.stream.pause()
    }
  }

  private readonly onEnd = (): void => { this.ended = true; this.notify() }

  private readonly onClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) this.error ??= evt.error
    this.ended = true
    this.notify()
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /** Next chunk of at most `max` bytes, or null at a clean end. Throws the stream's error after its data. */
  async read (max = Infinity): Promise<Uint8Array | null> {
    while (this.chunks.length === 0) {
      if (this.error != null) throw this.error
      if (this.ended) return null
      await new Promise<void>((resolve) => { this.wake = resolve })
    }
    let chunk = this.chunks[0]
    if (chunk.length > max) {
      this.chunks[0] = chunk.subarray(max)
      chunk = chunk.subarray(0, max)
    } else {
      this.chunks.shift()
    }
    this.queued -= chunk.length
    this.consumed += chunk.length
    if (this.paused && this.queued < this.highWaterMark / 2 && this.stream.readStatus === 'paused') {
      this.paused = false
      this.resuming = true
      try {
        this.stream.resume()
      } finally {
        this.resuming = false
      }
      this.maybePause()
    }
    return chunk
  }

  /** Exactly n bytes (for frame headers); `where` names the read in the error on a short stream. */
  async readExact (n: number, where: string): Promise<Uint8Array> {
    const out = new Uint8Array(n)
    let got = 0
    while (got < n) {
      const chunk = await this.read(n - got)
      if (chunk == null) throw new TruncatedStreamError(n, got, where)
      out.set(chunk, got)
      got += chunk.length
    }
    return out
  }

  /** Stop listening; what is still queued is dropped. */
  release (): void {
    this.stream.removeEventListener('message', this.onMessage)
    this.stream.removeEventListener('end', this.onEnd)
    this.stream.removeEventListener('close', this.onClose)
    this.chunks.length = 0
    this.queued = 0
  }
}
