// Swarm build benchmark: N trivial derivations built by 3 schedulers (3 separate Nix stores, real
// queue replicas over libp2p on 127.0.0.1, outputs published to real binary caches) versus one
// `nix-store --realise` of the same N in a 4th store, same run. Also submit-to-claim latency.
// Schedulers run in-process (the process-level node wiring is not there yet).
// The reference runs offline (`--option substituters ''`), as the swarm's builders do: with Nix's
// default substituter it spends seconds asking cache.nixos.org about the outputs first.
// Run: npm run bench:swarm. Env: SWARM_BENCH_N (200), SWARM_BENCH_SLOTS (per scheduler, 1),
// SWARM_BENCH_MAX_BATCH (the schedulers' maxBatch, 16),
// SWARM_BENCH_JOBS (--max-jobs of the reference, default: the swarm's total slots),
// SWARM_BENCH_SETTLE_MS (100), SWARM_BENCH_LEASE_MS (10000), SWARM_BENCH_JITTER_MS (20), SWARM_BENCH_PUBLISH (cache: zstd NARs +
// signed narinfos; pathinfo: no NARs, to see the scheduling cost alone).
import '../src/polyfill.js'
import { randomBytes } from 'node:crypto'
import { cpus } from 'node:os'
import { compareStamp, type BuildRecord } from '../src/crdt/index.js'
import { nixNamespace } from '../test/helpers/nix-ns.js'
import { drvExpr, instantiate, mesh, startBuildNode, startQueueNode, stopBuildNode, waitFor, type BuildNode } from '../test/scheduler/harness.js'

const N = Number(process.env.SWARM_BENCH_N ?? 200)
const SLOTS = Number(process.env.SWARM_BENCH_SLOTS ?? 1)
const NODES = 3
const JOBS = Number(process.env.SWARM_BENCH_JOBS ?? NODES * SLOTS)
const SETTLE = Number(process.env.SWARM_BENCH_SETTLE_MS ?? 100)
const LEASE = Number(process.env.SWARM_BENCH_LEASE_MS ?? 10_000)
const JITTER = Number(process.env.SWARM_BENCH_JITTER_MS ?? 20)
const MAX_BATCH = Number(process.env.SWARM_BENCH_MAX_BATCH ?? 16)
const PUBLISH = process.env.SWARM_BENCH_PUBLISH === 'pathinfo' ? 'pathinfo' : 'cache'

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}
const claimLatency = (r: BuildRecord): number => {
  const a = r.attempts.find(x => x.result?.outcome === 'success') ?? r.attempts[0]
  return a.claimHlc[0] - r.submitHlc[0]
}

async function main (): Promise<void> {
  console.log(`swarm benchmark: ${N} trivial derivations, ${NODES} schedulers × ${SLOTS} slot(s), settle ${SETTLE} ms, jitter ${JITTER} ms, max batch ${MAX_BATCH}, publish ${PUBLISH}, reference --max-jobs ${JOBS}; ${cpus().length} cores, node ${process.version}`)
  const submitter = await startQueueNode()
  const nodes: BuildNode[] = []
  const ref = await nixNamespace()
  try {
    for (let i = 0; i < NODES; i++) {
      nodes.push(await startBuildNode({ publish: PUBLISH, peers: () => nodes.map(n => n.nix), config: { maxBuilds: SLOTS, settleMs: SETTLE, leaseMs: LEASE, pollMs: 1000, jitterMs: JITTER, maxBatch: MAX_BATCH, decisionLog: 100_000 } }))
    }
    await mesh([submitter, ...nodes.map(n => n.q)])
    const tag = randomBytes(4).toString('hex')
    const expr = (prefix: string, count: number): string =>
      `[ ${Array.from({ length: count }, (_, i) => `(${drvExpr(`${prefix}${i}-${tag}`, `echo ${i} > $out/file`)})`).join(' ')} ]`
    let t = performance.now()
    const drvs = await instantiate(expr('b', N), [ref, ...nodes.map(n => n.ns)])
    console.log(`instantiated ${drvs.length} derivations in 4 stores: ${(performance.now() - t).toFixed(0)} ms (not timed below)`)

    // reference: one nix-store --realise of all N in its own store
    t = performance.now()
    const r = await ref.exec('nix-store', ['--realise', '--max-jobs', String(JOBS), '--option', 'substituters', '', ...drvs])
    const refMs = performance.now() - t
    if (r.code !== 0) throw new Error(`reference realise failed: ${r.stderr.toString().slice(-2000)}`)
    console.log(`reference nix-store --realise (${N} drvs, --max-jobs ${JOBS}, no substituters): ${refMs.toFixed(0)} ms`)

    // the swarm: submit all from a node that does not build, until every one succeeded; each
    // submit lists its input derivations, as a node's submit reads them from its store
    const read = await nodes[0].nix.store.readDerivations?.(drvs)
    const inputsOf = (drv: string): string[] | undefined => { const d = read?.get(drv); return d === undefined || d instanceof Error ? undefined : [...d.inputDrvs.keys()] }
    for (const n of nodes) await n.scheduler.start()
    t = performance.now()
    const ids = await submitter.queue.submit(drvs.map(drv => ({ drv, system: 'x86_64-linux', inputs: inputsOf(drv) })))
    await waitFor('the swarm to build everything', () => ids.every(id => submitter.queue.get(id)?.phase === 'succeeded'), 30 * 60_000)
    const swarmMs = performance.now() - t
    const recs = ids.map(id => submitter.queue.get(id)!)
    const perNode = new Map<string, number>()
    let doubles = 0
    for (const rec of recs) {
      const w = rec.attempts.find(a => a.result?.outcome === 'success')!
      perNode.set(w.claimer, (perNode.get(w.claimer) ?? 0) + 1)
      if (rec.attempts.filter(a => a.started).length > 1) doubles++
    }
    const lost = nodes.reduce((k, n) => k + n.scheduler.status().decisions.filter(d => d.action === 'lost').length, 0)
    console.log(`swarm (${NODES} schedulers, submit → all succeeded on the submitter): ${swarmMs.toFixed(0)} ms; builds per node ${[...perNode.values()].join('/')}; double builds ${doubles}; lost claims in the last decisions ${lost}`)
    // where a slot's time went: mean ms per successful attempt in each phase
    const sums = new Map<string, number>()
    let finals = 0
    for (const n of nodes) {
      for (const d of n.scheduler.status().decisions) {
        if (d.action !== 'succeeded' || d.phases === undefined) continue
        finals++
        for (const [k, v] of Object.entries(d.phases)) sums.set(k, (sums.get(k) ?? 0) + v)
      }
    }
    // the builds of one batch settle, wait and build side by side: their phases overlap
    const batches = nodes.map(n => n.scheduler.status().batching)
    const nb = batches.reduce((a, b) => a + b.batches, 0)
    console.log(`per build, mean ms by phase (overlapping within a batch): ${[...sums].map(([k, v]) => `${k} ${(v / finals).toFixed(0)}`).join(', ')}`)
    console.log(`batches handed to the builders: ${nb}, mean ${(batches.reduce((a, b) => a + b.builds, 0) / Math.max(1, nb)).toFixed(1)} builds each; ${nodes[0].nix.builder.buildMany !== undefined ? 'one daemon client per batch (buildMany)' : 'built one by one (no buildMany)'}`)
    console.log(`RATIO swarm / reference: ${(swarmMs / refMs).toFixed(2)} (target ≤ 1.2)`)
    const lat = recs.map(claimLatency)
    console.log(`submit-to-claim under load (queueing behind ${NODES * SLOTS} slots included): p50 ${pct(lat, 50)} ms, p95 ${pct(lat, 95)} ms`)
    const order = [...recs].sort((a, b) => compareStamp(a.submitHlc, b.submitHlc))
    console.log(`first-claimed build waited ${claimLatency(order[0])} ms`)

    // idle swarm: one build at a time, submit-to-claim is the scheduler's own reaction time
    const singles = await instantiate(expr('s', 20), nodes.map(n => n.ns))
    const idle: number[] = []
    for (const drv of singles) {
      const [id] = await submitter.queue.submit([{ drv, system: 'x86_64-linux' }])
      await waitFor('the single build', () => submitter.queue.get(id)?.phase === 'succeeded', 60_000)
      idle.push(claimLatency(submitter.queue.get(id)!))
    }
    console.log(`submit-to-claim on an idle swarm (${idle.length} single submits; HLC stamps of the submit and winning claim ops): p50 ${pct(idle, 50)} ms, p95 ${pct(idle, 95)} ms`)
  } finally {
    for (const n of nodes) await stopBuildNode(n)
    await submitter.stop()
    await ref.destroy()
  }
}

main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1) })
