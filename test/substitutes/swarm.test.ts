// Substitutes between real node processes, each with its own Nix store: a lying provider is caught
// by hash and an honest one used; a mirror keeps serving after the publisher leaves; GC keeps the
// last copy the swarm has and frees what another node also holds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'
import { runCli } from '../helpers/cli.js'
import { waitForFullMesh, type TestNode } from '../helpers/swarm.js'
import { assertSubstitutes, api, buildClosure, hashPartOf, publishAnnounced, startSubstituteNode, stopAll } from './harness.js'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

test('a provider whose NAR was tampered with on disk is caught by hash; the NAR comes from an honest node and nothing corrupt is served or kept', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const nsC = await nixNamespace()
  const nsClient = await nixNamespace()
  const nodes: Array<TestNode | undefined> = []
  try {
    // the same derivation in two stores: the same path and the same NAR
    const name = `corrupt-${Date.now()}`
    const { top } = await buildClosure(nsB, name)
    assert.equal((await buildClosure(nsC, name)).top, top)
    const b = await startSubstituteNode({ ns: nsB }); nodes.push(b)
    const c = await startSubstituteNode({ ns: nsC, bootstrap: [b] }); nodes.push(c)
    // A believes only B's narinfos, so B is asked first; C's bytes are the same NAR under C's key
    const a = await startSubstituteNode({ bootstrap: [b, c], args: ['--trusted-key', join(b.dataDir, 'keys', 'nix-key.pub')] }); nodes.push(a)
    await waitForFullMesh([a, b, c])
    const pb = await publishAnnounced(b, [top])
    await publishAnnounced(c, [top])

    const url = pb.paths.find((p) => p.storePath === top)?.files[0].url ?? ''
    const bFile = join(b.dataDir, 'nar', url)
    const honest = await readFile(join(c.dataDir, 'nar', url))
    assert.equal(sha(await readFile(bFile)), sha(honest), 'B and C hold the same compressed NAR')
    // flip bytes in the middle of B's file, same size (so only hashing can tell)
    const fh = await open(bFile, 'r+')
    const size = (await stat(bFile)).size
    await fh.write(Buffer.from('corrupted!'), 0, 10, Math.floor(size / 2))
    await fh.close()

    const pulled = await api<{ paths: Array<{ status: string, narFrom: string[], badPeers: string[] }> }>(a, '/api/mirror', { paths: [top] })
    assert.equal(pulled.paths[0].status, 'fetched', JSON.stringify(pulled))
    assert.deepEqual(pulled.paths[0].badPeers, [b.peerId], JSON.stringify(pulled))
    assert.ok(pulled.paths[0].narFrom.includes(c.peerId), JSON.stringify(pulled))
    // A keeps and serves the honest bytes only
    assert.equal(sha(await readFile(join(a.dataDir, 'nar', url))), sha(honest))
    // no download left behind (checked before serving: serving records last-use through tmp/)
    assert.deepEqual(await readdir(join(a.dataDir, 'nar', '.guix-swarm', 'tmp')), [])
    assert.deepEqual(await readdir(join(a.dataDir, 'nar', '.guix-swarm', 'fetch')), [])
    assert.equal(sha(Buffer.from(await (await fetch(`${a.url}/${url}`)).arrayBuffer())), sha(honest))

    await assertSubstitutes(nsClient, a, b, [top])
  } finally {
    await stopAll(nodes)
    await Promise.all([nsB.destroy(), nsC.destroy(), nsClient.destroy()])
  }
})

test('a mirror keeps serving after the publisher goes offline; GC frees what another node holds and keeps the last copy', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const nsClient = await nixNamespace()
  const nodes: Array<TestNode | undefined> = []
  try {
    const x = await buildClosure(nsB)
    const y = await buildClosure(nsB)
    const b = await startSubstituteNode({ ns: nsB }); nodes.push(b)
    const m = await startSubstituteNode({ bootstrap: [b], args: ['--mirror', '--trusted-key', join(b.dataDir, 'keys', 'nix-key.pub')] }); nodes.push(m)
    await waitForFullMesh([b, m])
    await publishAnnounced(b, [x.top, y.top])

    // the mirror pulls x's closure (the queue-following path does the same per successful build)
    const pulled = await runCli(['pull', x.top, '--api', m.url, '--json'])
    assert.equal(pulled.code, 0, pulled.stderr)
    const r = JSON.parse(pulled.stdout) as { paths: Array<{ status: string, fetched: string[] }> }
    assert.deepEqual(r.paths[0].fetched.sort(), [x.top, x.dep].sort())
    // re-announce so B's DHT view certainly has M's records (M announced on add)
    await publishAnnounced(b, [x.top, y.top])

    // GC on B down to nothing: x's closure is also on M, so it goes; y is the last copy, so it stays
    const gc = await runCli(['gc', '--max-size', '0', '--api', b.url, '--json'])
    assert.equal(gc.code, 0, gc.stderr)
    const report = JSON.parse(gc.stdout) as { removed: Array<{ storePath: string, bytes: number }>, keptLastCopies: string[], freed: number }
    assert.deepEqual(report.removed.map((p) => p.storePath).sort(), [x.top, x.dep].sort())
    assert.deepEqual(report.keptLastCopies.sort(), [y.top, y.dep].sort())
    assert.equal(report.freed, report.removed.reduce((s, p) => s + p.bytes, 0))
    const left = (await readdir(join(b.dataDir, 'nar'))).filter((f) => f.endsWith('.narinfo')).sort()
    assert.deepEqual(left, [y.top, y.dep].map((p) => `${hashPartOf(p)}.narinfo`).sort(), 'narinfos go with their NARs')
    // NAR files of every compression (small ones are kept uncompressed, at nar/<basename>)
    const narFiles = (await readdir(join(b.dataDir, 'nar', 'nar'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name)
    assert.deepEqual(narFiles.sort(), [y.top, y.dep].map((p) => p.slice(11)).sort(), 'NARs go with their narinfos')

    // the publisher leaves; the mirror still serves x to a real client
    await b.stop()
    await assertSubstitutes(nsClient, m, b, [x.top, x.dep])
  } finally {
    await stopAll(nodes)
    await Promise.all([nsB.destroy(), nsClient.destroy()])
  }
})
