// SwarmFetcher.acquire's guard on DHT walks, with a fake content router that counts walks: an
// unknown path is walked once and then answered from memory until the memory expires; a flood of
// unknown hashes runs a few walks, queues a few more and refuses the rest at once.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { AbortOptions, PeerInfo } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { CID } from 'multiformats/cid'
import type { BinaryCache } from '../../src/cache/index.js'
import { SubstituteLookupBusyError, SubstituteNotFoundError, SwarmFetcher, type SwarmFetcherComponents, type SwarmFetcherInit } from '../../src/substitutes/index.js'
import type { TransferClient } from '../../src/transfer/index.js'

const hash = (i: number): string => String(i).padStart(32, '0')

/** A fetcher whose DHT finds nobody; each walk waits for `gate` (when given) before it ends. */
async function fetcher (init: SwarmFetcherInit, gate?: Promise<void>): Promise<{ f: SwarmFetcher, walks: () => number }> {
  let walks = 0
  const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const components: SwarmFetcherComponents = {
    libp2p: {
      peerId,
      contentRouting: {
        provide: async () => {},
        // yields no provider, like a DHT that knows nobody
        findProviders: async function * (_cid: CID, _o?: AbortOptions): AsyncIterable<PeerInfo> { walks++; await gate }
      }
    },
    client: {} as unknown as TransferClient, // never reached: no provider is ever found
    cache: { storeDir: '/nix/store' } as unknown as BinaryCache,
    trusted: () => [],
    tmpDir: '/nonexistent',
    onAdded: async () => {},
    hasPeers: () => true
  }
  return { f: new SwarmFetcher(components, init), walks: () => walks }
}

test('an unknown path is walked once, then answered from memory until the memory expires', async () => {
  const { f, walks } = await fetcher({ negativeTtlMs: 200 })
  await assert.rejects(f.acquire(hash(1)), SubstituteNotFoundError)
  assert.equal(walks(), 1)
  for (let i = 0; i < 5; i++) await assert.rejects(f.acquire(hash(1)), SubstituteNotFoundError)
  assert.equal(walks(), 1, 'remembered misses start no walk')
  assert.equal(f.lookupStats.negativeHits, 5)
  assert.equal(f.lookupStats.notFound, 1)
  await new Promise((resolve) => setTimeout(resolve, 300))
  await assert.rejects(f.acquire(hash(1)), SubstituteNotFoundError)
  assert.equal(walks(), 2, 'an expired miss is walked again')
  // a path added meanwhile is forgotten as a miss at once
  f.forgetMiss(hash(1))
  await assert.rejects(f.acquire(hash(1)), SubstituteNotFoundError)
  assert.equal(walks(), 3)
})

test('a flood of unknown hashes: a few walks run, a few wait, the rest are refused without a walk', async () => {
  let release = (): void => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  const { f, walks } = await fetcher({ maxLookups: 2, maxQueuedLookups: 3 }, gate)
  const results = Array.from({ length: 10 }, async (_, i) => await f.acquire(hash(100 + i)).then(() => 'found', (err: Error) => err.name))
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(f.lookupStats.running, 2)
  assert.equal(f.lookupStats.refusedBusy, 5)
  release()
  const outcomes = await Promise.all(results)
  assert.equal(outcomes.filter((o) => o === new SubstituteLookupBusyError('').name).length, 5)
  assert.equal(outcomes.filter((o) => o === new SubstituteNotFoundError('').name).length, 5)
  assert.equal(walks(), 5, 'two running and three queued were walked; refused ones never were')
  assert.equal(f.lookupStats.running, 0)
})
