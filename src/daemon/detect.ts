// Which local builder this node can drive (guix-daemon, nix, or none), and the systems it builds for.
import { connect } from 'node:net'
import { arch } from 'node:os'
import { logger } from '@libp2p/logger'
import { BuilderUnavailableError } from './errors.js'
import { defaultRunner, runToEnd, type ProcessRunner } from './runner.js'

const log = logger('guix-swarm:daemon:detect')

export type BuilderPref = 'auto' | 'guix' | 'nix' | 'none'
export type BuilderKind = 'guix' | 'nix' | 'none'
export interface DetectedBuilder { kind: BuilderKind, systems: string[] }

export interface DetectOptions {
  runner?: ProcessRunner
  env?: NodeJS.ProcessEnv
  /** Skip the cache (tests). */
  fresh?: boolean
}

const NIX_CMD = ['--extra-experimental-features', 'nix-command']

/** Nix works when its store answers (`nix store ping` opens it, local or daemon); systems from the config. */
export async function probeNix (runner: ProcessRunner, env: NodeJS.ProcessEnv): Promise<string[] | string> {
  try {
    const ping = await runToEnd(runner, 'nix', [...NIX_CMD, 'store', 'ping'], { env })
    if (ping.code !== 0) return `nix store ping failed: ${ping.stderr.toString().trim()}`
    const cfg = await runToEnd(runner, 'nix', [...NIX_CMD, 'show-config'], { env })
    const systems = cfg.code === 0 ? parseNixSystems(cfg.stdout.toString()) : []
    if (systems.length > 0) return systems
    // Older or restricted configs: ask the evaluator for at least the native system.
    const ev = await runToEnd(runner, 'nix-instantiate', ['--eval', '-E', 'builtins.currentSystem'], { env })
    const m = /^"([^"]+)"/.exec(ev.stdout.toString().trim())
    if (ev.code === 0 && m !== null) return [m[1]]
    return `cannot find the Nix system: ${ev.stderr.toString().trim()}`
  } catch (err) {
    return (err as Error).message
  }
}

/** `system` first, then `extra-platforms`, from `nix show-config` output. */
export function parseNixSystems (config: string): string[] {
  const get = (key: string): string[] => {
    const line = config.split('\n').find((l) => l.startsWith(`${key} = `))
    return line === undefined ? [] : line.slice(key.length + 3).trim().split(/\s+/).filter((s) => s !== '')
  }
  return [...new Set([...get('system'), ...get('extra-platforms')])]
}

const GUIX_SYSTEM_OF_ARCH: Record<string, string[]> = {
  x64: ['x86_64-linux', 'i686-linux'],
  ia32: ['i686-linux'],
  arm64: ['aarch64-linux'],
  arm: ['armhf-linux'],
  ppc64: ['powerpc64le-linux'],
  riscv64: ['riscv64-linux']
}

/** The daemon's Unix socket, or undefined when GUIX_DAEMON_SOCKET names a remote daemon (guix://host). */
export function guixSocket (env: NodeJS.ProcessEnv): string | undefined {
  const s = env.GUIX_DAEMON_SOCKET
  if (s === undefined || s === '') return '/var/guix/daemon-socket/socket'
  if (s.startsWith('/')) return s
  const m = /^(?:unix|file):\/\/(\/.*)$/.exec(s)
  return m !== null ? m[1] : undefined
}

async function socketAnswers (path: string): Promise<boolean> {
  return await new Promise((resolve) => {
    const sock = connect(path)
    sock.once('connect', () => { sock.destroy(); resolve(true) })
    sock.once('error', () => resolve(false))
  })
}

/**
 * Guix works when `guix` runs and guix-daemon accepts connections on its socket.
 * Systems: guix-daemon builds natively for the host (and i686 on x86_64) unless offloading or
 * emulation is configured, which a CLI cannot see; so they follow the host architecture.
 */
export async function probeGuix (runner: ProcessRunner, env: NodeJS.ProcessEnv): Promise<string[] | string> {
  try {
    const v = await runToEnd(runner, 'guix', ['--version'], { env })
    if (v.code !== 0) return `guix --version failed: ${v.stderr.toString().trim()}`
  } catch (err) {
    return (err as Error).message
  }
  const socket = guixSocket(env)
  // A remote daemon (guix://) cannot be probed this cheaply; the first build will tell.
  if (socket !== undefined && !await socketAnswers(socket)) return `guix-daemon does not answer on ${socket}`
  const systems = GUIX_SYSTEM_OF_ARCH[arch()]
  return systems === undefined ? `unknown host architecture ${arch()}` : systems
}

const cache = new Map<BuilderPref, Promise<DetectedBuilder>>()

/**
 * auto: guix if a working guix + daemon is found, else nix if its store works, else none.
 * A forced kind that is not available throws BuilderUnavailableError. Answers are cached per process.
 */
export async function detectBuilder (pref: BuilderPref, opts: DetectOptions = {}): Promise<DetectedBuilder> {
  if (opts.fresh !== true) {
    const hit = cache.get(pref)
    if (hit !== undefined) return await hit
  }
  const p = detect(pref, opts.runner ?? defaultRunner, opts.env ?? process.env)
  if (opts.fresh !== true) {
    cache.set(pref, p)
    p.catch(() => cache.delete(pref)) // a failure may be fixed (daemon started); ask again next time
  }
  return await p
}

async function detect (pref: BuilderPref, runner: ProcessRunner, env: NodeJS.ProcessEnv): Promise<DetectedBuilder> {
  if (pref === 'none') return { kind: 'none', systems: [] }
  if (pref === 'guix' || pref === 'auto') {
    const g = await probeGuix(runner, env)
    log('guix probe: %o', g)
    if (Array.isArray(g)) return { kind: 'guix', systems: g }
    if (pref === 'guix') throw new BuilderUnavailableError(`builder guix is not available: ${g}`)
  }
  const n = await probeNix(runner, env)
  log('nix probe: %o', n)
  if (Array.isArray(n)) return { kind: 'nix', systems: n }
  if (pref === 'nix') throw new BuilderUnavailableError(`builder nix is not available: ${n}`)
  return { kind: 'none', systems: [] }
}
