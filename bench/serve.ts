// npm run bench:serve — how fast NARs leave a node.
//
// Part 1 (here): 256 MiB over /guix-swarm/nar/1.0.0 between two libp2p nodes (tcp + noise +
// yamux) in two OS processes on 127.0.0.1, against ONE raw-TCP reference measured in the same
// run. The reference is the fastest plain Node socket we know: a separate process pipes
// fs.createReadStream(file, { highWaterMark: 1 MiB }) into a net.Socket; the receiver counts
// 'data' bytes (nothing else). 1 MiB was the fastest read size here (64 KiB: ~750 MiB/s, 256 KiB:
// ~1400, 1 MiB: ~1800, 4 MiB: ~1200 on an idle machine), and it does not change with the libp2p
// configuration under test. The libp2p receiver only counts bytes too (no hashing, no disk).
// All configurations stay up for the whole run and rounds are interleaved (raw, then every
// configuration, the order rotating), so drifting machine load hits them alike. Columns:
//   - raw TCP MiB/s: the median over ALL raw rounds; "ratio of medians" divides by it;
//   - "median of per-round ratios": each libp2p round against the raw round just before it;
//   - CPU ms/MiB: user+system CPU per MiB moved, sender (server process) and receiver (this
//     process), medians. Steadier than MiB/s on a shared machine, though contention inflates
//     it too (raw TCP's sender: 0.4 idle, 1.1 with a load average of 12).
//
// Measured 2026-11-27 on the shared 2-core machine, load average 7–15 (other helpers' tests), so
// MiB/s swung ±50% between runs; CPU per MiB is the steadier signal. Raw TCP: 0.4 ms/MiB sender,
// 0.26 receiver when idle (~1100–1800 MiB/s); under this load 460–750 MiB/s.
//   before (stock noise, 256 KiB sends):   sender 1.9–2.0 ms/MiB, receiver 1.45–1.6; 266–288 MiB/s
//   + 1 MiB sends (stock noise):           sender 1.45–1.6,       receiver 1.2–1.35
//   + transferNoise (256 KiB sends):       sender 1.6–1.75,       receiver 1.3–1.4
//   settled (transferNoise, 1 MiB sends):  sender 1.5–1.6,        receiver 1.1–1.15; 345–409 MiB/s
//   in the same runs (ratio 0.55–0.68 to that run's raw TCP; one run 162 with the sender at 3.5)
// The sender is the bottleneck (one core per side). Of its ~1.5 ms/MiB (perf record), ChaCha20-
// Poly1305 takes ~0.35 and the kernel's TCP send ~0.2: already more than raw TCP's whole
// sender. 0.7 of raw TCP would need the rest (yamux, noise framing, streams, GC: ~0.9) to go.
//
// Second pass (same day, 12 runs of `--match settled --no-http`, load 2–10): the runs with the
// sender at 3.0–3.5 ms/MiB are V8 garbage collection. --trace-gc-nvp of such a sender: full
// mark-compacts back to back (10–20 per 256 MiB), each 4–7 ms of pause plus 40–70 ms of
// background marking, with ~45 KB promoted; --trace-incremental-marking starts them on the
// old-generation allocation limit and the memory reducer. A process either does this for its
// whole life or not at all ("full GCs per round" column), in every row alike (3–6 of 12
// runs), and so does the raw reference's sender (7–9 per round in most runs: its 1.1 ms/MiB
// mode; 0.4 ms/MiB and ~2000 MiB/s without). Neither reusing the read buffers (pooled reads)
// nor sealing into V8 strings instead of Buffers (tried, undone) made it rarer.
//   row (median over 12 runs)       sender ms/MiB no storm / storm   receiver   ratio (range)
//   previous settled                1.56 / 3.0–3.1                   1.15       0.52 (0.19–0.68)
//   + pooled reads                  1.48 / 2.4–2.6                   1.17       0.51 (0.27–0.66)
//   + decryptWhole                  1.59 / 2.9–3.2                   1.04       0.58 (0.17–0.72)
//   settled (both)                  1.40 / 2.4–2.8                   1.07       0.47 (0.32–0.73)
// The settled ratio reached 0.7 in 2 of 12 runs (0.71, 0.73): no GC storm on the libp2p sender
// while the raw sender had one. Against a raw sender without one (~2000 MiB/s) 0.7 needs
// 1400 MiB/s, under 0.7 ms/MiB per side, when node:crypto's ChaCha20-Poly1305 alone costs
// 0.55–0.65 ms/MiB per side here (OpenSSL itself: 0.26; Node 20 allocates and copies each
// output twice).
// Each raw round is followed by one of the encryption floor (cipherChild): the same file as
// noise transport messages through node:crypto over a plain socket, no libp2p. It bounds what
// any noise-encrypted transport in Node can reach against raw TCP on this machine.
// Part 2 (bench/serve-http.ts): the node's HTTP substitute front vs nginx serving the same cache
// directory: NAR GETs at 1 and 16 connections, 373 sequential narinfo GETs.
//
// Options: --size-mib N (256), --rounds N (5 for part 1, 3 for part 2), --quick (settled
// configuration only), --match A|B (only configurations whose label contains A or B),
// --http-only, --no-http, --p2p-only (no raw rounds: for `node --cpu-prof` or `perf record` of
// the libp2p path alone).
import '../src/polyfill.js'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { createServer, connect as netConnect } from 'node:net'
import { cpus, loadavg, tmpdir } from 'node:os'
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { DirectoryNarSource, NarTransferServer, SEND_CHUNK_SIZE, TransferClient, transferNoise, transferYamuxOptions, type NarSource } from '../src/transfer/index.js'
import { httpVsNginx } from './serve-http.js'
import { NODE_FLAGS } from '../src/cli/node-flags.js'

const MiB = 1024 * 1024
const KEY = 'bench.nar'
/** Read size of the raw-TCP reference sender (see the header). */
const RAW_HIGH_WATER_MARK = MiB

interface Knobs {
  label: string
  /** yamux maxStreamWindowSize; undefined = the library default (16 MiB). */
  window?: number
  /** bytes per read()/send() on the serving side. */
  chunk: number
  /** parallel streams over the one connection, each pulling an equal range. */
  streams: number
  /**
   * connection encrypter: libp2p-noise as shipped, transferNoise (src/transfer/noise.ts), or
   * transferNoise with stock noise's receive path (decryptWhole off: the state before it).
   */
  noise: 'stock' | 'transfer' | 'transfer-stock-decrypt'
  /**
   * how the server reads the file: 'pooled' = positional reads into send buffers it reuses
   * (DirectoryNarSource.openRandomAccess, src/transfer/send-buffers.ts); 'stream' = a fresh
   * buffer per chunk from an fs read stream (sources without positional reads; all rows before
   * the pooled reads).
   */
  reads: 'pooled' | 'stream'
}

const SETTLED: Knobs = { label: 'settled: transferNoise (decryptWhole), transferYamuxOptions (4 MiB window), SEND_CHUNK_SIZE (1 MiB), pooled reads', window: transferYamuxOptions.streamOptions.maxStreamWindowSize, chunk: SEND_CHUNK_SIZE, streams: 1, noise: 'transfer', reads: 'pooled' }

const SWEEP: Knobs[] = [
  { label: 'library defaults: stock noise, 16 MiB window, 64 KiB chunks, stream reads', chunk: 64 * 1024, streams: 1, noise: 'stock', reads: 'stream' },
  { label: 'before: stock noise, 4 MiB window, 256 KiB chunks, stream reads', window: 4 * MiB, chunk: 256 * 1024, streams: 1, noise: 'stock', reads: 'stream' },
  { label: 'stock noise, 4 MiB window, 1 MiB chunks, stream reads', window: 4 * MiB, chunk: MiB, streams: 1, noise: 'stock', reads: 'stream' },
  { label: 'transferNoise, 4 MiB window, 256 KiB chunks, stream reads', window: 4 * MiB, chunk: 256 * 1024, streams: 1, noise: 'transfer', reads: 'stream' },
  { label: 'transferNoise, 4 MiB window, 1 MiB chunks, 2 streams, pooled reads', window: 4 * MiB, chunk: MiB, streams: 2, noise: 'transfer', reads: 'pooled' },
  { label: 'previous settled: transferNoise (stock decrypt), 4 MiB window, 1 MiB chunks, stream reads', window: 4 * MiB, chunk: MiB, streams: 1, noise: 'transfer-stock-decrypt', reads: 'stream' },
  { label: 'previous settled + pooled reads', window: 4 * MiB, chunk: MiB, streams: 1, noise: 'transfer-stock-decrypt', reads: 'pooled' },
  { label: 'previous settled + decryptWhole', window: 4 * MiB, chunk: MiB, streams: 1, noise: 'transfer', reads: 'stream' },
  SETTLED
]

function yamuxFor (k: Knobs): Parameters<typeof yamux>[0] {
  if (k.window === undefined) return {}
  return { streamOptions: { maxStreamWindowSize: k.window, maxReadBufferLength: Math.max(8 * MiB, k.window * 2) } }
}

async function makeNode (k: Knobs): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [k.noise === 'stock' ? noise() : transferNoise({ decryptWhole: k.noise === 'transfer' })],
    streamMuxers: [yamux(yamuxFor(k))],
    services: { identify: identify() }
  })
}

/** CPU milliseconds (user + system) this process used since `since`. */
function cpuMs (since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since)
  return (d.user + d.system) / 1000
}

// ---- the serving processes ----

/** Garbage collections of this process so far: main-thread pause time, and how many were full (mark-compact). */
interface GcTally { ms: number, major: number }

function watchGc (): GcTally {
  const tally: GcTally = { ms: 0, major: 0 }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      tally.ms += e.duration
      if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) tally.major++
    }
  }).observe({ entryTypes: ['gc'] })
  return tally
}

interface Usage { cpu: NodeJS.CpuUsage, gc: GcTally }

/** Answers one line on stdin ("cpu") with this process's CPU and GC so far; ends on stdin's end. */
function serveControl (onEnd: () => Promise<void>): void {
  const gc = watchGc()
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    if (line === 'cpu') process.stdout.write(JSON.stringify({ cpu: process.cpuUsage(), gc }) + '\n')
  })
  rl.on('close', () => { void onEnd().then(() => process.exit(0)) })
}

async function p2pChild (dir: string, k: Knobs): Promise<void> {
  const node = await makeNode(k)
  const dirSource = new DirectoryNarSource({ dir, chunkSize: k.chunk })
  // 'stream': the same source without positional reads, so the server takes openFile's chunks.
  const source: NarSource = k.reads === 'pooled'
    ? dirSource
    : { openNarinfo: async (h) => await dirSource.openNarinfo(h), statFile: async (f) => await dirSource.statFile(f), openFile: (f, o, l) => dirSource.openFile(f, o, l) }
  await new NarTransferServer({ libp2p: node, source }, { sendBufferSize: k.chunk }).start()
  process.stdout.write(JSON.stringify({ addr: node.getMultiaddrs()[0].toString(), peer: node.peerId.toString() }) + '\n')
  serveControl(async () => { await node.stop() })
}

async function rawChild (dir: string): Promise<void> {
  // On connect, send the whole file, then end.
  const raw = createServer((socket) => {
    createReadStream(join(dir, KEY), { highWaterMark: RAW_HIGH_WATER_MARK }).pipe(socket)
  })
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve))
  process.stdout.write(JSON.stringify({ port: (raw.address() as { port: number }).port }) + '\n')
  serveControl(async () => { raw.close() })
}

/**
 * The encryption floor: the file as noise transport messages (ChaCha20-Poly1305 through
 * node:crypto, ≤ 65535 bytes with a 2-byte length, the cipher libp2p's noise fixes) over a plain
 * socket, read into one reused 1 MiB buffer, each MiB's messages leaving in one writev. No
 * libp2p, yamux or streams: what any noise transport in Node costs at least.
 */
async function cipherChild (dir: string, keyHex: string): Promise<void> {
  const key = Buffer.from(keyHex, 'hex')
  const srv = createServer((socket) => {
    void (async () => {
      const fh = await open(join(dir, KEY))
      const buf = Buffer.allocUnsafe(MiB)
      let n = 0n
      try {
        for (let pos = 0; ;) {
          const { bytesRead } = await fh.read(buf, 0, MiB, pos)
          if (bytesRead === 0) break
          pos += bytesRead
          socket.cork()
          for (let off = 0; off < bytesRead; off += NOISE_MAX_PLAINTEXT) {
            const plain = buf.subarray(off, Math.min(off + NOISE_MAX_PLAINTEXT, bytesRead))
            const c = createCipheriv('chacha20-poly1305', key, noiseNonce(n++), { authTagLength: 16 })
            const ct = c.update(plain)
            c.final()
            const len = Buffer.allocUnsafe(2)
            len.writeUInt16BE(ct.length + 16)
            socket.write(len); socket.write(ct); socket.write(c.getAuthTag())
          }
          socket.uncork()
          if (socket.writableLength > 4 * MiB) await new Promise((resolve) => socket.once('drain', resolve))
        }
      } finally {
        await fh.close()
        socket.end()
      }
    })()
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  process.stdout.write(JSON.stringify({ port: (srv.address() as { port: number }).port }) + '\n')
  serveControl(async () => { srv.close() })
}

const NOISE_MAX_PLAINTEXT = 65535 - 16

function noiseNonce (n: bigint): Buffer {
  const iv = Buffer.alloc(12)
  iv.writeBigUInt64LE(n, 4)
  return iv
}

// ---- the measuring process ----

interface Child { proc: ChildProcess, lines: AsyncIterator<string> }

async function startChild (args: string[]): Promise<{ child: Child, hello: Record<string, string | number> }> {
  // BENCH_CHILD_FLAGS: node flags for the serving processes only (e.g. --trace-gc); what they
  // print that is not a protocol line goes to stderr
  // Every process here (ours, raw TCP, the encryption floor, the receiver) runs with the flags
  // the shipped launcher gives a node (src/cli/node-flags.ts, inherited from main): one runtime.
  const extra = (process.env.BENCH_CHILD_FLAGS ?? '').split(' ').filter((f) => f !== '')
  const proc = spawn(process.execPath, [...process.execArgv, ...extra, process.argv[1], ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = protocolLines(createInterface({ input: proc.stdout! })[Symbol.asyncIterator](), args[0])
  const first = await Promise.race([
    lines.next(),
    new Promise<never>((_resolve, reject) => { proc.once('exit', (code) => { reject(new Error(`server process exited with ${code}`)) }) })
  ])
  if (first.done === true) throw new Error('server process said nothing')
  return { child: { proc, lines }, hello: JSON.parse(first.value) as Record<string, string | number> }
}

/** The JSON lines of a serving process; anything else it prints goes to stderr, marked. */
async function * protocolLines (lines: AsyncIterator<string>, label: string): AsyncGenerator<string, void, undefined> {
  for (;;) {
    const r = await lines.next()
    if (r.done === true) return
    if (r.value.startsWith('{')) yield r.value
    else process.stderr.write(`[${label}] ${r.value}\n`)
  }
}

async function childUsage (c: Child): Promise<Usage> {
  c.proc.stdin!.write('cpu\n')
  const line = await c.lines.next()
  if (line.done === true) throw new Error('server process ended')
  return JSON.parse(line.value) as Usage
}

async function stopChild (c: Child): Promise<void> {
  const exited = new Promise((resolve) => c.proc.once('exit', resolve))
  c.proc.stdin!.end()
  await exited
}

interface Round { mibps: number, senderMsPerMiB: number, receiverMsPerMiB: number, senderGcMsPerMiB: number, senderMajorGcs: number, receiverMajorGcs: number }

/** This (receiving) process's GCs, watched from the first measured round on. */
let receiverGc: GcTally | undefined

async function measured (server: Child, size: number, transfer: () => Promise<number>): Promise<Round> {
  receiverGc ??= watchGc()
  const g0 = receiverGc.major
  const s0 = await childUsage(server)
  const r0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  const got = await transfer()
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  const receiver = cpuMs(r0)
  const s1 = await childUsage(server)
  if (got !== size) throw new Error(`got ${got} of ${size} bytes`)
  const sender = (s1.cpu.user + s1.cpu.system - s0.cpu.user - s0.cpu.system) / 1000
  const mib = size / MiB
  return {
    mibps: mib / seconds,
    senderMsPerMiB: sender / mib,
    receiverMsPerMiB: receiver / mib,
    senderGcMsPerMiB: (s1.gc.ms - s0.gc.ms) / mib,
    senderMajorGcs: s1.gc.major - s0.gc.major,
    receiverMajorGcs: receiverGc.major - g0
  }
}

async function rawTransfer (port: number): Promise<number> {
  let got = 0
  await new Promise<void>((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1')
    s.on('data', (b: Buffer) => { got += b.length })
    s.on('end', resolve)
    s.on('error', reject)
  })
  return got
}

/**
 * Receive and decrypt cipherChild's messages; plaintext bytes. A message inside one socket read
 * is decrypted where it lies; one split across reads is gathered into a reused buffer first.
 */
async function cipherTransfer (port: number, key: Buffer): Promise<number> {
  let got = 0
  let n = 0n
  const scratch = Buffer.allocUnsafe(65535 + 2)
  let have = 0 // bytes of a split message gathered in scratch
  const open = (msg: Buffer): void => {
    const d = createDecipheriv('chacha20-poly1305', key, noiseNonce(n++), { authTagLength: 16 })
    d.setAuthTag(msg.subarray(msg.length - 16))
    got += d.update(msg.subarray(0, msg.length - 16)).length
    d.final()
  }
  await new Promise<void>((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1')
    s.on('data', (b: Buffer) => {
      let at = 0
      if (have > 0) {
        // finish the split message: its length first (it may itself have been split)
        if (have < 2) { scratch[have++] = b[at++] }
        const want = 2 + scratch.readUInt16BE(0) - have
        const take = Math.min(want, b.length - at)
        b.copy(scratch, have, at, at + take)
        have += take; at += take
        if (take < want) return
        open(scratch.subarray(2, have))
        have = 0
      }
      while (b.length - at >= 2) {
        const len = b.readUInt16BE(at)
        if (b.length - at - 2 < len) break
        open(b.subarray(at + 2, at + 2 + len))
        at += 2 + len
      }
      if (at < b.length) { b.copy(scratch, 0, at); have = b.length - at }
    })
    s.on('end', resolve)
    s.on('error', reject)
  })
  return got
}

async function p2pTransfer (tc: TransferClient, peer: ReturnType<typeof peerIdFromString>, size: number, streams: number): Promise<number> {
  const per = Math.ceil(size / streams)
  const counts = await Promise.all(Array.from({ length: streams }, async (_, i) => {
    const offset = i * per
    const length = Math.min(per, size - offset)
    const res = await tc.openFile(peer, KEY, { offset, length })
    let got = 0
    for await (const chunk of res) got += chunk.length
    return got
  }))
  return counts.reduce((a, b) => a + b, 0)
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function spread (xs: number[], digits = 0): string {
  return `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`
}

async function libp2pVsRawTcp (dir: string, size: number, rounds: number, configs: Knobs[], withRaw: boolean): Promise<void> {
  const raw = withRaw ? await startChild(['--raw-child', dir]) : undefined
  const cipherKey = randomBytes(32)
  const cipher = withRaw ? await startChild(['--cipher-child', dir, cipherKey.toString('hex')]) : undefined
  const cipherRounds: Round[] = []
  const cipherRatios: number[] = []
  const loadBefore = loadavg().map((l) => l.toFixed(2)).join(' ')
  const rawPort = Number(raw?.hello.port)
  const rawRounds: Round[] = []
  interface Row { k: Knobs, child: Child, node: Libp2p, tc: TransferClient, peer: ReturnType<typeof peerIdFromString>, p2p: Round[], ratios: number[] }
  const rows: Row[] = []
  try {
    // Every configuration's server process and client node stay up for the whole run, so the
    // rounds can be interleaved: raw, then each configuration, round after round (the order
    // rotating), and drifting machine load hits all of them alike.
    for (const k of configs) {
      const srv = await startChild(['--p2p-child', dir, JSON.stringify(k)])
      const node = await makeNode(k)
      rows.push({ k, child: srv.child, node, tc: new TransferClient({ libp2p: node }), peer: peerIdFromString(String(srv.hello.peer)), p2p: [], ratios: [] })
      await node.start()
      await node.dial(multiaddr(String(srv.hello.addr)))
    }
    if (raw != null) await measured(raw.child, size, async () => await rawTransfer(rawPort)) // warm-up
    if (cipher != null) await measured(cipher.child, size, async () => await cipherTransfer(Number(cipher.hello.port), cipherKey))
    // A warm-up each: the first transfer on a cold connection is much slower (LIBP2P.md).
    for (const row of rows) await p2pTransfer(row.tc, row.peer, Math.min(size, 32 * MiB), row.k.streams)
    for (let r = 0; r < rounds; r++) {
      const rawRound = raw != null ? await measured(raw.child, size, async () => await rawTransfer(rawPort)) : undefined
      if (rawRound != null) rawRounds.push(rawRound)
      if (cipher != null && rawRound != null) {
        const c = await measured(cipher.child, size, async () => await cipherTransfer(Number(cipher.hello.port), cipherKey))
        cipherRounds.push(c)
        cipherRatios.push(c.mibps / rawRound.mibps)
      }
      for (let i = 0; i < rows.length; i++) {
        const row = rows[(i + r) % rows.length]
        const round = await measured(row.child, size, async () => await p2pTransfer(row.tc, row.peer, size, row.k.streams))
        row.p2p.push(round)
        if (rawRound != null) row.ratios.push(round.mibps / rawRound.mibps)
      }
    }
  } finally {
    for (const row of rows) {
      await row.node.stop()
      await stopChild(row.child)
    }
    if (raw != null) await stopChild(raw.child)
    if (cipher != null) await stopChild(cipher.child)
  }
  const rawMed = rawRounds.length > 0 ? median(rawRounds.map((r) => r.mibps)) : NaN
  const load = loadavg().map((l) => l.toFixed(2)).join(' ')
  console.log(`\n# libp2p /guix-swarm/nar/1.0.0 vs raw TCP, ${size / MiB} MiB, ${rounds} rounds each, two processes on 127.0.0.1`)
  console.log(`load average before: ${loadBefore}, after: ${load} (1, 5, 15 min; ${cpus().length} CPUs)`)
  if (raw != null) {
    console.log(`raw TCP reference (fs read stream, ${RAW_HIGH_WATER_MARK / MiB} MiB reads, piped to a socket), ${rawRounds.length} rounds: ` +
      `${spread(rawRounds.map((r) => r.mibps))} MiB/s, CPU ms/MiB sender ${spread(rawRounds.map((r) => r.senderMsPerMiB), 2)}, ` +
      `receiver ${spread(rawRounds.map((r) => r.receiverMsPerMiB), 2)}, sender full GCs per round ${spread(rawRounds.map((r) => r.senderMajorGcs))}`)
  }
  if (cipherRounds.length > 0) {
    console.log(`encryption floor (noise messages through node:crypto ChaCha20-Poly1305 over a plain socket, no libp2p), ${cipherRounds.length} rounds: ` +
      `${spread(cipherRounds.map((r) => r.mibps))} MiB/s, ratio to raw TCP ${(median(cipherRounds.map((r) => r.mibps)) / rawMed).toFixed(2)} (per-round median ${median(cipherRatios).toFixed(2)}), ` +
      `CPU ms/MiB sender ${spread(cipherRounds.map((r) => r.senderMsPerMiB), 2)}, receiver ${spread(cipherRounds.map((r) => r.receiverMsPerMiB), 2)}, sender full GCs per round ${spread(cipherRounds.map((r) => r.senderMajorGcs))}`)
  }
  console.log('| configuration | libp2p MiB/s median (min–max) | raw TCP MiB/s median | ratio of medians | median of per-round ratios | CPU ms/MiB sender | CPU ms/MiB receiver | sender GC pause ms/MiB | full GCs per round sender / receiver |')
  console.log('|---|---|---|---|---|---|---|---|---|')
  for (const { k, p2p, ratios } of rows) {
    const med = median(p2p.map((r) => r.mibps))
    console.log(`| ${k.label} | ${spread(p2p.map((r) => r.mibps))} | ${rawMed.toFixed(0)} | ${(med / rawMed).toFixed(2)} | ${ratios.length > 0 ? median(ratios).toFixed(2) : '-'} | ` +
      `${spread(p2p.map((r) => r.senderMsPerMiB), 2)} | ${spread(p2p.map((r) => r.receiverMsPerMiB), 2)} | ` +
      `${spread(p2p.map((r) => r.senderGcMsPerMiB), 3)} | ${spread(p2p.map((r) => r.senderMajorGcs))} / ${spread(p2p.map((r) => r.receiverMajorGcs))} |`)
  }
}

async function main (): Promise<void> {
  const args = process.argv.slice(2)
  if (!NODE_FLAGS.every((f) => process.execArgv.includes(f))) {
    // the measuring process receives as a node does: with the launcher's flags
    const r = spawnSync(process.execPath, [...process.execArgv, ...NODE_FLAGS, process.argv[1], ...args], { stdio: 'inherit' })
    process.exit(r.status ?? 1)
  }
  if (args[0] === '--p2p-child') {
    await p2pChild(args[1], JSON.parse(args[2]) as Knobs)
    return
  }
  if (args[0] === '--cipher-child') {
    await cipherChild(args[1], args[2])
    return
  }
  if (args[0] === '--raw-child') {
    await rawChild(args[1])
    return
  }
  const num = (flag: string, dflt: number): number => {
    const i = args.indexOf(flag)
    return i >= 0 ? Number(args[i + 1]) : dflt
  }
  const size = num('--size-mib', 256) * MiB
  const rounds = num('--rounds', 5)
  const match = args.includes('--match') ? args[args.indexOf('--match') + 1] : undefined
  const configs = args.includes('--quick') ? [SETTLED] : SWEEP.filter((k) => match === undefined || match.split('|').some((m) => k.label.includes(m)))
  const dir = await mkdtemp(join(tmpdir(), 'guix-swarm-bench-serve-'))
  try {
    const fh = await open(join(dir, KEY), 'w')
    for (let off = 0; off < size; off += 16 * MiB) await fh.write(randomBytes(Math.min(16 * MiB, size - off)))
    await fh.close()
    if (!args.includes('--http-only')) await libp2pVsRawTcp(dir, size, rounds, configs, !args.includes('--p2p-only'))
    if (!args.includes('--no-http') && !args.includes('--p2p-only')) await httpVsNginx({ sizeMiB: size / MiB, rounds: num('--rounds', 3) })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

main().catch((err: Error) => {
  console.error(err)
  process.exit(1)
})
