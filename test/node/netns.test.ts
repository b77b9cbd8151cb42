// Nodes on different (virtual) hosts: one network namespace each, joined by a bridge in a hub
// namespace, addresses in 10.231.7.0/24 that exist only inside these namespaces.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { removeDir, startNode, waitFor, type TestNode } from '../helpers/swarm.js'

const exec = promisify(execFile)

async function ip (...args: string[]): Promise<void> {
  await exec('ip', args)
}

/** Why namespaces cannot be used here, or false. Under REQUIRE_NIX=1 (CI) this must run. */
async function netnsSkip (): Promise<string | false> {
  const probe = `gsprobe${randomBytes(3).toString('hex')}`
  let reason: string | false = false
  if (process.getuid?.() !== 0) reason = 'network namespaces need root'
  else {
    try {
      await ip('netns', 'add', probe)
      await ip('netns', 'del', probe)
    } catch (err) {
      reason = `cannot create network namespaces here (${(err as Error).message.split('\n')[0]})`
    }
  }
  if (reason === false) return false
  if (process.env.REQUIRE_NIX === '1') throw new Error(`REQUIRE_NIX=1 but ${reason}`)
  process.stderr.write(`\n*** SKIPPING network-namespace test: ${reason} ***\n\n`)
  return reason
}

/** GET a node's API from inside its namespace (its HTTP front listens on the namespace's loopback). */
async function apiIn (ns: string, url: string): Promise<unknown> {
  const script = 'fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t), e => { console.error(e.message); process.exit(1) })'
  const { stdout } = await exec('ip', ['netns', 'exec', ns, process.execPath, '-e', script, url])
  return JSON.parse(stdout)
}

test('peers on different hosts find each other through a bootstrap address', { skip: await netnsSkip() }, async () => {
  const tag = randomBytes(3).toString('hex')
  const hub = `gs${tag}hub`
  const hosts = [1, 2, 3].map((i) => ({ ns: `gs${tag}h${i}`, addr: `10.231.7.${i}`, veth: `gs${tag}a${i}`, peer: `gs${tag}b${i}` }))
  const made: string[] = []
  const nodes: TestNode[] = []
  try {
    await ip('netns', 'add', hub)
    made.push(hub)
    await ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge')
    await ip('-n', hub, 'link', 'set', 'br0', 'up')
    for (const h of hosts) {
      await ip('netns', 'add', h.ns)
      made.push(h.ns)
      await ip('link', 'add', h.veth, 'netns', h.ns, 'type', 'veth', 'peer', 'name', h.peer, 'netns', hub)
      await ip('-n', hub, 'link', 'set', h.peer, 'master', 'br0')
      await ip('-n', hub, 'link', 'set', h.peer, 'up')
      await ip('-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', h.veth)
      await ip('-n', h.ns, 'link', 'set', h.veth, 'up')
      await ip('-n', h.ns, 'link', 'set', 'lo', 'up')
    }

    const args = (h: typeof hosts[number]): string[] => ['--no-mdns', '--listen', `/ip4/${h.addr}/tcp/0`, '--http', '127.0.0.1:0']
    const a = await startNode({ netns: hosts[0].ns, args: args(hosts[0]) })
    nodes.push(a)
    const boot = a.addrs.find((m) => m.startsWith(`/ip4/${hosts[0].addr}/`))
    assert.ok(boot, `a listens on ${hosts[0].addr}: ${a.stdout()}`)
    const others = await Promise.all(hosts.slice(1).map(async (h) => await startNode({ netns: h.ns, args: [...args(h), '--bootstrap', boot] })))
    nodes.push(...others)

    // Each lists the other two, reached at their own host's address (not loopback).
    await waitFor(async () => {
      for (let i = 0; i < nodes.length; i++) {
        const { peers } = await apiIn(hosts[i].ns, `${nodes[i].url}/api/peers`) as { peers: Array<{ peerId: string, addresses: string[], builder?: string }> }
        for (let j = 0; j < nodes.length; j++) {
          if (i === j) continue
          const p = peers.find((x) => x.peerId === nodes[j].peerId)
          if (p?.builder == null) return false
          if (!p.addresses.some((addr) => addr.startsWith(`/ip4/${hosts[j].addr}/tcp/`))) return false
        }
      }
      return true
    }, 'three namespaced nodes to see each other', 30_000, 300)
  } finally {
    await Promise.all(nodes.map(async (n) => await n.stop()))
    await Promise.all(nodes.map(async (n) => await removeDir(n.dataDir)))
    for (const ns of made.reverse()) await ip('netns', 'del', ns).catch(() => {})
  }
})
