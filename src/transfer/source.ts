// What the serving side reads from. The node plugs its NAR store in behind this interface;
// DirectoryNarSource serves a plain folder (tests, benchmarks, a simple cache directory).
import { createReadStream } from 'node:fs'
import { open, readFile, stat } from 'node:fs/promises'
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
  /**
   * Optional, for bulk sends: the file under `key` opened for positional reads (a node
   * FileHandle fits), or undefined when not held. The server then reads into buffers it reuses
   * instead of taking a fresh buffer per chunk from openFile (see send-buffers.ts for why that
   * matters); without it, openFile serves.
   */
  openRandomAccess?: (key: string) => Promise<RandomAccessFile | undefined>
}

/** Positional reads of one file; `close` is called once, when the server is done with it. */
export interface RandomAccessFile {
  read: (buffer: Uint8Array, offset: number, length: number, position: number) => Promise<{ bytesRead: number }>
  close: () => Promise<void>
}

export interface DirectoryNarSourceInit {
  /** Files are `<dir>/<key>`, narinfos `<dir>/<hashPart>.narinfo`. */
  dir: string
  /** Read size of openFile; the server's reads through openRandomAccess use its own buffer size. */
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

  async openRandomAccess (key: string): Promise<RandomAccessFile | undefined> {
    if (!isFileKey(key)) return undefined
    try {
      return await open(join(this.dir, key), 'r')
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
