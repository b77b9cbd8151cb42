// The mirror follows the real replicated queue: a successful build's result op (written through
// the queue API, as the scheduler would after publishing) makes a mirror node pull the outputs'
// closures from the swarm; builds of systems it does not mirror are skipped. After the publisher
// goes offline, a real Nix client substitutes from the mirror.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { mergeConfig, SwarmNode } from '../../src/node/index.js'
import type { QueueNodeService } from '../../src/node/queue.js'
import type { SubstitutesService } from '../../src/substitutes/index.js'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'
import { PROCESS_SWARM, tempDir, waitFor, type TestNode } from '../helpers/swarm.js'
import { assertSubstitutes, buildClosure, hashPartOf, publishAnnounced, startSubstituteNode, stopAll } from './harness.js'

test('a mirror pulls the outputs of successful builds it sees in the queue, filtered by system, and serves them after the builder leaves', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const nsClient = await nixNamespace()
  const mirrorDir = await tempDir('gs-mirror-')
  let b: TestNode | undefined
  let m: SwarmNode | undefined
  try {
    const x = await buildClosure(nsB)
    const y = await buildClosure(nsB)
    b = await startSubstituteNode({ ns: nsB })
    const config = mergeConfig(mirrorDir, {
      flags: {
        swarm: PROCESS_SWARM, listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', mdns: false, builder: 'none', storeDir: '/nix/store',
        bootstrap: [b.addrs[0]], mirror: true, mirrorSystems: ['x86_64-linux'], trustedKeys: [join(b.dataDir, 'keys', 'nix-key.pub')]
      }
    })
    m = new SwarmNode(config, { detectBuilder: async () => ({ kind: 'none', systems: [] }) })
    await m.start()
    await waitFor(() => m?.libp2p.getPeers().length === 1, 'the mirror to connect to B')
    const published = await publishAnnounced(b, [x.top, y.top])
    assert.ok(published.paths.every((p) => p.announced), JSON.stringify(published))
    const queue = (m.service<QueueNodeService>('queue') as QueueNodeService).queue
    const substitutes = m.service<SubstitutesService>('substitutes') as SubstitutesService

    // two builds succeed: one for a mirrored system, one for another
    const info = (p: string): { path: string, narHash: string, narSize: number } => {
      const e = published.paths.find((q) => q.storePath === p)
      assert.ok(e != null, `${p} was published`)
      return { path: p, narHash: e.narHash, narSize: e.narSize }
    }
    const succeed = async (name: string, system: string, out: string): Promise<void> => {
      const [id] = await queue.submit([{ drv: `/nix/store/${'1'.repeat(32)}-${name}.drv`, system }])
      await queue.claim(id, 1, 60_000)
      await queue.result(id, 1, { outcome: 'success', outputs: { out: info(out) } })
    }
    await succeed(`mirrored-${Date.now()}`, 'x86_64-linux', x.top)
    await succeed(`other-${Date.now()}`, 'aarch64-linux', y.top)

    const cacheDir = join(mirrorDir, 'nar')
    const has = async (p: string): Promise<boolean> => await stat(join(cacheDir, `${hashPartOf(p)}.narinfo`)).then(() => true, () => false)
    await waitFor(async () => await has(x.top) && await has(x.dep), 'the mirror to pull x\'s closure', 60_000)
    const status = await substitutes.status() as { mirror: { fetched: number, skipped: number } }
    assert.equal(status.mirror.skipped, 1, JSON.stringify(status))
    assert.equal(await has(y.top), false, 'a build for a system not mirrored is not pulled')

    await b.stop()
    await assertSubstitutes(nsClient, m, b, [x.top, x.dep])
  } finally {
    await m?.stop()
    await stopAll([b])
    await rm(mirrorDir, { recursive: true, force: true })
    await Promise.all([nsB.destroy(), nsClient.destroy()])
  }
})
