// Building on real node processes: 3 builders and a submitter that never builds, each `guix-swarm
// join` in its own private Nix store. The .drv files exist only in the submitter's store; builders
// get them (and each other's outputs) from the swarm. Outputs are substituted by a real
// `nix-store -r` in a fourth store; logs are read from a node that never held them; a failing build
// is retried then failed; a canceled running build stops; a builder killed mid-build is taken over.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { access, chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { BuildView } from '../../src/crdt/index.js'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'
import { runCli } from '../helpers/cli.js'
import { waitFor, waitForFullMesh } from '../helpers/swarm.js'
import { cleanup, drvExpr, getJson, instantiate, postJson, prepare, startMember, view, type Prepared, type SwarmMember } from './harness.js'

const skip = nixSkip()
const run = promisify(execFile)

/** pids of processes whose command line contains `marker` (this test's builds carry a nonce). */
async function pidsWith (marker: string): Promise<number[]> {
  try {
    const { stdout } = await run('pgrep', ['-f', marker])
    return stdout.trim().split('\n').filter((l) => l !== '').map(Number).filter((p) => p !== process.pid)
  } catch {
    return [] // pgrep exits 1 when nothing matches
  }
}

const succeeded = (b: BuildView): BuildView['attempts'] => b.attempts.filter((a) => a.state === 'succeeded')

test('3 builders and a non-building submitter in 4 stores: 30 builds in dependency order, substitutable anywhere; failures, logs, cancel, kill -9', { skip, timeout: 480_000 }, async (t) => {
  const prepared: Prepared[] = []
  const members: SwarmMember[] = []
  const n = randomBytes(4).toString('hex')
  const marker = `/tmp/gs-build-kill-${n}`
  const hookDirs: string[] = []
  try {
    for (let i = 0; i < 4; i++) prepared.push(await prepare())
    const submitter = await startMember(prepared[0], { builder: 'none', trust: prepared })
    members.push(submitter)
    // a short lease (the kill test waits for it), still long enough that load never fakes a fault
    // each success runs the builder's hook with the build's JSON (host /tmp: every namespace sees it)
    const hookDir = await mkdtemp(join(tmpdir(), 'gs-build-hooks-'))
    hookDirs.push(hookDir)
    const hook = join(hookDir, 'hook.sh')
    await writeFile(hook, `#!/bin/sh\ncat > "${hookDir}/$1-$$-$(date +%s%N).json"\n`)
    await chmod(hook, 0o755)
    const builders = await Promise.all([1, 2, 3].map(async (i) => await startMember(prepared[i], {
      builder: 'nix', bootstrap: submitter, trust: prepared, args: ['--max-builds', '2', '--lease', '6', '--hook', `build-success=${hook}`]
    })))
    members.push(...builders)
    await waitForFullMesh(members, 30_000)
    const byPeer = new Map(builders.map((b) => [b.peerId, b]))

    // a source too large for a closure bundle (1 MiB a file), in host /tmp (every namespace sees it)
    const bigSource = join(hookDir, 'big-source.bin')
    await writeFile(bigSource, randomBytes(2 * 1024 * 1024))
    // Everything is instantiated in the submitter's store only.
    const expr = `let c = ${drvExpr(`c-${n}`, 'echo c > $out/file')};
      b = ${drvExpr(`b-${n}`, 'echo b > $out/file', ['c'])};
      a = ${drvExpr(`a-${n}`, 'echo a > $out/file', ['b'])};
      in [ a b c ${Array.from({ length: 27 }, (_, i) => `(${drvExpr(`x${i}-${n}`, `echo ${i} > $out/file`)})`).join(' ')}
        (${drvExpr(`fail-${n}`, `echo failing-${n}; exit 1`)})
        (${drvExpr(`ok-${n}`, `echo ok-${n} > $out/file`)})
        (${drvExpr(`cancel-${n}`, `echo cancel-${n}; /bin/sleep 30; echo late > $out/file`)})
        (${drvExpr(`kill-${n}`, `if [ -e ${marker} ]; then echo second-${n}; else /bin/touch ${marker}; echo kill-${n}; /bin/sleep 30; fi; echo done > $out/file`)})
        (derivation { name = "big-${n}"; system = "x86_64-linux"; builder = "/bin/sh"; src = ${bigSource}; args = [ "-c" "/bin/mkdir $out; /bin/cp $src $out/copy" ]; }) ]`
    const drvs = await instantiate(prepared[0].ns, expr)
    assert.equal(drvs.length, 35)
    const [drvA, drvB, drvC] = drvs
    const thirty = drvs.slice(0, 30)
    const [failDrv, okDrv, cancelDrv, killDrv, bigDrv] = drvs.slice(30)
    for (const b of builders) assert.deepEqual((await b.ns.exec('nix-store', ['--check-validity', '--print-invalid', drvA])).stdout.toString().trim(), drvA, 'builders do not have the .drv')

    const main = t.test('30 builds: all succeed once, inputs first, higher priority claimed earlier, outputs substitutable from the submitter', async () => {
      // the dependents at the highest priority: only dependency order can hold them back
      const prio = (i: number): number => i < 2 ? 10 : i === 2 ? 0 : i % 4
      // published ahead (`guix-swarm publish`), so the submits below are quick; the other
      // subtests' derivations are published by their submit
      const published = await postJson<{ paths: unknown[] }>(submitter, '/api/publish', { paths: thirty }, 200)
      assert.equal(published.paths.length, 30)
      const ids: string[] = new Array(30)
      // one request per priority, each publishing its .drv files first: deferred to one common
      // moment, so the order of arrival cannot stand in for the order of priority
      const deferUntil = Date.now() + 20_000
      for (const p of [0, 1, 2, 3, 10]) {
        const idx = thirty.map((_, i) => i).filter((i) => prio(i) === p)
        const r = await postJson<{ ids: string[] }>(submitter, '/api/builds', { derivations: idx.map((i) => thirty[i]), priority: p, deferUntil })
        idx.forEach((i, k) => { ids[i] = r.ids[k] })
      }
      assert.ok(Date.now() < deferUntil - 2000, 'every build was submitted before any became claimable')
      const views = await waitFor(async () => {
        const vs = await Promise.all(ids.map(async (id) => await view(submitter, id)))
        return vs.every((v) => v.state === 'succeeded') ? vs : undefined
      }, 'all 30 builds to succeed', 240_000, 1000)
      for (const v of views) assert.equal(succeeded(v).length, 1, `${v.id}: exactly one successful attempt`)
      const [a, b, c] = views
      const win = (v: BuildView): BuildView['attempts'][number] => succeeded(v)[0]
      const doneAt = (v: BuildView): number => (win(v).result as unknown as { hlc: [number, number] }).hlc[0]
      assert.ok(doneAt(c) <= win(b).claimedAt, 'c succeeded before b was claimed')
      assert.ok(doneAt(b) <= win(a).claimedAt, 'b succeeded before a was claimed')
      assert.ok(new Set(views.map((v) => win(v).peerId)).size >= 2, 'work spread over more than one builder')
      // one build-success hook run per build, on the node that built it, with the build's JSON
      const hooked = await waitFor(async () => {
        const runs = await Promise.all((await readdir(hookDir)).filter((f) => f.startsWith('build-success-')).map(async (f) => JSON.parse(await readFile(join(hookDir, f), 'utf8')) as { event: string, node: string, build: BuildView }))
        const mine = runs.filter((r) => ids.includes(r.build.id))
        return mine.length >= 30 ? mine : undefined
      }, 'a build-success hook for each of the 30 builds', 30_000)
      assert.equal(hooked.length, 30)
      assert.deepEqual(new Set(hooked.map((h) => h.build.id)), new Set(ids))
      for (const h of hooked) assert.equal(h.node, win(views[ids.indexOf(h.build.id)]).peerId, 'the hook ran where the build ran')
      // 6 slots for 27 independent builds: on average, priority 3 is claimed before priority 0
      const rank = new Map([...views].sort((x, y) => win(x).claimedAt - win(y).claimedAt).map((v, i) => [v.id, i]))
      const meanRank = (p: number): number => { const vs = views.filter((_, i) => i > 2 && prio(i) === p); return vs.reduce((s, v) => s + (rank.get(v.id) ?? 0), 0) / vs.length }
      assert.ok(meanRank(3) < meanRank(0), `priority 3 claimed earlier on average (${meanRank(3)}) than priority 0 (${meanRank(0)})`)

      // a's output (with b's and c's inside its closure) from the submitter's HTTP front, which built
      // nothing, into a fresh store that trusts only the builders' keys
      const client = await nixNamespace()
      try {
        const out = win(a).result?.outputs?.out.path as string
        const keys = builders.map((x) => x.nixKey).join(' ')
        const r = await client.exec('nix-store', ['-r', out, '--option', 'substituters', submitter.url, '--option', 'trusted-public-keys', keys, '--option', 'narinfo-cache-negative-ttl', '0'])
        if (r.code !== 0) {
          const narinfos = await Promise.all([a, b, c].map(async (v) => await (await fetch(`${submitter.url}/${(win(v).result?.outputs?.out.path as string).slice(11, 43)}.narinfo`)).text()))
          assert.fail(`nix-store -r ${out} failed: ${r.stderr.toString()}\ntrusted: ${keys}\n${narinfos.join('\n')}`)
        }
        const refs = (await client.exec('nix-store', ['-qR', out])).stdout.toString().trim().split('\n')
        assert.ok(refs.includes(win(b).result?.outputs?.out.path as string) && refs.includes(win(c).result?.outputs?.out.path as string), 'the closure came along')
      } finally {
        await client.destroy()
      }
      // the build log through the submitter's HTTP front (/log/<drv>), fetched from the builder
      const res = await fetch(`${submitter.url}/log/${drvC.slice('/nix/store/'.length)}`)
      assert.equal(res.status, 200)
      assert.match(await res.text(), new RegExp(drvC.slice('/nix/store/'.length).replace('.', '\\.')))
      void drvB
    })

    const failing = t.test('a failing build is retried to the limit, then failed; its log is read on a node that never ran it; --follow exits 1, and 0 on success', async () => {
      // okDrv is submitted through a builder whose store lacks it: the builders ask that node for
      // the closure bundle first, get nothing, and find the .drv through the DHT (published here)
      await postJson(submitter, '/api/publish', { paths: [okDrv] }, 200)
      const [failed, ok] = await Promise.all([
        runCli(['submit', '--follow', '--api', submitter.url, failDrv], { timeoutMs: 200_000 }),
        runCli(['submit', '--follow', '--api', builders[0].url, okDrv], { timeoutMs: 200_000 })
      ])
      assert.equal(ok.code, 0, ok.stdout + ok.stderr)
      assert.match(ok.stdout, /succeeded/)
      assert.equal(failed.code, 1, failed.stdout + failed.stderr)
      const id = failed.stdout.split('\n')[0].trim()
      assert.match(failed.stdout, /attempt 1 failed on /)
      const v = await view(submitter, id)
      assert.equal(v.state, 'failed')
      assert.equal(v.attempts.filter((a) => a.state === 'failed').length, v.maxAttempts, 'every allowed attempt failed')
      assert.equal(v.maxAttempts, 3, 'the default: two retries')
      const log = await runCli(['log', id, '--api', submitter.url])
      assert.equal(log.code, 0, log.stderr)
      assert.match(log.stdout, new RegExp(`failing-${n}`))
      const first = await runCli(['log', id, '--attempt', '1', '--api', submitter.url])
      assert.match(first.stdout, new RegExp(`failing-${n}`))
    })
    const big = t.test('a .drv closure with a source too large for a bundle comes from the submitter, which has not announced it', async () => {
      // the submit publishes the closure for the next re-provide round only: no DHT record yet
      const { ids: [id] } = await postJson<{ ids: string[] }>(submitter, '/api/builds', { derivations: [bigDrv] })
      const v = await waitFor(async () => { const x = await view(submitter, id); return x.state === 'succeeded' ? x : undefined }, 'the build with a 2 MiB source to succeed', 180_000, 500)
      const builder = byPeer.get(succeeded(v)[0].peerId)
      assert.ok(builder !== undefined, 'a builder built it')
      const st = await getJson<{ substitutes: { hints: { asked: number, believed: number } } }>(builder, '/api/status')
      assert.ok(st.substitutes.hints.believed >= 1, `the builder took the source from a peer it knew (the submitter) before any DHT walk: ${JSON.stringify(st.substitutes.hints)}`)
      const sub = await getJson<{ substitutes: { unannounced: number } }>(submitter, '/api/status')
      assert.ok(sub.substitutes.unannounced >= 2, `the submitter holds the .drv and its source unannounced until its next re-provide round (${sub.substitutes.unannounced})`)
    })
    await Promise.all([main, failing, big])

    const cancel = t.test('a canceled running build stops on its builder', async () => {
      const { ids: [id] } = await postJson<{ ids: string[] }>(submitter, '/api/builds', { derivations: [cancelDrv] })
      const building = await waitFor(async () => (await view(submitter, id)).attempts.find((a) => a.state === 'building'), 'the slow build to start', 60_000)
      const holder = byPeer.get(building.peerId)
      assert.ok(holder !== undefined, 'the building peer is one of the swarm nodes')
      await waitFor(async () => (await pidsWith(`cancel-${n}`)).length > 0, 'the builder process to run', 30_000)
      const r = await runCli(['cancel', id, '--api', submitter.url])
      assert.equal(r.code, 0, r.stderr)
      await waitFor(async () => {
        const s = await getJson<{ scheduler?: { running?: Array<{ id: string }> } }>(holder, '/api/status')
        return !(s.scheduler?.running ?? []).some((x) => x.id === id)
      }, 'the builder to drop the canceled build', 20_000)
      await waitFor(async () => (await pidsWith(`cancel-${n}`)).length === 0, 'the canceled build\'s processes to end', 20_000)
      assert.equal((await view(submitter, id)).state, 'canceled')
    })

    const kill = t.test('kill -9 of the node running a slow build: after the lease lapses another node builds it, once', async () => {
      const { ids: [id] } = await postJson<{ ids: string[] }>(submitter, '/api/builds', { derivations: [killDrv] })
      const building = await waitFor(async () => (await view(submitter, id)).attempts.find((a) => a.state === 'building'), 'the slow build to start', 60_000)
      const victim = byPeer.get(building.peerId)
      assert.ok(victim !== undefined, 'the building peer is one of the swarm nodes')
      // the builder script itself is sleeping (not just the daemon client started): its marker exists
      await waitFor(async () => await access(marker).then(() => true, () => false), 'the slow builder to run', 30_000)
      victim.proc.kill('SIGKILL')
      const v = await waitFor(async () => { const x = await view(submitter, id); return x.state === 'succeeded' ? x : undefined }, 'another node to build it', 90_000, 500)
      assert.equal(succeeded(v).length, 1)
      assert.notEqual(succeeded(v)[0].peerId, victim.peerId)
      // its lease lapsed and a later attempt superseded it: abandoned (counted apart from failures)
      assert.equal(v.attempts.find((a) => a.number === building.number)?.state, 'abandoned')
      assert.equal(v.failures, 0, 'a dead builder is not a build failure')
    })
    await Promise.all([cancel, kill])
  } finally {
    // the killed node's daemon client and its sleep outlive it: end them (ours, by pid) before removing its store
    for (const pid of await pidsWith(`kill-${n}`)) { try { process.kill(pid, 'SIGKILL') } catch {} }
    for (const pid of await pidsWith(`cancel-${n}`)) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await cleanup(members, prepared)
    await rm(marker, { force: true })
    for (const d of hookDirs) await rm(d, { recursive: true, force: true })
  }
})
