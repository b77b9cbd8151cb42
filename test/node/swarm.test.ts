// Real `guix-swarm join` processes on 127.0.0.1 finding each other.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers/cli.js'
import { apiPeers, exited, removeDir, startNode, testSwarmName, waitFor, waitForFullMesh, type TestNode } from '../helpers/swarm.js'

async function stopAll (nodes: TestNode[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => await n.stop()))
  await Promise.all(nodes.map(async (n) => await removeDir(n.dataDir)))
}

async function peersJson (node: TestNode): Promise<string[]> {
  const r = await runCli(['peers', '--json', '--data-dir', node.dataDir])
  assert.equal(r.code, 0, r.stderr)
  const body = JSON.parse(r.stdout) as { peers: Array<{ peerId: string, addresses: string[], builder: string, systems: string[], freeSlots: number }> }
  for (const p of body.peers) {
    assert.ok(p.addresses.length > 0, `peer ${p.peerId} has addresses`)
    assert.equal(p.builder, 'none')
  }
  return body.peers.map((p) => p.peerId).sort()
}

test('three nodes form a swarm through a bootstrap address; restart keeps the peer id', async () => {
  const swarm = testSwarmName()
  const nodes: TestNode[] = []
  try {
    const a = await startNode({ args: ['--swarm', swarm, '--no-mdns', '--max-builds', '3'] })
    nodes.push(a)
    assert.ok(a.addrs.length > 0, a.stdout())
    const boot = a.addrs[0]
    const [b, c] = await Promise.all([
      startNode({ args: ['--swarm', swarm, '--no-mdns', '--bootstrap', boot] }),
      startNode({ args: ['--swarm', swarm, '--no-mdns', '--bootstrap', boot] })
    ])
    nodes.push(b, c)
    await waitForFullMesh(nodes)

    // The CLI shows the same, and what peers advertise.
    await Promise.all(nodes.map(async (n) => {
      assert.deepEqual(await peersJson(n), nodes.filter((m) => m !== n).map((m) => m.peerId).sort())
    }))
    const table = await runCli(['peers', '--api', b.url])
    assert.equal(table.code, 0, table.stderr)
    assert.match(table.stdout, /^PEER +BUILDER +SYSTEMS +FREE\/SLOTS +ADDRESS$/m)
    assert.match(table.stdout, new RegExp(`^${a.peerId} +none +- +3/3 +/ip4/127\\.0\\.0\\.1/tcp/`, 'm'))
    const fromB = (await apiPeers(b)).find((p) => p.peerId === a.peerId)
    assert.equal(fromB?.maxBuilds, 3)
    assert.equal(fromB?.freeSlots, 3)

    // Restart c on the same data dir, this time with no bootstrap flag at all: same identity,
    // and it rejoins through the peers it remembers.
    const code = await c.stop()
    assert.equal(code, 0, c.stderr())
    await waitFor(async () => !(await apiPeers(a)).some((p) => p.peerId === c.peerId), 'a to notice c left')
    const c2 = await startNode({ dataDir: c.dataDir, args: ['--swarm', swarm, '--no-mdns'] })
    nodes[2] = c2
    assert.equal(c2.peerId, c.peerId)
    await waitForFullMesh(nodes)

    // Restart the bootstrap node itself on its address: the others dial it again.
    assert.equal(await a.stop(), 0, a.stderr())
    const a2 = await startNode({ dataDir: a.dataDir, args: ['--swarm', swarm, '--no-mdns', '--max-builds', '3', '--listen', boot.replace(/\/p2p\/.*$/, '')] })
    nodes[0] = a2
    assert.equal(a2.peerId, a.peerId)
    await waitForFullMesh(nodes)

    // SIGINT and SIGTERM both stop cleanly with exit code 0.
    nodes[0].proc.kill('SIGINT')
    assert.equal(await exited(nodes[0].proc), 0, nodes[0].stderr())
    assert.deepEqual(await Promise.all(nodes.map(async (n) => await n.stop())), [0, 0, 0])
  } finally {
    await stopAll(nodes)
  }
})

test('three nodes find each other by mDNS alone', async () => {
  const swarm = testSwarmName()
  const nodes: TestNode[] = []
  try {
    const started = await Promise.all([0, 1, 2].map(async () => await startNode({ args: ['--swarm', swarm, '--mdns-interval', '1000'] })))
    nodes.push(...started)
    await waitForFullMesh(nodes)
    await Promise.all(nodes.map(async (n) => {
      assert.deepEqual(await peersJson(n), nodes.filter((m) => m !== n).map((m) => m.peerId).sort())
    }))
  } finally {
    await stopAll(nodes)
  }
})

test('status reports the node; a second node on the same data dir or HTTP port is refused clearly', async () => {
  const a = await startNode({ args: ['--swarm', testSwarmName(), '--no-mdns', '--builder', 'auto'] })
  try {
    // The banner says what the node can build; status agrees.
    const builder = /^ {2}builder +(guix|nix|none)\b/m.exec(a.stdout())?.[1]
    assert.ok(builder, a.stdout())
    assert.match(a.stdout(), new RegExp(`^ {2}http +${a.url.replace(/[.]/g, '\\.')} `, 'm'))

    const s = await runCli(['status', '--json', '--api', a.url])
    assert.equal(s.code, 0, s.stderr)
    const st = JSON.parse(s.stdout) as { peerId: string, addresses: string[], builder: string, uptime: number, version: string, systems: string[], storeDir: string, capabilities: { protocol: string }, scheduler: { store?: { mode: string, opened: number } } }
    assert.equal(st.peerId, a.peerId)
    assert.deepEqual(st.addresses, a.addrs)
    assert.equal(st.builder, builder)
    if (builder !== 'none') assert.ok(st.systems.length > 0, 'status lists at least one system')
    assert.ok(Number.isInteger(st.uptime), `status uptime is an integer, got ${st.uptime}`)
    assert.match(st.version, /^\d+\.\d+\.\d+/)
    assert.match(st.capabilities.protocol, /^\/guix-swarm\/.+\/caps\/1\.0\.0$/)
    // a Nix store (this machine's) is asked over nix-store --serve
    if (st.storeDir === '/nix/store') assert.equal(st.scheduler.store?.mode, 'serve')

    const human = await runCli(['status'], { env: { ...process.env, GUIX_SWARM_API: a.url } })
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stdout, new RegExp(`peer id\\s+${a.peerId}`))
    if (st.storeDir === '/nix/store') assert.match(human.stdout, /^store +\/nix\/store \(asked over nix-store --serve; \d+ connection\(s\) opened so far\)$/m)

    const same = await runCli(['join', '--data-dir', a.dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--builder', 'none', '--no-mdns'], { timeoutMs: 30_000 })
    assert.equal(same.code, 1, same.stderr)
    assert.match(same.stderr, /data dir .* is already in use by another guix-swarm node \(pid \d+\)/)

    const port = new URL(a.url).port
    const other = await removeAfter(async (dir) => await runCli(['join', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', `127.0.0.1:${port}`, '--builder', 'none', '--no-mdns'], { timeoutMs: 30_000 }))
    assert.equal(other.code, 1, other.stderr)
    assert.match(other.stderr, new RegExp(`HTTP address 127\\.0\\.0\\.1:${port} is already in use`))

    // The refused node did not disturb the running one.
    const again = await fetch(`${a.url}/api/status`)
    assert.equal(again.status, 200)
  } finally {
    await stopAll([a])
  }
})

test('client commands exit 3 with a clear message when no node answers', async () => {
  const dir = await import('../helpers/swarm.js').then(async (m) => await m.tempDir())
  try {
    const none = await runCli(['status', '--data-dir', dir])
    assert.equal(none.code, 3)
    assert.match(none.stderr, /no running node found: .*api does not exist/)
    const dead = await runCli(['peers', '--api', 'http://127.0.0.1:1'])
    assert.equal(dead.code, 3)
    assert.match(dead.stderr, /no node answers at http:\/\/127\.0\.0\.1:1/)
  } finally {
    await removeDir(dir)
  }
})

async function removeAfter<T> (fn: (dir: string) => Promise<T>): Promise<T> {
  const { tempDir } = await import('../helpers/swarm.js')
  const dir = await tempDir()
  try {
    return await fn(dir)
  } finally {
    await removeDir(dir)
  }
}
