// A builder given a substituter (as the node will pass its own HTTP front) fetches built inputs
// instead of rebuilding them, with signatures required.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join, normalize } from 'node:path'
import { Readable } from 'node:stream'
import { openBackend } from '../../src/daemon/index.js'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'
import { VECTORS } from '../helpers/paths.js'

test('inputs come from a signed HTTP binary cache; only the top derivation is built', { skip: nixSkip(), timeout: 60_000 }, async () => {
  const a = await nixNamespace()
  const b = await nixNamespace()
  const cache = join(a.dir, '..', 'cache')
  const server = createServer((req, res) => {
    void (async () => {
      const file = normalize(join(cache, decodeURIComponent((req.url ?? '/').split('?')[0])))
      try {
        if (!file.startsWith(cache + '/') || !(await stat(file)).isFile()) throw new Error('not a file')
        const body = await readFile(file)
        res.writeHead(200, { 'Content-Length': body.length })
        res.end(body)
      } catch {
        res.writeHead(404, { 'Content-Length': 0 })
        res.end() // 404, never 5xx, for what is not there
      }
    })()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  try {
    const n = randomBytes(6).toString('hex')
    const f = join(a.dir, '..', 'top.nix')
    await writeFile(f, `let inp = derivation { name = "sub-in-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo in ${n} > $out" ]; };
      in derivation { name = "sub-top-${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/bin/cat \${inp} > $out" ]; }`)
    const drv = (await a.exec('nix-instantiate', [f])).stdout.toString().trim()
    const A = await openBackend('nix', { runner: a.runner, env: a.env, realStoreDir: a.realStoreDir })
    const built = await A.builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })
    assert.equal(built.kind, 'success')
    const top = await A.store.readDerivation(drv)
    const inDrv = [...top.inputDrvs.keys()][0]
    const inOut = (await A.store.readDerivation(inDrv)).outputs.get('out')?.path ?? ''
    const copy = await a.exec('nix', ['--extra-experimental-features', 'nix-command', 'copy', '--to', `file://${cache}?secret-key=${join(VECTORS, 'keys', 'fmt-test-1.sec')}`, inOut])
    assert.equal(copy.code, 0, copy.stderr.toString())

    // B gets the .drv closure only.
    const B = await openBackend('nix', {
      runner: b.runner, env: b.env, realStoreDir: b.realStoreDir, inputs: 'require',
      substituters: [`http://127.0.0.1:${port}`], trustedPublicKeys: [(await readFile(join(VECTORS, 'keys', 'fmt-test-1.pub'), 'utf8')).trim()]
    })
    for (const p of await A.store.queryRequisites([drv])) {
      const { info, nar } = await A.store.exportPath(p)
      await B.store.importPath({ storePath: p, narHash: info.narHash, narSize: info.narSize, references: info.references }, Readable.from(await nar.toArray() as Buffer[]))
    }
    assert.equal(await B.store.isValid(inOut), false)
    const log: Buffer[] = []
    const rebuilt = await B.builder.build(drv, { signal: new AbortController().signal, onLog: (x) => log.push(x) })
    assert.deepEqual(rebuilt, built, Buffer.concat(log).toString())
    const text = Buffer.concat(log).toString()
    assert.ok(!text.includes(`building '${inDrv}'`), text)
    assert.ok(text.includes(`copying path '${inOut}' from 'http://127.0.0.1:${port}'`), text)
    assert.equal(await B.store.isValid(inOut), true)

    // A wrong key: the input is not trusted, so with inputs: require it is reported missing.
    const C = await openBackend('nix', {
      runner: b.runner, env: b.env, realStoreDir: b.realStoreDir, inputs: 'require',
      substituters: [`http://127.0.0.1:${port}`], trustedPublicKeys: [(await readFile(join(VECTORS, 'keys', 'wrong-key-1.pub'), 'utf8')).trim()]
    })
    const del = await b.exec('nix-store', ['--delete', (built.kind === 'success' ? built.outputs.out : ''), inOut])
    assert.equal(del.code, 0, del.stderr.toString())
    const refused = await C.builder.build(drv, { signal: new AbortController().signal, onLog: () => {} })
    assert.equal(refused.kind, 'missing-inputs', JSON.stringify(refused))
    assert.deepEqual(refused.kind === 'missing-inputs' ? refused.missing : [], [inDrv])
  } finally {
    server.close()
    await a.destroy()
    await b.destroy()
  }
})
