// Serving while fetching, between real node processes: a large NAR node A lacks reaches an HTTP
// client while it arrives from B, then stays in A's cache, and a real Nix client substitutes through
// the same path; when B's bytes are wrong, the client's response is cut before its end (no complete
// wrong NAR), and A keeps nothing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'
import { waitForFullMesh, type TestNode } from '../helpers/swarm.js'
import { assertSubstitutes, buildLarge, hashPartOf, publishAnnounced, startSubstituteNode, stopAll } from './harness.js'

const MiB = 1024 * 1024
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

interface HttpCounters { narStreamed: number, narStreamsCut: number }

async function counters (node: TestNode): Promise<HttpCounters> {
  const s = await (await fetch(`${node.url}/api/status`)).json() as { substitutes: { http: HttpCounters } }
  return s.substitutes.http
}

/** GET with node:http: the body, the announced Content-Length, and whether the response completed. */
async function getRaw (url: string): Promise<{ status: number, length: number, body: Buffer, complete: boolean }> {
  return await new Promise((resolve) => {
    const chunks: Buffer[] = []
    let status = 0
    let length = -1
    const done = (complete: boolean): void => { resolve({ status, length, body: Buffer.concat(chunks), complete }) }
    const req = request(url, { agent: false }, (res) => {
      status = res.statusCode ?? 0
      length = Number(res.headers['content-length'] ?? -1)
      res.on('data', (b: Buffer) => chunks.push(b))
      res.on('end', () => { done(res.complete) })
      res.on('error', () => { done(false) })
    })
    req.on('error', () => { done(false) })
    req.end()
  })
}

async function until (what: string, check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!await check()) {
    if (Date.now() > end) assert.fail(`timed out waiting until ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

test('a large NAR A lacks reaches an HTTP client while it arrives from B, stays in A\'s cache, and a real Nix client substitutes another', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const nsClient = await nixNamespace()
  const nodes: Array<TestNode | undefined> = []
  try {
    // large enough that the download outlasts the moment between the narinfo and the NAR request
    const big = await buildLarge(nsB, 24 * MiB)
    const other = await buildLarge(nsB, 6 * MiB)
    const b = await startSubstituteNode({ ns: nsB }); nodes.push(b)
    const a = await startSubstituteNode({ bootstrap: [b], args: ['--trusted-key', join(b.dataDir, 'keys', 'nix-key.pub')] }); nodes.push(a)
    await waitForFullMesh([a, b])
    const pub = await publishAnnounced(b, [big, other])
    const file = pub.paths.find((p) => p.storePath === big)?.files[0]
    assert.ok(file != null && file.fileSize > 4 * MiB, `random bytes stay large compressed (${file?.fileSize ?? 0})`)

    // what a substituter does: the narinfo, then at once the NAR it names
    const narinfo = await getRaw(`${a.url}/${hashPartOf(big)}.narinfo`)
    assert.equal(narinfo.status, 200)
    const nar = await getRaw(`${a.url}/${file.url}`)
    assert.ok(nar.complete, 'a complete response')
    assert.equal(nar.body.length, file.fileSize)
    assert.equal(sha(nar.body), sha(await readFile(join(b.dataDir, 'nar', file.url))), 'B\'s bytes exactly')
    const c = await counters(a)
    assert.equal(c.narStreamed, 1, `served while arriving: ${JSON.stringify(c)}`)
    assert.equal(c.narStreamsCut, 0)

    // verified, then moved into A's cache: the same bytes, no download left behind
    await until('A holds the NAR', async () => await stat(join(a.dataDir, 'nar', file.url)).then(() => true, () => false))
    assert.equal(sha(await readFile(join(a.dataDir, 'nar', file.url))), sha(nar.body))
    await until('the download is cleaned up', async () => (await readdir(join(a.dataDir, 'nar', '.guix-swarm', 'fetch'))).length === 0)
    // and is now served from the cache
    const again = await getRaw(`${a.url}/${file.url}`)
    assert.ok(again.complete, 'a complete response from the cache')
    assert.equal(sha(again.body), sha(nar.body))
    assert.equal((await counters(a)).narStreamed, 1, 'the second request did not stream')

    // a real client, signatures required (streamed or, if the download won the race, from the cache)
    await assertSubstitutes(nsClient, a, b, [other])
  } finally {
    await stopAll(nodes)
    await Promise.all([nsB.destroy(), nsClient.destroy()])
  }
})

test('a lying provider: the HTTP client gets no complete response, A keeps nothing and then says 404', { skip: nixSkip(), timeout: 240_000 }, async () => {
  const nsB = await nixNamespace()
  const nodes: Array<TestNode | undefined> = []
  try {
    const big = await buildLarge(nsB, 32 * MiB)
    // uncompressed, so only the final hash can tell: the bytes before the held-back end do flow
    const b = await startSubstituteNode({ ns: nsB, args: ['--compression', 'none'] }); nodes.push(b)
    const a = await startSubstituteNode({ bootstrap: [b], args: ['--trusted-key', join(b.dataDir, 'keys', 'nix-key.pub')] }); nodes.push(a)
    await waitForFullMesh([a, b])
    const pub = await publishAnnounced(b, [big])
    const file = pub.paths[0].files[0]
    assert.equal(file.compression, 'none')
    const bFile = join(b.dataDir, 'nar', file.url)
    const fh = await open(bFile, 'r+')
    await fh.write(Buffer.from('corrupted!'), 0, 10, Math.floor((await stat(bFile)).size / 2))
    await fh.close()

    const hp = hashPartOf(big)
    const narinfo = await getRaw(`${a.url}/${hp}.narinfo`)
    assert.equal(narinfo.status, 200, 'the trusted narinfo is served while the NAR arrives')
    assert.match(narinfo.body.toString(), new RegExp(`URL: ${file.url}`))
    const nar = await getRaw(`${a.url}/${file.url}`)
    assert.equal(nar.status, 200)
    assert.equal(nar.length, file.fileSize)
    assert.equal(nar.complete, false, 'the response must not complete')
    assert.ok(nar.body.length < file.fileSize, `fewer bytes than announced (${nar.body.length} of ${file.fileSize})`)
    assert.ok(nar.body.length > 0, 'bytes flowed before the end (served while arriving)')
    assert.equal((await counters(a)).narStreamsCut, 1)

    await until('the download is cleaned up', async () => (await readdir(join(a.dataDir, 'nar', '.guix-swarm', 'fetch'))).length === 0)
    assert.deepEqual((await readdir(join(a.dataDir, 'nar'))).filter((f) => f.endsWith('.narinfo')), [], 'A keeps no narinfo')
    assert.equal(await stat(join(a.dataDir, 'nar', file.url)).then(() => true, () => false), false, 'A keeps no NAR')
    // B is now known to lie about this file, and nobody else has it
    assert.equal((await getRaw(`${a.url}/${hp}.narinfo`)).status, 404)
  } finally {
    await stopAll(nodes)
    await nsB.destroy()
  }
})
