// Build events (/api/events) on one in-process node, and `--follow` reading them: what a
// subscriber hears and when, the errors a bad subscription gets, and the fallback to asking
// when a node has no event stream.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { BuildEvents, SwarmNode, mergeConfig, queueOf } from '../../src/node/index.js'
import { QueueNodeService } from '../../src/node/queue.js'
import { ApiClient, nodeEvents, type ServerEvent } from '../../src/cli/client.js'
import { follow } from '../../src/cli/commands/queue.js'
import { CliError, EXIT } from '../../src/cli/errors.js'
import type { BuildView } from '../../src/crdt/index.js'
import { drvPath } from './api.js'

/** Reads a stream's events as they come; `next` waits for the next one (failing after a while). */
function reader (client: ApiClient, ids?: string[]): { next: (what: string) => Promise<ServerEvent>, close: () => Promise<void> } {
  const ac = new AbortController()
  const it = nodeEvents(client, ids, ac.signal)
  return {
    next: async (what) => {
      const r = await Promise.race([it.next(), new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`no event within 10 s: waited for ${what}`)), 10_000).unref())])
      assert.ok(r.done !== true, `the stream ended while waiting for ${what}`)
      return r.value
    },
    close: async () => {
      ac.abort(new Error('closed by the test'))
      await it.next().catch(() => {}) // a read still waiting ends with the abort
      await it.return(undefined)
    }
  }
}

const view = (e: ServerEvent): BuildView => {
  assert.equal(e.event, 'build', `a build event, got ${e.event}: ${e.data}`)
  return JSON.parse(e.data) as BuildView
}

test('build events on an in-process node', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-events-'))
  const config = mergeConfig(dir, { flags: { swarm: `qevents${process.pid}`, listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', mdns: false, builder: 'none', maxBuilds: 1 } })
  const node = new SwarmNode(config, {
    services: [(c) => new QueueNodeService(c, { config: { verifyWorkers: 0 }, events: { recheckMs: 100, maxSubscribers: 4 } })],
    detectBuilder: async () => ({ kind: 'nix', systems: ['x86_64-linux'] })
  })
  await node.start()
  const client = new ApiClient(node.url)
  const components = node.components
  assert.ok(components !== undefined, 'a started node has components')
  const queue = queueOf(components)
  assert.ok(queue !== undefined, 'the node runs a queue')
  const submit = async (...names: string[]): Promise<string[]> => await client.post<{ ids: string[] }>('/api/builds', { derivations: names.map((n) => drvPath(n)) }).then((r) => r.ids)
  try {
    await t.test('every build: ready first, then each change once per turn, as the build is after it', async () => {
      const all = reader(client)
      try {
        const ready = await all.next('ready')
        assert.equal(ready.event, 'ready', ready.data)
        assert.deepEqual(JSON.parse(ready.data), { builds: 0 })
        const [id] = await submit('ev-a')
        const queued = view(await all.next('the submit'))
        assert.equal(queued.id, id)
        assert.equal(queued.state, 'queued')
        // priority and cancel in one turn: one event, showing both
        await Promise.all([queue.setPriority(id, 5), queue.cancel(id)])
        const after = view(await all.next('the priority and cancel'))
        assert.equal(after.id, id)
        if (after.state !== 'canceled') {
          // applied in two turns: then the second event has both
          const later = view(await all.next('the cancel'))
          assert.equal(later.state, 'canceled')
          assert.equal(later.priority, 5)
        } else {
          assert.equal(after.priority, 5)
        }
      } finally {
        await all.close()
      }
    })

    await t.test('some builds (POST {ids}): their views now, then only their changes; a lapsed lease is sent with no op', async () => {
      const [a, b] = await submit('ev-b', 'ev-c')
      const some = reader(client, [a])
      try {
        assert.equal((await some.next('ready')).event, 'ready')
        const now = view(await some.next('the view of a now'))
        assert.equal(now.id, a)
        assert.equal(now.state, 'queued')
        await queue.cancel(b) // not subscribed: nothing
        await new Promise((resolve) => setTimeout(resolve, 350)) // rechecks meanwhile: nothing changed, nothing sent
        await queue.claim(a, 1, 300)
        const claimed = view(await some.next('the claim'))
        assert.equal(claimed.id, a, 'no event for a build not subscribed to')
        assert.equal(claimed.state, 'claimed')
        // no op marks the lapse: the recheck sees the view change
        const lapsed = view(await some.next('the lapsed lease'))
        assert.equal(lapsed.id, a)
        assert.equal(lapsed.state, 'queued')
        assert.equal(lapsed.attempts[0].state, 'lapsed')
      } finally {
        await some.close()
      }
      // the node hears of the close a moment later
      let open = -1
      for (let i = 0; i < 100 && open !== 0; i++) {
        open = (await client.get<{ queue: { eventStreams: number } }>('/api/status')).queue.eventStreams
        if (open !== 0) await new Promise((resolve) => setTimeout(resolve, 50))
      }
      assert.equal(open, 0, 'a closed stream is forgotten')
    })

    await t.test('bad subscriptions get named errors and open nothing', async () => {
      const ask = async (method: string, path: string, body?: unknown): Promise<{ status: number, name?: string }> => {
        const res = await fetch(node.url + path, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) })
        const json = await res.json() as { error?: { name: string } }
        return { status: res.status, name: json.error?.name }
      }
      assert.deepEqual(await ask('GET', '/api/events?ids=nosuchbuild000000'), { status: 404, name: 'UnknownBuildError' })
      assert.deepEqual(await ask('POST', '/api/events', { ids: 'x' }), { status: 400, name: 'InvalidSubscriptionError' })
      assert.deepEqual(await ask('POST', '/api/events', { ids: ['a/b'] }), { status: 400, name: 'InvalidSubscriptionError' })
      assert.deepEqual(await ask('POST', '/api/events', { ids: Array.from({ length: 10_001 }, (_, i) => `b${i}`) }), { status: 400, name: 'InvalidSubscriptionError' })
      const open = await Promise.all(Array.from({ length: 4 }, () => reader(client)))
      try {
        for (const r of open) assert.equal((await r.next('ready')).event, 'ready')
        assert.deepEqual(await ask('GET', '/api/events'), { status: 503, name: 'TooManySubscribersError' })
      } finally {
        for (const r of open) await r.close()
      }
      await assert.rejects(async () => { for await (const _ of nodeEvents(client, ['nosuchbuild000000'])) break }, (e: CliError) => e.exitCode === EXIT.FAILED && /UnknownBuildError/.test(e.message))
    })

    await t.test('--follow hears each change and exits by the builds\' end; 1 when one did not succeed', async () => {
      const [a, b] = await submit('ev-d', 'ev-e')
      const out: string[] = []
      const following = follow(client, [a, b], (s) => out.push(s))
      const settled = following.then(() => undefined, (e: unknown) => e)
      await new Promise((resolve) => setTimeout(resolve, 200))
      await queue.cancel(a)
      await queue.claim(b, 1, 60_000)
      await queue.result(b, 1, { outcome: 'success', outputs: {} })
      const err = await settled
      assert.ok(err instanceof CliError, `follow fails when a build was canceled, got ${String(err)}`)
      assert.equal(err.exitCode, EXIT.FAILED)
      assert.match(err.message, new RegExp(`${a} canceled`))
      const text = out.join('')
      assert.match(text, new RegExp(`${a} canceled`))
      assert.match(text, new RegExp(`${b} succeeded`))
      assert.match(text, new RegExp(`${b} attempt 1 claimed`))
    })

    await t.test('a stream that falls behind ends with overflow, and is forgotten', async () => {
      // the same queue behind a stream that may hold no unsent bytes at all
      const strict = new BuildEvents(queue, { maxBufferedBytes: -1 })
      strict.start()
      const server = createServer((req, res) => { strict.handle(req, res, new URL(req.url ?? '/', 'http://localhost')).catch((e: Error) => { res.writeHead(500); res.end(e.message) }) })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      try {
        const seen: string[] = []
        for await (const e of nodeEvents(new ApiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`))) seen.push(e.event)
        assert.deepEqual(seen, ['overflow'], 'told why, then the end')
        assert.equal(strict.open, 0)
      } finally {
        strict.stop()
        server.close()
      }
    })

    await t.test('a stream the node ends early is exit 3, not a hang', async () => {
      const [a] = await submit('ev-f')
      const following = follow(client, [a], () => {}).then(() => undefined, (e: unknown) => e)
      await new Promise((resolve) => setTimeout(resolve, 200))
      await node.stop()
      const err = await following
      assert.ok(err instanceof CliError, `follow fails, got ${String(err)}`)
      assert.equal(err.exitCode, EXIT.UNAVAILABLE, err.message)
    })
  } finally {
    await node.stop()
    await rm(dir, { recursive: true, force: true })
  }
})

test('--follow asks build by build a node that has no event stream', async () => {
  // a node of an older version: /api/events is an unknown route
  let asked = 0
  const server = createServer((req, res) => {
    const m = /^\/api\/builds\/([a-z0-9]+)$/.exec(req.url ?? '')
    if (m === null) {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { name: 'HttpNotFoundError', message: `no route for ${req.method ?? ''} ${req.url ?? ''}` } }))
      return
    }
    asked++
    const state = asked >= 2 ? 'succeeded' : 'building'
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ id: m[1], derivation: drvPath('old'), system: 'x86_64-linux', state, reason: state, priority: 0, tags: {}, canceled: false, attempts: [] }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const out: string[] = []
    await follow(new ApiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), ['oldbuild'], (s) => out.push(s))
    assert.equal(asked, 2, 'asked until the build ended')
    assert.match(out.join(''), /oldbuild succeeded/)
  } finally {
    server.close()
  }
})
