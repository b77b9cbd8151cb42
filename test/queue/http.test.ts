// The queue's HTTP API on one in-process node: request validation, the default system, listing,
// status, metrics and the seam other services use to find the queue.
import '../../src/polyfill.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SwarmNode, mergeConfig, metricsService } from '../../src/node/index.js'
import { QueueNodeService, queueOf } from '../../src/node/queue.js'
import { drvPath } from './api.js'

interface Answer { status: number, json: { error?: { name: string, message: string } } & Record<string, unknown> }

test('queue API on an in-process node', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-queue-http-'))
  const special = drvPath('special-1.0')
  const broken = drvPath('broken-1.0')
  const config = mergeConfig(dir, { flags: { swarm: `qhttp${process.pid}`, listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', mdns: false, builder: 'none', maxBuilds: 1 } })
  const node = new SwarmNode(config, {
    services: [metricsService, (c) => new QueueNodeService(c, {
      config: { verifyWorkers: 0 },
      // stands in for the daemon: knows one .drv, fails on another
      readSystem: async (drv) => {
        if (drv === broken) throw new Error('daemon went away')
        return drv === special ? 'mips64el-linux' : undefined
      }
    })],
    detectBuilder: async () => ({ kind: 'nix', systems: ['x86_64-linux', 'i686-linux'] })
  })
  await node.start()
  const call = async (method: string, path: string, body?: string): Promise<Answer> => {
    const res = await fetch(node.url + path, { method, ...(body !== undefined ? { body, headers: { 'content-type': 'application/json' } } : {}) })
    return { status: res.status, json: await res.json() as Answer['json'] }
  }
  const submit = async (body: unknown): Promise<Answer> => await call('POST', '/api/builds', JSON.stringify(body))
  try {
    await t.test('malformed requests are 400s with named errors and queue nothing', async () => {
      const cases: Array<[unknown, string]> = [
        [[drvPath('a')], 'InvalidBuildRequestError'],
        [{}, 'InvalidBuildRequestError'],
        [{ derivations: [] }, 'InvalidBuildRequestError'],
        [{ derivations: 'x' }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a'), '/gnu/store/short-a.drv'] }, 'InvalidDerivationPathError'],
        [{ derivations: [drvPath('a')], priority: 2_000_000 }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a')], tags: ['a'] }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a')], tags: { k: 1 } }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a')], tags: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])) }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a')], system: 'x86_64 linux' }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a')], maxAttempts: 0 }, 'InvalidBuildRequestError'],
        [{ derivations: [drvPath('a')], maxAbandoned: 0 }, 'InvalidBuildRequestError']
      ]
      for (const [body, name] of cases) {
        const r = await submit(body)
        assert.equal(r.status, 400, JSON.stringify(body))
        assert.equal(r.json.error?.name, name, JSON.stringify(body))
      }
      const notJson = await call('POST', '/api/builds', '{"derivations": [')
      assert.equal(notJson.status, 400)
      assert.equal(notJson.json.error?.name, 'HttpBadJsonError')
      assert.equal(queueOf(node.components!)?.status().builds, 0)
    })

    await t.test('the system: explicit, else from the .drv, else the node\'s first (also when reading fails)', async () => {
      const r = await submit({ derivations: [special, drvPath('plain-1.0'), broken], priority: 3, tags: { team: 'core' } })
      assert.equal(r.status, 201)
      assert.deepEqual((r.json.builds as Array<{ system: string }>).map((b) => b.system), ['mips64el-linux', 'x86_64-linux', 'x86_64-linux'])
      const e = await submit({ derivation: special, system: 'aarch64-linux', maxAbandoned: 5 })
      assert.deepEqual((e.json.builds as Array<{ system: string }>).map((b) => b.system), ['aarch64-linux'])
      // the lapsed-lease limit travels in the submit and shows in the view
      const shown = await call('GET', `/api/builds/${(e.json.ids as string[])[0]}`)
      assert.deepEqual([shown.json.maxAbandoned, shown.json.abandoned], [5, 0])
      const plain = await call('GET', `/api/builds/${(r.json.ids as string[])[1]}`)
      assert.equal(plain.json.maxAbandoned, 3, 'the default limit is 3')
    })

    await t.test('listing: queue order, state and derivation filters, limit', async () => {
      await submit({ derivations: [drvPath('urgent-1.0')], priority: 99 })
      const all = await call('GET', '/api/builds')
      const builds = all.json.builds as Array<{ id: string, priority: number, derivation: string, state: string }>
      assert.equal(all.json.total, 5)
      assert.deepEqual(builds.map((b) => b.priority), [99, 3, 3, 3, 0])
      const one = await call('GET', '/api/builds?limit=1')
      assert.equal(one.json.total, 5)
      assert.equal((one.json.builds as unknown[]).length, 1)
      const bySpecial = await call('GET', `/api/builds?derivation=${encodeURIComponent(special)}`)
      assert.equal(bySpecial.json.total, 2)
      const victim = builds[4].id
      assert.equal((await call('POST', `/api/builds/${victim}/cancel`)).status, 200)
      const canceled = await call('GET', '/api/builds?state=canceled')
      assert.deepEqual((canceled.json.builds as Array<{ id: string }>).map((b) => b.id), [victim])
      assert.equal((await call('GET', '/api/builds?state=queued')).json.total, 4)
      assert.equal((await call('GET', '/api/builds?limit=-1')).status, 400)
      assert.equal((await call('GET', '/api/builds?state=done')).json.error?.name, 'UnknownBuildStateError')
      // finished builds refuse a priority change with 409; a bad priority body is a 400
      const refused = await call('POST', `/api/builds/${victim}/priority`, '{"priority": 1}')
      assert.equal(refused.status, 409)
      assert.equal(refused.json.error?.name, 'BuildFinishedError')
      assert.equal((await call('POST', `/api/builds/${builds[0].id}/priority`, '{"priority": "high"}')).status, 400)
      assert.equal((await call('GET', '/api/builds/aaaaaaaaaaaaaaaa')).json.error?.name, 'UnknownBuildError')
    })

    await t.test('status carries the queue section, /metrics the queue gauges, queueOf finds the service', async () => {
      const st = await call('GET', '/api/status')
      const q = st.json.queue as { builds: number, stateHash: string, byState: Record<string, number>, stats: { rejected: Record<string, number> } }
      assert.equal(q.builds, 5)
      assert.equal(q.byState.canceled, 1)
      assert.match(q.stateHash, /^[0-9a-f]{64}$/)
      assert.equal(q.stats.rejected['bad-signature'], 0)
      const metrics = await (await fetch(node.url + '/metrics')).text()
      assert.match(metrics, /^guix_swarm_queue_builds\{state="queued"\} 4$/m)
      assert.match(metrics, /^guix_swarm_queue_rejected_ops\{reason="bad-signature"\} 0$/m)
      assert.equal(queueOf(node.components!), node.service<QueueNodeService>('queue')?.queue)
    })

    await t.test('submit hooks run while the builds enter the queue; a hook that fails cancels them and fails the request', async () => {
      const qn = node.service<QueueNodeService>('queue')!
      const queue = qn.queue
      const seen: Array<{ drvs: string[], queuedMeanwhile: boolean }> = []
      let failWith: Error | undefined
      const remove = qn.addSubmitHook(async (drvs) => {
        // the hook is still running when its builds are already in the queue (builders start claiming)
        const deadline = Date.now() + 5000
        while (!drvs.every((d) => queue.byDerivation(d).length > 0) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
        seen.push({ drvs, queuedMeanwhile: drvs.every((d) => queue.byDerivation(d).length > 0) })
        if (failWith !== undefined) throw failWith
      })
      try {
        const ok = await submit({ derivations: [drvPath('hooked-ok-1.0')] })
        assert.equal(ok.status, 201, JSON.stringify(ok.json))
        assert.deepEqual(seen, [{ drvs: [drvPath('hooked-ok-1.0')], queuedMeanwhile: true }], 'the hook saw its build queued before it ended')
        failWith = new Error('cannot publish: the disk is full')
        const bad = await submit({ derivations: [drvPath('hooked-bad-1.0'), drvPath('hooked-bad-2.0')] })
        assert.equal(bad.status, 500, 'the hook\'s failure is the answer')
        assert.match(bad.json.error?.message ?? '', /disk is full/, 'with its message')
        for (const d of [drvPath('hooked-bad-1.0'), drvPath('hooked-bad-2.0')]) {
          assert.deepEqual(queue.byDerivation(d).map((r) => r.phase), ['canceled'], `${d}: queued meanwhile, canceled when the hook failed`)
        }
      } finally {
        remove()
      }
    })
  } finally {
    await node.stop()
    await rm(dir, { recursive: true, force: true })
  }
})
