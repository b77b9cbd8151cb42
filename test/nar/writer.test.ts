import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { NarHashTap, NarUnsupportedFileTypeError, hashPathSync, packNarSync, writeNar } from '../../src/nar/index.js'
import { NAR_VECTORS, makeCases, tempDir } from './support.js'

test('FIFOs and sockets anywhere in the tree are refused with NarUnsupportedFileTypeError', async () => {
  const { dir, cleanup } = tempDir()
  const server = createServer()
  try {
    mkdirSync(join(dir, 'a/b'), { recursive: true })
    writeFileSync(join(dir, 'a/ok'), 'fine')
    execFileSync('mkfifo', [join(dir, 'a/b/fifo')])
    assert.throws(() => [...packNarSync(join(dir, 'a'))], (err: unknown) => err instanceof NarUnsupportedFileTypeError && /FIFO/.test(err.message) && err.path.endsWith('fifo'))
    assert.throws(() => [...packNarSync(join(dir, 'a/b/fifo'))], NarUnsupportedFileTypeError)
    const sock = join(dir, 's/sock')
    mkdirSync(join(dir, 's'))
    await new Promise<void>((resolve) => server.listen(sock, resolve))
    assert.throws(() => hashPathSync(join(dir, 's')), (err: unknown) => err instanceof NarUnsupportedFileTypeError && /socket/.test(err.message))
  } finally {
    server.close()
    cleanup()
  }
})

test('writeNar streams into a sink through a NarHashTap; recycled chunks give the same bytes', async () => {
  const { dir, cleanup } = tempDir()
  try {
    makeCases(dir)
    const src = join(dir, 'tree-with-1MiB')
    const expected = readFileSync(join(NAR_VECTORS, 'tree-with-1MiB.nar'))
    const parts: Buffer[] = []
    const tap = new NarHashTap()
    const sink = new Writable({ write (chunk: Buffer, _e, cb) { parts.push(chunk); cb() } })
    tap.pipe(sink)
    await writeNar(src, tap)
    assert.ok(Buffer.concat(parts).equals(expected), 'writeNar streamed the expected NAR bytes into the sink')
    assert.equal(tap.digest().narSize, expected.length)
    assert.equal(tap.digest().narHash, hashPathSync(src).narHash)
    // Recycled chunks must be consumed at once; copying each shows the stream is intact.
    const reused: Buffer[] = []
    for (const c of packNarSync(src, { reuseBuffers: true })) reused.push(Buffer.from(c))
    assert.ok(Buffer.concat(reused).equals(expected), 'packing with recycled buffers (copied out) gives the same NAR')
  } finally {
    cleanup()
  }
})

test('a small NAR is held in small chunks: packing one costs KiBs, not a 1 MiB chunk', () => {
  const { dir, cleanup } = tempDir()
  try {
    const file = join(dir, 'small.drv')
    writeFileSync(file, 'Derive([("out","/nix/store/x","","")],[],[],"x86_64-linux","/bin/sh",[],[])')
    for (const reuseBuffers of [false, true]) {
      const chunks = [...packNarSync(file, { reuseBuffers })]
      assert.equal(chunks.length, 1)
      // a 1 MiB chunk per small NAR (200 .drv files at a submit) kept V8 collecting all the time
      assert.ok(chunks[0].buffer.byteLength <= 64 * 1024, `reuseBuffers ${String(reuseBuffers)}: the chunk holds ${chunks[0].buffer.byteLength} bytes for a ${chunks[0].length}-byte NAR`)
    }
  } finally {
    cleanup()
  }
})
