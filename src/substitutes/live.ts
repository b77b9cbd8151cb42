// Serving a large NAR while it arrives from the swarm. The download appends to a temp file and is
// decompressed and hashed as it goes; HTTP readers tail that file through the download's own
// descriptor (so the rename into the cache never pulls it from under them). Readers get every
// byte except the last HOLD_BACK ones until NarHash and NarSize match; on a mismatch they are cut,
// so no client ever receives a complete wrong NAR, and the temp file is removed (the cache keeps
// nothing). Small NARs do not come here: fetch-then-serve is simpler and costs them little.
import { once } from 'node:events'
import { close, open, read, write as fsWrite } from 'node:fs'
import { rm } from 'node:fs/promises'
import { PassThrough, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { PeerId } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { decompressStream, NarHasher, type Compression } from '../nar/index.js'
import { narHashBytes, normalizeNarHash, type Narinfo } from '../narinfo/index.js'
import type { TransferClient } from '../transfer/index.js'
import { SubstituteFetchError, SubstituteStreamVerifyError } from './errors.js'

const log = logger('guix-swarm:substitutes:live')

/** Bytes kept from readers until the NAR verifies: the end of the body is what makes it complete. */
export const HOLD_BACK = 64 * 1024

export interface LiveNarInit {
  narinfo: Narinfo
  /** The narinfo as received (what gets served and stored). */
  text: string
  /** The one file of the narinfo being fetched: its URL, compression and size. */
  url: string
  compression: Compression
  size: number
  /** Transfer key of the file (`<narHash>.<compression>`). */
  key: string
  providers: PeerId[]
  client: Pick<TransferClient, 'openFile' | 'isBad' | 'markBad'>
  tempPath: string
  /** A provider silent this long is dropped for the next one (readers are waiting); default 30 s. */
  idleTimeoutMs?: number
}

/** One NAR file being downloaded, verified on the fly, readable while it arrives. */
export class LiveNar {
  readonly url: string
  readonly size: number
  readonly narinfoText: string
  /** Bytes written to the temp file so far. */
  received = 0
  /** Peers whose bytes went into the file. */
  readonly contributors = new Set<string>()
  /** Settles once the file verified (resolves) or failed (rejects); nothing else is released before. */
  readonly verified: Promise<void>
  private state: 'running' | 'verified' | 'failed' = 'running'
  private failure?: Error
  private fd?: number
  private readers = 0
  private settled = false
  private readonly waiters = new Set<() => void>()
  private readonly opened: Promise<number>

  constructor (private readonly init: LiveNarInit) {
    this.url = init.url
    this.size = init.size
    this.narinfoText = init.text
    this.opened = new Promise((resolve, reject) => {
      // 'w+': written by the download, read by every HTTP reader through the same descriptor
      open(init.tempPath, 'w+', (err, fd) => { if (err != null) reject(err); else { this.fd = fd; resolve(fd) } })
    })
    this.verified = this.run()
    this.verified.catch(() => {}) // a failure reaches readers through wait(); nobody may be listening
  }

  get failed (): boolean { return this.state === 'failed' }

  /** How far readers may read now. */
  get releasable (): number {
    if (this.state === 'verified') return this.size
    return Math.max(0, Math.min(this.received, this.size - HOLD_BACK))
  }

  /** Resolve once byte `pos` may be read (releasable > pos); rejects if the download failed. */
  async wait (pos: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted()
      if (this.state === 'failed') throw this.failure ?? new SubstituteFetchError(`${this.url}: download failed`)
      if (this.releasable > pos) return
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          this.waiters.delete(wake)
          signal?.removeEventListener('abort', wake)
          resolve()
        }
        this.waiters.add(wake)
        signal?.addEventListener('abort', wake, { once: true })
      })
    }
  }

  /** Take a reader's reference (the descriptor stays open until every reader released it). */
  async attach (): Promise<void> {
    this.readers++
    try {
      await this.opened
    } catch (err) {
      this.readers--
      throw err
    }
    if (this.fd === undefined) {
      // settled and closed before this reader came: the file is in the cache now, or gone
      this.readers--
      throw new SubstituteFetchError(`${this.url}: the download is over`)
    }
  }

  release (): void {
    this.readers--
    this.maybeClose()
  }

  /** Positional read from the temp file (only below `releasable`). */
  async read (buf: Buffer, pos: number, length: number): Promise<number> {
    const fd = await this.opened
    return await new Promise((resolve, reject) => {
      read(fd, buf, 0, length, pos, (err, n) => { if (err != null) reject(err); else resolve(n) })
    })
  }

  private notify (): void {
    const ws = [...this.waiters]
    this.waiters.clear()
    for (const w of ws) w()
  }

  private maybeClose (): void {
    if (this.readers > 0 || !this.settled || this.fd === undefined) return
    const fd = this.fd
    this.fd = undefined
    close(fd, () => {})
  }

  private async run (): Promise<void> {
    const { narinfo, compression, key, client } = this.init
    const input = new PassThrough({ highWaterMark: 1024 * 1024 })
    const hasher = new NarHasher()
    const checked = pipeline(input, decompressStream(compression), new Writable({
      write (chunk: Buffer, _enc, cb) { hasher.update(chunk); cb() }
    }))
    // awaited at the end; a decoder failing early is fatal (it cannot be rewound to retry a peer)
    let decodeError: Error | undefined
    checked.catch((err: Error) => { decodeError = err })
    try {
      const fd = await this.opened
      const failures: string[] = []
      for (const peer of this.init.providers) {
        if (this.received >= this.size) break
        if (client.isBad(key, peer)) continue
        const idle = new AbortController()
        const idleMs = this.init.idleTimeoutMs ?? 30_000
        const timer = setTimeout(() => { idle.abort(new SubstituteFetchError(`${peer.toString()} sent nothing for ${idleMs} ms`)) }, idleMs)
        try {
          const res = await client.openFile(peer, key, { offset: this.received, signal: idle.signal })
          if (res.total !== this.size) {
            res.cancel()
            throw new SubstituteFetchError(`${peer.toString()} has ${res.total} bytes of ${key}, the narinfo says ${this.size}`)
          }
          for await (const chunk of res) {
            timer.refresh()
            this.contributors.add(peer.toString())
            await write(fd, chunk, this.received)
            this.received += chunk.length
            if (!input.write(chunk)) await Promise.race([once(input, 'drain'), checked])
            this.notify()
          }
        } catch (err) {
          if (decodeError !== undefined) throw decodeError
          failures.push(`${peer.toString()}: ${(err as Error).name}: ${(err as Error).message}`)
          log('%s from %p failed at byte %d: %s', key, peer, this.received, (err as Error).message)
        } finally {
          clearTimeout(timer)
        }
      }
      if (this.received < this.size) {
        throw new SubstituteFetchError(`${narinfo.storePath}: got ${this.received} of ${this.size} bytes of ${key} (${failures.join('; ') || 'no provider'})`)
      }
      input.end()
      await checked
      const got = hasher.digest()
      if (got.narSize !== narinfo.narSize || !Buffer.from(got.sha256).equals(Buffer.from(narHashBytes(narinfo.narHash)))) {
        throw new SubstituteStreamVerifyError(`${narinfo.storePath}: the streamed NAR is ${got.narSize} bytes hashing to ${got.narHash}, the narinfo says ${narinfo.narSize} bytes, ${normalizeNarHash(narinfo.narHash)}`)
      }
      this.state = 'verified'
      log('%s verified while streaming (%d bytes from %s)', narinfo.storePath, this.size, [...this.contributors].join(','))
    } catch (err) {
      input.destroy()
      await checked.catch(() => {})
      const e = err instanceof SubstituteStreamVerifyError || err instanceof SubstituteFetchError
        ? err
        : new SubstituteStreamVerifyError(`${narinfo.storePath}: the streamed ${compression} NAR does not verify: ${(err as Error).name}: ${(err as Error).message}`)
      // one contributor: it is the liar; several: the regular fetcher will find out which
      if (!(e instanceof SubstituteFetchError) && this.contributors.size === 1) client.markBad(key, [...this.contributors][0])
      this.failure = e
      this.state = 'failed'
      await rm(this.init.tempPath, { force: true })
      throw e
    } finally {
      this.settled = true
      this.notify()
      this.maybeClose()
    }
  }
}

async function write (fd: number, chunk: Uint8Array, pos: number): Promise<void> {
  let off = 0
  while (off < chunk.length) {
    // positional, looped: a short write is legal
    const n = await new Promise<number>((resolve, reject) => {
      fsWrite(fd, chunk, off, chunk.length - off, pos + off, (err, written) => { if (err != null) reject(err); else resolve(written) })
    })
    off += n
  }
}
