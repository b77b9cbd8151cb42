// The node's store of NARs and narinfos, laid out as a static binary cache (FORMATS.md §3.2,
// §4.1) so any static HTTP server can serve the directory as it is:
//
//   nix-cache-info
//   <hashpart>.narinfo
//   nar/<comp>/<basename>        (`guix publish` layout; `nar/<basename>` when uncompressed)
//   .guix-swarm/index/<hashpart>.json   sizes, added / last-served times, dialect, signer
//   .guix-swarm/tmp/                   files being written (same filesystem, so rename is atomic)
//
// Every file appears by rename only, and a narinfo only after all of its NAR files, so a reader
// never sees a partial file nor a narinfo whose NAR is missing. Removal goes the other way.
import { randomBytes } from 'node:crypto'
import { closeSync, createWriteStream, fstatSync, fsync, mkdirSync, openSync, readFileSync, readSync, renameSync, writeSync } from 'node:fs'
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises'
import { availableParallelism, hostname } from 'node:os'
import { basename, dirname, join } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { once } from 'node:events'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import { logger } from '@libp2p/logger'
import {
  compressStream, guixNarUrlPath, NarHasher, NarHashTap, parseCompression,
  type CompressOptions, type Compression
} from '../nar/index.js'
import {
  formatNarinfo, GUIX_STORE_DIR, isStoreBaseName, narHashBytes, NarinfoError, parseNarinfo, signNarinfo, writeSignedNarinfo,
  type Dialect, type KeyPair, type Narinfo, type NarinfoUrl, type NodeKeys
} from '../narinfo/index.js'
import type { StoreDaemon } from '../daemon/index.js'
import {
  CacheBadUrlPathError, CacheExportMismatchError, CacheFileSizeMismatchError, CacheMissingFileError, CacheNarinfoError,
  CacheNotFoundError, CacheSinkClosedError, CacheStoreDirMismatchError, CacheStorePathError
} from './errors.js'
import { verifyFile } from './verify.js'

const log = logger('guix-swarm:cache')

/** Our own bookkeeping lives under this dot directory, which statFile/openFile never serve. */
const PRIVATE = '.guix-swarm'

export interface CacheFile {
  compression: Compression
  /** Relative to the cache root, as in the narinfo's URL line. */
  url: string
  fileSize: number
}

/** The file of an entry that is cheapest to unpack: uncompressed, then zstd, then gzip, then the slow ones. */
export function cheapestToUnpack<F extends { compression: string }> (files: readonly F[]): F | undefined {
  const cost = (c: string): number => c === 'none' ? 0 : c === 'zstd' ? 1 : c === 'gzip' ? 2 : 3
  return [...files].sort((a, b) => cost(a.compression) - cost(b.compression))[0]
}

export interface CacheEntry {
  storePath: string
  hashPart: string
  /** `sha256:<nix-base32>`. */
  narHash: string
  narSize: number
  files: CacheFile[]
  /** The narinfo text exactly as served. */
  narinfo: string
}

/** What the index keeps per entry (the CacheEntry without its narinfo text, plus GC facts). */
export interface CacheIndexRecord {
  storePath: string
  hashPart: string
  narHash: string
  narSize: number
  files: CacheFile[]
  narinfoSize: number
  dialect: Dialect
  /** Which kind of signature the narinfo carries; 'none' when unsigned. */
  signature: 'guix' | 'nix' | 'both' | 'none'
  /** Where it came from: exported from the local store, or verified and moved in (`addVerified`). */
  source: 'store' | 'verified'
  /** Milliseconds since the epoch. */
  addedAt: number
  lastServedAt?: number
}

export interface BinaryCacheComponents {
  /** The cache root (created when missing). */
  dir: string
  /** `/gnu/store` or `/nix/store`; StorePath lines and the nix-cache-info StoreDir. */
  storeDir: string
  /** Narinfo layout; 'guix' for /gnu/store, 'nix' otherwise, unless given. */
  dialect?: Dialect
  /**
   * Signing key(s). NodeKeys: the key matching the dialect signs. A single key pair: its kind
   * decides (a Nix key adds `Sig:`, a Guix key adds `Signature:`). None: narinfos are unsigned.
   */
  keys?: NodeKeys | KeyPair
  /**
   * One NAR file per compression, all made in one pass. Defaults: see defaultCompressions.
   * Nix uses the LAST URL group of a narinfo; every compression here is one Nix 2.8 decodes
   * (none literally, the rest through libarchive), so any order works for both clients.
   */
  compressions?: Compression[]
  /** Per-compression level/threads. */
  compressOptions?: Partial<Record<Compression, CompressOptions>>
  /**
   * NARs smaller than this many bytes are kept uncompressed only (default 0: off). A `.drv` or a
   * tiny output gains a few hundred bytes from compression and costs a compressor process here and
   * a decompressor process on every fetch; both Guix and Nix take `Compression: none`.
   */
  uncompressedBelow?: number
  /** Host name in the Guix `Signature:` line; the machine's by default. */
  host?: string
  /** Clock for added/last-served times (tests). */
  now?: () => number
}

/** What the node passes as `uncompressedBelow`: a typical `.drv` or trivial output is 0.5–4 KiB. */
export const SMALL_NAR_BYTES = 16 * 1024

/**
 * zstd for both dialects (measured in src/cache/README.md): lzip and xz at -6 take ~80x the CPU
 * of zstd -3 for files a third smaller, so they are opt-in.
 */
export function defaultCompressions (_dialect: Dialect): Compression[] {
  return ['zstd']
}

export interface AddClosureOptions {
  /** Called as each path of the closure is in (references before referrers). */
  onProgress?: (done: number, total: number, entry: CacheEntry) => void
  /**
   * Paths exported at once (default 8: a small path, kept uncompressed, costs file writes and
   * fsyncs, which overlap). Compression, CPU-bound, runs for at most COMPRESSING_AT_ONCE paths
   * of a cache at a time. Narinfos still appear in closure order, references before referrers.
   */
  concurrency?: number
}

const DEFAULT_CLOSURE_CONCURRENCY = 8
/** Paths a cache compresses at once (each runs its compressors; one path per core here). */
const COMPRESSING_AT_ONCE = availableParallelism()

/** A counting semaphore: at most `n` holders at a time, the others wait in arrival order. */
class Slots {
  private readonly waiting: Array<() => void> = []
  constructor (private free: number) {}

  async take (): Promise<void> {
    if (this.free > 0) { this.free--; return }
    await new Promise<void>((resolve) => this.waiting.push(resolve))
  }

  give (): void {
    const next = this.waiting.shift()
    if (next !== undefined) next(); else this.free++
  }
}

export interface VerifiedFile {
  compression: Compression | string
  /** A file the caller verified; it is moved (renamed) into the cache, or deleted if the entry already exists. */
  tempPath: string
}

export interface AddVerifiedOptions {
  narinfoText: string
  files: VerifiedFile[]
  /**
   * Decompress and hash every file against the narinfo before moving it in (verifyFile). On by
   * default; pass false when the caller already hashed exactly these bytes.
   */
  verify?: boolean
}

export interface FileRange {
  /** First byte, inclusive; 0 by default. */
  start?: number
  /** Last byte, INCLUSIVE (like fs.createReadStream and HTTP ranges); the end of the file by default. */
  end?: number
}

const STALE_TEMP_MS = 24 * 3600 * 1000
const HASH_PART = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/

export class BinaryCache {
  readonly dir: string
  readonly storeDir: string
  readonly dialect: Dialect
  readonly compressions: readonly Compression[]
  private readonly keys?: NodeKeys | KeyPair
  private readonly compressOptions: Partial<Record<Compression, CompressOptions>>
  private readonly uncompressedBelow: number
  /** Compressions running at once (see COMPRESSING_AT_ONCE). */
  private readonly compressorSlots = new Slots(COMPRESSING_AT_ONCE)
  private readonly host: string
  private readonly now: () => number
  private ready?: Promise<void>
  /** Adds in flight by hash part, so concurrent adds of one path do the work once. */
  private readonly adding = new Map<string, Promise<CacheEntry>>()

  constructor (components: BinaryCacheComponents) {
    this.dir = components.dir
    this.storeDir = components.storeDir.replace(/\/+$/, '')
    this.dialect = components.dialect ?? (this.storeDir === GUIX_STORE_DIR ? 'guix' : 'nix')
    const compressions = components.compressions ?? defaultCompressions(this.dialect)
    if (compressions.length === 0) throw new TypeError('BinaryCache needs at least one compression')
    this.compressions = [...new Set(compressions.map((c) => parseCompression(c)))]
    this.keys = components.keys
    this.uncompressedBelow = components.uncompressedBelow ?? 0
    this.compressOptions = components.compressOptions ?? {}
    this.host = components.host ?? hostname()
    this.now = components.now ?? Date.now
  }

  /** Creates the layout and nix-cache-info; every other method calls it, so calling it is optional. */
  async start (): Promise<void> {
    // a failed start (say, permissions) is retried on the next call, not remembered
    this.ready ??= this.init().catch((err: unknown) => { this.ready = undefined; throw err })
    await this.ready
  }

  async stop (): Promise<void> {
    await Promise.allSettled([...this.adding.values()])
  }

  /** `nix-cache-info` as `guix publish` writes it; Nix ignores the extra lines. */
  nixCacheInfo (): string {
    return `StoreDir: ${this.storeDir}\nWantMassQuery: 0\nPriority: 100\n`
  }

  private async init (): Promise<void> {
    await mkdir(join(this.dir, PRIVATE, 'index'), { recursive: true })
    await mkdir(join(this.dir, PRIVATE, 'tmp'), { recursive: true })
    await mkdir(join(this.dir, 'nar'), { recursive: true })
    await this.sweepStaleTemps()
    const info = join(this.dir, 'nix-cache-info')
    const want = this.nixCacheInfo()
    const have = await readFile(info, 'utf8').catch(() => undefined)
    const haveDir = have === undefined ? undefined : /^StoreDir:[ \t]*(\S+)/m.exec(have)?.[1]
    if (haveDir !== undefined && haveDir !== this.storeDir) {
      // one cache directory serves one store; mixing would hand clients paths they reject
      throw new CacheStoreDirMismatchError(`${this.dir} is a cache for ${haveDir}, not ${this.storeDir}`)
    }
    if (have !== want) await this.writeAtomic(info, want)
  }

  /**
   * Temp files left by a crash. Another process (the CLI beside a node) may be writing into the
   * same directory right now, so only files untouched for a day are taken as abandoned.
   */
  private async sweepStaleTemps (): Promise<void> {
    const tmp = join(this.dir, PRIVATE, 'tmp')
    const cutoff = this.now() - STALE_TEMP_MS
    for (const name of await readdir(tmp)) {
      const file = join(tmp, name)
      const s = await stat(file).catch(() => undefined)
      if (s !== undefined && s.mtimeMs < cutoff) {
        await rm(file, { force: true })
        log('removed abandoned temp file %s', file)
      }
    }
  }

  // ------------------------------------------------------------------ adding

  /**
   * Export `storePath` from the daemon into the cache: one streaming pass that hashes the NAR and
   * feeds every compressor, files renamed into place, then the signed narinfo. Idempotent.
   */
  async addFromStore (store: StoreDaemon, storePath: string): Promise<CacheEntry> {
    return await this.addOne(store, storePath)
  }

  /** `refsIn`: settles once the given references are in the cache (a rejection abandons this path). */
  private async addOne (store: StoreDaemon, storePath: string, refsIn?: (references: string[]) => Promise<unknown>): Promise<CacheEntry> {
    const hashPart = this.hashPartOf(storePath)
    return await this.once(hashPart, async () => {
      const existing = await this.getEntry(hashPart)
      if (existing !== undefined) return existing
      return await this.exportInto(store, storePath, hashPart, refsIn)
    })
  }

  /**
   * Add the closure of `paths`, each path once; returned in closure order (references first).
   * Several paths are exported at once, but a narinfo appears only after those of its references,
   * so a client never finds one whose references are missing. (Waiting on references, not on
   * the previous path, keeps two closures added at once from waiting on each other.) The first
   * failure stops the rest.
   */
  async addClosure (store: StoreDaemon, paths: string[], opts: AddClosureOptions = {}): Promise<CacheEntry[]> {
    const order = await store.queryRequisites(paths)
    const limit = Math.max(1, Math.floor(opts.concurrency ?? DEFAULT_CLOSURE_CONCURRENCY))
    const entries: CacheEntry[] = new Array(order.length)
    const turns = new Map<string, Promise<CacheEntry>>()
    const refsIn = async (self: string, references: string[]): Promise<void> => {
      await Promise.all(references.filter((r) => r !== self).map(async (r) => await turns.get(r)))
    }
    let done = 0
    let failed = false
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < order.length && !failed) {
        const i = next++
        const p = order[i]
        const mine = this.addOne(store, p, async (refs) => await refsIn(p, refs))
        turns.set(p, mine)
        mine.catch(() => { failed = true }) // thrown by this worker's await below; later paths see it through refsIn
        entries[i] = await mine
        opts.onProgress?.(++done, order.length, entries[i])
      }
    }
    // on a failure, let the paths in flight finish or give up before reporting it: nothing keeps writing after we return
    const ran = await Promise.allSettled(Array.from({ length: Math.min(limit, order.length) }, worker))
    const failure = ran.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failure !== undefined) throw failure.reason
    return entries
  }

  /**
   * Move NAR files the caller has already verified (e.g. fetched from a peer) into the cache with
   * their narinfo, unchanged (its signature covers it). Every URL of the narinfo needs a file of
   * its compression, and every file a URL. FileSize lines are checked against the files.
   */
  async addVerified (opts: AddVerifiedOptions): Promise<CacheEntry> {
    let narinfo: Narinfo
    try {
      narinfo = parseNarinfo(opts.narinfoText, { storeDir: this.storeDir })
    } catch (err) {
      if (err instanceof NarinfoError) throw new CacheNarinfoError(`addVerified: ${err.name}: ${err.message}`)
      throw err
    }
    const hashPart = this.hashPartOf(narinfo.storePath)
    const byCompression = new Map<string, string>()
    for (const f of opts.files) {
      if (byCompression.has(f.compression)) throw new CacheMissingFileError(`addVerified ${narinfo.storePath}: two files for ${f.compression}`)
      byCompression.set(f.compression, f.tempPath)
    }
    const placed: Array<{ url: NarinfoUrl, compression: Compression, tempPath: string }> = []
    for (const u of narinfo.urls) {
      const c = u.compression ?? 'none'
      const tempPath = byCompression.get(c)
      if (tempPath === undefined) throw new CacheMissingFileError(`addVerified ${narinfo.storePath}: no file for URL ${u.url} (${c})`)
      this.checkNarUrl(u.url)
      placed.push({ url: u, compression: parseCompression(c), tempPath })
      byCompression.delete(c)
    }
    if (byCompression.size > 0) {
      throw new CacheMissingFileError(`addVerified ${narinfo.storePath}: no URL in the narinfo for ${[...byCompression.keys()].join(', ')}`)
    }
    return await this.once(hashPart, async () => {
      const existing = await this.getEntry(hashPart)
      if (existing !== undefined) {
        await Promise.all(placed.map(async (p) => await rm(p.tempPath, { force: true })))
        return existing
      }
      await this.start()
      const files: CacheFile[] = []
      for (const p of placed) {
        const size = (await stat(p.tempPath)).size
        if (p.url.fileSize !== undefined && p.url.fileSize !== size) {
          throw new CacheFileSizeMismatchError(`addVerified ${narinfo.storePath}: ${p.tempPath} is ${size} bytes, the narinfo says FileSize ${p.url.fileSize}`)
        }
        files.push({ compression: p.compression, url: p.url.url, fileSize: size })
      }
      if (opts.verify !== false) for (const p of placed) await verifyFile(narinfo, p.compression, p.tempPath)
      for (const p of placed) await this.moveIn(p.tempPath, join(this.dir, p.url.url))
      const text = opts.narinfoText
      await this.writeAtomic(this.narinfoPath(hashPart), text)
      const record = this.record(narinfo, hashPart, files, text, 'verified')
      await this.writeIndex(record)
      log('added verified %s (%d files)', narinfo.storePath, files.length)
      return this.entryOf(record, text)
    })
  }

  private async exportInto (store: StoreDaemon, storePath: string, hashPart: string, refsIn?: (references: string[]) => Promise<unknown>): Promise<CacheEntry> {
    await this.start()
    // a NAR to compress takes a compressor slot (CPU-bound) for the streaming pass only: held
    // while waiting for its references, it could leave none for them; a small NAR is file writes
    const compressing = (await store.queryPathInfo(storePath)).narSize >= this.uncompressedBelow
    if (compressing) await this.compressorSlots.take()
    let held = compressing
    const compressed = (): void => { if (held) { held = false; this.compressorSlots.give() } }
    try {
      return await this.exportWith(store, storePath, hashPart, compressed, refsIn)
    } finally {
      compressed()
    }
  }

  private async exportWith (store: StoreDaemon, storePath: string, hashPart: string, compressed: () => void, refsIn?: (references: string[]) => Promise<unknown>): Promise<CacheEntry> {
    const base = basename(storePath)
    const { info, nar } = await store.exportPath(storePath)
    const small = info.narSize < this.uncompressedBelow
    const compressions: readonly Compression[] = small ? ['none'] : this.compressions
    const temps = compressions.map((c) => ({ compression: c, temp: this.tempPath(), tap: new NarHashTap() }))
    const narHasher = new NarHasher()
    if (small) {
      await this.writeSmallNar(storePath, info.narSize, nar, narHasher, temps[0].temp)
    } else {
      const compressors = compressions.map((c) => compressStream(c, this.compressOptions[c] ?? {}))
      const writes = temps.map(async (t, i) => {
        await pipeline(compressors[i], t.tap, createWriteStream(t.temp))
        await fsyncFile(t.temp)
      })
      try {
        await Promise.all([teeInto(nar, compressors, (b) => narHasher.update(b)), ...writes])
      } catch (err) {
        nar.destroy()
        for (const c of compressors) c.destroy()
        await Promise.allSettled(writes)
        await Promise.all(temps.map(async (t) => await rm(t.temp, { force: true })))
        throw err
      }
    }
    compressed()
    const digest = narHasher.digest()
    if (!Buffer.from(digest.sha256).equals(Buffer.from(narHashBytes(info.narHash))) || digest.narSize !== info.narSize) {
      await Promise.all(temps.map(async (t) => await rm(t.temp, { force: true })))
      throw new CacheExportMismatchError(`exporting ${storePath}: the NAR streamed was ${digest.narHash} (${digest.narSize} bytes), the daemon records ${info.narHash} (${info.narSize} bytes)`)
    }
    try {
      await refsIn?.(info.references)
    } catch (err) {
      // a reference failed: this path must not appear without it
      await Promise.all(temps.map(async (t) => await rm(t.temp, { force: true })))
      throw err
    }

    const files: CacheFile[] = []
    const urls: NarinfoUrl[] = []
    for (const t of temps) {
      const fd = small ? digest : t.tap.digest() // an uncompressed file is the NAR itself
      const url = guixNarUrlPath(t.compression, base)
      files.push({ compression: t.compression, url, fileSize: fd.narSize })
      urls.push({ url, compression: t.compression, fileSize: fd.narSize, fileHash: fd.narHash })
    }
    for (let i = 0; i < temps.length; i++) await this.moveIn(temps[i].temp, join(this.dir, files[i].url))

    const narinfo: Narinfo = {
      storePath,
      urls,
      narHash: digest.narHash,
      narSize: digest.narSize,
      references: info.references.map((r) => basename(r)),
      sigs: []
    }
    // guix publish leaves Deriver out for derivations
    if (info.deriver !== undefined && !(this.dialect === 'guix' && storePath.endsWith('.drv'))) narinfo.deriver = basename(info.deriver)
    const text = this.sign(narinfo)
    await this.writeAtomic(this.narinfoPath(hashPart), text)
    const record = this.record(narinfo, hashPart, files, text, 'store')
    await this.writeIndex(record)
    log('added %s: %d bytes NAR, %s', storePath, digest.narSize, files.map((f) => `${f.compression} ${f.fileSize}`).join(', '))
    return this.entryOf(record, text)
  }

  /**
   * A NAR below uncompressedBelow (a .drv, a trivial output: a few KiB), stored as it is: read
   * whole, hashed, written and fsynced through one descriptor. The stream pipeline and its file
   * stream cost more than the bytes for each of the hundreds of such paths a batch publishes.
   */
  private async writeSmallNar (storePath: string, narSize: number, nar: Readable, hasher: NarHasher, temp: string): Promise<void> {
    const chunks: Buffer[] = []
    let size = 0
    try {
      for await (const chunk of nar) {
        const b = chunk as Buffer
        size += b.length
        // never buffer more than the daemon registered
        if (size > narSize) throw new CacheExportMismatchError(`exporting ${storePath}: the NAR streamed is longer than the ${narSize} bytes the daemon records`)
        hasher.update(b)
        chunks.push(b)
      }
    } catch (err) {
      nar.destroy()
      throw err
    }
    await writeTemp(temp, Buffer.concat(chunks, size), true)
  }

  private sign (narinfo: Narinfo): string {
    const keys = this.keys
    if (keys === undefined) return formatNarinfo(narinfo, this.dialect)
    if ('kind' in keys) return signNarinfo(formatNarinfo(narinfo, this.dialect), keys, { host: this.host })
    return writeSignedNarinfo(narinfo, this.dialect, keys, { host: this.host })
  }

  // ------------------------------------------------------------------ reading

  /** The narinfo text, or undefined when the path is not in the cache. */
  async getNarinfo (hashPart: string): Promise<string | undefined> {
    if (!HASH_PART.test(hashPart)) return undefined
    try {
      return readFileSync(this.narinfoPath(hashPart), 'utf8') // a few KiB: see readSmallFile
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async has (hashPart: string): Promise<boolean> {
    if (!HASH_PART.test(hashPart)) return false
    return await stat(this.narinfoPath(hashPart)).then(() => true, (err) => { if (isNotFound(err)) return false; throw err })
  }

  /** The entry; rebuilt from the narinfo and the files when the index has no record of it. */
  async getEntry (hashPart: string): Promise<CacheEntry | undefined> {
    const text = await this.getNarinfo(hashPart)
    if (text === undefined) return undefined
    const record = await this.readIndex(hashPart) ?? await this.recover(hashPart, text)
    return this.entryOf(record, text)
  }

  /** The index record (sizes, times, signer), if the path is in the cache. */
  async getRecord (hashPart: string): Promise<CacheIndexRecord | undefined> {
    const text = await this.getNarinfo(hashPart)
    if (text === undefined) return undefined
    return await this.readIndex(hashPart) ?? await this.recover(hashPart, text)
  }

  /** Every entry, sorted by store path. */
  async list (): Promise<CacheEntry[]> {
    await this.start()
    const names = (await readdir(this.dir)).filter((n) => n.endsWith('.narinfo') && HASH_PART.test(n.slice(0, -8)))
    const out: CacheEntry[] = []
    for (const n of names) {
      const e = await this.getEntry(n.slice(0, -8))
      if (e !== undefined) out.push(e) // removed meanwhile
    }
    return out.sort((a, b) => (a.storePath < b.storePath ? -1 : a.storePath > b.storePath ? 1 : 0))
  }

  /** Bytes on disk of all narinfos and NAR files. */
  async totalSize (): Promise<number> {
    let total = 0
    for (const e of await this.list()) total += Buffer.byteLength(e.narinfo) + e.files.reduce((s, f) => s + f.fileSize, 0)
    return total
  }

  /** Size of a served file (`nix-cache-info`, `<hash>.narinfo`, `nar/…`), or undefined when absent. */
  async statFile (urlPath: string): Promise<number | undefined> {
    const file = this.servedPath(urlPath)
    try {
      const s = await stat(file)
      return s.isFile() ? s.size : undefined
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  /**
   * A served file's bytes at once, if it is at most `maxBytes` (undefined when absent or larger).
   * Synchronous on purpose, like the narinfo and index reads: for files of a few KiB (a closure
   * bundle's), an open, a stat and a read from the page cache take microseconds, where a
   * FileHandle, a read stream and their thread-pool round trips were a tenth of a submitting
   * node's CPU while builders fetched 200 .drv closures (profile).
   */
  readSmallFile (urlPath: string, maxBytes: number): Buffer | undefined {
    const file = this.servedPath(urlPath)
    let fd: number
    try {
      fd = openSync(file, 'r')
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
    try {
      const size = fstatSync(fd).size
      if (size > maxBytes) return undefined
      const buf = Buffer.allocUnsafe(size)
      let got = 0
      while (got < size) {
        const n = readSync(fd, buf, got, size - got, got)
        if (n === 0) break
        got += n
      }
      return buf.subarray(0, got)
    } finally {
      closeSync(fd)
    }
  }

  /** A stream of a served file, or a byte range of it; CacheNotFoundError when absent. */
  async openFile (urlPath: string, range: FileRange = {}): Promise<Readable> {
    const file = this.servedPath(urlPath)
    let fh
    try {
      fh = await open(file, 'r')
    } catch (err) {
      if (isNotFound(err)) throw new CacheNotFoundError(`${urlPath} is not in the cache at ${this.dir}`)
      throw err
    }
    // the open descriptor keeps the bytes readable even if remove() unlinks the file meanwhile
    return fh.createReadStream({ start: range.start, end: range.end, autoClose: true })
  }

  /**
   * The file open for positional reads (the NAR transfer server reads it into reused buffers);
   * undefined when not in the cache. The caller closes it; an open handle keeps the bytes
   * readable even if remove() unlinks the file meanwhile.
   */
  async openHandle (urlPath: string): Promise<FileHandle | undefined> {
    try {
      return await open(this.servedPath(urlPath), 'r')
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  // ------------------------------------------------------------------ removing, GC facts

  /** Remove the narinfo (first, so nothing points at missing files), its files, its record. */
  async remove (hashPart: string): Promise<boolean> {
    const entry = await this.getEntry(hashPart)
    if (entry === undefined) return false
    await rm(this.narinfoPath(hashPart), { force: true })
    for (const f of entry.files) await rm(join(this.dir, f.url), { force: true })
    await rm(this.indexPath(hashPart), { force: true })
    log('removed %s', entry.storePath)
    return true
  }

  /** Record that the entry was just served (for GC by last use). */
  async touch (hashPart: string): Promise<void> {
    const record = await this.getRecord(hashPart)
    if (record === undefined) return
    record.lastServedAt = this.now()
    await this.writeIndex(record)
  }

  // ------------------------------------------------------------------ internals

  private async once (hashPart: string, work: () => Promise<CacheEntry>): Promise<CacheEntry> {
    const running = this.adding.get(hashPart)
    if (running !== undefined) return await running
    const p = work().finally(() => this.adding.delete(hashPart))
    this.adding.set(hashPart, p)
    return await p
  }

  private hashPartOf (storePath: string): string {
    const slash = storePath.lastIndexOf('/')
    const base = storePath.slice(slash + 1)
    if (storePath.slice(0, slash) !== this.storeDir || !isStoreBaseName(base)) {
      throw new CacheStorePathError(`${JSON.stringify(storePath)} is not a store path in ${this.storeDir}`)
    }
    return base.slice(0, 32)
  }

  private narinfoPath (hashPart: string): string {
    return join(this.dir, `${hashPart}.narinfo`)
  }

  private indexPath (hashPart: string): string {
    return join(this.dir, PRIVATE, 'index', `${hashPart}.json`)
  }

  private tempPath (): string {
    return join(this.dir, PRIVATE, 'tmp', `${randomBytes(8).toString('hex')}.part`)
  }

  /** A URL a narinfo may point at for us to store a file: relative, under nar/, no dot segments. */
  private checkNarUrl (url: string): void {
    const segs = url.split('/')
    if (segs[0] !== 'nar' || segs.length < 2 || segs.some((s) => s === '' || s.startsWith('.'))) {
      throw new CacheBadUrlPathError(url, 'a stored NAR URL must be a relative path under nar/ without dot segments')
    }
  }

  /** Map a served URL path to a file, refusing anything outside the served set. */
  private servedPath (urlPath: string): string {
    const p = urlPath.replace(/^\/+/, '')
    if (p === 'nix-cache-info') return join(this.dir, p)
    if (/^[0123456789abcdfghijklmnpqrsvwxyz]{32}\.narinfo$/.test(p)) return join(this.dir, p)
    if (p.startsWith('nar/')) {
      this.checkNarUrl(p)
      return join(this.dir, p)
    }
    throw new CacheBadUrlPathError(urlPath, 'only nix-cache-info, <hash>.narinfo and nar/… are served')
  }

  /**
   * `sync: false` for what can be rebuilt after a crash (the index): an fsync costs milliseconds per path.
   * The open, write, close and rename of a few KiB are synchronous, like the small reads (see
   * readSmallFile): each costs microseconds, where FileHandle round trips through the thread pool
   * and a recursive mkdir before every write were a sixth of a publishing node's CPU (profile of
   * 200 builds). Only the fsync, which waits for the disk, goes to the pool.
   */
  private async writeAtomic (file: string, content: string, opts: { sync?: boolean } = {}): Promise<void> {
    const temp = this.tempPath()
    await writeTemp(temp, Buffer.from(content), opts.sync !== false)
    withDir(file, () => { renameSync(temp, file) })
  }

  /** Rename into place; a file on another filesystem is copied next to its place first. */
  private async moveIn (from: string, to: string): Promise<void> {
    try {
      withDir(to, () => { renameSync(from, to) })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
      const temp = this.tempPath()
      await copyFile(from, temp)
      await fsyncFile(temp)
      await rename(temp, to)
      await unlink(from)
    }
  }

  private record (narinfo: Narinfo, hashPart: string, files: CacheFile[], text: string, source: CacheIndexRecord['source']): CacheIndexRecord {
    const sig = narinfo.signature !== undefined || /^Signature:/m.test(text)
    const nix = narinfo.sigs.length > 0
    return {
      storePath: narinfo.storePath,
      hashPart,
      narHash: narinfo.narHash,
      narSize: narinfo.narSize,
      files,
      narinfoSize: Buffer.byteLength(text),
      dialect: /^FileHash:/m.test(text) || (nix && !sig) ? 'nix' : 'guix',
      signature: sig && nix ? 'both' : sig ? 'guix' : nix ? 'nix' : 'none',
      source,
      addedAt: this.now()
    }
  }

  private entryOf (r: CacheIndexRecord, narinfo: string): CacheEntry {
    return { storePath: r.storePath, hashPart: r.hashPart, narHash: r.narHash, narSize: r.narSize, files: r.files, narinfo }
  }

  private async writeIndex (r: CacheIndexRecord): Promise<void> {
    // not synced: a record lost or left empty by a crash is rebuilt from the narinfo (readIndex → recover)
    await this.writeAtomic(this.indexPath(r.hashPart), JSON.stringify(r) + '\n', { sync: false })
  }

  private async readIndex (hashPart: string): Promise<CacheIndexRecord | undefined> {
    try {
      return JSON.parse(readFileSync(this.indexPath(hashPart), 'utf8')) as CacheIndexRecord // small: see readSmallFile
    } catch (err) {
      if (isNotFound(err) || err instanceof SyntaxError) return undefined
      throw err
    }
  }

  /** A narinfo without an index record (written by another tool, or an index lost): rebuild it. */
  private async recover (hashPart: string, text: string): Promise<CacheIndexRecord> {
    let narinfo: Narinfo
    try {
      narinfo = parseNarinfo(text, { storeDir: this.storeDir })
    } catch (err) {
      if (err instanceof NarinfoError) throw new CacheNarinfoError(`${this.narinfoPath(hashPart)}: ${err.name}: ${err.message}`)
      throw err
    }
    const files: CacheFile[] = []
    for (const u of narinfo.urls) {
      let size = u.fileSize
      try {
        size = (await stat(join(this.dir, u.url))).size
      } catch {}
      files.push({ compression: parseCompression(u.compression ?? 'none'), url: u.url, fileSize: size ?? 0 })
    }
    const record = this.record(narinfo, hashPart, files, text, 'verified')
    await this.start()
    await this.writeIndex(record)
    return record
  }
}

/**
 * Write every chunk of `source` to all `sinks`, waiting for the slowest; ends them at the end.
 * A sink that dies (its tool failed) ends the tee instead of leaving it waiting for a drain.
 */
async function teeInto (source: Readable, sinks: Writable[], onChunk: (b: Buffer) => void): Promise<void> {
  for await (const chunk of source) {
    const b = chunk as Buffer
    onChunk(b)
    const waits: Array<Promise<unknown>> = []
    for (const s of sinks) {
      if (s.destroyed) throw new CacheSinkClosedError('a compressor stopped before the NAR ended')
      if (!s.write(b)) waits.push(Promise.race([once(s, 'drain'), once(s, 'close')]))
    }
    if (waits.length > 0) await Promise.all(waits)
  }
  for (const s of sinks) s.end()
}

const fsyncFd = promisify(fsync)

async function fsyncFile (file: string): Promise<void> {
  const fd = openSync(file, 'r')
  try {
    await fsyncFd(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * Write a temp file of a few KiB through one descriptor (synchronously but for the fsync, see
 * writeAtomic); on failure the temp file is removed.
 */
async function writeTemp (temp: string, bytes: Buffer, sync: boolean): Promise<void> {
  const fd = withDir(temp, () => openSync(temp, 'w'))
  try {
    let done = 0
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done)
    if (sync) await fsyncFd(fd)
  } catch (err) {
    closeSync(fd)
    await rm(temp, { force: true })
    throw err
  }
  closeSync(fd)
}

/** Run `make` (which creates `file`); if its directory is missing, create the directory and run it again. */
function withDir<T> (file: string, make: () => T): T {
  try {
    return make()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    mkdirSync(dirname(file), { recursive: true })
    return make()
  }
}

function isNotFound (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}
