// Per-node Nix stores for end-to-end tests: each command runs in its own mount namespace with a
// per-node directory bind-mounted over /nix, so several "machines" share one host.
// Nix 2.8 initialises an empty directory on first use (store/, var/nix/db, gcroots…); builds run
// as nixbld* (the group exists on the host) with the host's /etc/nix/nix.conf (sandbox = false).
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NodeProcessRunner, runToEnd, type ProcessRunner, type RunningProcess, type StartOptions, type Completed } from '../../src/daemon/index.js'

export interface NixNamespace {
  /** Host directory that is /nix inside the namespace. */
  readonly dir: string
  /** Where the host sees this namespace's /nix/store. */
  readonly realStoreDir: string
  /** Environment for commands inside: local store, private narinfo cache. */
  readonly env: NodeJS.ProcessEnv
  /** Runs commands inside the namespace (for nixStore({ runner }) and builders). */
  readonly runner: ProcessRunner
  spawn: (command: string, args: string[], opts?: SpawnOptions) => ChildProcess
  exec: (command: string, args: string[], opts?: { input?: string | Buffer, env?: NodeJS.ProcessEnv }) => Promise<Completed>
  /** Remove the directory (store files are read-only; root removes them anyway). */
  destroy: () => Promise<void>
}

// The bind mounts happen in the child's own namespace; `exec` keeps the pid, so process-group
// kills and exit codes are those of the real command.
// Every store on the host must share ONE userpool (the host's): Nix picks a free nixbld uid by
// locking /nix/var/nix/userpool/<uid> and kills every process of that uid before a build, so two
// stores with separate pools would kill each other's builders.
const HOST_USERPOOL = '/nix/var/nix/userpool'
const WRAP = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c',
  `mount --bind ${HOST_USERPOOL} "$0/var/nix/userpool" && mount --rbind "$0" /nix && exec "$@"`]

export function inNamespace (dir: string, command: string, args: string[]): [string, string[]] {
  return ['unshare', [...WRAP, dir, command, ...args]]
}

/** A fresh per-node /nix under `parent` (default: a new temp dir). */
export async function nixNamespace (parent?: string): Promise<NixNamespace> {
  const base = parent ?? await mkdtemp(join(tmpdir(), 'guix-swarm-nixns-'))
  const dir = join(base, 'nix')
  await mkdir(join(dir, 'store'), { recursive: true })
  await mkdir(join(dir, 'var', 'nix', 'db'), { recursive: true })
  await mkdir(join(dir, 'var', 'nix', 'userpool'), { recursive: true })
  await mkdir(HOST_USERPOOL, { recursive: true })
  const cache = join(base, 'xdg-cache')
  await mkdir(cache, { recursive: true })
  const env: NodeJS.ProcessEnv = { ...process.env, NIX_REMOTE: '', XDG_CACHE_HOME: cache }
  delete env.NIX_STORE_DIR
  const inner = new NodeProcessRunner()
  const runner: ProcessRunner = {
    start: (command: string, args: string[], opts: StartOptions = {}): RunningProcess => {
      const [c, a] = inNamespace(dir, command, args)
      return inner.start(c, a, { ...opts, env: { ...(opts.env ?? process.env), NIX_REMOTE: '', XDG_CACHE_HOME: cache } })
    }
  }
  return {
    dir,
    realStoreDir: join(dir, 'store'),
    env,
    runner,
    spawn: (command, args, opts = {}) => {
      const [c, a] = inNamespace(dir, command, args)
      return spawn(c, a, { ...opts, env: { ...env, ...opts.env } })
    },
    exec: async (command, args, opts = {}) => await runToEnd(runner, command, args, { env: { ...env, ...opts.env }, input: opts.input }),
    destroy: async () => { await rm(base, { recursive: true, force: true }) }
  }
}

/** Instantiate a Nix expression (a list of derivations) in one private store; the .drv paths. */
export async function instantiate (ns: NixNamespace, expr: string): Promise<string[]> {
  const f = join(ns.dir, '..', `expr-${randomBytes(6).toString('hex')}.nix`)
  await writeFile(f, expr)
  const r = await ns.exec('nix-instantiate', [f])
  if (r.code !== 0) throw new Error(`nix-instantiate failed: ${r.stderr.toString()}`)
  return r.stdout.toString().trim().split('\n')
}

const shDrv = (name: string, script: string): string =>
  `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }`

/**
 * Build a chain c ← b ← a in `ns` (a references b, b references c; c holds a plain file, a
 * symlink and an executable); the outputs, top first.
 */
export async function builtChain (ns: NixNamespace): Promise<string[]> {
  const n = randomBytes(6).toString('hex')
  const [drv] = await instantiate(ns, `let
    c = ${shDrv(`c-${n}`, '/bin/mkdir $out; echo c > $out/c; /bin/ln -s c $out/link; echo "#!/bin/sh" > $out/run; /bin/chmod +x $out/run')};
    b = ${shDrv(`b-${n}`, '/bin/mkdir $out; echo ${c} > $out/ref')};
  in ${shDrv(`a-${n}`, 'echo ${b} > $out')}`)
  const r = await ns.exec('nix-store', ['--realise', '--option', 'substituters', '', drv])
  if (r.code !== 0) throw new Error(`building the chain failed: ${r.stderr.toString()}`)
  const top = r.stdout.toString().trim()
  const q = await ns.exec('nix-store', ['--query', '--requisites', top])
  return q.stdout.toString().trim().split('\n').filter((p) => !p.endsWith('.drv')).reverse()
}
