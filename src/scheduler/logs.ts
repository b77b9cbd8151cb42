// Build logs: kept in memory while short and young, else streamed to `<dir>/<name>.log` while
// the build runs; gzip-compressed to `<name>.log.gz` when it ends. Names are
// `<build id>.<attempt>`: what a LogRef carries.
import { createReadStream, createWriteStream, renameSync, writeFileSync, type WriteStream } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGzip, gunzipSync, gzipSync } from 'node:zlib'
import { logger } from '@libp2p/logger'
import { BadLogNameError } from './errors.js'

const log = logger('guix-swarm:scheduler:logs')

const NAME = /^([0-9a-z]{1,64})\.([0-9]{1,4})$/

export function logName (buildId: string, attempt: number): string {
  const name = `${buildId}.${attempt}`
  if (!NAME.test(name)) throw new BadLogNameError(name)
  return name
}

/** A log being written; `close()` compresses it. */
export interface LogWriter {
  readonly name: string
  write: (chunk: Buffer) => void
  close: () => Promise<void>
}

/**
 * A log stays in memory while it is at most this long and its first output younger than
 * MEMORY_LOG_MS; then it goes to a file. A short build's log is then one compressed write when it
 * ends, where a file per build (open, writes, close, read back through gzip, rename, remove) was a
 * tenth of a builder's file work for 200 trivial builds. The clock starts at the first output, not
 * at open, and runs 5 s: a batch opens every build's log when it starts, builds them one by one
 * and learns their outcomes when the last one ends, so with a 1 s clock from open the logs of a
 * batch's earlier builds went through a file (about one in five of a builder's in bench:swarm).
 * A crash loses at most the last 5 s of a log, and with it the build's result: the build runs
 * again.
 */
export const MEMORY_LOG_BYTES = 64 * 1024
export const MEMORY_LOG_MS = 5000

export class LogStore {
  /** Logs of running builds still held in memory, by name. */
  private readonly held = new Map<string, Buffer[]>()

  /** `memoryMs`: how long a log's first output may be held in memory (tests shorten it). */
  constructor (readonly dir: string, private readonly memoryMs = MEMORY_LOG_MS) {}

  async init (): Promise<void> { await mkdir(this.dir, { recursive: true }) }

  open (buildId: string, attempt: number): LogWriter {
    const name = logName(buildId, attempt)
    const raw = join(this.dir, `${name}.log`)
    const gz = join(this.dir, `${name}.log.gz`)
    let chunks: Buffer[] | undefined = []
    let size = 0
    let out: WriteStream | undefined
    let failed: Error | undefined
    this.held.set(name, chunks)
    const spill = (): void => {
      if (chunks === undefined) return
      const file = createWriteStream(raw)
      file.on('error', (e) => { failed = e; log.error('writing log %s: %s', name, e.message) })
      for (const c of chunks) file.write(c)
      out = file
      chunks = undefined
      this.held.delete(name)
    }
    let timer: NodeJS.Timeout | undefined
    return {
      name,
      write: (chunk) => {
        if (failed !== undefined) return
        if (chunks === undefined) { out?.write(chunk); return }
        if (timer === undefined) {
          timer = setTimeout(spill, this.memoryMs)
          timer.unref()
        }
        chunks.push(chunk)
        size += chunk.length
        if (size > MEMORY_LOG_BYTES) spill()
      },
      close: async () => {
        clearTimeout(timer)
        const tmp = `${gz}.tmp`
        if (chunks !== undefined) {
          // synchronous: a few KiB, compressed in microseconds; the build is over either way
          try {
            writeFileSync(tmp, gzipSync(Buffer.concat(chunks)))
            renameSync(tmp, gz)
          } catch (e) {
            log.error('writing log %s: %s', name, (e as Error).message)
          } finally {
            chunks = undefined
            this.held.delete(name)
          }
          return
        }
        if (out === undefined) return // closed before
        const file = out
        await new Promise<void>((resolve) => file.end(resolve))
        if (failed !== undefined) return
        await pipeline(createReadStream(raw), createGzip(), createWriteStream(tmp))
        await rename(tmp, gz)
        await rm(raw, { force: true })
      }
    }
  }

  /** A log by name (decompressed), the live log of a running build, or undefined. */
  async read (name: string): Promise<Buffer | undefined> {
    if (!NAME.test(name)) throw new BadLogNameError(name)
    try {
      return gunzipSync(await readFile(join(this.dir, `${name}.log.gz`)))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    }
    const held = this.held.get(name)
    if (held !== undefined) return Buffer.concat(held)
    try {
      return await readFile(join(this.dir, `${name}.log`))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    }
    // the build may have ended while we looked: its log is compressed now
    return await readFile(join(this.dir, `${name}.log.gz`)).then(gunzipSync, (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined
      throw e
    })
  }

  /** Attempts of `buildId` whose logs this node holds, ascending. */
  async attempts (buildId: string): Promise<number[]> {
    const found = new Set<number>()
    for (const name of this.held.keys()) {
      const m = NAME.exec(name)
      if (m !== null && m[1] === buildId) found.add(Number(m[2]))
    }
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      const m = /^(.+)\.([0-9]+)\.log(\.gz)?$/.exec(f)
      if (m !== null && m[1] === buildId) found.add(Number(m[2]))
    }
    return [...found].sort((a, b) => a - b)
  }
}
