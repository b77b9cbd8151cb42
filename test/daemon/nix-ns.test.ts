// The per-node /nix helper: a process started in a namespace sees that node's store and no other.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { nixSkip } from '../helpers/nix.js'
import { nixNamespace } from '../helpers/nix-ns.js'

test('spawn and exec run inside the node\'s own /nix', { skip: nixSkip() }, async () => {
  const a = await nixNamespace()
  const b = await nixNamespace()
  try {
    const added = await a.exec('nix-store', ['--add', '/etc/hostname'])
    assert.equal(added.code, 0, added.stderr.toString())
    const path = added.stdout.toString().trim()
    assert.ok((await readdir(a.realStoreDir)).includes(path.slice('/nix/store/'.length)), `${path} landed in A's real store directory`)
    assert.equal((await b.exec('nix-store', ['--check-validity', path])).code, 1)

    // A long-running program (as a guix-swarm node will be) started with spawn sees A's store.
    const child = a.spawn(process.execPath, ['-e', 'console.log(require("fs").readdirSync("/nix/store").join("\\n"))'], { stdio: ['ignore', 'pipe', 'inherit'] })
    const out: Buffer[] = []
    child.stdout?.on('data', (x: Buffer) => out.push(x))
    const code = await new Promise((resolve) => child.on('close', resolve))
    assert.equal(code, 0)
    assert.ok(Buffer.concat(out).toString().split('\n').includes(path.slice('/nix/store/'.length)), `a process spawned in A's namespace sees ${path}`)
    assert.equal((await b.exec('/bin/sh', ['-c', `test -e ${path}`])).code, 1, 'B cannot see it')
  } finally {
    await a.destroy()
    await b.destroy()
  }
})
