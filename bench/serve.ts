// npm run bench:serve — how fast NARs leave a node.
//
// Part 1 (here now): 256 MiB over /guix-swarm/nar/1.0.0 between two libp2p nodes in two OS
// processes vs a raw `net` socket between the same two processes, over 127.0.0.1, several
// rounds per configuration (yamux window, send chunk size, parallel streams).
// Part 2 (bench/serve-http.ts): the node's HTTP substitute front vs nginx serving the same cache
// directory: NAR GETs at 1 and 16 connections, 373 sequential narinfo GETs.
//
// Options: --size-mib N (256), --rounds N (3), --quick (one config only), --http-only.
import '../src/polyfill.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { createServer, connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { DirectoryNarSource, NarTransferServer, SEND_CHUNK_SIZE, TransferClient, transferYamuxOptions } from '../src/transfer/index.js'
import { httpVsNginx } from './serve-http.js'

const MiB = 1024 * 1024
const KEY = 'bench.nar'

interface Knobs {
  label: string
  /** yamux maxStreamWindowSize; undefined = the library default (16 MiB). */
  window?: number
  /** bytes per read()/send() on the serving side. */
  chunk: number
  /** parallel streams over the one connection, each pulling an equal range. */
  streams: number
}

const SETTLED: Knobs = { label: 'settled: transferYamuxOptions, SEND_CHUNK_SIZE, 1 stream', window: transferYamuxOptions.streamOptions.maxStreamWindowSize, chunk: SEND_CHUNK_SIZE, streams: 1 }

const SWEEP: Knobs[] = [
  { label: 'library defaults (16 MiB window, 64 KiB chunks)', chunk: 64 * 1024, streams: 1 },
  { label: '4 MiB window, 64 KiB chunks', window: 4 * MiB, chunk: 64 * 1024, streams: 1 },
  { label: '8 MiB window, 64 KiB chunks', window: 8 * MiB, chunk: 64 * 1024, streams: 1 },
  { label: '4 MiB window, 256 KiB chunks', window: 4 * MiB, chunk: 256 * 1024, streams: 1 },
  { label: '16 MiB window, 1 MiB chunks', window: 16 * MiB, chunk: MiB, streams: 1 },
  { label: '8 MiB window, 64 KiB chunks, 2 streams', window: 8 * MiB, chunk: 64 * 1024, streams: 2 },
  { label: '8 MiB window, 64 KiB chunks, 4 streams', window: 8 * MiB, chunk: 64 * 1024, streams: 4 },
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
    connectionEncrypters: [noise()],
    streamMuxers: [yamux(yamuxFor(k))],
    services: { identify: identify() }
  })
}

// ---- the serving process ----

async function child (dir: string, k: Knobs): Promise<void> {
  const node = await makeNode(k)
  const source = new DirectoryNarSource({ dir, chunkSize: k.chunk })
  await new NarTransferServer({ libp2p: node, source }).start()
  // Raw TCP: on connect, send the whole file with the same chunk size, then end.
  const raw = createServer((socket) => {
    createReadStream(join(dir, KEY), { highWaterMark: k.chunk }).pipe(socket)
  })
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve))
  const port = (raw.address() as { port: number }).port
  process.stdout.write(JSON.stringify({ addr: node.getMultiaddrs()[0].toString(), peer: node.peerId.toString(), port }) + '\n')
  // Parent closes our stdin when done.
  process.stdin.resume()
  process.stdin.on('end', () => {
    raw.close()
    void Promise.resolve(node.stop()).then(() => process.exit(0))
  })
}

// ---- the measuring process ----

async function rawRound (port: number, size: number): Promise<number> {
  const t0 = process.hrtime.bigint()
  let got = 0
  await new Promise<void>((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1')
    s.on('data', (b: Buffer) => { got += b.length })
    s.on('end', resolve)
    s.on('error', reject)
  })
  if (got !== size) throw new Error(`raw TCP got ${got} of ${size}`)
  return Number(process.hrtime.bigint() - t0) / 1e9
}

async function p2pRound (tc: TransferClient, peer: ReturnType<typeof peerIdFromString>, size: number, streams: number): Promise<number> {
  const t0 = process.hrtime.bigint()
  const per = Math.ceil(size / streams)
  const counts = await Promise.all(Array.from({ length: streams }, async (_, i) => {
    const offset = i * per
    const length = Math.min(per, size - offset)
    const res = await tc.openFile(peer, KEY, { offset, length })
    let got = 0
    for await (const chunk of res) got += chunk.length
    return got
  }))
  const got = counts.reduce((a, b) => a + b, 0)
  if (got !== size) throw new Error(`libp2p got ${got} of ${size}`)
  return Number(process.hrtime.bigint() - t0) / 1e9
}

async function startChild (dir: string, k: Knobs): Promise<{ proc: ChildProcess, addr: string, peer: string, port: number }> {
  const proc = spawn(process.execPath, [...process.execArgv, process.argv[1], '--child', dir, JSON.stringify(k)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const rl = createInterface({ input: proc.stdout! })
  const line = await new Promise<string>((resolve, reject) => {
    rl.once('line', resolve)
    proc.once('exit', (code) => { reject(new Error(`server process exited with ${code}`)) })
  })
  return { proc, ...(JSON.parse(line) as { addr: string, peer: string, port: number }) }
}

function stats (xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b)
  return `median ${s[Math.floor(s.length / 2)].toFixed(0)} (min ${s[0].toFixed(0)}, max ${s.at(-1)!.toFixed(0)})`
}

async function libp2pVsRawTcp (dir: string, size: number, rounds: number, configs: Knobs[]): Promise<void> {
  console.log(`\n# libp2p /guix-swarm/nar/1.0.0 vs raw TCP, ${size / MiB} MiB, ${rounds} rounds, two processes on 127.0.0.1`)
  console.log('| configuration | libp2p MiB/s | raw TCP MiB/s | ratio (medians) |')
  console.log('|---|---|---|---|')
  for (const k of configs) {
    const srv = await startChild(dir, k)
    const node = await makeNode(k)
    await node.start()
    try {
      await node.dial(multiaddr(srv.addr))
      const tc = new TransferClient({ libp2p: node })
      const peer = peerIdFromString(srv.peer)
      // One warm-up each: the first transfer on a cold connection is much slower (LIBP2P.md).
      await p2pRound(tc, peer, Math.min(size, 32 * MiB), k.streams)
      await rawRound(srv.port, size)
      const p2p: number[] = []
      const raw: number[] = []
      // Interleaved so both see the same machine load.
      for (let r = 0; r < rounds; r++) {
        raw.push(size / MiB / await rawRound(srv.port, size))
        p2p.push(size / MiB / await p2pRound(tc, peer, size, k.streams))
      }
      const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
      console.log(`| ${k.label} | ${stats(p2p)} | ${stats(raw)} | ${(med(p2p) / med(raw)).toFixed(2)} |`)
    } finally {
      await node.stop()
      srv.proc.stdin!.end()
      await new Promise((resolve) => srv.proc.once('exit', resolve))
    }
  }
}

async function main (): Promise<void> {
  const args = process.argv.slice(2)
  if (args[0] === '--child') {
    await child(args[1], JSON.parse(args[2]) as Knobs)
    return
  }
  const num = (flag: string, dflt: number): number => {
    const i = args.indexOf(flag)
    return i >= 0 ? Number(args[i + 1]) : dflt
  }
  const size = num('--size-mib', 256) * MiB
  const rounds = num('--rounds', 3)
  const configs = args.includes('--quick') ? [SETTLED] : SWEEP
  const dir = await mkdtemp(join(tmpdir(), 'guix-swarm-bench-serve-'))
  try {
    const fh = await open(join(dir, KEY), 'w')
    for (let off = 0; off < size; off += 16 * MiB) await fh.write(randomBytes(Math.min(16 * MiB, size - off)))
    await fh.close()
    if (!args.includes('--http-only')) await libp2pVsRawTcp(dir, size, rounds, configs)
    await httpVsNginx({ sizeMiB: size / MiB, rounds })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

main().catch((err: Error) => {
  console.error(err)
  process.exit(1)
})
