// Two groups of real node processes in one swarm that cannot reach each other, both changing
// the queue; once they are connected every node must hold the same queue (same state hash).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { removeDir, startNode, testSwarmName, waitFor, waitForFullMesh, type TestNode } from '../helpers/swarm.js'
import { agreedHash, buildOn, drvPath, post, queueStatus } from './api.js'

async function submit (node: TestNode, name: string): Promise<string> {
  const r = await post(node, '/api/builds', { derivations: [drvPath(name)], system: 'x86_64-linux' })
  assert.equal(r.status, 201, JSON.stringify(r.json))
  return (r.json as { ids: string[] }).ids[0]
}

async function change (node: TestNode, id: string, what: 'cancel' | 'priority', body: unknown = {}): Promise<void> {
  await waitFor(async () => await buildOn(node, id), `${node.peerId} to know ${id}`, 15_000)
  const r = await post(node, `/api/builds/${id}/${what}`, body)
  assert.equal(r.status, 200, JSON.stringify(r.json))
}

test('a partitioned swarm: both sides submit, cancel and reprioritise; once connected, all four nodes agree', async () => {
  const swarm = testSwarmName()
  // one swarm name, no mDNS, and no bootstrap between the groups: they cannot find each other
  const base = ['--swarm', swarm, '--no-mdns']
  const nodes: TestNode[] = []
  try {
    const [p, r] = await Promise.all([startNode({ args: base }), startNode({ args: base })])
    nodes.push(p, r)
    const [q, s] = await Promise.all([
      startNode({ args: [...base, '--bootstrap', p.addrs[0]] }),
      startNode({ args: [...base, '--bootstrap', r.addrs[0]] })
    ])
    nodes.push(q, s)
    await Promise.all([waitForFullMesh([p, q]), waitForFullMesh([r, s])])

    // side 1: submit on P, cancel and reprioritise on Q
    const [one, two] = [await submit(p, 'left-a-1.0'), await submit(p, 'left-b-1.0')]
    await change(q, one, 'cancel')
    await change(q, two, 'priority', { priority: 7 })
    // side 2: submit on R and S, cancel on S, reprioritise on R
    const [three, four] = [await submit(r, 'right-a-1.0'), await submit(s, 'right-b-1.0')]
    await change(s, three, 'cancel')
    await change(r, four, 'priority', { priority: -3 })

    const left = await waitFor(async () => await agreedHash([p, q]), 'P and Q to agree')
    const right = await waitFor(async () => await agreedHash([r, s]), 'R and S to agree')
    assert.notEqual(left, right)
    assert.equal(await buildOn(p, three), undefined, 'the partition held')
    assert.equal(await buildOn(r, one), undefined, 'the partition held')

    // heal: restart S with bootstraps into the other side (it still remembers R, so it bridges)
    assert.equal(await s.stop(), 0, s.stderr())
    const s2 = await startNode({ dataDir: s.dataDir, args: [...base, '--bootstrap', p.addrs[0], '--bootstrap', q.addrs[0]] })
    nodes[3] = s2
    await waitFor(async () => await agreedHash([p, q, s2]), 'P, Q and the bridging S to agree', 20_000)
    // R reconnects too (its old link to S died with S): one exchange with P brings it up to date
    assert.equal(await r.stop(), 0, r.stderr())
    const r2 = await startNode({ dataDir: r.dataDir, args: [...base, '--bootstrap', p.addrs[0]] })
    nodes[1] = r2
    const merged = await waitFor(async () => await agreedHash(nodes), 'all four nodes to agree', 20_000)
    assert.notEqual(merged, left)
    assert.notEqual(merged, right)

    for (const n of nodes) {
      const st = await queueStatus(n)
      assert.equal(st.builds, 4)
      assert.equal(st.byState.canceled, 2)
      assert.deepEqual(Object.values(st.stats.rejected).filter((v) => v > 0), [], 'no op was refused')
      assert.equal((await buildOn(n, one))?.state, 'canceled')
      assert.equal((await buildOn(n, three))?.state, 'canceled')
      assert.equal((await buildOn(n, two))?.priority, 7)
      assert.equal((await buildOn(n, four))?.priority, -3)
    }
  } finally {
    await Promise.all(nodes.map(async (n) => await n.stop()))
    await Promise.all(nodes.map(async (n) => await removeDir(n.dataDir)))
  }
})
