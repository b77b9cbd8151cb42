import { Gauge } from 'prom-client'
import type { NodeComponents, NodeService } from './components.js'

/** GET /metrics: prom-client's process metrics plus the swarm's own gauges, as Prometheus text. */
export class MetricsService implements NodeService {
  readonly name = 'metrics'

  constructor (private readonly components: NodeComponents) {}

  async start (): Promise<void> {
    const { libp2p, metrics } = this.components
    if (metrics.getSingleMetric('guix_swarm_peers') == null) {
      new Gauge({ // registers itself; collect() reads libp2p at scrape time
        name: 'guix_swarm_peers',
        help: 'Peers with at least one open libp2p connection',
        registers: [metrics],
        collect () { this.set(libp2p.getPeers().length) }
      })
      new Gauge({ // registers itself; collect() reads libp2p at scrape time
        name: 'guix_swarm_connections',
        help: 'Open libp2p connections',
        registers: [metrics],
        collect () { this.set(libp2p.getConnections().length) }
      })
    }
    this.components.http.route('GET', '/metrics', async (_req, res) => {
      const text = await metrics.metrics()
      res.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(text) })
      res.end(text)
    })
  }

  async stop (): Promise<void> {
    this.components.http.unroute('/metrics')
  }
}

export function metricsService (components: NodeComponents): MetricsService {
  return new MetricsService(components)
}
