// Small helpers shared by the crdt tests: authors with real Ed25519 libp2p keys, and a drv path.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { signOp, type Op, type OpDraft } from '../../src/crdt/index.js'
import type { Stamp } from '../../src/crdt/index.js'

/** `tip`: digest of the author's last op, which its next op must name (hash chain). */
export interface Author { key: PrivateKey, id: string, seq: number, tip?: Uint8Array }

export async function makeAuthor (): Promise<Author> {
  const key = await generateKeyPair('Ed25519')
  return { key, id: peerIdFromPrivateKey(key).toString(), seq: 0 }
}

/** Sign the author's next op at an explicit stamp. */
export function next (a: Author, hlc: Stamp, draft: OpDraft): Op {
  a.seq++
  const op = signOp(a.key, a.id, a.seq, hlc, draft, a.seq > 1 ? a.tip : undefined)
  a.tip = op.digest
  return op
}

export function drv (n: number): string {
  const h = n.toString(32).padStart(32, '0').replace(/[eotu]/g, 'x')
  return `/gnu/store/${h}-pkg-${n}.drv`
}

export function submit (n: number, extra: Partial<{ priority: number, maxAttempts: number, system: string, deferUntil: number, maxAbandoned: number, inputs: string[] }> = {}): OpDraft {
  return {
    type: 'submit',
    payload: {
      drv: drv(n), system: extra.system ?? 'x86_64-linux', priority: extra.priority ?? 0, tags: {}, maxAttempts: extra.maxAttempts ?? 3,
      ...(extra.deferUntil !== undefined ? { deferUntil: extra.deferUntil } : {}),
      ...(extra.maxAbandoned !== undefined ? { maxAbandoned: extra.maxAbandoned } : {}),
      ...(extra.inputs !== undefined ? { inputs: extra.inputs } : {})
    }
  }
}
