// Public API of src/node: the swarm node process and the seam services plug into.
// config.ts and errors.ts are also light entry points of their own: the CLI's client commands
// import them directly so that they do not load libp2p (≈0.4 s) just to find the node.
export { SwarmNode } from './node.js'
export type { SwarmNodeOptions, NodeStatus } from './node.js'
export type { NodeComponents, NodeService, ServiceFactory, SwarmLibp2p, SwarmServices, NodeDb, NodeBuilder } from './components.js'
export {
  resolveConfig, resolveDataDir, mergeConfig, validateSettings, settingsFromEnv, settingsFromFile, defaultSettings,
  effectiveStoreDir, parseSize, SETTINGS, CONFIG_FILE, API_FILE, DEFAULT_HTTP, DEFAULT_P2P_PORT, DEFAULT_SWARM
} from './config.js'
export type { NodeConfig, ConfigSettings, PartialSettings, BuilderPref } from './config.js'
export { SERVICES } from './services.js'
export { CapabilitiesService, capabilitiesService, parseCapabilities, CapabilitiesMessageError } from './capabilities.js'
export type { Capabilities } from './capabilities.js'
export { MetricsService, metricsService } from './metrics.js'
export { DiscoveryService, discoveryService } from './discovery.js'
export { protocolIdFor, topicFor } from './libp2p.js'
export { loadOrCreatePeerKey, PEER_KEY_FILE } from './identity.js'
export { DataDirLock, LOCK_FILE } from './lock.js'
export * from './errors.js'
export {
  QueueNodeService, queueService, queueOf, queueNodeOf, hostSystem, InvalidDerivationPathError, InvalidBuildRequestError,
  UnknownBuildStateError, BuildNotFoundError, BuildFinishedError, type QueueNodeOptions, type SubmitHook
} from './queue.js'
export { BuildEvents, TooManySubscribersError, InvalidSubscriptionError, type BuildEventsOptions } from './events.js'
