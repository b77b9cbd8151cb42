// A small StoreDaemon fake for unit tests: "store paths" are plain directories on disk, their
// NARs made by our own packer. It lets us test a /gnu/store cache without a Guix daemon, and make
// a store that misbehaves (a stream that breaks half-way, a NAR that does not match its info).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { closureOrder, type PathInfo, type StoreDaemon } from '../../src/daemon/index.js'
import { encodeNixBase32, hashPathSync, packNar, packNarSync } from '../../src/nar/index.js'

export interface DirPath { path: string, dir: string, references: string[], deriver?: string }

/** lie: the info claims 8 bytes more than the NAR streamed; lie-short: 8 bytes fewer. */
export type Fault = 'none' | 'break-midway' | 'lie' | 'lie-short'

export class DirStore implements StoreDaemon {
  readonly kind = 'guix' as const
  readonly paths = new Map<string, DirPath>()
  fault: Fault = 'none'
  exports = 0
  /** Awaited by exportPath before it answers (hold one path's export back). */
  gate?: (path: string) => Promise<void>

  constructor (readonly root: string, readonly storeDir = '/gnu/store') {}

  /** A new store path holding `files` (name → content); references are full store paths. */
  async add (name: string, files: Record<string, string | Buffer>, references: string[] = [], deriver?: string): Promise<string> {
    const base = `${encodeNixBase32(randomBytes(20))}-${name}`
    const dir = join(this.root, base)
    await mkdir(dir, { recursive: true })
    for (const [f, content] of Object.entries(files)) await writeFile(join(dir, f), content)
    const path = `${this.storeDir}/${base}`
    this.paths.set(path, { path, dir, references, deriver })
    return path
  }

  private get (path: string): DirPath {
    const p = this.paths.get(path)
    if (p === undefined) throw new Error(`path '${path}' is not valid`)
    return p
  }

  async isValid (path: string): Promise<boolean> { return this.paths.has(path) }
  async filterInvalid (paths: string[]): Promise<string[]> { return paths.filter((p) => !this.paths.has(p)) }

  async queryPathInfo (path: string): Promise<PathInfo> {
    const p = this.get(path)
    const d = hashPathSync(p.dir)
    return { path, narHash: d.narHash, narSize: d.narSize, references: [...p.references].sort(), ...(p.deriver !== undefined ? { deriver: p.deriver } : {}) }
  }

  async queryPathInfos (paths: string[]): Promise<PathInfo[]> {
    return await Promise.all(paths.map(async (p) => await this.queryPathInfo(p)))
  }

  async queryRequisites (paths: string[]): Promise<string[]> {
    const seen = new Set<string>()
    const walk = (p: string): void => {
      if (seen.has(p)) return
      seen.add(p)
      for (const r of this.get(p).references) walk(r)
    }
    paths.forEach(walk)
    return closureOrder(await this.queryPathInfos([...seen]))
  }

  async readDerivation (): Promise<never> { throw new Error('DirStore has no derivations') }
  async importPath (): Promise<void> { throw new Error('DirStore does not import') }

  async exportPath (path: string): Promise<{ info: PathInfo, nar: Readable }> {
    this.exports++
    await this.gate?.(path)
    const info = await this.queryPathInfo(path)
    const dir = this.get(path).dir
    if (this.fault === 'lie') return { info: { ...info, narSize: info.narSize + 8 }, nar: packNar(dir) }
    if (this.fault === 'lie-short') return { info: { ...info, narSize: info.narSize - 8 }, nar: packNar(dir) }
    if (this.fault === 'break-midway') {
      const half = info.narSize / 2
      const chunks = function * (): Generator<Buffer> {
        let sent = 0
        for (const c of packNarSync(dir)) {
          sent += c.length
          if (sent > half) throw new Error('daemon went away mid-NAR')
          yield c
        }
      }
      return { info, nar: Readable.from(chunks(), { objectMode: false }) }
    }
    return { info, nar: packNar(dir) }
  }
}

/** Run `fn` in a fresh temp directory, removed afterwards whatever happens. */
export async function withTemp (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'guix-swarm-cache-'))
  try {
    await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
