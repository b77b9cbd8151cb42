// Three real libp2p nodes over TCP on 127.0.0.1, each with a QueueService on real level.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, removeDir, startNode, waitFor, type TestNode } from './net.js'
import { drv } from './fixtures.js'

const SYS = 'x86_64-linux'
const submitOne = async (n: TestNode, i: number): Promise<string> => (await n.queue.submit([{ drv: drv(i), system: SYS }]))[0]

test('gossip spreads, an offline node catches up, partitions converge', async (t) => {
  const nodes: TestNode[] = []
  const dirs: string[] = []
  t.after(async () => {
    for (const n of nodes) await n.stop().catch(() => {})
    for (const d of dirs) await removeDir(d)
  })
  const start = async (opts: Parameters<typeof startNode>[0] = {}): Promise<TestNode> => {
    const n = await startNode(opts)
    nodes.push(n)
    if (!dirs.includes(n.dir)) dirs.push(n.dir)
    return n
  }
  const a = await start()
  const b = await start()
  let c = await start()
  await connect(a, b); await connect(b, c); await connect(a, c)

  // 1. submitted on A, visible on B and C
  const t0 = Date.now()
  const id1 = await submitOne(a, 1)
  await waitFor('build on B and C', () => b.queue.get(id1) !== undefined && c.queue.get(id1) !== undefined)
  t.diagnostic(`submit-to-visible on B and C: ${Date.now() - t0} ms`)
  assert.equal(c.queue.view(id1).state, 'queued')

  // 2. C goes away; A and B keep working; C restarts on the same db and key and catches up
  const cDir = c.dir; const cKey = c.key
  await c.stop()
  nodes.splice(nodes.indexOf(c), 1)
  const id2 = await submitOne(a, 2)
  const id3 = await submitOne(b, 3)
  await a.queue.cancel(id1)
  await waitFor('A and B agree', () => a.queue.stateHash() === b.queue.stateHash())
  c = await start({ dir: cDir, key: cKey })
  assert.ok(c.queue.get(id1) !== undefined, 'C restored its own state from disk')
  assert.equal(c.queue.get(id2), undefined)
  await connect(c, a)
  await waitFor('C caught up', () => c.queue.stateHash() === a.queue.stateHash())
  assert.equal(c.queue.view(id1).state, 'canceled')
  assert.ok(c.queue.get(id3) !== undefined, 'C caught up on the build submitted while it was offline')

  // 3. partition {A, B} | {C}: divergent submits, cancels, priorities; then reconnect
  await c.libp2p.hangUp(a.libp2p.peerId)
  await c.libp2p.hangUp(b.libp2p.peerId)
  await waitFor('C alone', () => c.libp2p.getPeers().length === 0)
  const left = await submitOne(a, 10)
  await b.queue.cancel(id2)
  await a.queue.setPriority(id3, 5)
  const right = await submitOne(c, 11)
  await c.queue.setPriority(id3, 9) // later HLC than A's change on most clocks; LWW decides the same everywhere
  await c.queue.cancel(id3)
  await waitFor('A and B agree in their partition', () => a.queue.stateHash() === b.queue.stateHash())
  assert.notEqual(a.queue.stateHash(), c.queue.stateHash())
  await connect(c, a); await connect(c, b)
  await waitFor('all three converge', () => a.queue.stateHash() === c.queue.stateHash() && b.queue.stateHash() === c.queue.stateHash())
  for (const n of [a, b, c]) {
    assert.ok(n.queue.get(left) !== undefined && n.queue.get(right) !== undefined, 'the builds submitted on each side of the partition reached every replica')
    assert.equal(n.queue.view(id2).state, 'canceled')
    assert.equal(n.queue.view(id3).state, 'canceled')
  }
  assert.equal(a.queue.get(id3)!.priority, c.queue.get(id3)!.priority)

  // 4. restart every node: nothing lost, same hash
  const before = a.queue.stateHash()
  const saved = nodes.map(n => ({ dir: n.dir, key: n.key }))
  for (const n of nodes.splice(0)) await n.stop()
  const again = await Promise.all(saved.map(async s => await start(s)))
  for (const n of again) assert.equal(n.queue.stateHash(), before)
})
