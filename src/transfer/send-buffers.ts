// Reused buffers for the bytes a server sends, so a bulk transfer allocates nothing per chunk.
//
// Why: an fs read stream allocates a fresh buffer per read (1 MiB per MiB sent, memory V8
// sees as external). Positional reads into a few reused buffers cost 0.1 ms/MiB against
// 0.2–0.33 for the read stream (page-cache reads of 256 MiB, one process). It was meant to end
// the sender's runs of back-to-back full GCs too; it did not make them rarer (bench/serve.ts).
//
// When is a sent buffer free again? Not when stream.send() returns: yamux keeps what the send
// window does not allow yet, noise keeps what the socket cannot take yet, both by reference.
// It is free once every byte of it has been encrypted, since nothing reads plaintext after
// that. transferNoise (noise.ts) reports each plaintext piece it seals to noteEncrypted(). Over
// any other encrypter nothing is reported, buffers are simply never reused (as without a pool),
// and a transfer that is aborted before all is encrypted leaves its buffer to the GC.

/** Pool buffers with bytes out for sending, by their (dedicated) ArrayBuffer. */
const lent = new WeakMap<ArrayBufferLike, Lease>()

interface Lease {
  pool: SendBufferPool
  buffer: Uint8Array
  /** Bytes lent out and not yet encrypted. */
  pending: number
}

export interface SendBufferPoolStats {
  /** Buffers allocated over the pool's life (a steady transfer stops adding to this). */
  allocated: number
  /** Buffers that came back after their bytes were encrypted. */
  returned: number
  /** Buffers idle in the pool now. */
  free: number
}

export class SendBufferPool {
  readonly bufferSize: number
  private readonly maxFree: number
  private readonly free: Uint8Array[] = []
  private allocated = 0
  private returned = 0

  /** `maxFree` buffers of `bufferSize` bytes are kept between uses; more may be out at once. */
  constructor (bufferSize: number, maxFree: number) {
    this.bufferSize = bufferSize
    this.maxFree = maxFree
  }

  /** A buffer of bufferSize bytes, content undefined. Hand it to lend() or put() when done. */
  take (): Uint8Array {
    const reused = this.free.pop()
    if (reused !== undefined) return reused
    this.allocated++
    // Slow: its own ArrayBuffer, which is how noteEncrypted recognises it (and not zeroed:
    // only bytes that were read into it are ever sent).
    return Buffer.allocUnsafeSlow(this.bufferSize)
  }

  /** `buffer`'s first `length` bytes are about to be sent: it comes back once they are encrypted. */
  lend (buffer: Uint8Array, length: number): void {
    if (length <= 0) {
      this.put(buffer)
      return
    }
    lent.set(buffer.buffer, { pool: this, buffer, pending: length })
  }

  /** Give back a buffer that holds nothing still to be sent. */
  put (buffer: Uint8Array): void {
    lent.delete(buffer.buffer)
    if (this.free.length < this.maxFree && buffer.length === this.bufferSize) this.free.push(buffer)
  }

  stats (): SendBufferPoolStats {
    return { allocated: this.allocated, returned: this.returned, free: this.free.length }
  }

  /** Called by noteEncrypted when the last lent byte of `lease` was encrypted. */
  private settle (lease: Lease): void {
    this.returned++
    this.put(lease.buffer)
  }

  /** noteEncrypted's entry point (kept off the public surface of the class). */
  static encrypted (piece: Uint8Array): void {
    const lease = lent.get(piece.buffer)
    if (lease === undefined) return
    lease.pending -= piece.byteLength
    if (lease.pending <= 0) lease.pool.settle(lease)
  }
}

/** Noise calls this with every plaintext piece once it has been sealed. */
export function noteEncrypted (piece: Uint8Array): void {
  SendBufferPool.encrypted(piece)
}
