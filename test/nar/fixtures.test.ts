import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import {
  NarBadMagicError, NarBadNameError, NarBadPaddingError, NarDuplicateEntryError, NarExecutableMarkerError,
  NarFormatError, NarParser, NarTrailingDataError, NarUnsortedEntriesError, hashNarStream, hashPathSync,
  packNarSync, parseNar, unpackNar, type NarVisitor
} from '../../src/nar/index.js'
import { INVALID_VECTORS, NAR_VECTORS, makeCases, tempDir } from './support.js'

interface ManifestEntry { file: string, nar_size: number, sha256_hex: string, nar_hash: string }
const manifest = JSON.parse(readFileSync(join(NAR_VECTORS, 'MANIFEST.json'), 'utf8')) as ManifestEntry[]

test('packing the recreated fixture trees gives the fixture NARs byte for byte, with the manifest hash and size', async () => {
  const { dir, cleanup } = tempDir()
  try {
    makeCases(dir)
    const fixtures = readdirSync(NAR_VECTORS).filter((f) => f.endsWith('.nar'))
    assert.ok(fixtures.length >= 9, `at least 9 NAR fixtures, found ${fixtures.length}`)
    for (const f of fixtures) {
      const src = join(dir, f.slice(0, -'.nar'.length))
      const expected = readFileSync(join(NAR_VECTORS, f))
      const ours = Buffer.concat([...packNarSync(src)])
      assert.ok(ours.equals(expected), `${f}: our NAR differs from the fixture`)
      const m = manifest.find((e) => e.file === f)
      assert.ok(m !== undefined, `${f} missing from MANIFEST.json`)
      const d = hashPathSync(src)
      assert.equal(d.narHash, m.nar_hash, f)
      assert.equal(d.narSize, m.nar_size, f)
      assert.equal(Buffer.from(d.sha256).toString('hex'), m.sha256_hex, f)
      assert.equal((await hashNarStream([expected])).narHash, m.nar_hash, f)
    }
  } finally {
    cleanup()
  }
})

test('every fixture NAR unpacks and packs back to the same bytes', async () => {
  const { dir, cleanup } = tempDir()
  try {
    for (const f of readdirSync(NAR_VECTORS).filter((f) => f.endsWith('.nar'))) {
      const bytes = readFileSync(join(NAR_VECTORS, f))
      const dest = join(dir, f)
      const r = await unpackNar([bytes], dest, { hash: true })
      assert.equal(r.narSize, bytes.length)
      assert.equal(r.digest?.narHash, manifest.find((e) => e.file === f)?.nar_hash)
      assert.ok(Buffer.concat([...packNarSync(dest)]).equals(bytes), f)
    }
  } finally {
    cleanup()
  }
})

const invalid: Record<string, new (...a: never[]) => NarFormatError> = {
  'bad-magic.nar': NarBadMagicError,
  'duplicate.nar': NarDuplicateEntryError,
  'exec-nonempty-marker.nar': NarExecutableMarkerError,
  'name-dotdot.nar': NarBadNameError,
  'name-empty.nar': NarBadNameError,
  'name-slash.nar': NarBadNameError,
  'nonzero-pad.nar': NarBadPaddingError,
  'trailing-garbage.nar': NarTrailingDataError,
  'unsorted.nar': NarUnsortedEntriesError
}

test('every invalid fixture is rejected with its own error class and an offset; ok-sorted.nar is accepted', async () => {
  const files = readdirSync(INVALID_VECTORS).filter((f) => f.endsWith('.nar'))
  for (const f of files) {
    const bytes = readFileSync(join(INVALID_VECTORS, f))
    if (f === 'ok-sorted.nar') {
      assert.equal(await parseNar([bytes]), bytes.length)
      continue
    }
    const cls = invalid[f]
    assert.ok(cls !== undefined, `no expectation for ${f}`)
    await assert.rejects(parseNar([bytes]), (err: unknown) => {
      assert.ok(err instanceof cls, `${f}: got ${String(err)}`)
      assert.equal((err as NarFormatError).name, cls.name)
      const off = (err as NarFormatError).offset
      assert.ok(Number.isInteger(off) && off >= 0 && off <= bytes.length, `${f}: offset ${off}`)
      return true
    })
  }
})

/** Records the visitor events as strings, to compare parses of the same bytes. */
function record (): { v: NarVisitor, events: string[] } {
  const events: string[] = []
  let data: Buffer[] = []
  const v: NarVisitor = {
    directory: (p) => events.push(`d ${p.map((n) => n.toString('hex')).join('/')}`),
    fileStart: (p, x, s) => { events.push(`f ${p.map((n) => n.toString('hex')).join('/')} ${x} ${s}`); data = [] },
    fileData: (c) => data.push(Buffer.from(c)),
    fileEnd: () => events.push(`c ${Buffer.concat(data).toString('hex')}`),
    symlink: (p, t) => events.push(`l ${p.map((n) => n.toString('hex')).join('/')} ${t.toString('hex')}`)
  }
  return { v, events }
}

test('parsing does not depend on how the input is chunked (one byte at a time, random splits)', () => {
  const bytes = readFileSync(join(NAR_VECTORS, 'small-tree.nar'))
  const whole = record()
  const p = new NarParser(whole.v)
  p.push(bytes)
  p.end()
  assert.ok(whole.events.length > 20, `parsing the whole NAR yields more than 20 events, got ${whole.events.length}`)

  const bytewise = record()
  const q = new NarParser(bytewise.v)
  for (let i = 0; i < bytes.length; i++) q.push(bytes.subarray(i, i + 1))
  q.end()
  assert.deepEqual(bytewise.events, whole.events)

  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 40 }), (cuts) => {
    const r = record()
    const parser = new NarParser(r.v)
    let last = 0
    for (const c of [...cuts].sort((a, b) => a - b)) { parser.push(bytes.subarray(last, c)); last = c }
    parser.push(bytes.subarray(last))
    parser.end()
    assert.deepEqual(r.events, whole.events)
  }), { numRuns: 200 })
})
