import type { NodeComponents, ServiceFactory } from './components.js'
import { capabilitiesService } from './capabilities.js'
import { metricsService } from './metrics.js'
import { discoveryService } from './discovery.js'
import { queueService, queueOf } from './queue.js'
import { substitutesService, type SubstitutesService } from '../substitutes/index.js'
import { buildLogsOf, schedulerBusyOf, schedulerService, schedulerStoreOf } from './scheduler.js'

/** Each node's substitutes service, for the scheduler (its publisher and swarm fetcher). */
const substitutes = new WeakMap<NodeComponents, SubstitutesService>()

/**
 * The services every node runs, started in this order and stopped in reverse.
 * Later issues (queue, scheduler, substitutes, mirror) plug in with one line here.
 */
export const SERVICES: readonly ServiceFactory[] = [
  metricsService,
  discoveryService,
  capabilitiesService,
  (c) => queueService(c, { sharedStore: () => schedulerStoreOf(c) }),
  (c) => { const s = substitutesService(c, { buildFeed: () => queueOf(c), logs: buildLogsOf(c), sharedStore: () => schedulerStoreOf(c), busy: () => schedulerBusyOf(c) }); substitutes.set(c, s); return s },
  (c) => schedulerService(c, { substitutes: () => substitutes.get(c) })
]
