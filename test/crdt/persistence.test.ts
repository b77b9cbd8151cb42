import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Level } from 'level'
import { join } from 'node:path'
import { QueueReplica, QueueStore } from '../../src/crdt/index.js'
import { removeDir, startNode, tempDir, connect, waitFor } from './net.js'
import { drv } from './fixtures.js'

test('clean stop and reopen restores the exact state hash and version vector', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await removeDir(dir) })
  const n = await startNode({ dir })
  const ids = await n.queue.submit([1, 2, 3].map(i => ({ drv: drv(i), system: 'x86_64-linux' })))
  await n.queue.claim(ids[0], 1, 30_000)
  await n.queue.renew(ids[0], 1, 30_000)
  await n.queue.result(ids[1], 1, { outcome: 'canceled' }) // not the claimer of anything: ignored, but stored
  await n.queue.setPriority(ids[2], 42)
  const hash = n.queue.stateHash(); const vv = n.queue.versionVector()
  await n.stop()
  const m = await startNode({ dir, key: n.key })
  t.after(async () => { await m.stop() })
  assert.equal(m.queue.stateHash(), hash)
  assert.deepEqual(m.queue.versionVector(), vv)
  assert.equal(m.queue.view(ids[0]).state, 'building')
  assert.equal(m.queue.get(ids[2])!.priority, 42)
  // and the author continues its sequence after a restart
  await m.queue.cancel(ids[2])
  assert.equal(m.queue.versionVector()[m.queue.peerIdString()], vv[m.queue.peerIdString()] + 1)
})

test('SIGKILL after acknowledgement loses nothing', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await removeDir(dir) })
  const self = fileURLToPath(import.meta.url)
  const child = spawn(process.execPath, [...process.execArgv, self.replace(/persistence\.test\.(ts|js)$/, 'kill-child.$1'), dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('\n')) resolve(out.split('\n')[0]) })
    child.on('exit', code => { reject(new Error(`child exited early (${String(code)})`)) })
  })
  child.kill('SIGKILL')
  await new Promise(resolve => child.once('exit', resolve))
  const { ids, hash } = JSON.parse(line) as { ids: string[], hash: string }
  // read the raw store: every acknowledged op is there (no snapshot was ever written)
  const db = new Level<string, Uint8Array>(join(dir, 'db'), { valueEncoding: 'view' })
  const store = new QueueStore(db.sublevel<string, Uint8Array>('queue', { valueEncoding: 'view' }))
  assert.equal(await store.loadSnapshot(), undefined)
  const r = new QueueReplica()
  for await (const s of store.ops()) r.restore(s.op, s.seenAt)
  await db.close()
  assert.equal(r.state.stateHash(), hash)
  assert.equal(r.state.size, ids.length)
  assert.equal(r.state.get(ids[3])!.phase, 'canceled')
  assert.equal(r.state.get(ids[4])!.phase, 'claimed')
})

test('compaction drops claims/renews of old finished builds, keeps the hash, and a joiner syncs snapshot + tail', async (t) => {
  const dirs: string[] = []
  let now = Date.now()
  const clock = (): number => now
  const a = await startNode({ now: clock, config: { compactHorizonMs: 3600_000, snapshotIntervalMs: 0, syncIntervalMs: 0 } })
  dirs.push(a.dir)
  t.after(async () => { for (const d of dirs) await removeDir(d) })
  const ids = await a.queue.submit([1, 2, 3, 4].map(i => ({ drv: drv(i), system: 'x86_64-linux' })))
  // build 0 succeeds on its second attempt (both renewed); build 1 is canceled; 2 stays queued; 3 is building
  for (const attempt of [1, 2]) { await a.queue.claim(ids[0], attempt, 10_000); await a.queue.renew(ids[0], attempt, 10_000) }
  await a.queue.result(ids[0], 2, { outcome: 'success', outputs: { out: { path: '/gnu/store/aaaa-x', narHash: 'sha256:1', narSize: 10 } } })
  await a.queue.cancel(ids[1])
  await a.queue.claim(ids[3], 1, 10_000); await a.queue.renew(ids[3], 1, 10_000)
  const hash = a.queue.stateHash()
  const opsBefore = a.queue.status().ops
  await a.queue.checkpoint()
  assert.equal(a.queue.status().ops, opsBefore) // nothing is old enough yet
  now += 2 * 3600_000
  await a.queue.checkpoint()
  const st = a.queue.status()
  assert.equal(st.stats.compacted, 2, 'the two renews of the succeeded build are dropped')
  assert.equal(st.ops, opsBefore - 2)
  assert.equal(a.queue.stateHash(), hash)
  // restart from disk: heads cover the compacted seqs, hash unchanged
  await a.stop()
  const a2 = await startNode({ dir: a.dir, key: a.key, now: clock, config: { compactHorizonMs: 3600_000, snapshotIntervalMs: 0, syncIntervalMs: 0 } })
  t.after(async () => { await a2.stop() })
  assert.equal(a2.queue.stateHash(), hash)
  assert.equal(a2.queue.status().ops, opsBefore - 2)
  // a fresh joiner gets the tail plus skip ranges for the compacted seqs
  const j = await startNode({ now: clock, config: { syncIntervalMs: 0 } })
  dirs.push(j.dir)
  t.after(async () => { await j.stop() })
  await connect(j, a2)
  await waitFor('joiner converged', () => j.queue.stateHash() === hash)
  assert.deepEqual(j.queue.versionVector(), a2.queue.versionVector())
  assert.equal(j.queue.status().ops, opsBefore - 2)
  // and the joiner keeps accepting the author's next ops (its head moved over the gap)
  await a2.queue.cancel(ids[2])
  await waitFor('next op after the gap', () => j.queue.view(ids[2]).state === 'canceled')
})

test('ops appended together reach the disk in fewer writes (one per submit, group commit for the rest), each durable once its append resolves', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await removeDir(dir) })
  const n = await startNode({ dir })
  let running = true
  t.after(async () => { if (running) await n.stop() }) // also when an assertion fails first
  // count the writes that reach the root database (the queue's sublevel writes through it)
  let writes = 0
  const batch = n.db.batch.bind(n.db)
  n.db.batch = ((...args: Parameters<typeof batch>) => { writes++; return batch(...args) }) as typeof batch
  const ids = await n.queue.submit(Array.from({ length: 20 }, (_, i) => ({ drv: drv(100 + i), system: 'x86_64-linux' })))
  assert.equal(writes, 1, 'one submit of 20 builds is one write')
  writes = 0
  // a slot claiming a batch of builds at once, as the scheduler does
  await Promise.all(ids.map(async (id) => await n.queue.claim(id, 1, 30_000)))
  assert.ok(writes >= 1 && writes < ids.length, `20 claims in ${writes} writes`)
  const hash = n.queue.stateHash()
  running = false
  await n.stop()
  const m = await startNode({ dir, key: n.key })
  t.after(async () => { await m.stop() })
  assert.equal(m.queue.stateHash(), hash, 'every claim was on disk')
  for (const id of ids) assert.equal(m.queue.view(id).state, 'claimed', `${id} claimed after a restart`)
})
