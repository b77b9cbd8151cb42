// Queue benchmark, real processes: submit-to-visible latency across 3 `guix-swarm join`
// processes on 127.0.0.1 (the in-process numbers are in bench/queue.ts). A build is submitted
// on A through POST /api/builds; B and C are polled (GET /api/builds/:id every POLL_MS) until
// both know it. Also a few end-to-end runs through the `guix-swarm submit` CLI process.
// Run: tsc -p tsconfig.json && node dist/bench/queue-latency.js  (QUEUE_LATENCY_N to change 100)
import { runCli } from '../test/helpers/cli.js'
import { removeDir, startBootstrapped, testSwarmName, waitForFullMesh, type TestNode } from '../test/helpers/swarm.js'

const N = Number(process.env.QUEUE_LATENCY_N ?? 100)
const CLI_RUNS = 5
const POLL_MS = 2

function drvPath (i: number): string {
  const h = (i.toString(32) + 'x'.repeat(32)).slice(0, 32).replace(/[eotu]/g, 'x')
  return `/gnu/store/${h}-latency-${i}.drv`
}

async function known (node: TestNode, id: string): Promise<boolean> {
  const res = await fetch(`${node.url}/api/builds/${id}`)
  await res.arrayBuffer()
  return res.ok
}

/** Resolves with the time (performance.now) when `node` first answers for build `id`. */
async function seenAt (node: TestNode, id: string): Promise<number> {
  for (;;) {
    if (await known(node, id)) return performance.now()
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

async function submit (node: TestNode, drv: string): Promise<string> {
  const res = await fetch(`${node.url}/api/builds`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ derivations: [drv], system: 'x86_64-linux' }) })
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { ids: string[] }).ids[0]
}

function summary (lat: number[]): string {
  const s = [...lat].sort((a, b) => a - b)
  const at = (q: number): string => s[Math.min(s.length - 1, Math.floor(q * s.length))].toFixed(1)
  return `median ${at(0.5)} ms, p95 ${at(0.95)} ms, max ${s[s.length - 1].toFixed(1)} ms`
}

async function main (): Promise<void> {
  const swarm = testSwarmName()
  const base = ['--swarm', swarm, '--no-mdns']
  const nodes: TestNode[] = []
  try {
    await startBootstrapped(nodes, 3, base)
    const a = nodes[0]
    await waitForFullMesh(nodes)
    await new Promise((resolve) => setTimeout(resolve, 1500)) // let the gossipsub mesh form
    const [, b, c] = nodes
    console.log(`submit-to-visible across 3 node processes (127.0.0.1), ${N} submits on A, B and C polled every ${POLL_MS} ms`)

    // what the submitter waits for: POST returns once the op is on A's disk and published
    const ack: number[] = []
    const lat: number[] = []
    for (let i = 0; i < N; i++) {
      const t0 = performance.now()
      const id = await submit(a, drvPath(i))
      ack.push(performance.now() - t0)
      const done = await Promise.all([seenAt(b, id), seenAt(c, id)])
      lat.push(Math.max(...done) - t0)
    }
    console.log(`  POST /api/builds answered:            ${summary(ack)}`)
    console.log(`  visible on both B and C (from POST):  ${summary(lat)}`)

    // through the CLI: a whole `guix-swarm submit` process (node start-up dominates)
    const cli: number[] = []
    for (let i = 0; i < CLI_RUNS; i++) {
      const t0 = performance.now()
      const r = await runCli(['submit', drvPath(1_000_000 + i), '--system', 'x86_64-linux', '--api', a.url])
      if (r.code !== 0) throw new Error(`guix-swarm submit: ${r.stderr}`)
      const id = r.stdout.trim()
      await Promise.all([seenAt(b, id), seenAt(c, id)])
      cli.push(performance.now() - t0)
    }
    console.log(`  CLI submit to visible on B and C (${CLI_RUNS} runs): ${summary(cli)}`)
  } finally {
    await Promise.all(nodes.map(async (n) => await n.stop()))
    await Promise.all(nodes.map(async (n) => await removeDir(n.dataDir)))
  }
}

await main()
