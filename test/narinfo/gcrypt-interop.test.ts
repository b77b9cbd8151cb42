// libgcrypt (via guile-gcrypt) and our implementation must agree both ways, byte for byte.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  ecdsaSign, ecdsaVerify, ensureKeys, formatGuixPublicKey, generateGuixKeyPair, formatGuixSecretKey, guixSignedBody, parseGuixSecretKey,
  parseGuixSignature, parseSexp, signGuixNarinfo, toAdvanced, verifyNarinfo, type GuixKeyPair
} from '../../src/narinfo/index.js'
import { gcrypt, guileSkip } from '../helpers/guile.js'
import { VECTORS } from '../helpers/paths.js'

const skip = guileSkip()

async function withTmp (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-gcrypt-'))
  try { await fn(dir) } finally { await rm(dir, { recursive: true, force: true }) }
}

function rsOf (sigValText: string): { r: bigint, s: bigint } {
  const m = /\(r #([0-9A-F]+)#\)[\s\S]*\(s #([0-9A-F]+)#\)/.exec(sigValText)
  assert.ok(m !== null, sigValText)
  return { r: BigInt('0x' + m[1]), s: BigInt('0x' + m[2]) }
}

async function writeKey (dir: string, pair: GuixKeyPair): Promise<{ sec: string, pub: string }> {
  const sec = join(dir, `k-${Buffer.from(pair.publicKey.q).toString('hex').slice(0, 8)}.sec`)
  const pub = sec.replace(/\.sec$/, '.pub')
  await writeFile(sec, formatGuixSecretKey(pair))
  await writeFile(pub, formatGuixPublicKey(pair.publicKey))
  return { sec, pub }
}

test('libgcrypt signs exactly what we sign (RFC 6979), and both verify each other, for keys we generate', { skip }, async () => {
  await withTmp(async (dir) => {
    const test = parseGuixSecretKey(await readFile(join(VECTORS, 'guix', 'test-key.sec'), 'utf8'))
    const pairs = [test, ...Array.from({ length: 2 }, () => generateGuixKeyPair())]
    for (const pair of pairs) {
      const { sec, pub } = await writeKey(dir, pair)
      for (let i = 0; i < 2; i++) {
        const hash = createHash('sha256').update(randomBytes(40)).digest()
        const hex = hash.toString('hex').toUpperCase()
        const theirs = await gcrypt(['sign', sec, hex])
        // the printer must agree with libgcrypt's on this shape too
        assert.equal(toAdvanced(parseSexp(theirs)), theirs)
        const ours = ecdsaSign(pair.d, hash)
        assert.deepEqual(rsOf(theirs), ours, 'our RFC 6979 signature differs from libgcrypt\'s')
        assert.ok(ecdsaVerify(pair.publicKey.q, hash, rsOf(theirs)), 'our ECDSA verify accepts libgcrypt\'s signature')
        const sigFile = join(dir, 'sig')
        await writeFile(sigFile, `(sig-val (ecdsa (r #${ours.r.toString(16).padStart(64, '0')}#) (s #${ours.s.toString(16).padStart(64, '0')}#)))`)
        assert.equal((await gcrypt(['verify', pub, hex, sigFile])).trim(), 'valid')
        // and libgcrypt rejects a tampered one
        const other = createHash('sha256').update('other').digest('hex')
        assert.equal((await gcrypt(['verify', pub, other, sigFile])).trim(), 'invalid')
      }
    }
  })
})

test('a whole signed narinfo: libgcrypt accepts our Signature payload (parsed from our advanced text)', { skip }, async () => {
  await withTmp(async (dir) => {
    const keys = await ensureKeys(join(dir, 'keys'))
    const text = await readFile(join(VECTORS, 'guix', 'bayfront-hello-2.12.2.narinfo'), 'utf8')
    const signed = signGuixNarinfo(text, keys.guix, { host: 'node-a' })
    const value = signed.split('\n').find((l) => l.startsWith('Signature: '))?.slice('Signature: '.length) ?? ''
    const parts = parseGuixSignature(value)
    const payloadFile = join(dir, 'payload')
    await writeFile(payloadFile, Buffer.from(value.split(';')[2], 'base64'))
    const bodyHash = createHash('sha256').update(guixSignedBody(signed)).digest('hex')
    assert.equal(Buffer.from(parts.hash).toString('hex'), bodyHash)
    assert.equal((await gcrypt(['verify', join(dir, 'keys', 'signing-key.pub'), bodyHash, payloadFile])).trim(), 'valid')
  })
})

test('a key libgcrypt generated loads here; our signatures with it verify under libgcrypt and are identical to its own', { skip }, async () => {
  await withTmp(async (dir) => {
    for (let i = 0; i < 3; i++) {
      const keyData = await gcrypt(['genkey'])
      assert.equal(toAdvanced(parseSexp(keyData)), keyData)
      const pair = parseGuixSecretKey(keyData)
      // libgcrypt's own clamping, which generateGuixKeyPair imitates
      assert.equal(pair.d >> 254n, 1n)
      assert.equal(pair.d & 7n, 0n)
      const sec = join(dir, `g${i}.sec`)
      const pub = join(dir, `g${i}.pub`)
      await writeFile(sec, keyData)
      await writeFile(pub, formatGuixPublicKey(pair.publicKey))
      const narinfo = (await readFile(join(VECTORS, 'guix', 'self-signed-example.narinfo'), 'utf8')).replace('NarSize: 120', `NarSize: ${120 + i}`)
      const signed = signGuixNarinfo(narinfo, pair, { host: 'h' })
      assert.ok(verifyNarinfo(signed, [pair.publicKey]).ok, 'the narinfo signed with our key verifies')
      const hash = createHash('sha256').update(guixSignedBody(signed)).digest()
      const theirs = await gcrypt(['sign', sec, hash.toString('hex')])
      assert.deepEqual(rsOf(theirs), parseGuixSignature(signed.split('Signature: ')[1].trim()).sig)
      const sigFile = join(dir, 'sig')
      await writeFile(sigFile, theirs)
      assert.ok(ecdsaVerify(pair.publicKey.q, hash, rsOf(theirs)), 'our ECDSA verify accepts libgcrypt\'s signature')
      assert.equal((await gcrypt(['verify', pub, hash.toString('hex'), sigFile])).trim(), 'valid')
    }
  })
})
