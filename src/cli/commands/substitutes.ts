// Substitutes from the command line: publish local store paths to the swarm, pull paths from the
// swarm into the node's cache, and GC the cache (each talks to the local node's API).
import type { Command } from 'commander'
import { parseSize } from '../../node/config.js'
import type { GcReport, PublishedPath } from '../../substitutes/index.js'
import { addClientOptions, ApiClient, resolveApiUrl, type ApiClientOptions } from '../client.js'
import { CliError, EXIT } from '../errors.js'

/** Exporting a large closure (compressing every NAR) takes far longer than the client's default. */
const LONG_TIMEOUT_MS = 6 * 60 * 60 * 1000

interface JsonFlags extends ApiClientOptions { json?: boolean }
interface GcFlags extends JsonFlags { maxSize?: number, keepDays?: number, force?: boolean, dryRun?: boolean }

interface PulledPath { storePath: string, status: 'held' | 'fetched' | 'failed', fetched?: string[], narFrom?: string[], badPeers?: string[], error?: { name: string, message: string } }

function sizeArg (value: string): number {
  const n = parseSize(value)
  if (n === undefined) throw new CliError(`expected a size such as 500000000, 512M or 10G, got "${value}"`, EXIT.USAGE)
  return n
}

function daysArg (value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value)) throw new CliError(`expected a number of days, got "${value}"`, EXIT.USAGE)
  return Number(value)
}

function storePathArgs (paths: string[]): string[] {
  for (const p of paths) {
    if (!/^\/.+\/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[^/]+$/.test(p)) throw new CliError(`"${p}" is not a store path`, EXIT.USAGE)
  }
  return paths
}

function fmtBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`
}

async function client (opts: ApiClientOptions): Promise<ApiClient> {
  return new ApiClient(await resolveApiUrl(opts), LONG_TIMEOUT_MS)
}

export function register (program: Command): void {
  addClientOptions(program
    .command('publish')
    .argument('<store-path...>', 'store paths of the node\'s local store')
    .description('add the closure of local store paths to the node\'s cache, signed with its keys, and announce them to the swarm')
    .option('--json', 'print the raw JSON'))
    .action(async (paths: string[], opts: JsonFlags) => {
      const r = await (await client(opts)).post<{ paths: PublishedPath[] }>('/api/publish', { paths: storePathArgs(paths) })
      if (opts.json === true) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return }
      for (const p of r.paths) {
        process.stdout.write(`${p.storePath}  ${fmtBytes(p.narSize)} NAR, ${p.files.map((f) => `${f.compression} ${fmtBytes(f.fileSize)}`).join(', ')}${p.announced ? '' : '  (not announced yet: no DHT peers answered; retried later)'}\n`)
      }
    })

  addClientOptions(program
    .command('pull')
    .argument('<store-path...>', 'store paths to fetch from the swarm')
    .description('fetch store paths from the swarm into the node\'s cache (trusted narinfo, verified NARs), as a mirror does for each successful build')
    .option('--json', 'print the raw JSON'))
    .action(async (paths: string[], opts: JsonFlags) => {
      const r = await (await client(opts)).post<{ paths: PulledPath[] }>('/api/mirror', { paths: storePathArgs(paths) })
      if (opts.json === true) process.stdout.write(JSON.stringify(r, null, 2) + '\n')
      else {
        for (const p of r.paths) {
          const detail = p.status === 'fetched' ? ` from ${(p.narFrom ?? []).join(', ')}${(p.badPeers ?? []).length > 0 ? ` (refused bad bytes from ${(p.badPeers ?? []).join(', ')})` : ''}` : p.status === 'failed' ? `: ${p.error?.name ?? ''}: ${p.error?.message ?? ''}` : ''
          process.stdout.write(`${p.storePath}  ${p.status}${detail}\n`)
        }
      }
      if (r.paths.some((p) => p.status === 'failed')) throw new CliError(`${r.paths.filter((p) => p.status === 'failed').length} path(s) could not be fetched`, EXIT.FAILED)
    })

  addClientOptions(program
    .command('gc')
    .description('evict least-recently-served NARs and their narinfos from the node\'s cache; never a last copy the swarm knows of unless --force')
    .option('--max-size <size>', 'evict until the cache holds at most this much, e.g. 50G (default: the node\'s --max-store-size)', sizeArg)
    .option('--keep-days <n>', 'evict what was not served for N days', daysArg)
    .option('--force', 'evict even when no other node provides the NAR')
    .option('--dry-run', 'only report what would be evicted')
    .option('--json', 'print the raw JSON'))
    .action(async (opts: GcFlags) => {
      const r = await (await client(opts)).post<GcReport>('/api/gc', {
        ...(opts.maxSize !== undefined ? { maxSize: opts.maxSize } : {}),
        ...(opts.keepDays !== undefined ? { keepDays: opts.keepDays } : {}),
        ...(opts.force === true ? { force: true } : {}),
        ...(opts.dryRun === true ? { dryRun: true } : {})
      })
      if (opts.json === true) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return }
      for (const p of r.removed) process.stdout.write(`${r.dryRun ? 'would remove' : 'removed'} ${p.storePath} (${fmtBytes(p.bytes)})\n`)
      for (const p of r.keptLastCopies) process.stdout.write(`kept ${p}: no other node provides it (use --force to evict)\n`)
      process.stdout.write(`${r.dryRun ? 'would free' : 'freed'} ${fmtBytes(r.freed)}; cache ${fmtBytes(r.before)} -> ${fmtBytes(r.after)}\n`)
    })
}
