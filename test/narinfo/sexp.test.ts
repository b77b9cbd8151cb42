import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { atom, parseSexp, sexpEquals, SexpParseError, toAdvanced, toCanonical, type Sexp } from '../../src/narinfo/index.js'
import { gcrypt, guileSkip } from '../helpers/guile.js'

// Outputs of libgcrypt 1.10.1's gcry_sexp_sprint(GCRYSEXP_FMT_ADVANCED) via guile-gcrypt 0.4 for these inputs.
const LIBGCRYPT_PRINTS: Array<[string, string]> = [
  ['(a (b c) d)', '(a \n (b c)\n d)\n'],
  ['(a "hello world")', '(a "hello world")\n'],
  ['(a (b) (c (d e) f) g)', '(a \n (b)\n (c \n  (d e)\n  f)\n g)\n'],
  ['(a)', '(a)\n'],
  ['(a #00# #FF01# "x")', '(a #00# #FF01# x)\n'],
  ['(1:a1:1)', '(a "1")\n'],
  ['(a (b (c)))', '(a \n (b \n  (c)\n  )\n )\n'],
  ['(a "")', '(a "")\n'],
  ['(3:abc 2:\x01\x02)', '(abc #0102#)\n'],
  ['(a-b c.d e/f _g:h *i+j=)', '(a-b c.d e/f _g:h *i+j=)\n']
]

test('the advanced printer matches libgcrypt on assorted shapes', () => {
  for (const [input, expected] of LIBGCRYPT_PRINTS) assert.equal(toAdvanced(parseSexp(input)), expected, input)
})

test('canonical, advanced, quoted, hex and base64 syntaxes parse to the same tree', () => {
  const tree: Sexp = [atom('data'), [atom('flags'), atom('rfc6979')], [atom('hash'), atom('sha256'), Uint8Array.of(1, 2, 0xff)]]
  const forms = [
    '(4:data(5:flags7:rfc6979)(4:hash6:sha2563:\x01\x02\xff))',
    '(data (flags rfc6979) (hash sha256 #0102FF#))',
    '(data\n (flags "rfc6979")\n (hash 6:sha256 |AQL/|))',
    '(data (flags rfc6979) (hash sha256 3#0102ff#))'
  ]
  for (const f of forms) {
    const bytes = Buffer.from(f, 'latin1')
    assert.ok(sexpEquals(parseSexp(bytes), tree), f)
  }
  assert.equal(Buffer.from(toCanonical(tree)).toString('latin1'), forms[0])
  assert.deepEqual(parseSexp('("a\\nb\\x41\\101")'), [Uint8Array.from(Buffer.from('a\nbAA'))])
})

test('bad s-expressions are rejected with SexpParseError', () => {
  for (const bad of ['(a', 'a)', '(a))', '(5:abc)', '(#0#)', '(#zz#)', '(a [b] c)', '("abc)', '(3#0102#)', '(a) (b)', '']) {
    assert.throws(() => parseSexp(bad), SexpParseError, JSON.stringify(bad))
  }
})

test('libgcrypt prints what we print, for trees we build (live, through guile-gcrypt)', { skip: guileSkip() }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-sexp-'))
  try {
    const trees: Sexp[] = [
      [atom('x'), Uint8Array.from(Buffer.from('has space')), Uint8Array.of(0x41, 0x0a, 0x42), Uint8Array.of(0x7f, 0x20), atom('9lives')],
      [[atom('a')], [[atom('b'), atom('c')]], atom('d'), [atom('e'), [atom('f')], atom('g')]],
      [atom('t'), Uint8Array.of(0x22, 0x27, 0x5c, 0x09, 0x0d), Uint8Array.of(0x01, 0x41), Uint8Array.of(0x41, 0x7f)]
    ]
    for (const [i, tree] of trees.entries()) {
      const file = join(dir, `t${i}`)
      await writeFile(file, toCanonical(tree))
      assert.equal(await gcrypt(['print', file]), toAdvanced(tree))
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
