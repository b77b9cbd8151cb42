import '../../src/polyfill.js'
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import type { Libp2p } from 'libp2p'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { DirectoryNarSource, NarTransferServer, TransferClient, coalesceFrames, transferNoise, transferNoiseCrypto } from '../../src/transfer/index.js'
import { decryptWhole } from '../../src/transfer/noise.js'
import type { NoiseComponents } from '@chainsafe/libp2p-noise'
import { multiaddrConnectionPair } from '@libp2p/utils'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createEncryptedNode, tempDir } from './nodes.js'

const MiB = 1024 * 1024

function lengthPrefix (n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff)
}

function seal (plaintext: Uint8Array, key: Uint8Array, nonce: Uint8Array, ad: Uint8Array): Uint8Array {
  const out = transferNoiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key)
  return out instanceof Uint8Array ? out : out.subarray()
}

describe('transferNoise crypto and write coalescing', () => {
  it('seals byte for byte like stock noise, and stock noise opens it (wasm and node:crypto sizes)', () => {
    const key = randomBytes(32)
    const ad = randomBytes(32)
    for (const size of [0, 1, 1199, 1200, 16 * 1024, 65519]) {
      const nonce = randomBytes(12)
      const plaintext = randomBytes(size)
      const ours = seal(plaintext, key, nonce, ad)
      const stock = defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key)
      assert.deepEqual(Buffer.from(ours), Buffer.from(stock.subarray()), `ciphertext of ${size} bytes differs from stock noise`)
      const opened = defaultCrypto.chaCha20Poly1305Decrypt(ours, nonce, ad, key)
      assert.deepEqual(Buffer.from(opened.subarray()), plaintext, `stock noise could not open ${size} bytes`)
    }
  })

  it('turns [len, frame, len, frame, …] from one slab into one buffer with the same bytes', () => {
    // A new key starts a new slab; four frames of this size fit in one.
    const key = randomBytes(32)
    const pieces: Uint8Array[] = []
    for (let i = 0; i < 4; i++) {
      const frame = seal(randomBytes(60_000), key, randomBytes(12), new Uint8Array(0))
      pieces.push(lengthPrefix(frame.length), frame)
    }
    const expected = Buffer.concat(pieces)
    const out = coalesceFrames(pieces)
    assert.equal(out.length, 1, `expected one buffer, got ${out.length}`)
    assert.deepEqual(Buffer.from(out[0]), expected)
  })

  it('passes foreign pieces through and never writes in front of a sub-view', () => {
    const key = randomBytes(32)
    const a = seal(randomBytes(20_000), key, randomBytes(12), new Uint8Array(0))
    const b = seal(randomBytes(20_000), key, randomBytes(12), new Uint8Array(0))
    const foreign = randomBytes(3000)
    const sub = b.subarray(10)
    const before = Buffer.from(new Uint8Array(b.buffer, b.byteOffset, b.length))
    const pieces = [lengthPrefix(a.length), a, lengthPrefix(foreign.length), foreign, lengthPrefix(sub.length), sub]
    const expected = Buffer.concat(pieces)
    const out = coalesceFrames(pieces)
    assert.deepEqual(Buffer.concat(out), expected, 'coalesced bytes differ from the pieces in order')
    assert.equal(out.length, 5, 'only the slab frame and its prefix may merge')
    assert.ok(out.includes(foreign), 'a foreign buffer is passed on as it is')
    assert.deepEqual(Buffer.from(b), before, 'the frame behind a sub-view was modified')
  })
})

async function hashOfRange (tc: TransferClient, peer: Libp2p, key: string, offset: number, length: number): Promise<string> {
  const res = await tc.openFile(peer.peerId, key, { offset, length })
  const h = createHash('sha256')
  for await (const chunk of res) h.update(chunk)
  return h.digest('hex')
}

describe('transferNoise on real connections', { timeout: 120_000 }, () => {
  const KEY = '1b9gq7m2bkzv3r0y8x6d5c4a2n1p0l9k.zst'
  const SIZE = 24 * MiB
  let nodes: Libp2p[] = []
  let dir: { dir: string, cleanup: () => Promise<void> }
  let file: Buffer

  before(async () => {
    dir = await tempDir('noise')
    file = randomBytes(SIZE)
    await writeFile(join(dir.dir, KEY), file)
  })

  after(async () => {
    await Promise.all(nodes.map(async (n) => { await n.stop() }))
    await dir.cleanup()
  })

  const ranges = (streams: number): Array<{ offset: number, length: number, sha256: string }> => {
    const per = Math.ceil(SIZE / streams)
    return Array.from({ length: streams }, (_, i) => {
      const offset = i * per
      const length = Math.min(per, SIZE - offset)
      return { offset, length, sha256: createHash('sha256').update(file.subarray(offset, offset + length)).digest('hex') }
    })
  }

  for (const [server, client] of [['transfer', 'stock'], ['stock', 'transfer'], ['transfer', 'transfer']] as const) {
    it(`${server} noise serving, ${client} noise fetching: 4 parallel ranges arrive intact, twice over`, async () => {
      const s = await createEncryptedNode(server)
      const c = await createEncryptedNode(client)
      nodes.push(s, c)
      await new NarTransferServer({ libp2p: s, source: new DirectoryNarSource({ dir: dir.dir }) }).start()
      await c.dial(s.getMultiaddrs()[0])
      const tc = new TransferClient({ libp2p: c })
      // Twice: the second round runs on slabs recycled during the first.
      for (let round = 0; round < 2; round++) {
        const want = ranges(4)
        const got = await Promise.all(want.map(async (r) => await hashOfRange(tc, s, KEY, r.offset, r.length)))
        assert.deepEqual(got, want.map((r) => r.sha256), `round ${round}: a range arrived corrupted`)
      }
      await Promise.all([s.stop(), c.stop()])
      nodes = nodes.filter((n) => n !== s && n !== c)
    })
  }
})

describe('transferNoise receiving side', () => {
  it('decrypts frames whole on stock noise connections (no copy into a destination it never uses), bytes intact', async () => {
    const [outbound, inbound] = multiaddrConnectionPair()
    const components = async (): Promise<NoiseComponents> => ({
      privateKey: await generateKeyPair('Ed25519'),
      logger: defaultLogger(),
      upgrader: { getStreamMuxers: () => new Map() }
    }) as unknown as NoiseComponents
    const [a, b] = [transferNoise()(await components()), transferNoise()(await components())]
    const [sa, sb] = await Promise.all([
      a.secureOutbound(outbound, { skipStreamMuxerNegotiation: true }),
      b.secureInbound(inbound, { skipStreamMuxerNegotiation: true })
    ])
    // If a noise upgrade renames what decryptWhole replaces, this fails instead of the copy silently coming back.
    for (const c of [sa.connection, sb.connection]) assert.ok(Object.hasOwn(c, 'decrypt'), 'decryptWhole did not apply to this noise version')
    const data = randomBytes(3 * MiB + 5)
    const got: Uint8Array[] = []
    let n = 0
    const all = new Promise<void>((resolve) => {
      sb.connection.addEventListener('message', (evt) => {
        const d = evt.data
        got.push(d instanceof Uint8Array ? d : d.subarray())
        n += d.byteLength
        if (n >= data.length) resolve()
      })
    })
    sa.connection.send(data)
    await all
    assert.equal(createHash('sha256').update(Buffer.concat(got)).digest('hex'), createHash('sha256').update(data).digest('hex'))
    for (const c of [sa.connection, sb.connection]) c.abort(new Error('test over'))
  })

  it('leaves anything that is not stock noise alone', () => {
    assert.equal(decryptWhole({}), false)
    assert.equal(decryptWhole({ decrypt: () => new Uint8Array(0) }), false)
  })
})
