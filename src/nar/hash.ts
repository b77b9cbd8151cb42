// NAR hash and size while streaming: a pass-through tap, so one pass can hash and write elsewhere.
import { createHash, type Hash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'
import { encodeNixBase32 } from './base32.js'
import { packNarSync } from './writer.js'

export interface NarDigest {
  /** `sha256:<nix-base32>` as narinfo files and `nix-store -q --hash` print it. */
  narHash: string
  /** Raw 32-byte SHA-256. */
  sha256: Uint8Array
  narSize: number
}

/** Incremental hasher: feed chunks with update(), read digest() once at the end. */
export class NarHasher {
  private readonly hash: Hash = createHash('sha256')
  private size = 0

  update (chunk: Uint8Array): void {
    this.hash.update(chunk)
    this.size += chunk.length
  }

  digest (): NarDigest {
    const sha256 = new Uint8Array(this.hash.digest())
    return { narHash: formatNarHash(sha256), sha256, narSize: this.size }
  }
}

/** `sha256:` + nix-base32 of a raw SHA-256 digest. */
export function formatNarHash (sha256: Uint8Array): string {
  return `sha256:${encodeNixBase32(sha256)}`
}

/** Transform that passes bytes through unchanged and hashes them; `digest()` after 'finish'/'end'. */
export class NarHashTap extends Transform {
  private readonly hasher = new NarHasher()
  private result?: NarDigest

  override _transform (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hasher.update(chunk)
    cb(null, chunk)
  }

  override _flush (cb: TransformCallback): void {
    this.result = this.hasher.digest()
    cb()
  }

  /** The digest; throws if the stream has not been flushed yet. */
  digest (): NarDigest {
    if (this.result === undefined) throw new Error('NarHashTap.digest() called before the stream ended')
    return this.result
  }
}

/** Hash and size of the NAR of a filesystem path, without writing the NAR anywhere. */
export function hashPathSync (path: string | Buffer): NarDigest {
  const h = new NarHasher()
  for (const chunk of packNarSync(path, { reuseBuffers: true })) h.update(chunk)
  return h.digest()
}

/** Hash and size of a NAR byte stream. */
export async function hashNarStream (source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<NarDigest> {
  const h = new NarHasher()
  for await (const chunk of source) h.update(chunk)
  return h.digest()
}
