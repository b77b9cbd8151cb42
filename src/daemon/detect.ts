// Which local builder this node can drive (guix-daemon, nix, or none), and the systems it builds for.
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { arch } from 'node:os'
import { logger } from '@libp2p/logger'
import { BuilderUnavailableError } from './errors.js'
import { defaultRunner, runToEnd, type ProcessRunner } from './runner.js'

const log = logger('guix-swarm:daemon:detect')

export type BuilderPref = 'auto' | 'guix' | 'nix' | 'none'
export type BuilderKind = 'guix' | 'nix' | 'none'
export interface DetectedBuilder {
  kind: BuilderKind
  systems: string[]
  /**
   * Nix only: the client builds in a local store and no remote builders are configured, so
   * Nix's build hook (build-remote) would only start, read the config and decline, once per
   * `nix-store --realise`. Then the node hands Nix a hook that declines at once.
   */
  idleBuildHook?: boolean
  /**
   * Nix only: the store is plain `local` (no root or store-dir parameters): the client opens it
   * itself, so its files are at the store dir this process sees, and a path missing there is
   * not valid (CliStore's trustLocalAbsence from the start, not after the first valid path).
   */
  localStore?: boolean
  /**
   * Nix only: `max-silent-time` and `timeout` as configured (seconds, 0 for none). A build request
   * over a `--serve` connection carries its own and they replace nix.conf's, so the builder sends
   * these (read here once, not by a second `nix show-config` at the first build).
   */
  buildLimits?: BuildLimits
}

export interface BuildLimits { maxSilentTime: number, timeout: number }

export interface DetectOptions {
  runner?: ProcessRunner
  env?: NodeJS.ProcessEnv
  /** Skip the cache (tests). */
  fresh?: boolean
}

/** The new `nix` CLI needs this on Nix 2.8. */
export const NIX_CMD = ['--extra-experimental-features', 'nix-command']

export interface NixProbe { systems: string[], idleBuildHook: boolean, localStore: boolean, buildLimits?: BuildLimits }

/** Nix works when its store answers (`nix store ping` opens it, local or daemon); systems from the config. */
export async function probeNix (runner: ProcessRunner, env: NodeJS.ProcessEnv): Promise<NixProbe | string> {
  try {
    const ping = await runToEnd(runner, 'nix', [...NIX_CMD, 'store', 'ping'], { env })
    if (ping.code !== 0) return `nix store ping failed: ${ping.stderr.toString().trim()}`
    const cfg = await runToEnd(runner, 'nix', [...NIX_CMD, 'show-config'], { env })
    const config = cfg.code === 0 ? cfg.stdout.toString() : ''
    const pinged = ping.stdout.toString() + ping.stderr.toString()
    const idleBuildHook = cfg.code === 0 && isLocalStore(pinged) && nixBuildHookIdle(config)
    const localStore = storeUrl(pinged) === 'local'
    const systems = parseNixSystems(config)
    const limits = cfg.code === 0 ? { buildLimits: nixBuildLimits(config) } : {}
    if (systems.length > 0) return { systems, idleBuildHook, localStore, ...limits }
    // Older or restricted configs: ask the evaluator for at least the native system.
    const ev = await runToEnd(runner, 'nix-instantiate', ['--eval', '-E', 'builtins.currentSystem'], { env })
    const m = /^"([^"]+)"/.exec(ev.stdout.toString().trim())
    if (ev.code === 0 && m !== null) return { systems: [m[1]], idleBuildHook, localStore, ...limits }
    return `cannot find the Nix system: ${ev.stderr.toString().trim()}`
  } catch (err) {
    return (err as Error).message
  }
}

/** One setting's value from `nix show-config` output (`key = value` lines). */
export function nixConfigValue (config: string, key: string): string | undefined {
  const line = config.split('\n').find((l) => l.startsWith(`${key} = `))
  return line?.slice(key.length + 3).trim()
}

/** `max-silent-time` and `timeout` from `nix show-config` output; 0 (no limit) when unset or unreadable. */
export function nixBuildLimits (config: string): BuildLimits {
  const seconds = (key: string): number => {
    const v = Number(nixConfigValue(config, key) ?? 0)
    return Number.isSafeInteger(v) && v >= 0 ? v : 0
  }
  return { maxSilentTime: seconds('max-silent-time'), timeout: seconds('timeout') }
}

/** `system` first, then `extra-platforms`, from `nix show-config` output. */
export function parseNixSystems (config: string): string[] {
  const get = (key: string): string[] => (nixConfigValue(config, key) ?? '').split(/\s+/).filter((s) => s !== '')
  return [...new Set([...get('system'), ...get('extra-platforms')])]
}

/** `nix store ping` (Nix 2.8 prints on stderr) says the client itself opens the store (no daemon builds for it). */
export function isLocalStore (ping: string): boolean {
  const url = storeUrl(ping)
  return url !== undefined && (url === 'local' || url.startsWith('local?') || url.startsWith('local://'))
}

/** The `Store URL:` line of `nix store ping`. */
export function storeUrl (ping: string): string | undefined {
  return /^Store URL: (\S+)/m.exec(ping)?.[1]
}

/**
 * From `nix show-config`: the build hook is Nix's own build-remote (not a user's program) and
 * `builders` names no machine, inline or in an `@file` (absent, or only blanks and comments).
 * `readFile` gives a file's text, or undefined when it cannot be read.
 */
export function nixBuildHookIdle (config: string, readFile: (path: string) => string | undefined = readText): boolean {
  const hook = (nixConfigValue(config, 'build-hook') ?? '').split(/\s+/)
  if (!(hook[0]?.endsWith('/build-remote') === true || hook.includes('__build-remote'))) return false
  const machines = (spec: string, depth: number): boolean => spec.split(/[;\n]/).some((entry) => {
    const e = entry.replace(/#.*/, '').trim()
    if (e === '') return false
    if (!e.startsWith('@')) return true
    // too deep to follow: assume machines and keep Nix as configured
    if (depth >= 4) return true
    // a file that cannot be read names no machine for build-remote either
    const text = readFile(e.slice(1))
    return text !== undefined && machines(text, depth + 1)
  })
  return !machines(nixConfigValue(config, 'builders') ?? '', 0)
}

function readText (path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
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
  if (typeof n !== 'string') return { kind: 'nix', systems: n.systems, ...(n.idleBuildHook ? { idleBuildHook: true } : {}), ...(n.localStore ? { localStore: true } : {}), ...(n.buildLimits !== undefined ? { buildLimits: n.buildLimits } : {}) }
  if (pref === 'nix') throw new BuilderUnavailableError(`builder nix is not available: ${n}`)
  return { kind: 'none', systems: [] }
}
