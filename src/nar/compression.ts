// NAR compression, streaming both ways. gzip uses node:zlib; zstd, lzip and xz run the Debian
// tools as child processes (Node 20's zlib has no zstd), with stdin/stdout streamed and the
// tool's exit status turned into a named error before the output is declared complete.
import { spawn, type ChildProcess } from 'node:child_process'
import { Duplex, PassThrough } from 'node:stream'
import { constants as zc, createGunzip, createGzip } from 'node:zlib'
import { logger } from '@libp2p/logger'
import { CompressionToolFailedError, CompressionToolMissingError, DecompressionError, UnknownCompressionError } from './errors.js'

const log = logger('guix-swarm:nar:compression')

export const COMPRESSIONS = ['none', 'gzip', 'zstd', 'lzip', 'xz'] as const
export type Compression = typeof COMPRESSIONS[number]

/** Accepts exactly one of COMPRESSIONS; anything else is UnknownCompressionError. */
export function parseCompression (value: string): Compression {
  if ((COMPRESSIONS as readonly string[]).includes(value)) return value as Compression
  throw new UnknownCompressionError(value)
}

const EXT: Record<Compression, string> = { none: '.nar', gzip: '.nar.gz', zstd: '.nar.zst', lzip: '.nar.lz', xz: '.nar.xz' }

/** File extension for a NAR file (Nix-style cache layout: `nar/<hash>.nar.zst`). */
export function narFileExtension (c: Compression): string {
  return EXT[c]
}

/** Path of a NAR as `guix publish` serves it: `nar/<comp>/<basename>`, or `nar/<basename>` uncompressed. */
export function guixNarUrlPath (c: Compression, storeBasename: string): string {
  return c === 'none' ? `nar/${storeBasename}` : `nar/${c}/${storeBasename}`
}

export interface CompressOptions {
  /** Compression level; each tool's own default when absent. */
  level?: number
  /** Worker threads for tools that have them (zstd, xz); 0 = all cores. Default 0. */
  threads?: number
}

function toolArgs (c: 'zstd' | 'lzip' | 'xz', decompress: boolean, o: CompressOptions): [string, string[]] {
  const level = o.level !== undefined ? [`-${o.level}`] : []
  const threads = String(o.threads ?? 0)
  switch (c) {
    case 'zstd': return ['zstd', decompress ? ['-d', '-c', '-q'] : ['-c', '-q', `-T${threads}`, ...level]]
    case 'lzip': return ['lzip', decompress ? ['-d', '-c', '-q'] : ['-c', '-q', ...level]]
    case 'xz': return ['xz', decompress ? ['-d', '-c', '-q', `-T${threads}`] : ['-c', '-q', `-T${threads}`, ...level]]
  }
}

/** Streams data through an external filter process; errors become CompressionTool* errors. */
class ToolStream extends Duplex {
  private readonly child: ChildProcess
  private stderr = ''
  private exited = false

  constructor (private readonly tool: string, args: string[]) {
    super()
    this.child = spawn(tool, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    const { stdin, stdout, stderr } = this.child
    if (stdin === null || stdout === null || stderr === null) throw new Error('spawn gave no stdio pipes')
    this.child.on('error', (err: NodeJS.ErrnoException) => {
      this.destroy(err.code === 'ENOENT' || err.code === 'EACCES' ? new CompressionToolMissingError(tool, err.message) : err)
    })
    // EPIPE when the tool died early: the exit status below says why, so ignore it here.
    stdin.on('error', () => {})
    stderr.setEncoding('utf8')
    stderr.on('data', (s: string) => { if (this.stderr.length < 4096) this.stderr += s })
    stdout.on('data', (b: Buffer) => { if (!this.push(b)) stdout.pause() })
    // 'close' comes after stdout ended, so every byte has been pushed before we judge the exit.
    this.child.on('close', (code, signal) => {
      this.exited = true
      if (code === 0) this.push(null)
      else this.destroy(new CompressionToolFailedError(tool, code, signal, this.stderr))
    })
    log('started %s %s', tool, args.join(' '))
  }

  override _read (): void {
    this.child.stdout?.resume()
  }

  override _write (chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const stdin = this.child.stdin
    if (stdin === null || stdin.destroyed) { cb(); return } // the tool is gone; its exit reports why
    if (stdin.write(chunk)) cb()
    else stdin.once('drain', () => cb())
  }

  override _final (cb: (err?: Error | null) => void): void {
    this.child.stdin?.end()
    cb()
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.exited) this.child.kill('SIGKILL')
    cb(err)
  }
}

/** gunzip whose failures (corrupt or truncated input) are DecompressionError. */
class GunzipStream extends Duplex {
  private readonly z = createGunzip({ chunkSize: 1 << 16 })

  constructor () {
    super()
    this.z.on('data', (b: Buffer) => { if (!this.push(b)) this.z.pause() })
    this.z.on('end', () => this.push(null))
    this.z.on('error', (err) => this.destroy(new DecompressionError(`gzip: ${err.message}`)))
  }

  override _read (): void { this.z.resume() }

  override _write (chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.z.write(chunk)) cb()
    else this.z.once('drain', () => cb())
  }

  override _final (cb: (err?: Error | null) => void): void {
    this.z.end()
    cb()
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    this.z.destroy()
    cb(err)
  }
}

/** A Duplex: write NAR bytes, read compressed bytes. */
export function compressStream (c: Compression, opts: CompressOptions = {}): Duplex {
  switch (c) {
    case 'none': return new PassThrough()
    case 'gzip': return createGzip({ level: opts.level ?? zc.Z_DEFAULT_COMPRESSION, chunkSize: 1 << 16 })
    default: {
      const [tool, args] = toolArgs(c, false, opts)
      return new ToolStream(tool, args)
    }
  }
}

/** A Duplex: write compressed bytes, read the NAR. Corrupt input is an error, not short output. */
export function decompressStream (c: Compression): Duplex {
  switch (c) {
    case 'none': return new PassThrough()
    case 'gzip': return new GunzipStream()
    default: {
      const [tool, args] = toolArgs(c, true, {})
      return new ToolStream(tool, args)
    }
  }
}
