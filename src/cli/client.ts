// How local commands (status, peers, and later submit, builds, …) find and talk to their node.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Command } from 'commander'
import { API_FILE, resolveDataDir } from '../node/config.js'
import { CliError, EXIT } from './errors.js'

export interface ApiClientOptions {
  /** --api URL */
  api?: string
  /** --data-dir DIR (where `<dir>/api` names the running node) */
  dataDir?: string
  env?: NodeJS.ProcessEnv
}

/** Where the node is: `--api URL`, else GUIX_SWARM_API, else the URL in `<data-dir>/api`. */
export async function resolveApiUrl (opts: ApiClientOptions = {}): Promise<string> {
  const env = opts.env ?? process.env
  if (opts.api != null && opts.api !== '') return opts.api.replace(/\/+$/, '')
  if (env.GUIX_SWARM_API != null && env.GUIX_SWARM_API !== '') return env.GUIX_SWARM_API.replace(/\/+$/, '')
  const dataDir = resolveDataDir(opts.dataDir, env)
  const file = join(dataDir, API_FILE)
  try {
    const url = (await readFile(file, 'utf8')).trim()
    if (url !== '') return url.replace(/\/+$/, '')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CliError(`cannot read ${file}: ${(err as Error).message}`, EXIT.UNAVAILABLE)
    }
  }
  throw new CliError(`no running node found: ${file} does not exist (start one with \`guix-swarm join\`, or pass --api URL / set GUIX_SWARM_API)`, EXIT.UNAVAILABLE)
}

/** A JSON client for the node's local API; failures become CliErrors with meaningful exit codes. */
export class ApiClient {
  constructor (readonly baseUrl: string, private readonly timeoutMs = 30_000) {}

  async get<T = unknown> (path: string): Promise<T> {
    return await this.request<T>('GET', path)
  }

  async post<T = unknown> (path: string, body: unknown): Promise<T> {
    return await this.request<T>('POST', path, body)
  }

  async request<T = unknown> (method: string, path: string, body?: unknown): Promise<T> {
    const url = this.baseUrl + path
    let res: Response
    try {
      res = await fetch(url, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs)
      })
    } catch (err) {
      const cause = (err as { cause?: { code?: string, message?: string } }).cause
      const why = cause?.code ?? cause?.message ?? (err as Error).message
      throw new CliError(`no node answers at ${this.baseUrl} (${why}); is \`guix-swarm join\` running?`, EXIT.UNAVAILABLE)
    }
    const text = await res.text()
    let json: unknown
    try {
      json = text === '' ? undefined : JSON.parse(text)
    } catch {
      throw new CliError(`${method} ${url}: the node answered ${res.status} with non-JSON: ${text.slice(0, 200)}`, EXIT.FAILED)
    }
    if (!res.ok) {
      const e = (json as { error?: { name?: string, message?: string } } | undefined)?.error
      const msg = e != null ? `${e.name ?? 'Error'}: ${e.message ?? ''}` : `HTTP ${res.status}`
      throw new CliError(`${method} ${path}: ${msg}`, res.status >= 400 && res.status < 500 && res.status !== 404 ? EXIT.USAGE : EXIT.FAILED)
    }
    return json as T
  }
}

/** Find the node and return a client for it. */
export async function apiClient (opts: ApiClientOptions = {}): Promise<ApiClient> {
  return new ApiClient(await resolveApiUrl(opts))
}

/** Add `--api URL` and `--data-dir DIR` to a client command (read back with apiClient(cmd.opts())). */
export function addClientOptions (cmd: Command): Command {
  return cmd
    .option('--api <url>', 'the node\'s HTTP API (default: $GUIX_SWARM_API, else the URL in <data-dir>/api)')
    .option('--data-dir <dir>', 'the node\'s data dir (default: $GUIX_SWARM_DATA_DIR, else $XDG_DATA_HOME/guix-swarm)')
}
