// SwarmFetcher's choice of NAR providers, with a fake DHT and transfer client: a small NAR is
// asked of the peers that gave its narinfo, without a DHT walk for the NAR hash (small NARs are
// announced under their store path only); when they fail to deliver, the store path's other
// providers are asked. A large NAR's providers also come from a walk for its NAR hash.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AbortOptions, PeerId, PeerInfo } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { CID } from 'multiformats/cid'
import type { BinaryCache, CacheEntry } from '../../src/cache/index.js'
import { ensureKeys, narHashBytes, writeSignedNarinfo, type Narinfo } from '../../src/narinfo/index.js'
import { SwarmFetcher } from '../../src/substitutes/index.js'
import { narCid, storePathCid, type FetchFileOptions, type FetchResult, type TransferClient } from '../../src/transfer/index.js'

const peer = async (): Promise<PeerId> => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
const HASH = '0123456789abcdfghijklmnpqrsvwxyz'

interface Rig { fetcher: SwarmFetcher, walks: string[], asked: string[][], dir: string }

/**
 * `holder` and then `other` provide the store path; `third` only the NAR. Bytes arrive from the
 * peers in `deliver`; `narSize` decides whether the NAR counts as large.
 */
async function rig (deliver: Array<'holder' | 'other' | 'third'>, narSize = 2000): Promise<Rig & { holder: PeerId, other: PeerId, third: PeerId }> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-nar-providers-'))
  const keys = await ensureKeys(join(dir, 'keys'))
  const [self, holder, other, third] = [await peer(), await peer(), await peer(), await peer()]
  const delivering = new Set(deliver.map((d) => ({ holder, other, third })[d].toString()))
  const narinfo: Narinfo = {
    storePath: `/nix/store/${HASH}-small`,
    urls: [{ url: `nar/${HASH}.nar.zst`, compression: 'zstd', fileSize: Math.ceil(narSize / 2), fileHash: 'sha256:' + '0'.repeat(52) }],
    narHash: 'sha256:' + '1'.repeat(52),
    narSize,
    references: [],
    sigs: []
  }
  const text = writeSignedNarinfo(narinfo, 'nix', keys)
  const pathCid = storePathCid(HASH).toString()
  const narCidText = narCid(narHashBytes(narinfo.narHash)).toString()
  const walks: string[] = []
  const asked: string[][] = []
  const client = {
    fetchNarinfo: async () => text,
    fetchFile: async (_key: string, o: FetchFileOptions): Promise<FetchResult> => {
      const ids = o.providers.map((p) => p.toString())
      asked.push(ids)
      const from = ids.find((id) => delivering.has(id))
      if (from === undefined) throw new Error('no provider delivered')
      return { providers: [from] } as unknown as FetchResult
    },
    badPeers: () => []
  } as unknown as TransferClient
  const fetcher = new SwarmFetcher({
    libp2p: {
      peerId: self,
      contentRouting: {
        provide: async () => {},
        findProviders: async function * (cid: CID, _o?: AbortOptions): AsyncIterable<PeerInfo> {
          const c = cid.toString()
          walks.push(c === pathCid ? 'path' : c === narCidText ? 'nar' : 'other')
          if (c === pathCid) { yield { id: holder, multiaddrs: [] }; yield { id: other, multiaddrs: [] } }
          if (c === narCidText) yield { id: third, multiaddrs: [] }
        }
      }
    },
    client,
    cache: {
      storeDir: '/nix/store',
      addVerified: async () => ({ hashPart: HASH, storePath: narinfo.storePath, narHash: narinfo.narHash, narinfo: text, files: [] }) as unknown as CacheEntry
    } as unknown as BinaryCache,
    trusted: () => [keys.nix.publicKey],
    tmpDir: join(dir, 'tmp'),
    onAdded: async () => {},
    hasPeers: () => true
  })
  return { fetcher, walks, asked, dir, holder, other, third }
}

test('a small NAR comes from the narinfo holder without a DHT walk for the NAR hash', async () => {
  const r = await rig(['holder', 'other'])
  try {
    const got = await r.fetcher.fetch(HASH)
    assert.deepEqual(got.narFrom, [r.holder.toString()])
    assert.deepEqual(r.walks, ['path'], 'only the store path was looked up')
    assert.deepEqual(r.asked, [[r.holder.toString()]])
  } finally {
    await rm(r.dir, { recursive: true, force: true })
  }
})

test('when the holder of a small NAR does not deliver, the store path\'s other providers are asked, not the NAR hash\'s', async () => {
  const r = await rig(['other', 'third'])
  try {
    const got = await r.fetcher.fetch(HASH)
    assert.deepEqual(got.narFrom, [r.other.toString()])
    assert.deepEqual(r.walks, ['path', 'path'], 'a small NAR is never looked up by its hash')
    assert.deepEqual(r.asked, [[r.holder.toString()], [r.holder.toString(), r.other.toString()]])
  } finally {
    await rm(r.dir, { recursive: true, force: true })
  }
})

test('a large NAR is asked of the store path\'s providers and the NAR hash\'s', async () => {
  const r = await rig(['third'], 64 * 1024 * 1024)
  try {
    const got = await r.fetcher.fetch(HASH)
    assert.deepEqual(got.narFrom, [r.third.toString()])
    assert.deepEqual(r.walks, ['path', 'path', 'nar'])
    assert.deepEqual(r.asked, [[r.holder.toString(), r.other.toString(), r.third.toString()]])
  } finally {
    await rm(r.dir, { recursive: true, force: true })
  }
})
