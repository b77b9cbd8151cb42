// How local commands (status, peers, and later submit, builds, …) find and talk to their node.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Command } from 'commander'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
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
    if (!res.ok) throw answerError(`${method} ${path}`, res.status, json)
    return json as T
  }
}

/** The name in a node's `{error: {name, message}}` answer. */
function errorName (body: unknown): string | undefined {
  return (body as { error?: { name?: string } } | undefined)?.error?.name
}

/** A node's error answer as a CliError: exit 2 for the caller's mistakes (4xx but 404), else 1. */
function answerError (what: string, status: number, body: unknown): CliError {
  const e = (body as { error?: { name?: string, message?: string } } | undefined)?.error
  const msg = e != null ? `${e.name ?? 'Error'}: ${e.message ?? ''}` : `HTTP ${status}`
  return new CliError(`${what}: ${msg}`, status >= 400 && status < 500 && status !== 404 ? EXIT.USAGE : EXIT.FAILED)
}

/** One server-sent event from the node (`event:` name and `data:` text). */
export interface ServerEvent { event: string, data: string }

/** An idle event stream says `: keepalive` every 15 s; this long without a byte, the node is gone. */
const EVENTS_IDLE_MS = 45_000

/**
 * The node's build events (`/api/events`) for `ids`, or for every build: `ready`, then `build`
 * per view (see src/node/events.ts). Undefined when the node has no such endpoint (an older
 * node): the caller asks the old way. Ends when the node ends the stream; fails with exit 3 when
 * it stops answering. Breaking out of the loop closes the stream; so does `signal`, which also
 * ends a wait for the next event (the loop then throws its reason).
 */
export async function * nodeEvents (client: ApiClient, ids?: string[], signal?: AbortSignal): AsyncGenerator<ServerEvent, void, undefined> {
  const ac = new AbortController()
  const stop = (): void => { ac.abort(signal?.reason) }
  signal?.addEventListener('abort', stop, { once: true })
  let idle: NodeJS.Timeout | undefined
  const touch = (): void => {
    clearTimeout(idle)
    idle = setTimeout(() => ac.abort(new CliError(`the node at ${client.baseUrl} sent nothing for ${EVENTS_IDLE_MS / 1000} s`, EXIT.UNAVAILABLE)), EVENTS_IDLE_MS)
  }
  touch()
  try {
    let res: Response
    try {
      // POST: a list of ids too long for a URL
      res = await fetch(client.baseUrl + '/api/events', ids === undefined
        ? { signal: ac.signal }
        : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ids }), signal: ac.signal })
    } catch (err) {
      if (ac.signal.reason instanceof CliError) throw ac.signal.reason
      throw new CliError(`no node answers at ${client.baseUrl} (${(err as Error).message}); is \`guix-swarm join\` running?`, EXIT.UNAVAILABLE)
    }
    if (!res.ok) {
      let body: unknown
      try { body = JSON.parse(await res.text()) } catch {}
      if (res.status === 404 && errorName(body) === 'HttpNotFoundError') return // no such route: an older node
      throw answerError('events', res.status, body)
    }
    if (res.body === null) return
    const pending: EventSourceMessage[] = []
    const parser = createParser({ onEvent: (e) => { pending.push(e) } })
    const decoder = new TextDecoder()
    const reader = res.body.getReader()
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        touch()
        parser.feed(decoder.decode(value, { stream: true }))
        while (pending.length > 0) {
          const e = pending.shift() as EventSourceMessage
          yield { event: e.event ?? 'message', data: e.data }
        }
      }
    } catch (err) {
      if (ac.signal.reason instanceof CliError) throw ac.signal.reason
      if (signal?.aborted === true) throw signal.reason
      throw new CliError(`the event stream from ${client.baseUrl} broke: ${(err as Error).message}`, EXIT.UNAVAILABLE)
    }
  } finally {
    clearTimeout(idle)
    signal?.removeEventListener('abort', stop)
    ac.abort()
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
