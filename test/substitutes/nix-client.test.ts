// Issue 6's done-criterion: node B publishes a path from its own store; node A, which never had
// it, serves it to a real Nix 2.8 client in a third store (signatures required, fresh narinfo
// cache); a wrong key is refused; a missing path is a 404 the client reads as "not available".
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace, type NixNamespace } from '../helpers/nix-ns.js'
import { runCli } from '../helpers/cli.js'
import { waitForFullMesh, type TestNode } from '../helpers/swarm.js'
import { buildClosure, hashPartOf, startSubstituteNode, stopAll, substitute } from './harness.js'

test('a path published on B is served by A (which never had it) to a real Nix client; wrong key refused; missing path 404', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const nsClient = await nixNamespace()
  let a: TestNode | undefined
  let b: TestNode | undefined
  let untrusting: TestNode | undefined
  try {
    const { top, dep } = await buildClosure(nsB)
    b = await startSubstituteNode({ ns: nsB })
    a = await startSubstituteNode({ bootstrap: [b], args: ['--trusted-key', join(b.dataDir, 'keys', 'nix-key.pub')] })
    untrusting = await startSubstituteNode({ bootstrap: [b] })
    await waitForFullMesh([a, b, untrusting])

    // publish through the real CLI, retried until the DHT records went out
    let published: { paths: Array<{ storePath: string, announced: boolean }> } = { paths: [] }
    for (let i = 0; i < 10; i++) {
      const r = await runCli(['publish', top, '--api', b.url, '--json'])
      assert.equal(r.code, 0, r.stderr)
      published = JSON.parse(r.stdout)
      if (published.paths.every((p) => p.announced)) break
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
    assert.deepEqual(published.paths.map((p) => p.storePath), [dep, top], 'closure, references first')
    assert.ok(published.paths.every((p) => p.announced), JSON.stringify(published))

    const info = await fetch(`${a.url}/nix-cache-info`)
    assert.equal(info.status, 200)
    assert.equal(await info.text(), 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 100\n')
    const bKey = (await readFile(join(b.dataDir, 'keys', 'nix-key.pub'), 'utf8')).trim()
    assert.equal((await (await fetch(`${b.url}/nix-key.pub`)).text()).trim(), bKey)

    // a node that does not trust B's key never serves B's narinfo, whoever sends it
    const refusedByNode = await fetch(`${untrusting.url}/${hashPartOf(top)}.narinfo`)
    assert.equal(refusedByNode.status, 404)
    assert.match(refusedByNode.headers.get('cache-control') ?? '', /max-age=\d+/)

    // wrong key: the client refuses, having read only the narinfo
    const wrongKey = `${bKey.split(':')[0]}:${randomBytes(32).toString('base64')}`
    const refused = await substitute(nsClient, top, a, wrongKey, join(nsClient.dir, '..', 'xdg-wrong'))
    assert.notEqual(refused.code, 0)
    assert.match(refused.stderr, /is not signed by any of the keys/)

    // right key, fresh narinfo cache: the whole closure comes from A
    const ok = await substitute(nsClient, top, a, bKey, join(nsClient.dir, '..', 'xdg-right'))
    assert.equal(ok.code, 0, ok.stderr)
    assert.match(ok.stderr, new RegExp(`copying path '${top}' from '${a.url}'`))
    for (const p of [top, dep]) {
      const v = await nsClient.exec('nix-store', ['--verify-path', p])
      assert.equal(v.code, 0, v.stderr.toString())
    }
    assert.equal(await readFile(join(nsClient.realStoreDir, top.slice(11)), 'utf8'), await readFile(join(nsB.realStoreDir, top.slice(11)), 'utf8'))

    // A's narinfo: byte-identical to B's (B's signature), Content-Length and caching headers
    const narinfo = await fetch(`${a.url}/${hashPartOf(top)}.narinfo`)
    const text = await narinfo.text()
    assert.equal(narinfo.status, 200)
    assert.equal(narinfo.headers.get('content-length'), String(Buffer.byteLength(text)))
    assert.match(narinfo.headers.get('cache-control') ?? '', /max-age=\d+/)
    assert.equal(text, await readFile(join(b.dataDir, 'nar', `${hashPartOf(top)}.narinfo`), 'utf8'))

    // NAR: whole, HEAD, a range
    const url = /^URL: (.+)$/m.exec(text)?.[1] ?? ''
    const whole = Buffer.from(await (await fetch(`${a.url}/${url}`)).arrayBuffer())
    assert.deepEqual(createHash('sha256').update(whole).digest(), createHash('sha256').update(await readFile(join(b.dataDir, 'nar', url))).digest())
    const head = await fetch(`${a.url}/${url}`, { method: 'HEAD' })
    assert.equal(head.headers.get('content-length'), String(whole.length))
    const part = await fetch(`${a.url}/${url}`, { headers: { range: 'bytes=10-99' } })
    assert.equal(part.status, 206)
    assert.equal(part.headers.get('content-range'), `bytes 10-99/${whole.length}`)
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), whole.subarray(10, 100))
    const beyond = await fetch(`${a.url}/${url}`, { headers: { range: `bytes=${whole.length}-` } })
    assert.equal(beyond.status, 416)
    // many clients at once, each gets every byte
    const narUrl = `${a.url}/${url}`
    const many = await Promise.all(Array.from({ length: 24 }, async () => Buffer.from(await (await fetch(narUrl)).arrayBuffer())))
    for (const body of many) assert.ok(body.equals(whole), 'each of the concurrent fetches got the whole NAR')

    // missing path: 404 (never 5xx), and the client says it is not available
    const missing = `/nix/store/${'0'.repeat(31)}z-missing-${randomBytes(3).toString('hex')}`
    const m404 = await fetch(`${a.url}/${hashPartOf(missing)}.narinfo`)
    assert.equal(m404.status, 404)
    assert.ok(m404.headers.get('content-length') != null, 'the 404 response has a content-length header')
    const notAvail = await substitute(nsClient, missing, a, bKey, join(nsClient.dir, '..', 'xdg-missing'))
    assert.notEqual(notAvail.code, 0)
    assert.doesNotMatch(notAvail.stderr, /HTTP error|500/)
    assert.match(notAvail.stderr, /don't know how to build|is not valid|not available/)
  } finally {
    await stopAll([a, untrusting, b])
    await nsB.destroy()
    await nsClient.destroy()
  }
})
