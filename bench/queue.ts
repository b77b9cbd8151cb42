// Queue benchmark: (1) apply 100k signed submit ops (checked, and restored from disk
// unchecked); (2) sync a 100k-build history to a fresh joiner over loopback between two real
// libp2p nodes, the joiner in a child process so its peak RSS is its own; (3) submit-to-
// visible latency across 3 nodes. Run: npm run bench:queue (QUEUE_BENCH_N to change 100k;
// QUEUE_BENCH_CHILD_FLAGS='--cpu-prof' to profile the joiner; QUEUE_BENCH_ONLY=sync to run
// only part 2).
import '../src/polyfill.js'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { QueueReplica, signOp, type BuildChange, type Op } from '../src/crdt/index.js'
import { startNode, removeDir, connect, type TestNode } from '../test/crdt/net.js'
import { NODE_FLAGS } from '../src/cli/node-flags.js' // the joiner runs as the launcher starts a node

const N = Number(process.env.QUEUE_BENCH_N ?? 100_000)
const ONLY_SYNC = process.env.QUEUE_BENCH_ONLY === 'sync'
const AUTHORS = 4
const MiB = 1 << 20

function drvPath (i: number): string {
  return `/gnu/store/${i.toString(32).padStart(32, '0').replace(/[eotu]/g, 'x')}-pkg-${i}.drv`
}

async function makeOps (n: number): Promise<Op[]> {
  const keys = await Promise.all(Array.from({ length: AUTHORS }, async () => await generateKeyPair('Ed25519')))
  const ids = keys.map(k => peerIdFromPrivateKey(k).toString())
  const ops: Op[] = []
  const tips: Array<Uint8Array | undefined> = ids.map(() => undefined)
  const t0 = Date.now() - 3600_000
  for (let i = 0; i < n; i++) {
    const a = i % AUTHORS
    const op = signOp(keys[a], ids[a], Math.floor(i / AUTHORS) + 1, [t0 + Math.floor(i / 10), i % 10], {
      type: 'submit',
      payload: { drv: drvPath(i), system: i % 3 === 0 ? 'aarch64-linux' : 'x86_64-linux', priority: i % 11, tags: { jobset: 'bench' }, maxAttempts: 3 }
    }, tips[a])
    tips[a] = op.digest
    ops.push(op)
  }
  return ops
}

const ms = (t: number): string => `${(performance.now() - t).toFixed(0)} ms`

async function joiner (addr: string, expected: number): Promise<void> {
  const node = await startNode({ config: { syncIntervalMs: 0, snapshotIntervalMs: 0 } })
  const t0 = performance.now()
  await node.libp2p.dial(multiaddr(addr))
  await new Promise<void>(resolve => {
    // poll the cheap counter: status() hashes the whole state
    const check = (): void => { if (node.queue.replica.state.size >= expected) resolve(); else setTimeout(check, 5) }
    check()
  })
  const syncMs = performance.now() - t0
  const usage = process.resourceUsage()
  const result = { syncMs, maxRssMiB: usage.maxRSS / 1024, heapMiB: process.memoryUsage().heapUsed / MiB, builds: node.queue.status().builds, hash: node.queue.stateHash() }
  process.stdout.write(JSON.stringify(result) + '\n')
  await node.stop()
  await removeDir(node.dir)
  process.exit(0)
}

async function main (): Promise<void> {
  console.log(`queue benchmark, ${N} submit ops from ${AUTHORS} authors, node ${process.version}`)
  const t = performance.now()
  const ops = await makeOps(N)
  const signMs = performance.now() - t
  const bytes = ops.reduce((s, o) => s + o.bytes.length, 0)
  console.log(`sign ${N} ops: ${signMs.toFixed(0)} ms; mean op size ${(bytes / N).toFixed(0)} bytes`)

  // 1. apply, with every check (signature, skew, sequence)
  const reference = new QueueReplica()
  for (const op of ops) reference.restore(op, 0)
  const hash = reference.state.stateHash()
  if (!ONLY_SYNC) await localParts(ops)
  await syncPart(ops, hash)
  if (!ONLY_SYNC) await latencyPart()
}

async function localParts (ops: Op[]): Promise<void> {
  let t = performance.now()
  const checked = new QueueReplica()
  for (const op of ops) checked.ingest(op.bytes)
  const applyMs = performance.now() - t
  console.log(`apply ${N} ops checked: ${applyMs.toFixed(0)} ms = ${(N / applyMs * 1000).toFixed(0)} ops/s; builds ${checked.state.size}`)
  t = performance.now()
  const trusted = new QueueReplica()
  for (const op of ops) trusted.restore(op, 0)
  const restoreMs = performance.now() - t
  console.log(`restore ${N} decoded ops unchecked (restart path minus disk): ${restoreMs.toFixed(0)} ms = ${(N / restoreMs * 1000).toFixed(0)} ops/s`)
  t = performance.now()
  checked.state.stateHash()
  console.log(`stateHash over ${checked.state.size} builds: ${ms(t)}`)
  t = performance.now()
  const top = checked.state.claimable(['x86_64-linux'], Date.now(), 10)
  console.log(`claimable(x86_64-linux, limit 10): ${ms(t)} (first priority ${top[0]?.priority})`)
  t = performance.now()
  const q = checked.state.byState('queued', Date.now())
  console.log(`byState(queued) -> ${q.length}: ${ms(t)}`)
  t = performance.now()
  for (let i = 0; i < 1000; i++) checked.state.byDerivation(drvPath(i * 7))
  console.log(`byDerivation x1000: ${ms(t)}`)
}

async function syncPart (ops: Op[], hash: string): Promise<void> {
  // 2. sync to a fresh joiner in a child process
  const src = await startNode({ config: { syncIntervalMs: 0, snapshotIntervalMs: 0 } })
  const t = performance.now()
  for (const op of ops) src.queue.replica.ingest(op, { trusted: true })
  console.log(`source node loaded ${src.queue.status().builds} builds in ${ms(t)}; its RSS ${(process.memoryUsage().rss / MiB).toFixed(0)} MiB`)
  const self = fileURLToPath(import.meta.url)
  const child = spawn(process.execPath, [...process.execArgv, ...NODE_FLAGS, ...(process.env.QUEUE_BENCH_CHILD_FLAGS?.split(' ').filter((f) => f !== '') ?? []), self, 'joiner', src.libp2p.getMultiaddrs()[0].toString(), String(N)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  if (code !== 0) throw new Error(`joiner exited with ${String(code)}`)
  const j = JSON.parse(out.trim().split('\n').at(-1)!) as { syncMs: number, maxRssMiB: number, heapMiB: number, builds: number, hash: string }
  console.log(`sync ${j.builds} builds to a fresh joiner: ${j.syncMs.toFixed(0)} ms (${(j.builds / j.syncMs * 1000).toFixed(0)} ops/s), joiner peak RSS ${j.maxRssMiB.toFixed(0)} MiB (JS heap at the end ${j.heapMiB.toFixed(0)} MiB); hash ${j.hash === hash ? 'matches' : 'DIFFERS'} (targets: < 5000 ms, < 300 MiB)`)
  await src.stop()
  await removeDir(src.dir)
}

async function latencyPart (): Promise<void> {
  // 3. submit-to-visible latency across 3 nodes (full mesh)
  const nodes: TestNode[] = []
  for (let i = 0; i < 3; i++) nodes.push(await startNode({ config: { syncIntervalMs: 0 } }))
  await connect(nodes[0], nodes[1]); await connect(nodes[1], nodes[2]); await connect(nodes[0], nodes[2])
  await new Promise(resolve => setTimeout(resolve, 1500)) // let the gossipsub mesh form
  const lat: number[] = []
  for (let i = 0; i < 50; i++) {
    const seen = nodes.slice(1).map(n => new Promise<number>(resolve => {
      const on = (e: Event): void => {
        if ((e as CustomEvent<BuildChange>).detail.record.derivation === drvPath(900_000 + i)) { n.queue.removeEventListener('build', on); resolve(performance.now()) }
      }
      n.queue.addEventListener('build', on)
    }))
    const t1 = performance.now()
    await nodes[0].queue.submit([{ drv: drvPath(900_000 + i), system: 'x86_64-linux' }])
    const done = await Promise.all(seen)
    lat.push(Math.max(...done) - t1)
  }
  lat.sort((a, b) => a - b)
  console.log(`submit-to-visible on both other nodes (50 submits): median ${lat[25].toFixed(1)} ms, p95 ${lat[47].toFixed(1)} ms, max ${lat[49].toFixed(1)} ms`)
  for (const n of nodes) { await n.stop(); await removeDir(n.dir) }
}

if (process.argv[2] === 'joiner') await joiner(process.argv[3], Number(process.argv[4]))
else await main()
