// The build queue from the command line: submit, builds, show, cancel, priority, log (talks to the local node).
import { setTimeout as sleep } from 'node:timers/promises'
import type { Command } from 'commander'
import { BUILD_STATES, isDerivationPath, type AttemptView, type BuildView, type QueueStatus } from '../../crdt/index.js'
import { addClientOptions, apiClient, nodeEvents, type ApiClient, type ApiClientOptions } from '../client.js'
import { CliError, EXIT } from '../errors.js'

interface SubmitFlags extends ApiClientOptions { priority?: number, tag?: string[], system?: string, json?: boolean, follow?: boolean }
interface ListFlags extends ApiClientOptions { state?: string, limit?: number, json?: boolean }
interface ShowFlags extends ApiClientOptions { json?: boolean, follow?: boolean }
interface LogFlags extends ApiClientOptions { attempt?: number }

/** How often --follow asks a node that has no event stream (an older node). */
const FOLLOW_POLL_MS = 500
const ENDED = new Set(['succeeded', 'failed', 'canceled'])

const MAX_PRIORITY = 1_000_000

function priorityArg (value: string): number {
  if (!/^-?\d+$/.test(value) || Math.abs(Number(value)) > MAX_PRIORITY) {
    throw new CliError(`priority must be an integer in [-${MAX_PRIORITY}, ${MAX_PRIORITY}], got "${value}"`, EXIT.USAGE)
  }
  return Number(value)
}

function limitArg (value: string): number {
  if (!/^\d+$/.test(value)) throw new CliError(`expected a non-negative integer, got "${value}"`, EXIT.USAGE)
  return Number(value)
}

function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

function parseTags (specs: string[] = []): Record<string, string> | undefined {
  if (specs.length === 0) return undefined
  const tags: Record<string, string> = {}
  for (const s of specs) {
    const eq = s.indexOf('=')
    if (eq <= 0 || eq === s.length - 1) throw new CliError(`--tag expects key=value, got "${s}"`, EXIT.USAGE)
    tags[s.slice(0, eq)] = s.slice(eq + 1)
  }
  return tags
}

/** Build ids are lowercase base32; refuse anything else before asking the node. */
function buildIdArg (id: string): string {
  if (!/^[a-z2-7]{16}$/.test(id)) throw new CliError(`"${id}" is not a build id (16 characters of a-z and 2-7, as printed by submit and builds)`, EXIT.USAGE)
  return id
}

/**
 * The client maps every 4xx but 404 to exit 2 (bad input); a refused operation on a
 * well-formed request (409: the build is finished) is a failure, exit 1.
 */
async function call<T> (client: ApiClient, method: string, path: string, body?: unknown): Promise<T> {
  try {
    return await client.request<T>(method, path, body)
  } catch (err) {
    if (err instanceof CliError && /: BuildFinishedError: /.test(err.message)) throw new CliError(err.message, EXIT.FAILED)
    throw err
  }
}

/** GET a plain-text log; errors come as the API's JSON and map to exit codes as for any call. */
async function fetchLog (client: ApiClient, path: string): Promise<Buffer> {
  let res: Response
  try {
    res = await fetch(client.baseUrl + path, { signal: AbortSignal.timeout(60_000) })
  } catch (err) {
    throw new CliError(`no node answers at ${client.baseUrl} (${(err as Error).message}); is \`guix-swarm join\` running?`, EXIT.UNAVAILABLE)
  }
  const body = Buffer.from(await res.arrayBuffer())
  if (res.ok) return body
  let msg = `HTTP ${res.status}`
  try {
    const e = (JSON.parse(body.toString('utf8')) as { error?: { name?: string, message?: string } }).error
    if (e != null) msg = `${e.name ?? 'Error'}: ${e.message ?? ''}`
  } catch {}
  throw new CliError(`GET ${path}: ${msg}`, res.status >= 400 && res.status < 500 && res.status !== 404 ? EXIT.USAGE : EXIT.FAILED)
}

function fmtTime (ms: number | null | undefined): string {
  if (ms == null) return '-'
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')
}

function fmtTags (tags: Record<string, string>): string {
  const parts = Object.entries(tags).map(([k, v]) => `${k}=${v}`)
  return parts.length === 0 ? '-' : parts.join(',')
}

/** `/gnu/store/<hash>-hello-2.12.drv` → `hello-2.12.drv` with a short hash, for tables. */
function shortDrv (drv: string): string {
  const base = drv.slice(drv.lastIndexOf('/') + 1)
  return `${base.slice(0, 8)}…${base.slice(32)}`
}

export function buildsTable (builds: BuildView[]): string {
  if (builds.length === 0) return 'no builds\n'
  const rows = [['ID', 'STATE', 'PRIO', 'SYSTEM', 'ATTEMPTS', 'DERIVATION', 'TAGS']]
  for (const b of builds) rows.push([b.id, b.state, String(b.priority), b.system, String(b.attempts.length), shortDrv(b.derivation), fmtTags(b.tags)])
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows.map((r) => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join('  ')).join('\n') + '\n'
}

function resultLines (r: NonNullable<AttemptView['result']>): string[] {
  switch (r.outcome) {
    case 'success':
      return ['     outputs', ...Object.entries(r.outputs ?? {}).map(([name, o]) => `       ${name}  ${o.path}  ${o.narHash} (${o.narSize} bytes)`)]
    case 'failure':
      return [`     log ${r.log?.name ?? '?'} on ${r.log?.peerId ?? '?'}`]
    case 'missing-inputs':
      return ['     missing inputs', ...(r.missing ?? []).map((m) => `       ${m}`)]
    case 'canceled':
      return ['     stopped: the build was canceled']
  }
}

export function buildDetails (b: BuildView): string {
  const lines = [
    `build       ${b.id}`,
    `state       ${b.state}`,
    `reason      ${b.reason}`,
    `derivation  ${b.derivation}`,
    `system      ${b.system}`,
    `priority    ${b.priority}`,
    `tags        ${fmtTags(b.tags)}`,
    `submitted   ${fmtTime(b.submittedAt)} by ${b.submitter}`,
    `failures    ${b.failures} of at most ${b.maxAttempts}`,
    ...(b.abandoned != null && b.abandoned > 0 ? [`lapsed      ${b.abandoned} lease(s) of at most ${b.maxAbandoned ?? '?'} (builders that stopped renewing)`] : []),
    ...(b.deferUntil != null ? [`deferred    until ${fmtTime(b.deferUntil)}`] : []),
    ...(b.canceled ? ['canceled    yes'] : []),
    b.attempts.length === 0 ? 'attempts    none' : 'attempts'
  ]
  for (const a of b.attempts) {
    lines.push(`  #${a.number} ${a.state} on ${a.peerId}, claimed ${fmtTime(a.claimedAt)}` +
      (a.leaseEndsAt != null ? `, lease until ${fmtTime(a.leaseEndsAt)}` : '') +
      (a.contenders > 1 ? `, ${a.contenders} contenders` : ''))
    if (a.result != null) lines.push(...resultLines(a.result))
  }
  return lines.join('\n') + '\n'
}

/** One line per change a follower should see: the build's state, and each attempt's claimer and state. */
export function progressLines (b: BuildView, before: BuildView | undefined): string[] {
  const out: string[] = []
  const stamp = new Date().toISOString().slice(11, 19)
  if (before === undefined || before.state !== b.state) out.push(`${stamp} ${b.id} ${b.state}: ${b.reason}`)
  for (const a of b.attempts) {
    const old = before?.attempts.find((x) => x.number === a.number)
    if (old !== undefined && old.state === a.state && old.peerId === a.peerId) continue
    let line = `${stamp} ${b.id} attempt ${a.number} ${a.state} on ${a.peerId}`
    if (a.result?.outcome === 'failure' && a.result.log != null) line += ` (log ${a.result.log.name}: guix-swarm log ${b.id} --attempt ${a.number})`
    if (a.result?.outcome === 'missing-inputs') line += ` (missing ${(a.result.missing ?? []).length} input(s))`
    out.push(line)
  }
  return out
}

/**
 * Print progress of the builds until every one has ended; throws exit 1 if any did not succeed.
 * The node pushes each change (`/api/events`); a node without that endpoint is asked every
 * FOLLOW_POLL_MS instead. A node that stops answering ends the wait with its own error (exit 3).
 */
export async function follow (client: ApiClient, ids: string[], write: (s: string) => void): Promise<void> {
  const last = new Map<string, BuildView>()
  const open = new Set(ids)
  const seen = (b: BuildView): void => {
    if (!open.has(b.id)) return
    const lines = progressLines(b, last.get(b.id))
    if (lines.length > 0) write(lines.join('\n') + '\n')
    last.set(b.id, b)
    if (ENDED.has(b.state)) open.delete(b.id)
  }
  let pushed = true
  // a stream that overflowed (this process read too slowly) is opened again for what is still open
  while (open.size > 0 && pushed) {
    pushed = false
    let ended = true
    for await (const e of nodeEvents(client, [...open])) {
      pushed = true
      if (e.event === 'build') seen(JSON.parse(e.data) as BuildView)
      if (e.event === 'overflow') { ended = false; break }
      if (open.size === 0) break
    }
    if (pushed && ended && open.size > 0) throw new CliError(`the node at ${client.baseUrl} ended the event stream with ${open.size} build(s) still open; is it stopping?`, EXIT.UNAVAILABLE)
  }
  while (open.size > 0) {
    for (const id of [...open]) seen(await call<BuildView>(client, 'GET', `/api/builds/${id}`))
    if (open.size > 0) await sleep(FOLLOW_POLL_MS)
  }
  const bad = ids.filter((id) => last.get(id)?.state !== 'succeeded')
  if (bad.length > 0) throw new CliError(`${bad.length} of ${ids.length} build(s) did not succeed: ${bad.map((id) => `${id} ${last.get(id)?.state ?? '?'}`).join(', ')}`, EXIT.FAILED)
}

/** Lines for `guix-swarm status`: queue size, state hash and refused ops by reason. */
export function queueStatusLines (q: QueueStatus): string[] {
  const states = Object.entries(q.byState).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(', ')
  const rejected = Object.entries(q.stats.rejected).filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`).join(', ')
  return [
    `queue      ${q.builds} build(s)${states !== '' ? ` (${states})` : ''}, ${q.ops} op(s) from ${q.authors} author(s)`,
    `  hash     ${q.stateHash}`,
    `  refused  ${rejected === '' ? 'none' : rejected}`
  ]
}

export function register (program: Command): void {
  addClientOptions(program
    .command('submit')
    .description('queue derivations for building by the swarm; prints one build id per derivation')
    .argument('<drv...>', 'store paths of .drv files')
    .option('--priority <n>', 'higher builds first (default 0)', priorityArg)
    .option('--tag <key=value>', 'a tag, repeatable (builders may require tags)', collect)
    .option('--system <system>', 'system to build for (default: the .drv\'s own, if the node\'s daemon has it, else the node\'s first system)')
    .option('--follow', 'then print progress until every build ends; exit 0 only if all succeeded')
    .option('--json', 'print the raw JSON'))
    .action(async (drvs: string[], opts: SubmitFlags) => {
      for (const d of drvs) {
        if (!isDerivationPath(d)) throw new CliError(`not a well-formed store path of a .drv: "${d}" (expected e.g. /gnu/store/<32-char hash>-name.drv)`, EXIT.USAGE)
      }
      const tags = parseTags(opts.tag)
      const body = {
        derivations: drvs,
        ...(opts.priority !== undefined ? { priority: opts.priority } : {}),
        ...(tags !== undefined ? { tags } : {}),
        ...(opts.system !== undefined ? { system: opts.system } : {})
      }
      const client = await apiClient(opts)
      const r = await call<{ ids: string[] }>(client, 'POST', '/api/builds', body)
      process.stdout.write(opts.json === true ? JSON.stringify(r, null, 2) + '\n' : r.ids.join('\n') + '\n')
      if (opts.follow === true) await follow(client, r.ids, (t) => process.stdout.write(t))
    })

  addClientOptions(program
    .command('builds')
    .description('list builds in the queue, highest priority first')
    .option('--state <state>', `only builds in this state (${BUILD_STATES.join(', ')})`)
    .option('--limit <n>', 'at most this many (default 1000)', limitArg)
    .option('--json', 'print the raw JSON'))
    .action(async (opts: ListFlags) => {
      if (opts.state !== undefined && !(BUILD_STATES as readonly string[]).includes(opts.state)) {
        throw new CliError(`unknown state "${opts.state}" (one of: ${BUILD_STATES.join(', ')})`, EXIT.USAGE)
      }
      const q = new URLSearchParams()
      if (opts.state !== undefined) q.set('state', opts.state)
      if (opts.limit !== undefined) q.set('limit', String(opts.limit))
      const qs = q.toString()
      const r = await call<{ total: number, builds: BuildView[] }>(await apiClient(opts), 'GET', `/api/builds${qs === '' ? '' : '?' + qs}`)
      if (opts.json === true) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return }
      process.stdout.write(buildsTable(r.builds))
      if (r.total > r.builds.length) process.stdout.write(`(${r.builds.length} of ${r.total} shown; use --limit)\n`)
    })

  addClientOptions(program
    .command('show')
    .description('one build in detail: attempts, leases, results and why it is where it is')
    .argument('<id>', 'build id')
    .option('--follow', 'then print progress until the build ends; exit 0 only if it succeeded')
    .option('--json', 'print the raw JSON'))
    .action(async (id: string, opts: ShowFlags) => {
      const client = await apiClient(opts)
      const b = await call<BuildView>(client, 'GET', `/api/builds/${buildIdArg(id)}`)
      process.stdout.write(opts.json === true ? JSON.stringify(b, null, 2) + '\n' : buildDetails(b))
      if (opts.follow === true) await follow(client, [b.id], (t) => process.stdout.write(t))
    })

  addClientOptions(program
    .command('log')
    .description('print a build\'s log, fetched from whichever node holds it')
    .argument('<id>', 'build id')
    .option('--attempt <n>', 'this attempt (default: the latest with a log)', limitArg))
    .action(async (id: string, opts: LogFlags) => {
      const client = await apiClient(opts)
      const q = opts.attempt !== undefined ? `?attempt=${opts.attempt}` : ''
      process.stdout.write(await fetchLog(client, `/api/builds/${buildIdArg(id)}/log${q}`))
    })

  addClientOptions(program
    .command('cancel')
    .description('cancel a build (every node stops or skips it)')
    .argument('<id>', 'build id'))
    .action(async (id: string, opts: ApiClientOptions) => {
      const b = await call<BuildView>(await apiClient(opts), 'POST', `/api/builds/${buildIdArg(id)}/cancel`, {})
      process.stdout.write(`${b.id} ${b.state}\n`)
    })

  addClientOptions(program
    .command('priority')
    .description('change the priority of a queued build (higher builds first)')
    .argument('<id>', 'build id')
    .argument('<n>', 'new priority', priorityArg))
    .action(async (id: string, n: number, opts: ApiClientOptions) => {
      const b = await call<BuildView>(await apiClient(opts), 'POST', `/api/builds/${buildIdArg(id)}/priority`, { priority: n })
      process.stdout.write(`${b.id} priority ${b.priority}\n`)
    })
}
