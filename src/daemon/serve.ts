// A long-lived store connection: `nix-store --serve --write` speaks Nix's serve protocol (the
// one `ssh://` stores use) on stdin/stdout, so validity, path-info, closure and import questions
// cost a few bytes on a pipe instead of a store process each (~0.1 s of CPU under load here).
//
// Wire format (Nix 2.8, nix-store.cc opServe; checked against nix-store 2.8.0 here): u64 little
// endian; strings as u64 length, bytes, zero padding to 8; sets as u64 count then strings.
// Handshake: client SERVE_MAGIC_1 + version, server SERVE_MAGIC_2 + version. A command the
// server cannot carry out ends the process with its error on stderr, so a failed request costs
// the connection: the pool drops it and the next request starts a new one.
import { logger } from '@libp2p/logger'
import type { Command } from './commands.js'
import { PathNotValidError, ServeClosedError, ServeProtocolError } from './errors.js'
import type { ProcessRunner, RunningProcess } from './runner.js'

const log = logger('guix-swarm:daemon:serve')

const SERVE_MAGIC_1 = 0x390c9deb
const SERVE_MAGIC_2 = 0x5452eecb
/** 2.5: path infos carry narHash, content address and signatures (minor ≥ 4). */
const CLIENT_VERSION = 0x205

const CMD_QUERY_VALID_PATHS = 1
const CMD_QUERY_PATH_INFOS = 2
const CMD_IMPORT_PATHS = 4
const CMD_BUILD_PATHS = 6
const CMD_QUERY_CLOSURE = 7

/** Longest string we accept from the server (a store path, a hash, a signature). */
const MAX_STRING = 1 << 20
/** Largest set we accept in one answer. */
const MAX_COUNT = 10_000_000
/** Bytes of the server's stderr kept for error messages. */
const STDERR_KEEP = 8192

/** Per-request build settings of the serve protocol (seconds; 0: no limit). */
export interface ServeBuildSettings { maxSilentTime: number, timeout: number }

export interface ServeStartOptions {
  /** Own process group, so a build's whole tree can be killed (see CliBuilder.killBuild). */
  detached?: boolean
}

export interface ServePoolOptions extends ServeStartOptions {
  /** Connections open at once (default 2); a request waits for a free one. */
  max?: number
  /** Close a connection after this many requests (default: never). */
  maxUses?: number
  /** Close a connection idle this long (default: never). */
  idleMs?: number
}

export interface ServePathInfo {
  path: string
  deriver: string
  references: string[]
  narSize: number
  /** `sha256:<nix-base32>` */
  narHash: string
}

export function u64 (n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

export function wireString (s: string): Buffer {
  const body = Buffer.from(s, 'utf8')
  const pad = (8 - body.length % 8) % 8
  return Buffer.concat([u64(body.length), body, Buffer.alloc(pad)])
}

function wireStrings (list: readonly string[]): Buffer {
  return Buffer.concat([u64(list.length), ...list.map(wireString)])
}

/** Reads the server's answers; one read at a time (the protocol is strictly request/answer). */
class WireReader {
  private chunks: Buffer[] = []
  private length = 0
  private ended: Error | undefined
  private waiter: { n: number, resolve: (b: Buffer) => void, reject: (e: Error) => void } | undefined

  push (b: Buffer): void {
    this.chunks.push(b)
    this.length += b.length
    this.pump()
  }

  end (err: Error): void {
    this.ended ??= err
    this.pump()
  }

  private pump (): void {
    const w = this.waiter
    if (w === undefined) return
    if (this.length >= w.n) {
      this.waiter = undefined
      w.resolve(this.take(w.n))
    } else if (this.ended !== undefined) {
      this.waiter = undefined
      w.reject(this.ended)
    }
  }

  private take (n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks)
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    this.chunks = rest.length > 0 ? [rest] : []
    this.length = rest.length
    return out
  }

  async bytes (n: number): Promise<Buffer> {
    if (this.length >= n) return this.take(n)
    if (this.ended !== undefined) throw this.ended
    return await new Promise((resolve, reject) => { this.waiter = { n, resolve, reject } })
  }

  async u64 (): Promise<number> {
    const v = (await this.bytes(8)).readBigUInt64LE()
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ServeProtocolError(`number ${v} out of range in the serve protocol`)
    return Number(v)
  }

  async string (): Promise<string> {
    const n = await this.u64()
    if (n > MAX_STRING) throw new ServeProtocolError(`string of ${n} bytes in the serve protocol`)
    const padded = n + (8 - n % 8) % 8
    return (await this.bytes(padded)).subarray(0, n).toString('utf8')
  }

  async strings (): Promise<string[]> {
    const n = await this.u64()
    if (n > MAX_COUNT) throw new ServeProtocolError(`list of ${n} strings in the serve protocol`)
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(await this.string())
    return out
  }
}

/** One `nix-store --serve --write` process, used by one request at a time. */
export class ServeConnection {
  private readonly reader = new WireReader()
  private stderr = ''
  /** Where the current request's stderr goes as well (a build's log). */
  private stderrSink: ((b: Buffer) => void) | undefined
  private closed = false
  private readonly exited: Promise<void>

  private constructor (private readonly proc: RunningProcess, private readonly command: string) {
    proc.stdout.on('data', (b: Buffer) => this.reader.push(b))
    proc.stderr.on('data', (b: Buffer) => {
      this.stderr = (this.stderr + b.toString('utf8')).slice(-STDERR_KEEP)
      this.stderrSink?.(b)
    })
    proc.stdin?.on('error', () => {}) // EPIPE once the server died: its stderr says why
    this.exited = proc.exited.then((e) => {
      this.closed = true
      this.reader.end(new ServeClosedError(`${command} --serve exited with ${e.code ?? e.signal}${this.stderr.trim() !== '' ? `: ${this.stderr.trim()}` : ''}`, this.stderr.trim()))
    }, (err: Error) => {
      this.closed = true
      this.reader.end(err)
    })
  }

  /** Start the server and greet it; throws ServeProtocolError when it does not speak the protocol. */
  static async open (runner: ProcessRunner, cmd: Command, env: NodeJS.ProcessEnv, opts: ServeStartOptions = {}): Promise<ServeConnection> {
    const proc = runner.start(cmd.command, cmd.args, { env, stdin: true, detached: opts.detached === true })
    const c = new ServeConnection(proc, cmd.command)
    try {
      c.write(Buffer.concat([u64(SERVE_MAGIC_1), u64(CLIENT_VERSION)]))
      const magic = await c.reader.u64()
      if (magic !== SERVE_MAGIC_2) throw new ServeProtocolError(`${cmd.command} --serve answered the greeting with ${magic.toString(16)}`)
      const version = await c.reader.u64()
      if (version >> 8 !== 2 || (version & 0xff) < 4) throw new ServeProtocolError(`${cmd.command} --serve speaks protocol ${version >> 8}.${version & 0xff}; 2.4 or later is needed`)
      log('connected to %s (pid %d, protocol %d.%d)', cmd.command, proc.pid, version >> 8, version & 0xff)
      return c
    } catch (err) {
      c.kill()
      if (err instanceof ServeClosedError) throw new ServeProtocolError(`${cmd.command} does not serve: ${err.message}`)
      throw err
    }
  }

  get alive (): boolean { return !this.closed }

  /** The server process (to kill a build's whole tree). */
  get process (): RunningProcess { return this.proc }

  /** Keep (or stop keeping) this process's event loop alive for the connection. */
  setRef (on: boolean): void { this.proc.setRef?.(on) }

  write (b: Buffer): void {
    if (this.closed || this.proc.stdin === null) throw this.closedError()
    this.proc.stdin.write(b)
  }

  /** Write, waiting for the pipe to drain (large NARs). */
  async writeDrained (b: Uint8Array): Promise<void> {
    const w = this.proc.stdin
    if (this.closed || w === null || w.destroyed) throw this.closedError()
    if (w.write(b)) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => { w.off('drain', done); w.off('close', gone); w.off('error', gone); resolve() }
      // the server stopped reading: give it a moment to exit, so the error quotes its stderr
      const gone = (): void => {
        w.off('drain', done); w.off('close', gone); w.off('error', gone)
        const t = setTimeout(() => reject(this.closedError()), 1000)
        void this.exited.then(() => { clearTimeout(t); reject(this.closedError()) })
      }
      w.once('drain', done); w.once('close', gone); w.once('error', gone)
    })
  }

  private closedError (): ServeClosedError {
    return new ServeClosedError(`${this.command} --serve has exited${this.stderr.trim() !== '' ? `: ${this.stderr.trim()}` : ''}`, this.stderr.trim())
  }

  /** Start a request: forget the stderr of earlier ones, so errors quote this one's. */
  private begin (): void {
    this.stderr = ''
  }

  async queryValidPaths (paths: readonly string[]): Promise<Set<string>> {
    this.begin()
    this.write(Buffer.concat([u64(CMD_QUERY_VALID_PATHS), u64(0), u64(0), wireStrings(paths)]))
    return new Set(await this.reader.strings())
  }

  /** Infos of the valid ones among `paths` (invalid ones are left out). */
  async queryPathInfos (paths: readonly string[]): Promise<ServePathInfo[]> {
    this.begin()
    this.write(Buffer.concat([u64(CMD_QUERY_PATH_INFOS), wireStrings(paths)]))
    const out: ServePathInfo[] = []
    for (;;) {
      const path = await this.reader.string()
      if (path === '') return out
      const deriver = await this.reader.string()
      const references = await this.reader.strings()
      await this.reader.u64() // download size (= narSize)
      const narSize = await this.reader.u64()
      const narHash = await this.reader.string()
      await this.reader.string() // content address
      await this.reader.strings() // signatures
      out.push({ path, deriver, references, narSize, narHash })
    }
  }

  /** The closure of `paths` (unordered); PathNotValidError when one is not valid. */
  async queryClosure (paths: readonly string[]): Promise<string[]> {
    this.begin()
    this.write(Buffer.concat([u64(CMD_QUERY_CLOSURE), u64(0), wireStrings(paths)]))
    try {
      return await this.reader.strings()
    } catch (err) {
      if (err instanceof ServeClosedError && /is not valid/.test(err.stderr)) throw new PathNotValidError(`closure of ${paths.join(' ')}: ${err.stderr}`)
      throw err
    }
  }

  /**
   * Build `paths` (.drv files: all their outputs) with the settings the server was started with
   * (keep-going, max-jobs, build hook…) plus these. The server's stderr meanwhile (its log, in
   * the format it was started with) goes to `onStderr`. Status 0 is success; otherwise Nix's
   * exit status for the failure (100 build failed, 101 timed out…) and its message.
   */
  async buildPaths (paths: readonly string[], s: ServeBuildSettings, onStderr: (b: Buffer) => void): Promise<{ status: number, message: string }> {
    this.begin()
    this.stderrSink = onStderr
    try {
      // protocol 2.5: max-silent-time, timeout, max-log-size (0: none), repeat, enforce-determinism
      this.write(Buffer.concat([u64(CMD_BUILD_PATHS), wireStrings(paths), u64(s.maxSilentTime), u64(s.timeout), u64(0), u64(0), u64(0)]))
      const status = await this.reader.u64()
      const message = status === 0 ? '' : await this.reader.string()
      // Nix wrote the log before the answer, but the two pipes are read independently: let
      // the last stderr chunk arrive before the log is closed
      await new Promise((resolve) => setImmediate(resolve))
      await new Promise((resolve) => setTimeout(resolve, 0))
      return { status, message }
    } finally {
      this.stderrSink = undefined
    }
  }

  /**
   * Import an export stream (`1, NAR, NIXE, path, refs, deriver, 0` … `0`) that `body` writes.
   * The server reads each NAR whole before the entry's trailer names the path, so a body that
   * throws part-way (a NAR that does not match) registers nothing of that entry: the caller must
   * then kill the connection.
   */
  async importPaths (body: (write: (b: Uint8Array) => Promise<void>) => Promise<void>): Promise<void> {
    this.begin()
    this.write(u64(CMD_IMPORT_PATHS))
    await body(async (b) => { await this.writeDrained(b) })
    const ok = await this.reader.u64()
    if (ok !== 1) throw new ServeProtocolError(`import answered ${ok}, expected 1`)
  }

  kill (): void {
    this.closed = true
    this.proc.kill('SIGKILL')
  }

  /** End the session: the server exits when its input ends. */
  async close (): Promise<void> {
    if (!this.closed) this.proc.stdin?.end()
    const t = setTimeout(() => { this.proc.kill('SIGKILL') }, 2000)
    await this.exited
    clearTimeout(t)
  }
}

/**
 * Up to `max` connections, opened on demand; a request waits for a free one. When the first
 * connection cannot be opened (not Nix, too old), the pool says so once and `use` returns
 * undefined from then on: the caller goes back to one process per question.
 */
export class ServePool {
  private readonly idle: ServeConnection[] = []
  private open = 0
  private readonly waiting: Array<(c: ServeConnection | undefined) => void> = []
  private unavailable = false
  private everOpened = false
  /** Bumped by close(): connections of an older generation are closed when released. */
  private generation = 0
  private readonly born = new WeakMap<ServeConnection, number>()
  /** Connections opened so far (for status and tests). */
  opened = 0

  private readonly max: number
  private readonly uses = new WeakMap<ServeConnection, number>()

  constructor (private readonly runner: ProcessRunner, private readonly cmd: Command, private readonly env: NodeJS.ProcessEnv, private readonly opts: ServePoolOptions = {}) {
    this.max = opts.max ?? 2
  }

  get available (): boolean { return !this.unavailable }

  /** Run `fn` on a connection of its own; undefined when the server is unavailable. */
  async use<T> (fn: (c: ServeConnection) => Promise<T>): Promise<{ value: T } | undefined> {
    const c = await this.acquire()
    if (c === undefined) return undefined
    c.setRef(true)
    let ok = false
    try {
      const value = await fn(c)
      ok = true
      return { value }
    } finally {
      this.release(c, ok)
    }
  }

  private async acquire (): Promise<ServeConnection | undefined> {
    if (!this.available) return undefined
    // a connection whose server died while idle (killed, out of memory) is dropped, not used
    for (let c = this.idle.pop(); c !== undefined; c = this.idle.pop()) {
      if (c.alive) return c
      this.open--
    }
    if (this.open >= this.max) return await new Promise((resolve) => this.waiting.push(resolve))
    this.open++
    try {
      const c = await ServeConnection.open(this.runner, this.cmd, this.env, this.opts)
      this.born.set(c, this.generation)
      this.everOpened = true
      this.opened++
      return c
    } catch (err) {
      this.open--
      if (this.everOpened) throw err // it worked before: a passing failure, not a missing feature
      this.unavailable = true
      log('no store connection (%s): one store process per question instead', (err as Error).message)
      for (const w of this.waiting.splice(0)) w(undefined)
      return undefined
    }
  }

  private release (c: ServeConnection, ok: boolean): void {
    const uses = (this.uses.get(c) ?? 0) + 1
    this.uses.set(c, uses)
    if (!ok || !c.alive || this.born.get(c) !== this.generation || uses >= (this.opts.maxUses ?? Infinity)) {
      // a request that failed part-way leaves the protocol out of step: never reuse it
      if (ok && c.alive) void c.close()
      else c.kill()
      this.open--
      const w = this.waiting.shift()
      if (w !== undefined) void this.acquire().then(w, () => w(undefined))
      return
    }
    const w = this.waiting.shift()
    if (w !== undefined) { w(c); return }
    c.setRef(false)
    this.idle.push(c)
    if (this.opts.idleMs !== undefined) {
      setTimeout(() => {
        const i = this.idle.indexOf(c)
        if (i < 0 || (this.uses.get(c) ?? 0) !== uses) return // in use since, or gone
        this.idle.splice(i, 1)
        this.open--
        void c.close()
      }, this.opts.idleMs).unref()
    }
  }

  /** Close the connections (those in use once released); later requests open new ones. */
  async close (): Promise<void> {
    this.generation++
    const idle = this.idle.splice(0)
    this.open -= idle.length
    await Promise.all(idle.map(async (c) => { await c.close() }))
  }
}
