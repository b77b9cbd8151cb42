// Hostile and broken NARs: each is rejected with its own error class, and nothing outside
// the unpack target changes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  NAR_MAX_DEPTH, NarBadNameError, NarDestExistsError, NarDuplicateEntryError, NarFormatError, NarStringTooLongError,
  NarTooDeepError, NarTrailingDataError, NarTruncatedError, NarUnexpectedTokenError, NarUnsortedEntriesError,
  parseNar, unpackNar
} from '../../src/nar/index.js'
import { NAR_VECTORS, nar, snapshot, tempDir, type NarBuilder } from './support.js'

type ErrClass = new (...a: never[]) => Error

/** Unpacks `bytes` into ROOT/dest beside ROOT/outside and asserts the error and that only dest changed. */
async function rejectsSafely (bytes: Buffer, cls: ErrClass, label: string): Promise<void> {
  const { dir, cleanup } = tempDir()
  try {
    const outside = join(dir, 'outside')
    mkdirSync(outside)
    writeFileSync(join(outside, 'victim'), 'original')
    const dest = join(dir, 'dest')
    const before = snapshot(dir, dest)
    await assert.rejects(unpackNar([bytes], dest), (err: unknown) => {
      assert.ok(err instanceof cls, `${label}: expected ${cls.name}, got ${String(err)}`)
      if (err instanceof NarFormatError) assert.ok(err.offset >= 0 && err.offset <= bytes.length, `${label}: offset ${err.offset}`)
      return true
    })
    assert.deepEqual(snapshot(dir, dest), before, `${label}: something outside dest changed`)
  } finally {
    cleanup()
  }
}

const outsideLink = (b: NarBuilder): NarBuilder => b.symlink('../outside')

test('a symlink followed by a same-name directory entry is rejected before anything is written through it', async () => {
  const bytes = nar().dir((d) => {
    d.entry('x', outsideLink)
    d.entry('x', (n) => n.dir((e) => e.entry('victim', (f) => f.file('pwned'))))
  }).build()
  await rejectsSafely(bytes, NarDuplicateEntryError, 'symlink then same-name dir')
})

test('a symlink followed by a same-name file entry is rejected', async () => {
  const bytes = nar().dir((d) => {
    d.entry('x', (n) => n.symlink('/etc/passwd'))
    d.entry('x', (n) => n.file('pwned'))
  }).build()
  await rejectsSafely(bytes, NarDuplicateEntryError, 'symlink then same-name file')
})

test('an entry reaching through a symlinked parent (x/victim) is rejected', async () => {
  const bytes = nar().dir((d) => {
    d.entry('x', outsideLink)
    d.entry('x/victim', (n) => n.file('pwned'))
  }).build()
  await rejectsSafely(bytes, NarBadNameError, 'symlink-parent escape')
})

test("names '..', '.', empty, with NUL or '/' are rejected", async () => {
  for (const name of ['..', '.', '', 'a\0b', '../outside', '/abs']) {
    const bytes = nar().dir((d) => d.entry(name, (n) => n.file('pwned'))).build()
    await rejectsSafely(bytes, NarBadNameError, JSON.stringify(name))
  }
})

test('unsorted entries are rejected (Nix 2.8 would accept them)', async () => {
  const bytes = nar().dir((d) => {
    d.entry('b', (n) => n.file('1'))
    d.entry('a', (n) => n.file('2'))
  }).build()
  await rejectsSafely(bytes, NarUnsortedEntriesError, 'unsorted')
})

test('a symlink root followed by more archive is trailing data', async () => {
  const bytes = Buffer.concat([nar().symlink('outside').build(), nar().dir((d) => d.entry('victim', (n) => n.file('x'))).build()])
  await rejectsSafely(bytes, NarTrailingDataError, 'symlink root + trailing')
  const extra = Buffer.concat([nar().file('x').build(), Buffer.alloc(8)])
  await rejectsSafely(extra, NarTrailingDataError, 'file root + zero bytes')
})

test('absurd lengths are rejected without buffering', async () => {
  const huge = Buffer.alloc(8)
  huge.writeBigUInt64LE(1n << 40n)
  const longName = nar().tokens('(', 'type', 'directory', 'entry', '(', 'name').raw(huge).build()
  await rejectsSafely(longName, NarStringTooLongError, 'name of 2^40 bytes')
  const longTarget = nar().tokens('(', 'type', 'symlink', 'target').str(Buffer.alloc(5000, 0x61)).tokens(')').build()
  await rejectsSafely(longTarget, NarStringTooLongError, 'target of 5000 bytes')
  const beyond = Buffer.alloc(8)
  beyond.writeBigUInt64LE(1n << 62n)
  const hugeFile = nar().tokens('(', 'type', 'regular', 'contents').raw(beyond).build()
  await rejectsSafely(hugeFile, NarStringTooLongError, 'file of 2^62 bytes')
  // A large but representable file length with no data is merely truncated, not buffered.
  const big = Buffer.alloc(8)
  big.writeBigUInt64LE(1n << 45n)
  const promised = nar().tokens('(', 'type', 'regular', 'contents').raw(big).raw(Buffer.alloc(1000, 1)).build()
  await rejectsSafely(promised, NarTruncatedError, 'file promising 32 TiB')
  const longKeyword = nar().tokens('(', 'type', 'x'.repeat(100)).build()
  await rejectsSafely(longKeyword, NarUnexpectedTokenError, 'long keyword')
})

test('unknown or misplaced tokens are rejected', async () => {
  const cases: Array<[string, Buffer]> = [
    ['unknown type', nar().tokens('(', 'type', 'fifo', ')').build()],
    ['missing type', nar().tokens('(', 'regular', 'contents', 'x', ')').build()],
    ['unknown keyword in regular', nar().tokens('(', 'type', 'regular', 'size', 'x', ')').build()],
    ['entri', nar().dir((d) => d.tokens('entri', '(', 'name', 'a', 'node')).build()],
    ['no closing paren', nar().tokens('(', 'type', 'symlink', 'target', 'a', '(').build()]
  ]
  for (const [label, bytes] of cases) await rejectsSafely(bytes, NarUnexpectedTokenError, label)
})

test('empty and NUL-containing symlink targets are rejected', async () => {
  await rejectsSafely(nar().symlink('').build(), NarBadNameError, 'empty target')
  await rejectsSafely(nar().symlink('a\0b').build(), NarBadNameError, 'NUL target')
})

test(`nesting deeper than ${NAR_MAX_DEPTH} directories is rejected`, async () => {
  const b = nar()
  for (let i = 0; i <= NAR_MAX_DEPTH; i++) b.tokens('(', 'type', 'directory', 'entry', '(', 'name', 'd', 'node')
  await assert.rejects(parseNar([b.build()]), NarTooDeepError)
})

test('a NAR cut at any offset is NarTruncatedError, and unpacking it touches nothing outside', async () => {
  const bytes = readFileSync(join(NAR_VECTORS, 'small-tree.nar'))
  for (let cut = 0; cut < bytes.length; cut++) {
    await assert.rejects(parseNar([bytes.subarray(0, cut)]), NarTruncatedError, `cut at ${cut}`)
  }
  for (let cut = 0; cut < bytes.length; cut += 61) {
    await rejectsSafely(bytes.subarray(0, cut), NarTruncatedError, `unpack cut at ${cut}`)
  }
})

test('an existing DEST is refused, even a dangling symlink, and left as it was', async () => {
  const { dir, cleanup } = tempDir()
  try {
    const bytes = nar().file('x').build()
    mkdirSync(join(dir, 'd'))
    await assert.rejects(unpackNar([bytes], join(dir, 'd')), NarDestExistsError)
    symlinkSync(join(dir, 'nowhere'), join(dir, 'l'))
    await assert.rejects(unpackNar([bytes], join(dir, 'l')), NarDestExistsError)
    assert.equal(existsSync(join(dir, 'nowhere')), false)
  } finally {
    cleanup()
  }
})
