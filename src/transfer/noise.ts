// Noise (@chainsafe/libp2p-noise, unchanged on the wire) with fewer socket writes for bulk data.
//
// Stock noise hands TCP a list [len₀, frame₀, len₁, frame₁, …] per message (a 2-byte length
// and ≤ 64 KiB of ciphertext per noise frame) and the TCP transport writes each piece on its own:
// for a 1 MiB yamux frame, 32 socket writes, half of them 2 bytes long (TCP_NODELAY: each its
// own segment and receiver wake-up). perf record of bench/serve.ts: the sender spent 27–32% of
// its CPU in the kernel's TCP send path with 256 KiB sends.
//
// Here the ChaCha20-Poly1305 output of frames ≥ 16 KiB (node:crypto, as stock noise uses too)
// is written into slabs, each frame with 2 free bytes in front of it. When the list reaches the
// socket, the length prefixes go into those bytes and consecutive frames form ONE contiguous
// buffer: one write per slab run (256 KiB), and no copy beyond the one stock noise makes (its
// Buffer.concat of ciphertext and tag becomes the copy into the slab). Measured: kernel send
// path 12–15% of the sender; receiver CPU per MiB 10–15% lower; sender about even at 1 MiB
// sends (the copy into the slab costs what the saved syscalls did), 10% lower at 256 KiB.
import { noise, type NoiseInit, type NoiseExtensions, type NoiseComponents, type ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { ConnectionEncrypter, MessageStream, SecureConnectionOptions } from '@libp2p/interface'
import { createCipheriv } from 'node:crypto'
import { Socket } from 'node:net'
import { noteEncrypted } from './send-buffers.js'

const TAG_LENGTH = 16
const PREFIX_LENGTH = 2
/** Noise messages are at most this long (ciphertext and tag). */
const MAX_FRAME = 65535
/**
 * Smaller frames (handshakes, gossip, window updates) are sealed by stock noise crypto and sent
 * as they are: slabs are only for connections that move bulk data.
 */
const SLAB_MIN_PLAINTEXT = 16 * 1024
/** Four full frames with their prefixes. */
const SLAB_SIZE = 4 * (PREFIX_LENGTH + MAX_FRAME)
/** Per connection: slabs kept for reuse (a 1 MiB send spans five), full slabs tracked until written. */
const MAX_SPARE_SLABS = 5
const MAX_RETIRED_SLABS = 8

/**
 * Bump allocator over 256 KiB slabs, one per sending key (so per connection and direction).
 * Writing into fresh memory costs page faults (profiled: more than the copy itself), so slabs
 * are reused, but only once everything handed out has left the process: the connection calls
 * recycle() when its socket has nothing left to write (see coalescing).
 */
class FrameSlabs {
  private slab: Uint8Array = Buffer.alloc(0)
  private used = 0
  /** Full slabs whose frames may still be queued or being written. */
  private readonly retired: Uint8Array[] = []
  /** Slabs known to be written out, ready for reuse. */
  private readonly spare: Uint8Array[] = []

  /** A frame buffer of `length` bytes with PREFIX_LENGTH writable bytes before it. */
  frame (length: number): Uint8Array {
    const need = PREFIX_LENGTH + length
    if (this.used + need > this.slab.length) {
      if (this.slab.length > 0) this.retired.push(this.slab)
      // Not recycled for a while (the socket stayed busy): forget the oldest, the GC frees it once written.
      if (this.retired.length > MAX_RETIRED_SLABS) this.retired.shift()
      const reuse = this.spare.pop()
      // Unzeroed: every byte handed out is overwritten (prefix, ciphertext, tag) before it is sent.
      this.slab = reuse ?? Buffer.allocUnsafeSlow(SLAB_SIZE)
      this.used = 0
    }
    const out = this.slab.subarray(this.used + PREFIX_LENGTH, this.used + need)
    this.used += need
    issued.set(out, this)
    return out
  }

  /** Every frame handed out so far has been written to the socket: all memory may be reused. */
  recycle (): void {
    // Only the current slab in use since the last time: the connection is quiet, keep no spares.
    if (this.retired.length === 0) this.spare.length = 0
    for (const slab of this.retired) if (this.spare.length < MAX_SPARE_SLABS) this.spare.push(slab)
    this.retired.length = 0
    this.used = 0
  }
}

/** Frames handed out (the exact views: only these have prefix room in front) → their allocator. */
const issued = new WeakMap<Uint8Array, FrameSlabs>()
/** Sending key (a noise CipherState's k, one object per connection and direction) → allocator. */
const slabsByKey = new WeakMap<Uint8Array, FrameSlabs>()

function slabsFor (key: Uint8Array): FrameSlabs {
  let slabs = slabsByKey.get(key)
  if (slabs == null) {
    slabs = new FrameSlabs()
    slabsByKey.set(key, slabs)
  }
  return slabs
}

type Bytes = Uint8Array | Iterable<Uint8Array> & { byteLength: number }

/** ChaCha20-Poly1305 seal into a slab frame: ciphertext ‖ tag, as noise expects. */
function sealIntoSlab (plaintext: Bytes, nonce: Uint8Array, ad: Uint8Array, key: Uint8Array): Uint8Array {
  const length = plaintext.byteLength
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LENGTH })
  cipher.setAAD(ad, { plaintextLength: length })
  const out = slabsFor(key).frame(length + TAG_LENGTH)
  let pos = 0
  const parts: Iterable<Uint8Array> = plaintext instanceof Uint8Array ? [plaintext] : plaintext
  for (const part of parts) {
    const ct = cipher.update(part)
    out.set(ct, pos)
    pos += ct.length
  }
  const last = cipher.final()
  out.set(last, pos)
  pos += last.length
  out.set(cipher.getAuthTag(), pos)
  return out
}

/** Noise's crypto with frame sealing done into slabs (decryption, DH, hashing: stock). */
export const transferNoiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt (plaintext, nonce, ad, k) {
    const length = plaintext.byteLength
    const sealed = length < SLAB_MIN_PLAINTEXT || length + TAG_LENGTH > MAX_FRAME
      ? defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
      : sealIntoSlab(plaintext, nonce, ad, k)
    // Nothing reads these plaintext bytes again: pooled send buffers may be reused (send-buffers.ts).
    if (plaintext instanceof Uint8Array) noteEncrypted(plaintext)
    else for (const piece of plaintext) noteEncrypted(piece)
    return sealed
  }
}

/**
 * Pieces of [len, frame, len, frame, …] back to back in one slab become one view; anything
 * else (handshake messages, small frames sealed elsewhere) passes through as it is. What is
 * sent is byte for byte the concatenation of `pieces`.
 */
export function coalesceFrames (pieces: Uint8Array[]): Uint8Array[] {
  return coalesce(pieces, new Set())
}

/** coalesceFrames, also noting which allocators the frames came from. */
function coalesce (pieces: Uint8Array[], seen: Set<FrameSlabs>): Uint8Array[] {
  const out: Uint8Array[] = []
  let run: { buffer: ArrayBufferLike, start: number, end: number } | undefined
  const flush = (): void => {
    if (run != null) out.push(new Uint8Array(run.buffer, run.start, run.end - run.start))
    run = undefined
  }
  for (let i = 0; i < pieces.length; i++) {
    const prefix = pieces[i]
    const frame = pieces[i + 1]
    const slabs = frame != null && prefix.length === PREFIX_LENGTH ? issued.get(frame) : undefined
    if (slabs != null) {
      seen.add(slabs)
      const start = frame.byteOffset - PREFIX_LENGTH
      const room = new Uint8Array(frame.buffer, start, PREFIX_LENGTH)
      room[0] = prefix[0]
      room[1] = prefix[1]
      if (run == null || run.buffer !== frame.buffer || run.end !== start) {
        flush()
        run = { buffer: frame.buffer, start, end: start }
      }
      run.end = frame.byteOffset + frame.length
      i++
      continue
    }
    flush()
    out.push(prefix)
  }
  flush()
  return out
}

/**
 * The net.Socket under a TCP connection (TCP's MultiaddrConnection keeps it as `socket`; it is
 * not part of the MessageStream interface, so other transports simply never recycle).
 */
function socketOf (stream: MessageStream): Socket | undefined {
  const socket = (stream as MessageStream & { socket?: unknown }).socket
  return socket instanceof Socket ? socket : undefined
}

/**
 * Make `stream.send` hand the transport coalesced frames (see coalesceFrames), and recycle this
 * connection's slabs whenever nothing is left unwritten: the transport's write buffer is empty
 * (all of it went to socket.write) and the socket's writableLength is 0 (every write completed,
 * the kernel has the bytes). A successful write to loopback usually completes at once, so this
 * holds right after most sends; otherwise at the next 'drain'.
 */
function coalescing (stream: MessageStream): MessageStream {
  const send = stream.send.bind(stream)
  const socket = socketOf(stream)
  const mine = new Set<FrameSlabs>()
  const recycleIfWritten = (): void => {
    if (socket != null && socket.writableLength === 0 && stream.writeBufferLength === 0) {
      for (const slabs of mine) slabs.recycle()
    }
  }
  stream.send = (data) => {
    if (data instanceof Uint8Array) return send(data)
    let ok = true
    for (const piece of coalesce([...data], mine)) ok = send(piece)
    recycleIfWritten()
    return ok
  }
  stream.addEventListener('drain', recycleIfWritten)
  return stream
}

/** What decryptWhole needs of stock noise's EncryptedMessageStream (17.x; not public API). */
type Ciphertext = Parameters<ICryptoInterface['chaCha20Poly1305Decrypt']>[0]
type Plaintext = ReturnType<ICryptoInterface['chaCha20Poly1305Decrypt']>
interface StockDecryptingStream {
  decrypt: (frame: Ciphertext) => Plaintext
  handshake: { decrypt: (ciphertext: Ciphertext) => Plaintext }
}

function isStockDecrypting (c: unknown): c is StockDecryptingStream {
  const s = c as Partial<StockDecryptingStream> | null
  return typeof s?.decrypt === 'function' && typeof s.handshake?.decrypt === 'function'
}

/**
 * Stock noise decrypts each received frame as `handshake.decrypt(frame, frame.subarray(…))`:
 * the second argument is a destination for in-place decryption that its node:crypto path never
 * uses, but when the frame arrived in two TCP reads (a 64 KiB frame nearly always does),
 * `subarray` of the list first copies the whole frame into a new buffer (profiled: 2% of the
 * receiver's CPU in Buffer.concat, and a third of its garbage). Same decryption, no copy.
 * Returns whether the connection was stock noise's (tests check that it still is).
 */
export function decryptWhole (connection: unknown): boolean {
  if (!isStockDecrypting(connection)) return false
  const handshake = connection.handshake
  connection.decrypt = (frame) => {
    // The length-prefixed decoder hands over exactly one noise message (≤ 65535 bytes).
    if (frame.byteLength < TAG_LENGTH) throw new Error('Invalid chunk')
    return handshake.decrypt(frame)
  }
  return true
}

/**
 * `noise()` for the node's libp2p: the same handshake and wire format (interoperates with any
 * libp2p noise peer), ChaCha20-Poly1305 sealing into slabs and coalesced writes, and received
 * frames decrypted without a copy (decryptWhole).
 */
export interface TransferNoiseInit extends NoiseInit {
  /** Replace stock noise's per-frame decryption with decryptWhole (default true; false is for A/B measurements). */
  decryptWhole?: boolean
}

export function transferNoise (init: TransferNoiseInit = {}): (components: NoiseComponents) => ConnectionEncrypter<NoiseExtensions> {
  const { decryptWhole: whole = true, ...noiseInit } = init
  const make = noise({ crypto: transferNoiseCrypto, ...noiseInit })
  return (components) => {
    const inner = make(components)
    // Same object for everything else (protocol, capabilities); only the transport it is given changes.
    const outer: ConnectionEncrypter<NoiseExtensions> = Object.create(inner)
    outer.secureOutbound = async (c: MessageStream, o?: SecureConnectionOptions) => {
      const secured = await inner.secureOutbound(coalescing(c), o)
      if (whole) decryptWhole(secured.connection)
      return secured
    }
    outer.secureInbound = async (c: MessageStream, o?: SecureConnectionOptions) => {
      const secured = await inner.secureInbound(coalescing(c), o)
      if (whole) decryptWhole(secured.connection)
      return secured
    }
    return outer
  }
}
