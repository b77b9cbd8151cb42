// Streaming NAR writer (FORMATS.md §1.1–1.2). Output equals `nix-store --dump` byte for byte.
// Speed: walking and reading use sync fs calls (no promise per file), framing tokens and file
// contents are copied straight into large output chunks, and big files are read in place
// into those chunks, so the cost is close to one read() per chunk.
import { closeSync, constants, fstatSync, lstatSync, type Dirent, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Readable, type Writable } from 'node:stream'
import { logger } from '@libp2p/logger'
import { NarSourceChangedError, NarUnsupportedFileTypeError } from './errors.js'

const log = logger('guix-swarm:nar')

/** Size of each chunk the writer yields. */
export const NAR_CHUNK_SIZE = 1 << 20

const SLASH = Buffer.from('/')
/** Files up to this size are read in one go; with names and tokens one step stays under a chunk. */
const SMALL_FILE = NAR_CHUNK_SIZE / 2

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
const T_REGULAR_CONTENTS = Buffer.concat([str('regular'), str('contents')])
const T_REGULAR_EXEC_CONTENTS = Buffer.concat([str('regular'), str('executable'), str(''), str('contents')])
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

/**
 * The first chunk's size. A chunk grows by doubling up to NAR_CHUNK_SIZE, so a NAR of a few
 * hundred bytes (a .drv, a trivial output) costs a few KiB, not 1 MiB: packing 200 small NARs
 * with 1 MiB each put V8 under "external memory pressure" (a full collection every ~60 ms).
 */
const FIRST_CHUNK_SIZE = 8 * 1024

/** Accumulates output into large chunks; `take()` hands over the filled part. */
class ChunkBuffer {
  buf: Buffer = Buffer.allocUnsafe(FIRST_CHUNK_SIZE)
  pos = 0
  readonly ready: Buffer[] = []
  /** With reuse, two full chunks alternate: one being filled, one handed out (drained before the next flush). */
  private spare: Buffer | undefined

  constructor (private readonly reuse: boolean) {}

  /** Room for `n` more bytes in this chunk: grown while it is under NAR_CHUNK_SIZE, else flushed. */
  private room (n: number): void {
    if (this.pos + n <= this.buf.length) return
    if (this.buf.length < NAR_CHUNK_SIZE) {
      let size = this.buf.length * 2
      while (size < this.pos + n && size < NAR_CHUNK_SIZE) size *= 2
      const grown = Buffer.allocUnsafe(Math.min(size, NAR_CHUNK_SIZE))
      this.buf.copy(grown, 0, 0, this.pos)
      this.buf = grown
      if (this.pos + n <= this.buf.length) return
    }
    this.flush()
  }

  private flush (): void {
    if (this.pos > 0) this.ready.push(this.buf.subarray(0, this.pos))
    if (this.reuse) {
      // Fresh memory costs page faults on every chunk; recycling two chunks avoids them.
      const next = this.spare ?? Buffer.allocUnsafe(NAR_CHUNK_SIZE)
      this.spare = this.buf.length === NAR_CHUNK_SIZE ? this.buf : undefined
      this.buf = next
    } else {
      // Without reuse the consumer may keep the chunk, so never write into it again.
      this.buf = Buffer.allocUnsafe(NAR_CHUNK_SIZE)
    }
    this.pos = 0
  }

  put (b: Buffer): void {
    this.room(b.length)
    if (b.length > this.buf.length) { this.ready.push(b); return }
    b.copy(this.buf, this.pos)
    this.pos += b.length
  }

  /** A framed string of raw bytes (names, symlink targets). */
  putString (b: Buffer): void {
    const total = 8 + b.length + ((8 - (b.length % 8)) % 8)
    this.room(total)
    if (total > this.buf.length) { this.ready.push(Buffer.concat([lenField(b.length), b, Buffer.alloc(total - 8 - b.length)])); return }
    const p = this.pos
    this.buf.writeUInt32LE(b.length, p)
    this.buf.writeUInt32LE(0, p + 4)
    b.copy(this.buf, p + 8)
    this.buf.fill(0, p + 8 + b.length, p + total)
    this.pos = p + total
  }

  putLength (n: number): void {
    this.room(8)
    this.buf.writeUInt32LE(n % 0x100000000, this.pos)
    this.buf.writeUInt32LE(Math.floor(n / 0x100000000), this.pos + 4)
    this.pos += 8
  }

  /** Reads a file of at most one chunk, in place; starts a new chunk if it does not fit. */
  putSmallFile (fd: number, size: number, path: Buffer): void {
    const total = size + ((8 - (size % 8)) % 8)
    this.room(total)
    let got = 0
    while (got < size) {
      const n = readSync(fd, this.buf, this.pos + got, size - got, null)
      if (n === 0) throw new NarSourceChangedError(path.toString(), `expected ${size} bytes, file ended after ${got}`)
      got += n
    }
    this.buf.fill(0, this.pos + size, this.pos + total)
    this.pos += total
  }

  /** Reads exactly `size` bytes of `fd` straight into the chunk(s); yields full chunks via ready. */
  * putFile (fd: number, size: number, path: string): Generator<Buffer> {
    let left = size
    this.room(Math.min(left, NAR_CHUNK_SIZE - this.pos)) // a large file: full chunks from here on
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
      this.room(pad)
      this.buf.fill(0, this.pos, this.pos + pad)
      this.pos += pad
    }
  }

  * drain (): Generator<Buffer> {
    while (this.ready.length > 0) yield this.ready.shift() as Buffer
  }

  * end (): Generator<Buffer> {
    // the last chunk, without taking a fresh one nobody would fill
    if (this.pos > 0) this.ready.push(this.buf.subarray(0, this.pos))
    this.pos = 0
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

const enum Kind { File, Dir, Link, Other }

/** The kind from readdir's d_type when the filesystem gives one (saves an lstat per entry). */
function direntKind (d: Dirent<Buffer>): Kind | undefined {
  if (d.isFile()) return Kind.File
  if (d.isDirectory()) return Kind.Dir
  if (d.isSymbolicLink()) return Kind.Link
  if (d.isFIFO() || d.isSocket() || d.isCharacterDevice() || d.isBlockDevice()) return Kind.Other
  return undefined // DT_UNKNOWN
}

function statKind (st: Stats): Kind {
  if (st.isFile()) return Kind.File
  if (st.isDirectory()) return Kind.Dir
  if (st.isSymbolicLink()) return Kind.Link
  return Kind.Other
}

export interface PackOptions {
  /**
   * Recycle the output chunks: each yielded Buffer is only valid until the generator is
   * resumed. Faster (no fresh memory per chunk); for consumers that use each chunk at once
   * (hashing, a sync write to a file descriptor).
   */
  reuseBuffers?: boolean
}

interface DirFrame { dir: Buffer, ents: Array<Dirent<Buffer>>, next: number }
interface BigFile { fd: number, size: number, path: Buffer }

/**
 * Serialise `path` (file, directory or symlink) as a NAR, synchronously, in chunks of about
 * NAR_CHUNK_SIZE bytes. Each yielded Buffer is fresh (never reused). Throws
 * NarUnsupportedFileTypeError for sockets, FIFOs and devices anywhere in the tree.
 * The walk is a loop over an explicit stack (no generator or promise per entry): only large
 * files, streamed chunk by chunk, suspend in the middle of a node.
 */
export function * packNarSync (path: string | Buffer, opts: PackOptions = {}): Generator<Buffer, void, undefined> {
  const out = new ChunkBuffer(opts.reuseBuffers === true)
  out.put(T_MAGIC_OPEN)
  const root = typeof path === 'string' ? Buffer.from(path) : path
  const stack: DirFrame[] = []

  // Emits one node; a directory pushes a frame, a file larger than a chunk is returned open.
  const node = (p: Buffer, kind: Kind): BigFile | undefined => {
    out.put(T_OPEN_TYPE)
    switch (kind) {
      case Kind.File: {
        // Open first, then fstat: the mode and size are those of the file actually read, and
        // O_NOFOLLOW refuses a file swapped for a symlink since readdir.
        const fd = openSync(p, O_READ_NOFOLLOW)
        let st: Stats
        try {
          st = fstatSync(fd)
          if (!st.isFile()) throw new NarSourceChangedError(p.toString(), 'no longer a regular file')
        } catch (err) {
          closeSync(fd)
          throw err
        }
        out.put((st.mode & 0o100) !== 0 ? T_REGULAR_EXEC_CONTENTS : T_REGULAR_CONTENTS)
        out.putLength(st.size)
        if (st.size > SMALL_FILE) return { fd, size: st.size, path: p }
        try {
          out.putSmallFile(fd, st.size, p)
        } finally {
          closeSync(fd)
        }
        out.put(T_CLOSE)
        return undefined
      }
      case Kind.Link:
        out.put(T_SYMLINK_TARGET)
        out.putString(readlinkSync(p, { encoding: 'buffer' }))
        out.put(T_CLOSE)
        return undefined
      case Kind.Dir: {
        out.put(T_DIRECTORY)
        const ents = readdirSync(p, { encoding: 'buffer', withFileTypes: true })
        ents.sort((a, b) => Buffer.compare(a.name, b.name))
        stack.push({ dir: p, ents, next: 0 })
        return undefined
      }
      default:
        throw new NarUnsupportedFileTypeError(p.toString(), kindOf(lstatSync(p)))
    }
  }

  function * streamBig (big: BigFile): Generator<Buffer> {
    try {
      yield * out.putFile(big.fd, big.size, big.path.toString())
    } finally {
      closeSync(big.fd)
    }
    out.put(T_CLOSE)
  }

  const first = node(root, statKind(lstatSync(root)))
  if (first !== undefined) yield * streamBig(first)
  while (stack.length > 0) {
    // Hand out what one step filled before the next step may flush again (needed for reuse).
    if (out.ready.length > 0) yield * out.drain()
    const top = stack[stack.length - 1]
    if (top.next > 0) out.put(T_CLOSE) // closes the previous entry's "entry (" … ")"
    if (top.next === top.ents.length) {
      out.put(T_CLOSE) // closes the directory node
      stack.pop()
      continue
    }
    const ent = top.ents[top.next++]
    out.put(T_ENTRY_NAME)
    out.putString(ent.name)
    out.put(T_NODE)
    const p = Buffer.concat([top.dir, SLASH, ent.name])
    const big = node(p, direntKind(ent) ?? statKind(lstatSync(p)))
    if (big !== undefined) yield * streamBig(big)
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
