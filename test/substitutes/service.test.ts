// SubstitutesService in a real in-process node that pulls a closure from a real publisher process:
// pin() keeps paths from even a forced GC until released; status() counts entries and bytes without
// reading the cache; an evicted entry's DHT records are cancelled in our own kad-dht (it would
// re-provide them forever otherwise).
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { mergeConfig, SwarmNode } from '../../src/node/index.js'
import type { SubstitutesService } from '../../src/substitutes/index.js'
import { storePathCid } from '../../src/transfer/index.js'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'
import { PROCESS_SWARM, tempDir, waitFor, type TestNode } from '../helpers/swarm.js'
import { buildClosure, hashPartOf, publishAnnounced, startSubstituteNode, stopAll } from './harness.js'

interface Status { entries: number, bytes: number, pinned: number }

test('pin keeps paths from a forced GC until released; status counts without reading the cache; GC cancels our DHT records', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const dir = await tempDir('gs-subst-svc-')
  let b: TestNode | undefined
  let m: SwarmNode | undefined
  try {
    const x = await buildClosure(nsB)
    b = await startSubstituteNode({ ns: nsB })
    const config = mergeConfig(dir, {
      flags: {
        swarm: PROCESS_SWARM, listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', mdns: false, builder: 'none', storeDir: '/nix/store',
        bootstrap: [b.addrs[0]], trustedKeys: [join(b.dataDir, 'keys', 'nix-key.pub')]
      }
    })
    m = new SwarmNode(config, { detectBuilder: async () => ({ kind: 'none', systems: [] }) })
    await m.start()
    const node = m
    await waitFor(() => node.libp2p.getPeers().length === 1, 'the node to connect to B')
    const published = await publishAnnounced(b, [x.top])
    const s = m.service<SubstitutesService>('substitutes') as SubstitutesService
    assert.deepEqual(await s.status().then((v) => (v as unknown as Status).entries), 0)

    await s.pullClosure(x.top)
    const st = await s.status() as unknown as Status
    assert.equal(st.entries, 2)
    const onDisk = (await s.cache.list()).reduce((n, e) => n + Buffer.byteLength(e.narinfo) + e.files.reduce((t, f) => t + f.fileSize, 0), 0)
    assert.equal(st.bytes, onDisk, 'the kept counters match the cache')

    const releaseTop = s.pin([x.top])
    const releaseBoth = s.pin([x.top, x.dep])
    assert.equal((await s.status() as unknown as Status).pinned, 2)
    const kept = await s.collectGarbage({ maxSize: 0, force: true })
    assert.deepEqual(kept.removed, [])
    assert.deepEqual(kept.keptPinned.sort(), [x.top, x.dep].sort())
    releaseBoth()
    releaseBoth() // twice is harmless
    const half = await s.collectGarbage({ maxSize: 0, force: true })
    assert.deepEqual(half.removed.map((r) => r.storePath), [x.dep], 'the path still pinned once stays')

    // watch what the service withdraws from our own kad-dht, passing the calls through
    const cancelled: string[] = []
    const routing = m.libp2p.contentRouting
    const original = routing.cancelReprovide.bind(routing)
    routing.cancelReprovide = async (cid: CID, o) => { cancelled.push(cid.toString()); await original(cid, o) }
    releaseTop()
    const rest = await s.collectGarbage({ maxSize: 0, force: true })
    assert.deepEqual(rest.removed.map((r) => r.storePath), [x.top])
    const top = published.paths.find((p) => p.storePath === x.top)
    assert.ok(top != null, 'x.top was published')
    // a small NAR is announced under its store path only (its NAR hash is never looked up)
    assert.ok(top.narSize < 4 * 1024 * 1024, 'x.top is a small NAR')
    assert.deepEqual(cancelled, [storePathCid(hashPartOf(x.top)).toString()])
    const end = await s.status() as unknown as Status
    assert.deepEqual([end.entries, end.bytes, end.pinned], [0, 0, 0])
  } finally {
    await m?.stop()
    await stopAll([b])
    await rm(dir, { recursive: true, force: true })
    await nsB.destroy()
  }
})
