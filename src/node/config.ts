import { readFile } from 'node:fs/promises'
import { availableParallelism, homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { NodeConfigError } from './errors.js'

/** Default libp2p TCP port (documented in `join --help`). */
export const DEFAULT_P2P_PORT = 8747
/** Default HTTP front (local API, substitutes, metrics). */
export const DEFAULT_HTTP = '127.0.0.1:8746'
export const DEFAULT_SWARM = 'main'
export const CONFIG_FILE = 'config.json'
/** `<data-dir>/api` holds the URL of the node's HTTP front, for local CLI commands. */
export const API_FILE = 'api'

export type BuilderPref = 'auto' | 'guix' | 'nix' | 'none'

/** The node's configuration once flags, environment, config file and defaults are merged. */
export interface NodeConfig {
  dataDir: string
  /** Swarm name: prefixes protocol ids, topics and the mDNS tag, so swarms on one LAN do not mix. */
  swarm: string
  listen: string[]
  bootstrap: string[]
  mdns: boolean
  /** mDNS query interval, ms. */
  mdnsInterval: number
  http: string
  builder: BuilderPref
  maxBuilds: number
  /** Systems to build for; empty = what the detected builder reports. */
  systems: string[]
  /** Store the node's narinfos speak of; undefined = by builder (/nix/store for nix, else /gnu/store). */
  storeDir?: string
  /** Files of public keys whose narinfo signatures this node believes (besides its own keys). */
  trustedKeys?: string[]
  /** Follow successful builds in the queue and pull their outputs into the local cache. */
  mirror?: boolean
  /** Mirror only builds for these systems (empty: all). */
  mirrorSystems?: string[]
  /** Mirror only builds carrying all these tags, each `key=value` or `key` (empty: all). */
  mirrorTags?: string[]
  /** Bytes the NAR cache may hold before automatic GC evicts; undefined = no limit. */
  maxStoreSize?: number
  /** Compressions of the NARs this node makes (zstd, xz, lzip, gzip, none); empty = the cache's default. */
  compressions?: string[]
  /** Build lease in seconds (renewed every third of it); a dead builder's build is taken over when it lapses. */
  lease?: number
  /** Tags this node offers to builds that require them, `key=value` or bare `key`. */
  tags?: string[]
  /** Programs run on build events, each `EVENT=PROGRAM` (build-submitted, build-success, build-failure, build-canceled). */
  hooks?: string[]
}

/** Settable settings (everything but the data dir, which decides where the config file is). */
export type ConfigSettings = Omit<NodeConfig, 'dataDir'>
export type PartialSettings = Partial<ConfigSettings>

interface Setting {
  key: keyof ConfigSettings
  flag: string
  env: string
  kind: 'string' | 'list' | 'bool' | 'int' | 'builder' | 'size' | 'hooks'
}

/** Every setting with its environment variable; `join --help` prints this table. */
export const SETTINGS: readonly Setting[] = [
  { key: 'swarm', flag: '--swarm', env: 'GUIX_SWARM_SWARM', kind: 'string' },
  { key: 'listen', flag: '--listen', env: 'GUIX_SWARM_LISTEN', kind: 'list' },
  { key: 'bootstrap', flag: '--bootstrap', env: 'GUIX_SWARM_BOOTSTRAP', kind: 'list' },
  { key: 'mdns', flag: '--[no-]mdns', env: 'GUIX_SWARM_MDNS', kind: 'bool' },
  { key: 'mdnsInterval', flag: '--mdns-interval', env: 'GUIX_SWARM_MDNS_INTERVAL', kind: 'int' },
  { key: 'http', flag: '--http', env: 'GUIX_SWARM_HTTP', kind: 'string' },
  { key: 'builder', flag: '--builder', env: 'GUIX_SWARM_BUILDER', kind: 'builder' },
  { key: 'maxBuilds', flag: '--max-builds', env: 'GUIX_SWARM_MAX_BUILDS', kind: 'int' },
  { key: 'systems', flag: '--system', env: 'GUIX_SWARM_SYSTEMS', kind: 'list' },
  { key: 'storeDir', flag: '--store-dir', env: 'GUIX_SWARM_STORE_DIR', kind: 'string' },
  { key: 'trustedKeys', flag: '--trusted-key', env: 'GUIX_SWARM_TRUSTED_KEYS', kind: 'list' },
  { key: 'mirror', flag: '--mirror', env: 'GUIX_SWARM_MIRROR', kind: 'bool' },
  { key: 'mirrorSystems', flag: '--mirror-system', env: 'GUIX_SWARM_MIRROR_SYSTEMS', kind: 'list' },
  { key: 'mirrorTags', flag: '--mirror-tag', env: 'GUIX_SWARM_MIRROR_TAGS', kind: 'list' },
  { key: 'maxStoreSize', flag: '--max-store-size', env: 'GUIX_SWARM_MAX_STORE_SIZE', kind: 'size' },
  { key: 'compressions', flag: '--compression', env: 'GUIX_SWARM_COMPRESSIONS', kind: 'list' },
  { key: 'lease', flag: '--lease', env: 'GUIX_SWARM_LEASE', kind: 'int' },
  { key: 'tags', flag: '--tag', env: 'GUIX_SWARM_TAGS', kind: 'list' },
  { key: 'hooks', flag: '--hook', env: 'GUIX_SWARM_HOOKS', kind: 'hooks' }
]

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i

/** A byte count: an integer, or a string like `512M`, `10GiB`, `1.5G` (powers of 1024). */
export function parseSize (value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined
  const m = SIZE.exec(value.trim())
  if (m == null) return undefined
  const exp = ' kmgt'.indexOf(m[2].toLowerCase() === '' ? ' ' : m[2].toLowerCase())
  const bytes = Math.floor(Number(m[1]) * 1024 ** exp)
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

export function defaultSettings (): ConfigSettings {
  return {
    swarm: DEFAULT_SWARM,
    listen: [`/ip4/0.0.0.0/tcp/${DEFAULT_P2P_PORT}`],
    bootstrap: [],
    mdns: true,
    mdnsInterval: 10_000,
    http: DEFAULT_HTTP,
    builder: 'auto',
    maxBuilds: availableParallelism(),
    systems: [],
    storeDir: undefined,
    trustedKeys: [],
    mirror: false,
    mirrorSystems: [],
    mirrorTags: [],
    maxStoreSize: undefined,
    compressions: [],
    lease: 60,
    tags: [],
    hooks: []
  }
}

/** Events a `--hook EVENT=PROGRAM` may name (the scheduler's hook events). */
export const HOOK_EVENT_NAMES = ['build-submitted', 'build-success', 'build-failure', 'build-canceled'] as const
const HOOK_SPEC = /^(build-submitted|build-success|build-failure|build-canceled)=(\/.+)$/

/** `--data-dir`, else GUIX_SWARM_DATA_DIR, else $XDG_DATA_HOME/guix-swarm, else ~/.local/share/guix-swarm. */
export function resolveDataDir (flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag != null && flag !== '') return resolve(flag)
  if (env.GUIX_SWARM_DATA_DIR != null && env.GUIX_SWARM_DATA_DIR !== '') return resolve(env.GUIX_SWARM_DATA_DIR)
  const xdg = env.XDG_DATA_HOME != null && env.XDG_DATA_HOME !== '' ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share')
  return join(xdg, 'guix-swarm')
}

const SWARM_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/

function check (key: keyof ConfigSettings, kind: Setting['kind'], value: unknown, where: string): unknown {
  const bad = (want: string): never => {
    throw new NodeConfigError(`${where}: "${key}" must be ${want}, got ${JSON.stringify(value)}`)
  }
  switch (kind) {
    case 'string':
      if (typeof value !== 'string' || value === '') bad('a non-empty string')
      if (key === 'swarm' && !SWARM_NAME.test(value as string)) bad('a swarm name of lowercase letters, digits, ".", "_" or "-"')
      return value
    case 'list':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v !== '')) bad('a list of non-empty strings')
      return value
    case 'bool':
      if (typeof value !== 'boolean') bad('true or false')
      return value
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < (key === 'maxBuilds' ? 0 : 1)) bad('a positive integer')
      return value
    case 'size': {
      const bytes = typeof value === 'string' || typeof value === 'number' ? parseSize(value) : undefined
      if (bytes === undefined) bad('a size in bytes, e.g. 500000000, 512M or 10G')
      return bytes
    }
    case 'hooks':
      // an absolute program path: hooks run without a shell and from the node's working dir
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && HOOK_SPEC.test(v))) bad(`a list of EVENT=/absolute/program (EVENT one of ${HOOK_EVENT_NAMES.join(', ')})`)
      return value
    case 'builder':
      if (value !== 'auto' && value !== 'guix' && value !== 'nix' && value !== 'none') bad('one of auto, guix, nix, none')
      return value
  }
}

/** Validate a settings object (from the config file or flags); unknown keys are refused, typos must not pass silently. */
export function validateSettings (raw: unknown, where: string): PartialSettings {
  if (raw == null || typeof raw !== 'object' || Array.isArray(raw)) throw new NodeConfigError(`${where}: expected a JSON object`)
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(raw)) {
    if (v === undefined) continue
    const s = SETTINGS.find((x) => x.key === k)
    if (s == null) throw new NodeConfigError(`${where}: unknown setting "${k}" (known: ${SETTINGS.map((x) => x.key).join(', ')})`)
    out[k] = check(s.key, s.kind, v, where)
  }
  return out as PartialSettings
}

/** Read the settings that environment variables give. Lists are comma-separated. */
export function settingsFromEnv (env: NodeJS.ProcessEnv): PartialSettings {
  const raw: Record<string, unknown> = {}
  for (const s of SETTINGS) {
    const v = env[s.env]
    if (v == null || v === '') continue
    switch (s.kind) {
      case 'list': case 'hooks': raw[s.key] = v.split(',').map((x) => x.trim()).filter((x) => x !== ''); break
      case 'bool':
        if (/^(1|true|yes|on)$/i.test(v)) raw[s.key] = true
        else if (/^(0|false|no|off)$/i.test(v)) raw[s.key] = false
        else throw new NodeConfigError(`environment ${s.env}: expected 1/0 or true/false, got "${v}"`)
        break
      case 'int': raw[s.key] = /^\d+$/.test(v) ? Number(v) : v; break
      case 'size': raw[s.key] = v; break
      default: raw[s.key] = v
    }
  }
  return validateSettings(raw, 'environment')
}

/** Read `<dataDir>/config.json` if it exists. */
export async function settingsFromFile (dataDir: string): Promise<PartialSettings> {
  const file = join(dataDir, CONFIG_FILE)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new NodeConfigError(`cannot read ${file}: ${(err as Error).message}`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new NodeConfigError(`${file}: not valid JSON: ${(err as Error).message}`)
  }
  return validateSettings(raw, file)
}

/**
 * Merge settings. Precedence, highest first: command-line flags, environment variables
 * (GUIX_SWARM_*), `<data-dir>/config.json`, built-in defaults. A list given at a higher
 * level replaces (does not extend) the lower one.
 */
export function mergeConfig (dataDir: string, layers: { flags?: PartialSettings, env?: PartialSettings, file?: PartialSettings }): NodeConfig {
  const merged: ConfigSettings = { ...defaultSettings() }
  for (const layer of [layers.file, layers.env, layers.flags]) {
    if (layer == null) continue
    for (const [k, v] of Object.entries(layer)) {
      if (v !== undefined) (merged as unknown as Record<string, unknown>)[k] = v
    }
  }
  return { dataDir, ...merged }
}

/** Resolve the whole configuration for `join`. */
export async function resolveConfig (opts: { dataDir?: string, flags?: PartialSettings, env?: NodeJS.ProcessEnv }): Promise<NodeConfig> {
  const env = opts.env ?? process.env
  const dataDir = resolveDataDir(opts.dataDir, env)
  const flags = validateSettings(opts.flags ?? {}, 'command line')
  return mergeConfig(dataDir, { flags, env: settingsFromEnv(env), file: await settingsFromFile(dataDir) })
}

/** Store dir: explicit, else /nix/store for a Nix builder, else /gnu/store. */
export function effectiveStoreDir (config: NodeConfig, builderKind: string): string {
  if (config.storeDir != null) return config.storeDir
  return builderKind === 'nix' ? '/nix/store' : '/gnu/store'
}
