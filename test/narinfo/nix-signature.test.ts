import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  nixFingerprint, parseNarinfo, parseNixPublicKey, parseNixSecretKey, signNarinfo, signNixNarinfo, verifyNarinfo,
  writeSignedNarinfo, generateGuixKeyPair, nixKeyPairFromSeed, type PublicKey
} from '../../src/narinfo/index.js'
import { VECTORS } from '../helpers/paths.js'

const vec = async (p: string): Promise<string> => await readFile(join(VECTORS, p), 'utf8')
const NIX = { storeDir: '/nix/store' }
const HASHES = ['1vcj92qpi63d4394ravi48lkbfrkzcsp', '7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc', 'jbdqi2fvjlgf33p2pslhd2a15byd760f']

test('fingerprint: full sorted reference paths, comma-joined, NarHash in base32', async () => {
  const n = parseNarinfo(await vec('nix-cache/nix-copy-signed/7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc.narinfo'), NIX)
  assert.equal(nixFingerprint(n), '1;/nix/store/7b4kwf9lbwrirjyfxy3n9h6sqfnlp8mc-fmt-dep;sha256:051pxx1s8q7i3xdn4nirxn45njqq726kbr02v78na0ap67pzsvcc;776;' +
    '/nix/store/1vcj92qpi63d4394ravi48lkbfrkzcsp-fmt-multi-dev,/nix/store/jbdqi2fvjlgf33p2pslhd2a15byd760f-fmt-trivial')
  const leaf = parseNarinfo(await vec('nix-cache/nix-copy-signed/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo'), NIX)
  assert.ok(nixFingerprint(leaf).endsWith(';120;'), `the fingerprint ends with the NAR size ;120;: ${nixFingerprint(leaf)}`)
})

test('nix-copy-signed verifies with fmt-test-1.pub and not with wrong-key-1.pub', async () => {
  const good = parseNixPublicKey(await vec('keys/fmt-test-1.pub'))
  const wrong = parseNixPublicKey(await vec('keys/wrong-key-1.pub'))
  // same name as the signer, other key bytes
  const impostor = { ...wrong, name: 'fmt-test-1' }
  for (const h of HASHES) {
    const text = await vec(`nix-cache/nix-copy-signed/${h}.narinfo`)
    const ok = verifyNarinfo(text, [good])
    assert.ok(ok.ok && ok.kind === 'nix' && ok.keyId === 'fmt-test-1', h)
    const r1 = verifyNarinfo(text, [wrong])
    assert.equal(!r1.ok && r1.reason, 'untrusted-key', h)
    const r2 = verifyNarinfo(text, [impostor])
    assert.equal(!r2.ok && r2.reason, 'bad-signature', h)
    assert.ok(verifyNarinfo(text, [wrong, good]).ok, 'the good key verifies even after a wrong one in the trusted list')
    // any change to a fingerprinted field breaks it
    const r3 = verifyNarinfo(text.replace(/NarSize: (\d+)/, (_m, d: string) => `NarSize: ${Number(d) + 1}`), [good])
    assert.equal(!r3.ok && r3.reason, 'bad-signature', h)
  }
})

test('signing nix-copy-none with fmt-test-1.sec reproduces nix-copy-signed byte for byte', async () => {
  const pair = parseNixSecretKey(await vec('keys/fmt-test-1.sec'))
  for (const h of HASHES) {
    const unsigned = await vec(`nix-cache/nix-copy-none/${h}.narinfo`)
    const signed = await vec(`nix-cache/nix-copy-signed/${h}.narinfo`)
    assert.equal(signNixNarinfo(unsigned, pair), signed, h)
    assert.equal(signNarinfo(unsigned, pair), signed, h)
    // signing again replaces our own Sig instead of adding a second
    assert.equal(signNixNarinfo(signed, pair), signed, h)
    const keys = { nix: pair, guix: generateGuixKeyPair() }
    assert.equal(writeSignedNarinfo(parseNarinfo(unsigned, NIX), 'nix', keys), signed, h)
  }
})

test('several Sig lines: a wrong one and a right one verify; a second signer is added in sorted order', async () => {
  const good = parseNixPublicKey(await vec('keys/fmt-test-1.pub'))
  const multi = await vec('narinfo-variants/var-multi-sig-wrong-then-right/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo')
  assert.ok(verifyNarinfo(multi, [good]).ok, 'a narinfo with several signatures verifies with the one good key')
  const second = nixKeyPairFromSeed('another-1', new Uint8Array(32).fill(7))
  const text = signNixNarinfo(await vec('nix-cache/nix-copy-signed/jbdqi2fvjlgf33p2pslhd2a15byd760f.narinfo'), second)
  assert.equal(text.match(/^Sig: /gm)?.length, 2)
  const r = verifyNarinfo(text, [second.publicKey])
  assert.ok(r.ok && r.keyId === 'another-1', `verified by key another-1: ${JSON.stringify(r)}`)
})

// What Nix 2.8 concluded about each signed variant (var-results.txt / varD-results.txt), as far as
// the signature goes: these must not verify, every other variant's signature must.
const SIGNATURE_REJECTED: Record<string, string> = {
  'var-no-sig': 'unsigned',
  'var-narhash-base16-signed-as-base16': 'bad-signature',
  'var-sig-space-separated-two': 'malformed',
  'var-crlf': 'malformed',
  'var-no-url': 'malformed',
  'varD-no-references-line': 'bad-signature',
  'varD-sig-fp-refs-space-separated': 'bad-signature',
  'varD-sig-fp-refs-without-storedir': 'bad-signature',
  'varD-sig-over-unsorted-refs': 'bad-signature'
}

test('narinfo-variants: our signature verdicts agree with the Nix 2.8 client', async () => {
  const trusted: PublicKey[] = [parseNixPublicKey(await vec('keys/fmt-test-1.pub'))]
  const dirs = (await readdir(join(VECTORS, 'narinfo-variants'), { withFileTypes: true })).filter((d) => d.isDirectory())
  assert.ok(dirs.length >= 40, `at least 40 fixture directories, found ${dirs.length}`)
  for (const d of dirs) {
    const f = (await readdir(join(VECTORS, 'narinfo-variants', d.name))).find((x) => x.endsWith('.narinfo'))
    assert.ok(f !== undefined, `${d.name} holds a .narinfo file`)
    const r = verifyNarinfo(await vec(join('narinfo-variants', d.name, f)), trusted)
    const expected = SIGNATURE_REJECTED[d.name]
    if (expected === undefined) assert.ok(r.ok, `${d.name}: ${r.ok ? '' : r.message}`)
    else assert.equal(r.ok ? 'ok' : r.reason, expected, d.name)
  }
})
