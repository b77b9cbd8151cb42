// The local store as the swarm sees it: validity, path info, closures, derivations, and moving
// paths between stores as NAR + metadata.
//
// How paths cross stores (investigated on Nix 2.8, root, local store):
// * `nix-store --import` of the export format (u64 1, NAR, u64 "NIXE", path, references,
//   deriver, u64 0 = no signature, then u64 0 to end) needs NO signature as root and works in
//   a fresh store. It reads the whole NAR into memory before writing anything to the store, so a
//   stream cut before the trailer leaves the store untouched. We build that stream ourselves
//   from a NAR plus (path, narHash, narSize, references, deriver) — exactly what a node can
//   carry — hash and count the NAR as it passes, and only send the trailer when both match:
//   a bad NAR is never registered. Nix then re-hashes and records the same narHash.
// * Rejected: `--restore` + `--register-validity --hash-given` writes into the store behind
//   Nix's locks; an HTTP binary cache needs a server and signed narinfos per path; `nix copy
//   --from file://` needs a whole cache layout on disk.
import { createHash } from 'node:crypto'
import { lstatSync, readFileSync } from 'node:fs'
import { lstat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable, type Writable } from 'node:stream'
import { logger } from '@libp2p/logger'
import { packNarSync } from '../nar/index.js'
import { NIX_COMMANDS, guixCommands, GUIX_SCRIPT, type Command, type CommandSet, type StoreKind } from './commands.js'
import { parseDerivation, type Derivation } from './derivation.js'
import {
  DaemonError, ImportStreamClosedError, ImportUnsupportedError, MissingReferencesError, NarHashMismatchError, NotAStorePathError, PathNotValidError,
  ServeClosedError, StoreCommandError, UnexpectedOutputError
} from './errors.js'
import { formatSha256, parseSha256 } from './hash.js'
import { PathInfoCache } from './info-cache.js'
import { defaultRunner, runToEnd, type Completed, type ProcessRunner } from './runner.js'
import { Coalescer } from './coalesce.js'
import { writeScriptFile } from './script-file.js'
import { ServePool, u64, wireString, type ServePathInfo } from './serve.js'

const log = logger('guix-swarm:daemon:store')

/** Valid paths remembered (about 100 bytes each). */
const MAX_KNOWN_VALID = 100_000
/** Imports this small (all NARs together) go over the connection questions use, not one of their own. */
export const SHARED_IMPORT_BYTES = 1024 * 1024

export interface PathInfo {
  path: string
  /** `sha256:<nix-base32>`, as narinfo and `nix-store -q --hash` show it. */
  narHash: string
  narSize: number
  /** Full store paths, sorted; may include `path` itself. */
  references: string[]
  deriver?: string
}

export interface StoreDaemon {
  readonly kind: StoreKind
  readonly storeDir: string
  isValid: (path: string) => Promise<boolean>
  /** The invalid ones among `paths`. */
  filterInvalid: (paths: string[]) => Promise<string[]>
  /** Throws PathNotValidError when the path is not valid. */
  queryPathInfo: (path: string) => Promise<PathInfo>
  queryPathInfos: (paths: string[]) => Promise<PathInfo[]>
  /** The closure of `paths`, references before referrers (the order to import in). */
  queryRequisites: (paths: string[]) => Promise<string[]>
  readDerivation: (drvPath: string) => Promise<Derivation>
  /**
   * Optional batch form of readDerivation: one validity query for all; a PathNotValidError in
   * place of each invalid one (other failures throw).
   */
  readDerivations?: (drvPaths: string[]) => Promise<Map<string, Derivation | PathNotValidError>>
  /** The NAR of a valid path plus its info; the stream errors if the bytes do not match narHash. */
  exportPath: (path: string) => Promise<{ info: PathInfo, nar: Readable }>
  /** Make `info.path` valid from its NAR. References must already be valid. No-op (stream not read) when already valid. */
  importPath: (info: ImportInfo, nar: AsyncIterable<Uint8Array>) => Promise<void>
  /**
   * Optional batch form of importPath: one import for many paths, references first (each
   * reference valid already or earlier in `items`). Returns how many were imported.
   */
  importPaths?: (items: ImportItem[]) => Promise<number>
  /** Let go of long-lived store connections (the client may still be used: they reopen). */
  close?: () => Promise<void>
  /** How questions reach the store: a long-lived connection, or a process each. */
  connection?: () => StoreConnectionStatus
}

export interface StoreConnectionStatus {
  /** `serve`: over `nix-store --serve`; `processes`: one store process per question. */
  mode: 'serve' | 'processes'
  /** Connections opened so far (a new one after each that failed or went idle too long). */
  opened: number
}

export interface ImportItem { info: ImportInfo, nar: AsyncIterable<Uint8Array> }

export interface ImportInfo {
  storePath: string
  /** Any sha256 notation: `sha256:<base32|hex>` or SRI. */
  narHash: string
  narSize: number
  references: string[]
  deriver?: string
}

export interface StoreComponents {
  commands: CommandSet
  runner?: ProcessRunner
  env?: NodeJS.ProcessEnv
  storeDir?: string
  /** Where this process sees the store's files, when that differs from storeDir (a store bind-mounted in another mount namespace). */
  realStoreDir?: string
  /**
   * Make NARs of valid paths by reading realStoreDir ourselves (src/nar, byte-identical to
   * `nix-store --dump`) instead of starting a dump process; default true. Paths this process
   * cannot read fall back to the process, and the bytes are checked against the registered
   * narHash either way.
   */
  packInProcess?: boolean
  /** How many path infos to remember (a valid path's info never changes); default 50 000. */
  infoCacheSize?: number
  /**
   * Take a path missing from realStoreDir as invalid without asking the store (a valid path is
   * always on disk). Default 'learn': trusted once a valid path was found there and never again
   * after one was not (this process does not see the store where it thinks). `true`: from the
   * start, for a store known to keep its files at realStoreDir (a plain local Nix store, whose
   * client this process starts); an empty store has no valid path to learn from. `false`: never.
   */
  trustLocalAbsence?: boolean | 'learn'
  /**
   * Ask validity, path infos and closures, and import, over long-lived store connections
   * (`CommandSet.serve`: `nix-store --serve --write`, one for questions and small imports, at
   * most two more for large imports) instead of a process per question; default true where the
   * backend has one. When the first connection cannot be opened, the client says so in its
   * debug log and starts processes as before.
   */
  serve?: boolean
  /** Imports of at most this many bytes share the questions' connection (default SHARED_IMPORT_BYTES). */
  sharedImportBytes?: number
}

/** Parse `nix-store --dump-db` registration info. */
export function parseRegInfo (text: string): PathInfo[] {
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  const out: PathInfo[] = []
  let i = 0
  const next = (what: string): string => {
    const l = lines[i++]
    if (l === undefined) throw new UnexpectedOutputError(`registration info ends before ${what} (line ${i})`)
    return l
  }
  while (i < lines.length) {
    const path = next('path')
    const hex = next('narHash')
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new UnexpectedOutputError(`bad narHash '${hex}' for ${path} in registration info`)
    const narSize = Number(next('narSize'))
    if (!Number.isSafeInteger(narSize)) throw new UnexpectedOutputError(`bad narSize for ${path} in registration info`)
    const deriver = next('deriver')
    const n = Number(next('reference count'))
    if (!Number.isSafeInteger(n) || n < 0) throw new UnexpectedOutputError(`bad reference count for ${path} in registration info`)
    const references: string[] = []
    for (let k = 0; k < n; k++) references.push(next('reference'))
    out.push({ path, narHash: formatSha256(Buffer.from(hex, 'hex')), narSize, references: references.sort(), ...(deriver !== '' ? { deriver } : {}) })
  }
  return out
}

/** Order infos so that every reference comes before its referrers. */
export function closureOrder (infos: PathInfo[]): string[] {
  const byPath = new Map(infos.map((i) => [i.path, i]))
  const done = new Set<string>()
  const out: string[] = []
  const visit = (p: string, stack: Set<string>): void => {
    if (done.has(p)) return
    const info = byPath.get(p)
    if (info === undefined) return
    if (stack.has(p)) throw new UnexpectedOutputError(`reference cycle through ${p}`)
    stack.add(p)
    for (const r of info.references) if (r !== p) visit(r, stack)
    stack.delete(p)
    done.add(p)
    out.push(p)
  }
  for (const p of [...byPath.keys()].sort()) visit(p, new Set())
  return out
}

const lines = (b: Buffer): string[] => b.toString('utf8').split('\n').filter((l) => l !== '')

function fromServe (i: ServePathInfo): PathInfo {
  return { path: i.path, narHash: formatSha256(parseSha256(i.narHash)), narSize: i.narSize, references: [...i.references].sort(), ...(i.deriver !== '' ? { deriver: i.deriver } : {}) }
}

const EXPORT_MAGIC = 0x4558494e // "NIXE"

/** What follows one path's NAR in an export stream: its name, references, deriver, no signature. */
function exportEntryTrailer (info: ImportInfo): Buffer {
  return Buffer.concat([
    u64(EXPORT_MAGIC), wireString(info.storePath), u64(info.references.length), ...info.references.map(wireString),
    wireString(info.deriver ?? ''), u64(0)
  ])
}

/** The trailer of a one-path export stream: the entry's, then the end marker. */
export function exportTrailer (info: ImportInfo): Buffer {
  return Buffer.concat([exportEntryTrailer(info), u64(0)])
}

async function write (w: Writable, chunk: Uint8Array): Promise<void> {
  if (w.destroyed || w.writableEnded) throw new ImportStreamClosedError('import process closed its input')
  if (!w.write(chunk)) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => { w.off('drain', ok); w.off('error', done); w.off('close', ok); err !== undefined ? reject(err) : resolve() }
      const ok = (): void => done()
      w.once('drain', ok); w.once('error', done); w.once('close', ok)
    })
  }
}

export class CliStore implements StoreDaemon {
  readonly kind: StoreKind
  readonly storeDir: string
  private readonly commands: CommandSet
  private readonly runner: ProcessRunner
  private readonly env: NodeJS.ProcessEnv
  private readonly realStoreDir: string
  private readonly infos: PathInfoCache
  private packInProcess: boolean
  /** Whether realStoreDir is known to show this store: undefined until a valid path was checked there. */
  private localViewTrusted: boolean | undefined
  /**
   * Paths the store said are valid. A valid path stays valid until a garbage collection, which
   * the node does not run; like the path infos, a path found gone is the caller's to report.
   * Invalid answers are never kept: a build or import makes them valid any moment.
   */
  private readonly knownValid = new Set<string>()

  private rememberValid (path: string): void {
    if (this.knownValid.size >= MAX_KNOWN_VALID) this.knownValid.delete(this.knownValid.values().next().value as string)
    this.knownValid.add(path)
  }

  /**
   * Long-lived store connections, queries apart from large imports so that one never holds up a
   * question (small imports share the questions' connection: a process start costs more than
   * they do); undefined: a process per question.
   */
  private readonly pool: ServePool | undefined
  private readonly importPool: ServePool | undefined
  private readonly sharedImportBytes: number

  /** Validity checks made together: one request or process (true: valid). */
  private readonly validity = new Coalescer<boolean>(async (paths) => {
    const served = await this.pool?.use(async (c) => await c.queryValidPaths(paths))
    if (served !== undefined) return new Map(paths.map((p) => [p, served.value.has(p)]))
    const invalid = new Set(lines((await this.run(this.commands.printInvalid(paths), 'checking validity')).stdout))
    return new Map(paths.map((p) => [p, !invalid.has(p)]))
  })

  /** Path-info queries made together: one request or process; a path left out of the answer is not valid. */
  private readonly pathInfos = new Coalescer<PathInfo>(async (paths) => {
    const served = await this.pool?.use(async (c) => await c.queryPathInfos(paths))
    if (served !== undefined) {
      // the server leaves invalid paths out of its answer
      const infos = served.value.map(fromServe)
      for (const i of infos) this.infos.set(i)
      if (this.localViewTrusted === undefined) await this.learnLocalView(infos.map((i) => i.path))
      return new Map(infos.map((i) => [i.path, i]))
    }
    const dump = async (ps: string[]): Promise<PathInfo[]> => parseRegInfo((await this.run(this.commands.dumpInfo(ps), `querying ${ps.length === 1 ? ps[0] : `${ps.length} paths`}`)).stdout.toString('utf8'))
    let infos: PathInfo[]
    try {
      infos = await dump(paths)
    } catch (e) {
      // one invalid path fails the whole query: ask again without the invalid ones (whose
      // callers then get PathNotValidError), so other callers' paths are not failed with it
      if (!(e instanceof PathNotValidError) || paths.length === 1) throw e
      const validity = await this.validity.get(paths)
      const valid = paths.filter((p) => validity.get(p) === true)
      infos = valid.length === 0 ? [] : await dump(valid)
    }
    for (const i of infos) this.infos.set(i)
    if (this.localViewTrusted === undefined) await this.learnLocalView(infos.map((i) => i.path))
    return new Map(infos.map((i) => [i.path, i]))
  })

  constructor (c: StoreComponents) {
    this.commands = c.commands
    this.kind = c.commands.kind
    this.runner = c.runner ?? defaultRunner
    this.env = c.env ?? process.env
    this.storeDir = c.storeDir ?? (this.kind === 'nix' ? this.env.NIX_STORE_DIR : undefined) ?? c.commands.defaultStoreDir
    this.realStoreDir = c.realStoreDir ?? this.storeDir
    this.infos = new PathInfoCache(c.infoCacheSize)
    this.packInProcess = c.packInProcess ?? true
    this.localViewTrusted = c.trustLocalAbsence === 'learn' || c.trustLocalAbsence === undefined ? undefined : c.trustLocalAbsence
    const serve = c.serve !== false ? c.commands.serve : undefined
    this.sharedImportBytes = c.sharedImportBytes ?? SHARED_IMPORT_BYTES
    // questions take a millisecond and are merged while one is asked (Coalescer): one server
    // answers them all, and small imports too; large imports get two more, so one of them does
    // not stall the rest
    this.pool = serve !== undefined ? new ServePool(this.runner, serve, this.env, { max: 1 }) : undefined
    this.importPool = serve !== undefined ? new ServePool(this.runner, serve, this.env, { max: 2 }) : undefined
  }

  /** Store connections opened so far (0 when questions go to processes). */
  get connectionsOpened (): number { return (this.pool?.opened ?? 0) + (this.importPool?.opened ?? 0) }

  async close (): Promise<void> {
    await Promise.all([this.pool?.close(), this.importPool?.close()])
  }

  connection (): StoreConnectionStatus {
    return { mode: this.pool?.available === true ? 'serve' : 'processes', opened: this.connectionsOpened }
  }

  /**
   * Which of `paths` exist under realStoreDir (lstat: a symlink path need not point anywhere).
   * Synchronous on purpose: an lstat of a cached directory entry takes microseconds, while the
   * promise API's thread-pool round trip per path was 6% of a busy builder's CPU (profile).
   */
  private async presentLocally (paths: string[]): Promise<boolean[]> {
    return paths.map((p) => {
      try {
        return lstatSync(this.localPath(p), { throwIfNoEntry: false }) !== undefined
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return false
        throw err
      }
    })
  }

  /** Learn from paths the store just called valid whether realStoreDir is where its files are. */
  private async learnLocalView (valid: string[]): Promise<void> {
    if (this.localViewTrusted === false || valid.length === 0) return
    const sample = valid.slice(0, 4)
    const present = await this.presentLocally(sample).catch(() => sample.map(() => false))
    if (present.every((x) => x)) {
      if (this.localViewTrusted === undefined) log('valid paths are under %s: a path missing there is taken as invalid', this.realStoreDir)
      this.localViewTrusted = true
    } else {
      log('%s is valid but not under %s: asking the store about every path', sample[present.indexOf(false)], this.realStoreDir)
      this.localViewTrusted = false
    }
  }

  /** Where this process reads a store path's files. */
  private localPath (p: string): string {
    return this.realStoreDir + p.slice(this.storeDir.length)
  }

  private checkPath (p: string): void {
    if (!p.startsWith(this.storeDir + '/') || p.slice(this.storeDir.length + 1).includes('/') || p.length < this.storeDir.length + 34) {
      throw new NotAStorePathError(`'${p}' is not a store path in ${this.storeDir}`)
    }
  }

  private async run (cmd: Command, what: string): Promise<Completed> {
    const r = await runToEnd(this.runner, cmd.command, cmd.args, { env: this.env, input: cmd.input })
    if (r.code !== 0) {
      const stderr = r.stderr.toString('utf8').trim()
      if (/is not valid/.test(stderr)) throw new PathNotValidError(`${what}: ${stderr}`)
      throw new StoreCommandError(`${what}: ${cmd.command} exited with ${r.code ?? r.signal}: ${stderr}`, cmd.command, r.code, stderr)
    }
    return r
  }

  async filterInvalid (paths: string[]): Promise<string[]> {
    if (paths.length === 0) return []
    paths.forEach((p) => this.checkPath(p))
    let ask = paths
    const absent = new Set<string>()
    if (this.localViewTrusted === true) {
      // a valid path is always on disk: only the ones there can be valid
      const present = await this.presentLocally(paths)
      paths.forEach((p, i) => { if (!present[i]) absent.add(p) })
      ask = paths.filter((p) => !absent.has(p))
    }
    // a path whose info we hold is valid (as queryPathInfos takes it); the rest, with whatever
    // else is asked at this moment, in one process
    ask = ask.filter((p) => !this.knownValid.has(p) && this.infos.get(p) === undefined)
    const answers = ask.length === 0 ? new Map<string, boolean | undefined>() : await this.validity.get(ask)
    const invalid = new Set(ask.filter((p) => answers.get(p) === false))
    for (const p of ask) if (!invalid.has(p)) this.rememberValid(p)
    if (this.localViewTrusted !== true) await this.learnLocalView(ask.filter((p) => !invalid.has(p)))
    return paths.filter((p) => absent.has(p) || invalid.has(p))
  }

  async isValid (path: string): Promise<boolean> {
    return (await this.filterInvalid([path])).length === 0
  }

  async queryPathInfos (paths: string[]): Promise<PathInfo[]> {
    if (paths.length === 0) return []
    paths.forEach((p) => this.checkPath(p))
    const unknown = [...new Set(paths.filter((p) => this.infos.get(p) === undefined))]
    const got = new Map<string, PathInfo>()
    if (unknown.length > 0) {
      // one process for all of them, and for what else is asked at this moment
      for (const [p, i] of await this.pathInfos.get(unknown)) if (i !== undefined) got.set(p, i)
    }
    return paths.map((p) => {
      const i = got.get(p) ?? this.infos.get(p)
      if (i === undefined) throw new PathNotValidError(`path '${p}' is not valid`)
      return i
    })
  }

  async queryPathInfo (path: string): Promise<PathInfo> {
    return (await this.queryPathInfos([path]))[0]
  }

  async queryRequisites (paths: string[]): Promise<string[]> {
    if (paths.length === 0) return []
    paths.forEach((p) => this.checkPath(p))
    // The roots' infos (one process for those not known yet) often close the closure with
    // what is known already: fresh .drv files and outputs whose references were imported or
    // published before. Only otherwise ask for the closure itself.
    await this.queryPathInfos(paths)
    const known = this.infos.closure(paths)
    if (known !== undefined) return closureOrder(known)
    const served = await this.pool?.use(async (c) => await c.queryClosure(paths))
    const closure = served?.value ?? lines((await this.run(this.commands.requisites(paths), `closure of ${paths.join(' ')}`)).stdout)
    return closureOrder(await this.queryPathInfos(closure))
  }

  async readDerivation (drvPath: string): Promise<Derivation> {
    const d = (await this.readDerivations([drvPath])).get(drvPath)
    if (d instanceof PathNotValidError) throw d
    return d as Derivation
  }

  async readDerivations (drvPaths: string[]): Promise<Map<string, Derivation | PathNotValidError>> {
    for (const p of drvPaths) {
      this.checkPath(p)
      if (!p.endsWith('.drv')) throw new NotAStorePathError(`'${p}' is not a .drv path`)
    }
    const invalid = new Set(await this.filterInvalid([...new Set(drvPaths)]))
    const out = new Map<string, Derivation | PathNotValidError>()
    for (const p of drvPaths) {
      out.set(p, invalid.has(p)
        ? new PathNotValidError(`derivation '${p}' is not valid in ${this.storeDir}`)
        : parseDerivation(readFileSync(this.localPath(p), 'utf8'))) // a few KiB: cheaper than a thread-pool round trip
    }
    return out
  }

  async exportPath (path: string): Promise<{ info: PathInfo, nar: Readable }> {
    let info = await this.queryPathInfo(path)
    if (this.packInProcess) {
      const local = this.localPath(path)
      const present = await lstat(local).then(() => true, (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return false
        throw err
      })
      if (present) {
        const nar = this.packLocal(path, local, info)
        if (nar !== undefined) return { info, nar }
      } else {
        // Gone since we learned its info (garbage collected), or this process does not see
        // the store where it thinks: ask the store again, and stop reading files here if it
        // still says the path is valid.
        this.infos.delete(path)
        info = await this.queryPathInfo(path)
        log('%s is valid but not under %s: making NARs with %s from now on', path, this.realStoreDir, this.commands.dump(path).command)
        this.packInProcess = false
        this.localViewTrusted = false
      }
    }
    return { info, nar: this.dumpProcess(path, info) }
  }

  /**
   * The NAR of `path` packed here from `local`, checked against its registered narHash and size
   * at the end (the stream errors instead of ending when they differ). Undefined when this
   * process may not read the path: the caller falls back to the dump process.
   */
  private packLocal (path: string, local: string, info: PathInfo): Readable | undefined {
    const gen = packNarSync(local)
    let first: IteratorResult<Buffer, void>
    try {
      // Small paths are packed whole right here, so an unreadable one is noticed before any byte is handed out.
      first = gen.next()
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EACCES' && code !== 'EPERM') throw err
      log('cannot read %s (%s): making NARs with %s from now on', local, code, this.commands.dump(path).command)
      this.packInProcess = false
      return undefined
    }
    const infos = this.infos
    const chunks = function * (): Generator<Buffer, void, undefined> {
      const hash = createHash('sha256')
      let size = 0
      for (let r = first; r.done !== true; r = gen.next()) {
        hash.update(r.value)
        size += r.value.length
        yield r.value
      }
      const got = formatSha256(hash.digest())
      if (got !== info.narHash || size !== info.narSize) {
        infos.delete(path) // perhaps collected and made again since: ask the store next time
        throw new NarHashMismatchError(`store path ${path} packs to ${got} (${size} bytes) but is registered as ${info.narHash} (${info.narSize} bytes): the store is corrupt or changed`)
      }
    }
    return Readable.from(chunks(), { objectMode: false })
  }

  /** The NAR of `path` from the store's dump process, checked like packLocal. */
  private dumpProcess (path: string, info: PathInfo): Readable {
    const cmd = this.commands.dump(path)
    const p = this.runner.start(cmd.command, cmd.args, { env: this.env })
    const out = new PassThrough()
    const hash = createHash('sha256')
    let size = 0
    const err: Buffer[] = []
    p.stderr.on('data', (b: Buffer) => err.push(b))
    p.stdout.on('data', (b: Buffer) => { hash.update(b); size += b.length })
    p.stdout.pipe(out, { end: false })
    // Let the consumer stop early without leaving a dumper behind.
    out.once('close', () => { if (!out.writableEnded) p.kill('SIGTERM') })
    p.exited.then(({ code, signal }) => {
      if (code !== 0) {
        out.destroy(new StoreCommandError(`dumping ${path}: ${cmd.command} exited with ${code ?? signal}: ${Buffer.concat(err).toString().trim()}`, cmd.command, code, Buffer.concat(err).toString()))
        return
      }
      const got = formatSha256(hash.digest())
      if (got !== info.narHash || size !== info.narSize) {
        this.infos.delete(path)
        out.destroy(new NarHashMismatchError(`store path ${path} dumps to ${got} (${size} bytes) but is registered as ${info.narHash} (${info.narSize} bytes): the store is corrupt`))
        return
      }
      out.end()
    }, (e: Error) => out.destroy(e))
    return out
  }

  async importPath (info: ImportInfo, nar: AsyncIterable<Uint8Array>): Promise<void> {
    await this.importPaths([{ info, nar }])
  }

  /**
   * Import several paths through ONE import process (one export stream with an entry per path),
   * in the order given: a path's references must be valid already or come earlier in `items`.
   * Paths already valid are skipped (their streams not read). Each NAR is hashed as it is written
   * and its trailer (which names the path) is sent only once the bytes matched, so a bad NAR is
   * never registered; the paths before it may be. Returns how many paths were imported.
   */
  async importPaths (items: ImportItem[]): Promise<number> {
    for (const { info } of items) {
      this.checkPath(info.storePath)
      info.references.forEach((r) => this.checkPath(r))
      if (info.deriver !== undefined && info.deriver !== '') this.checkPath(info.deriver)
    }
    const cmd = this.commands.importExport
    if (cmd === undefined) throw new ImportUnsupportedError(`the ${this.kind} store cannot import ${items[0]?.info.storePath ?? 'paths'} from a NAR; substitute it from a node's HTTP front instead`)
    const invalid = new Set(items.length === 0 ? [] : await this.filterInvalid(items.map((i) => i.info.storePath)))
    const todo = items.filter((i) => invalid.has(i.info.storePath))
    for (const i of items) if (!invalid.has(i.info.storePath)) log('%s is already valid', i.info.storePath)
    if (todo.length === 0) return 0
    const coming = new Set(todo.map((i) => i.info.storePath))
    const outside = [...new Set(todo.flatMap((i) => i.info.references.filter((r) => r !== i.info.storePath && !coming.has(r))))]
    const absent = new Set(outside.length === 0 ? [] : await this.filterInvalid(outside))
    const before = new Set<string>()
    for (const { info } of todo) {
      const missing = info.references.filter((r) => r !== info.storePath && (absent.has(r) || (coming.has(r) && !before.has(r))))
      if (missing.length > 0) throw new MissingReferencesError(`cannot import ${info.storePath}: references not valid yet: ${missing.join(' ')}`, missing)
      before.add(info.storePath)
    }
    const wants = todo.map((i) => parseSha256(i.info.narHash))
    const what = todo.length === 1 ? todo[0].info.storePath : `${todo.length} paths (${todo[0].info.storePath}, …)`
    // a batch's .drv files are a few KiB: they share the questions' connection (a process start
    // cost more than the import), read to the end first so a slow source never holds it
    const shared = todo.reduce((sum, i) => sum + i.info.narSize, 0) <= this.sharedImportBytes
    const sources = shared ? await Promise.all(todo.map(async (i) => await readUpTo(i.nar, i.info.narSize + 1))) : todo.map((i) => i.nar)
    /** The export stream, each NAR checked before the trailer that names its path. */
    const stream = async (put: (b: Uint8Array) => Promise<void>): Promise<void> => {
      for (const [k, { info }] of todo.entries()) {
        const nar = sources[k]
        const hash = createHash('sha256')
        let size = 0
        await put(u64(1))
        for await (const chunk of nar) {
          size += chunk.length
          if (size > info.narSize) throw new NarHashMismatchError(`NAR for ${info.storePath} is longer than its narSize ${info.narSize}`)
          hash.update(chunk)
          await put(chunk)
        }
        if (size !== info.narSize) throw new NarHashMismatchError(`NAR for ${info.storePath} is ${size} bytes, expected narSize ${info.narSize}`)
        const got = hash.digest()
        if (!got.equals(wants[k])) throw new NarHashMismatchError(`NAR for ${info.storePath} hashes to ${formatSha256(got)}, expected ${formatSha256(wants[k])}`)
        // Only now does the daemon learn the path name: nothing was registered for it before this.
        await put(exportEntryTrailer(info))
      }
      await put(u64(0))
    }

    let served: { value: void } | undefined
    try {
      served = await (shared ? this.pool : this.importPool)?.use(async (c) => { await c.importPaths(stream) })
    } catch (e) {
      // the server refused (a reference not valid, store locked, disk full…): its words
      if (e instanceof ServeClosedError) throw new StoreCommandError(`importing ${what}: ${e.message}`, cmd.command, null, e.stderr)
      throw e
    }
    if (served === undefined) await this.importProcess(cmd, what, stream)
    // what the store registered: the NARs we hashed, the references and derivers we sent
    for (const [k, { info }] of todo.entries()) {
      this.infos.set({ path: info.storePath, narHash: formatSha256(wants[k]), narSize: info.narSize, references: [...info.references].sort(), ...(info.deriver !== undefined && info.deriver !== '' ? { deriver: info.deriver } : {}) })
    }
    log('imported %s', what)
    // a builder's store starts empty and learns of paths by importing them: without this it
    // never finds a valid path to ask about, and every absent path costs a store process
    if (this.localViewTrusted === undefined) await this.learnLocalView(todo.map((i) => i.info.storePath))
    return todo.length
  }

  /** One `nix-store --import` process reading what `stream` writes. */
  private async importProcess (cmd: Command, what: string, stream: (put: (b: Uint8Array) => Promise<void>) => Promise<void>): Promise<void> {
    const p = this.runner.start(cmd.command, cmd.args, { env: this.env, stdin: true })
    const stdin = p.stdin
    if (stdin === null) throw new DaemonError('import process has no stdin')
    stdin.on('error', () => {}) // EPIPE if nix-store dies; its exit status is what we report
    const err: Buffer[] = []
    p.stderr.on('data', (b: Buffer) => err.push(b))
    p.stdout.resume()
    try {
      await stream(async (b) => { await write(stdin, b) })
      stdin.end()
    } catch (e) {
      p.kill('SIGKILL')
      const exit = await p.exited.catch(() => undefined)
      if (e instanceof NarHashMismatchError || exit === undefined || exit.code === null) throw e
      // nix-store stopped reading on its own (store locked, disk full…): report its words, not EPIPE.
      const stderr = Buffer.concat(err).toString('utf8').trim()
      throw new StoreCommandError(`importing ${what}: ${cmd.command} exited with ${exit.code}: ${stderr}`, cmd.command, exit.code, stderr)
    }
    const { code, signal } = await p.exited
    if (code !== 0) {
      const stderr = Buffer.concat(err).toString('utf8').trim()
      throw new StoreCommandError(`importing ${what}: ${cmd.command} exited with ${code ?? signal}: ${stderr}`, cmd.command, code, stderr)
    }
  }
}

export function nixStore (opts: Omit<StoreComponents, 'commands'> = {}): CliStore {
  return new CliStore({ ...opts, commands: NIX_COMMANDS })
}

let guixScript: Promise<string> | undefined
/** Where the Guile helper for `guix repl` lives: one file per script version, shared by all processes. */
export async function guixScriptPath (): Promise<string> {
  guixScript ??= (async () => {
    const f = join(tmpdir(), `guix-swarm-store-info-${createHash('sha256').update(GUIX_SCRIPT).digest('hex').slice(0, 16)}.scm`)
    await writeScriptFile(f, GUIX_SCRIPT)
    return f
  })()
  return await guixScript
}

export async function guixStore (opts: Omit<StoreComponents, 'commands'> = {}): Promise<CliStore> {
  return new CliStore({ ...opts, commands: guixCommands(await guixScriptPath()) })
}

/** The chunks of `source`, stopping once more than `limit` bytes came (the caller's size check then fails). */
async function readUpTo (source: AsyncIterable<Uint8Array>, limit: number): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of source) {
    chunks.push(chunk)
    size += chunk.length
    if (size >= limit) break
  }
  return chunks
}
