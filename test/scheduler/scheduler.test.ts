// Scheduler decisions against a real QueueService (real libp2p, real level) with a small fake
// store and builder behind the daemon interfaces: setup failures, missing inputs, tags, lost
// claims, no builder, hooks that hang.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { chmod, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PathNotValidError, type BatchItem, type Builder, type BuildManyOptions, type BuildOptions, type BuildOutcome, type Derivation, type StoreDaemon } from '../../src/daemon/index.js'
import {
  SchedulerService, BUSY_GRACE_MS, SETUP_STRIKES, HookRunner, BadLogNameError, SchedulerConfigError, backoffMs, resolveConfig, tagsMet,
  type SchedulerComponents
} from '../../src/scheduler/index.js'
import type { NodeService } from '../../src/node/index.js'
import { startQueueNode, tempDir, waitFor, mesh, type QueueNode } from './harness.js'
import { setupTroubleLines } from '../../src/cli/commands/node.js'

const SYS = 'x86_64-linux'
let n = 0
const drvPath = (name: string): string => `/nix/store/${(++n).toString(32).padStart(32, '0').replace(/[eotu]/g, 'x')}-${name}.drv`
const outOf = (drv: string): string => drv.replace(/\.drv$/, '')

/** A store that knows some derivations (all valid) and makes outputs valid when "built". */
class FakeStore implements StoreDaemon {
  readonly kind = 'nix' as const
  readonly storeDir = '/nix/store'
  readonly valid = new Set<string>()
  readonly drvs = new Map<string, Derivation>()
  add (drv: string, inputs: string[] = []): string {
    this.drvs.set(drv, { outputs: new Map([['out', { path: outOf(drv), hashAlgo: '', hash: '' }]]), inputDrvs: new Map(inputs.map(i => [i, ['out']])), inputSrcs: [], system: SYS, builder: '/bin/sh', args: [], env: new Map() })
    this.valid.add(drv)
    return drv
  }

  async isValid (p: string): Promise<boolean> { return this.valid.has(p) }
  async filterInvalid (ps: string[]): Promise<string[]> { return ps.filter(p => !this.valid.has(p)) }
  async queryPathInfo (p: string): Promise<never> { throw new Error(`not in fake: ${p}`) }
  async queryPathInfos (): Promise<never> { throw new Error('not in fake') }
  async queryRequisites (ps: string[]): Promise<string[]> { return ps }
  async readDerivation (p: string): Promise<Derivation> {
    const d = this.drvs.get(p)
    if (d === undefined) throw new Error(`no derivation ${p}`)
    if (!this.valid.has(p)) throw new PathNotValidError(`derivation '${p}' is not valid`)
    return d
  }

  async exportPath (): Promise<never> { throw new Error('not in fake') }
  async importPath (): Promise<void> { throw new Error('not in fake') }
}

type Script = (drv: string, opts: BuildOptions) => Promise<BuildOutcome>

class FakeBuilder implements Builder {
  readonly kind = 'nix' as const
  readonly calls: string[] = []
  constructor (private readonly store: FakeStore, readonly scripts = new Map<string, Script[]>()) {}
  async build (drv: string, opts: BuildOptions): Promise<BuildOutcome> {
    this.calls.push(drv)
    opts.onLog(Buffer.from(`building ${drv}\n`))
    const next = this.scripts.get(drv)?.shift()
    if (next !== undefined) return await next(drv, opts)
    this.store.valid.add(outOf(drv))
    return { kind: 'success', outputs: { out: outOf(drv) } }
  }
}

const publisher: SchedulerComponents['publisher'] = {
  async addFromStore (_store, storePath) { return { storePath, narHash: 'sha256:' + '0'.repeat(52), narSize: 120 } }
}

interface Rig { q: QueueNode, store: FakeStore, builder: FakeBuilder, dir: string, scheduler: SchedulerService }

async function rig (opts: { q?: QueueNode, components?: Partial<SchedulerComponents>, config?: SchedulerComponents['config'], builder?: (store: FakeStore) => FakeBuilder } = {}): Promise<Rig> {
  const q = opts.q ?? await startQueueNode()
  const store = new FakeStore()
  const builder = opts.builder?.(store) ?? new FakeBuilder(store)
  const dir = await tempDir()
  const scheduler = new SchedulerService({
    queue: q.queue,
    store,
    builder,
    publisher,
    logsDir: join(dir, 'logs'),
    config: { systems: [SYS], maxBuilds: 2, leaseMs: 1500, settleMs: 100, pollMs: 100, jitterMs: 10, backoffBaseMs: 100, backoffMaxMs: 400, ...opts.config },
    ...opts.components
  })
  return { q, store, builder, dir, scheduler }
}

async function done (r: Rig, opts: { keepQueue?: boolean } = {}): Promise<void> {
  await r.scheduler.stop()
  if (opts.keepQueue !== true) await r.q.stop()
  await rm(r.dir, { recursive: true, force: true })
}

test('config: tags, backoff, and refused settings', () => {
  assert.equal(tagsMet({}, []), true)
  assert.equal(tagsMet({ 'big-memory': '' }, ['big-memory']), true)
  assert.equal(tagsMet({ 'big-memory': 'true' }, ['big-memory']), true)
  assert.equal(tagsMet({ gpu: 'nvidia' }, ['gpu']), false)
  assert.equal(tagsMet({ gpu: 'nvidia' }, ['gpu=nvidia', 'big-memory']), true)
  assert.equal(tagsMet({ gpu: 'nvidia', arch: 'zen4' }, ['gpu=nvidia']), false)
  const c = { backoffBaseMs: 1000, backoffMaxMs: 5000 }
  assert.deepEqual([0, 1, 2, 3, 4, 40].map(k => backoffMs(c, k)), [0, 1000, 2000, 4000, 5000, 5000])
  assert.throws(() => resolveConfig({ leaseMs: 1000, settleMs: 600 }), SchedulerConfigError)
  assert.throws(() => resolveConfig({ maxBuilds: 1.5 }), SchedulerConfigError)
  assert.throws(() => resolveConfig({ leaseMs: 0 }), SchedulerConfigError)
  assert.equal(resolveConfig().leaseMs, 60_000)
})

test('setup failure: released, not counted, retried after a local backoff; missing inputs: recorded, not counted', async () => {
  const r = await rig()
  try {
    const a = r.store.add(drvPath('setup'))
    const b = r.store.add(drvPath('missing'))
    r.builder.scripts.set(a, [async () => ({ kind: 'setup-failed', message: 'daemon socket gone' })])
    r.builder.scripts.set(b, [async () => ({ kind: 'missing-inputs', missing: ['/nix/store/00000000000000000000000000000000-x.drv'] })])
    const [ia, ib] = await r.q.queue.submit([{ drv: a, system: SYS }, { drv: b, system: SYS }])
    await r.scheduler.start()
    // The queue shows the result op as soon as it is applied; the scheduler logs its
    // 'succeeded' decision just after, so wait for both before reading the decision log.
    await waitFor('both to succeed', () => r.q.queue.get(ia)?.phase === 'succeeded' && r.q.queue.get(ib)?.phase === 'succeeded' &&
      r.scheduler.status().decisions.some(d => d.build === ia && d.action === 'succeeded'))
      .catch((e: Error) => { throw new Error(`${e.message}; decisions: ${JSON.stringify(r.scheduler.status().decisions)}`) })
    const ra = r.q.queue.get(ia)!
    assert.equal(ra.failures, 0)
    assert.equal(ra.attempts[0].released, true)
    assert.equal(ra.attempts[1].result?.outcome, 'success')
    const rb = r.q.queue.get(ib)!
    assert.equal(rb.failures, 0)
    assert.equal(rb.attempts[0].result?.outcome, 'missing-inputs')
    assert.deepEqual(rb.attempts[0].result?.missing, ['/nix/store/00000000000000000000000000000000-x.drv'])
    // retried only after the backoff: the result's stamp, then at least backoffBaseMs
    assert.ok(rb.attempts[1].claimHlc[0] >= rb.attempts[0].result!.hlc[0] + 100, 'the second attempt was claimed at least 100 ms after the first failed (backoff)')
    const acts = r.scheduler.status().decisions.filter(d => d.build === ia && d.action !== 'skipped').map(d => d.action)
    assert.deepEqual(acts, ['claimed', 'started', 'released', 'claimed', 'started', 'succeeded'], JSON.stringify(r.scheduler.status().decisions))
    assert.ok(r.scheduler.status().decisions.some(d => d.build === ia && d.action === 'skipped' && d.reason.startsWith('backing off')), 'the scheduler skipped the build while backing off')
    // every attempt left a readable log
    assert.match((await r.scheduler.readLog(ia, 1))!.log.toString(), /building/)
    assert.equal(await r.scheduler.readLog('nosuchbuild'), undefined)
    await assert.rejects(r.scheduler.readLogByName('../../etc/passwd'), BadLogNameError)
  } finally {
    await done(r)
  }
})

test('a daemon that keeps failing setup: after SETUP_STRIKES hand-overs in a row the node claims nothing until a backoff passes, says so in its status, and resumes', async () => {
  let clock = Date.now()
  let broken = true
  const r = await rig({
    config: { maxBuilds: 1, maxBatch: 1 },
    components: { now: () => clock },
    builder: (s) => {
      const b = new FakeBuilder(s)
      const build = b.build.bind(b)
      b.build = async (drv, opts) => broken ? (b.calls.push(drv), { kind: 'setup-failed', message: 'cannot connect to the daemon' }) : await build(drv, opts)
      return b
    }
  })
  try {
    const drvs = Array.from({ length: 6 }, (_, i) => r.store.add(drvPath(`broken${i}`)))
    await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await r.scheduler.start()
    await waitFor('the pause', () => r.scheduler.status().setupFailures?.pausedUntil !== undefined)
    const t = r.scheduler.status().setupFailures
    assert.equal(t?.inARow, SETUP_STRIKES)
    assert.equal(t?.last, 'cannot connect to the daemon')
    assert.equal(t?.pausedUntil, clock + 100, 'paused for the first backoff step')
    assert.equal(r.scheduler.status().slotsFree, 0, 'a paused node offers no free slot')
    assert.deepEqual(setupTroubleLines(t, clock), [`  PAUSED: ${SETUP_STRIKES} hand-over(s) in a row failed setup; claiming again in 1s`, '  last: cannot connect to the daemon'])
    // the clock stands still: three builds are still claimable, yet none is claimed (a few polls)
    await sleep(600)
    assert.equal(r.builder.calls.length, SETUP_STRIKES, 'no claim while paused')
    // the pause passes: one more strike, a longer pause
    clock += 150
    await waitFor('the fourth hand-over', () => r.scheduler.status().setupFailures?.inARow === SETUP_STRIKES + 1)
    assert.equal(r.scheduler.status().setupFailures?.pausedUntil, clock + 200)
    // the daemon is fixed: the next hand-over builds, and the count is gone
    broken = false
    clock += 1000
    await waitFor('every build to succeed', () => drvs.every(d => r.q.queue.byDerivation(d).some(b => b.phase === 'succeeded')))
    assert.equal(r.scheduler.status().setupFailures, undefined, 'a working hand-over clears the count')
    assert.deepEqual(setupTroubleLines(undefined), [])
  } finally {
    await done(r)
  }
})

test('dependency order: a build waits while an input derivation is queued and unbuilt', async () => {
  const r = await rig({ config: { maxBuilds: 3 } })
  try {
    const c = r.store.add(drvPath('c'))
    const b = r.store.add(drvPath('b'), [c])
    const a = r.store.add(drvPath('a'), [b])
    await r.q.queue.submit([{ drv: a, system: SYS, priority: 9 }, { drv: b, system: SYS, priority: 9 }, { drv: c, system: SYS }])
    await r.scheduler.start()
    await waitFor('all built', () => r.builder.calls.length === 3 && r.scheduler.status().slotsUsed === 0)
    assert.deepEqual(r.builder.calls, [c, b, a])
    assert.ok(r.scheduler.status().decisions.some(d => d.action === 'skipped' && d.reason.includes(`input ${b}`)), `the scheduler skipped the build waiting for input ${b}`)
  } finally {
    await done(r)
  }
})

test('dependency order from the submit\'s inputs: a .drv is fetched only once its build is claimed, after its inputs were built', async () => {
  const fetched: Array<{ drv: string, built: string[] }> = []
  let store!: FakeStore
  let builder!: FakeBuilder
  const r = await rig({
    config: { maxBuilds: 3 },
    builder: (s) => { store = s; builder = new FakeBuilder(s); return builder },
    components: {
      inputs: {
        async ensureDerivation (drv) { fetched.push({ drv, built: [...builder.calls] }); store.valid.add(drv) },
        async ensureOutputs () { return [] }
      }
    }
  })
  try {
    const c = r.store.add(drvPath('c'))
    const b = r.store.add(drvPath('b'), [c])
    const a = r.store.add(drvPath('a'), [b])
    for (const d of [a, b, c]) r.store.valid.delete(d) // in the submitter's store, not here
    await r.q.queue.submit([{ drv: a, system: SYS, priority: 9, inputs: [b] }, { drv: b, system: SYS, priority: 9, inputs: [c] }, { drv: c, system: SYS, inputs: [] }])
    await r.scheduler.start()
    await waitFor('all built', () => r.builder.calls.length === 3 && r.scheduler.status().slotsUsed === 0)
    assert.deepEqual(r.builder.calls, [c, b, a])
    assert.deepEqual(fetched.map(f => f.drv), [c, b, a], 'each .drv fetched once, when its build was claimed')
    assert.deepEqual(fetched.find(f => f.drv === a)?.built, [c, b], 'a\'s .drv was not needed before b was built')
    assert.ok(r.scheduler.status().decisions.some(d => d.action === 'skipped' && d.reason.includes(`input ${b}`)), 'a waited for b, known from the submit alone')
  } finally {
    await done(r)
  }
})

test('tags: a build needing a tag this node lacks is never claimed; one that offers it builds', async () => {
  const r = await rig()
  try {
    const drv = r.store.add(drvPath('gpu'))
    const [id] = await r.q.queue.submit([{ drv, system: SYS, tags: { gpu: 'nvidia' } }])
    await r.scheduler.start()
    await waitFor('the skip decision', () => r.scheduler.status().decisions.some(d => d.build === id && d.action === 'skipped'))
    assert.match(r.scheduler.status().decisions.find(d => d.build === id)!.reason, /needs tags/)
    assert.equal(r.q.queue.get(id)?.attempts.length, 0)
    await r.scheduler.stop()
    const r2 = await rig({ q: r.q, config: { tags: ['gpu=nvidia'] } })
    r2.store.add(drv)
    await r2.scheduler.start()
    await waitFor('the build', () => r.q.queue.get(id)?.phase === 'succeeded')
    await done(r2, { keepQueue: true })
  } finally {
    await done(r)
  }
})

test('a node without a builder never claims, and says so in its status', async () => {
  const q = await startQueueNode()
  const dir = await tempDir()
  const s = new SchedulerService({ queue: q.queue, store: new FakeStore(), builder: null, publisher, logsDir: join(dir, 'logs'), config: { systems: [SYS], pollMs: 50 } })
  try {
    await s.start()
    const [id] = await q.queue.submit([{ drv: drvPath('none'), system: SYS }])
    await new Promise(resolve => setTimeout(resolve, 300)) // several poll periods: nothing may happen
    assert.equal(q.queue.get(id)?.attempts.length, 0)
    const service: NodeService = s // plugs into the node's service seam as it is
    assert.equal(service.name, 'scheduler')
    const st = s.status()
    assert.equal(st.builder, 'none')
    assert.equal(st.slotsFree, 0)
    assert.deepEqual(st.decisions, [])
  } finally {
    await s.stop(); await q.stop(); await rm(dir, { recursive: true, force: true })
  }
})

test('a claim that loses to an earlier competing claim aborts the running build', async () => {
  // the builder node's clock runs 20 s ahead, so a claim the other node made while they were
  // apart has the smaller stamp and wins everywhere once they reconnect
  const other = await startQueueNode()
  const skewed = await startQueueNode({}, () => Date.now() + 20_000)
  const r = await rig({ q: skewed })
  try {
    await mesh([skewed, other])
    const drv = r.store.add(drvPath('contested'))
    let aborted: unknown
    r.builder.scripts.set(drv, [async (_d, opts) => await new Promise<BuildOutcome>((resolve) => {
      opts.signal.addEventListener('abort', () => { aborted = opts.signal.reason; resolve({ kind: 'canceled' }) }, { once: true })
    })])
    const [id] = await other.queue.submit([{ drv, system: SYS }])
    await waitFor('the build to reach the builder node', () => skewed.queue.get(id) !== undefined)
    await skewed.libp2p.hangUp(other.libp2p.peerId)
    await waitFor('the hang-up', () => skewed.libp2p.getPeers().length === 0)
    await other.queue.claim(id, 1, 60_000) // made while apart, earlier by HLC than the builder's own
    await r.scheduler.start()
    await waitFor('the build to start', () => r.builder.calls.length === 1)
    await skewed.libp2p.dial(other.libp2p.getMultiaddrs()[0])
    await waitFor('the abort', () => r.scheduler.status().slotsUsed === 0)
    assert.match(String(aborted), /claim lost to/)
    const d = r.scheduler.status().decisions.find(x => x.build === id && x.action === 'aborted')
    assert.match(d!.reason, new RegExp(`claim lost to ${other.queue.peerIdString()}`))
    assert.equal(skewed.queue.get(id)!.attempts[0].claimer, other.queue.peerIdString())
  } finally {
    await done(r)
    await other.stop()
  }
})

async function script (dir: string, name: string, body: string): Promise<string> {
  const f = join(dir, name)
  await writeFile(f, `#!/bin/sh\n${body}\n`)
  await chmod(f, 0o755)
  return f
}

test('hooks: JSON on stdin; a failing hook is logged; a hanging hook is killed at its limit and blocks nothing', async () => {
  const dir = await tempDir()
  try {
    await mkdir(join(dir, 'out'))
    const ok = await script(dir, 'ok.sh', `cat > "${dir}/out/$1.json"`)
    const bad = await script(dir, 'bad.sh', 'echo nope >&2; exit 7')
    const hang = await script(dir, 'hang.sh', `echo $$ > "${dir}/hang.pid"; exec /bin/sleep 60`)
    const h = new HookRunner({ programs: { 'build-success': ok, 'build-failure': bad, 'build-canceled': hang }, timeoutMs: 1500 })
    const hanging = h.run('build-canceled', { id: 'x' })!
    const [good, failed] = await Promise.all([h.run('build-success', { id: 'b1', n: [1, 2] })!, h.run('build-failure', { id: 'b2' })!])
    assert.deepEqual(good, { event: 'build-success', program: ok, ok: true })
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'out', 'build-success.json'), 'utf8')), { id: 'b1', n: [1, 2] })
    assert.equal(failed.ok, false)
    assert.match(failed.error!, /exited with 7: nope/)
    const hung = await hanging
    assert.equal(hung.ok, false)
    assert.match(hung.error!, /time limit/)
    const pid = Number(await readFile(join(dir, 'hang.pid'), 'utf8'))
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the hanging hook is gone')
    assert.equal(h.failures.length, 2)
    assert.equal(h.run('build-submitted', {}), undefined, 'no program, no run')
    const missing = new HookRunner({ programs: { 'build-success': join(dir, 'absent') }, timeoutMs: 1000 })
    assert.match((await missing.run('build-success', {})!).error!, /cannot start/)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a hanging submitted-hook does not hold up building', async () => {
  const r = await rig()
  const dir = await tempDir()
  const hang = await script(dir, 'hang.sh', 'exec /bin/sleep 60')
  const s = new SchedulerService({
    queue: r.q.queue, store: r.store, builder: r.builder, publisher, logsDir: join(dir, 'logs'),
    hooks: { programs: { 'build-submitted': hang }, timeoutMs: 30_000 },
    config: { systems: [SYS], settleMs: 50, pollMs: 50, jitterMs: 0 }
  })
  try {
    await s.start()
    const drvs = [1, 2, 3].map(i => r.store.add(drvPath(`h${i}`)))
    const ids = await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await waitFor('builds', () => ids.every(id => r.q.queue.get(id)?.phase === 'succeeded'))
    let settled = false
    void s.hooks.idle().then(() => { settled = true })
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(settled, false, 'the three hooks are still running while the builds are done')
    await s.stop() // kills them
    assert.equal(s.hooks.failures.length, 3)
    assert.deepEqual(await readdir(join(dir, 'logs')).then(f => f.length), 3)
  } finally {
    await s.stop(); await done(r); await rm(dir, { recursive: true, force: true })
  }
})

test('a graceful stop kills the build and releases the claim, so another node takes it without waiting for the lease', async () => {
  const r = await rig({ config: { leaseMs: 60_000 } })
  try {
    const drv = r.store.add(drvPath('handover'))
    let killed = false
    r.builder.scripts.set(drv, [async (_d, opts) => await new Promise<BuildOutcome>((resolve) => {
      opts.signal.addEventListener('abort', () => { killed = true; resolve({ kind: 'canceled' }) }, { once: true })
    })])
    const [id] = await r.q.queue.submit([{ drv, system: SYS }])
    await r.scheduler.start()
    await waitFor('the build to start', () => r.builder.calls.length === 1)
    await r.scheduler.stop()
    assert.equal(killed, true)
    assert.equal(r.q.queue.get(id)!.attempts[0].released, true)
    const next = await rig({ q: r.q, config: { leaseMs: 60_000 } })
    next.store.add(drv)
    await next.scheduler.start()
    // far less than the 60 s lease: only the release lets attempt 2 start this soon
    await waitFor('the next attempt', () => r.q.queue.get(id)?.phase === 'succeeded', 20_000)
    assert.equal(r.q.queue.get(id)!.attempts[1].result?.outcome, 'success')
    await done(next, { keepQueue: true })
  } finally {
    await done(r)
  }
})

/** A FakeBuilder that also builds batches (one call for several derivations), as CliBuilder.buildMany does. */
class FakeBatchBuilder extends FakeBuilder {
  readonly batches: string[][] = []
  /** When set, the next buildMany call waits for its signal instead of building. */
  hangNext = false
  constructor (private readonly fakeStore: FakeStore) { super(fakeStore) }
  async buildMany (items: BatchItem[], opts: BuildManyOptions): Promise<Map<string, BuildOutcome>> {
    this.batches.push(items.map(i => i.drvPath))
    const out = new Map<string, BuildOutcome>()
    if (this.hangNext) {
      this.hangNext = false
      await new Promise(resolve => opts.signal.addEventListener('abort', resolve, { once: true }))
      for (const i of items) out.set(i.drvPath, { kind: 'canceled' })
      return out
    }
    this.rootBases.push(opts.gcRootBase)
    for (const [k, i] of items.entries()) {
      i.onLog(Buffer.from(`batch-built ${i.drvPath}\n`))
      this.fakeStore.valid.add(outOf(i.drvPath))
      // as one client roots a batch: gcRootBase, gcRootBase-2, ...
      if (opts.gcRootBase !== undefined) await writeFile(k === 0 ? opts.gcRootBase : `${opts.gcRootBase}-${k + 1}`, outOf(i.drvPath))
      const o: BuildOutcome = { kind: 'success', outputs: { out: outOf(i.drvPath) } }
      opts.onOutcome?.(i.drvPath, o)
      out.set(i.drvPath, o)
    }
    return out
  }

  readonly rootBases: Array<string | undefined> = []
}

async function batchRig (config: SchedulerComponents['config'] = {}): Promise<Rig & { batcher: FakeBatchBuilder }> {
  const r = await rig({ config: { maxBuilds: 1, maxBatch: 4, ...config }, builder: (store) => new FakeBatchBuilder(store) })
  return { ...r, batcher: r.builder as FakeBatchBuilder }
}

const succeededOnce = (q: QueueNode, id: string): boolean => {
  const rec = q.queue.get(id)
  return rec?.phase === 'succeeded' && rec.attempts.filter(a => a.result?.outcome === 'success').length === 1
}

test('config: maxBatch and batchBudgetMs are checked', () => {
  assert.throws(() => resolveConfig({ maxBatch: 0 }), SchedulerConfigError)
  assert.throws(() => resolveConfig({ maxBatch: 2.5 }), SchedulerConfigError)
  assert.throws(() => resolveConfig({ batchBudgetMs: -1 }), SchedulerConfigError)
  assert.equal(resolveConfig({ maxBatch: 1 }).maxBatch, 1)
})

test('short builds are claimed in batches and handed to buildMany together: one success each, each log its own', async () => {
  const r = await batchRig()
  try {
    const drvs = Array.from({ length: 9 }, (_, i) => r.store.add(drvPath(`batched${i}`)))
    const ids = await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await r.scheduler.start()
    await waitFor('all nine built once', () => ids.every(id => succeededOnce(r.q, id)) && r.scheduler.status().running.length === 0)
      .catch((e: Error) => { throw new Error(`${e.message}; decisions: ${JSON.stringify(r.scheduler.status().decisions)}`) })
    // nothing timed yet: the first build goes alone, through build(); then batches of up to maxBatch
    assert.deepEqual(r.batcher.calls, [drvs[0]])
    assert.ok(r.batcher.batches.length > 0 && r.batcher.batches.every(b => b.length > 1 && b.length <= 4), `batches of 2..4: ${JSON.stringify(r.batcher.batches)}`)
    assert.deepEqual([...r.batcher.calls, ...r.batcher.batches.flat()].sort(), [...drvs].sort(), 'every derivation handed to the builder exactly once')
    const st = r.scheduler.status()
    assert.equal(st.batching.builds, 9)
    assert.equal(st.batching.batches, 1 + r.batcher.batches.length)
    const batched = drvs.indexOf(r.batcher.batches[0][1])
    const text = (await r.scheduler.readLog(ids[batched]))!.log.toString()
    assert.equal(text, `batch-built ${drvs[batched]}\n`, 'a batched build\'s log holds its own lines only')
    // claims of one batch are one pass: claimed together, in the queue's order
    const d = st.decisions.find(x => x.build === ids[batched] && x.action === 'claimed')
    assert.match(d!.reason, /claimed together/)
  } finally {
    await done(r)
  }
})

test('a lone build is marked building at once; a batch\'s builds get no renew before a third of the lease', async () => {
  const r = await batchRig({ leaseMs: 60_000 })
  try {
    const drvs = Array.from({ length: 5 }, (_, i) => r.store.add(drvPath(`marked${i}`)))
    const ids = await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await r.scheduler.start()
    await waitFor('all five built once', () => ids.every(id => succeededOnce(r.q, id)) && r.scheduler.status().running.length === 0)
    const renews = (drv: string): number => r.q.queue.replica.state.opsOf(ids[drvs.indexOf(drv)]).filter(s => s.op.type === 'renew').length
    assert.deepEqual(r.batcher.calls, [drvs[0]], 'the first build went alone')
    assert.equal(renews(drvs[0]), 1, 'the lone build was marked building by one renew')
    const batched = r.batcher.batches.flat()
    assert.ok(batched.length >= 2, `some builds were batched: ${JSON.stringify(r.batcher.batches)}`)
    for (const drv of batched) assert.equal(renews(drv), 0, `no renew for the batched ${drv}`)
  } finally {
    await done(r)
  }
})

test('a batch is rooted under one base name while it publishes; the roots are gone once every build is recorded', async () => {
  const dir = await tempDir()
  const roots = join(dir, 'gcroots')
  const rootedAtPublish = new Map<string, boolean>()
  const r = await rig({
    config: { maxBuilds: 1, maxBatch: 4 },
    builder: (store) => new FakeBatchBuilder(store),
    components: {
      gcRootsDir: roots,
      publisher: {
        async addFromStore (_store, storePath) {
          const names = await readdir(roots)
          const contents = await Promise.all(names.map(async (f) => await readFile(join(roots, f), 'utf8').catch(() => '')))
          rootedAtPublish.set(storePath, contents.includes(storePath))
          return { storePath, narHash: 'sha256:' + '0'.repeat(52), narSize: 120 }
        }
      }
    }
  })
  const batcher = r.builder as FakeBatchBuilder
  try {
    const drvs = Array.from({ length: 7 }, (_, i) => r.store.add(drvPath(`rooted${i}`)))
    const ids = await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await r.scheduler.start()
    await waitFor('all seven built once', () => ids.every(id => succeededOnce(r.q, id)) && r.scheduler.status().running.length === 0)
    assert.ok(batcher.batches.length > 0, 'some builds went through buildMany')
    assert.ok(batcher.rootBases.every(b => b !== undefined && b.startsWith(roots + '/batch-')), `one base per batch: ${JSON.stringify(batcher.rootBases)}`)
    // (the first build goes alone, through build(), before any build time is known)
    const batchedOutputs = batcher.batches.flat().map(outOf)
    assert.ok(batchedOutputs.length >= 2 && batchedOutputs.every(o => rootedAtPublish.get(o) === true), `every batched output was rooted while it was published: ${JSON.stringify([...rootedAtPublish])}`)
    await waitFor('roots removed', async () => (await readdir(roots)).length === 0)
  } finally {
    await done(r)
    await rm(dir, { recursive: true, force: true })
  }
})

test('a build canceled inside a batch stops the batch; the others are released uncounted and built again', async () => {
  const r = await batchRig({ leaseMs: 60_000 })
  try {
    const first = r.store.add(drvPath('warmup'))
    const [warm] = await r.q.queue.submit([{ drv: first, system: SYS }])
    await r.scheduler.start()
    await waitFor('the first build (times a build, so batches may grow)', () => succeededOnce(r.q, warm) && r.scheduler.status().slotsUsed === 0)
    // a build holds the only slot while the three are submitted, so they are claimed in one pass
    const blocker = r.store.add(drvPath('blocker'))
    let unblock!: () => void
    r.batcher.scripts.set(blocker, [async (d) => {
      await new Promise<void>(resolve => { unblock = resolve })
      r.store.valid.add(outOf(d))
      return { kind: 'success', outputs: { out: outOf(d) } }
    }])
    await r.q.queue.submit([{ drv: blocker, system: SYS }])
    await waitFor('the blocker to build', () => r.batcher.calls.includes(blocker))
    r.batcher.hangNext = true
    const drvs = [0, 1, 2].map(i => r.store.add(drvPath(`together${i}`)))
    const ids = await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    unblock()
    await waitFor('the batch to reach the builder', () => r.batcher.batches.length === 1)
    assert.deepEqual(r.batcher.batches[0], drvs)
    await r.q.queue.cancel(ids[1])
    await waitFor('the other two to be built again', () => succeededOnce(r.q, ids[0]) && succeededOnce(r.q, ids[2]) && r.scheduler.status().running.length === 0)
    assert.equal(r.q.queue.get(ids[1])!.phase, 'canceled')
    for (const id of [ids[0], ids[2]]) {
      const rec = r.q.queue.get(id)!
      assert.equal(rec.failures, 0, 'a batch stopped for another build counts as no failure')
      assert.equal(rec.attempts[0].released, true, 'the stopped attempt was handed back')
      assert.ok(r.scheduler.status().decisions.some(d => d.build === id && d.action === 'released' && /batch was stopped/.test(d.reason)), 'the release says why')
    }
    assert.ok(r.scheduler.status().decisions.some(d => d.build === ids[1] && d.action === 'aborted' && d.reason === 'canceled'), 'the canceled build was aborted as canceled')
  } finally {
    await done(r)
  }
})

test('without buildMany a batch is built one by one in its slot; builds longer than the batch budget are never batched', async () => {
  const r = await rig({ config: { maxBuilds: 1, maxBatch: 4 } })
  try {
    const drvs = Array.from({ length: 6 }, (_, i) => r.store.add(drvPath(`onebyone${i}`)))
    const ids = await r.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await r.scheduler.start()
    await waitFor('all six built once', () => ids.every(id => succeededOnce(r.q, id)) && r.scheduler.status().running.length === 0)
    assert.deepEqual([...r.builder.calls].sort(), [...drvs].sort())
    const st = r.scheduler.status()
    assert.ok(st.batching.batches < st.batching.builds, `some builds shared a batch: ${JSON.stringify(st.batching)}`)
  } finally {
    await done(r)
  }
  const slow = await rig({ config: { maxBuilds: 1, maxBatch: 4, batchBudgetMs: 100 } })
  try {
    const drvs = Array.from({ length: 4 }, (_, i) => slow.store.add(drvPath(`slow${i}`)))
    // each build takes at least 150 ms, more than the 100 ms budget: batches stay at one
    for (const drv of drvs) {
      slow.builder.scripts.set(drv, [async (d) => {
        await new Promise(resolve => setTimeout(resolve, 150))
        slow.store.valid.add(outOf(d))
        return { kind: 'success', outputs: { out: outOf(d) } }
      }])
    }
    const ids = await slow.q.queue.submit(drvs.map(drv => ({ drv, system: SYS })))
    await slow.scheduler.start()
    await waitFor('all four built once', () => ids.every(id => succeededOnce(slow.q, id)) && slow.scheduler.status().running.length === 0)
    const st = slow.scheduler.status()
    assert.deepEqual(st.batching, { batches: 4, builds: 4, size: 1 })
  } finally {
    await done(slow)
  }
})

test('a claim that uses up the lapsed-lease limit fails the build: the claimer does not build it', async () => {
  const other = await startQueueNode()
  const r = await rig()
  try {
    await mesh([r.q, other])
    const drv = r.store.add(drvPath('keeps-lapsing'))
    // one lapse allowed: the dead claimer's attempt 1 is abandoned the moment attempt 2 is claimed
    const [id] = await other.queue.submit([{ drv, system: SYS, maxAbandoned: 1 }])
    await waitFor('the build to reach the builder node', () => r.q.queue.get(id) !== undefined)
    await other.queue.claim(id, 1, 300) // and never renewed: a builder that died
    await waitFor('the claim to arrive', () => r.q.queue.get(id)?.attempts.length === 1)
    await r.scheduler.start()
    await waitFor('the build to fail', () => r.q.queue.get(id)?.phase === 'failed')
    await waitFor('the scheduler to go idle', () => r.scheduler.status().slotsUsed === 0)
    const rec = r.q.queue.get(id)!
    assert.equal(rec.attempts.length, 2, 'attempt 2 was claimed here')
    assert.equal(rec.attempts[1].claimer, r.q.queue.peerIdString(), 'by this node')
    assert.equal(rec.attempts[1].result, undefined, 'and never given a result')
    assert.deepEqual(r.builder.calls, [], 'the failed build was never handed to the builder')
  } finally {
    await done(r)
    await other.stop()
  }
})

test('busy (background work waits) while a build runs and for BUSY_GRACE_MS after the last one ends', async () => {
  let skew = 0
  let release: () => void = () => {}
  const r = await rig({ components: { now: () => Date.now() + skew } })
  try {
    const drv = r.store.add(drvPath('held'))
    r.builder.scripts.set(drv, [async (d) => {
      await new Promise<void>((resolve) => { release = resolve })
      r.store.valid.add(outOf(d))
      return { kind: 'success', outputs: { out: outOf(d) } }
    }])
    assert.equal(r.scheduler.busy, false, 'a node that never built is not busy')
    const [id] = await r.q.queue.submit([{ drv, system: SYS }])
    await r.scheduler.start()
    await waitFor('the build running', () => r.builder.calls.includes(drv))
    assert.equal(r.scheduler.busy, true, 'busy while building')
    release()
    await waitFor('the build recorded and its run gone', () => succeededOnce(r.q, id) && r.scheduler.status().running.length === 0)
    assert.equal(r.scheduler.busy, true, 'still busy just after the last build: the next batch may be a moment away')
    skew += BUSY_GRACE_MS
    assert.equal(r.scheduler.busy, false, 'idle once the grace has passed')
  } finally {
    release()
    await done(r)
  }
})
