// Streaming, strict NAR reader (FORMATS.md §1.2–1.3). Stricter than Nix 2.8: it also rejects
// unsorted entries, duplicates and trailing bytes. The parser is a generator that suspends
// only when it runs out of input, so a push of a large chunk is parsed in one synchronous run
// and visitors can use cheap sync fs calls. File contents are never buffered: they are handed
// to the visitor as slices of the input chunks.
import {
  NarBadMagicError, NarBadNameError, NarBadPaddingError, NarDuplicateEntryError, NarExecutableMarkerError,
  NarFormatError, NarStringTooLongError, NarTooDeepError, NarTrailingDataError, NarTruncatedError,
  NarUnexpectedTokenError, NarUnsortedEntriesError
} from './errors.js'

/** Longest name or symlink target accepted (Linux PATH_MAX). */
export const NAR_MAX_NAME = 4096
/** Deepest directory nesting accepted; a path that deep could not exist on Linux anyway. */
export const NAR_MAX_DEPTH = 2048
const MAX_KEYWORD = 16

/**
 * Receives the archive's content in order. `path` is the list of raw names from the root
 * (empty for the root) and is only valid during the call; `fileData` slices likewise.
 */
export interface NarVisitor {
  directory?: (path: readonly Buffer[]) => void
  fileStart?: (path: readonly Buffer[], executable: boolean, size: number) => void
  fileData?: (chunk: Buffer) => void
  fileEnd?: () => void
  symlink?: (path: readonly Buffer[], target: Buffer) => void
}

const EMPTY = Buffer.alloc(0)

const KEYWORDS = ['(', ')', 'type', 'regular', 'executable', 'contents', 'symlink', 'target', 'directory', 'entry', 'name', 'node']
/** Known keywords by length, so a token is matched without allocating a string. */
const KEYWORDS_BY_LEN: Array<Array<[Buffer, string]>> = []
for (const k of KEYWORDS) (KEYWORDS_BY_LEN[k.length] ??= []).push([Buffer.from(k, 'latin1'), k])

function keywordAt (buf: Buffer, pos: number, len: number): string {
  const cands = KEYWORDS_BY_LEN[len]
  if (cands !== undefined) {
    for (const [bytes, word] of cands) {
      let i = 0
      while (i < len && buf[pos + i] === bytes[i]) i++
      if (i === len) return word
    }
  }
  return buf.toString('latin1', pos, pos + len)
}

class Parse {
  private buf: Buffer = EMPTY
  private pos = 0
  /** Absolute offset of buf[0] in the NAR. */
  private base = 0
  private readonly pending: Buffer[] = []
  eof = false

  constructor (private readonly v: NarVisitor) {}

  push (chunk: Buffer): void {
    if (chunk.length > 0) this.pending.push(chunk)
  }

  get offset (): number { return this.base + this.pos }

  /** Bytes seen but not consumed, for the trailing-data check. */
  get leftover (): number {
    let n = this.buf.length - this.pos
    for (const c of this.pending) n += c.length
    return n
  }

  /** Make `n` contiguous bytes available at pos, suspending for input; copies at most n bytes. */
  private * need (n: number): Generator<void, void, void> {
    while (this.buf.length - this.pos < n) {
      while (this.pending.length === 0) {
        if (this.eof) throw new NarTruncatedError(this.base + this.buf.length, `NAR ends early: ${n - (this.buf.length - this.pos)} more byte(s) needed`)
        yield
      }
      const c = this.pending[0]
      const avail = this.buf.length - this.pos
      if (avail === 0) {
        this.base += this.buf.length
        this.buf = c
        this.pos = 0
        this.pending.shift()
      } else {
        const take = Math.min(c.length, n - avail)
        this.base += this.pos
        this.buf = Buffer.concat([this.buf.subarray(this.pos), c.subarray(0, take)])
        this.pos = 0
        if (take === c.length) this.pending.shift()
        else this.pending[0] = c.subarray(take)
      }
    }
  }

  /** Reads a u64 length at pos (8 bytes must be available). */
  private u64 (limit: number, what: string): number {
    const lo = this.buf.readUInt32LE(this.pos)
    const hi = this.buf.readUInt32LE(this.pos + 4)
    if (hi > 0x1fffff || hi * 0x100000000 + lo > limit) {
      throw new NarStringTooLongError(this.offset, `${what} length ${hi > 0x1fffff ? '> 2^53' : hi * 0x100000000 + lo} exceeds the limit of ${limit}`)
    }
    this.pos += 8
    return hi * 0x100000000 + lo
  }

  private checkPadding (len: number): void {
    const pad = (8 - (len % 8)) % 8
    for (let i = 0; i < pad; i++) {
      if (this.buf[this.pos + i] !== 0) throw new NarBadPaddingError(this.offset + i, 'non-zero padding byte')
    }
    this.pos += pad
  }

  /** A framed string of at most `limit` bytes, as a slice of the input (valid until the next suspension). */
  private * string (limit: number, what: string): Generator<void, Buffer, void> {
    if (this.buf.length - this.pos < 8) yield * this.need(8)
    const len = this.u64(limit, what)
    const padded = len + ((8 - (len % 8)) % 8)
    if (this.buf.length - this.pos < padded) yield * this.need(padded)
    const s = this.buf.subarray(this.pos, this.pos + len)
    this.pos += len
    this.checkPadding(len)
    return s
  }

  /**
   * Synchronous fast path for a keyword: undefined when fewer than 24 bytes are buffered (the
   * caller then takes the suspending path). Avoids a generator per token.
   */
  private keywordNow (): string | undefined {
    const pos = this.pos
    if (this.buf.length - pos < 8 + MAX_KEYWORD) return undefined
    const lo = this.buf.readUInt32LE(pos)
    const hi = this.buf.readUInt32LE(pos + 4)
    if (hi !== 0 || lo > MAX_KEYWORD) throw new NarUnexpectedTokenError(this.offset, `expected a NAR keyword, found a string of length ${hi * 0x100000000 + lo}`)
    this.pos = pos + 8
    const word = keywordAt(this.buf, this.pos, lo)
    this.pos += lo
    this.checkPadding(lo)
    return word
  }

  /** A short keyword token, or throws NarUnexpectedTokenError for anything longer. */
  private * keyword (): Generator<void, string, void> {
    const fast = this.keywordNow()
    if (fast !== undefined) return fast
    const at = this.offset
    if (this.buf.length - this.pos < 8) yield * this.need(8)
    const lo = this.buf.readUInt32LE(this.pos)
    const hi = this.buf.readUInt32LE(this.pos + 4)
    if (hi !== 0 || lo > MAX_KEYWORD) throw new NarUnexpectedTokenError(at, `expected a NAR keyword, found a string of length ${hi * 0x100000000 + lo}`)
    const s = yield * this.string(MAX_KEYWORD, 'keyword')
    return keywordAt(s, 0, s.length)
  }

  /** Consumes `word` synchronously if enough input is buffered; false means "use expect()". */
  private expectNow (word: string): boolean {
    const at = this.offset
    const k = this.keywordNow()
    if (k === undefined) return false
    if (k !== word) throw new NarUnexpectedTokenError(at, `expected '${word}', found ${JSON.stringify(k)}`)
    return true
  }

  private * expect (word: string): Generator<void, void, void> {
    const at = this.offset
    const k = this.keywordNow() ?? (yield * this.keyword())
    if (k !== word) throw new NarUnexpectedTokenError(at, `expected '${word}', found ${JSON.stringify(k)}`)
  }

  /** A name or target, synchronously when fully buffered (undefined otherwise). */
  private stringNow (limit: number, what: string): Buffer | undefined {
    const pos = this.pos
    if (this.buf.length - pos < 8) return undefined
    const lo = this.buf.readUInt32LE(pos)
    const hi = this.buf.readUInt32LE(pos + 4)
    if (hi !== 0 || lo > limit) return undefined // the slow path reports it
    const padded = lo + ((8 - (lo % 8)) % 8)
    if (this.buf.length - pos - 8 < padded) return undefined
    this.pos = pos + 8
    const s = this.buf.subarray(this.pos, this.pos + lo)
    this.pos += lo
    this.checkPadding(lo)
    return s
  }

  * run (): Generator<void, void, void> {
    const v = this.v
    // magic
    {
      const at = this.offset
      if (this.buf.length - this.pos < 8) yield * this.need(8)
      const lo = this.buf.readUInt32LE(this.pos)
      const hi = this.buf.readUInt32LE(this.pos + 4)
      if (hi !== 0 || lo !== 13) throw new NarBadMagicError(at, 'input does not start with the NAR magic "nix-archive-1"')
      const m = yield * this.string(13, 'magic')
      if (m.toString('latin1') !== 'nix-archive-1') throw new NarBadMagicError(at, `bad NAR magic ${JSON.stringify(m.toString('latin1'))}`)
    }
    const path: Buffer[] = []
    /** Per open directory: the previous entry name, for order checks. */
    const prev: Array<Buffer | undefined> = []
    let finished = false // true when a node has just been closed
    for (;;) {
      if (!finished) {
        if (!this.expectNow('(')) yield * this.expect('(')
        if (!this.expectNow('type')) yield * this.expect('type')
        const typeAt = this.offset
        const t = this.keywordNow() ?? (yield * this.keyword())
        if (t === 'regular') {
          let at = this.offset
          let k = this.keywordNow() ?? (yield * this.keyword())
          let executable = false
          if (k === 'executable') {
            executable = true
            const markerAt = this.offset
            const marker = yield * this.string(MAX_KEYWORD, 'executable marker')
            if (marker.length !== 0) throw new NarExecutableMarkerError(markerAt, 'executable marker has a non-empty value')
            at = this.offset
            k = this.keywordNow() ?? (yield * this.keyword())
          }
          if (k !== 'contents') throw new NarUnexpectedTokenError(at, `expected 'contents', found ${JSON.stringify(k)}`)
          if (this.buf.length - this.pos < 8) yield * this.need(8)
          const size = this.u64(Number.MAX_SAFE_INTEGER, 'file')
          v.fileStart?.(path, executable, size)
          let left = size
          while (left > 0) {
            if (this.buf.length === this.pos) yield * this.need(1)
            const take = Math.min(left, this.buf.length - this.pos)
            v.fileData?.(this.buf.subarray(this.pos, this.pos + take))
            this.pos += take
            left -= take
          }
          const pad = (8 - (size % 8)) % 8
          if (this.buf.length - this.pos < pad) yield * this.need(pad)
          this.checkPadding(size)
          v.fileEnd?.()
          if (!this.expectNow(')')) yield * this.expect(')')
          finished = true
        } else if (t === 'symlink') {
          if (!this.expectNow('target')) yield * this.expect('target')
          const at = this.offset
          const target = this.stringNow(NAR_MAX_NAME, 'symlink target') ?? (yield * this.string(NAR_MAX_NAME, 'symlink target'))
          if (target.length === 0) throw new NarBadNameError(at, 'symlink has an empty target')
          if (target.includes(0)) throw new NarBadNameError(at, 'symlink target contains a NUL byte')
          v.symlink?.(path, target)
          if (!this.expectNow(')')) yield * this.expect(')')
          finished = true
        } else if (t === 'directory') {
          if (prev.length >= NAR_MAX_DEPTH) throw new NarTooDeepError(typeAt, `directories nested deeper than ${NAR_MAX_DEPTH}`)
          v.directory?.(path)
          prev.push(undefined)
        } else {
          throw new NarUnexpectedTokenError(typeAt, `unknown node type ${JSON.stringify(t)}`)
        }
      }
      if (finished) {
        if (prev.length === 0) break // the root node is complete
        if (!this.expectNow(')')) yield * this.expect(')') // closes "entry ("
        path.pop()
      }
      // Inside a directory: the next entry or its end.
      const at = this.offset
      const k = this.keywordNow() ?? (yield * this.keyword())
      if (k === ')') {
        prev.pop()
        finished = true
        continue
      }
      if (k !== 'entry') throw new NarUnexpectedTokenError(at, `expected 'entry' or ')', found ${JSON.stringify(k)}`)
      if (!this.expectNow('(')) yield * this.expect('(')
      if (!this.expectNow('name')) yield * this.expect('name')
      const nameAt = this.offset
      const name = this.stringNow(NAR_MAX_NAME, 'entry name') ?? (yield * this.string(NAR_MAX_NAME, 'entry name'))
      checkName(name, nameAt)
      const last = prev[prev.length - 1]
      if (last !== undefined) {
        const c = Buffer.compare(last, name)
        if (c === 0) throw new NarDuplicateEntryError(nameAt, `duplicate entry ${JSON.stringify(name.toString())}`)
        if (c > 0) throw new NarUnsortedEntriesError(nameAt, `entry ${JSON.stringify(name.toString())} is not sorted after ${JSON.stringify(last.toString())}`)
      }
      // Copy: the name outlives the input chunk it came from.
      const own = Buffer.from(name)
      prev[prev.length - 1] = own
      if (!this.expectNow('node')) yield * this.expect('node')
      path.push(own)
      finished = false
    }
  }
}

function checkName (name: Buffer, at: number): void {
  if (name.length === 0) throw new NarBadNameError(at, 'entry name is empty')
  if (name.length === 1 && name[0] === 0x2e) throw new NarBadNameError(at, "entry name is '.'")
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) throw new NarBadNameError(at, "entry name is '..'")
  if (name.includes(0x2f)) throw new NarBadNameError(at, `entry name ${JSON.stringify(name.toString())} contains '/'`)
  if (name.includes(0)) throw new NarBadNameError(at, `entry name ${JSON.stringify(name.toString())} contains a NUL byte`)
}

/**
 * Push-driven NAR parser: feed chunks with push(), then end(). Throws a NarFormatError
 * subclass (with `.offset`) from push()/end() at the first problem.
 */
export class NarParser {
  private readonly p: Parse
  private readonly gen: Generator<void, void, void>
  private done = false
  private size = 0

  constructor (visitor: NarVisitor = {}) {
    this.p = new Parse(visitor)
    this.gen = this.p.run()
  }

  /** Bytes pushed so far. */
  get bytes (): number { return this.size }

  push (chunk: Uint8Array): void {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)
    this.size += b.length
    if (this.done) {
      if (b.length > 0) throw new NarTrailingDataError(this.size - b.length, `${b.length} byte(s) after the end of the NAR`)
      return
    }
    this.p.push(b)
    this.step()
  }

  /** Declare the end of input; throws NarTruncatedError if the NAR is incomplete. */
  end (): void {
    this.p.eof = true
    if (!this.done) this.step()
    if (!this.done) throw new NarFormatError(this.size, 'internal: parser did not finish at end of input')
  }

  private step (): void {
    const r = this.gen.next()
    if (r.done === true) {
      this.done = true
      const extra = this.p.leftover
      if (extra > 0) throw new NarTrailingDataError(this.p.offset, `${extra} byte(s) after the end of the NAR`)
    }
  }
}

/** Parse a whole NAR stream with `visitor`; resolves to the NAR size. */
export async function parseNar (source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, visitor: NarVisitor = {}): Promise<number> {
  const parser = new NarParser(visitor)
  for await (const chunk of source) parser.push(chunk)
  parser.end()
  return parser.bytes
}
