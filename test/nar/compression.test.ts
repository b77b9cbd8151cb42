import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable, Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  COMPRESSIONS, CompressionToolFailedError, DecompressionError, UnknownCompressionError, compressStream,
  decompressStream, guixNarUrlPath, narFileExtension, packNar, packNarSync, parseCompression, unpackNar,
  NarHashTap, type Compression
} from '../../src/nar/index.js'
import { NAR_VECTORS, makeCases, tempDir } from './support.js'

async function collect (source: Readable, through: Duplex): Promise<Buffer> {
  const parts: Buffer[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { parts.push(chunk); cb() } })
  await pipeline(source, through, sink)
  return Buffer.concat(parts)
}

const TOOL: Record<Exclude<Compression, 'none'>, [string, string[], string[]]> = {
  gzip: ['gzip', ['-c'], ['-dc']],
  zstd: ['zstd', ['-c', '-q'], ['-dc', '-q']],
  lzip: ['lzip', ['-c'], ['-dc']],
  xz: ['xz', ['-c'], ['-dc']]
}

test('parseCompression accepts exactly the five names; extensions and guix paths', () => {
  for (const c of COMPRESSIONS) assert.equal(parseCompression(c), c)
  for (const bad of ['', 'bzip2', 'br', 'ZSTD', 'gz', 'lz', 'none ']) assert.throws(() => parseCompression(bad), UnknownCompressionError)
  assert.deepEqual(COMPRESSIONS.map(narFileExtension), ['.nar', '.nar.gz', '.nar.zst', '.nar.lz', '.nar.xz'])
  assert.equal(guixNarUrlPath('lzip', 'abc-hello-2.12'), 'nar/lzip/abc-hello-2.12')
  assert.equal(guixNarUrlPath('none', 'abc-hello-2.12'), 'nar/abc-hello-2.12')
})

test('every compression round-trips a tree, interoperates with the system tool both ways', async () => {
  const { dir, cleanup } = tempDir()
  try {
    makeCases(dir)
    const src = join(dir, 'tree-with-1MiB')
    const nar = Buffer.concat([...packNarSync(src)])
    for (const c of COMPRESSIONS) {
      const tap = new NarHashTap()
      const packed = await collect(packNar(src).pipe(tap), compressStream(c))
      assert.equal(tap.digest().narSize, nar.length)
      if (c === 'none') {
        assert.ok(packed.equals(nar), 'compression none leaves the NAR bytes as they are')
      } else {
        assert.ok(packed.length < nar.length / 4, `${c} did not compress`)
        const [tool, cArgs, dArgs] = TOOL[c]
        // ours → system tool
        assert.ok(execFileSync(tool, dArgs, { input: packed, maxBuffer: 1 << 26 }).equals(nar), `${tool} cannot read our ${c}`)
        // system tool → ours
        const theirs = execFileSync(tool, cArgs, { input: nar, maxBuffer: 1 << 26 })
        assert.ok((await collect(Readable.from([theirs]), decompressStream(c))).equals(nar), `we cannot read ${tool}'s output`)
      }
      // through unpack and back
      const dest = join(dir, `out-${c}`)
      await unpackNar(Readable.from([packed]).pipe(decompressStream(c)), dest)
      assert.ok(Buffer.concat([...packNarSync(dest)]).equals(nar), `${c}: unpack(pack(tree)) then pack differs`)
    }
  } finally {
    cleanup()
  }
})

test('corrupt or truncated compressed input is an error, never short output', async () => {
  const nar = readFileSync(join(NAR_VECTORS, 'file-1MiB.nar'))
  for (const c of COMPRESSIONS.filter((c) => c !== 'none')) {
    const packed = await collect(Readable.from([nar]), compressStream(c))
    const truncated = packed.subarray(0, Math.floor(packed.length / 2))
    const expected = c === 'gzip' ? DecompressionError : CompressionToolFailedError
    await assert.rejects(collect(Readable.from([truncated]), decompressStream(c)), expected, `${c} truncated`)
    const flipped = Buffer.from(packed)
    for (let i = 20; i < flipped.length - 20; i += 7) flipped[i] ^= 0x5a
    await assert.rejects(collect(Readable.from([flipped]), decompressStream(c)), expected, `${c} corrupt`)
  }
})
