// Which system a build is queued for when the submitter does not say: the .drv's own, read
// through the node's real Nix daemon, else the node's first system.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtemp, realpath, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { nixSkip } from '../helpers/nix.js'
import { removeDir, startNode, type TestNode } from '../helpers/swarm.js'
import { buildOn, drvPath, post } from './api.js'

const run = promisify(execFile)

test('submit without --system: the system comes from the .drv in the local Nix store, else the node\'s', { skip: nixSkip() }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-queue-sys-'))
  let node: TestNode | undefined
  try {
    // a system this node does not build for, so only reading the .drv can yield it
    const expr = join(dir, 'probe.nix')
    await writeFile(expr, `derivation { name = "gs-queue-${randomBytes(4).toString('hex')}"; system = "riscv64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }`)
    const env = { ...process.env, NIX_REMOTE: '' }
    // rooted so a concurrent garbage collection cannot take it; the root is a symlink to the .drv
    const root = (await run('nix-instantiate', ['--add-root', join(dir, 'probe.drv'), '--indirect', expr], { env })).stdout.trim()
    const drv = await realpath(root)
    assert.match(drv, /^\/nix\/store\/[0-9a-z]{32}-gs-queue-[0-9a-f]{8}\.drv$/)

    node = await startNode({ args: ['--builder', 'nix', '--system', 'x86_64-linux', '--no-mdns'], env })
    const absent = drvPath('not-in-this-store', '/nix/store')
    const guixPath = drvPath('guix-path')
    const r = await post(node, '/api/builds', { derivations: [drv, absent, guixPath] })
    assert.equal(r.status, 201, JSON.stringify(r.json))
    const ids = (r.json as { ids: string[] }).ids
    const systems = await Promise.all(ids.map(async (id) => (await buildOn(node!, id))?.system))
    assert.deepEqual(systems, ['riscv64-linux', 'x86_64-linux', 'x86_64-linux'])
    // an explicit system wins over the .drv's
    const explicit = await post(node, '/api/builds', { derivations: [drv], system: 'i686-linux' })
    assert.equal((await buildOn(node, (explicit.json as { ids: string[] }).ids[0]))?.system, 'i686-linux')
  } finally {
    if (node !== undefined) {
      await node.stop()
      await removeDir(node.dataDir)
    }
    await rm(dir, { recursive: true, force: true })
  }
})
