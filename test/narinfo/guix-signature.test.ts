import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  assertNarinfoVerified, formatGuixNarinfo, generateGuixKeyPair, guixSignedBody, NarinfoBadSignatureError, parseGuixPublicKey,
  parseGuixSecretKey, parseGuixSignature, parseNarinfo, parseSexp, signGuixNarinfo, signNarinfo, toAdvanced, verifyNarinfo,
  ecdsaSign, ecdsaVerify, type GuixPublicKey
} from '../../src/narinfo/index.js'
import { VECTORS } from '../helpers/paths.js'

const vec = async (p: string): Promise<string> => await readFile(join(VECTORS, p), 'utf8')
const guixKey = (q: string): GuixPublicKey => parseGuixPublicKey(`(public-key (ecc (curve Ed25519) (q #${q}#)))`)
// FORMATS.md §4.3: the servers' keys
const BERLIN = guixKey('8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394')
const BAYFRONT = guixKey('7D602902D3A2DBB83F8A0FB98602A754C5493B0B778C8D1DD4E0F41DE14DE34F')

function signatureLine (text: string): string {
  const line = text.split('\n').find((l) => l.startsWith('Signature: '))
  assert.ok(line !== undefined, 'the narinfo has a Signature line')
  return line.slice('Signature: '.length)
}

test('the real berlin and bayfront narinfos verify with their servers\' keys, and not with the other\'s', async () => {
  const berlin = await vec('guix/berlin-hurd-hello-2.10.narinfo')
  const bayfront = await vec('guix/bayfront-hello-2.12.2.narinfo')
  const r1 = verifyNarinfo(berlin, [BERLIN])
  assert.ok(r1.ok && r1.kind === 'guix' && r1.host === 'berlin.guix.gnu.org', JSON.stringify(r1))
  const r2 = verifyNarinfo(bayfront, [BAYFRONT])
  assert.ok(r2.ok && r2.kind === 'guix' && r2.host === 'bayfront', JSON.stringify(r2))
  const r3 = verifyNarinfo(berlin, [BAYFRONT])
  assert.equal(r3.ok, false)
  assert.equal(!r3.ok && r3.reason, 'untrusted-key')
  const r4 = verifyNarinfo(berlin, [])
  assert.equal(!r4.ok && r4.reason, 'untrusted-key')
})

test('the advanced-form printer re-creates the real signature payloads byte for byte', async () => {
  for (const f of ['berlin-hurd-hello-2.10.narinfo', 'bayfront-hello-2.12.2.narinfo', 'self-signed-example.narinfo']) {
    const payload = Buffer.from(signatureLine(await vec(`guix/${f}`)).split(';')[2], 'base64').toString('utf8')
    assert.equal(toAdvanced(parseSexp(payload)), payload, f)
  }
})

for (const [file, key] of [['berlin-hurd-hello-2.10.narinfo', BERLIN], ['bayfront-hello-2.12.2.narinfo', BAYFRONT]] as const) {
  test(`${file}: changing any single signed byte breaks verification`, async () => {
    const bytes = Buffer.from(await vec(`guix/${file}`))
    const signedLength = guixSignedBody(bytes).length
    assert.ok(signedLength > 200, `the signed body is over 200 bytes, got ${signedLength}`)
    for (let i = 0; i < signedLength; i++) {
      const copy = Buffer.from(bytes)
      copy[i] ^= 0x01
      const r = verifyNarinfo(copy, [key])
      assert.equal(r.ok, false, `flipping byte ${i} (${JSON.stringify(String.fromCharCode(bytes[i]))}) still verified`)
    }
    // the signature payload itself: a flipped r or s must fail too
    const parts = parseGuixSignature(signatureLine(bytes.toString('utf8')))
    assert.equal(ecdsaVerify(key.q, parts.hash, { r: parts.sig.r ^ 1n, s: parts.sig.s }), false)
    assert.equal(ecdsaVerify(key.q, parts.hash, { r: parts.sig.r, s: parts.sig.s ^ 1n }), false)
  })
}

test('bayfront layout: the URL groups after Signature are unsigned, so changing them still verifies', async () => {
  const text = await vec('guix/bayfront-hello-2.12.2.narinfo')
  const changed = text.replace('FileSize: 68076', 'FileSize: 1').replace('URL: nar/zstd/', 'URL: http://elsewhere.example/')
  assert.notEqual(changed, text)
  const r = verifyNarinfo(changed + 'Extra: field\n', [BAYFRONT])
  assert.ok(r.ok, 'changing the unsigned URL groups and adding a field after Signature keeps it verified')
  assert.equal(r.narinfo.urls[0].fileSize, 1)
})

test('a Signature that does not cover StorePath, NarHash and References counts as unsigned', async () => {
  const text = await vec('guix/bayfront-hello-2.12.2.narinfo')
  const lines = text.split('\n')
  // move NarHash below the Signature line: the signed part changes too, but the coverage check comes first
  const nh = lines.findIndex((l) => l.startsWith('NarHash:'))
  const moved = [...lines.slice(0, nh), ...lines.slice(nh + 1, -1), lines[nh], ''].join('\n')
  const r = verifyNarinfo(moved, [BAYFRONT])
  assert.equal(!r.ok && r.reason, 'unsigned')
})

test('self-signed-example verifies with test-key.pub; re-signing its body reproduces the exact Signature line', async () => {
  const text = await vec('guix/self-signed-example.narinfo')
  const pub = parseGuixPublicKey(await vec('guix/test-key.pub'))
  const pair = parseGuixSecretKey(await vec('guix/test-key.sec'))
  assert.ok(verifyNarinfo(text, [pub]).ok, 'self-signed-example verifies with test-key.pub')
  const resigned = signGuixNarinfo(text, pair, { host: 'localhost' })
  assert.equal(resigned, text)
  assert.equal(signNarinfo(guixSignedBody(text).toString(), pair, { host: 'localhost' }), text)
})

test('signing replaces an existing Signature and the result verifies; a wrong hash in the sexp is reported as hash-mismatch', async () => {
  const text = await vec('guix/bayfront-hello-2.12.2.narinfo')
  const pair = generateGuixKeyPair()
  const signed = signGuixNarinfo(text, pair, { host: 'node-a' })
  assert.equal(signed.match(/^Signature:/gm)?.length, 1)
  assert.ok(signed.endsWith('\n') && signed.split('\n').at(-2)?.startsWith('Signature: 1;node-a;'), `the signed narinfo ends with a node-a Signature line: ${signed}`)
  const r = assertNarinfoVerified(signed, [pair.publicKey])
  assert.equal(r.kind, 'guix')
  // now every field is signed: changing a URL fails
  assert.throws(() => assertNarinfoVerified(signed.replace('URL: nar/zstd/', 'URL: nar/zstX/'), [pair.publicKey]),
    (e: Error) => e instanceof NarinfoBadSignatureError || e.name === 'NarinfoHashMismatchError')
  // a payload whose hash is not sha256(body)
  const body = guixSignedBody(signed).toString()
  const other = signGuixNarinfo(body.replace('NarSize: 282616', 'NarSize: 282617'), pair, { host: 'node-a' })
  const spliced = body + 'Signature: ' + signatureLine(other) + '\n'
  const r2 = verifyNarinfo(spliced, [pair.publicKey])
  assert.equal(!r2.ok && r2.reason, 'hash-mismatch')
})

test('a model written in guix publish order, signed, parses back to the same model', () => {
  const pair = generateGuixKeyPair()
  const n = {
    storePath: '/gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2',
    urls: [{ url: 'nar/lzip/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', compression: 'lzip', fileSize: 68076 },
      { url: 'nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', compression: 'zstd', fileSize: 73413 }],
    narHash: 'sha256:0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl',
    narSize: 282616,
    references: ['cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', 'yj053cys0724p7vs9kir808x7fivz17m-glibc-2.41'],
    deriver: 'rxw8g87bf61bwbagfq38sp5xwy28jb5d-hello-2.12.2.drv',
    sigs: []
  }
  const text = formatGuixNarinfo(n)
  assert.equal(text, [
    'StorePath: /gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2',
    'URL: nar/lzip/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', 'Compression: lzip', 'FileSize: 68076',
    'URL: nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2', 'Compression: zstd', 'FileSize: 73413',
    'NarHash: sha256:0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl', 'NarSize: 282616',
    'References: cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2 yj053cys0724p7vs9kir808x7fivz17m-glibc-2.41',
    'Deriver: rxw8g87bf61bwbagfq38sp5xwy28jb5d-hello-2.12.2.drv', ''].join('\n'))
  const signed = signGuixNarinfo(text, pair, { host: 'h' })
  const back = parseNarinfo(signed)
  assert.deepEqual({ ...back, signature: undefined }, { ...n, signature: undefined })
  assert.ok(verifyNarinfo(signed, [pair.publicKey]).ok, 'the narinfo signed with our key verifies')
})

test('ECDSA: random keys and messages sign and verify; a different message or key does not', () => {
  for (let i = 0; i < 5; i++) {
    const pair = generateGuixKeyPair()
    const h = createHash('sha256').update(`message ${i}`).digest()
    const sig = ecdsaSign(pair.d, h)
    assert.ok(ecdsaVerify(pair.publicKey.q, h, sig), 'the ECDSA signature verifies against the public key')
    assert.deepEqual(ecdsaSign(pair.d, h), sig) // deterministic (RFC 6979)
    assert.equal(ecdsaVerify(pair.publicKey.q, createHash('sha256').update('other').digest(), sig), false)
    assert.equal(ecdsaVerify(generateGuixKeyPair().publicKey.q, h, sig), false)
  }
})

test('malformed Signature values are reported as malformed', async () => {
  const text = await vec('guix/self-signed-example.narinfo')
  const pub = parseGuixPublicKey(await vec('guix/test-key.pub'))
  const value = signatureLine(text)
  for (const bad of [value.replace(/^1;/, '2;'), 'garbage', `1;h;${Buffer.from('(signature (data').toString('base64')}`, value.replace(/;[^;]*$/, ';!!!')]) {
    const r = verifyNarinfo(text.replace(value, bad), [pub])
    assert.equal(!r.ok && r.reason, 'malformed', bad)
  }
})
