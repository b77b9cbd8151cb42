// Swarm build benchmark, real processes: N trivial derivations instantiated in a submitter's store
// (`join --builder none`), built by 3 `join --builder nix` nodes, each in its own Nix store, the
// .drv files fetched through the swarm and outputs published as signed NARs; versus one
// `nix-store --realise` of the same N in a 5th store with as many jobs as the swarm has slots,
// same run. Also submit-to-claim latency and where a builder's time goes (phases per attempt).
// (bench/swarm.ts runs the schedulers in-process; this one goes through the whole node.)
// Run: node --import tsx bench/swarm-nodes.ts. Env: SWARM_NODES_N (200, as the issue asks), SWARM_NODES_SLOTS (per node, 2),
// SWARM_NODES_LOGS=DIR (each node's stderr into DIR/node-K.log; with DEBUG=guix-swarm:* for detail),
// SWARM_NODES_PREPUBLISH=1 (publish the .drv files and await their DHT records before the timed
// submit, as runs before 2026-11-28 02:15 did; by default the submit publishes them, as
// `guix-swarm submit` does, and that is timed), SWARM_NODES_THREE=1 (see THREE),
// SWARM_NODES_WARMUP=K (see WARMUP).
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { BinaryCache, SMALL_NAR_BYTES } from '../src/cache/index.js'
import { nixStore, processTree } from '../src/daemon/index.js'
import type { BuildView } from '../src/crdt/index.js'
import { ApiClient, nodeEvents } from '../src/cli/client.js'
import { nixNamespace } from '../test/helpers/nix-ns.js'
import { waitFor, waitForFullMesh } from '../test/helpers/swarm.js'
import { cleanup, drvExpr, getJson, instantiate, postJson, prepare, startMember, type Prepared, type SwarmMember } from '../test/build/harness.js'

const N = Number(process.env.SWARM_NODES_N ?? 200)
const SLOTS = Number(process.env.SWARM_NODES_SLOTS ?? 2)
const LOGS = process.env.SWARM_NODES_LOGS
/** 1: publish the .drv files through /api/publish (awaiting their DHT records) before the timed submit, as earlier runs did. */
const PREPUBLISH = process.env.SWARM_NODES_PREPUBLISH === '1'
/**
 * 1: the swarm is 3 nodes in all, each building, the first also submitting (the issue's "3-node
 * swarm" read literally). Default: a 4th node that only submits, as in the end-to-end tests.
 */
const THREE = process.env.SWARM_NODES_THREE === '1'
/**
 * Builds the swarm makes before the timed ones (default 0: fresh nodes, the headline figure).
 * A build farm's nodes run for days; this shows what their JIT warm-up costs the fresh run.
 */
const WARMUP = Number(process.env.SWARM_NODES_WARMUP ?? 0)

/** Busy and total CPU time of the whole machine so far, in seconds (/proc/stat; Linux only). */
async function machineCpu (): Promise<{ busy: number, total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]
  const ticks = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = ticks[3] + (ticks[4] ?? 0) // idle + iowait
  const total = ticks.reduce((a, b) => a + b, 0)
  return { busy: (total - idle) / 100, total: total / 100 }
}

/**
 * CPU seconds of a process itself and of its children (build and store processes): the reaped
 * ones (its cutime) plus the ones still running, such as the long-lived `nix-store --serve`
 * connections, which are only reaped when the node stops; each live descendant counts with its
 * own CPU and its reaped children's.
 */
async function processCpu (pid: number | undefined): Promise<{ own: number, children: number }> {
  if (pid === undefined) return { own: 0, children: 0 }
  const [top, ...descendants] = await processTree(pid)
  if (top === undefined) return { own: 0, children: 0 }
  return { own: top.cpu, children: descendants.reduce((sum, d) => sum + d.cpu + d.reapedCpu, top.reapedCpu) }
}

/** Resident memory of a process now, MiB (/proc/<pid>/status): a spawn's fork copies the page tables of all of it. */
async function rssMiB (pid: number | undefined): Promise<number> {
  const status = pid === undefined ? '' : await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  return Math.round(Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0) / 1024)
}

async function swarmCpu (members: SwarmMember[]): Promise<{ own: number, children: number, each: number[] }> {
  const all = await Promise.all(members.map(async (m) => await processCpu(m.proc.pid)))
  return { own: all.reduce((a, c) => a + c.own, 0), children: all.reduce((a, c) => a + c.children, 0), each: all.map((c) => c.own) }
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}

/** Until none of `nodes` has outputs left to announce in the DHT. */
async function announced (nodes: SwarmMember[], what: string): Promise<void> {
  await waitFor(async () => {
    for (const b of nodes) {
      const s = await getJson<{ substitutes?: { unannounced?: number } }>(b, '/api/status')
      if ((s.substitutes?.unannounced ?? 0) > 0) return false
    }
    return true
  }, what, 5 * 60_000, 100)
}

interface Decision { build: string, action: string, phases?: Record<string, number> }

async function main (): Promise<void> {
  const prepared: Prepared[] = []
  const members: SwarmMember[] = []
  try {
    for (let i = 0; i < (THREE ? 3 : 4); i++) prepared.push(await prepare())
    const builderArgs = ['--max-builds', String(SLOTS), '--lease', '20']
    const submitter = await startMember(prepared[0], THREE ? { builder: 'nix', trust: prepared, args: builderArgs } : { builder: 'none', trust: prepared })
    members.push(submitter)
    const others = await Promise.all(prepared.slice(1).map(async (p) => await startMember(p, {
      builder: 'nix', bootstrap: submitter, trust: prepared, args: builderArgs
    })))
    members.push(...others)
    const builders = THREE ? members : others
    await waitForFullMesh(members, 30_000)
    if (WARMUP > 0) {
      // a swarm that has been at work: its nodes' code is compiled and optimised, as a build
      // farm's long-running nodes are; the timed builds below are others
      const w = randomBytes(4).toString('hex')
      const warm = await instantiate(prepared[0].ns, `[ ${Array.from({ length: WARMUP }, (_, i) => `(${drvExpr(`warmup-${i}-${w}`, `echo ${i} > $out/file`)})`).join(' ')} ]`)
      const w0 = performance.now()
      const { ids: warmIds } = await postJson<{ ids: string[] }>(submitter, '/api/builds', { derivations: warm })
      await waitFor(async () => {
        const v = await getJson<{ builds: BuildView[] }>(submitter, `/api/builds?state=succeeded&limit=${WARMUP + N}`)
        return v.builds.filter((b) => warmIds.includes(b.id)).length >= WARMUP ? true : undefined
      }, `${WARMUP} warm-up builds`, 30 * 60_000, 500)
      await announced(others, 'warm-up outputs announced')
      console.log(`  warm-up: ${WARMUP} other builds first, ${((performance.now() - w0) / 1000).toFixed(1)} s with their announcements`)
    }
    const n = randomBytes(4).toString('hex')
    const expr = `[ ${Array.from({ length: N }, (_, i) => `(${drvExpr(`bench-${i}-${n}`, `echo ${i} > $out/file`)})`).join(' ')} ]`
    const drvs = await instantiate(prepared[0].ns, expr)

    // The store + cache part of publishing (path infos, NARs, compression, narinfos) alone, on the
    // same store through a separate client, to tell it from the node's DHT announcements.
    const scratch = await mkdtemp(join(tmpdir(), 'gs-bench-cache-'))
    let cacheMs: number
    try {
      const store = nixStore({ runner: prepared[0].ns.runner, env: prepared[0].ns.env, realStoreDir: prepared[0].ns.realStoreDir })
      const c0 = performance.now()
      // as the node's cache is set up (small NARs kept uncompressed), unsigned
      await new BinaryCache({ dir: scratch, storeDir: '/nix/store', uncompressedBelow: SMALL_NAR_BYTES }).addClosure(store, drvs)
      cacheMs = performance.now() - c0
    } finally {
      await rm(scratch, { recursive: true, force: true })
    }
    // the submitter pushes every change (/api/events), so nothing polls it while the swarm builds
    // (a status request every 100 ms cost the submitter ≈13% of its CPU, and this process more)
    const watch = new AbortController()
    const events = nodeEvents(new ApiClient(submitter.url), undefined, watch.signal)
    const ready = await events.next()
    if (ready.done === true || ready.value.event !== 'ready') throw new Error('the submitter\'s event stream did not open')
    // the timed builds' ids are known once the submit answers; their events may come before
    const succeeded = new Set<string>()
    let timed: string[] | undefined
    const done = (): boolean => timed !== undefined && timed.every((id) => succeeded.has(id))
    const allBuilt = (async () => {
      for await (const e of events) {
        if (e.event !== 'build') continue
        const v = JSON.parse(e.data) as BuildView
        if (v.state === 'succeeded') succeeded.add(v.id)
        if (done()) return
      }
      throw new Error(`the submitter's event stream ended with ${succeeded.size} builds succeeded`)
    })()
    allBuilt.catch(() => {}) // awaited below
    const giveUp = setTimeout(() => watch.abort(new Error(`${N} builds not done in 30 minutes`)), 30 * 60_000)
    const load0 = loadavg()[0]
    const t0 = performance.now()
    if (PREPUBLISH) await postJson(submitter, '/api/publish', { paths: drvs }, 200)
    const t1 = performance.now()
    const cpu1 = await machineCpu()
    const procs1 = await swarmCpu(members)
    // otherwise the submit publishes the .drv closures itself, as `guix-swarm submit` does
    const { ids } = await postJson<{ ids: string[] }>(submitter, '/api/builds', { derivations: drvs })
    const tSubmitted = performance.now()
    timed = ids
    try {
      if (!done()) await allBuilt
    } finally {
      clearTimeout(giveUp)
      watch.abort()
    }
    const t2 = performance.now()
    const cpu2 = await machineCpu()
    const procs2 = await swarmCpu(members)
    // what each node put on the queue topic: messages sent and the ops in them
    const gossip = await Promise.all(members.map(async (m) => (await getJson<{ queue: { stats: { gossipMessages: number, gossipPublished: number } } }>(m, '/api/status')).queue.stats))
    const rss = await Promise.all(members.map(async (m) => await rssMiB(m.proc.pid)))
    // Builders announce outputs in the DHT once they are idle (at most a minute later): wait for
    // those walks, so the reference below does not share the machine with them.
    // Only the nodes that did not submit: the submitter's .drv files wait for its next re-provide
    // round, hours away, so a submitting builder's count never gets to 0.
    await announced(others, 'outputs announced')
    const t3 = performance.now()
    const cpu3 = await machineCpu()

    // the same N, one nix-store --realise, as many jobs as the swarm's slots, in a fresh store
    const ref = await nixNamespace()
    let refMs: number
    let refCpu0 = { busy: 0, total: 0 }
    let refCpu1 = refCpu0
    try {
      const refDrvs = await instantiate(ref, expr)
      const r0 = performance.now()
      refCpu0 = await machineCpu()
      const r = await ref.exec('nix-store', ['--realise', '--max-jobs', String(3 * SLOTS), '--option', 'substituters', '', ...refDrvs])
      refMs = performance.now() - r0
      refCpu1 = await machineCpu()
      if (r.code !== 0) throw new Error(r.stderr.toString())
    } finally {
      await ref.destroy()
    }

    const views = (await getJson<{ builds: BuildView[] }>(submitter, '/api/builds?state=succeeded&limit=100000')).builds.filter((b) => ids.includes(b.id))
    if (views.length !== N) throw new Error(`${views.length} of the ${N} builds succeeded`)
    const claim = views.map((v) => (v.attempts.find((a) => a.state === 'succeeded')?.claimedAt ?? 0) - v.submittedAt)
    const phases: Record<string, number[]> = {}
    for (const b of builders) {
      const s = await getJson<{ scheduler?: { decisions?: Decision[] } }>(b, '/api/status')
      for (const d of s.scheduler?.decisions ?? []) {
        if (d.action !== 'succeeded' || d.phases === undefined) continue
        for (const [k, v] of Object.entries(d.phases)) (phases[k] ??= []).push(v)
      }
    }
    const swarmMs = t2 - t1
    console.log(`${N} trivial derivations, 3 building node processes × ${SLOTS} slot(s), separate Nix stores, ${THREE ? 'the first also submitting' : 'submitted from a 4th node'}`)
    if (PREPUBLISH) {
      console.log(`  publish of the ${N} .drv files (submitter, before submit): ${(t1 - t0).toFixed(0)} ms (load average ${load0.toFixed(1)})`)
      console.log(`    of which store + cache (same store, separate client, just before): ${cacheMs.toFixed(0)} ms; the rest is the node's announcements`)
    } else {
      console.log(`  the submit publishes the ${N} .drv closures (load average ${load0.toFixed(1)}): the request took ${(tSubmitted - t1).toFixed(0)} ms; store + cache alone (same store, separate client, just before): ${cacheMs.toFixed(0)} ms`)
    }
    console.log(`  swarm, submit → all succeeded: ${swarmMs.toFixed(0)} ms`)
    const busy = cpu2.busy - cpu1.busy
    console.log(`    machine CPU meanwhile: ${busy.toFixed(1)} s busy of ${(cpu2.total - cpu1.total).toFixed(1)} s (${cpus().length} cores, ${(100 * busy / (cpu2.total - cpu1.total)).toFixed(0)}% busy)`)
    console.log(`    of which the ${members.length} node processes ${(procs2.own - procs1.own).toFixed(1)} s` +
      ` (${THREE ? 'submitting builder' : 'submitter'} ${(procs2.each[0] - procs1.each[0]).toFixed(1)} s, ${THREE ? 'others' : 'builders'} ${procs2.each.slice(1).map((c, i) => (c - procs1.each[i + 1]).toFixed(1)).join(' / ')} s),` +
      ` the store and build processes they ran ${(procs2.children - procs1.children).toFixed(1)} s`)
    console.log(`    queue gossip sent, messages / ops, per node: ${gossip.map((g) => `${g.gossipMessages} / ${g.gossipPublished}`).join(', ')}`)
    console.log(`    node processes' resident memory at the end: ${rss.join(' / ')} MiB`)
    console.log(`  then the builders' DHT records of the outputs: ${(t3 - t2).toFixed(0)} ms more (machine CPU ${(cpu3.busy - cpu2.busy).toFixed(1)} s busy)`)
    console.log(`  nix-store --realise --max-jobs ${3 * SLOTS}, one store: ${refMs.toFixed(0)} ms`)
    console.log(`    machine CPU meanwhile: ${(refCpu1.busy - refCpu0.busy).toFixed(1)} s busy`)
    console.log(`  ratio swarm / nix-store: ${(swarmMs / refMs).toFixed(2)} (machine CPU: ${(busy / (refCpu1.busy - refCpu0.busy)).toFixed(1)})`)
    console.log(`  submit-to-claim ms: p50 ${pct(claim, 50)}, p95 ${pct(claim, 95)}`)
    for (const [k, v] of Object.entries(phases)) console.log(`  phase ${k.padEnd(10)} ms (last ${v.length} attempts): p50 ${pct(v, 50).toFixed(0)}, p95 ${pct(v, 95).toFixed(0)}`)
  } finally {
    if (LOGS !== undefined) {
      await mkdir(LOGS, { recursive: true })
      for (const [k, m] of members.entries()) await writeFile(join(LOGS, `node-${k}.log`), m.stderr())
    }
    await cleanup(members, prepared)
  }
}

await main()
