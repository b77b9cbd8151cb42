// Streaming NAR writer (FORMATS.md §1.1–1.2). Output equals `nix-store --dump` byte for byte.
// Speed: walking and reading use sync fs calls (no promise per file), framing tokens and file
// contents are copied straight into large output chunks, and big files are read in place
// into those chunks, so the cost is close to one read() per chunk.
import { closeSync, constants, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Readable, type Writable } from 'node:stream'
import { logger } from '@libp2p/logger'
import { NarSourceChangedError, NarUnsupportedFileTypeError } from './errors.js'

const log = logger('guix-swarm:nar')

/** Size of each chunk the writer yields. */
export const NAR_CHUNK_SIZE = 1 << 20

const SLASH = Buffer.from('/')

function str (s: string): Buffer {
  const b = Buffer.from(s, 'latin1')
  const padded = Buffer.alloc(8 + b.length + ((8 - (b.length % 8)) % 8))
  padded.writeUInt32LE(b.length, 0)
  b.copy(padded, 8)
  return padded
}

// Pre-framed token sequences.
const T_MAGIC_OPEN = Buffer.concat([str('nix-archive-1')])
const T_OPEN_TYPE = Buffer.concat([str('('), str('type')])
const T_REGULAR = str('regular')
const T_EXEC = Buffer.concat([str('executable'), str('')])
const T_CONTENTS = str('contents')
const T_SYMLINK_TARGET = Buffer.concat([str('symlink'), str('target')])
const T_DIRECTORY = str('directory')
const T_ENTRY_NAME = Buffer.concat([str('entry'), str('('), str('name')])
const T_NODE = str('node')
const T_CLOSE = str(')')

function kindOf (st: Stats): string {
  if (st.isSocket()) return 'socket'
  if (st.isFIFO()) return 'FIFO'
  if (st.isCharacterDevice()) return 'character device'
  if (st.isBlockDevice()) return 'block device'
  return 'file of unknown type'
}

/** Accumulates output into large chunks; `take()` hands over the filled part. */
class ChunkBuffer {
  buf: Buffer = Buffer.allocUnsafe(NAR_CHUNK_SIZE)
  pos = 0
  readonly ready: Buffer[] = []

  private flush (): void {
    if (this.pos > 0) this.ready.push(this.buf.subarray(0, this.pos))
    // Never reuse a chunk: the consumer may still hold it.
    this.buf = Buffer.allocUnsafe(NAR_CHUNK_SIZE)
    this.pos = 0
  }

  put (b: Buffer): void {
    if (this.pos + b.length > this.buf.length) this.flush()
    if (b.length > this.buf.length) { this.ready.push(b); return }
    b.copy(this.buf, this.pos)
    this.pos += b.length
  }

  /** A framed string of raw bytes (names, symlink targets). */
  putString (b: Buffer): void {
    const total = 8 + b.length + ((8 - (b.length % 8)) % 8)
    if (this.pos + total > this.buf.length) this.flush()
    if (total > this.buf.length) { this.ready.push(Buffer.concat([lenField(b.length), b, Buffer.alloc(total - 8 - b.length)])); return }
    const p = this.pos
    this.buf.writeUInt32LE(b.length, p)
    this.buf.writeUInt32LE(0, p + 4)
    b.copy(this.buf, p + 8)
    this.buf.fill(0, p + 8 + b.length, p + total)
    this.pos = p + total
  }

  putLength (n: number): void {
    if (this.pos + 8 > this.buf.length) this.flush()
    this.buf.writeUInt32LE(n % 0x100000000, this.pos)
    this.buf.writeUInt32LE(Math.floor(n / 0x100000000), this.pos + 4)
    this.pos += 8
  }

  /** Reads exactly `size` bytes of `fd` straight into the chunk(s); yields full chunks via ready. */
  * putFile (fd: number, size: number, path: string): Generator<Buffer> {
    let left = size
    while (left > 0) {
      if (this.pos === this.buf.length) {
        this.flush()
        yield * this.drain()
      }
      const want = Math.min(left, this.buf.length - this.pos)
      const n = readSync(fd, this.buf, this.pos, want, null)
      if (n === 0) throw new NarSourceChangedError(path, `expected ${size} bytes, file ended after ${size - left}`)
      this.pos += n
      left -= n
    }
    // A file that grew meanwhile is cut at the size stat gave: the NAR stays self-consistent.
    const pad = (8 - (size % 8)) % 8
    if (pad > 0) {
      if (this.pos + pad > this.buf.length) this.flush()
      this.buf.fill(0, this.pos, this.pos + pad)
      this.pos += pad
    }
  }

  * drain (): Generator<Buffer> {
    while (this.ready.length > 0) yield this.ready.shift() as Buffer
  }

  * end (): Generator<Buffer> {
    this.flush()
    yield * this.drain()
  }
}

function lenField (n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt32LE(n % 0x100000000, 0)
  b.writeUInt32LE(Math.floor(n / 0x100000000), 4)
  return b
}

const O_READ_NOFOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW

interface DirFrame { dir: Buffer, names: Buffer[], next: number }

/**
 * Serialise `path` (file, directory or symlink) as a NAR, synchronously, in chunks of about
 * NAR_CHUNK_SIZE bytes. Each yielded Buffer is fresh (never reused). Throws
 * NarUnsupportedFileTypeError for sockets, FIFOs and devices anywhere in the tree.
 */
export function * packNarSync (path: string | Buffer): Generator<Buffer, void, undefined> {
  const out = new ChunkBuffer()
  out.put(T_MAGIC_OPEN)
  const root = typeof path === 'string' ? Buffer.from(path) : path
  const stack: DirFrame[] = []

  // Emit one node; for a directory, push a frame and let the loop below walk it.
  function * node (p: Buffer): Generator<Buffer> {
    const st = lstatSync(p)
    out.put(T_OPEN_TYPE)
    if (st.isFile()) {
      out.put(T_REGULAR)
      if ((st.mode & 0o100) !== 0) out.put(T_EXEC)
      out.put(T_CONTENTS)
      // O_NOFOLLOW: if the file was swapped for a symlink since lstat, fail instead of following it.
      const fd = openSync(p, O_READ_NOFOLLOW)
      try {
        const size = st.size
        out.putLength(size)
        yield * out.putFile(fd, size, p.toString())
      } finally {
        closeSync(fd)
      }
      out.put(T_CLOSE)
    } else if (st.isSymbolicLink()) {
      out.put(T_SYMLINK_TARGET)
      out.putString(readlinkSync(p, { encoding: 'buffer' }))
      out.put(T_CLOSE)
    } else if (st.isDirectory()) {
      out.put(T_DIRECTORY)
      const names = readdirSync(p, { encoding: 'buffer' })
      names.sort(Buffer.compare)
      stack.push({ dir: p, names, next: 0 })
    } else {
      throw new NarUnsupportedFileTypeError(p.toString(), kindOf(st))
    }
  }

  yield * node(root)
  while (stack.length > 0) {
    const top = stack[stack.length - 1]
    if (top.next > 0) {
      out.put(T_CLOSE) // closes the previous entry's "entry (" … ")"
    }
    if (top.next === top.names.length) {
      out.put(T_CLOSE) // closes the directory node
      stack.pop()
      continue
    }
    const name = top.names[top.next++]
    out.put(T_ENTRY_NAME)
    out.putString(name)
    out.put(T_NODE)
    yield * node(Buffer.concat([top.dir, SLASH, name]))
    if (out.ready.length > 0) yield * out.drain()
  }
  yield * out.end()
  log('packed %s', root.toString())
}

/** The NAR of `path` as a byte stream (chunks of about NAR_CHUNK_SIZE). */
export function packNar (path: string | Buffer): Readable {
  return Readable.from(packNarSync(path), { objectMode: false, highWaterMark: 2 * NAR_CHUNK_SIZE })
}

/** Write the NAR of `path` into `sink`, honouring backpressure; ends `sink` unless `end: false`. */
export async function writeNar (path: string | Buffer, sink: Writable, opts: { end?: boolean } = {}): Promise<void> {
  await pipeline(packNar(path), sink, { end: opts.end ?? true })
}
