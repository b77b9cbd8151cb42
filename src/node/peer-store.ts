// js-libp2p records the protocol of every stream it opens or accepts in the peer store, and
// kad-dht records the addresses of every provider and closer peer it hears of: each a read,
// protobuf decode, re-encode and write of the peer's record. With one kad-dht stream per RPC
// (≈1000-1600 per node for 200 builds) that was a builder's largest CPU cost (11-14%). The same
// protocols or addresses for the same peer again within a minute change nothing but the record's
// timestamp, so they are not written again. Anything else (tags, metadata) goes through as before;
// a patch or delete (which may remove what was merged) makes the peer's next merge a real one.
import type { Peer, PeerData, PeerId, PeerStore } from '@libp2p/interface'

/** How long a merge of the same protocols or addresses stays a no-op (the record's age limits are hours). */
export const REPEATED_MERGE_TTL_MS = 60_000
/** Peers remembered at most; past it the memory starts again (a real merge each). */
const MAX_PEERS = 10_000

export interface MergeCounters { merged: number, skipped: number }

/**
 * Wrap `peerStore.merge` (in place: libp2p's own components hold this object) so that repeating
 * a `{ protocols }` or `{ multiaddrs }` merge within `ttlMs` returns the peer as last merged
 * instead of writing the record again. Returns counters of real and skipped merges.
 */
export function skipRepeatedMerges (peerStore: PeerStore, opts: { ttlMs?: number, now?: () => number } = {}): MergeCounters {
  const ttl = opts.ttlMs ?? REPEATED_MERGE_TTL_MS
  const now = opts.now ?? Date.now
  const counters: MergeCounters = { merged: 0, skipped: 0 }
  /** peer → (what was merged → when), and the peer as the last real merge returned it. */
  const memo = new Map<string, { at: Map<string, number>, peer: Peer }>()
  const forget = (id: PeerId): void => { memo.delete(id.toString()) }

  const merge = peerStore.merge.bind(peerStore)
  const patch = peerStore.patch.bind(peerStore)
  const del = peerStore.delete.bind(peerStore)

  peerStore.merge = async (id: PeerId, data: PeerData, options?: Parameters<PeerStore['merge']>[2]): Promise<Peer> => {
    const key = repeatableKey(data)
    const peerKey = id.toString()
    const known = memo.get(peerKey)
    if (key !== undefined && known !== undefined) {
      const at = known.at.get(key)
      if (at !== undefined && now() - at < ttl) {
        counters.skipped++
        return known.peer
      }
    }
    const peer = await merge(id, data, options)
    counters.merged++
    if (key === undefined) {
      // tags, metadata…: a merge only adds, so what was merged before is still there
      if (known !== undefined) known.peer = peer
      return peer
    }
    if (memo.size >= MAX_PEERS && known === undefined) memo.clear()
    const entry = known ?? { at: new Map<string, number>(), peer }
    entry.peer = peer
    entry.at.set(key, now())
    memo.set(peerKey, entry)
    return peer
  }
  peerStore.patch = async (id, data, options) => { forget(id); return await patch(id, data, options) }
  peerStore.delete = async (id, options) => { forget(id); await del(id, options) }
  return counters
}

/** What identifies a merge that only adds protocols or addresses; undefined for anything else. */
function repeatableKey (data: PeerData): string | undefined {
  const keys = Object.keys(data)
  if (keys.length !== 1) return undefined
  if (keys[0] === 'protocols' && data.protocols !== undefined) return `p ${[...data.protocols].sort().join(' ')}`
  if (keys[0] === 'multiaddrs' && data.multiaddrs !== undefined) return `m ${data.multiaddrs.map((m) => m.toString()).sort().join(' ')}`
  return undefined
}
