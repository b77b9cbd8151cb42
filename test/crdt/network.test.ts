// Three real libp2p nodes over TCP on 127.0.0.1, each with a QueueService on real level.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, removeDir, startNode, waitFor, type TestNode } from './net.js'
import { drv } from './fixtures.js'
import { bytesHeld } from '../../src/crdt/index.js'

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

test('ops a node took in by sync are dropped from its memory once on disk, and served from disk to the next joiner', async (t) => {
  const nodes: TestNode[] = []
  t.after(async () => {
    for (const n of nodes) { await n.stop().catch(() => {}); await removeDir(n.dir) }
  })
  const a = await startNode({ config: { syncIntervalMs: 0 } }); nodes.push(a)
  const ids: string[] = []
  for (let i = 0; i < 40; i++) ids.push(await submitOne(a, 300 + i))
  await a.queue.cancel(ids[3])
  // B takes the history from A by sync alone (A is then gone), C only ever talks to B
  const b = await startNode({ config: { syncIntervalMs: 0 } }); nodes.push(b)
  await connect(b, a)
  await waitFor('B to hold A\'s 41 ops', () => b.queue.replica.opCount === 41)
  await waitFor('B to have written them', () => [...b.queue.replica.heldOps()].every(op => !bytesHeld(op)))
  const held = [...b.queue.replica.heldOps()]
  assert.throws(() => held[0].bytes, { name: 'OpBytesShedError' })
  assert.equal(held[0].digest.length, 32, 'the digest (for links and duplicates) stays in memory')
  await a.stop(); nodes.splice(nodes.indexOf(a), 1); await removeDir(a.dir)
  const c = await startNode({ config: { syncIntervalMs: 0 } }); nodes.push(c)
  await connect(c, b)
  await waitFor('C to catch up from B', () => c.queue.stateHash() === b.queue.stateHash())
  assert.equal(c.queue.status().builds, 40)
  assert.equal(c.queue.get(ids[3])?.phase, 'canceled')
  assert.equal(Object.values(c.queue.stats().rejected).reduce((x, y) => x + y, 0), 0, 'every op C got from B\'s disk verified')
})
