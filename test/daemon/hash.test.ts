import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseSha256, formatSha256, BadHashError } from '../../src/daemon/index.js'

test('parseSha256 reads every notation; bad input is a BadHashError', () => {
  const hex = '10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6'
  const d = Buffer.from(hex, 'hex')
  const b32 = formatSha256(d)
  assert.deepEqual(parseSha256(b32), d)
  assert.deepEqual(parseSha256('sha256:' + hex), d)
  assert.deepEqual(parseSha256('sha256-' + d.toString('base64')), d)
  assert.throws(() => parseSha256('sha256:xyz'), BadHashError)
  assert.throws(() => parseSha256('sha256:2' + 'z'.repeat(51)), BadHashError) // overflows 256 bits
  assert.throws(() => parseSha256('sha256:' + 'e'.repeat(52)), BadHashError) // not in the alphabet
})
