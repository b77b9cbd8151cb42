// Builders: run `nix-store --realise` / `guix build` on a .drv, stream the log, and say how it ended.
import { logger } from '@libp2p/logger'
import type { BuildFlags, Command, CommandSet, StoreKind } from './commands.js'
import { derivationOutputPaths } from './derivation.js'
import type { Derivation } from './derivation.js'
import { DaemonError, PathNotValidError } from './errors.js'
import { isAlive, processTree, signalTree } from './proctree.js'
import { InternalJsonLogRouter } from './internal-json.js'
import { defaultRunner, runToEnd, type Exit, type ProcessRunner, type RunningProcess } from './runner.js'
import type { StoreDaemon } from './store.js'
import { ServePool, type ServeBuildSettings } from './serve.js'
import { NIX_CMD, nixBuildLimits } from './detect.js'

const log = logger('guix-swarm:daemon:builder')

export type BuildOutcome =
  | { kind: 'success', outputs: Record<string, string> }
  | { kind: 'failed', exitCode: number | null, message: string }
  | { kind: 'missing-inputs', missing: string[] }
  | { kind: 'setup-failed', message: string }
  | { kind: 'canceled' }

export interface BuildOptions {
  signal: AbortSignal
  onLog: (chunk: Buffer) => void
  /** Register the outputs as GC roots at this file name (Nix adds `-<output>` for other outputs), so they survive until made into NARs. */
  gcRoot?: string
}

/** One derivation's part of a batch handed to `buildMany`. */
export interface BatchItem {
  drvPath: string
  /** As BuildOptions.gcRoot, for this derivation's outputs (R, R-<output>). */
  gcRoot?: string
  /** This derivation's own log lines (and the daemon's messages that name it). */
  onLog: (chunk: Buffer) => void
}

export interface BuildManyOptions {
  /** Aborting kills the whole batch; every item without an outcome yet ends `canceled`. */
  signal: AbortSignal
  /** Concurrent builds inside the batch (Nix --max-jobs); default 1. */
  maxJobs?: number
  /** Called once per item as soon as its outcome is known. */
  onOutcome?: (drvPath: string, outcome: BuildOutcome) => void
  /**
   * Root the outputs the way one client roots them, instead of at each item's gcRoot: the k-th
   * derivation built (items order, after the prechecks) at `gcRootBase` (k = 1) or
   * `gcRootBase-k`, plus `-<output>` beyond `out`. The caller removes `gcRootBase` and
   * `gcRootBase-*` once it is done with all of them. Saves a store process per built item
   * when the whole batch succeeds.
   */
  gcRootBase?: string
}

export interface Builder {
  readonly kind: StoreKind
  build: (drvPath: string, opts: BuildOptions) => Promise<BuildOutcome>
  /**
   * Build several independent derivations (none an input of another) with ONE daemon client;
   * one outcome per item, keyed by drvPath, classified as `build` would. Never throws.
   * Undefined when the backend cannot tell the builds' logs apart (Guix).
   */
  buildMany?: (items: BatchItem[], opts: BuildManyOptions) => Promise<Map<string, BuildOutcome>>
  /** Let go of long-lived build connections (they reopen when building again). */
  close?: () => Promise<void>
}

export interface BuilderComponents {
  commands: CommandSet
  store: StoreDaemon
  runner?: ProcessRunner
  env?: NodeJS.ProcessEnv
}

export interface BuilderOptions extends Partial<BuildFlags> {
  /**
   * `build` (default): input derivations whose outputs are neither valid nor substitutable are
   * built here too. `require`: input outputs must be valid or fetched from the substituters
   * (trusted signatures) before the build starts, else they are reported as missing-inputs (their
   * .drv paths), so the scheduler can wait for the swarm to build them. (Nix substitutes them
   * first with `nix-store --realise OUTPATH`, which never builds; Guix uses a dry run, which
   * cannot see signatures.)
   */
  inputs?: 'build' | 'require'
  /** How long a canceled build gets to clean up after SIGTERM before SIGKILL. */
  killGraceMs?: number
  /**
   * Build over long-lived connections (`CommandSet.serveBuild`: `nix-store --serve --write`)
   * instead of a `nix-store --realise` per batch; default true where the backend has them and
   * no substituter is set (the serve protocol turns substitution off). See serveBuilds in
   * src/daemon/README.md for what differs.
   */
  serveBuilds?: boolean
}

/**
 * Build connections: a request each, so as many as builds run at once; each is closed after
 * BUILD_CONNECTION_USES batches or BUILD_CONNECTION_IDLE_MS idle, which lets go of the
 * temporary GC roots Nix keeps for everything a process built.
 */
const BUILD_CONNECTIONS = 16
const BUILD_CONNECTION_USES = 50
const BUILD_CONNECTION_IDLE_MS = 30_000

/** Dry-run output (Nix and Guix alike): section headers, then indented store paths. */
export function parseDryRun (text: string): { toBuild: string[], toFetch: string[] } {
  const toBuild: string[] = []
  const toFetch: string[] = []
  let section: string[] | undefined
  for (const line of text.split('\n')) {
    const m = /^\s+(\/\S+)\s*$/.exec(line)
    if (m !== null) { section?.push(m[1]); continue }
    if (/\bbuilt\b/.test(line)) section = toBuild
    else if (/\b(fetched|downloaded)\b/.test(line)) section = toFetch
    else section = undefined
  }
  return { toBuild, toFetch }
}

const MISSING_PATTERNS = [
  /don't know how to build these paths:\n((?:\s+\/\S+\n?)+)/g,
  /cannot build missing derivation '([^']+)'/g,
  /path [`']([^'`]+)' is not valid/g,
  /path [`']([^'`]+)' does not exist and cannot be created/g
]

/** Store paths the daemon said it could neither find nor build. */
export function missingFromLog (log: string): string[] {
  const out = new Set<string>()
  for (const re of MISSING_PATTERNS) {
    for (const m of log.matchAll(re)) for (const p of m[1].split(/\s+/)) if (p.startsWith('/')) out.add(p)
  }
  return [...out]
}

const FAILED_PATTERNS = [/builder for [`']([^'`]+)' failed/, /build of [`']?\S+[`']? failed/, /hash mismatch in fixed-output derivation/]

/** Classify a finished build from its exit status and the tail of its log; undefined on success. */
export function classifyExit (commands: CommandSet, command: string, code: number | null, signal: NodeJS.Signals | null, logTail: string): BuildOutcome | undefined {
  if (code === 0) return undefined
  const missing = missingFromLog(logTail)
  if (missing.length > 0) return { kind: 'missing-inputs', missing }
  const errLine = logTail.split('\n').reverse().find((l) => /error:/.test(l))?.trim()
  const message = errLine ?? `${command} exited with ${code ?? signal}`
  if ((code !== null && commands.buildFailedCodes.includes(code)) || FAILED_PATTERNS.some((re) => re.test(logTail))) {
    return { kind: 'failed', exitCode: code, message }
  }
  return { kind: 'setup-failed', message }
}

const TAIL_BYTES = 64 * 1024
/** Root-making clients run at once after a batch. */
const ROOT_CONCURRENCY = 4

type Precheck = { kind: 'ready', outputs: Record<string, string> } | { kind: 'done', outcome: BuildOutcome }

async function forEachLimit<T> (xs: T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => { while (next < xs.length) await fn(xs[next++]) }
  await Promise.all(Array.from({ length: Math.min(limit, xs.length) }, worker))
}

export class CliBuilder implements Builder {
  readonly kind: StoreKind
  private readonly commands: CommandSet
  private readonly store: StoreDaemon
  private readonly runner: ProcessRunner
  private readonly env: NodeJS.ProcessEnv
  private readonly flags: BuildFlags
  private readonly inputs: 'build' | 'require'
  private readonly killGraceMs: number
  readonly buildMany?: (items: BatchItem[], opts: BuildManyOptions) => Promise<Map<string, BuildOutcome>>
  /** Long-lived build connections; undefined: a client process per batch. */
  private readonly buildPool: ServePool | undefined
  private limits: Promise<ServeBuildSettings> | undefined

  constructor (c: BuilderComponents, opts: BuilderOptions = {}) {
    this.commands = c.commands
    this.kind = c.commands.kind
    this.store = c.store
    this.runner = c.runner ?? defaultRunner
    this.env = c.env ?? process.env
    this.flags = {
      substituters: opts.substituters ?? [],
      trustedPublicKeys: opts.trustedPublicKeys ?? [],
      ...(opts.maxSilentTime !== undefined ? { maxSilentTime: opts.maxSilentTime } : {}),
      ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
      ...(opts.buildHook !== undefined ? { buildHook: opts.buildHook } : {})
    }
    this.inputs = opts.inputs ?? 'build'
    this.killGraceMs = opts.killGraceMs ?? 3000
    // only where the log can be told apart per build (not Guix)
    if (c.commands.buildMany !== undefined) this.buildMany = async (items, o) => await this.runMany(items, o)
    const serve = c.commands.serveBuild !== undefined && c.commands.buildMany !== undefined && opts.serveBuilds !== false && this.flags.substituters.length === 0
      ? c.commands.serveBuild(this.flags)
      : undefined
    this.buildPool = serve !== undefined
      ? new ServePool(this.runner, serve, this.env, { max: BUILD_CONNECTIONS, detached: true, maxUses: BUILD_CONNECTION_USES, idleMs: BUILD_CONNECTION_IDLE_MS })
      : undefined
  }

  async close (): Promise<void> {
    await this.buildPool?.close()
  }

  async build (drvPath: string, opts: BuildOptions): Promise<BuildOutcome> {
    if (opts.signal.aborted) return { kind: 'canceled' }
    let pre: Precheck
    try {
      pre = (await this.precheck([{ drvPath, onLog: opts.onLog }])).get(drvPath) ?? { kind: 'done', outcome: { kind: 'setup-failed', message: `no precheck result for ${drvPath}` } }
    } catch (e) {
      return { kind: 'setup-failed', message: `${(e as Error).name}: ${(e as Error).message}` }
    }
    if (pre.kind !== 'ready') return pre.outcome
    if (opts.signal.aborted) return { kind: 'canceled' }
    let outcome: BuildOutcome = { kind: 'setup-failed', message: `no outcome for ${drvPath}` }
    const item: BatchItem = { drvPath, onLog: opts.onLog, ...(opts.gcRoot !== undefined ? { gcRoot: opts.gcRoot } : {}) }
    await this.buildReady(new Map([[drvPath, pre.outputs]]), new Map([[drvPath, item]]), { signal: opts.signal }, (_, o) => { outcome = o })
    return outcome
  }

  /** One build client for one derivation whose inputs are in place. */
  private async runOne (drvPath: string, outputs: Record<string, string>, opts: BuildOptions): Promise<BuildOutcome> {
    const cmd = this.commands.build(drvPath, this.flags, opts.gcRoot)
    log('building %s: %s %o', drvPath, cmd.command, cmd.args)
    const p = this.runner.start(cmd.command, cmd.args, { env: this.env, detached: true })
    let tail = ''
    const onData = (b: Buffer): void => {
      tail = (tail + b.toString('utf8')).slice(-TAIL_BYTES)
      opts.onLog(b)
    }
    p.stdout.on('data', (b: Buffer) => opts.onLog(b))
    p.stderr.on('data', onData)
    let killing: Promise<void> | undefined
    const onAbort = (): void => { killing = this.killBuild(p) }
    opts.signal.addEventListener('abort', onAbort, { once: true })
    let exit
    try {
      exit = await p.exited
    } catch (e) {
      opts.signal.removeEventListener('abort', onAbort)
      return { kind: 'setup-failed', message: (e as Error).message }
    }
    opts.signal.removeEventListener('abort', onAbort)
    if (killing !== undefined) {
      await killing // report canceled only once nothing of the build is left running
      return { kind: 'canceled' }
    }
    const bad = classifyExit(this.commands, cmd.command, exit.code, exit.signal, tail)
    if (bad !== undefined) return bad
    try {
      const invalid = await this.invalidOutputs(Object.values(outputs))
      if (invalid.length > 0) return { kind: 'setup-failed', message: `build reported success but outputs are not valid: ${invalid.join(' ')}` }
    } catch (e) {
      return { kind: 'setup-failed', message: (e as Error).message }
    }
    return { kind: 'success', outputs }
  }

  /**
   * The outputs that are not valid after a build. Asked as path infos, which the store
   * remembers: publishing the outputs next then needs no query of its own.
   */
  private async invalidOutputs (outputs: string[]): Promise<string[]> {
    if (outputs.length === 0) return []
    try {
      await this.store.queryPathInfos(outputs)
      return []
    } catch (e) {
      if (!(e instanceof PathNotValidError)) throw e
      return await this.store.filterInvalid(outputs)
    }
  }

  private async runMany (items: BatchItem[], opts: BuildManyOptions): Promise<Map<string, BuildOutcome>> {
    const out = new Map<string, BuildOutcome>()
    const settle = (drv: string, o: BuildOutcome): void => {
      if (out.has(drv)) return
      out.set(drv, o)
      try { opts.onOutcome?.(drv, o) } catch (e) { log.error('onOutcome for %s threw: %s', drv, (e as Error).message) }
    }
    const byDrv = new Map(items.map((i) => [i.drvPath, i]))
    if (opts.signal.aborted) {
      for (const i of byDrv.keys()) settle(i, { kind: 'canceled' })
      return out
    }
    let pre: Map<string, Precheck>
    try {
      pre = await this.precheck([...byDrv.values()])
    } catch (e) {
      for (const i of byDrv.keys()) settle(i, { kind: 'setup-failed', message: `${(e as Error).name}: ${(e as Error).message}` })
      return out
    }
    const ready = new Map<string, Record<string, string>>()
    for (const [drv, p] of pre) {
      if (p.kind === 'ready') ready.set(drv, p.outputs)
      else settle(drv, p.outcome)
    }
    if (opts.signal.aborted) {
      for (const drv of ready.keys()) settle(drv, { kind: 'canceled' })
      return out
    }
    await this.buildReady(ready, byDrv, opts, settle)
    for (const drv of byDrv.keys()) if (!out.has(drv)) settle(drv, { kind: 'setup-failed', message: `no outcome for ${drv}` })
    return out
  }

  /** Build prechecked derivations (`ready`: their outputs) and root what the client did not; `settle` gets each outcome. */
  private async buildReady (ready: Map<string, Record<string, string>>, byDrv: Map<string, BatchItem>, opts: BuildManyOptions, settle: (drv: string, o: BuildOutcome) => void): Promise<void> {
    if (ready.size === 1 && this.buildPool?.available !== true) {
      // nothing to share: the plain client, which also roots the outputs as it builds
      const [[drv, outputs]] = [...ready]
      const item = byDrv.get(drv) as BatchItem
      const gcRoot = opts.gcRootBase ?? item.gcRoot
      settle(drv, await this.runOne(drv, outputs, { signal: opts.signal, onLog: item.onLog, ...(gcRoot !== undefined ? { gcRoot } : {}) }))
      return
    }
    if (ready.size > 0) {
      const { outcomes, served } = await this.runBatch(ready, byDrv, opts)
      const base = opts.gcRootBase
      // the client rooted everything only if everything succeeded (Nix roots nothing once a build
      // failed); a build connection roots nothing, but keeps everything it built as temporary
      // roots until it closes (BUILD_CONNECTION_IDLE_MS after its last build at the latest)
      const rooted = served || (base !== undefined && [...outcomes.values()].every((o) => o.kind === 'success'))
      const drvs = [...ready.keys()]
      await forEachLimit([...outcomes], ROOT_CONCURRENCY, async ([drv, o]) => {
        const k = drvs.indexOf(drv) + 1
        const root = base !== undefined ? (k > 1 ? `${base}-${k}` : base) : byDrv.get(drv)?.gcRoot
        if (o.kind === 'success' && root !== undefined && !rooted) await this.addRoot(drv, root)
        settle(drv, o)
      })
    }
  }

  /** One client for all of `ready`: `--keep-going`, the log told apart per build. */
  private async runBatch (ready: Map<string, Record<string, string>>, byDrv: Map<string, BatchItem>, opts: BuildManyOptions): Promise<{ outcomes: Map<string, BuildOutcome>, served: boolean }> {
    const drvs = [...ready.keys()]
    const many = this.commands.buildMany
    if (many === undefined) throw new DaemonError(`the ${this.kind} builder cannot build a batch`)
    const cmd = many(drvs, this.flags, opts.maxJobs ?? 1, opts.gcRootBase)
    const outcomes = new Map<string, BuildOutcome>()
    const tails = new Map(drvs.map((d) => [d, '']))
    let otherTail = ''
    const router = new InternalJsonLogRouter(drvs, {
      line: (drv, text) => {
        tails.set(drv, ((tails.get(drv) ?? '') + text).slice(-TAIL_BYTES))
        byDrv.get(drv)?.onLog(Buffer.from(text))
      },
      other: (text) => {
        otherTail = (otherTail + text).slice(-TAIL_BYTES)
        for (const d of drvs) byDrv.get(d)?.onLog(Buffer.from(text))
      }
    })
    const run = await this.runClient(drvs, cmd, router, opts)
    if (run.kind === 'failed-to-run') {
      for (const d of drvs) outcomes.set(d, { kind: 'setup-failed', message: run.message })
      return { outcomes, served: run.served }
    }
    if (run.kind === 'canceled') {
      for (const d of drvs) outcomes.set(d, { kind: 'canceled' })
      return { outcomes, served: run.served }
    }
    const exit = run.exit
    let invalid: Set<string>
    try {
      invalid = new Set(await this.invalidOutputs([...ready.values()].flatMap((o) => Object.values(o))))
    } catch (e) {
      for (const d of drvs) outcomes.set(d, { kind: 'setup-failed', message: (e as Error).message })
      return { outcomes, served: run.served }
    }
    const lastError = (text: string): string | undefined => text.split('\n').reverse().find((l) => /error:/.test(l))?.trim()
    for (const [drv, outputs] of ready) {
      const absent = Object.values(outputs).filter((o) => invalid.has(o))
      if (absent.length === 0) { outcomes.set(drv, { kind: 'success', outputs }); continue }
      const own = tails.get(drv) ?? ''
      const missing = missingFromLog(own)
      if (FAILED_PATTERNS.some((re) => re.test(own))) {
        outcomes.set(drv, { kind: 'failed', exitCode: exit.code, message: lastError(own) ?? `builder for '${drv}' failed` })
      } else if (missing.length > 0) {
        outcomes.set(drv, { kind: 'missing-inputs', missing })
      } else {
        outcomes.set(drv, { kind: 'setup-failed', message: lastError(otherTail) ?? `${cmd.command} exited with ${exit.code ?? exit.signal}; outputs not valid: ${absent.join(' ')}` })
      }
    }
    return { outcomes, served: run.served }
  }

  /**
   * Run one build client for `drvs`, its log into `router`: a request on a long-lived build
   * connection when there is one (no process start, and Nix's build hook started once per
   * connection instead of once per client), else the process `cmd`.
   */
  private async runClient (drvs: string[], cmd: Command, router: InternalJsonLogRouter, opts: BuildManyOptions): Promise<
    | { kind: 'exited', exit: Exit, served: boolean }
    | { kind: 'canceled', served: boolean }
    | { kind: 'failed-to-run', message: string, served: boolean }
  > {
    if (this.buildPool !== undefined && (opts.maxJobs ?? 1) === 1) {
      let killing: Promise<void> | undefined
      try {
        const limits = await this.serveLimits()
        const r = await this.buildPool.use(async (c) => {
          const onAbort = (): void => { killing = this.killBuild(c.process) }
          opts.signal.addEventListener('abort', onAbort, { once: true })
          try {
            log('building %d derivation(s) over the build connection', drvs.length)
            return await c.buildPaths(drvs, limits, (b) => router.push(b))
          } finally {
            opts.signal.removeEventListener('abort', onAbort)
          }
        })
        if (r !== undefined && killing !== undefined) {
          // canceled as the build ended: as with a client, canceled once nothing is left running
          router.end()
          await killing
          return { kind: 'canceled', served: true }
        }
        if (r !== undefined) {
          // the failure Nix answers with names the derivation (or says which ones failed)
          if (r.value.status !== 0) router.push(Buffer.from(`@nix ${JSON.stringify({ action: 'msg', level: 0, msg: r.value.message })}\n`))
          router.end()
          return { kind: 'exited', exit: { code: r.value.status, signal: null }, served: true }
        }
      } catch (e) {
        router.end()
        if (killing !== undefined) {
          await killing // report canceled only once nothing of the build is left running
          return { kind: 'canceled', served: true }
        }
        return { kind: 'failed-to-run', message: `${(e as Error).name}: ${(e as Error).message}`, served: true }
      }
    }
    log('building %d derivations in one client: %s %o', drvs.length, cmd.command, cmd.args.slice(0, 8))
    let p: RunningProcess
    try {
      p = this.runner.start(cmd.command, cmd.args, { env: this.env, detached: true })
    } catch (e) {
      router.end()
      return { kind: 'failed-to-run', message: (e as Error).message, served: false }
    }
    p.stdout.resume() // output paths; we know them from the derivations
    p.stderr.on('data', (b: Buffer) => router.push(b))
    let killing: Promise<void> | undefined
    const onAbort = (): void => { killing = this.killBuild(p) }
    opts.signal.addEventListener('abort', onAbort, { once: true })
    let exit: Exit
    try {
      exit = await p.exited
    } catch (e) {
      return { kind: 'failed-to-run', message: (e as Error).message, served: false }
    } finally {
      opts.signal.removeEventListener('abort', onAbort)
      router.end()
    }
    if (killing !== undefined) {
      await killing
      return { kind: 'canceled', served: false }
    }
    return { kind: 'exited', exit, served: false }
  }

  /**
   * The build connection's per-request limits: this node's, else the ones Nix is configured
   * with (`nix show-config`), since the request's values replace nix.conf's for its builds.
   */
  private async serveLimits (): Promise<ServeBuildSettings> {
    this.limits ??= (async () => {
      let configured = { maxSilentTime: 0, timeout: 0 }
      if (this.flags.maxSilentTime === undefined || this.flags.timeout === undefined) {
        const r = await runToEnd(this.runner, 'nix', [...NIX_CMD, 'show-config'], { env: this.env }).catch(() => undefined)
        if (r?.code === 0) configured = nixBuildLimits(r.stdout.toString('utf8'))
        else log.error('could not read max-silent-time and timeout from nix show-config: builds over the connection have no such limit')
      }
      return { maxSilentTime: this.flags.maxSilentTime ?? configured.maxSilentTime, timeout: this.flags.timeout ?? configured.timeout }
    })()
    return await this.limits
  }

  /** Register the (valid) outputs of `drvPath` as GC roots named like a single build's. */
  private async addRoot (drvPath: string, gcRoot: string): Promise<void> {
    const cmd = this.commands.build(drvPath, { substituters: [], trustedPublicKeys: [] }, gcRoot)
    const r = await runToEnd(this.runner, cmd.command, cmd.args, { env: this.env }).catch((e: Error) => ({ code: null, stderr: Buffer.from(e.message) }))
    if (r.code !== 0) log.error('could not root the outputs of %s at %s: %s', drvPath, gcRoot, r.stderr.toString().trim())
  }

  /**
   * Read the derivations and check their inputs, for all `items` at once (one validity query per
   * step, not per derivation): ready (with its outputs), or an outcome already.
   */
  private async precheck (items: Array<{ drvPath: string, onLog: (chunk: Buffer) => void }>): Promise<Map<string, Precheck>> {
    const result = new Map<string, Precheck>()
    const done = (drv: string, outcome: BuildOutcome): void => { result.set(drv, { kind: 'done', outcome }) }
    const drvs = await this.readDerivations(items.map((i) => i.drvPath))
    const valid = new Map<string, Derivation>()
    for (const { drvPath } of items) {
      const d = drvs.get(drvPath)
      if (d === undefined || d instanceof PathNotValidError) done(drvPath, { kind: 'missing-inputs', missing: [drvPath] })
      else valid.set(drvPath, d)
    }
    const inputsOf = (d: Derivation): string[] => [...d.inputDrvs.keys(), ...d.inputSrcs]
    const invalidInputs = new Set(await this.store.filterInvalid([...new Set([...valid.values()].flatMap(inputsOf))]))
    for (const [drvPath, d] of valid) {
      const missing = inputsOf(d).filter((p) => invalidInputs.has(p))
      if (missing.length > 0) { done(drvPath, { kind: 'missing-inputs', missing }); valid.delete(drvPath) }
    }
    if (this.inputs === 'require' && this.commands.substitute !== undefined && valid.size > 0) {
      // The outputs the inputs must provide: valid already, or fetched now; never built here.
      const inputDrvs = await this.readDerivations([...new Set([...valid.values()].flatMap((d) => [...d.inputDrvs.keys()]))])
      const needed = new Map<string, Map<string, string>>() // drv → (output path → its input .drv)
      for (const [drvPath, d] of valid) {
        const mine = new Map<string, string>()
        let problem: string | undefined
        for (const [inputDrv, names] of d.inputDrvs) {
          const id = inputDrvs.get(inputDrv)
          if (id === undefined || id instanceof PathNotValidError) { problem = `${inputDrv} is not valid any more`; break }
          for (const name of names) {
            const o = id.outputs.get(name)
            if (o === undefined) problem = `${drvPath} needs output '${name}' that ${inputDrv} does not have`
            else mine.set(o.path, inputDrv)
          }
        }
        // one bad derivation fails alone, not the batch
        if (problem !== undefined) { done(drvPath, { kind: 'setup-failed', message: `DaemonError: ${problem}` }); valid.delete(drvPath) } else needed.set(drvPath, mine)
      }
      let absent = new Set(await this.store.filterInvalid([...new Set([...needed.values()].flatMap((m) => [...m.keys()]))]))
      if (absent.size > 0 && this.flags.substituters.length > 0) {
        const sub = this.commands.substitute([...absent], this.flags)
        const r = await runToEnd(this.runner, sub.command, sub.args, { env: this.env })
        for (const i of items) if ([...(needed.get(i.drvPath)?.keys() ?? [])].some((o) => absent.has(o))) i.onLog(r.stderr)
        absent = new Set(await this.store.filterInvalid([...absent]))
      }
      for (const [drvPath, mine] of needed) {
        const gone = [...mine].filter(([o]) => absent.has(o)).map(([, inputDrv]) => inputDrv)
        if (gone.length > 0) { done(drvPath, { kind: 'missing-inputs', missing: [...new Set(gone)].sort() }); valid.delete(drvPath) }
      }
    } else if (this.inputs === 'require') {
      for (const drvPath of [...valid.keys()]) {
        const dry = this.commands.dryRun(drvPath, this.flags)
        const r = await runToEnd(this.runner, dry.command, dry.args, { env: this.env })
        if (r.code !== 0) throw new DaemonError(`dry run of ${drvPath} failed: ${r.stderr.toString().trim()}`)
        const unbuilt = parseDryRun(r.stderr.toString('utf8') + '\n' + r.stdout.toString('utf8')).toBuild.filter((d) => d !== drvPath)
        if (unbuilt.length > 0) { done(drvPath, { kind: 'missing-inputs', missing: unbuilt }); valid.delete(drvPath) }
      }
    }
    for (const [drvPath, d] of valid) result.set(drvPath, { kind: 'ready', outputs: derivationOutputPaths(d) })
    return result
  }

  /** Through the store's batch form when it has one: one validity query for all. */
  private async readDerivations (drvPaths: string[]): Promise<Map<string, Derivation | PathNotValidError>> {
    if (drvPaths.length === 0) return new Map()
    if (this.store.readDerivations !== undefined) return await this.store.readDerivations(drvPaths)
    const out = new Map<string, Derivation | PathNotValidError>()
    for (const p of drvPaths) {
      try {
        out.set(p, await this.store.readDerivation(p))
      } catch (e) {
        if (!(e instanceof PathNotValidError)) throw e
        out.set(p, e)
      }
    }
    return out
  }

  /**
   * SIGTERM the client's whole tree (nix-store then stops its builder and releases its locks);
   * after the grace period SIGKILL everything seen in either snapshot. Snapshots are taken while
   * the client lives: once it dies its children are re-parented and could no longer be found.
   * The tree must be dead before waiting for `exited`, which also waits for pipes a child may hold.
   */
  private async killBuild (p: RunningProcess): Promise<void> {
    const pid = p.pid
    const seen = new Map<number, Awaited<ReturnType<typeof processTree>>[number]>()
    const snapshot = async (): Promise<void> => {
      if (pid !== undefined) for (const s of await processTree(pid)) seen.set(s.pid, s)
    }
    await snapshot()
    log('canceling build: %d processes', seen.size)
    p.kill('SIGTERM')
    signalTree([...seen.values()], 'SIGTERM')
    const alive = (): boolean => [...seen.keys()].some(isAlive) || (pid === undefined ? false : isAlive(pid))
    const deadline = Date.now() + this.killGraceMs
    while (Date.now() < deadline) {
      await snapshot() // children started while shutting down
      if (pid === undefined || !alive()) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    await snapshot()
    p.kill('SIGKILL')
    signalTree([...seen.values()].filter((s) => isAlive(s.pid)), 'SIGKILL')
    await p.exited.catch(() => undefined)
  }
}

