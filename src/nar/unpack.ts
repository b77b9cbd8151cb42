// Unpack a NAR stream into a new directory tree, the way `nix-store --restore` lays it out
// (files 0666 and executables 0777, both minus the umask; directories 0777 minus the umask),
// but never writing outside DEST: DEST must not exist, every directory is created by us one
// at a time, files use O_CREAT|O_EXCL|O_NOFOLLOW, and the strict parser rejects duplicate,
// unsorted, '.', '..' and '/'-containing names before anything is created for them.
import { closeSync, constants, lstatSync, mkdirSync, openSync, symlinkSync, writeSync } from 'node:fs'
import { logger } from '@libp2p/logger'
import { NarDestExistsError } from './errors.js'
import { NarHasher, type NarDigest } from './hash.js'
import { NarParser, type NarVisitor } from './reader.js'

const log = logger('guix-swarm:nar')

const O_NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
const SLASH = Buffer.from('/')

export interface UnpackOptions {
  /** Also compute the NAR hash while unpacking (costs one SHA-256 pass). */
  hash?: boolean
}

export interface UnpackResult {
  narSize: number
  /** Present when `hash: true` was asked for. */
  digest?: NarDigest
}

function join (dest: Buffer, path: readonly Buffer[]): Buffer {
  if (path.length === 0) return dest
  const parts: Buffer[] = [dest]
  for (const name of path) parts.push(SLASH, name)
  return Buffer.concat(parts)
}

function exists (p: string | Buffer): boolean {
  try {
    lstatSync(p)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}

/** Writes a NAR's content under `dest` with sync fs calls; `close()` releases an open file. */
export class NarUnpacker implements NarVisitor {
  private fd = -1
  private readonly root: Buffer
  /** dirs[d] is the full path of the open directory at depth d: one concat per entry, not per level. */
  private readonly dirs: Buffer[] = []

  constructor (dest: string | Buffer) {
    this.root = typeof dest === 'string' ? Buffer.from(dest) : dest
  }

  private pathOf (path: readonly Buffer[]): Buffer {
    const d = path.length
    if (d === 0) return this.root
    const parent = this.dirs[d - 1]
    return parent !== undefined ? Buffer.concat([parent, SLASH, path[d - 1]]) : join(this.root, path)
  }

  directory (path: readonly Buffer[]): void {
    const p = this.pathOf(path)
    // mkdir fails with EEXIST on anything already there, symlinks included.
    mkdirSync(p, 0o777)
    this.dirs[path.length] = p
  }

  fileStart (path: readonly Buffer[], executable: boolean): void {
    this.fd = openSync(this.pathOf(path), O_NEW_FILE, executable ? 0o777 : 0o666)
  }

  fileData (chunk: Buffer): void {
    let off = 0
    while (off < chunk.length) off += writeSync(this.fd, chunk, off, chunk.length - off)
  }

  fileEnd (): void {
    const fd = this.fd
    this.fd = -1
    closeSync(fd)
  }

  symlink (path: readonly Buffer[], target: Buffer): void {
    symlinkSync(target, this.pathOf(path))
  }

  close (): void {
    if (this.fd !== -1) {
      closeSync(this.fd)
      this.fd = -1
    }
  }
}

/**
 * Unpack the NAR read from `source` into `dest`, which must not exist (its parent must).
 * Throws NarDestExistsError, a NarFormatError subclass (with `.offset`) or an fs error; on
 * error the partial `dest` is left for the caller to remove.
 */
export async function unpackNar (source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, dest: string | Buffer, opts: UnpackOptions = {}): Promise<UnpackResult> {
  if (exists(dest)) throw new NarDestExistsError(dest.toString())
  const unpacker = new NarUnpacker(dest)
  const parser = new NarParser(unpacker)
  const hasher = opts.hash === true ? new NarHasher() : undefined
  try {
    for await (const chunk of source) {
      hasher?.update(chunk)
      parser.push(chunk)
    }
    parser.end()
  } finally {
    unpacker.close()
  }
  log('unpacked %d bytes into %s', parser.bytes, dest.toString())
  return { narSize: parser.bytes, digest: hasher?.digest() }
}
