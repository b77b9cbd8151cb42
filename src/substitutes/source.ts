// The transfer protocol's view of the node's BinaryCache. Peers ask for files by
// `<narHash nix-base32>.<compression>` (what they learn from a narinfo, and what the DHT's
// narCid points at), never by path, so a request cannot name anything outside the cache.
import type { BinaryCache, CacheEntry } from '../cache/index.js'
import { normalizeNarHash } from '../narinfo/index.js'
import type { NarSource, RandomAccessFile } from '../transfer/index.js'

/** The transfer key of one NAR file: `<narHash nix-base32>.<compression>`. */
export function narFileKey (narHash: string, compression: string): string {
  return `${normalizeNarHash(narHash).slice('sha256:'.length)}.${compression}`
}

/**
 * Which cache entry holds the NAR with a given hash. Kept in memory (rebuilt from the cache on
 * start) because the cache is indexed by store path and peers ask by NAR hash.
 */
export class NarHashIndex {
  private readonly byNarHash = new Map<string, Set<string>>()

  add (entry: Pick<CacheEntry, 'narHash' | 'hashPart'>): void {
    const h = normalizeNarHash(entry.narHash)
    let set = this.byNarHash.get(h)
    if (set == null) { set = new Set(); this.byNarHash.set(h, set) }
    set.add(entry.hashPart)
  }

  delete (entry: Pick<CacheEntry, 'narHash' | 'hashPart'>): void {
    const h = normalizeNarHash(entry.narHash)
    const set = this.byNarHash.get(h)
    set?.delete(entry.hashPart)
    if (set?.size === 0) this.byNarHash.delete(h)
  }

  /** Hash parts of the store paths whose NAR hashes to `narHash` (identical contents under two names are possible). */
  hashParts (narHash: string): string[] {
    return [...(this.byNarHash.get(normalizeNarHash(narHash)) ?? [])]
  }
}

const KEY = /^([0123456789abcdfghijklmnpqrsvwxyz]{52})\.([a-z0-9]+)$/

export class CacheNarSource implements NarSource {
  constructor (private readonly cache: BinaryCache, private readonly index: NarHashIndex) {}

  async openNarinfo (hashPart: string): Promise<string | undefined> {
    return await this.cache.getNarinfo(hashPart)
  }

  async statFile (key: string): Promise<number | undefined> {
    const url = await this.urlOf(key)
    return url === undefined ? undefined : await this.cache.statFile(url)
  }

  async openFile (key: string, offset: number, length: number): Promise<AsyncIterable<Uint8Array>> {
    if (length === 0) return (async function * () {})()
    const url = await this.urlOf(key)
    if (url === undefined) return (async function * () {})() // removed since statFile: the server reports a short source
    return await this.cache.openFile(url, { start: offset, end: offset + length - 1 })
  }

  /** Positional reads into the server's reused 1 MiB buffers (openFile streams 64 KiB reads). */
  async openRandomAccess (key: string): Promise<RandomAccessFile | undefined> {
    const url = await this.urlOf(key)
    return url === undefined ? undefined : await this.cache.openHandle(url)
  }

  private async urlOf (key: string): Promise<string | undefined> {
    const m = KEY.exec(key)
    if (m == null) return undefined
    for (const hashPart of this.index.hashParts(`sha256:${m[1]}`)) {
      const entry = await this.cache.getEntry(hashPart)
      const file = entry?.files.find((f) => f.compression === m[2])
      if (file !== undefined) return file.url
    }
    return undefined
  }
}
