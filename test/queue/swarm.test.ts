// The replicated queue across real `guix-swarm join` processes on 127.0.0.1, driven through the CLI.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers/cli.js'
import { removeDir, startBootstrapped, startNode, testSwarmName, waitFor, waitForFullMesh, type TestNode } from '../helpers/swarm.js'
import { agreedHash, buildOn, drvPath, post, queueStatus, type BuildJson } from './api.js'

async function cli (args: string[], node: TestNode): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await runCli([...args, '--api', node.url])
}

async function submit (node: TestNode, ...args: string[]): Promise<string[]> {
  const r = await cli(['submit', ...args], node)
  assert.equal(r.code, 0, r.stderr)
  const ids = r.stdout.trim().split('\n')
  for (const id of ids) assert.match(id, /^[a-z2-7]{16}$/)
  return ids
}

/** Wait until every node sees build `id` and `check` holds for it on each. */
async function seenEverywhere (nodes: TestNode[], id: string, check: (b: BuildJson) => boolean, what: string): Promise<void> {
  await waitFor(async () => {
    for (const n of nodes) {
      const b = await buildOn(n, id)
      if (b === undefined || !check(b)) return false
    }
    return true
  }, what, 15_000)
}

test('queue across three node processes: CLI submit, replication, cancel/priority, catch-up after downtime, restart of every node', async () => {
  const swarm = testSwarmName()
  const base = ['--swarm', swarm, '--no-mdns']
  const nodes: TestNode[] = []
  try {
    await startBootstrapped(nodes, 3, base)
    const [a, b, c] = nodes
    await waitForFullMesh(nodes)

    // submit on A through the CLI: visible on B and C
    const hello = drvPath('hello-2.12')
    const [id] = await submit(a, hello, '--priority', '5', '--tag', 'jobset=nightly', '--tag', 'team=core', '--system', 'aarch64-linux')
    await seenEverywhere(nodes, id, (x) => x.state === 'queued', 'the build submitted on A to reach B and C')
    const onC = await buildOn(c, id)
    assert.equal(onC?.derivation, hello)
    assert.equal(onC?.system, 'aarch64-linux')
    assert.equal(onC?.priority, 5)
    assert.deepEqual(onC?.tags, { jobset: 'nightly', team: 'core' })
    assert.deepEqual(onC?.attempts, [])

    // builds --json, show --json, the table, and a second submit on B, all at once (each CLI run is a process)
    const [list, shown, human, table, [other]] = await Promise.all([
      cli(['builds', '--json', '--state', 'queued'], b),
      cli(['show', id, '--json'], c),
      cli(['show', id], c),
      cli(['builds'], a),
      submit(b, drvPath('coreutils-9.1'))
    ])
    assert.equal(list.code, 0, list.stderr)
    const listed = JSON.parse(list.stdout) as { total: number, builds: BuildJson[] }
    // the concurrent submit on B may or may not be listed yet; A's build (priority 5) comes first either way
    assert.ok(listed.total >= 1 && listed.builds.every((x) => x.state === 'queued'), list.stdout)
    assert.deepEqual(Object.keys(listed.builds[0]).filter((k) => ['id', 'derivation', 'system', 'state', 'priority', 'tags', 'attempts'].includes(k)).sort(),
      ['attempts', 'derivation', 'id', 'priority', 'state', 'system', 'tags'])
    assert.equal(listed.builds[0].id, id)
    assert.equal(shown.code, 0, shown.stderr)
    const view = JSON.parse(shown.stdout) as BuildJson
    assert.equal(view.id, id)
    assert.equal(view.state, 'queued')
    assert.match(view.reason, /aarch64-linux/)
    assert.match(human.stdout, new RegExp(`^build +${id}$`, 'm'))
    assert.match(human.stdout, /^reason +\S/m)
    assert.match(table.stdout, /^ID +STATE +PRIO +SYSTEM/m)
    assert.match(table.stdout, new RegExp(`^${id} +queued +5 +aarch64-linux `, 'm'))
    const none = (await (await fetch(`${b.url}/api/builds?state=succeeded`)).json()) as { total: number }
    assert.equal(none.total, 0)

    // priority on B and cancel on C reach every node
    await seenEverywhere([b, c], other, () => true, 'C to see the build submitted on B')
    const [pr, cn] = await Promise.all([cli(['priority', id, '42'], b), cli(['cancel', other], c)])
    assert.equal(pr.code, 0, pr.stderr)
    assert.equal(cn.code, 0, cn.stderr)
    await seenEverywhere(nodes, id, (x) => x.priority === 42, 'the priority set on B to reach A and C')
    await seenEverywhere(nodes, other, (x) => x.state === 'canceled' && x.canceled, 'the cancel on C to reach A and B')

    // refused operation: exit 1; bad input: exit 2 with a clear message; unknown id: exit 1
    const [refused, bad, badTag, badState, unknown] = await Promise.all([
      cli(['priority', other, '3'], a),
      cli(['submit', '/gnu/store/not-a-hash-hello.drv'], a),
      cli(['submit', hello, '--tag', 'novalue'], a),
      cli(['builds', '--state', 'sleeping'], a),
      cli(['show', 'aaaaaaaaaaaaaaaa'], a)
    ])
    assert.equal(refused.code, 1, refused.stderr)
    assert.match(refused.stderr, /BuildFinishedError: build \w+ is already canceled/)
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /not a well-formed store path of a \.drv: "\/gnu\/store\/not-a-hash-hello\.drv"/)
    assert.equal(badTag.code, 2)
    assert.match(badTag.stderr, /--tag expects key=value/)
    assert.equal(badState.code, 2)
    assert.match(badState.stderr, /unknown state "sleeping"/)
    assert.equal(unknown.code, 1)
    assert.match(unknown.stderr, /UnknownBuildError: no build with id aaaaaaaaaaaaaaaa/)
    // cancel twice is a no-op; an unknown id is a 404
    assert.equal((await post(a, `/api/builds/${other}/cancel`, {})).status, 200)
    assert.equal((await post(a, '/api/builds/aaaaaaaaaaaaaaaa/cancel', {})).status, 404)
    // the API itself refuses what the CLI would not send, with named errors
    for (const path of ['/tmp/hello.drv', hello.replace(/\.drv$/, ''), 'hello.drv', 42]) {
      const api = await post(a, '/api/builds', { derivations: [path] })
      assert.equal(api.status, 400)
      assert.equal((api.json as { error: { name: string } }).error.name, 'InvalidDerivationPathError')
    }
    const badPrio = await post(a, '/api/builds', { derivations: [hello], priority: 1.5 })
    assert.equal(badPrio.status, 400)
    assert.equal((badPrio.json as { error: { name: string } }).error.name, 'InvalidBuildRequestError')
    assert.equal((await fetch(`${a.url}/api/builds?state=nope`)).status, 400)
    // default system: the node's (builder none: the host's), since no daemon has the .drv
    const defaulted = await post(a, '/api/builds', { derivations: [drvPath('sed-4.9')] })
    assert.equal(defaulted.status, 201)
    const [defId] = (defaulted.json as { ids: string[] }).ids
    assert.match((await buildOn(a, defId))?.system ?? '', /^[a-z0-9_]+-linux$/)
    // none of this was a refused op: nothing counted as garbage
    for (const n of nodes) assert.deepEqual(Object.values((await queueStatus(n)).stats.rejected).filter((v) => v > 0), [])

    // stop C; submit on A and B; restart C on its data dir: it catches up
    assert.equal(await c.stop(), 0, c.stderr())
    const whileDown = (await Promise.all([submit(a, drvPath('grep-3.8'), drvPath('gawk-5.2')), submit(b, drvPath('bash-5.2'))])).flat()
    await seenEverywhere([a, b], whileDown[0], () => true, 'B to see the build submitted on A')
    assert.equal((await cli(['cancel', whileDown[0]], b)).code, 0)
    const live = await waitFor(async () => await agreedHash([a, b]), 'A and B to agree')
    const c2 = await startNode({ dataDir: c.dataDir, args: [...base, '--bootstrap', a.addrs[0]] })
    nodes[2] = c2
    const caught = await waitFor(async () => await agreedHash(nodes), 'restarted C to catch up with A and B')
    assert.equal(caught, live)
    for (const x of whileDown) assert.ok(await buildOn(c2, x), `C has ${x}`)
    assert.equal((await buildOn(c2, whileDown[0]))?.state, 'canceled')
    const before = await queueStatus(a)
    assert.equal(before.builds, 6)

    // restart every node (no bootstrap: the old addresses are gone): each restores the same queue from disk
    for (const n of nodes) assert.equal(await n.stop(), 0, n.stderr())
    const restarted = await Promise.all(nodes.map(async (n) => await startNode({ dataDir: n.dataDir, args: base })))
    nodes.splice(0, nodes.length, ...restarted)
    for (const n of nodes) {
      const s = await queueStatus(n)
      assert.equal(s.stateHash, before.stateHash, `${n.peerId} restored the same state`)
      assert.equal(s.builds, 6)
      assert.equal(s.ops, before.ops)
    }
    assert.equal((await buildOn(nodes[1], id))?.priority, 42)
    assert.equal((await buildOn(nodes[2], other))?.state, 'canceled')
  } finally {
    await Promise.all(nodes.map(async (n) => await n.stop()))
    await Promise.all(nodes.map(async (n) => await removeDir(n.dataDir)))
  }
})
