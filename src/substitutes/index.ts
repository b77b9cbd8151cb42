/**
 * src/substitutes: the node's substitutes — its binary cache served to peers (transfer protocol,
 * DHT announcements) and to guix/nix clients (HTTP front), filled by publish, on-demand fetches
 * and the mirror, trimmed by GC. A node-layer service:
 *
 *   SERVICES: (c) => substitutesService(c, { buildFeed: () => queueOf(c) })
 *   const s = node.service<SubstitutesService>('substitutes')
 *   await s.publish(['/nix/store/…-hello'])      // closure into the cache, signed, announced
 *   await s.fetchPath('/nix/store/…-hello')      // from the swarm, verified, into the cache
 *   await s.collectGarbage({ maxSize: 10 * 2 ** 30 })
 */
export { SubstitutesService, substitutesService, ANNOUNCE_DEFER_MS } from './service.js'
export { announcedCids } from './fetch.js'
export { BackgroundAnnouncer, type BackgroundAnnouncerInit } from './announcer.js'
export type { SubstitutesInit, PublishedPath, PublishAnnounce } from './service.js'
export { SubstitutesHttp, parseRange, NARINFO_MAX_AGE, NOT_FOUND_MAX_AGE, NAR_MAX_AGE } from './http.js'
export type { BuildLogSource, SubstitutesHttpComponents } from './http.js'
export { SwarmFetcher } from './fetch.js'
export { ClosureBundles, MAX_BUNDLE_REQUEST, MAX_BUNDLE_ENTRIES, DEFAULT_BUNDLE_MAX_FILE } from './bundle.js'
export type { BundleComponents, BundleFetchOptions, BundleTaken, TakenEntry } from './bundle.js'
export type { SwarmFetcherComponents, SwarmFetcherInit, FetchOutcome, Acquired } from './fetch.js'
export { LiveNar, HOLD_BACK } from './live.js'
export type { LiveNarInit } from './live.js'
export { GarbageCollector } from './gc.js'
export type { GcOptions, GcReport, GcRemoved, GarbageCollectorComponents } from './gc.js'
export { Mirror, matchesFilters } from './mirror.js'
export type { MirrorComponents, MirrorFilters } from './mirror.js'
export { FeedFollower, RecentOutputs, successfulOutputs } from './feed.js'
export type { BuildFeed } from './feed.js'
export { CacheNarSource, NarHashIndex, narFileKey } from './source.js'
export * from './errors.js'
