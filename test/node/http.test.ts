// The HTTP router and JSON helpers on a real node:http server on 127.0.0.1, port 0.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { HttpRouter, HttpServer, HttpBadRequestError, parseHostPort, readJsonBody, sendJson } from '../../src/http/index.js'

const router = new HttpRouter()
const server = new HttpServer({ router }, { host: '127.0.0.1', port: 0 })

router.route('GET', '/api/builds/:id', (_req, res, params, url) => { sendJson(res, 200, { id: params.id, q: url.searchParams.get('q') }) })
router.route('POST', '/api/echo', async (req, res) => { sendJson(res, 201, { got: await readJsonBody(req, 64) }) })
router.route('GET', '/api/bad', () => { throw new HttpBadRequestError('the id is malformed') })
router.route('GET', '/api/boom', () => { throw new Error('kaput') })
router.route('GET', '/nar/*', (_req, res, params) => { res.end(`nar:${params['*']}`) })
router.route('GET', /^\/(?<hash>[0-9a-df-np-sv-z]{32})\.narinfo$/, (_req, res, params) => { res.end(`narinfo:${params.hash}`) })

before(async () => { await server.start() })
after(async () => { await server.stop() })

async function call (method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number, type: string, text: string }> {
  return await new Promise((resolve, reject) => {
    const req = request(server.url + path, { method, headers }, (res) => {
      let text = ''
      res.on('data', (b: Buffer) => { text += b.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

test('params, query and decoding', async () => {
  const r = await call('GET', '/api/builds/a%20b?q=1')
  assert.equal(r.status, 200)
  assert.deepEqual(JSON.parse(r.text), { id: 'a b', q: '1' })
})

test('catch-all and regex routes for substitutes', async () => {
  assert.equal((await call('GET', '/nar/zstd/abc.nar.zst')).text, 'nar:zstd/abc.nar.zst')
  const h = '0'.repeat(31) + 'a'
  assert.equal((await call('GET', `/${h}.narinfo`)).text, `narinfo:${h}`)
  const miss = await call('GET', '/nope.narinfo')
  assert.equal(miss.status, 404)
  assert.match(miss.type, /text\/plain/)
})

test('unknown /api/ routes get a JSON 404, wrong methods a JSON 405', async () => {
  const r = await call('GET', '/api/nothing')
  assert.equal(r.status, 404)
  assert.equal((JSON.parse(r.text) as { error: { name: string } }).error.name, 'HttpNotFoundError')
  const m = await call('DELETE', '/api/builds/1')
  assert.equal(m.status, 405)
  assert.equal((JSON.parse(m.text) as { error: { name: string } }).error.name, 'HttpMethodNotAllowedError')
})

test('handler errors become {error: {name, message}} with their status', async () => {
  const bad = await call('GET', '/api/bad')
  assert.equal(bad.status, 400)
  assert.deepEqual(JSON.parse(bad.text), { error: { name: 'HttpBadRequestError', message: 'the id is malformed' } })
  const boom = await call('GET', '/api/boom')
  assert.equal(boom.status, 500)
  assert.deepEqual(JSON.parse(boom.text), { error: { name: 'Error', message: 'kaput' } })
})

test('readJsonBody: parses, refuses bad JSON and too large bodies by name', async () => {
  const ok = await call('POST', '/api/echo', '{"a":1}', { 'content-type': 'application/json' })
  assert.equal(ok.status, 201)
  assert.deepEqual(JSON.parse(ok.text), { got: { a: 1 } })
  const badJson = await call('POST', '/api/echo', '{"a":')
  assert.equal(badJson.status, 400)
  assert.equal((JSON.parse(badJson.text) as { error: { name: string } }).error.name, 'HttpBadJsonError')
  const big = await call('POST', '/api/echo', JSON.stringify({ a: 'x'.repeat(100) }))
  assert.equal(big.status, 413)
  assert.equal((JSON.parse(big.text) as { error: { name: string } }).error.name, 'HttpBodyTooLargeError')
})

test('HEAD is answered by GET routes', async () => {
  const r = await call('HEAD', '/api/builds/7')
  assert.equal(r.status, 200)
  assert.equal(r.text, '')
})

test('parseHostPort', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:8746'), { host: '127.0.0.1', port: 8746 })
  assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 })
  assert.deepEqual(parseHostPort(':80'), { host: '0.0.0.0', port: 80 })
  assert.throws(() => parseHostPort('localhost'), /expected HOST:PORT/)
  assert.throws(() => parseHostPort('a:99999'), /bad HTTP port/)
})

test('a busy port is a named error', async () => {
  const other = new HttpServer({ router }, { host: '127.0.0.1', port: server.address().port })
  await assert.rejects(other.start(), { name: 'HttpAddressInUseError' })
})
