// Builders: run `nix-store --realise` / `guix build` on a .drv, stream the log, and say how it ended.
import { logger } from '@libp2p/logger'
import type { BuildFlags, CommandSet, StoreKind } from './commands.js'
import { derivationOutputPaths } from './derivation.js'
import { DaemonError, PathNotValidError } from './errors.js'
import { isAlive, processTree, signalTree } from './proctree.js'
import { defaultRunner, runToEnd, type ProcessRunner, type RunningProcess } from './runner.js'
import type { StoreDaemon } from './store.js'

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

export interface Builder {
  readonly kind: StoreKind
  build: (drvPath: string, opts: BuildOptions) => Promise<BuildOutcome>
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
}

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

export class CliBuilder implements Builder {
  readonly kind: StoreKind
  private readonly commands: CommandSet
  private readonly store: StoreDaemon
  private readonly runner: ProcessRunner
  private readonly env: NodeJS.ProcessEnv
  private readonly flags: BuildFlags
  private readonly inputs: 'build' | 'require'
  private readonly killGraceMs: number

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
      ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {})
    }
    this.inputs = opts.inputs ?? 'build'
    this.killGraceMs = opts.killGraceMs ?? 3000
  }

  async build (drvPath: string, opts: BuildOptions): Promise<BuildOutcome> {
    if (opts.signal.aborted) return { kind: 'canceled' }
    let outputs: Record<string, string>
    try {
      const pre = await this.precheck(drvPath, opts.onLog)
      if (pre.kind !== 'ready') return pre.outcome
      outputs = pre.outputs
    } catch (e) {
      return { kind: 'setup-failed', message: `${(e as Error).name}: ${(e as Error).message}` }
    }
    if (opts.signal.aborted) return { kind: 'canceled' }

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
      const invalid = await this.store.filterInvalid(Object.values(outputs))
      if (invalid.length > 0) return { kind: 'setup-failed', message: `build reported success but outputs are not valid: ${invalid.join(' ')}` }
    } catch (e) {
      return { kind: 'setup-failed', message: (e as Error).message }
    }
    return { kind: 'success', outputs }
  }

  private async precheck (drvPath: string, onLog: (chunk: Buffer) => void): Promise<{ kind: 'ready', outputs: Record<string, string> } | { kind: 'done', outcome: BuildOutcome }> {
    let drv
    try {
      drv = await this.store.readDerivation(drvPath) // checks validity first
    } catch (e) {
      if (e instanceof PathNotValidError) return { kind: 'done', outcome: { kind: 'missing-inputs', missing: [drvPath] } }
      throw e
    }
    const missing = await this.store.filterInvalid([...drv.inputDrvs.keys(), ...drv.inputSrcs])
    if (missing.length > 0) return { kind: 'done', outcome: { kind: 'missing-inputs', missing } }
    if (this.inputs === 'require' && this.commands.substitute !== undefined) {
      // The outputs the inputs must provide: valid already, or fetched now; never built here.
      const needed = new Map<string, string>() // output path → its .drv
      for (const [inputDrv, names] of drv.inputDrvs) {
        const d = await this.store.readDerivation(inputDrv)
        for (const name of names) {
          const out = d.outputs.get(name)
          if (out === undefined) throw new DaemonError(`${drvPath} needs output '${name}' that ${inputDrv} does not have`)
          needed.set(out.path, inputDrv)
        }
      }
      let absent = await this.store.filterInvalid([...needed.keys()])
      if (absent.length > 0 && this.flags.substituters.length > 0) {
        const sub = this.commands.substitute(absent, this.flags)
        const r = await runToEnd(this.runner, sub.command, sub.args, { env: this.env })
        onLog(r.stderr)
        absent = await this.store.filterInvalid(absent)
      }
      if (absent.length > 0) return { kind: 'done', outcome: { kind: 'missing-inputs', missing: [...new Set(absent.map((p) => needed.get(p) as string))].sort() } }
    } else if (this.inputs === 'require') {
      const dry = this.commands.dryRun(drvPath, this.flags)
      const r = await runToEnd(this.runner, dry.command, dry.args, { env: this.env })
      if (r.code !== 0) throw new DaemonError(`dry run of ${drvPath} failed: ${r.stderr.toString().trim()}`)
      const unbuilt = parseDryRun(r.stderr.toString('utf8') + '\n' + r.stdout.toString('utf8')).toBuild.filter((d) => d !== drvPath)
      if (unbuilt.length > 0) return { kind: 'done', outcome: { kind: 'missing-inputs', missing: unbuilt } }
    }
    return { kind: 'ready', outputs: derivationOutputPaths(drv) }
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

