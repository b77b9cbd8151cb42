// sendFileRange on a real node:http server and real files: exact bytes for whole files and ranges
// across many reused-buffer chunks, a short file cut rather than padded, a client that hangs up
// mid-way releases the descriptor.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { createServer, request, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openForSend, sendFileRange } from '../../src/http/index.js'

interface Served { url: string, server: Server, results: number[] }

async function serve (file: string, opts: { start: number, length: number, announce?: number, chunkSize: number }): Promise<Served> {
  const results: number[] = []
  const server = createServer((_req, res) => {
    void (async () => {
      const fd = await openForSend(file)
      res.writeHead(200, { 'content-length': opts.announce ?? opts.length })
      results.push(await sendFileRange(res, fd, { start: opts.start, length: opts.length, chunkSize: opts.chunkSize }))
    })()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}/`, server, results }
}

/** GET; the body bytes and whether the response completed (false: the connection was cut). */
async function get (url: string, stopAfter?: number): Promise<{ body: Buffer, complete: boolean }> {
  return await new Promise((resolve) => {
    const chunks: Buffer[] = []
    let n = 0
    const req = request(url, { agent: false }, (res) => {
      res.on('data', (b: Buffer) => {
        chunks.push(b)
        n += b.length
        if (stopAfter !== undefined && n >= stopAfter) { req.destroy(); resolve({ body: Buffer.concat(chunks), complete: false }) }
      })
      res.on('end', () => { resolve({ body: Buffer.concat(chunks), complete: true }) })
      res.on('error', () => { resolve({ body: Buffer.concat(chunks), complete: false }) })
    })
    req.on('error', () => { resolve({ body: Buffer.concat(chunks), complete: false }) })
    req.end()
  })
}

async function openFds (): Promise<number> {
  return (await readdir('/proc/self/fd')).length
}

test('whole files and ranges arrive byte-exact across many reused chunks', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-sendfile-'))
  try {
    const data = randomBytes(1_000_003)
    const file = join(dir, 'f')
    await writeFile(file, data)
    for (const [start, length] of [[0, data.length], [12_345, 500_000], [data.length - 7, 7], [5, 1]]) {
      const s = await serve(file, { start, length, chunkSize: 64 * 1024 + 3 })
      try {
        const got = await get(s.url)
        assert.ok(got.complete, `range ${start}+${length} completes`)
        assert.ok(got.body.equals(data.subarray(start, start + length)), `range ${start}+${length} has the file's bytes`)
        assert.deepEqual(s.results, [length])
      } finally {
        s.server.close()
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a file shorter than promised cuts the response instead of completing it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-sendfile-'))
  try {
    const data = randomBytes(300_000)
    const file = join(dir, 'f')
    await writeFile(file, data)
    const s = await serve(file, { start: 0, length: 400_000, chunkSize: 65_536 })
    try {
      const got = await get(s.url)
      assert.equal(got.complete, false, 'the client must not see a complete response')
      assert.ok(got.body.equals(data.subarray(0, got.body.length)), 'what arrived is a prefix of the file')
      assert.ok(s.results[0] <= data.length, `sent ${s.results[0]} of at most ${data.length}`)
    } finally {
      s.server.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a client hanging up mid-way releases the file descriptor', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gs-sendfile-'))
  try {
    const file = join(dir, 'f')
    await writeFile(file, randomBytes(8 * 1024 * 1024))
    const before = await openFds()
    const s = await serve(file, { start: 0, length: 8 * 1024 * 1024, chunkSize: 65_536 })
    try {
      const got = await get(s.url, 100_000)
      assert.equal(got.complete, false)
      while (s.results.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
      assert.ok(s.results[0] < 8 * 1024 * 1024, `stopped early (${s.results[0]} bytes handed over)`)
    } finally {
      await new Promise((resolve) => s.server.close(resolve))
    }
    assert.equal(await openFds(), before, 'no descriptor left open')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
