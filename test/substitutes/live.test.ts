// LiveNar with a fake transfer client whose bytes the test releases: the last HOLD_BACK bytes stay
// unreadable until the NAR verified, even once every byte arrived; a wrong NAR fails its readers,
// marks its one provider bad and leaves no temp file; a provider that stops is taken over by the
// next from the same offset.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { encodeNixBase32 } from '../../src/nar/index.js'
import type { Narinfo } from '../../src/narinfo/index.js'
import { HOLD_BACK, LiveNar, SubstituteStreamVerifyError, type LiveNarInit } from '../../src/substitutes/index.js'
import type { FileResponse } from '../../src/transfer/index.js'

const KEY = 'k.none'

type Server = (offset: number, signal?: AbortSignal) => Promise<FileResponse>

/**
 * A provider serving `data` in `chunk`-byte pieces; with `gate`, it stops before returning until
 * gate resolves; with `stallAt`, it goes silent there until the request is aborted.
 */
function provider (data: Buffer, chunk: number, opts: { gate?: Promise<void>, stopAt?: number, stallAt?: number } = {}): Server {
  return async (offset: number, signal?: AbortSignal): Promise<FileResponse> => {
    const end = opts.stopAt ?? data.length
    return {
      size: data.length - offset,
      total: data.length,
      cancel: () => {},
      async * [Symbol.asyncIterator] () {
        for (let p = offset; p < end; p += chunk) {
          if (opts.stallAt !== undefined && p >= opts.stallAt) {
            await new Promise((_resolve, reject) => { signal?.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
          }
          yield data.subarray(p, Math.min(end, p + chunk))
        }
        if (end < data.length) throw new Error('provider went away')
        await opts.gate
      }
    }
  }
}

async function setup (servers: Server[], narinfoOf: Buffer, size: number, idleTimeoutMs?: number): Promise<{ live: LiveNar, dir: string, bad: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'gs-live-'))
  const peers: PeerId[] = await Promise.all(servers.map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))))
  const bad: string[] = []
  const narinfo: Narinfo = {
    storePath: '/nix/store/00000000000000000000000000000000-x',
    urls: [{ url: 'nar/x', compression: 'none', fileSize: size }],
    narHash: `sha256:${encodeNixBase32(createHash('sha256').update(narinfoOf).digest())}`,
    narSize: narinfoOf.length,
    references: [],
    sigs: []
  }
  const client: LiveNarInit['client'] = {
    openFile: async (peer, _key, o) => await servers[peers.findIndex((p) => p.equals(peer))](o?.offset ?? 0, o?.signal),
    isBad: (_k, peer) => bad.includes(peer.toString()),
    markBad: (_k, peer) => { bad.push(peer.toString()) }
  }
  const live = new LiveNar({ narinfo, text: 'narinfo', url: 'nar/x', compression: 'none', size, key: KEY, providers: peers, client, tempPath: join(dir, 'x.live'), idleTimeoutMs })
  return { live, dir, bad }
}

test('every byte arrived: all but the last HOLD_BACK are readable until the hash matched, then all', async () => {
  const data = randomBytes(HOLD_BACK * 5 + 123)
  let open = (): void => {}
  const gate = new Promise<void>((resolve) => { open = resolve })
  const { live, dir } = await setup([provider(data, 10_000, { gate })], data, data.length)
  try {
    await live.attach()
    await live.wait(data.length - HOLD_BACK - 1)
    while (live.received < data.length) await new Promise((resolve) => setTimeout(resolve, 5))
    assert.ok(live.releasable < data.length, `the end is held back although everything arrived (${live.releasable})`)
    assert.equal(live.releasable, data.length - HOLD_BACK)
    open()
    await live.wait(data.length - 1)
    assert.equal(live.releasable, data.length)
    const buf = Buffer.alloc(data.length)
    assert.equal(await live.read(buf, 0, data.length), data.length)
    assert.ok(buf.equals(data), 'readers see exactly the bytes received')
    live.release()
    await live.verified
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a wrong NAR: readers fail at the held-back end, the provider is marked bad, no temp file stays', async () => {
  const data = randomBytes(HOLD_BACK * 3)
  const wrong = Buffer.from(data)
  wrong[wrong.length - 1] ^= 1
  const { live, dir, bad } = await setup([provider(wrong, 4096)], data, data.length)
  try {
    await live.attach()
    await assert.rejects(live.wait(data.length - 1), SubstituteStreamVerifyError)
    assert.ok(live.releasable <= data.length - HOLD_BACK, `never released the end (${live.releasable})`)
    await assert.rejects(live.verified, SubstituteStreamVerifyError)
    assert.equal(bad.length, 1)
    live.release()
    assert.deepEqual(await readdir(dir), [])
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a provider that stops mid-way is continued by the next from the same offset', async () => {
  const data = randomBytes(HOLD_BACK * 4 + 7)
  const { live, dir, bad } = await setup([provider(data, 5000, { stopAt: 100_003 }), provider(data, 7000)], data, data.length)
  try {
    await live.attach() // before it settles: a reader keeps the descriptor open
    await live.verified
    const buf = Buffer.alloc(data.length)
    assert.equal(await live.read(buf, 0, data.length), data.length)
    assert.ok(buf.equals(data), 'the file is the two providers\' bytes in order')
    assert.equal(live.contributors.size, 2)
    assert.deepEqual(bad, [])
    live.release()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a provider that goes silent is dropped after the idle timeout and the next one finishes', async () => {
  const data = randomBytes(HOLD_BACK * 4)
  const { live, dir, bad } = await setup([provider(data, 5000, { stallAt: 50_000 }), provider(data, 7000)], data, data.length, 200)
  try {
    await live.attach()
    await live.verified
    const buf = Buffer.alloc(data.length)
    assert.equal(await live.read(buf, 0, data.length), data.length)
    assert.ok(buf.equals(data), 'the silent provider\'s prefix and the next one\'s rest, in order')
    assert.equal(live.contributors.size, 2)
    assert.deepEqual(bad, [], 'silence is not lying')
    live.release()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
