// Store queries made at about the same moment, answered by one store process. A node publishing
// a batch's 16 outputs asks for 16 path infos and 16 validity checks in the same few
// milliseconds; each store process costs a fork of this (large) process plus the store's own
// start, 10–30 ms of CPU here, which dominated a builder's profile.

interface Waiter<V> { resolve: (v: V | undefined) => void, reject: (err: unknown) => void }

/** Keys asked for within `windowMs` of the first, answered by one `lookup` for all of them. */
export class Coalescer<V> {
  private pending = new Map<string, Array<Waiter<V>>>()
  private timer: NodeJS.Timeout | undefined

  constructor (
    /** Answer for each key it knows; a key left out is answered with undefined. */
    private readonly lookup: (keys: string[]) => Promise<Map<string, V>>,
    private readonly windowMs = 1,
    /** Keys per lookup (a command line has a length limit). */
    private readonly maxKeys = 1000
  ) {}

  async get (keys: readonly string[]): Promise<Map<string, V | undefined>> {
    const waits = keys.map(async (k) => await new Promise<V | undefined>((resolve, reject) => {
      let list = this.pending.get(k)
      if (list === undefined) { list = []; this.pending.set(k, list) }
      list.push({ resolve, reject })
    }))
    if (this.pending.size >= this.maxKeys) this.flush()
    else this.timer ??= setTimeout(() => { this.flush() }, this.windowMs)
    const values = await Promise.all(waits)
    return new Map(keys.map((k, i) => [k, values[i]]))
  }

  private flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    const batch = this.pending
    this.pending = new Map()
    const keys = [...batch.keys()]
    for (let i = 0; i < keys.length; i += this.maxKeys) {
      const part = keys.slice(i, i + this.maxKeys)
      this.lookup(part).then((found) => {
        for (const k of part) for (const d of batch.get(k) ?? []) d.resolve(found.get(k))
      }, (err: unknown) => {
        for (const k of part) for (const d of batch.get(k) ?? []) d.reject(err)
      })
    }
  }
}
