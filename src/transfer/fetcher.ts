// Verified download of one file from a set of providers: resume, parallel ranges, retries,
// and finding the liar when verification fails. Nothing reaches `dest` unverified.
import type { PeerId } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { constants } from 'node:fs'
import { open, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { AllProvidersFailedError, NoProvidersError, SizeMismatchError, TransferError, VerificationFailedError } from './errors.js'
import type { FileResponse, OpenFileOptions } from './client.js'
import type { TransferMetrics } from './metrics.js'
import { MAX_PARALLEL_PROVIDERS, PARALLEL_CHUNK_SIZE } from './options.js'

const log = logger('guix-swarm:transfer:fetch')
// Not 'a+': with O_APPEND, Linux ignores the position of positional writes, and ranges land at the end.
const OPEN_RW_CREATE = constants.O_RDWR | constants.O_CREAT

/** What fetchFile needs from TransferClient (kept narrow so the logic is testable alone). */
export interface FetchClient {
  readonly metrics: TransferMetrics
  openFile: (peer: PeerId, key: string, options?: OpenFileOptions) => Promise<FileResponse>
  markBad: (key: string, peer: PeerId | string) => void
  isBad: (key: string, peer: PeerId | string) => boolean
}

export interface FetchProgress {
  received: number
  total: number
}

export interface FetchFileOptions {
  providers: PeerId[]
  /** When known (narinfo FileSize), providers announcing another size are refused. */
  expectedSize?: number
  /** Throws (a named error) when the temp file's bytes are wrong; runs before the rename. */
  verify: (tempPath: string) => Promise<void>
  dest: string
  signal?: AbortSignal
  onProgress?: (progress: FetchProgress) => void
  /** Range size when several providers serve at once (default 8 MiB). */
  chunkSize?: number
  /** Providers used at once (default 3). */
  maxParallel?: number
}

export interface FetchResult {
  size: number
  /** Peers whose bytes ended up in the verified file. */
  providers: string[]
  /** Bytes already on disk from an earlier, interrupted fetch. */
  resumedFrom: number
}

interface Failure { peer: string, error: Error }

/** Bytes gathered before one writev to the temp file. */
const WRITE_BATCH = 1024 * 1024

/** `pieces` without their first `n` bytes (after a short writev). */
function dropPrefix (pieces: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = []
  let skip = n
  for (const piece of pieces) {
    if (skip >= piece.length) { skip -= piece.length; continue }
    out.push(skip > 0 ? piece.subarray(skip) : piece)
    skip = 0
  }
  return out
}

/** Persisted beside the temp file in ranged mode: which chunks are complete. */
interface RangeState { size: number, chunkSize: number, done: number[] }

class Download {
  readonly failures: Failure[] = []
  /** Peers that delivered bytes into the temp file; 'unknown' marks bytes from an earlier run. */
  readonly contributors = new Set<string>()
  resumedFrom = 0

  constructor (
    readonly client: FetchClient,
    readonly key: string,
    readonly tmp: string,
    readonly opts: FetchFileOptions
  ) {}

  get statePath (): string { return `${this.tmp}.json` }

  private fail (peer: PeerId, error: Error): void {
    this.client.metrics.fetchFailures++
    this.failures.push({ peer: peer.toString(), error })
    log('%s from %p failed: %s: %s', this.key, peer, error.name, error.message)
  }

  private checkTotal (peer: PeerId, total: number, size: number | undefined): void {
    if (size !== undefined && total !== size) {
      throw new SizeMismatchError(this.key, size, total, `provider ${peer.toString()}`)
    }
  }

  /**
   * Copy one response into the file at `position`, reporting bytes once written (onBytes).
   * The stream hands out noise-frame-sized pieces (~64 KiB): they are written in batches of
   * WRITE_BATCH with one writev, not one write each. Bytes that arrived before the response
   * failed are still written (a resume then starts after them).
   */
  private async copy (fh: FileHandle, res: FileResponse, position: number, onBytes: (n: number) => void): Promise<void> {
    let pos = position
    let batch: Uint8Array[] = []
    let batched = 0
    const flush = async (): Promise<void> => {
      let pieces = batch
      const total = batched
      batch = []
      batched = 0
      let left = total
      while (left > 0) {
        const { bytesWritten } = await fh.writev(pieces, pos)
        pos += bytesWritten
        left -= bytesWritten
        if (left > 0) pieces = dropPrefix(pieces, bytesWritten)
      }
      if (total > 0) onBytes(total)
    }
    try {
      for await (const chunk of res) {
        batch.push(chunk)
        batched += chunk.length
        if (batched >= WRITE_BATCH) await flush()
      }
    } catch (err) {
      await flush()
      throw err
    }
    await flush()
  }

  /** Size of the file: from expectedSize, else asked of the providers (a zero-length range). */
  async resolveSize (providers: PeerId[]): Promise<number> {
    if (this.opts.expectedSize !== undefined) return this.opts.expectedSize
    for (const peer of providers) {
      try {
        const res = await this.client.openFile(peer, this.key, { offset: 0, length: 0, signal: this.opts.signal })
        res.cancel()
        return res.total
      } catch (err) {
        if (this.opts.signal?.aborted === true) throw err
        this.fail(peer, err as Error)
      }
    }
    throw new AllProvidersFailedError(this.key, this.failures)
  }

  /** One provider at a time, appending from wherever the temp file ends. */
  async sequential (providers: PeerId[]): Promise<number> {
    let size = this.opts.expectedSize
    const fh = await open(this.tmp, OPEN_RW_CREATE)
    try {
      let pos = await this.adoptRangedTemp(fh)
      if (size !== undefined && pos > size) { await fh.truncate(0); pos = 0 }
      this.resumedFrom = pos
      if (pos > 0) this.contributors.add('unknown')
      const strikes = new Map<string, number>()
      let turn = 0
      while (true) {
        const live = providers.filter((p) => (strikes.get(p.toString()) ?? 0) < 2)
        if (live.length === 0) throw new AllProvidersFailedError(this.key, this.failures)
        const peer = live[turn++ % live.length]
        this.opts.signal?.throwIfAborted()
        try {
          const res = await this.client.openFile(peer, this.key, { offset: pos, signal: this.opts.signal })
          this.checkTotal(peer, res.total, size)
          size = res.total
          if (pos > size) { res.cancel(); await fh.truncate(0); pos = 0; continue }
          if (res.size > 0) this.contributors.add(peer.toString())
          await this.copy(fh, res, pos, (n) => { pos += n; this.progress(pos, size ?? 0) })
          if (pos === size) return size
        } catch (err) {
          if (this.opts.signal?.aborted === true) throw err
          if (err instanceof SizeMismatchError) strikes.set(peer.toString(), 2)
          else strikes.set(peer.toString(), (strikes.get(peer.toString()) ?? 0) + 1)
          this.fail(peer, err as Error)
        }
      }
    } finally {
      await fh.close()
    }
  }

  /** A temp file left by ranged mode is valid only up to its first missing chunk. */
  private async adoptRangedTemp (fh: FileHandle): Promise<number> {
    const state = await this.readState()
    let pos = (await fh.stat()).size
    if (state != null) {
      const done = new Set(state.done)
      let n = 0
      while (done.has(n)) n++
      pos = Math.min(pos, n * state.chunkSize, state.size)
      await fh.truncate(pos)
      await rm(this.statePath, { force: true })
    }
    return pos
  }

  private async readState (): Promise<RangeState | undefined> {
    try {
      const s = JSON.parse(await readFile(this.statePath, 'utf8')) as RangeState
      if (Number.isSafeInteger(s.size) && Number.isSafeInteger(s.chunkSize) && s.chunkSize > 0 && Array.isArray(s.done)) return s
    } catch {}
    return undefined
  }

  private progress (received: number, total: number): void {
    this.opts.onProgress?.({ received, total })
  }

  /** Several providers at once, each pulling whole chunks; a failed chunk resumes on another provider. */
  async ranged (providers: PeerId[], size: number, chunkSize: number, maxParallel: number): Promise<number> {
    const fh = await open(this.tmp, OPEN_RW_CREATE)
    try {
      // Reuse the chunks an earlier run completed (ranged state, or a sequential prefix).
      const prior = await this.readState()
      const have = (await fh.stat()).size
      const done = new Set<number>()
      if (prior != null && prior.size === size && prior.chunkSize === chunkSize) {
        for (const i of prior.done) done.add(i)
      } else {
        const prefix = prior == null ? Math.min(have, size) : 0
        for (let i = 0; i * chunkSize < size; i++) {
          if (Math.min(size, (i + 1) * chunkSize) <= prefix) done.add(i)
        }
      }
      const chunkCount = Math.ceil(size / chunkSize)
      if (done.size > 0) this.contributors.add('unknown')
      this.resumedFrom = [...done].reduce((sum, i) => sum + Math.min(chunkSize, size - i * chunkSize), 0)
      await fh.truncate(size)
      const state: RangeState = { size, chunkSize, done: [...done] }
      await writeFile(this.statePath, JSON.stringify(state))

      interface Task { index: number, pos: number, end: number, tried: Set<string> }
      const queue: Task[] = []
      for (let i = 0; i < chunkCount; i++) {
        if (!done.has(i)) queue.push({ index: i, pos: i * chunkSize, end: Math.min(size, (i + 1) * chunkSize), tried: new Set() })
      }
      let received = this.resumedFrom
      const strikes = new Map<string, number>()
      const alive = (p: PeerId): boolean => (strikes.get(p.toString()) ?? 0) < 2
      let fatal: Error | undefined
      const inner = new AbortController()
      const onOuterAbort = (): void => { inner.abort(this.opts.signal?.reason) }
      this.opts.signal?.addEventListener('abort', onOuterAbort, { once: true })

      const worker = async (preferred: PeerId): Promise<void> => {
        while (fatal == null) {
          const task = queue.shift()
          if (task == null) return
          const candidates = providers.filter((p) => alive(p) && !task.tried.has(p.toString()))
          const peer = candidates.find((p) => p.equals(preferred)) ?? candidates[0]
          if (peer == null) {
            fatal = new AllProvidersFailedError(`${this.key} range ${task.pos}-${task.end}`, this.failures)
            inner.abort(fatal)
            return
          }
          try {
            log('%s range %d-%d from %p', this.key, task.pos, task.end, peer)
            const res = await this.client.openFile(peer, this.key, { offset: task.pos, length: task.end - task.pos, signal: inner.signal })
            this.checkTotal(peer, res.total, size)
            if (res.size > 0) this.contributors.add(peer.toString())
            await this.copy(fh, res, task.pos, (n) => { task.pos += n; received += n; this.progress(received, size) })
            log('%s range %d done', this.key, task.index)
            done.add(task.index)
            state.done = [...done]
            await writeFile(this.statePath, JSON.stringify(state))
          } catch (err) {
            if (inner.signal.aborted) return
            task.tried.add(peer.toString())
            strikes.set(peer.toString(), err instanceof SizeMismatchError ? 2 : (strikes.get(peer.toString()) ?? 0) + 1)
            this.fail(peer, err as Error)
            // Another worker (or this one, with another provider) continues from task.pos.
            queue.unshift(task)
          }
        }
      }
      const workers = providers.slice(0, maxParallel).map(async (p) => { await worker(p) })
      try {
        await Promise.all(workers)
      } finally {
        this.opts.signal?.removeEventListener('abort', onOuterAbort)
      }
      this.opts.signal?.throwIfAborted()
      if (fatal != null) throw fatal
      if (done.size !== chunkCount) {
        // Workers of dead providers exited with chunks left: the rest of the providers are dead too.
        throw new AllProvidersFailedError(this.key, this.failures)
      }
      return size
    } finally {
      await fh.close()
    }
  }
}

async function discard (tmp: string): Promise<void> {
  await rm(tmp, { force: true })
  await rm(`${tmp}.json`, { force: true })
}

/** Download, verify, rename. See FetchFileOptions. */
export async function fetchFile (client: FetchClient, key: string, opts: FetchFileOptions): Promise<FetchResult> {
  const seen = new Set<string>()
  let candidates = opts.providers.filter((p) => {
    const id = p.toString()
    if (seen.has(id) || client.isBad(key, p)) return false
    seen.add(id)
    return true
  })
  if (candidates.length === 0) throw new NoProvidersError(key)
  const tmp = `${opts.dest}.part`
  const chunkSize = opts.chunkSize ?? PARALLEL_CHUNK_SIZE
  const maxParallel = Math.max(1, opts.maxParallel ?? MAX_PARALLEL_PROVIDERS)
  const badPeers: string[] = []
  let lastVerifyError: Error | undefined

  const attempt = async (providers: PeerId[], allowParallel: boolean): Promise<Download> => {
    const dl = new Download(client, key, tmp, opts)
    if (allowParallel && providers.length > 1 && maxParallel > 1) {
      const size = await dl.resolveSize(providers)
      if (size > chunkSize) {
        await dl.ranged(providers, size, chunkSize, maxParallel)
        return dl
      }
    }
    await dl.sequential(providers)
    return dl
  }

  const verifyAndKeep = async (dl: Download): Promise<FetchResult | undefined> => {
    try {
      await opts.verify(tmp)
    } catch (err) {
      client.metrics.verifyFailures++
      lastVerifyError = err as Error
      log('%s failed verification (contributors %s): %s', key, [...dl.contributors].join(','), (err as Error).message)
      await discard(tmp)
      return undefined
    }
    const size = (await stat(tmp)).size
    if (opts.expectedSize !== undefined && size !== opts.expectedSize) {
      await discard(tmp)
      throw new SizeMismatchError(key, opts.expectedSize, size, 'verified temp file')
    }
    await rename(tmp, opts.dest)
    await rm(`${tmp}.json`, { force: true })
    client.metrics.filesFetched++
    return { size, providers: [...dl.contributors].filter((c) => c !== 'unknown'), resumedFrom: dl.resumedFrom }
  }

  while (candidates.length > 0) {
    opts.signal?.throwIfAborted()
    const dl = await attempt(candidates, true)
    const kept = await verifyAndKeep(dl)
    if (kept != null) return kept
    const contributors = [...dl.contributors]
    if (contributors.length === 1 && contributors[0] !== 'unknown') {
      client.markBad(key, contributors[0])
      badPeers.push(contributors[0])
      candidates = candidates.filter((p) => p.toString() !== contributors[0])
      continue
    }
    // Bytes from several peers (or an earlier run): fetch whole copies one peer at a time to find the liar(s).
    for (const peer of candidates) {
      opts.signal?.throwIfAborted()
      let single: Download
      try {
        single = await attempt([peer], false)
      } catch (err) {
        if (opts.signal?.aborted === true || !(err instanceof TransferError)) throw err
        await discard(tmp)
        continue
      }
      const ok = await verifyAndKeep(single)
      if (ok != null) return ok
      client.markBad(key, peer)
      badPeers.push(peer.toString())
    }
    break
  }
  throw new VerificationFailedError(key, badPeers, lastVerifyError)
}
