import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { logger } from '@libp2p/logger'
import { HttpAddressInUseError, HttpError } from './errors.js'
import type { HttpRouter } from './router.js'

const log = logger('guix-swarm:http')

export interface HttpServerComponents {
  router: HttpRouter
}

export interface HttpServerInit {
  host: string
  port: number
}

/** Parse `HOST:PORT` (or `[v6]:PORT`, or `:PORT` for all interfaces). */
export function parseHostPort (value: string): HttpServerInit {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim())
  if (m == null) throw new HttpError(`bad HTTP listen address "${value}": expected HOST:PORT, e.g. 127.0.0.1:8746`, 400)
  const port = Number(m[3])
  if (port > 65535) throw new HttpError(`bad HTTP port in "${value}"`, 400)
  const host = m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2])
  return { host, port }
}

/** The node's HTTP front: one node:http server dispatching to a router, with start/stop. */
export class HttpServer {
  private server?: Server
  private readonly sockets = new Set<Socket>()

  constructor (private readonly components: HttpServerComponents, private readonly init: HttpServerInit) {}

  async start (): Promise<void> {
    const server = createServer(this.components.router.handle)
    server.on('connection', (s: Socket) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EADDRINUSE') {
          reject(new HttpAddressInUseError(`HTTP address ${this.init.host}:${this.init.port} is already in use (another guix-swarm node?); choose another with --http HOST:PORT`))
        } else {
          reject(new HttpError(`cannot listen for HTTP on ${this.init.host}:${this.init.port}: ${err.message}`))
        }
      })
      server.listen(this.init.port, this.init.host, () => resolve())
    })
    this.server = server
    log('listening on %s', this.url)
  }

  /** The actual bound address (port 0 resolved). */
  address (): AddressInfo {
    const a = this.server?.address()
    if (a == null || typeof a === 'string') throw new HttpError('HTTP server is not listening')
    return a
  }

  /** Base URL of the server, e.g. http://127.0.0.1:8746 (wildcard hosts map to loopback for local clients). */
  get url (): string {
    const a = this.address()
    let host = a.address
    if (host === '0.0.0.0') host = '127.0.0.1'
    if (host === '::') host = '::1'
    return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = undefined
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    // Idle keep-alive sockets would hold close() open; in-flight ones get cut too (we are exiting).
    for (const s of this.sockets) s.destroy()
    await closed
  }
}
