// Checking a cache file against its narinfo: decompress while hashing, so a NAR of any size is
// checked in constant memory.
import { stat } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Writable } from 'node:stream'
import { CompressionToolFailedError, decompressStream, DecompressionError, NarHasher, type Compression, type NarDigest } from '../nar/index.js'
import { narHashBytes, normalizeNarHash, type Narinfo } from '../narinfo/index.js'
import {
  CacheFileCorruptError, CacheFileSizeMismatchError, CacheNarHashMismatchError, CacheNarSizeMismatchError
} from './errors.js'

/**
 * Check that `path`, compressed with `compression`, is the NAR `narinfo` describes: FileSize (when
 * the narinfo's group for that compression has one), then NarSize and NarHash of the decompressed
 * bytes. Throws a CacheVerifyError subclass; returns the digest when everything matches.
 */
export async function verifyFile (narinfo: Narinfo, compression: Compression, path: string): Promise<NarDigest> {
  const group = narinfo.urls.find((u) => (u.compression ?? 'none') === compression)
  if (group?.fileSize !== undefined) {
    const size = (await stat(path)).size
    if (size !== group.fileSize) {
      throw new CacheFileSizeMismatchError(`${path}: ${size} bytes, but the narinfo of ${narinfo.storePath} says FileSize ${group.fileSize} for ${compression}`)
    }
  }
  const hasher = new NarHasher()
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) { hasher.update(chunk); cb() }
  })
  try {
    await pipeline(createReadStream(path), decompressStream(compression), sink)
  } catch (err) {
    if (err instanceof DecompressionError || err instanceof CompressionToolFailedError) {
      throw new CacheFileCorruptError(`${path} does not decompress as ${compression}: ${err.message}`)
    }
    throw err
  }
  const got = hasher.digest()
  if (got.narSize !== narinfo.narSize) {
    throw new CacheNarSizeMismatchError(`${path}: the NAR is ${got.narSize} bytes, but the narinfo of ${narinfo.storePath} says NarSize ${narinfo.narSize}`)
  }
  if (!Buffer.from(got.sha256).equals(Buffer.from(narHashBytes(narinfo.narHash)))) {
    throw new CacheNarHashMismatchError(`${path}: the NAR hashes to ${got.narHash}, but the narinfo of ${narinfo.storePath} says NarHash ${normalizeNarHash(narinfo.narHash)}`)
  }
  return got
}
