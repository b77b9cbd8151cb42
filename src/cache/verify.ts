// Checking a cache file against its narinfo: decompress while hashing, so a NAR of any size is
// checked in constant memory.
import { stat } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Readable, Writable } from 'node:stream'
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
  checkDigest(narinfo, got, path)
  return got
}

/**
 * verifyFile for a file held in memory (small files received whole): the same checks, and the
 * decompressed NAR is returned, so the caller need not decompress it again.
 */
export async function verifyBytes (narinfo: Narinfo, compression: Compression, bytes: Uint8Array, where: string): Promise<Buffer> {
  const group = narinfo.urls.find((u) => (u.compression ?? 'none') === compression)
  if (group?.fileSize !== undefined && bytes.length !== group.fileSize) {
    throw new CacheFileSizeMismatchError(`${where}: ${bytes.length} bytes, but the narinfo of ${narinfo.storePath} says FileSize ${group.fileSize} for ${compression}`)
  }
  const hasher = new NarHasher()
  let nar: Buffer
  if (compression === 'none') {
    nar = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
    hasher.update(nar)
  } else {
    const parts: Buffer[] = []
    let size = 0
    const sink = new Writable({
      write (chunk: Buffer, _enc, cb) {
        size += chunk.length
        // a decompression bomb stops at the size the signed narinfo promised
        if (size > narinfo.narSize) { cb(new CacheNarSizeMismatchError(`${where}: the NAR is over ${narinfo.narSize} bytes, the NarSize of ${narinfo.storePath}`)); return }
        hasher.update(chunk); parts.push(chunk); cb()
      }
    })
    try {
      await pipeline(Readable.from([bytes]), decompressStream(compression), sink)
    } catch (err) {
      if (err instanceof DecompressionError || err instanceof CompressionToolFailedError) {
        throw new CacheFileCorruptError(`${where} does not decompress as ${compression}: ${err.message}`)
      }
      throw err
    }
    nar = Buffer.concat(parts)
  }
  checkDigest(narinfo, hasher.digest(), where)
  return nar
}

function checkDigest (narinfo: Narinfo, got: NarDigest, where: string): void {
  if (got.narSize !== narinfo.narSize) {
    throw new CacheNarSizeMismatchError(`${where}: the NAR is ${got.narSize} bytes, but the narinfo of ${narinfo.storePath} says NarSize ${narinfo.narSize}`)
  }
  if (!Buffer.from(got.sha256).equals(Buffer.from(narHashBytes(narinfo.narHash)))) {
    throw new CacheNarHashMismatchError(`${where}: the NAR hashes to ${got.narHash}, but the narinfo of ${narinfo.storePath} says NarHash ${normalizeNarHash(narinfo.narHash)}`)
  }
}
