// `guix-swarm cache …`: write a static binary cache from the local store.
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { BinaryCache, CacheError, defaultCompressions, type CacheEntry } from '../../cache/index.js'
import { DaemonError, openBackend, type StoreDaemon } from '../../daemon/index.js'
import { NarError, parseCompression, type Compression } from '../../nar/index.js'
import { GUIX_STORE_DIR, KeyError, NIX_STORE_DIR, parseSecretKey, SexpError, type Dialect, type KeyPair } from '../../narinfo/index.js'
import { CliError, EXIT } from '../errors.js'

interface ExportOptions {
  to: string
  key?: string
  compression?: string[]
  storeDir?: string
  daemon?: string
  dialect?: string
  host?: string
  json?: boolean
  progress?: boolean
}

async function loadKey (file: string): Promise<KeyPair> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new CliError(`cannot read key ${file}: ${(err as Error).message}`, EXIT.USAGE)
  }
  try {
    return parseSecretKey(text)
  } catch (err) {
    if (err instanceof KeyError || err instanceof SexpError) throw new CliError(`${file}: ${err.name}: ${err.message}`, EXIT.USAGE)
    throw err
  }
}

function parseCompressions (values: string[] | undefined): Compression[] | undefined {
  if (values === undefined || values.length === 0) return undefined
  try {
    return values.flatMap((v) => v.split(',')).map((v) => parseCompression(v.trim()))
  } catch (err) {
    throw new CliError(`--compression: ${(err as Error).message}`, EXIT.USAGE)
  }
}

function daemonKind (opts: ExportOptions): 'nix' | 'guix' {
  if (opts.daemon === 'nix' || opts.daemon === 'guix') return opts.daemon
  if (opts.daemon !== undefined) throw new CliError(`--daemon must be nix or guix, not ${JSON.stringify(opts.daemon)}`, EXIT.USAGE)
  return opts.storeDir?.replace(/\/+$/, '') === GUIX_STORE_DIR ? 'guix' : 'nix'
}

function dialectOf (opts: ExportOptions): Dialect | undefined {
  if (opts.dialect === undefined) return undefined
  if (opts.dialect === 'nix' || opts.dialect === 'guix') return opts.dialect
  throw new CliError(`--dialect must be guix or nix, not ${JSON.stringify(opts.dialect)}`, EXIT.USAGE)
}

export function register (program: Command): void {
  const cache = program.command('cache').description('Static binary caches (nix-cache-info, narinfos, NARs) any HTTP server can serve')

  cache.command('export')
    .description('Write a signed static binary cache holding the closure of STOREPATH… (references and deriver from the local daemon)')
    .argument('<storepath...>', 'store paths whose closures to export')
    .requiredOption('--to <dir>', 'cache directory (created if missing; existing entries are kept)')
    .option('-k, --key <secfile>', 'secret key: a Nix NAME:BASE64 key signs with Sig:, a Guix signing-key.sec with Signature:')
    .option('-c, --compression <c>', 'none, gzip, zstd, lzip or xz (default zstd); repeat or comma-separate for several, one file each, made in one pass',
      (v: string, acc: string[]) => [...acc, v], [])
    .option('--store-dir <dir>', `store directory (default: the daemon's; ${NIX_STORE_DIR} for Nix)`)
    .option('--daemon <kind>', 'nix or guix (default: guix when --store-dir is /gnu/store, else nix)')
    .option('--dialect <d>', 'narinfo layout: guix or nix (default: guix for /gnu/store, else nix)')
    .option('--host <name>', 'host name in a Guix signature (default: this machine\'s)')
    .option('--json', 'print a JSON summary on stdout')
    .option('--no-progress', 'no progress lines on stderr')
    .action(async (paths: string[], opts: ExportOptions) => {
      const keys = opts.key !== undefined ? await loadKey(opts.key) : undefined
      if (keys === undefined) process.stderr.write('warning: no --key: narinfos are unsigned, and clients require signatures by default\n')
      const compressions = parseCompressions(opts.compression)
      const dialect = dialectOf(opts)
      let store: StoreDaemon
      try {
        store = (await openBackend(daemonKind(opts), opts.storeDir !== undefined ? { storeDir: opts.storeDir.replace(/\/+$/, '') } : {})).store
      } catch (err) {
        if (err instanceof DaemonError) throw new CliError(`cannot open the local store: ${err.message}`, EXIT.UNAVAILABLE)
        throw err
      }
      const bc = new BinaryCache({
        dir: resolve(opts.to),
        storeDir: store.storeDir,
        dialect,
        keys,
        compressions: compressions ?? defaultCompressions(dialect ?? (store.storeDir === GUIX_STORE_DIR ? 'guix' : 'nix')),
        host: opts.host
      })
      const started = Date.now()
      let entries: CacheEntry[]
      try {
        entries = await bc.addClosure(store, paths.map((p) => p.replace(/\/+$/, '')), {
          onProgress: (done, total, e) => {
            if (opts.progress !== false) process.stderr.write(`[${done}/${total}] ${e.storePath} (${e.narSize} bytes NAR)\n`)
          }
        })
      } catch (err) {
        if (err instanceof CacheError || err instanceof NarError || err instanceof DaemonError) {
          throw new CliError(`cache export: ${err.name}: ${err.message}`, EXIT.FAILED)
        }
        throw err
      }
      const fileBytes = entries.reduce((s, e) => s + e.files.reduce((t, f) => t + f.fileSize, 0), 0)
      const narBytes = entries.reduce((s, e) => s + e.narSize, 0)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify({
          dir: bc.dir,
          storeDir: bc.storeDir,
          dialect: bc.dialect,
          signature: keys === undefined ? 'none' : keys.kind,
          compressions: bc.compressions,
          paths: entries.map((e) => ({ storePath: e.storePath, narHash: e.narHash, narSize: e.narSize, files: e.files })),
          narBytes,
          fileBytes,
          seconds: (Date.now() - started) / 1000
        }, null, 2) + '\n')
      } else {
        process.stdout.write(`${entries.length} paths, ${narBytes} bytes of NAR, ${fileBytes} bytes written as ${bc.compressions.join(', ')} in ${bc.dir}\n`)
      }
    })
}
