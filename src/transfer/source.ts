// What the serving side reads from. The node plugs its NAR store in behind this interface;
// DirectoryNarSource serves a plain folder (tests, benchmarks, a simple cache directory).
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { isFileKey } from './protocol.js'
import { SEND_CHUNK_SIZE } from './options.js'

export interface NarSource {
  /** The narinfo text for a store path hash part, or undefined when not held. */
  openNarinfo: (hashPart: string) => Promise<string | Uint8Array | undefined>
  /** Size in bytes of the file under `key`, or undefined when not held. */
  statFile: (key: string) => Promise<number | undefined>
  /** Exactly `length` bytes starting at `offset` (both already checked against statFile). */
  openFile: (key: string, offset: number, length: number) => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>
}

export interface DirectoryNarSourceInit {
  /** Files are `<dir>/<key>`, narinfos `<dir>/<hashPart>.narinfo`. */
  dir: string
  /** Read size; also the size of each chunk handed to the stream. */
  chunkSize?: number
}

function isMissing (err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

export class DirectoryNarSource implements NarSource {
  private readonly dir: string
  private readonly chunkSize: number

  constructor (init: DirectoryNarSourceInit) {
    this.dir = init.dir
    this.chunkSize = init.chunkSize ?? SEND_CHUNK_SIZE
  }

  async openNarinfo (hashPart: string): Promise<string | undefined> {
    try {
      return await readFile(join(this.dir, `${hashPart}.narinfo`), 'utf8')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }

  async statFile (key: string): Promise<number | undefined> {
    if (!isFileKey(key)) return undefined
    try {
      const s = await stat(join(this.dir, key))
      return s.isFile() ? s.size : undefined
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }

  openFile (key: string, offset: number, length: number): AsyncIterable<Uint8Array> {
    if (length === 0) return (async function * () {})()
    return createReadStream(join(this.dir, key), { start: offset, end: offset + length - 1, highWaterMark: this.chunkSize })
  }
}
