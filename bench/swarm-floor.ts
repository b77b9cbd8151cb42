// The floor under bench:swarm's target: the work a swarm build of N trivial derivations must do
// (issue: the .drv files leave the submitter's store, each builder imports its share into its own
// store, builds it, and publishes its outputs as compressed NARs with signed narinfos), done with
// Nix's own tools and no coordination at all: a fixed split in thirds, no network, no queue, no
// logs, one compression instead of Guix's two. Versus the same N in one `nix-store --realise`
// (bench:swarm's reference), in alternating rounds, each with fresh derivations.
//   submitter store:  nix copy --derivation --to file://drvs   (the .drv files, published)
//   3 builder stores: nix copy --derivation --from file://drvs (their third), nix-store --realise
//                     --max-jobs SLOTS, nix copy --to file://out-K?compression=zstd&secret-key=…
// Run: node dist/bench/swarm-floor.js. Env: SWARM_FLOOR_N (200), SWARM_FLOOR_SLOTS (per builder
// store, 2), SWARM_FLOOR_ROUNDS (3), SWARM_FLOOR_COMPRESSION (zstd).
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { runToEnd, NodeProcessRunner } from '../src/daemon/index.js'
import { nixNamespace, type NixNamespace } from '../test/helpers/nix-ns.js'
import { drvExpr, instantiate } from '../test/build/harness.js'

const N = Number(process.env.SWARM_FLOOR_N ?? 200)
const SLOTS = Number(process.env.SWARM_FLOOR_SLOTS ?? 2)
const ROUNDS = Number(process.env.SWARM_FLOOR_ROUNDS ?? 3)
const COMPRESSION = process.env.SWARM_FLOOR_COMPRESSION ?? 'zstd'
const BUILDERS = 3
const NIX = ['--extra-experimental-features', 'nix-command']

async function run (ns: NixNamespace, command: string, args: string[]): Promise<string> {
  const r = await ns.exec(command, args)
  if (r.code !== 0) throw new Error(`${command} ${args.slice(0, 4).join(' ')} …: exit ${r.code}: ${r.stderr.toString().slice(-2000)}`)
  return r.stdout.toString()
}

/** The pipeline with Nix's tools; returns its wall time (ms) and checks every output was published signed. */
async function floor (sub: NixNamespace, builders: NixNamespace[], drvs: string[], dir: string, secretKey: string): Promise<number> {
  const drvCache = `file://${join(dir, 'drvs')}?compression=none`
  const t0 = performance.now()
  await run(sub, 'nix', [...NIX, 'copy', '--derivation', '--to', drvCache, ...drvs])
  const shares = builders.map((_, k) => drvs.filter((_, i) => i % builders.length === k))
  await Promise.all(builders.map(async (b, k) => {
    await run(b, 'nix', [...NIX, 'copy', '--derivation', '--no-check-sigs', '--from', drvCache, ...shares[k]])
    const outs = (await run(b, 'nix-store', ['--realise', '--max-jobs', String(SLOTS), '--option', 'substituters', '', ...shares[k]])).trim().split('\n')
    await run(b, 'nix', [...NIX, 'copy', '--to', `file://${join(dir, `out-${k}`)}?compression=${COMPRESSION}&secret-key=${secretKey}`, ...outs])
  }))
  const ms = performance.now() - t0
  let signed = 0
  for (let k = 0; k < builders.length; k++) {
    for (const f of (await readdir(join(dir, `out-${k}`))).filter((x) => x.endsWith('.narinfo'))) {
      if ((await readFile(join(dir, `out-${k}`, f), 'utf8')).includes('\nSig: ')) signed++
    }
  }
  if (signed !== drvs.length) throw new Error(`the floor published ${signed} signed narinfos for ${drvs.length} builds`)
  return ms
}

async function reference (ref: NixNamespace, drvs: string[]): Promise<number> {
  const t0 = performance.now()
  await run(ref, 'nix-store', ['--realise', '--max-jobs', String(BUILDERS * SLOTS), '--option', 'substituters', '', ...drvs])
  return performance.now() - t0
}

async function main (): Promise<void> {
  console.log(`swarm floor: ${N} trivial derivations, the issue's pipeline with Nix's tools in ${BUILDERS} stores × ${SLOTS} jobs (${COMPRESSION} NARs, signed narinfos) vs one nix-store --realise --max-jobs ${BUILDERS * SLOTS}; ${cpus().length} cores, load ${loadavg()[0].toFixed(1)}`)
  const dir = await mkdtemp(join(tmpdir(), 'gs-swarm-floor-'))
  const stores: NixNamespace[] = []
  try {
    const key = await runToEnd(new NodeProcessRunner(), 'nix', [...NIX, 'key', 'generate-secret', '--key-name', `swarm-floor-${randomBytes(3).toString('hex')}`])
    if (key.code !== 0) throw new Error(`nix key generate-secret: ${key.stderr.toString()}`)
    const secretKey = join(dir, 'secret-key')
    await writeFile(secretKey, key.stdout, { mode: 0o600 })
    for (let i = 0; i < BUILDERS + 2; i++) stores.push(await nixNamespace())
    const [sub, ref, ...builders] = stores
    // Nix sets up an empty store on first use: done here, untimed, as the swarm's nodes do at start
    await Promise.all(stores.map(async (s) => await run(s, 'nix', [...NIX, 'store', 'ping'])))
    const ratios: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const tag = randomBytes(4).toString('hex')
      const expr = `[ ${Array.from({ length: N }, (_, i) => `(${drvExpr(`floor-${i}-${tag}`, `echo ${i} > $out/file`)})`).join(' ')} ]`
      const drvs = await instantiate(sub, expr)
      const refDrvs = await instantiate(ref, expr)
      const out = join(dir, `round-${round}`)
      // alternate which runs first, so neither always meets a warmer page cache
      let f: number, r: number
      if (round % 2 === 0) { f = await floor(sub, builders, drvs, out, secretKey); r = await reference(ref, refDrvs) } else { r = await reference(ref, refDrvs); f = await floor(sub, builders, drvs, out, secretKey) }
      ratios.push(f / r)
      console.log(`  round ${round + 1}: floor ${f.toFixed(0)} ms, reference ${r.toFixed(0)} ms, floor / reference ${(f / r).toFixed(2)}`)
    }
    const s = [...ratios].sort((a, b) => a - b)
    console.log(`  floor / reference: min ${s[0].toFixed(2)}, median ${s[Math.floor(s.length / 2)].toFixed(2)}, max ${s[s.length - 1].toFixed(2)}`)
  } finally {
    for (const s of stores) await s.destroy()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
