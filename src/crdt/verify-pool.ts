// Signature checks are the bulk of the cost of taking in a long history (~100 µs each on one
// core), so sync batches are checked on worker threads while the main thread applies and
// persists the previous batch.
import { Worker } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { logger } from '@libp2p/logger'
import { checkAuthor, signedInputOf, type Op } from './op.js'

const log = logger('guix-swarm:crdt:verify')

interface VerifyRequest { id: number, authors: string[], keys: Uint8Array[], inputs: Uint8Array[], sigs: Uint8Array[] }
interface VerifyResponse { id: number, ok: boolean[] }

// Plain CommonJS evaluated in the worker: it needs only node:crypto (keys arrive as SPKI DER),
// so it runs the same from source (tsx) and from dist.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const crypto = require('node:crypto')
const cache = new Map()
parentPort.on('message', (req) => {
  const ok = req.authors.map((author, i) => {
    try {
      let key = cache.get(author)
      if (key === undefined) {
        key = crypto.createPublicKey({ key: Buffer.from(req.keys[i]), format: 'der', type: 'spki' })
        if (cache.size > 10000) cache.clear()
        cache.set(author, key)
      }
      return crypto.verify(null, req.inputs[i], key, req.sigs[i])
    } catch { return false }
  })
  parentPort.postMessage({ id: req.id, ok })
})
`

export class VerifyPool {
  private readonly workers: Worker[] = []
  private readonly waiting = new Map<number, (ok: boolean[]) => void>()
  /** Requests in flight per worker: a busy worker keeps the process alive, an idle one not. */
  private readonly busy = new Map<Worker, number>()
  private nextId = 0
  private turn = 0

  constructor (size = Math.min(4, availableParallelism())) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true })
      w.on('message', (res: VerifyResponse) => {
        const n = (this.busy.get(w) ?? 1) - 1
        this.busy.set(w, n)
        if (n === 0) w.unref()
        const done = this.waiting.get(res.id)
        this.waiting.delete(res.id)
        done?.(res.ok)
      })
      // a dead worker must not leave callers waiting: an empty answer means "check inline"
      const fail = (why: string): void => {
        log.error('verify worker stopped: %s', why)
        const i = this.workers.indexOf(w)
        if (i >= 0) this.workers.splice(i, 1)
        for (const done of this.waiting.values()) done([])
        this.waiting.clear()
      }
      w.on('error', err => { fail(err.message) })
      w.on('exit', code => { if (code !== 0) fail(`exit ${code}`) })
      w.unref()
      this.workers.push(w)
    }
  }

  get size (): number { return this.workers.length }

  /** Check the signatures of `ops`: one boolean per op, or [] if no answer could be had. */
  async verify (ops: readonly Op[]): Promise<boolean[]> {
    if (ops.length === 0 || this.workers.length === 0) return []
    const id = this.nextId++
    const req: VerifyRequest = { id, authors: ops.map(o => o.author), keys: ops.map(o => checkAuthor(o.author)), inputs: ops.map(signedInputOf), sigs: ops.map(o => o.sig.slice()) } // sigs are views into whole sync frames: send copies, not the frames
    const w = this.workers[this.turn++ % this.workers.length]
    return await new Promise<boolean[]>(resolve => {
      this.waiting.set(id, resolve)
      this.busy.set(w, (this.busy.get(w) ?? 0) + 1)
      w.ref()
      w.postMessage(req)
    })
  }

  async close (): Promise<void> {
    const ws = this.workers.splice(0)
    await Promise.all(ws.map(async w => await w.terminate()))
    for (const done of this.waiting.values()) done([])
    this.waiting.clear()
  }
}
