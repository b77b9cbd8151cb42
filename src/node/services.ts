import type { ServiceFactory } from './components.js'
import { capabilitiesService } from './capabilities.js'
import { metricsService } from './metrics.js'
import { discoveryService } from './discovery.js'
import { queueService, queueOf } from './queue.js'
import { substitutesService } from '../substitutes/index.js'

/**
 * The services every node runs, started in this order and stopped in reverse.
 * Later issues (queue, scheduler, substitutes, mirror) plug in with one line here.
 */
export const SERVICES: readonly ServiceFactory[] = [
  metricsService,
  discoveryService,
  capabilitiesService,
  queueService,
  (c) => substitutesService(c, { buildFeed: () => queueOf(c) })
]
