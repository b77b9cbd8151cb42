import '../../src/polyfill.js'
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Libp2p } from 'libp2p'
import { SendBufferPool, noteEncrypted } from '../../src/transfer/send-buffers.js'
import { DirectoryNarSource, NarTransferServer, TransferClient, TruncatedStreamError, transferNoiseCrypto, type NarSource } from '../../src/transfer/index.js'
import { createEncryptedNode, tempDir } from './nodes.js'

const MiB = 1024 * 1024

describe('SendBufferPool', () => {
  it('a lent buffer comes back only once every lent byte was encrypted', () => {
    const pool = new SendBufferPool(1024, 2)
    const a = pool.take()
    pool.lend(a, 1000)
    noteEncrypted(a.subarray(0, 600))
    assert.notEqual(pool.take(), a, 'reused while 400 bytes were still unencrypted')
    noteEncrypted(a.subarray(600, 1000))
    assert.deepEqual(pool.stats(), { allocated: 2, returned: 1, free: 1 })
    assert.equal(pool.take(), a)
  })

  it('ignores bytes of buffers it never lent, and keeps at most maxFree', () => {
    const pool = new SendBufferPool(64, 1)
    const foreign = new Uint8Array(64)
    noteEncrypted(foreign)
    const a = pool.take()
    const b = pool.take()
    pool.lend(a, 64)
    pool.lend(b, 0) // nothing to send: back at once
    noteEncrypted(a)
    assert.deepEqual(pool.stats(), { allocated: 2, returned: 1, free: 1 })
  })

  it('transferNoise sealing pooled bytes returns the buffer once all are sealed', () => {
    // (Lists of pieces, as yamux hands them over, are exercised on the real connections below.)
    const pool = new SendBufferPool(64 * 1024, 2)
    const buf = pool.take()
    pool.lend(buf, 40_000)
    transferNoiseCrypto.chaCha20Poly1305Encrypt(buf.subarray(0, 20_000), new Uint8Array(12), new Uint8Array(0), randomBytes(32))
    assert.equal(pool.stats().returned, 0)
    transferNoiseCrypto.chaCha20Poly1305Encrypt(buf.subarray(20_000, 40_000), new Uint8Array(12), new Uint8Array(0), randomBytes(32))
    assert.equal(pool.stats().returned, 1)
  })
})

describe('pooled sends over real connections', { timeout: 120_000 }, () => {
  const KEY = '0a9gq7m2bkzv3r0y8x6d5c4a2n1p0l9k.zst'
  const SIZE = 40 * MiB + 12_345
  let dir: { dir: string, cleanup: () => Promise<void> }
  let file: Buffer
  let sha256: string
  const nodes: Libp2p[] = []

  before(async () => {
    dir = await tempDir('pool')
    file = randomBytes(SIZE)
    sha256 = createHash('sha256').update(file).digest('hex')
    await writeFile(join(dir.dir, KEY), file)
  })

  after(async () => {
    await Promise.all(nodes.map(async (n) => { await n.stop() }))
    await dir.cleanup()
  })

  async function makeNode (encrypter: 'transfer' | 'stock'): Promise<Libp2p> {
    const node = await createEncryptedNode(encrypter)
    nodes.push(node)
    return node
  }

  async function pair (encrypter: 'transfer' | 'stock', source: NarSource): Promise<{ server: NarTransferServer, tc: TransferClient, peer: Libp2p }> {
    const s = await makeNode(encrypter)
    const c = await makeNode('transfer')
    const server = new NarTransferServer({ libp2p: s, source })
    await server.start()
    await c.dial(s.getMultiaddrs()[0])
    return { server, tc: new TransferClient({ libp2p: c }), peer: s }
  }

  it('a reader that pauses and resumes gets every byte intact while the server reuses a few buffers', async () => {
    const { server, tc, peer } = await pair('transfer', new DirectoryNarSource({ dir: dir.dir }))
    const res = await tc.openFile(peer.peerId, KEY)
    const hash = createHash('sha256')
    let got = 0
    let paused = false
    for await (const chunk of res) {
      hash.update(chunk)
      got += chunk.length
      // Stall once mid-way, long enough for the window and socket to fill: buffers then wait
      // in yamux and noise queues, which is where an early reuse would corrupt them.
      if (!paused && got > 8 * MiB) {
        paused = true
        await new Promise((resolve) => setTimeout(resolve, 300))
      }
    }
    assert.equal(got, SIZE)
    assert.equal(hash.digest('hex'), sha256)
    const stats = server.sendBufferStats()
    assert.ok(stats.returned > 0, 'no send buffer ever came back')
    // 41 reads of 1 MiB; without reuse, one buffer each.
    assert.ok(stats.allocated <= 8, `allocated ${stats.allocated} send buffers for 41 sends`)
  })

  it('over stock noise nothing reports encryption: buffers are never reused, bytes still intact', async () => {
    const { server, tc, peer } = await pair('stock', new DirectoryNarSource({ dir: dir.dir }))
    const res = await tc.openFile(peer.peerId, KEY, { offset: 5, length: 9 * MiB })
    const hash = createHash('sha256')
    for await (const chunk of res) hash.update(chunk)
    assert.equal(hash.digest('hex'), createHash('sha256').update(file.subarray(5, 5 + 9 * MiB)).digest('hex'))
    assert.equal(server.sendBufferStats().returned, 0)
  })

  it('a file shorter than its stat is cut, not passed off as complete', async () => {
    const inner = new DirectoryNarSource({ dir: dir.dir })
    const lying: NarSource = {
      openNarinfo: async (h) => await inner.openNarinfo(h),
      statFile: async () => SIZE + 3 * MiB,
      openFile: (k, o, l) => inner.openFile(k, o, l),
      openRandomAccess: async (k) => await inner.openRandomAccess(k)
    }
    const { tc, peer } = await pair('transfer', lying)
    const res = await tc.openFile(peer.peerId, KEY, { offset: SIZE - MiB })
    let got = 0
    await assert.rejects(async () => { for await (const chunk of res) got += chunk.length }, TruncatedStreamError)
    assert.ok(got <= MiB, `got ${got} bytes of a 1 MiB tail`)
  })
})
