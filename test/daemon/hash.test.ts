import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { toNixBase32, fromNixBase32, parseSha256, formatSha256, BadHashError } from '../../src/daemon/index.js'
import { VECTORS } from '../helpers/paths.js'

test('nix-base32 matches the shared vectors both ways', async () => {
  const v = JSON.parse(await readFile(join(VECTORS, 'nix-base32.json'), 'utf8')) as { cases: Array<{ bytes_hex?: string, sha256_hex?: string, nix_base32: string }> }
  assert.ok(v.cases.length > 3)
  for (const c of v.cases) {
    const bytes = Buffer.from(c.bytes_hex ?? c.sha256_hex ?? '', 'hex')
    assert.ok(bytes.length > 0)
    assert.equal(toNixBase32(bytes), c.nix_base32)
    assert.deepEqual(fromNixBase32(c.nix_base32, bytes.length), bytes)
  }
})

test('parseSha256 reads every notation; bad input is a BadHashError', () => {
  const hex = '10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6'
  const d = Buffer.from(hex, 'hex')
  const b32 = formatSha256(d)
  assert.deepEqual(parseSha256(b32), d)
  assert.deepEqual(parseSha256('sha256:' + hex), d)
  assert.deepEqual(parseSha256('sha256-' + d.toString('base64')), d)
  assert.throws(() => parseSha256('sha256:xyz'), BadHashError)
  assert.throws(() => fromNixBase32('2' + 'z'.repeat(51), 32), BadHashError) // overflows 256 bits
  assert.throws(() => fromNixBase32('e'.repeat(52), 32), BadHashError)
})
