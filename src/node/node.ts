import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import { collectDefaultMetrics, Registry } from 'prom-client'
import type { PeerId, PeerInfo } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { hostname } from 'node:os'
import { HttpRouter, HttpServer, parseHostPort, sendJson } from '../http/index.js'
import { ensureKeys, type NodeKeys } from '../narinfo/index.js'
import { detectBuilder } from '../daemon/index.js'
import { VERSION } from '../version.js'
import type { NodeBuilder, NodeComponents, NodeDb, NodeService, ServiceFactory, SwarmLibp2p } from './components.js'
import { API_FILE, effectiveStoreDir, type NodeConfig } from './config.js'
import { DataDirInUseError, NodeError } from './errors.js'
import { loadOrCreatePeerKey } from './identity.js'
import { createSwarmLibp2p, protocolIdFor, startSwarmLibp2p, topicFor } from './libp2p.js'
import { skipRepeatedMerges, type MergeCounters } from './peer-store.js'
import { DataDirLock } from './lock.js'
import { SERVICES } from './services.js'

const log = logger('guix-swarm:node')


export interface SwarmNodeOptions {
  /** Services to run; defaults to SERVICES. */
  services?: readonly ServiceFactory[]
  /** Builder detection (tests may inject); defaults to src/daemon's detectBuilder. */
  detectBuilder?: (pref: NodeConfig['builder']) => Promise<NodeBuilder>
}

/** Everything `GET /api/status` reports. */
export interface NodeStatus {
  peerId: string
  swarm: string
  version: string
  uptime: number
  addresses: string[]
  http: string
  builder: NodeBuilder['kind']
  systems: string[]
  maxBuilds: number
  storeDir: string
  dataDir: string
  peers: number
  [service: string]: unknown
}

/**
 * One swarm member: data dir lock, identity and signing keys, the level database, the HTTP
 * front, the libp2p host, and the services plugged in through NodeComponents.
 */
export class SwarmNode {
  private lock?: DataDirLock
  private db?: NodeDb
  private httpServer?: HttpServer
  private libp2pNode?: SwarmLibp2p
  /** Peer-store merges written and skipped as repeats (peer-store.ts). */
  private merges: MergeCounters = { merged: 0, skipped: 0 }
  private services: NodeService[] = []
  private startedAt = 0
  private apiUrl?: string
  private stopping?: Promise<void>
  components?: NodeComponents

  constructor (readonly config: NodeConfig, private readonly opts: SwarmNodeOptions = {}) {}

  get libp2p (): SwarmLibp2p {
    if (this.libp2pNode == null) throw new NodeError('node is not started')
    return this.libp2pNode
  }

  get peerId (): PeerId { return this.libp2p.peerId }

  /** Base URL of the HTTP front, e.g. http://127.0.0.1:8746. */
  get url (): string {
    if (this.apiUrl == null) throw new NodeError('node is not started')
    return this.apiUrl
  }

  /** A started service by name (e.g. 'capabilities'). */
  service<T extends NodeService = NodeService> (name: string): T | undefined {
    return this.services.find((s) => s.name === name) as T | undefined
  }

  async start (): Promise<void> {
    const { config } = this
    const dataDir = config.dataDir
    try {
      await mkdir(dataDir, { recursive: true, mode: 0o700 })
      this.lock = new DataDirLock(dataDir)
      await this.lock.acquire()
      await mkdir(join(dataDir, 'nar'), { recursive: true })
      await mkdir(join(dataDir, 'logs'), { recursive: true })

      const privateKey = await loadOrCreatePeerKey(dataDir)
      // Nix keeps one trusted key per name, so every node's key name must be unique, even
      // for several nodes on one host: the host name plus the tail of the peer id.
      const keyName = `${hostname()}-${peerIdFromPrivateKey(privateKey).toString().slice(-8)}`
      const keys: NodeKeys = await ensureKeys(join(dataDir, 'keys'), { name: keyName })
      const detected = await (this.opts.detectBuilder ?? detectBuilder)(config.builder)
      const builder: NodeBuilder = {
        kind: detected.kind,
        systems: config.systems.length > 0 ? [...config.systems] : [...detected.systems],
        ...(detected.idleBuildHook === true ? { idleBuildHook: true } : {}),
        ...(detected.localStore === true ? { localStore: true } : {}),
        ...(detected.buildLimits !== undefined ? { buildLimits: detected.buildLimits } : {})
      }

      const db: NodeDb = new Level<string, string>(join(dataDir, 'db'))
      try {
        await db.open()
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause
        if ((err as { code?: string }).code === 'LEVEL_LOCKED' || cause?.code === 'LEVEL_LOCKED') {
          throw new DataDirInUseError(`database ${join(dataDir, 'db')} is locked by another process; is another guix-swarm node using ${dataDir}?`)
        }
        throw err
      }
      this.db = db

      const router = new HttpRouter()
      const metrics = new Registry()
      collectDefaultMetrics({ register: metrics })
      const libp2p = await createSwarmLibp2p(config, privateKey)
      this.merges = skipRepeatedMerges(libp2p.peerStore)
      this.libp2pNode = libp2p
      const components: NodeComponents = {
        libp2p,
        privateKey,
        http: router,
        db,
        dataDir,
        config,
        keys,
        metrics,
        builder,
        storeDir: effectiveStoreDir(config, builder.kind),
        protocolId: (name, version) => protocolIdFor(config.swarm, name, version),
        topic: (name) => topicFor(config.swarm, name)
      }
      this.components = components
      this.routeApi(router)

      // HTTP first: a busy port fails before we announce ourselves to the swarm.
      this.httpServer = new HttpServer({ router }, parseHostPort(config.http))
      await this.httpServer.start()
      this.apiUrl = this.httpServer.url

      libp2p.addEventListener('peer:discovery', this.onDiscovery)
      await startSwarmLibp2p(libp2p, config)
      this.startedAt = Date.now()
      for (const factory of this.opts.services ?? SERVICES) {
        const service = factory(components)
        await service.start()
        this.services.push(service)
        log('service %s started', service.name)
      }
      await this.writeApiFile()
    } catch (err) {
      await this.stop().catch((e: Error) => log.error('cleanup after failed start: %s', e.message))
      throw err
    }
  }

  /** Discovery (mDNS, bootstrap) only finds peers; libp2p 3 does not dial them by itself. */
  private readonly onDiscovery = (evt: CustomEvent<PeerInfo>): void => {
    const libp2p = this.libp2pNode
    if (libp2p == null) return
    const { id } = evt.detail
    if (id.equals(libp2p.peerId) || libp2p.getConnections(id).length > 0) return
    libp2p.dial(id).then(
      () => log('dialled discovered peer %s', id.toString()),
      (err: Error) => log('dialling discovered peer %s failed: %s', id.toString(), err.message)
    )
  }

  private async writeApiFile (): Promise<void> {
    const file = join(this.config.dataDir, API_FILE)
    const tmp = `${file}.${process.pid}.tmp`
    await writeFile(tmp, this.url + '\n')
    await rename(tmp, file)
  }

  private async removeApiFile (): Promise<void> {
    if (this.apiUrl == null) return
    const file = join(this.config.dataDir, API_FILE)
    try {
      if ((await readFile(file, 'utf8')).trim() === this.apiUrl) await unlink(file)
    } catch {}
  }

  async status (): Promise<NodeStatus> {
    const libp2p = this.libp2p
    const c = this.components as NodeComponents
    const out: NodeStatus = {
      peerId: libp2p.peerId.toString(),
      swarm: this.config.swarm,
      version: VERSION,
      uptime: Math.round((Date.now() - this.startedAt) / 1000),
      addresses: libp2p.getMultiaddrs().map((m) => m.toString()),
      http: this.url,
      builder: c.builder.kind,
      systems: c.builder.systems,
      maxBuilds: this.config.maxBuilds,
      storeDir: c.storeDir,
      dataDir: this.config.dataDir,
      peers: libp2p.getPeers().length,
      peerStoreMerges: { ...this.merges }
    }
    for (const s of this.services) {
      if (s.status != null) out[s.name] = await s.status()
    }
    return out
  }

  /** Connected peers, each with the addresses we reach it on and what services know of it. */
  peers (): Array<Record<string, unknown> & { peerId: string, addresses: string[] }> {
    const libp2p = this.libp2p
    return libp2p.getPeers().map((p) => {
      const id = p.toString()
      const addresses = [...new Set(libp2p.getConnections(p).map((conn) => conn.remoteAddr.toString()))]
      const entry: Record<string, unknown> & { peerId: string, addresses: string[] } = { peerId: id, addresses }
      for (const s of this.services) Object.assign(entry, s.peerInfo?.(id) ?? {})
      return entry
    }).sort((a, b) => a.peerId.localeCompare(b.peerId))
  }

  private routeApi (router: HttpRouter): void {
    router.route('GET', '/api/status', async (_req, res) => { sendJson(res, 200, await this.status()) })
    router.route('GET', '/api/peers', (_req, res) => { sendJson(res, 200, { peers: this.peers() }) })
  }

  /** Stop everything that started, in reverse; safe to call twice and after a failed start. */
  async stop (): Promise<void> {
    this.stopping ??= this.doStop()
    await this.stopping
  }

  private async doStop (): Promise<void> {
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try { await fn() } catch (err) { log.error('stopping %s: %s', what, (err as Error).message) }
    }
    await step('api file', async () => { await this.removeApiFile() })
    for (const s of [...this.services].reverse()) await step(s.name, async () => { await s.stop() })
    this.services = []
    const libp2p = this.libp2pNode
    if (libp2p != null) {
      libp2p.removeEventListener('peer:discovery', this.onDiscovery)
      await step('libp2p', async () => { await libp2p.stop() })
    }
    const http = this.httpServer
    if (http != null) await step('http', async () => { await http.stop() })
    const db = this.db
    if (db != null) await step('db', async () => { await db.close() })
    const lock = this.lock
    if (lock != null) await step('lock', async () => { await lock.release() })
  }
}
