// NarSource wrappers for tests: record requests, corrupt bytes, cut transfers.
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DirectoryNarSource, type NarSource } from '../../src/transfer/index.js'

export interface OpenCall { key: string, offset: number, length: number }

export class RecordingSource implements NarSource {
  readonly calls: OpenCall[] = []
  private readonly inner: DirectoryNarSource
  /** Flip one byte at this absolute file offset (a lying provider). */
  corruptAt: number | undefined
  /** Flip the first byte of every response (a provider that lies in whatever range it is asked for). */
  corruptEveryRange = false
  /** The n-th openFile (0-based) stops after `cutAfter` bytes and fails. */
  cut: { call: number, after: number } | undefined

  constructor (dir: string) {
    this.inner = new DirectoryNarSource({ dir })
  }

  async openNarinfo (hashPart: string): Promise<string | undefined> {
    return await this.inner.openNarinfo(hashPart)
  }

  async statFile (key: string): Promise<number | undefined> {
    return await this.inner.statFile(key)
  }

  openFile (key: string, offset: number, length: number): AsyncIterable<Uint8Array> {
    const n = this.calls.length
    this.calls.push({ key, offset, length })
    const inner = this.inner.openFile(key, offset, length)
    // An absolute offset only lands if this provider happens to serve the range holding it.
    const corruptAt = this.corruptEveryRange ? offset : this.corruptAt
    const cut = this.cut?.call === n ? this.cut.after : undefined
    return (async function * () {
      let pos = offset
      let sent = 0
      for await (const raw of inner) {
        let chunk = Buffer.from(raw)
        if (corruptAt !== undefined && corruptAt >= pos && corruptAt < pos + chunk.length) {
          chunk = Buffer.from(chunk)
          chunk[corruptAt - pos] ^= 0xff
        }
        if (cut !== undefined && sent + chunk.length > cut) {
          yield chunk.subarray(0, cut - sent)
          throw new Error('test cut')
        }
        pos += chunk.length
        sent += chunk.length
        yield chunk
      }
    })()
  }
}

export async function makeFile (dir: string, key: string, size: number): Promise<{ path: string, sha256: string }> {
  const data = randomBytes(size)
  const path = join(dir, key)
  await writeFile(path, data)
  return { path, sha256: createHash('sha256').update(data).digest('hex') }
}

export async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer)
  return h.digest('hex')
}

export class HashMismatchError extends Error {
  override name = 'HashMismatchError'
}

/** The verify hook the node will have, in miniature: sha256 of the temp file against the expected one. */
export function verifySha256 (expected: string): (path: string) => Promise<void> {
  return async (path) => {
    const got = await sha256File(path)
    if (got !== expected) throw new HashMismatchError(`${path}: sha256 ${got}, expected ${expected}`)
  }
}
