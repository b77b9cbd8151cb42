// Build logs: streamed to `<dir>/<name>.log` while the build runs, gzip-compressed to
// `<name>.log.gz` when it ends. Names are `<build id>.<attempt>`: what a LogRef carries.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGzip, gunzipSync } from 'node:zlib'
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

export class LogStore {
  constructor (readonly dir: string) {}

  async init (): Promise<void> { await mkdir(this.dir, { recursive: true }) }

  open (buildId: string, attempt: number): LogWriter {
    const name = logName(buildId, attempt)
    const raw = join(this.dir, `${name}.log`)
    const out: WriteStream = createWriteStream(raw)
    let failed: Error | undefined
    out.on('error', (e) => { failed = e; log.error('writing log %s: %s', name, e.message) })
    return {
      name,
      write: (chunk) => { if (failed === undefined) out.write(chunk) },
      close: async () => {
        await new Promise<void>((resolve) => out.end(resolve))
        if (failed !== undefined) return
        const gz = join(this.dir, `${name}.log.gz`)
        const tmp = `${gz}.tmp`
        await pipeline(createReadStream(raw), createGzip(), createWriteStream(tmp))
        await rename(tmp, gz)
        await rm(raw, { force: true })
      }
    }
  }

  /** A log by name (decompressed), the live file of a running build, or undefined. */
  async read (name: string): Promise<Buffer | undefined> {
    if (!NAME.test(name)) throw new BadLogNameError(name)
    try {
      return gunzipSync(await readFile(join(this.dir, `${name}.log.gz`)))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    }
    try {
      return await readFile(join(this.dir, `${name}.log`))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw e
    }
  }

  /** Attempts of `buildId` whose logs this node holds, ascending. */
  async attempts (buildId: string): Promise<number[]> {
    const found = new Set<number>()
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      const m = /^(.+)\.([0-9]+)\.log(\.gz)?$/.exec(f)
      if (m !== null && m[1] === buildId) found.add(Number(m[2]))
    }
    return [...found].sort((a, b) => a - b)
  }
}
