// One class per failure, each with a stable `name`, so callers can branch without parsing messages.

/** Base class of every error raised by src/cache. */
export class CacheError extends Error {
  override name = 'CacheError'
}

/** A URL path that would leave the cache directory or names something that is not served. */
export class CacheBadUrlPathError extends CacheError {
  override name = 'CacheBadUrlPathError'
  constructor (readonly urlPath: string, why: string) {
    super(`cache URL path ${JSON.stringify(urlPath)} refused: ${why}`)
  }
}

/** A store path outside the cache's store directory, or not `<dir>/<hash>-<name>`. */
export class CacheStorePathError extends CacheError {
  override name = 'CacheStorePathError'
}

/** The NAR the daemon streamed did not hash to what the daemon said it would. */
export class CacheExportMismatchError extends CacheError {
  override name = 'CacheExportMismatchError'
}

/** addVerified: a narinfo that cannot be parsed or does not fit this cache. */
export class CacheNarinfoError extends CacheError {
  override name = 'CacheNarinfoError'
}

/** addVerified: a URL listed in the narinfo has no file, or a file has no URL in the narinfo. */
export class CacheMissingFileError extends CacheError {
  override name = 'CacheMissingFileError'
}

/** Base class of the verifyFile failures: the file is not the NAR the narinfo describes. */
export class CacheVerifyError extends CacheError {
  override name = 'CacheVerifyError'
}

/** The file does not decompress with the stated compression (corrupt or truncated). */
export class CacheFileCorruptError extends CacheVerifyError {
  override name = 'CacheFileCorruptError'
}

/** The compressed file's size differs from the narinfo's FileSize. */
export class CacheFileSizeMismatchError extends CacheVerifyError {
  override name = 'CacheFileSizeMismatchError'
}

/** The decompressed NAR's SHA-256 differs from NarHash. */
export class CacheNarHashMismatchError extends CacheVerifyError {
  override name = 'CacheNarHashMismatchError'
}

/** The decompressed NAR's length differs from NarSize. */
export class CacheNarSizeMismatchError extends CacheVerifyError {
  override name = 'CacheNarSizeMismatchError'
}

/** openFile: the file is not in the cache. */
export class CacheNotFoundError extends CacheError {
  override name = 'CacheNotFoundError'
}

/** A compressor went away in the middle of an export (its own error says why). */
export class CacheSinkClosedError extends CacheError {
  override name = 'CacheSinkClosedError'
}

/** The directory already holds a cache for another store directory. */
export class CacheStoreDirMismatchError extends CacheError {
  override name = 'CacheStoreDirMismatchError'
}
