// `guix-swarm nar …`: pack, unpack and hash NARs from the command line.
import { closeSync, createReadStream, createWriteStream, openSync, writeSync } from 'node:fs'
import { lstat, rm } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import type { Readable, Writable } from 'node:stream'
import type { Command } from 'commander'
import {
  NarError, NarFormatError, compressStream, decompressStream, hashPathSync, packNar, packNarSync, parseCompression,
  unpackNar, type Compression
} from '../../nar/index.js'
import { CliError, EXIT } from '../errors.js'

function compressionOption (value: string): Compression {
  try {
    return parseCompression(value)
  } catch (err) {
    throw new CliError((err as Error).message, EXIT.USAGE)
  }
}

/** Bad input (a bad NAR, corrupt compressed data, a path that cannot be archived) is exit 2. */
function inputError (err: unknown): CliError | undefined {
  if (err instanceof NarFormatError) return new CliError(`${err.name}: ${err.message}`, EXIT.USAGE)
  if (err instanceof NarError) return new CliError(`${err.name}: ${err.message}`, EXIT.USAGE)
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES') return new CliError((err as Error).message, EXIT.USAGE)
  return undefined
}

function writeAll (fd: number, chunk: Buffer): void {
  let off = 0
  while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off)
}

async function exists (p: string): Promise<boolean> {
  try {
    await lstat(p)
    return true
  } catch {
    return false
  }
}

export function register (program: Command): void {
  const nar = program.command('nar').description('Pack, unpack and hash NAR archives (byte-identical to nix-store --dump)')

  nar.command('pack')
    .description('Write the NAR of PATH (stdout by default)')
    .argument('<path>', 'file, directory or symlink to archive')
    .option('-o, --output <file>', 'write to FILE instead of stdout')
    .option('-c, --compression <c>', 'none, gzip, zstd, lzip or xz', compressionOption, 'none' as Compression)
    .action(async (path: string, opts: { output?: string, compression: Compression }) => {
      if (!(await exists(path))) throw new CliError(`${path}: no such file or directory`, EXIT.USAGE)
      try {
        if (opts.output !== undefined && opts.compression === 'none') {
          // Plain NAR to a file: sync writes of recycled chunks, the fastest path.
          const fd = openSync(opts.output, 'w')
          try {
            for (const chunk of packNarSync(path, { reuseBuffers: true })) writeAll(fd, chunk)
          } finally {
            closeSync(fd)
          }
        } else {
          const sink: Writable = opts.output !== undefined ? createWriteStream(opts.output, { flags: 'w' }) : process.stdout
          await pipeline(packNar(path), compressStream(opts.compression), sink)
        }
      } catch (err) {
        if (opts.output !== undefined) await rm(opts.output, { force: true })
        throw inputError(err) ?? err
      }
    })

  nar.command('unpack')
    .description('Unpack a NAR (stdin by default) into DEST, which must not exist')
    .argument('<dest>', 'directory, file or symlink to create')
    .option('-i, --input <file>', 'read from FILE instead of stdin')
    .option('-c, --compression <c>', 'none, gzip, zstd, lzip or xz', compressionOption, 'none' as Compression)
    .action(async (dest: string, opts: { input?: string, compression: Compression }) => {
      if (await exists(dest)) throw new CliError(`refusing to unpack into ${dest}: it already exists`, EXIT.USAGE)
      if (opts.input !== undefined && !(await exists(opts.input))) throw new CliError(`${opts.input}: no such file`, EXIT.USAGE)
      const source: Readable = opts.input !== undefined ? createReadStream(opts.input, { highWaterMark: 1 << 20 }) : process.stdin
      const decompressed = opts.compression === 'none' ? source : source.pipe(decompressStream(opts.compression))
      if (decompressed !== source) source.on('error', (err) => decompressed.destroy(err))
      try {
        await unpackNar(decompressed, dest)
      } catch (err) {
        // Never leave a half-written tree behind.
        await rm(dest, { recursive: true, force: true })
        throw inputError(err) ?? err
      }
    })

  nar.command('hash')
    .description('Print the NAR hash of PATH as sha256:<nix-base32>')
    .argument('<path>', 'file, directory or symlink')
    .action((path: string) => {
      try {
        process.stdout.write(`${hashPathSync(path).narHash}\n`)
      } catch (err) {
        throw inputError(err) ?? err
      }
    })
}
