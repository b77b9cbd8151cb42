// Schedulers on real queue replicas (libp2p over 127.0.0.1), each building with real nix-store in
// its own Nix store: mixed priorities, a dependency chain, exactly one successful attempt each.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { compareStamp, type BuildRecord } from '../../src/crdt/index.js'
import { assertNarinfoVerified } from '../../src/narinfo/index.js'
import { nixSkip } from '../helpers/nix.js'
import { drvExpr, instantiate, mesh, startBuildNode, startQueueNode, stopBuildNode, tempDir, waitFor, type BuildNode, type QueueNode } from './harness.js'

const skip = nixSkip()

const winner = (r: BuildRecord): BuildRecord['attempts'][number] => {
  const a = r.attempts.find(x => x.result?.outcome === 'success')
  assert.ok(a !== undefined, `${r.id} has a successful attempt`)
  return a
}

async function hookScript (dir: string): Promise<string> {
  await mkdir(join(dir, 'out'), { recursive: true })
  const f = join(dir, 'hook.sh')
  await writeFile(f, `#!/bin/sh\ncat > "${join(dir, 'out')}/$1-$$-$(date +%s%N).json"\n`)
  await chmod(f, 0o755)
  return f
}

test('three schedulers in three stores build 18 builds from a non-building submitter: chain in order, one successful attempt each', { skip, timeout: 180_000 }, async () => {
  const submitter = await startQueueNode()
  const hookDir = await tempDir('guix-swarm-sched-hooks-')
  const hook = await hookScript(hookDir)
  const nodes: BuildNode[] = []
  try {
    for (let i = 0; i < 3; i++) {
      // a longer lease than the other tests: no faults here, so a lease lapsing under CI load must not fake one
      nodes.push(await startBuildNode({ peers: () => nodes.map(n => n.nix), hooks: { programs: { 'build-success': hook }, timeoutMs: 10_000 }, config: { leaseMs: 6000 } }))
    }
    await mesh([submitter, ...nodes.map(n => n.q)])
    const n = randomBytes(4).toString('hex')
    // chain: a needs b needs c; then 15 independent builds
    const expr = `let c = ${drvExpr(`c-${n}`, `echo c > $out/file`)};
      b = ${drvExpr(`b-${n}`, `echo b > $out/file`, ['c'])};
      a = ${drvExpr(`a-${n}`, `echo a > $out/file`, ['b'])};
      in [ a b c ${Array.from({ length: 15 }, (_, i) => `(${drvExpr(`x${i}-${n}`, `echo ${i} > $out/file`)})`).join(' ')} ]`
    const drvs = await instantiate(expr, nodes.map(x => x.ns))
    assert.equal(drvs.length, 18)
    for (const node of nodes) await node.scheduler.start()
    // the dependents first and at the highest priority: only dependency order can hold them back
    const ids = await submitter.queue.submit(drvs.map((drv, i) => ({ drv, system: 'x86_64-linux', priority: i < 2 ? 10 : i === 2 ? 0 : i % 4 })))
    await waitFor('all 18 builds to succeed on the submitter', () => ids.every(id => submitter.queue.get(id)?.phase === 'succeeded'), 150_000)

    const recs = ids.map(id => submitter.queue.get(id)!)
    for (const r of recs) {
      assert.equal(r.attempts.filter(a => a.result?.outcome === 'success').length, 1, `${r.id}: one success`)
      // an attempt that built is marked started (a lone build) or has a result (a batch's builds are not marked)
      assert.equal(r.attempts.filter(a => a.started || a.result !== undefined).length, 1, `${r.id}: built once (no faults, so no double builds)`)
    }
    const [a, b, c] = recs
    assert.ok(compareStamp(winner(c).result!.hlc, winner(b).claimHlc) < 0, 'c succeeded before b was claimed')
    assert.ok(compareStamp(winner(b).result!.hlc, winner(a).claimHlc) < 0, 'b succeeded before a was claimed')

    // a's output was built in its builder's store, with b's output (fetched from wherever b ran) inside
    const byPeer = new Map(nodes.map(x => [x.q.queue.peerIdString(), x]))
    const aBuilder = byPeer.get(winner(a).claimer)!
    const bOut = winner(b).result!.outputs!.out.path
    const aOut = winner(a).result!.outputs!.out.path
    assert.ok(await aBuilder.nix.store.isValid(aOut), `${aOut} is valid in the builder's store`)
    assert.deepEqual((await aBuilder.nix.store.queryPathInfo(aOut)).references, [bOut])
    assert.ok(aBuilder.published.includes(aOut), 'the builder published its output')
    // when a was prepared, b's builder was named as the holder of b's output (unless it was a's own)
    const askedForB = aBuilder.outputsAsked.find(x => x.paths.includes(bOut))
    assert.ok(askedForB !== undefined, `a's builder asked for ${bOut}`)
    assert.deepEqual(askedForB.holders, winner(b).claimer === winner(a).claimer ? [] : [winner(b).claimer], 'the holder named is the node that built b')
    assert.ok(new Set(recs.map(r => winner(r).claimer)).size >= 2, 'work spread over more than one scheduler')

    // NAR hashes in the result ops are the daemon's
    const info = await aBuilder.nix.store.queryPathInfo(aOut)
    assert.equal(winner(a).result!.outputs!.out.narHash, info.narHash)
    // …and the builder's cache holds the NAR with a narinfo signed by its key
    const narinfo = await aBuilder.cache.getNarinfo(aOut.slice('/nix/store/'.length, '/nix/store/'.length + 32))
    assert.ok(narinfo !== undefined, 'narinfo in the builder cache')
    const verified = assertNarinfoVerified(narinfo, [aBuilder.key.publicKey], { storeDir: '/nix/store' })
    assert.equal(verified.narinfo.narHash, info.narHash)

    // logs stay with the node that built, compressed, and readable
    const logged = await aBuilder.scheduler.readLog(a.id)
    assert.ok(logged !== undefined && logged.log.toString().includes(a.derivation), 'the build log names the derivation')

    // one build-success hook per build, each with the build's JSON
    await waitFor('hooks', async () => (await readdir(join(hookDir, 'out'))).length >= 18, 20_000)
    for (const node of nodes) await node.scheduler.hooks.idle()
    const files = await readdir(join(hookDir, 'out'))
    assert.equal(files.length, 18)
    const seen = new Set<string>()
    for (const f of files) {
      const j = JSON.parse(await readFile(join(hookDir, 'out', f), 'utf8')) as { event: string, build: { id: string, state: string } }
      assert.equal(j.event, 'build-success')
      assert.equal(j.build.state, 'succeeded')
      seen.add(j.build.id)
    }
    assert.deepEqual([...seen].sort(), [...ids].sort())
  } finally {
    for (const node of nodes) await stopBuildNode(node)
    await submitter.stop()
    await import('node:fs/promises').then(async fs => await fs.rm(hookDir, { recursive: true, force: true }))
  }
})

test('one slot: builds are claimed by priority (after a priority change), oldest first among equals', { skip, timeout: 120_000 }, async () => {
  const node = await startBuildNode({ config: { maxBuilds: 1 } })
  try {
    const n = randomBytes(4).toString('hex')
    const drvs = await instantiate(`[ ${Array.from({ length: 6 }, (_, i) => `(${drvExpr(`p${i}-${n}`, `echo ${i} > $out/file`)})`).join(' ')} ]`, [node.ns])
    const prios = [0, 3, 1, 3, 2, 0]
    const ids = await node.q.queue.submit(drvs.map((drv, i) => ({ drv, system: 'x86_64-linux', priority: prios[i] })))
    await node.q.queue.setPriority(ids[5], 9) // the last and lowest becomes the first
    prios[5] = 9
    await node.scheduler.start()
    await waitFor('all six to succeed', () => ids.every(id => node.q.queue.get(id)?.phase === 'succeeded'), 100_000)
    const claimed = ids.map(id => node.q.queue.get(id)!).sort((x, y) => compareStamp(winner(x).claimHlc, winner(y).claimHlc)).map(r => ids.indexOf(r.id))
    const expected = ids.map((_, i) => i).sort((x, y) => (prios[y] - prios[x]) || (x - y))
    assert.deepEqual(claimed, expected)
    await waitFor('the last result recorded', () => node.scheduler.status().running.length === 0)
    assert.deepEqual(await readdir(join(node.dir, 'gcroots')), [], 'GC roots dropped once the outputs are published')
    const st = node.scheduler.status()
    assert.equal(st.slotsUsed, 0)
    assert.equal(st.slotsFree, 1)
    assert.ok(st.decisions.some(d => d.action === 'succeeded'), 'the scheduler recorded a succeeded decision')
  } finally {
    await stopBuildNode(node)
  }
})

test('a scheduler that dies mid-build: its lease lapses and another builds the next attempt, once', { skip, timeout: 120_000 }, async () => {
  const nodes: BuildNode[] = []
  try {
    for (let i = 0; i < 2; i++) nodes.push(await startBuildNode({ peers: () => nodes.map(x => x.nix) }))
    await mesh(nodes.map(x => x.q))
    const [dying, heir] = nodes
    const n = randomBytes(4).toString('hex')
    const [drv] = await instantiate(`[ (${drvExpr(`slow-${n}`, `/bin/sleep 4; echo done > $out/file`)}) ]`, nodes.map(x => x.ns))
    await dying.scheduler.start()
    const [id] = await dying.q.queue.submit([{ drv, system: 'x86_64-linux' }])
    await waitFor('the first scheduler to build', () => dying.scheduler.status().running.some(r => r.id === id && r.phase === 'building'))
    await waitFor('the heir to see the build started', () => heir.q.queue.get(id)?.phase === 'building')
    await dying.scheduler.stop({ release: false }) // kills its build, writes nothing more
    await heir.scheduler.start()
    await waitFor('the heir to finish the build', () => heir.q.queue.get(id)?.phase === 'succeeded', 60_000)
    const r = heir.q.queue.get(id)!
    assert.equal(r.attempts.length, 2)
    const [first, second] = r.attempts
    assert.equal(first.claimer, dying.q.queue.peerIdString())
    assert.equal(first.result, undefined)
    assert.equal(first.released, false)
    assert.equal(second.claimer, heir.q.queue.peerIdString())
    assert.equal(second.result?.outcome, 'success')
    assert.equal(r.failures, 0)
  } finally {
    for (const node of nodes) await stopBuildNode(node)
  }
})

test('a failing derivation is retried to the limit with backoff, then failed, its log readable', { skip, timeout: 120_000 }, async () => {
  const node = await startBuildNode()
  try {
    const n = randomBytes(4).toString('hex')
    const [drv] = await instantiate(`[ (${drvExpr(`fails-${n}`, `echo marker-${n} >&2; exit 3`)}) ]`, [node.ns])
    await node.scheduler.start()
    const [id] = await node.q.queue.submit([{ drv, system: 'x86_64-linux', maxAttempts: 2 }])
    await waitFor('the build to fail', () => node.q.queue.get(id)?.phase === 'failed', 60_000)
    const r = node.q.queue.get(id)!
    assert.equal(r.failures, 2)
    assert.deepEqual(r.attempts.map(a => a.result?.outcome), ['failure', 'failure'])
    // the retry waited for the backoff after the first failure
    assert.ok(r.attempts[1].claimHlc[0] >= r.attempts[0].result!.hlc[0] + node.scheduler.config.backoffBaseMs, 'the second attempt was claimed no earlier than backoffBaseMs after the first failed')
    for (const a of r.attempts) {
      const ref = a.result!.log!
      assert.equal(ref.peerId, node.q.queue.peerIdString())
      const text = await node.scheduler.readLogByName(ref.name)
      assert.ok(text?.toString().includes(`marker-${n}`), 'the log holds what the builder printed')
    }
    assert.equal((await node.scheduler.readLog(id))?.attempt, 2)
    await waitFor('the scheduler to go idle', () => node.scheduler.status().slotsUsed === 0)
  } finally {
    await stopBuildNode(node)
  }
})

/** Processes whose command line mentions `needle`. */
async function processesWith (needle: string): Promise<number[]> {
  const out: number[] = []
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue
    const cmd = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(needle)) out.push(Number(e))
  }
  return out
}

test('canceling a running build stops it and frees the slot; the canceled hook runs', { skip, timeout: 120_000 }, async () => {
  const hookDir = await tempDir('guix-swarm-sched-hooks-')
  const hook = await hookScript(hookDir)
  const node = await startBuildNode({ config: { maxBuilds: 1 }, hooks: { programs: { 'build-canceled': hook, 'build-submitted': hook }, timeoutMs: 10_000 } })
  try {
    const n = randomBytes(4).toString('hex')
    const [drv] = await instantiate(`[ (${drvExpr(`sleepy-${n}`, `echo sleeping-${n}; /bin/sleep 30`)}) ]`, [node.ns])
    await node.scheduler.start()
    const [id] = await node.q.queue.submit([{ drv, system: 'x86_64-linux' }])
    await waitFor('the build to run', async () => (await processesWith(`sleeping-${n}`)).length > 0)
    await node.q.queue.cancel(id)
    // generous bound, far below the 30 s the build would take
    await waitFor('the build processes to be gone', async () => (await processesWith(`sleeping-${n}`)).length === 0, 20_000)
    await waitFor('the slot to be free', () => node.scheduler.status().slotsUsed === 0, 20_000)
    assert.ok(node.scheduler.status().decisions.some(d => d.build === id && d.action === 'aborted' && d.reason === 'canceled'), 'the scheduler aborted the build because it was canceled')
    assert.equal(node.q.queue.get(id)?.phase, 'canceled')
    await waitFor('both hooks', async () => (await readdir(join(hookDir, 'out'))).length >= 2, 20_000)
    const events = (await readdir(join(hookDir, 'out'))).map(f => f.split('-').slice(0, 2).join('-')).sort()
    assert.deepEqual(events, ['build-canceled', 'build-submitted'])
  } finally {
    await stopBuildNode(node)
    await import('node:fs/promises').then(async fs => await fs.rm(hookDir, { recursive: true, force: true }))
  }
})
