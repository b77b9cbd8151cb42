// Runs the real CLI as a separate OS process, from source (tsx) or from dist, whichever this test runs from.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { NODE_FLAGS } from '../../src/cli/node-flags.js'

const fromSource = import.meta.url.endsWith('.ts')
const ext = fromSource ? '.ts' : '.js'
export const CLI_MAIN = fileURLToPath(new URL(`../../src/cli/main${ext}`, import.meta.url))
/** Node flags and entry point, as bin/guix-swarm.js starts the CLI. */
export const CLI_ARGV: string[] = [...NODE_FLAGS, ...(fromSource ? ['--import', 'tsx', CLI_MAIN] : [CLI_MAIN])]

export interface RunResult { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Run a CLI command to completion, optionally feeding stdin. */
export async function runCli (args: string[], opts: SpawnOptions & { input?: string | Buffer, timeoutMs?: number } = {}): Promise<RunResult> {
  const child = spawn(process.execPath, [...CLI_ARGV, ...args], { ...opts, stdio: ['pipe', 'pipe', 'pipe'] })
  const out: Buffer[] = []
  const err: Buffer[] = []
  child.stdout?.on('data', (b: Buffer) => out.push(b))
  child.stderr?.on('data', (b: Buffer) => err.push(b))
  if (opts.input !== undefined) child.stdin?.end(opts.input)
  else child.stdin?.end()
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  return { code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }
}

/** Start a long-running CLI process (e.g. `join`); the caller stops it. */
export function startCli (args: string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn(process.execPath, [...CLI_ARGV, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
}
