// Hooks, as in the Guix Build Coordinator: `build-success=PROGRAM` etc. The program gets the
// build's JSON on stdin, runs in its own process group, and is killed at its time limit.
// Runs are fire-and-forget for the scheduler: failures are logged, never thrown at it.
import { spawn } from 'node:child_process'
import { logger } from '@libp2p/logger'
import { HookFailedError } from './errors.js'

const log = logger('guix-swarm:scheduler:hooks')

export const HOOK_EVENTS = ['build-submitted', 'build-success', 'build-failure', 'build-canceled'] as const
export type HookEvent = typeof HOOK_EVENTS[number]

export interface HookConfig {
  /** Program per event (an executable path; no shell). */
  programs: Partial<Record<HookEvent, string>>
  timeoutMs: number
}

export interface HookRun { event: HookEvent, program: string, ok: boolean, error?: string }

export class HookRunner {
  private readonly running = new Set<Promise<HookRun>>()
  private readonly children = new Set<number>()
  readonly failures: HookFailedError[] = []

  constructor (private readonly config: HookConfig) {}

  has (event: HookEvent): boolean { return this.config.programs[event] !== undefined }

  /** Start the hook for `event` if one is set; the promise never rejects. */
  run (event: HookEvent, payload: unknown): Promise<HookRun> | undefined {
    const program = this.config.programs[event]
    if (program === undefined) return undefined
    const p = this.exec(event, program, JSON.stringify(payload) + '\n').then((r) => {
      if (r.ok) log('hook %s ran', event)
      else {
        const err = new HookFailedError(event, program, r.error ?? 'unknown')
        this.failures.splice(0, Math.max(0, this.failures.length - 49))
        this.failures.push(err)
        log.error(err.message)
      }
      return r
    })
    this.running.add(p)
    void p.finally(() => this.running.delete(p))
    return p
  }

  private async exec (event: HookEvent, program: string, input: string): Promise<HookRun> {
    return await new Promise<HookRun>((resolve) => {
      let child
      try {
        child = spawn(program, [event], { stdio: ['pipe', 'ignore', 'pipe'], detached: true, env: { ...process.env, GUIX_SWARM_HOOK: event } })
      } catch (e) {
        resolve({ event, program, ok: false, error: `cannot start: ${(e as Error).message}` }); return
      }
      const pid = child.pid
      if (pid !== undefined) this.children.add(pid)
      let stderr = ''
      let timedOut = false
      child.stderr?.on('data', (b: Buffer) => { stderr = (stderr + b.toString('utf8')).slice(-2000) })
      child.stdin?.on('error', () => {}) // a hook that ignores stdin closes the pipe early; fine
      child.stdin?.end(input)
      const timer = setTimeout(() => {
        timedOut = true
        if (pid !== undefined) killGroup(pid)
      }, this.config.timeoutMs)
      child.on('error', (e) => {
        clearTimeout(timer)
        if (pid !== undefined) this.children.delete(pid)
        resolve({ event, program, ok: false, error: `cannot start: ${e.message}` })
      })
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        if (pid !== undefined) this.children.delete(pid)
        if (timedOut) resolve({ event, program, ok: false, error: `killed after the ${this.config.timeoutMs} ms time limit` })
        else if (code === 0) resolve({ event, program, ok: true })
        else resolve({ event, program, ok: false, error: `exited with ${code ?? signal}${stderr !== '' ? `: ${stderr.trim()}` : ''}` })
      })
    })
  }

  /** Wait for running hooks (tests, shutdown). */
  async idle (): Promise<void> { await Promise.allSettled([...this.running]) }

  /** Kill every running hook and wait for them. */
  async stop (): Promise<void> {
    for (const pid of this.children) killGroup(pid)
    await this.idle()
  }
}

function killGroup (pid: number): void {
  try { process.kill(-pid, 'SIGKILL') } catch { /* already gone */ }
}
