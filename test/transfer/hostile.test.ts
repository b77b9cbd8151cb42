import '../../src/polyfill.js'
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { Stream } from '@libp2p/interface'
import {
  NarTransferServer, TransferClient, TransferMetrics, NAR_PROTOCOL, MAX_FRAME_SIZE, encodeFrame,
  OversizedFrameError, MalformedFrameError, TruncatedStreamError, AllProvidersFailedError
} from '../../src/transfer/index.js'
import { createNode, stopAll, tempDir, type TestNode } from './nodes.js'
import { RecordingSource, makeFile, verifySha256 } from './sources.js'
import { join } from 'node:path'

const KEY = 'hostile.nar'
const ROGUE = '/guix-swarm-test/rogue/1.0.0'

function lengthPrefix (n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n)
  return b
}

function frame (body: string | Uint8Array): Uint8Array {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  return Buffer.concat([lengthPrefix(bytes.length), bytes])
}

/** Send raw bytes, half-close, and collect everything the server answers until it ends the stream. */
async function exchange (stream: Stream, data: Uint8Array): Promise<Buffer> {
  stream.send(data)
  await stream.close()
  const chunks: Uint8Array[] = []
  try {
    for await (const c of stream) chunks.push(c instanceof Uint8Array ? c : c.subarray())
  } catch {}
  return Buffer.concat(chunks)
}

function parseHeader (buf: Buffer): Record<string, unknown> {
  const n = buf.readUInt32BE(0)
  return JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as Record<string, unknown>
}

describe('hostile peers', { timeout: 120_000 }, () => {
  let server: TestNode
  let client: TestNode
  let rogue: TestNode
  let metrics: TransferMetrics
  let file: { sha256: string }
  let cleanup: () => Promise<void>
  let dir: string

  before(async () => {
    const t = await tempDir('hostile')
    cleanup = t.cleanup
    dir = t.dir
    file = await makeFile(dir, KEY, 1024 * 1024)
    ;[server, client, rogue] = await Promise.all([createNode(), createNode(), createNode()])
    metrics = new TransferMetrics()
    await new NarTransferServer({ libp2p: server, source: new RecordingSource(dir), metrics }, { requestTimeoutMs: 300 }).start()
    await client.dial(server.getMultiaddrs()[0])
    await client.dial(rogue.getMultiaddrs()[0])
  })

  after(async () => {
    await stopAll([server, client, rogue])
    await cleanup()
  })

  const stillServes = async (): Promise<void> => {
    const tc = new TransferClient({ libp2p: client })
    const dest = join(dir, `ok-${Math.random().toString(36).slice(2)}`)
    await tc.fetchFile(KEY, { providers: [server.peerId], dest, verify: verifySha256(file.sha256) })
  }

  it('server refuses an oversized frame with a named error and keeps serving', async () => {
    const before = metrics.badRequests
    const stream = await client.dialProtocol(server.peerId, NAR_PROTOCOL)
    const answer = await exchange(stream, Buffer.concat([lengthPrefix(0xffffffff), Buffer.alloc(1000, 1)]))
    const h = parseHeader(answer)
    assert.equal(h.status, 'error')
    assert.equal(h.code, 'bad-request')
    assert.match(String(h.message), /^OversizedFrameError/)
    assert.equal(metrics.badRequests, before + 1)
    await stillServes()
  })

  it('server refuses malformed frames (not JSON, unknown type, path-like key, negative offset)', async () => {
    const bad = [
      frame('{not json'),
      frame(new Uint8Array([0xff, 0xfe, 0x7b, 0x7d])),
      frame('[1,2]'),
      frame('{"type":"delete","key":"x"}'),
      frame('{"type":"file","key":"../../etc/passwd","offset":0}'),
      frame('{"type":"file","key":"hostile.nar","offset":-1}'),
      frame('{"type":"narinfo","hashPart":"EEEE"}'),
      lengthPrefix(0)
    ]
    for (const data of bad) {
      const stream = await client.dialProtocol(server.peerId, NAR_PROTOCOL)
      const h = parseHeader(await exchange(stream, data))
      assert.equal(h.status, 'error', `for ${Buffer.from(data).toString()}`)
      assert.equal(h.code, 'bad-request')
      assert.match(String(h.message), /^MalformedFrameError/)
    }
    await stillServes()
  })

  it('server refuses a range outside the file and a truncated request', async () => {
    let stream = await client.dialProtocol(server.peerId, NAR_PROTOCOL)
    let h = parseHeader(await exchange(stream, encodeFrame({ type: 'file', key: KEY, offset: 1024 * 1024 + 1 })))
    assert.equal(h.code, 'range')
    stream = await client.dialProtocol(server.peerId, NAR_PROTOCOL)
    h = parseHeader(await exchange(stream, Buffer.concat([lengthPrefix(100), Buffer.from('{"type"')])))
    assert.match(String(h.message), /^TruncatedStreamError/)
    await stillServes()
  })

  it('server drops a peer that never sends its request', async () => {
    const stream = await client.dialProtocol(server.peerId, NAR_PROTOCOL)
    stream.send(lengthPrefix(50))
    const closed = new Promise<void>((resolve) => { stream.addEventListener('close', () => { resolve() }, { once: true }) })
    await closed
    await stillServes()
  })

  describe('client against a rogue server', () => {
    const replies: Array<{ name: string, reply: Uint8Array, error: new (...args: never[]) => Error }> = [
      { name: 'oversized header', reply: Buffer.concat([lengthPrefix(MAX_FRAME_SIZE + 1), Buffer.alloc(64)]), error: OversizedFrameError },
      { name: 'header not JSON', reply: frame('}{'), error: MalformedFrameError },
      { name: 'unknown status', reply: frame('{"status":"maybe"}'), error: MalformedFrameError },
      { name: 'more bytes than asked', reply: frame(JSON.stringify({ status: 'ok', size: 999, total: 999 })), error: MalformedFrameError },
      { name: 'short body', reply: Buffer.concat([frame(JSON.stringify({ status: 'ok', size: 10, total: 10 })), Buffer.alloc(3)]), error: TruncatedStreamError }
    ]
    let current: Uint8Array = new Uint8Array()
    before(async () => {
      await rogue.handle(ROGUE, async (stream) => {
        // Read the request, answer with whatever the test set.
        for await (const _ of stream) { break }
        stream.send(current)
        await stream.close()
      })
    })

    for (const r of replies) {
      it(`rejects ${r.name} with ${r.error.name}`, async () => {
        current = r.reply
        const tc = new TransferClient({ libp2p: client }, { protocol: ROGUE })
        await assert.rejects(async () => {
          const res = await tc.openFile(rogue.peerId, 'x.nar', { offset: 0, length: 10 })
          for await (const _ of res) { /* drain */ }
        }, r.error)
      })
    }

    it('fetchFile reports the rogue as a failed provider, naming its error', async () => {
      current = frame('}{')
      const tc = new TransferClient({ libp2p: client }, { protocol: ROGUE })
      await assert.rejects(
        tc.fetchFile('x.nar', { providers: [rogue.peerId], dest: join(dir, 'rogue'), verify: async () => {} }),
        (err: Error) => err instanceof AllProvidersFailedError && err.failures[0].error instanceof MalformedFrameError
      )
    })
  })
})
