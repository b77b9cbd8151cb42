import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  formatGuixNarinfo, formatNixNarinfo, narHashBytes, NarinfoBadFieldError, NarinfoCrlfError, NarinfoMissingFieldError, NarinfoStoreDirError,
  NarinfoUrlGroupError, normalizeNarHash, parseNarinfo, sniffStoreDir
} from '../../src/narinfo/index.js'
import { VECTORS } from '../helpers/paths.js'

const vec = async (p: string): Promise<string> => await readFile(join(VECTORS, p), 'utf8')
const NIX = { storeDir: '/nix/store' }

async function narinfosUnder (dir: string): Promise<Array<{ name: string, text: string }>> {
  const out: Array<{ name: string, text: string }> = []
  for (const sub of (await readdir(join(VECTORS, dir), { withFileTypes: true })).filter((d) => d.isDirectory())) {
    for (const f of (await readdir(join(VECTORS, dir, sub.name))).filter((f) => f.endsWith('.narinfo'))) {
      out.push({ name: `${sub.name}/${f}`, text: await vec(join(dir, sub.name, f)) })
    }
  }
  return out
}

test('every nix-copy-* narinfo parses and the Nix writer gives back the same bytes', async () => {
  const files = await narinfosUnder('nix-cache')
  assert.ok(files.length >= 21, `at least 21 narinfo fixtures, found ${files.length}`)
  for (const { name, text } of files) {
    assert.equal(formatNixNarinfo(parseNarinfo(text, NIX)), text, name)
  }
})

// variants that the Nix 2.8 client accepted as narinfos (var-results.txt); some failed later for NAR reasons
const REJECTED_AS_NARINFO = new Set(['var-crlf', 'var-no-url'])

test('narinfo-variants: all Nix-parsable files round-trip through the model; CRLF and missing URL are rejected', async () => {
  const files = await narinfosUnder('narinfo-variants')
  assert.ok(files.length >= 40, `at least 40 narinfo fixtures, found ${files.length}`)
  let exact = 0
  for (const { name, text } of files) {
    const variant = name.split('/')[0]
    if (REJECTED_AS_NARINFO.has(variant)) {
      assert.throws(() => parseNarinfo(text, NIX), variant === 'var-crlf' ? NarinfoCrlfError : NarinfoMissingFieldError, name)
      continue
    }
    const n = parseNarinfo(text, NIX)
    const again = formatNixNarinfo(n)
    // the Nix writer sorts references and Sig lines like Nix's sets, and writes no System or Guix Signature
    const { system: _s, signature: _g, ...nixPart } = n
    assert.deepEqual(parseNarinfo(again, NIX), { ...nixPart, references: [...n.references].sort(), sigs: [...new Set(n.sigs)].sort() }, name)
    if (again === text) exact++
  }
  // most variants are written in nix copy order, so they come back byte for byte
  assert.ok(exact >= 30, `only ${exact} exact round trips`)
})

test('the real Guix narinfos parse, with URL groups kept in order', async () => {
  const bay = parseNarinfo(await vec('guix/bayfront-hello-2.12.2.narinfo'))
  assert.equal(bay.storePath, '/gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2')
  assert.deepEqual(bay.urls, [
    { url: 'nar/lzip/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', compression: 'lzip', fileSize: 68076 },
    { url: 'nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', compression: 'zstd', fileSize: 73413 }
  ])
  assert.equal(bay.system, 'x86_64-linux')
  assert.equal(bay.references.length, 3)
  assert.match(bay.signature ?? '', /^1;bayfront;/)
  const berlin = await vec('guix/berlin-hurd-hello-2.10.narinfo')
  const b = parseNarinfo(berlin)
  assert.equal(b.urls[1].compression, 'lzip')
  // berlin is in the older guix publish layout (System before Deriver): the Guix writer reproduces it exactly
  assert.equal(formatGuixNarinfo(b), berlin)
})

test('store directory: /gnu/store by default, configurable, and checked', async () => {
  const nixText = await vec('nix-cache/nix-copy-none/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo')
  assert.throws(() => parseNarinfo(nixText), NarinfoStoreDirError)
  assert.equal(parseNarinfo(nixText, NIX).storePath, '/nix/store/jbdqi2fvjlgf33p2pslhd2a15byd760f-fmt-trivial')
  assert.equal(sniffStoreDir(nixText), '/nix/store')
  const guixText = await vec('guix/self-signed-example.narinfo')
  assert.throws(() => parseNarinfo(guixText, NIX), NarinfoStoreDirError)
  assert.throws(() => parseNarinfo(guixText.replace('/gnu/store/jbdq', '/gnu/store/sub/jbdq')), NarinfoStoreDirError)
  assert.throws(() => parseNarinfo(guixText.replace('jbdqi2fvjlgf33p2pslhd2a15byd760f-fmt', 'jbdqi2fvjlgf33p2pslhd2a15byd760e-fmt')), NarinfoBadFieldError)
})

test('References: empty line keeps its trailing space; a missing line means no references', async () => {
  const text = await vec('nix-cache/nix-copy-none/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo')
  assert.match(text, /^References: \n/m)
  const n = parseNarinfo(text, NIX)
  assert.deepEqual(n.references, [])
  assert.match(formatNixNarinfo(n), /^References: \n/m)
  assert.match(formatGuixNarinfo({ ...n, storePath: n.storePath.replace('/nix/', '/gnu/') }), /^References: \n/m)
  assert.deepEqual(parseNarinfo(text.replace('References: \n', ''), NIX).references, [])
})

test('malformed input is rejected with a named error', async () => {
  const good = await vec('nix-cache/nix-copy-none/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo')
  const cases: Array<[string, string, string]> = [
    ['CRLF', good.replace(/\n/g, '\r\n'), 'NarinfoCrlfError'],
    ['lone CR', good.replace('NarSize: 120', 'NarSize: 120\r'), 'NarinfoCrlfError'],
    ['no StorePath', good.replace(/^StorePath:.*\n/m, ''), 'NarinfoMissingFieldError'],
    ['no NarHash', good.replace(/^NarHash:.*\n/m, ''), 'NarinfoMissingFieldError'],
    ['no NarSize', good.replace(/^NarSize:.*\n/m, ''), 'NarinfoMissingFieldError'],
    ['bad NarSize', good.replace('NarSize: 120', 'NarSize: 12x'), 'NarinfoBadFieldError'],
    ['negative FileSize', good.replace('FileSize: 120', 'FileSize: -1'), 'NarinfoBadFieldError'],
    ['bad NarHash', good.replace(/NarHash: sha256:1/, 'NarHash: sha256:e'), 'NarinfoBadFieldError'],
    ['md5 NarHash', good.replace(/NarHash: .*/, 'NarHash: md5:00000000000000000000000000'), 'NarinfoBadFieldError'],
    ['duplicate NarHash', good + 'NarHash: sha256:0000000000000000000000000000000000000000000000000000\n', 'NarinfoBadFieldError'],
    ['bad reference', good.replace('References: ', 'References: ../etc'), 'NarinfoBadFieldError'],
    ['line without colon', good + 'garbage\n', 'NarinfoFormatError'],
    ['text after a blank line', good + '\nFoo: bar\n', 'NarinfoFormatError'],
    ['two URLs, one Compression', good + 'URL: nar/other.nar\n', 'NarinfoUrlGroupError'],
    ['invalid UTF-8', Buffer.concat([Buffer.from(good), Buffer.from([0x46, 0x3a, 0x20, 0xff, 0x0a])]).toString('latin1'), '']
  ]
  for (const [what, text, name] of cases) {
    if (name === '') continue
    assert.throws(() => parseNarinfo(text, NIX), (e: Error) => e.name === name, what)
  }
  assert.throws(() => parseNarinfo(Buffer.concat([Buffer.from(good), Buffer.from([0x46, 0x3a, 0x20, 0xff, 0x0a])]), NIX), (e: Error) => e.name === 'NarinfoFormatError')
  assert.equal(new NarinfoUrlGroupError('x').name, 'NarinfoUrlGroupError')
})

test('unknown fields are ignored; repeated URL groups are zipped in order; trailing blank line tolerated', async () => {
  const text = await vec('narinfo-variants/var-guix-style-two-urls-first-none/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo')
  const n = parseNarinfo(text + 'Foo: bar\nSystem: x86_64-linux\n\n', NIX)
  assert.equal(n.urls.length, 2)
  assert.equal(n.urls[0].compression, 'none')
  assert.equal(n.system, 'x86_64-linux')
  assert.equal(formatNixNarinfo(n).includes('Foo'), false)
})

test('NarHash forms: base32, hex and SRI decode to the same digest', () => {
  const b32 = 'sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h'
  const bytes = narHashBytes(b32)
  const hex = `sha256:${Buffer.from(bytes).toString('hex')}`
  const sri = `sha256-${Buffer.from(bytes).toString('base64')}`
  assert.deepEqual(narHashBytes(hex), bytes)
  assert.deepEqual(narHashBytes(sri), bytes)
  assert.equal(normalizeNarHash(hex), b32)
  assert.equal(normalizeNarHash(sri), b32)
})

test('the writers refuse values that would inject lines', async () => {
  const n = parseNarinfo(await vec('guix/self-signed-example.narinfo'))
  assert.throws(() => formatGuixNarinfo({ ...n, urls: [{ url: 'nar/x\nNarHash: evil' }] }), NarinfoBadFieldError)
  assert.throws(() => formatNixNarinfo({ ...n, deriver: 'x\ny' }), NarinfoBadFieldError)
})
