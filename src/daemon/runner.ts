// The process-runner seam: the real one spawns OS processes; unit tests put a fake behind the same interface.
import { spawn } from 'node:child_process'
import { PassThrough, type Readable, type Writable } from 'node:stream'
import { SpawnFailedError } from './errors.js'

export interface StartOptions {
  env?: NodeJS.ProcessEnv
  /** Start in a new process group so that the whole tree can be killed (builds). */
  detached?: boolean
  /** Whether stdin is a pipe the caller writes to (default: closed). */
  stdin?: boolean
}

export interface Exit { code: number | null, signal: NodeJS.Signals | null }

export interface RunningProcess {
  readonly pid: number | undefined
  readonly stdin: Writable | null
  readonly stdout: Readable
  readonly stderr: Readable
  /** Resolves when the process has exited and its output streams have closed; rejects with SpawnFailedError if it never started. */
  readonly exited: Promise<Exit>
  /** Signal the process, or its whole group when started detached. */
  kill: (signal: NodeJS.Signals) => void
  /** Whether the process (and its pipes) keep this one's event loop alive; default on. */
  setRef?: (on: boolean) => void
}

/** What the child's pipes are at run time (net.Socket); typed as plain streams by spawn. */
interface Refable { ref?: () => unknown, unref?: () => unknown }

export interface ProcessRunner {
  start: (command: string, args: string[], opts?: StartOptions) => RunningProcess
}

export interface Completed extends Exit { stdout: Buffer, stderr: Buffer }

/** Run to completion and collect output. */
export async function runToEnd (runner: ProcessRunner, command: string, args: string[], opts: StartOptions & { input?: Buffer | string } = {}): Promise<Completed> {
  const p = runner.start(command, args, { ...opts, stdin: opts.input !== undefined })
  const out: Buffer[] = []
  const err: Buffer[] = []
  p.stdout.on('data', (b: Buffer) => out.push(b))
  p.stderr.on('data', (b: Buffer) => err.push(b))
  if (opts.input !== undefined && p.stdin !== null) {
    p.stdin.on('error', () => {}) // EPIPE when the command exits early; its exit code tells the story
    p.stdin.end(opts.input)
  }
  const exit = await p.exited
  return { ...exit, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }
}

export class NodeProcessRunner implements ProcessRunner {
  start (command: string, args: string[], opts: StartOptions = {}): RunningProcess {
    const child = spawn(command, args, {
      env: opts.env ?? process.env,
      detached: opts.detached === true,
      stdio: [opts.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe']
    })
    const detached = opts.detached === true
    const exited = new Promise<Exit>((resolve, reject) => {
      child.once('error', (err) => {
        reject(new SpawnFailedError(`cannot start ${command}: ${err.message}`))
      })
      child.once('close', (code, signal) => resolve({ code, signal }))
    })
    exited.catch(() => {}) // callers await it; avoid an unhandled rejection before they do
    const stdout = child.stdout ?? new PassThrough().end()
    const stderr = child.stderr ?? new PassThrough().end()
    return {
      pid: child.pid,
      stdin: child.stdin,
      stdout,
      stderr,
      exited,
      kill: (signal) => {
        if (child.pid === undefined) return
        try {
          if (detached) process.kill(-child.pid, signal)
          else child.kill(signal)
        } catch { /* already gone */ }
      },
      setRef: (on) => {
        on ? child.ref() : child.unref()
        for (const s of [child.stdin, child.stdout, child.stderr] as Array<Refable | null>) {
          if (on) s?.ref?.()
          else s?.unref?.()
        }
      }
    }
  }
}

export const defaultRunner: ProcessRunner = new NodeProcessRunner()
