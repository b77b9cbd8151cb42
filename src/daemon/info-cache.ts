// Path info the store already told us. A valid path's narHash, narSize, references and deriver
// never change while it stays valid, so an answer is reused instead of starting another store
// process (50–300 ms each here). A path that disappears (garbage collected) is forgotten by the
// caller that notices; its info could differ if it is ever made valid again.
import type { PathInfo } from './store.js'

/** Enough for the closures a node publishes, at ~300 bytes an entry. */
const DEFAULT_MAX_ENTRIES = 50_000

export class PathInfoCache {
  private readonly entries = new Map<string, PathInfo>()

  constructor (private readonly maxEntries = DEFAULT_MAX_ENTRIES) {}

  get size (): number { return this.entries.size }

  get (path: string): PathInfo | undefined {
    const info = this.entries.get(path)
    if (info !== undefined) {
      // least recently used first in insertion order: move it to the end
      this.entries.delete(path)
      this.entries.set(path, info)
    }
    return info
  }

  set (info: PathInfo): void {
    this.entries.delete(info.path)
    this.entries.set(info.path, info)
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string
      this.entries.delete(oldest)
    }
  }

  delete (path: string): void {
    this.entries.delete(path)
  }

  /**
   * The closure of `roots` from cached infos alone, or undefined when some path of it is not
   * cached. (A valid path's references are valid: Nix keeps closures complete.)
   */
  closure (roots: string[]): PathInfo[] | undefined {
    const seen = new Map<string, PathInfo>()
    const todo = [...roots]
    while (todo.length > 0) {
      const p = todo.pop() as string
      if (seen.has(p)) continue
      const info = this.entries.get(p)
      if (info === undefined) return undefined
      seen.set(p, info)
      for (const r of info.references) if (!seen.has(r)) todo.push(r)
    }
    return [...seen.values()]
  }
}
