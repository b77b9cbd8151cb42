import { Option, type Command } from 'commander'
import { resolveConfig, DEFAULT_HTTP, DEFAULT_P2P_PORT, SETTINGS, parseSize, CONFIG_FILE, type PartialSettings } from '../../node/config.js'
import { NodeError, NodeConfigError, DataDirInUseError, ListenError } from '../../node/errors.js'
import type { SwarmNode, NodeStatus } from '../../node/index.js'
import { HttpAddressInUseError, HttpError } from '../../http/index.js'
import { addClientOptions, apiClient } from '../client.js'
import { CliError, EXIT } from '../errors.js'
import { queueStatusLines } from './queue.js'
import type { QueueStatus } from '../../crdt/index.js'
import type { SchedulerStatus } from '../../scheduler/index.js'
import type { StoreConnectionStatus } from '../../daemon/index.js'

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value]

function positiveInt (value: string): number {
  if (!/^\d+$/.test(value)) throw new CliError(`expected a non-negative integer, got "${value}"`, EXIT.USAGE)
  return Number(value)
}

function sizeArg (value: string): number {
  const bytes = parseSize(value)
  if (bytes === undefined) throw new CliError(`expected a size such as 500000000, 512M or 10G, got "${value}"`, EXIT.USAGE)
  return bytes
}

interface JoinFlags {
  dataDir?: string
  swarm?: string
  listen?: string[]
  bootstrap?: string[]
  mdns?: boolean
  mdnsInterval?: number
  http?: string
  builder?: PartialSettings['builder']
  maxBuilds?: number
  system?: string[]
  storeDir?: string
  trustedKey?: string[]
  mirror?: boolean
  mirrorSystem?: string[]
  mirrorTag?: string[]
  maxStoreSize?: string
  compression?: string[]
  lease?: number
  tag?: string[]
  hook?: string[]
}

const JOIN_HELP = `
Configuration (highest precedence first):
  1. command-line flags
  2. environment variables (lists comma-separated, booleans 1/0):
       GUIX_SWARM_DATA_DIR        (--data-dir)
${SETTINGS.map((s) => `       ${s.env.padEnd(26)} (${s.flag}, config key "${s.key}")`).join('\n')}
  3. <data-dir>/${CONFIG_FILE}, a JSON object with the config keys above, e.g.
     {"listen": ["/ip4/0.0.0.0/tcp/${DEFAULT_P2P_PORT}"], "bootstrap": [], "maxBuilds": 4}
  4. built-in defaults (none of the above is needed)

Data dir layout: peer-key (libp2p identity), keys/ (signing-key.pub/.sec, nix-key.pub/.sec),
db/, nar/, logs/, api (URL of the HTTP API for local commands), lock.

Examples:
  guix-swarm join                                   # LAN: peers found by mDNS
  guix-swarm join --bootstrap /ip4/203.0.113.5/tcp/${DEFAULT_P2P_PORT}/p2p/12D3Koo...
  guix-swarm join --listen /ip4/127.0.0.1/tcp/0 --http 127.0.0.1:0 --data-dir /tmp/n1
`

function nodeExit (err: unknown): never {
  if (err instanceof CliError) throw err
  if (err instanceof NodeConfigError) throw new CliError(err.message, EXIT.USAGE)
  if (err instanceof DataDirInUseError || err instanceof ListenError || err instanceof HttpAddressInUseError) throw new CliError(err.message, EXIT.FAILED)
  if (err instanceof HttpError && err.status === 400) throw new CliError(err.message, EXIT.USAGE)
  if (err instanceof NodeError || err instanceof HttpError) throw new CliError(`${err.name}: ${err.message}`, EXIT.FAILED)
  throw err
}

function banner (s: NodeStatus, mdns: boolean, bootstrap: string[]): string {
  const lines = [
    `guix-swarm ${s.version}: node ${s.peerId} is up (swarm "${s.swarm}")`,
    `  data dir   ${s.dataDir}`,
    '  libp2p     ' + (s.addresses.length > 0 ? s.addresses.join('\n             ') : '(no addresses)'),
    `  builder    ${s.builder === 'none' ? 'none (this node will not build)' : `${s.builder} for ${s.systems.join(', ') || '(no systems)'}`}, ${s.maxBuilds} slot(s), store ${s.storeDir}`,
    `  http       ${s.http} (API, substitutes, /metrics)`,
    `  discovery  mDNS ${mdns ? 'on' : 'off'}; bootstrap ${bootstrap.length > 0 ? bootstrap.join(' ') : 'none'}`,
    ''
  ]
  return lines.join('\n')
}

async function join (flags: JoinFlags, cmd: Command): Promise<void> {
  const settings: PartialSettings = {
    swarm: flags.swarm,
    listen: flags.listen,
    bootstrap: flags.bootstrap,
    // commander sets --no-mdns's default itself; only an explicit flag outranks env and file.
    mdns: cmd.getOptionValueSource('mdns') === 'cli' ? flags.mdns : undefined,
    mdnsInterval: flags.mdnsInterval,
    http: flags.http,
    builder: flags.builder,
    maxBuilds: flags.maxBuilds,
    systems: flags.system,
    storeDir: flags.storeDir,
    trustedKeys: flags.trustedKey,
    mirror: flags.mirror,
    mirrorSystems: flags.mirrorSystem,
    mirrorTags: flags.mirrorTag,
    maxStoreSize: flags.maxStoreSize === undefined ? undefined : sizeArg(flags.maxStoreSize),
    compressions: flags.compression,
    lease: flags.lease,
    tags: flags.tag,
    hooks: flags.hook
  }
  let node: SwarmNode
  try {
    const config = await resolveConfig({ dataDir: flags.dataDir, flags: settings })
    // Loaded here, not at the top: libp2p takes ≈0.4 s to load and only `join` needs it.
    const { SwarmNode } = await import('../../node/index.js')
    node = new SwarmNode(config)
    await node.start()
    process.stdout.write(banner(await node.status(), config.mdns, config.bootstrap))
  } catch (err) {
    nodeExit(err)
  }

  let signals = 0
  const shutdown = (sig: NodeJS.Signals): void => {
    if (++signals > 1) {
      process.stderr.write(`guix-swarm: ${sig} again, exiting now\n`)
      process.exit(130)
    }
    process.stderr.write(`guix-swarm: ${sig}, stopping\n`)
    // Never hang on a stuck peer: exit anyway after a grace period.
    setTimeout(() => {
      process.stderr.write('guix-swarm: clean stop took too long, exiting\n')
      process.exit(1)
    }, 10_000).unref()
    node.stop().then(
      // libp2p leaves a ~1 s debounce timer behind (LIBP2P.md pitfall 3): exit right away.
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`guix-swarm: error while stopping: ${err.message}\n`)
        process.exit(1)
      }
    )
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
}

function fmtSeconds (s: number): string {
  const d = Math.floor(s / 86400); const h = Math.floor(s / 3600) % 24; const m = Math.floor(s / 60) % 60
  return d > 0 ? `${d}d${h}h` : h > 0 ? `${h}h${m}m` : m > 0 ? `${m}m${s % 60}s` : `${s}s`
}

interface PeerEntry {
  peerId: string
  addresses: string[]
  builder?: string
  systems?: string[]
  maxBuilds?: number
  freeSlots?: number
  version?: string
}

function peersTable (peers: PeerEntry[]): string {
  if (peers.length === 0) return 'no connected peers\n'
  const rows = [['PEER', 'BUILDER', 'SYSTEMS', 'FREE/SLOTS', 'ADDRESS']]
  for (const p of peers) {
    rows.push([
      p.peerId,
      p.builder ?? '?',
      p.systems == null ? '?' : (p.systems.join(',') || '-'),
      p.freeSlots == null ? '?' : `${p.freeSlots}/${p.maxBuilds ?? '?'}`,
      p.addresses[0] ?? ''
    ])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows.map((r) => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join('  ')).join('\n') + '\n'
}

function nodeCommand (program: Command, name: string, description: string, mirror: boolean): void {
  program
    .command(name)
    .description(description)
    .option('--data-dir <dir>', 'data dir (default: $XDG_DATA_HOME/guix-swarm, i.e. ~/.local/share/guix-swarm)')
    .option('--swarm <name>', 'swarm name; separates swarms on one LAN (protocol ids, topics, mDNS tag) (default: main)')
    .option('--listen <multiaddr>', `libp2p listen address, repeatable (default: /ip4/0.0.0.0/tcp/${DEFAULT_P2P_PORT})`, collect)
    .option('--bootstrap <multiaddr>', 'peer to join through, with /p2p/<peer id>; repeatable', collect)
    .option('--no-mdns', 'do not discover peers on the LAN with mDNS')
    .addOption(new Option('--mdns-interval <ms>', 'mDNS query interval in ms (default: 10000)').argParser(positiveInt))
    .option('--http <host:port>', `HTTP front for the local API, substitutes and metrics (default: ${DEFAULT_HTTP})`)
    .addOption(new Option('--builder <kind>', 'builder to use (default: auto: guix, else nix, else none)').choices(['auto', 'guix', 'nix', 'none']))
    .option('--max-builds <n>', 'concurrent builds (default: number of cores)', positiveInt)
    .option('--system <system>', 'system to build for, repeatable (default: what the builder reports)', collect)
    .option('--store-dir <dir>', 'store the narinfos speak of (default: /gnu/store; /nix/store with the Nix builder)')
    .option('--trusted-key <file>', 'believe narinfos signed by the keys in FILE (Guix ACL, .pub s-expression or Nix key lines); repeatable; the node\'s own keys are always trusted', collect)
    .option('--mirror', 'follow successful builds in the queue and keep their outputs in the local cache')
    .option('--mirror-system <system>', 'mirror only builds for this system; repeatable', collect)
    .option('--mirror-tag <key[=value]>', 'mirror only builds with this tag; repeatable', collect)
    .option('--max-store-size <size>', 'evict least-recently-served NARs (never a last copy) beyond this size, e.g. 50G')
    .option('--compression <type>', 'compression of the NARs this node makes (zstd, xz, lzip, gzip, none); repeatable', collect)
    .option('--lease <seconds>', 'build lease, renewed every third of it; a dead builder\'s build is taken over when it lapses (default: 60)', positiveInt)
    .option('--tag <key[=value]>', 'a tag this node offers to builds that require it; repeatable', collect)
    .option('--hook <event=program>', 'run PROGRAM (absolute path) with the build\'s JSON on stdin on EVENT: build-submitted, build-success, build-failure, build-canceled; repeatable', collect)
    .addHelpText('after', JOIN_HELP)
    .action(async (flags: JoinFlags, cmd: Command) => { await join(mirror ? { ...flags, mirror: true } : flags, cmd) })
}

/** How the node asks its store, after the store dir. */
export function storeConnectionText (c: StoreConnectionStatus | undefined): string {
  if (c === undefined) return ''
  return c.mode === 'serve' ? ` (asked over nix-store --serve; ${c.opened} connection(s) opened so far)` : ' (a store process per question)'
}

/** The builder's setup failures in a row, when there are any: the first thing to fix on a node that builds nothing. */
export function setupTroubleLines (t: SchedulerStatus['setupFailures'], now = Date.now()): string[] {
  if (t === undefined) return []
  const paused = t.pausedUntil !== undefined && t.pausedUntil > now
  return [
    `  ${paused ? 'PAUSED: ' : ''}${t.inARow} hand-over(s) in a row failed setup${paused ? `; claiming again in ${fmtSeconds(Math.ceil(((t.pausedUntil ?? now) - now) / 1000))}` : ''}`,
    `  last: ${t.last}`
  ]
}

export function register (program: Command): void {
  nodeCommand(program, 'join', 'start a swarm node (identity, keys and database in the data dir, created on first start)', false)
  // A mirror is a node whose substitutes service follows the queue's successful builds.
  nodeCommand(program, 'mirror', 'start a swarm node that mirrors every successful build\'s outputs (join --mirror)', true)

  addClientOptions(program
    .command('status')
    .description('show the local node: peer id, addresses, builder, uptime')
    .option('--json', 'print the raw JSON'))
    .action(async (opts: { api?: string, dataDir?: string, json?: boolean }) => {
      const s = await (await apiClient(opts)).get<NodeStatus>('/api/status')
      if (opts.json === true) {
        process.stdout.write(JSON.stringify(s, null, 2) + '\n')
        return
      }
      process.stdout.write([
        `peer id    ${s.peerId}`,
        `swarm      ${s.swarm}`,
        `version    ${s.version}`,
        `uptime     ${fmtSeconds(s.uptime)}`,
        `builder    ${s.builder}${s.systems.length > 0 ? ` (${s.systems.join(', ')})` : ''}, ${s.maxBuilds} slot(s)`,
        ...setupTroubleLines((s.scheduler as Partial<SchedulerStatus> | undefined)?.setupFailures),
        `store      ${s.storeDir}${storeConnectionText((s.scheduler as { store?: StoreConnectionStatus } | undefined)?.store)}`,
        `http       ${s.http}`,
        `peers      ${s.peers}`,
        ...(s.queue != null ? queueStatusLines(s.queue as QueueStatus) : []),
        'addresses',
        ...s.addresses.map((a) => `  ${a}`),
        ''
      ].join('\n'))
    })

  addClientOptions(program
    .command('peers')
    .description('list connected peers and what they advertise (builder, systems, free slots)')
    .option('--json', 'print the raw JSON'))
    .action(async (opts: { api?: string, dataDir?: string, json?: boolean }) => {
      const r = await (await apiClient(opts)).get<{ peers: PeerEntry[] }>('/api/peers')
      if (opts.json === true) process.stdout.write(JSON.stringify(r, null, 2) + '\n')
      else process.stdout.write(peersTable(r.peers))
    })
}
