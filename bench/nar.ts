// NAR benchmark: our pack/unpack against nix-store --dump/--restore on a ~512 MiB tree of many
// small files plus a few large ones, same sink for both (/dev/null for pack, a fresh directory
// for unpack), several rounds, medians and ratios ours/nix; then compression throughput on
// 64 MiB of NAR data. Run: npm run bench:nar (BENCH_ROUNDS=n to change the number of rounds).
import { spawn } from 'node:child_process'
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { COMPRESSIONS, compressStream, decompressStream, hashPathSync, packNarSync, unpackNar, type Compression } from '../src/nar/index.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const MiB = 1 << 20
const NIX_ENV = { ...process.env, NIX_REMOTE: '' }

function now (): number { return Number(process.hrtime.bigint()) / 1e9 }
function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Deterministic filler: text-like (compressible) or noisy bytes. */
function fill (buf: Buffer, seed: number, noisy: boolean): void {
  let x = (seed * 2654435761) >>> 0 || 1
  if (noisy) {
    for (let i = 0; i + 4 <= buf.length; i += 4) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; buf.writeUInt32LE(x >>> 0, i) }
    return
  }
  const words = ['guix ', 'store ', 'derivation ', 'build ', 'lib', '.so ', 'define ', '(lambda ', 'nix ', '\n', 'substitute ', 'hash ']
  let p = 0
  while (p < buf.length) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; p += buf.write(words[(x >>> 0) % words.length], p, 'latin1') }
}

function makeTree (root: string): { files: number, bytes: number } {
  let files = 0
  let bytes = 0
  const buf = Buffer.alloc(64 * 1024)
  // ~300 MiB in ~40k small files spread over packages/dirs, like a closure of many store paths.
  for (let pkg = 0; pkg < 200; pkg++) {
    for (const sub of ['bin', 'lib', 'share/doc', 'share/locale/de/LC_MESSAGES']) mkdirSync(join(root, `pkg${pkg}`, sub), { recursive: true })
    for (let f = 0; f < 200; f++) {
      const size = 64 + ((f * 7919 + pkg * 104729) % 15000)
      const slice = buf.subarray(0, size)
      fill(slice, pkg * 1000 + f, f % 4 === 0)
      const dir = ['bin', 'lib', 'share/doc', 'share/locale/de/LC_MESSAGES'][f % 4]
      writeFileSync(join(root, `pkg${pkg}`, dir, `file-${f}.dat`), slice, { mode: f % 4 === 0 ? 0o755 : 0o644 })
      files++
      bytes += size
    }
  }
  // A few large files (~216 MiB together), written in 1 MiB blocks.
  const block = Buffer.alloc(MiB)
  for (let i = 0; i < 4; i++) {
    const fd = openSync(join(root, `big-${i}.bin`), 'w')
    for (let b = 0; b < 54; b++) { fill(block, i * 100 + b, b % 2 === 0); writeSync(fd, block) }
    closeSync(fd)
    files++
    bytes += 54 * MiB
  }
  return { files, bytes }
}

async function run (cmd: string, args: string[], stdin: string | 'ignore', stdout: string | 'ignore'): Promise<void> {
  const inFd = stdin === 'ignore' ? 'ignore' : openSync(stdin, 'r')
  const outFd = stdout === 'ignore' ? 'ignore' : openSync(stdout, 'w')
  try {
    const child = spawn(cmd, args, { stdio: [inFd, outFd, 'inherit'], env: NIX_ENV })
    const code = await new Promise<number | null>((resolve, reject) => { child.on('error', reject); child.on('close', resolve) })
    if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${String(code)}`)
  } finally {
    if (typeof inFd === 'number') closeSync(inFd)
    if (typeof outFd === 'number') closeSync(outFd)
  }
}

function oursPackToDevNull (path: string): void {
  const fd = openSync('/dev/null', 'w')
  try {
    for (const chunk of packNarSync(path, { reuseBuffers: true })) writeSync(fd, chunk)
  } finally {
    closeSync(fd)
  }
}

async function oursUnpack (narFile: string, dest: string): Promise<void> {
  await unpackNar(createReadStream(narFile, { highWaterMark: MiB }), dest)
}

async function timeIt (fn: () => unknown): Promise<number> {
  const t = now()
  await fn()
  return now() - t
}

async function throughput (c: Compression, data: Buffer): Promise<{ ratio: number, cMBs: number, dMBs: number }> {
  const parts: Buffer[] = []
  const collect = (into: Buffer[]): Writable => new Writable({ write (chunk: Buffer, _e, cb) { into.push(chunk); cb() } })
  const chunks = (b: Buffer): Buffer[] => { const out: Buffer[] = []; for (let i = 0; i < b.length; i += MiB) out.push(b.subarray(i, i + MiB)); return out }
  const t0 = now()
  await pipeline(Readable.from(chunks(data)), compressStream(c), collect(parts))
  const t1 = now()
  const packed = Buffer.concat(parts)
  const back: Buffer[] = []
  const t2 = now()
  await pipeline(Readable.from(chunks(packed)), decompressStream(c), collect(back))
  const t3 = now()
  if (!Buffer.concat(back).equals(data)) throw new Error(`${c} round trip differs`)
  return { ratio: packed.length / data.length, cMBs: data.length / MiB / (t1 - t0), dMBs: data.length / MiB / (t3 - t2) }
}

const fmt = (s: number): string => `${s.toFixed(3)} s`

const work = mkdtempSync(join(tmpdir(), 'gs-bench-nar-'))
try {
  const tree = join(work, 'tree')
  mkdirSync(tree)
  process.stdout.write('generating tree… ')
  const g = makeTree(tree)
  const narFile = join(work, 'tree.nar')
  await run('nix-store', ['--dump', tree], 'ignore', narFile)
  const narSize = readFileSync(narFile).length
  process.stdout.write(`${g.files} files, ${(g.bytes / MiB).toFixed(0)} MiB of contents, NAR ${(narSize / MiB).toFixed(0)} MiB\n`)
  const check = Buffer.concat([...packNarSync(tree)])
  if (!check.equals(readFileSync(narFile))) throw new Error('our NAR differs from nix-store --dump')
  const hashT = await timeIt(() => hashPathSync(tree))
  console.log(`(check) our pack equals nix-store --dump; pack+sha256 once: ${fmt(hashT)}`)

  const res = { packOurs: [] as number[], packNix: [] as number[], unpackOurs: [] as number[], unpackNix: [] as number[] }
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate the order each round so neither side always runs on a warmer cache.
    const first = r % 2 === 0
    const po = async (): Promise<void> => { res.packOurs.push(await timeIt(() => oursPackToDevNull(tree))) }
    const pn = async (): Promise<void> => { res.packNix.push(await timeIt(() => run('nix-store', ['--dump', tree], 'ignore', '/dev/null'))) }
    if (first) { await po(); await pn() } else { await pn(); await po() }
    const uo = async (): Promise<void> => {
      const d = join(work, `u-ours-${r}`)
      res.unpackOurs.push(await timeIt(() => oursUnpack(narFile, d)))
      rmSync(d, { recursive: true, force: true })
    }
    const un = async (): Promise<void> => {
      const d = join(work, `u-nix-${r}`)
      res.unpackNix.push(await timeIt(() => run('nix-store', ['--restore', d], narFile, 'ignore')))
      rmSync(d, { recursive: true, force: true })
    }
    if (first) { await uo(); await un() } else { await un(); await uo() }
  }
  const line = (what: string, ours: number[], nix: number[]): void => {
    const mo = median(ours)
    const mn = median(nix)
    console.log(`${what.padEnd(8)} ours ${fmt(mo)} (${(narSize / MiB / mo).toFixed(0)} MiB/s)  nix ${fmt(mn)} (${(narSize / MiB / mn).toFixed(0)} MiB/s)  ratio ours/nix ${(mo / mn).toFixed(2)}`)
  }
  console.log(`medians over ${ROUNDS} rounds:`)
  line('pack', res.packOurs, res.packNix)
  line('unpack', res.unpackOurs, res.unpackNix)

  // Compression throughput on 64 MiB of the NAR (mixed text-like and noisy data).
  const sample = readFileSync(narFile).subarray(0, 64 * MiB)
  console.log('compression on 64 MiB of NAR data (default levels):')
  for (const c of COMPRESSIONS) {
    const t = await throughput(c, sample)
    console.log(`${c.padEnd(5)} size ${(t.ratio * 100).toFixed(1)}%  compress ${t.cMBs.toFixed(0)} MiB/s  decompress ${t.dMBs.toFixed(0)} MiB/s`)
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
