// The HTTP half of `npm run bench:serve`: a node's substitute front vs Debian's nginx serving the
// same cache directory statically, same run, same machine. Both servers are separate processes;
// this process only generates load (keep-alive node:http clients, bodies drained, not copied).
//   - NAR throughput: GET /nar/<base> of one large file, at 1 and at 16 concurrent connections
//   - narinfo latency: 373 sequential GET /<hash>.narinfo over one keep-alive connection
// nginx runs with one worker (the node is one event loop) and sendfile on, access log off.
// Standalone: node --import tsx bench/serve-http.ts [--size-mib N] [--rounds N]
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { encodeNixBase32 } from '../src/nar/index.js'
import { formatNixNarinfo } from '../src/narinfo/index.js'
import { NODE_FLAGS } from '../src/cli/node-flags.js'

const MiB = 1024 * 1024
const NARINFOS = 373
const fromSource = import.meta.url.endsWith('.ts')
const CLI = fileURLToPath(new URL(`../src/cli/main${fromSource ? '.ts' : '.js'}`, import.meta.url))
const CLI_ARGV = [...NODE_FLAGS, ...(fromSource ? ['--import', 'tsx', CLI] : [CLI])] // as bin/guix-swarm.js starts it

export interface HttpBenchOptions { sizeMiB: number, rounds: number }

interface Fixture { cacheDir: string, narUrl: string, narSize: number, narinfos: string[] }

/** A cache directory in the node's layout: one big NAR file (served as-is) and 373 narinfos. */
async function makeCache (dataDir: string, sizeMiB: number): Promise<Fixture> {
  const cacheDir = join(dataDir, 'nar')
  await mkdir(join(cacheDir, 'nar'), { recursive: true })
  const hashPart = (i: number): string => encodeNixBase32(createHash('sha256').update(`bench-${i}`).digest().subarray(0, 20))
  const big = `${hashPart(-1)}-bench-big`
  const fh = await open(join(cacheDir, 'nar', big), 'w')
  const hasher = createHash('sha256')
  for (let off = 0; off < sizeMiB * MiB; off += 16 * MiB) {
    const b = randomBytes(Math.min(16 * MiB, sizeMiB * MiB - off))
    hasher.update(b)
    await fh.write(b)
  }
  await fh.close()
  const narinfos: string[] = []
  const write = async (hp: string, base: string, narHash: Buffer, size: number, refs: string[]): Promise<void> => {
    const text = formatNixNarinfo({
      storePath: `/nix/store/${base}`,
      urls: [{ url: `nar/${base}`, compression: 'none', fileSize: size }],
      narHash: `sha256:${encodeNixBase32(narHash)}`,
      narSize: size,
      references: refs,
      sigs: []
    })
    await writeFile(join(cacheDir, `${hp}.narinfo`), text)
    narinfos.push(hp)
  }
  await write(hashPart(-1), big, hasher.digest(), sizeMiB * MiB, [])
  // small narinfos with realistic References lines (a few dozen store paths each)
  for (let i = 0; i < NARINFOS - 1; i++) {
    const refs = Array.from({ length: 20 }, (_, j) => `${hashPart(1000 + ((i + j) % 500))}-some-package-1.2.3`)
    const base = `${hashPart(i)}-pkg-${i}`
    await writeFile(join(cacheDir, 'nar', base), `nar ${i}`)
    await write(hashPart(i), base, createHash('sha256').update(`nar ${i}`).digest(), 5 + String(i).length, refs)
  }
  return { cacheDir, narUrl: `/nar/${big}`, narSize: sizeMiB * MiB, narinfos }
}

async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  await new Promise((resolve) => srv.close(resolve))
  return port
}

async function startNginx (dir: string, root: string): Promise<{ url: string, proc: ChildProcess }> {
  // nginx cannot report an ephemeral port: take a free one (a tiny race, fine for a bench)
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  await writeFile(conf, `user root;
worker_processes 1;
daemon off;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types { text/x-nix-narinfo narinfo; text/plain nix-cache-info; }
  default_type application/x-nix-archive;
  client_body_temp_path ${join(dir, 'ngx-body')};
  proxy_temp_path ${join(dir, 'ngx-proxy')};
  fastcgi_temp_path ${join(dir, 'ngx-fcgi')};
  uwsgi_temp_path ${join(dir, 'ngx-uwsgi')};
  scgi_temp_path ${join(dir, 'ngx-scgi')};
  server { listen 127.0.0.1:${port}; root ${root}; }
}
`)
  const proc = spawn('nginx', ['-c', conf, '-e', join(dir, 'nginx-error.log')], { stdio: ['ignore', 'inherit', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  await waitUp(`${url}/nix-cache-info`, proc)
  return { url, proc }
}

/**
 * The floor: a bare node:http process, no router, no libp2p. `/fixed` answers a fixed 1 KiB body
 * (what any Node server pays per request); `/nar/*` streams a file of the cache folder with
 * createReadStream at 1 MiB reads, the plain Node static server we measure our NAR path against.
 */
const FLOOR_SERVER = `
import { createServer } from 'node:http'
import { createReadStream, statSync } from 'node:fs'
import { join } from 'node:path'
const root = process.argv[1]
const body = Buffer.alloc(1024, 'x')
const fixed = ['content-type', 'text/x-nix-narinfo', 'content-length', String(body.length), 'cache-control', 'public, max-age=129600']
const server = createServer((req, res) => {
  if (req.url === '/fixed' || req.url === '/nix-cache-info') { res.writeHead(200, fixed); res.end(body); return }
  const file = join(root, decodeURIComponent(req.url))
  const size = statSync(file).size
  res.writeHead(200, { 'content-type': 'application/x-nix-archive', 'content-length': size })
  createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res)
})
server.listen(0, '127.0.0.1', () => { console.log(server.address().port) })
`

async function startFloor (root: string): Promise<{ url: string, proc: ChildProcess }> {
  const proc = spawn(process.execPath, [...NODE_FLAGS, '--input-type=module', '-e', FLOOR_SERVER, root], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<string>((resolve, reject) => {
    proc.stdout?.once('data', (b: Buffer) => { resolve(b.toString().trim()) })
    proc.once('exit', (code) => reject(new Error(`floor server exited with ${String(code)}`)))
  })
  const url = `http://127.0.0.1:${port}`
  await waitUp(`${url}/fixed`, proc)
  return { url, proc }
}

async function startNode (dataDir: string): Promise<{ url: string, proc: ChildProcess }> {
  // BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the node under this load
  const flags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '')
  const proc = spawn(process.execPath, [...flags, ...CLI_ARGV, 'join', '--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0',
    '--builder', 'none', '--store-dir', '/nix/store', '--no-mdns', '--swarm', `bench${process.pid}`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  await new Promise<void>((resolve, reject) => {
    proc.stdout?.on('data', (b: Buffer) => { out += b.toString(); if (/\n {2}discovery /.test(out)) resolve() })
    proc.once('exit', (code) => reject(new Error(`node exited with ${String(code)}: ${out}`)))
  })
  const url = (await readFile(join(dataDir, 'api'), 'utf8')).trim()
  await waitUp(`${url}/nix-cache-info`, proc)
  return { url, proc }
}

async function waitUp (url: string, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) throw new Error(`${url}: server exited with ${proc.exitCode}`)
    try { if ((await fetch(url)).ok) return } catch {}
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`${url} not up`)
}

/** GET, drain the body, return its length; throws on a non-200. */
async function get (agent: Agent, url: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    request(url, { agent }, (res) => {
      let n = 0
      res.on('data', (b: Buffer) => { n += b.length })
      res.on('end', () => { res.statusCode === 200 ? resolve(n) : reject(new Error(`${url}: HTTP ${String(res.statusCode)}`)) })
      res.on('error', reject)
    }).on('error', reject).end()
  })
}

/** MiB/s over `conns` connections, each fetching the NAR `perConn` times. */
async function narThroughput (base: string, f: Fixture, conns: number, perConn: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: conns })
  try {
    await get(agent, base + f.narUrl) // warm the page cache and the connection
    const t0 = performance.now()
    const per = await Promise.all(Array.from({ length: conns }, async () => {
      let bytes = 0
      for (let i = 0; i < perConn; i++) bytes += await get(agent, base + f.narUrl)
      return bytes
    }))
    const secs = (performance.now() - t0) / 1000
    const total = per.reduce((s, b) => s + b, 0)
    if (total !== f.narSize * conns * perConn) throw new Error(`short reads: ${total}`)
    return total / MiB / secs
  } finally {
    agent.destroy()
  }
}

/** Mean and p99 ms of 373 sequential narinfo GETs over one keep-alive connection (`fixed`: the same fixed URL each time). */
async function narinfoLatency (base: string, f: Fixture, fixed?: string): Promise<{ mean: number, p50: number, p99: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  try {
    await get(agent, fixed !== undefined ? `${base}${fixed}` : `${base}/${f.narinfos[0]}.narinfo`)
    const times: number[] = []
    for (const h of f.narinfos) {
      const t0 = performance.now()
      await get(agent, fixed !== undefined ? `${base}${fixed}` : `${base}/${h}.narinfo`)
      times.push(performance.now() - t0)
    }
    times.sort((a, b) => a - b)
    return { mean: times.reduce((s, t) => s + t, 0) / times.length, p50: times[Math.floor(times.length / 2)], p99: times[Math.floor(times.length * 0.99)] }
  } finally {
    agent.destroy()
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

export async function httpVsNginx (opts: HttpBenchOptions): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'guix-swarm-bench-http-'))
  let node: { proc: ChildProcess } | undefined
  let nginx: { proc: ChildProcess } | undefined
  let floor: { proc: ChildProcess } | undefined
  try {
    const dataDir = join(dir, 'node')
    const f = await makeCache(dataDir, opts.sizeMiB)
    const n = await startNode(dataDir)
    node = n
    const g = await startNginx(dir, f.cacheDir)
    nginx = g
    const fl = await startFloor(f.cacheDir)
    floor = fl
    console.log(`\n# HTTP front vs nginx ${'(1 worker, sendfile)'}: ${opts.sizeMiB} MiB NAR, ${NARINFOS} narinfos, ${opts.rounds} rounds, medians`)
    const rows: Array<[string, number, number, string]> = []
    const floorRows: Array<[string, number, number, string]> = []
    for (const conns of [1, 16]) {
      const perConn = conns === 1 ? 4 : 1
      const ours: number[] = []
      const theirs: number[] = []
      const plain: number[] = []
      for (let r = 0; r < opts.rounds; r++) {
        ours.push(await narThroughput(n.url, f, conns, perConn))
        theirs.push(await narThroughput(g.url, f, conns, perConn))
        plain.push(await narThroughput(fl.url, f, conns, perConn))
      }
      rows.push([`NAR GET, ${conns} connection(s), MiB/s`, median(ours), median(theirs), 'target ≥ 0.9'])
      floorRows.push([`NAR GET, ${conns} connection(s), MiB/s: plain Node createReadStream server`, median(plain), median(theirs), ''])
    }
    const lo: Array<{ mean: number, p50: number, p99: number }> = []
    const lt: Array<{ mean: number, p50: number, p99: number }> = []
    const lf: Array<{ mean: number, p50: number, p99: number }> = []
    for (let r = 0; r < opts.rounds; r++) {
      lo.push(await narinfoLatency(n.url, f))
      lt.push(await narinfoLatency(g.url, f))
      lf.push(await narinfoLatency(fl.url, f, '/fixed'))
    }
    floorRows.push([`${NARINFOS} sequential GETs, mean ms: bare node:http, fixed 1 KiB`, median(lf.map((l) => l.mean)), median(lt.map((l) => l.mean)), ''])
    floorRows.push([`${NARINFOS} sequential GETs, p50 ms: bare node:http, fixed 1 KiB`, median(lf.map((l) => l.p50)), median(lt.map((l) => l.p50)), ''])
    const l1 = lo[lo.length - 1]
    const l2 = lt[lt.length - 1]
    rows.push([`${NARINFOS} sequential narinfo GETs, mean ms`, median(lo.map((l) => l.mean)), median(lt.map((l) => l.mean)), 'target ≤ 1.2'])
    rows.push([`${NARINFOS} sequential narinfo GETs, p50 ms`, median(lo.map((l) => l.p50)), median(lt.map((l) => l.p50)), 'target ≤ 1.2'])
    console.log('| measure | node | nginx | ratio node/nginx | target |')
    console.log('|---|---|---|---|---|')
    for (const [what, a, b, target] of rows) console.log(`| ${what} | ${a.toFixed(a < 10 ? 3 : 0)} | ${b.toFixed(b < 10 ? 3 : 0)} | ${(a / b).toFixed(2)} | ${target} |`)
    console.log('\nThe floor, same run (what Node itself costs, no router, no libp2p):')
    console.log('| measure | floor | nginx | ratio floor/nginx |')
    console.log('|---|---|---|---|')
    for (const [what, a, b] of floorRows) console.log(`| ${what} | ${a.toFixed(a < 10 ? 3 : 0)} | ${b.toFixed(b < 10 ? 3 : 0)} | ${(a / b).toFixed(2)} |`)
    console.log(`narinfo latency detail: node p50 ${l1.p50.toFixed(3)} ms p99 ${l1.p99.toFixed(3)} ms; nginx p50 ${l2.p50.toFixed(3)} ms p99 ${l2.p99.toFixed(3)} ms; total for ${NARINFOS}: node ${(l1.mean * NARINFOS).toFixed(0)} ms, nginx ${(l2.mean * NARINFOS).toFixed(0)} ms`)
  } finally {
    for (const s of [node, nginx, floor]) {
      if (s == null || s.proc.exitCode !== null) continue
      s.proc.kill('SIGTERM')
      await new Promise((resolve) => s.proc.once('exit', resolve))
    }
    await rm(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  const num = (flag: string, dflt: number): number => { const i = args.indexOf(flag); return i >= 0 ? Number(args[i + 1]) : dflt }
  httpVsNginx({ sizeMiB: num('--size-mib', 256), rounds: num('--rounds', 3) }).catch((err: Error) => { console.error(err); process.exit(1) })
}
