import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { packNarSync } from '../../src/nar/index.js'
import { runCli } from '../helpers/cli.js'
import { INVALID_VECTORS, NAR_VECTORS, makeCases, snapshot, tempDir } from './support.js'

test('nar hash prints the manifest hash; nar pack writes the fixture bytes to stdout and to -o', async () => {
  const { dir, cleanup } = tempDir()
  try {
    makeCases(dir)
    const h = await runCli(['nar', 'hash', join(dir, 'small-tree')])
    assert.equal(h.code, 0, h.stderr)
    assert.equal(h.stdout, 'sha256:07m0z70rklvqqh2brx7r97nhhkkkyn5yqk4fyhcs3nb9scbps91a\n')
    // file-hello.nar is pure ASCII, so it survives runCli's text stdout.
    const p = await runCli(['nar', 'pack', join(dir, 'file-hello')])
    assert.equal(p.code, 0, p.stderr)
    assert.equal(p.stdout, readFileSync(join(NAR_VECTORS, 'file-hello.nar'), 'latin1'))
    const out = join(dir, 'tree.nar.zst')
    const z = await runCli(['nar', 'pack', join(dir, 'tree-with-1MiB'), '-o', out, '--compression', 'zstd'])
    assert.equal(z.code, 0, z.stderr)
    const dest = join(dir, 'restored')
    const u = await runCli(['nar', 'unpack', dest, '-i', out, '--compression', 'zstd'])
    assert.equal(u.code, 0, u.stderr)
    assert.ok(Buffer.concat([...packNarSync(dest)]).equals(readFileSync(join(NAR_VECTORS, 'tree-with-1MiB.nar'))), 're-packing the unpacked tree gives back tree-with-1MiB.nar byte for byte')
  } finally {
    cleanup()
  }
})

test('nar unpack reads stdin, refuses an existing DEST with exit 2', async () => {
  const { dir, cleanup } = tempDir()
  try {
    const nar = readFileSync(join(NAR_VECTORS, 'small-tree.nar'))
    const dest = join(dir, 'd')
    const ok = await runCli(['nar', 'unpack', dest], { input: nar })
    assert.equal(ok.code, 0, ok.stderr)
    assert.ok(Buffer.concat([...packNarSync(dest)]).equals(nar), 're-packing the unpacked tree gives back the original NAR byte for byte')
    const again = await runCli(['nar', 'unpack', dest], { input: nar })
    assert.equal(again.code, 2)
    assert.match(again.stderr, /already exists/)
  } finally {
    cleanup()
  }
})

test('nar unpack of a bad NAR exits 2 with name and offset, removes the partial DEST, touches nothing else', async () => {
  const { dir, cleanup } = tempDir()
  try {
    mkdirSync(join(dir, 'outside'))
    writeFileSync(join(dir, 'outside', 'victim'), 'original')
    const dest = join(dir, 'd')
    const before = snapshot(dir, dest)
    const r = await runCli(['nar', 'unpack', dest, '-i', join(INVALID_VECTORS, 'duplicate.nar')])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /NarDuplicateEntryError: .*at byte offset \d+/)
    assert.equal(existsSync(dest), false)
    assert.deepEqual(snapshot(dir, dest), before)
    const cut = readFileSync(join(NAR_VECTORS, 'small-tree.nar')).subarray(0, 2000)
    const t = await runCli(['nar', 'unpack', dest], { input: cut })
    assert.equal(t.code, 2)
    assert.match(t.stderr, /NarTruncatedError: .*at byte offset 2000/)
    assert.equal(existsSync(dest), false)
  } finally {
    cleanup()
  }
})

test('nar CLI: bad compression name, missing path, unsupported file type and missing tool', async () => {
  const { dir, cleanup } = tempDir()
  try {
    const bad = await runCli(['nar', 'pack', dir, '--compression', 'bzip2'])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /unknown compression 'bzip2'/)
    const missing = await runCli(['nar', 'hash', join(dir, 'nope')])
    assert.equal(missing.code, 2)
    const dev = await runCli(['nar', 'hash', '/dev/null'])
    assert.equal(dev.code, 2)
    assert.match(dev.stderr, /NarUnsupportedFileTypeError/)
    writeFileSync(join(dir, 'f'), 'x')
    const out = join(dir, 'f.nar.zst')
    const noTool = await runCli(['nar', 'pack', join(dir, 'f'), '-o', out, '--compression', 'zstd'], { env: { ...process.env, PATH: join(dir, 'empty-path') } })
    assert.equal(noTool.code, 2)
    assert.match(noTool.stderr, /CompressionToolMissingError/)
    assert.equal(existsSync(out), false)
  } finally {
    cleanup()
  }
})

test('nar pack -o without compression writes the same bytes as nix-store --dump fixtures', async () => {
  const { dir, cleanup } = tempDir()
  try {
    makeCases(dir)
    const out = join(dir, 'tree.nar')
    const r = await runCli(['nar', 'pack', join(dir, 'tree-with-1MiB'), '-o', out])
    assert.equal(r.code, 0, r.stderr)
    assert.ok(readFileSync(out).equals(readFileSync(join(NAR_VECTORS, 'tree-with-1MiB.nar'))), 'the CLI wrote tree-with-1MiB.nar byte for byte')
  } finally {
    cleanup()
  }
})
