import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  ensureKeys, generateKeys, KeyExistsError, parseGuixSecretKey, parseGuixPublicKey, parseNixSecretKey, parseNixPublicKey,
  formatGuixPublicKey, formatGuixSecretKey, formatNixPublicKey, formatNixSecretKey, GuixKeyError, NixKeyError, parsePublicKey, parseSecretKey,
  parsePublicKeys, parseGuixAcl
} from '../../src/narinfo/index.js'
import { VECTORS } from '../helpers/paths.js'

const vec = async (p: string): Promise<string> => await readFile(join(VECTORS, p), 'utf8')

async function withTmp (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-keys-'))
  try { await fn(dir) } finally { await rm(dir, { recursive: true, force: true }) }
}

test('Guix test key loads, its q equals d·B, and both files re-print byte for byte', async () => {
  const sec = await vec('guix/test-key.sec')
  const pub = await vec('guix/test-key.pub')
  const pair = parseGuixSecretKey(sec)
  assert.equal(formatGuixSecretKey(pair), sec)
  assert.equal(formatGuixPublicKey(pair.publicKey), pub)
  assert.deepEqual(parseGuixPublicKey(pub).q, pair.publicKey.q)
})

test('a Guix secret key whose q does not match d is rejected', async () => {
  const sec = (await vec('guix/test-key.sec')).replace('#02A87AE7', '#02A87AE8')
  assert.throws(() => parseGuixSecretKey(sec), (e: Error) => e instanceof GuixKeyError)
})

test('Nix keys load and re-print exactly (no trailing newline)', async () => {
  const sec = await vec('keys/fmt-test-1.sec')
  const pub = await vec('keys/fmt-test-1.pub')
  const pair = parseNixSecretKey(sec)
  assert.equal(pair.name, 'fmt-test-1')
  assert.equal(formatNixSecretKey(pair), sec)
  assert.equal(formatNixPublicKey(pair.publicKey), pub)
  assert.deepEqual(parseNixPublicKey(pub).key, pair.publicKey.key)
  assert.throws(() => parseNixPublicKey('x:AAAA'), (e: Error) => e instanceof NixKeyError)
})

test('parsePublicKey / parseSecretKey detect the key kind', async () => {
  assert.equal(parsePublicKey(await vec('guix/test-key.pub')).kind, 'guix')
  assert.equal(parsePublicKey(await vec('keys/fmt-test-1.pub')).kind, 'nix')
  assert.equal(parseSecretKey(await vec('guix/test-key.sec')).kind, 'guix')
  assert.equal(parseSecretKey(await vec('keys/wrong-key-1.sec')).kind, 'nix')
})

test('ensureKeys creates the four files with the right modes, then reloads the same keys', async () => {
  await withTmp(async (tmp) => {
    const dir = join(tmp, 'keys')
    const a = await ensureKeys(dir, { name: 'node-a-1' })
    assert.equal((await stat(dir)).mode & 0o777, 0o700)
    assert.equal((await stat(join(dir, 'signing-key.sec'))).mode & 0o777, 0o600)
    assert.equal((await stat(join(dir, 'nix-key.sec'))).mode & 0o777, 0o600)
    const nixPub = await readFile(join(dir, 'nix-key.pub'), 'utf8')
    assert.match(nixPub, /^node-a-1:[A-Za-z0-9+/]{43}=$/)
    assert.ok(!(await readFile(join(dir, 'nix-key.sec'), 'utf8')).endsWith('\n'), 'nix-key.sec has no trailing newline')
    const guixSec = await readFile(join(dir, 'signing-key.sec'), 'utf8')
    assert.match(guixSec, /^\(private-key \n \(ecc \n {2}\(curve Ed25519\)\n {2}\(q #[0-9A-F]{64}#\)\n {2}\(d #[0-9A-F]+#\)\n {2}\)\n \)\n$/)
    const b = await ensureKeys(dir)
    assert.deepEqual(b.guix.publicKey.q, a.guix.publicKey.q)
    assert.equal(b.guix.d, a.guix.d)
    assert.equal(b.nix.name, 'node-a-1')
    assert.deepEqual(b.nix.publicKey.key, a.nix.publicKey.key)
    // a lost .pub is re-derived from the secret key
    await rm(join(dir, 'signing-key.pub'))
    await ensureKeys(dir)
    assert.equal(parseGuixPublicKey(await readFile(join(dir, 'signing-key.pub'), 'utf8')).q.toString(), a.guix.publicKey.q.toString())
  })
})

test('generated Guix keys follow libgcrypt: bit 254 set, bit 255 and low 3 bits clear', async () => {
  await withTmp(async (dir) => {
    const k = await ensureKeys(dir)
    assert.equal(k.guix.d >> 254n, 1n)
    assert.equal(k.guix.d & 7n, 0n)
  })
})

test('generateKeys refuses to overwrite unless forced', async () => {
  await withTmp(async (dir) => {
    const a = await generateKeys(dir, { name: 'x-1' })
    await assert.rejects(generateKeys(dir), (e: Error) => e instanceof KeyExistsError)
    const b = await generateKeys(dir, { force: true, name: 'x-1' })
    assert.notDeepEqual(a.guix.publicKey.q, b.guix.publicKey.q)
    await writeFile(join(dir, 'extra'), '')
  })
})

test('two ensureKeys racing on one directory end up with one and the same key set', async () => {
  await withTmp(async (tmp) => {
    const dir = join(tmp, 'race')
    const [a, b, c] = await Promise.all([ensureKeys(dir), ensureKeys(dir), ensureKeys(dir)])
    assert.deepEqual(a.guix.publicKey.q, b.guix.publicKey.q)
    assert.deepEqual(b.guix.publicKey.q, c.guix.publicKey.q)
    assert.deepEqual(a.nix.publicKey.key, c.nix.publicKey.key)
    const { readdir } = await import('node:fs/promises')
    assert.deepEqual((await readdir(dir)).sort(), ['nix-key.pub', 'nix-key.sec', 'signing-key.pub', 'signing-key.sec'])
  })
})

test('parsePublicKeys reads a Guix ACL and whitespace-separated Nix keys', async () => {
  const guixPub = await vec('guix/test-key.pub')
  const acl = `(acl \n (entry \n  ${guixPub.trim()}\n  (tag \n   (guix import)\n   )\n  )\n (entry (public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#))) (tag (guix import))))\n`
  const keys = parsePublicKeys(acl)
  assert.equal(keys.length, 2)
  assert.ok(keys.every((k) => k.kind === 'guix'), 'both ACL entries parse as guix keys')
  assert.equal(parseGuixAcl(acl).length, 2)
  const nix = parsePublicKeys(`${await vec('keys/fmt-test-1.pub')} ${await vec('keys/wrong-key-1.pub')}\n`)
  assert.deepEqual(nix.map((k) => k.kind === 'nix' ? k.name : ''), ['fmt-test-1', 'wrong-key-1'])
  assert.equal(parsePublicKeys(guixPub).length, 1)
})
