import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import {
  decodeNixBase32, encodeNixBase32, nixBase32Length, NixBase32AlphabetError, NixBase32LengthError,
  NixBase32OverflowError, formatNarHash
} from '../../src/nar/index.js'
import { createHash } from 'node:crypto'
import { VECTORS } from '../helpers/paths.js'

interface Case { bytes_hex?: string, input_utf8?: string, sha256_hex?: string, nix_base32: string }
const vectors = JSON.parse(readFileSync(join(VECTORS, 'nix-base32.json'), 'utf8')) as { cases: Case[] }

test('nix-base32 encodes and decodes every shared vector', () => {
  assert.ok(vectors.cases.length >= 8, 'the base32 vectors hold at least 8 cases')
  for (const c of vectors.cases) {
    const hex = c.bytes_hex ?? c.sha256_hex
    assert.ok(hex !== undefined, 'every base32 case has a hex form')
    const bytes = Buffer.from(hex, 'hex')
    assert.equal(encodeNixBase32(bytes), c.nix_base32)
    assert.equal(Buffer.from(decodeNixBase32(c.nix_base32)).toString('hex'), hex)
    if (c.input_utf8 !== undefined) {
      const digest = createHash('sha256').update(c.input_utf8).digest()
      assert.equal(formatNarHash(digest), `sha256:${c.nix_base32}`)
    }
  }
})

test('nix-base32 round-trips arbitrary byte strings', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
    const s = encodeNixBase32(bytes)
    assert.equal(s.length, nixBase32Length(bytes.length))
    assert.match(s, /^[0-9abcdfghijklmnpqrsvwxyz]*$/)
    assert.deepEqual(decodeNixBase32(s, bytes.length), bytes)
  }))
})

test('nix-base32 decoding is strict', () => {
  const good = '04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw'
  for (const bad of ['e', 'o', 'u', 't', 'A', '-', 'é']) {
    assert.throws(() => decodeNixBase32(bad + good.slice(1)), NixBase32AlphabetError, bad)
  }
  assert.throws(() => decodeNixBase32(good.slice(1)), NixBase32LengthError)
  assert.throws(() => decodeNixBase32(good, 20), NixBase32LengthError)
  // 52 characters hold 260 bits; a leading digit above 1 sets bits past 256.
  assert.throws(() => decodeNixBase32('2' + good.slice(1)), NixBase32OverflowError)
  assert.throws(() => decodeNixBase32('z' + good.slice(1)), NixBase32OverflowError)
  assert.equal(decodeNixBase32('1' + good.slice(1)).length, 32)
})
