// SwarmNode in-process: the service seam, capability updates, metrics, and a busy libp2p port.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SwarmNode, SERVICES, mergeConfig, parseCapabilities, type CapabilitiesService, type NodeComponents, type NodeService } from '../../src/node/index.js'
import { sendJson } from '../../src/http/index.js'
import { waitFor } from '../helpers/swarm.js'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'

const swarm = `inproc${process.pid}`

async function makeNode (dir: string, extra: Partial<Parameters<typeof mergeConfig>[1]['flags']> = {}, services = SERVICES): Promise<SwarmNode> {
  const config = mergeConfig(dir, { flags: { swarm, listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', mdns: false, builder: 'none', maxBuilds: 2, ...extra } })
  return new SwarmNode(config, { services, detectBuilder: async () => ({ kind: 'nix', systems: ['x86_64-linux'] }) })
}

/** A stand-in for a later issue's service: owns a sublevel, a route and a status entry. */
function echoService (c: NodeComponents): NodeService {
  const db = c.db.sublevel<string, string>('echo', {})
  return {
    name: 'echo',
    async start () {
      await db.put('started', 'yes')
      c.http.route('GET', '/api/echo/:word', (_req, res, params) => { sendJson(res, 200, { word: params.word }) })
    },
    async stop () { c.http.unroute('/api/echo/:word') },
    status: async () => ({ started: await db.get('started'), protocol: c.protocolId('echo', '1.0.0'), topic: c.topic('echo') })
  }
}

test('services plug in through the seam; capabilities spread and update; metrics are Prometheus text', async () => {
  const dirs = await Promise.all([0, 1].map(async () => await mkdtemp(join(tmpdir(), 'gs-inproc-'))))
  const a = await makeNode(dirs[0], {}, [...SERVICES, echoService])
  const b = await makeNode(dirs[1], { bootstrap: [] })
  try {
    await a.start()
    await b.start()
    await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])

    const st = await (await fetch(`${a.url}/api/status`)).json() as Record<string, unknown>
    assert.deepEqual(st.echo, { started: 'yes', protocol: `/guix-swarm/${swarm}/echo/1.0.0`, topic: `/guix-swarm/${swarm}/echo` })
    assert.equal(st.builder, 'nix')
    assert.equal(st.storeDir, '/nix/store')
    assert.deepEqual(await (await fetch(`${a.url}/api/echo/hi`)).json(), { word: 'hi' })

    const capsA = a.service<CapabilitiesService>('capabilities')
    const capsB = b.service<CapabilitiesService>('capabilities')
    assert.ok(capsA != null && capsB != null, 'both nodes run the capabilities service')
    await waitFor(() => capsB.peers().get(a.peerId.toString())?.freeSlots === 2, 'b to learn a\'s capabilities')
    assert.deepEqual(capsB.peers().get(a.peerId.toString())?.systems, ['x86_64-linux'])
    assert.equal(capsA.peers().get(b.peerId.toString())?.builder, 'nix')

    await capsA.update({ freeSlots: 1 })
    await waitFor(() => capsB.peers().get(a.peerId.toString())?.freeSlots === 1, 'b to see a\'s new free slots')

    const metrics = await fetch(`${a.url}/metrics`)
    assert.match(metrics.headers.get('content-type') ?? '', /text\/plain/)
    const text = await metrics.text()
    assert.match(text, /^guix_swarm_peers 1$/m)
    assert.match(text, /^process_cpu_user_seconds_total /m)

    await b.stop()
    await waitFor(() => !capsA.peers().has(b.peerId.toString()), 'a to forget b after it left')
  } finally {
    await a.stop()
    await b.stop()
    await Promise.all(dirs.map(async (d) => await rm(d, { recursive: true, force: true })))
  }
})

test('a busy libp2p port is a ListenError, and the failed node releases its data dir', async () => {
  const dirs = await Promise.all([0, 1].map(async () => await mkdtemp(join(tmpdir(), 'gs-inproc-'))))
  const a = await makeNode(dirs[0])
  try {
    await a.start()
    const port = /\/tcp\/(\d+)/.exec(a.libp2p.getMultiaddrs()[0].toString())?.[1]
    const b = await makeNode(dirs[1], { listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    await assert.rejects(b.start(), { name: 'ListenError', message: /already in use/ })
    // Everything b took is released: a fresh node starts on the same data dir.
    const b2 = await makeNode(dirs[1])
    await b2.start()
    await b2.stop()
  } finally {
    await a.stop()
    await Promise.all(dirs.map(async (d) => await rm(d, { recursive: true, force: true })))
  }
})

test('malformed capability messages are refused', () => {
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
  const good = { builder: 'guix', systems: ['x86_64-linux'], maxBuilds: 4, freeSlots: 4, storeDir: '/gnu/store', version: '0.1.0' }
  assert.deepEqual(parseCapabilities(enc(good)), good)
  assert.throws(() => parseCapabilities(enc({ ...good, builder: 'make' })), { name: 'CapabilitiesMessageError' })
  assert.throws(() => parseCapabilities(enc({ ...good, freeSlots: -1 })), { name: 'CapabilitiesMessageError' })
  assert.throws(() => parseCapabilities(new TextEncoder().encode('{')), { name: 'CapabilitiesMessageError' })
  assert.throws(() => parseCapabilities(new Uint8Array(20_000)), /exceeds/)
})

test('the host is ready for later issues: DHT provide/find and gossip between nodes', async () => {
  const dirs = await Promise.all([0, 1].map(async () => await mkdtemp(join(tmpdir(), 'gs-inproc-'))))
  const a = await makeNode(dirs[0])
  const b = await makeNode(dirs[1])
  try {
    await a.start()
    await b.start()
    await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
    const topic = a.components?.topic('test') ?? ''
    assert.equal(topic, `/guix-swarm/${swarm}/test`)

    // DHT: b finds a as the provider of a CID a announced (loopback addresses kept).
    const cid = CID.create(1, raw.code, await sha256.digest(new TextEncoder().encode('a nar')))
    // Identify has run both ways once capabilities are exchanged, so each DHT knows the other.
    await waitFor(() => a.service<CapabilitiesService>('capabilities')?.peers().has(b.peerId.toString()) === true &&
      b.service<CapabilitiesService>('capabilities')?.peers().has(a.peerId.toString()) === true, 'identify both ways')
    // Kad adds a peer to its routing table a moment after identify, so the first provide may
    // reach no one; later issues re-provide periodically, the test retries the same way.
    const found = await waitFor(async () => {
      await a.libp2p.contentRouting.provide(cid, { signal: AbortSignal.timeout(5_000) })
      for await (const p of b.libp2p.contentRouting.findProviders(cid, { signal: AbortSignal.timeout(5_000) })) {
        assert.ok(p.multiaddrs.some((m) => m.toString().startsWith('/ip4/127.0.0.1/')), 'provider addresses kept')
        return p.id.toString()
      }
      return undefined
    }, 'b to find a as provider', 20_000, 100)
    assert.equal(found, a.peerId.toString())

    // Gossip: b receives what a publishes on a swarm topic.
    const got = Promise.withResolvers<string>()
    b.libp2p.services.pubsub.addEventListener('message', (evt) => {
      if (evt.detail.topic === topic) got.resolve(new TextDecoder().decode(evt.detail.data))
    })
    b.libp2p.services.pubsub.subscribe(topic)
    a.libp2p.services.pubsub.subscribe(topic)
    await waitFor(() => a.libp2p.services.pubsub.getSubscribers(topic).length > 0, 'a to see b subscribed')
    await a.libp2p.services.pubsub.publish(topic, new TextEncoder().encode('hello'))
    assert.equal(await got.promise, 'hello')
  } finally {
    await a.stop()
    await b.stop()
    await Promise.all(dirs.map(async (d) => await rm(d, { recursive: true, force: true })))
  }
})
