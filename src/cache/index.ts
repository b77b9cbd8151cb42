/**
 * src/cache: the node's store of NARs and narinfos, laid out as a static binary cache (any static
 * HTTP server can serve the directory to `guix`/`nix`), and the writer behind `cache export`.
 * Imports nar, narinfo and daemon only.
 *
 *   const cache = new BinaryCache({ dir, storeDir: '/nix/store', keys, compressions: ['zstd'] })
 *   const entries = await cache.addClosure(store, [outPath])     // references first, each once
 *   await cache.statFile('nar/zstd/<basename>'); await cache.openFile(url, { start, end })
 *   await cache.addVerified({ narinfoText, files: [{ compression: 'zstd', tempPath }] })
 *   await verifyFile(parseNarinfo(text), 'zstd', file)           // CacheVerifyError subclasses
 */
export {
  BinaryCache, cheapestToUnpack, defaultCompressions, SMALL_NAR_BYTES,
  type BinaryCacheComponents, type CacheEntry, type CacheFile, type CacheIndexRecord, type AddClosureOptions,
  type AddVerifiedOptions, type VerifiedFile, type FileRange
} from './binary-cache.js'
export { verifyFile, verifyBytes } from './verify.js'
export * from './errors.js'
