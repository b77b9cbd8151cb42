/**
 * src/nar: NAR (Nix ARchive) writing, strict reading and unpacking, the NAR hash, nix-base32
 * and NAR compression. The bottom layer: imports nothing else from the project.
 *
 * Writing:   packNarSync(path, {reuseBuffers?}) yields Buffers synchronously (fastest; with
 *            reuseBuffers each chunk is valid only until the next one), packNar(path) is the
 *            same as a Readable, writeNar(path, sink) pipes it into a Writable.
 * Reading:   NarParser (push chunks, end()) or parseNar(source, visitor) validate a NAR and
 *            report its content to a NarVisitor; errors are NarFormatError subclasses with
 *            the byte `offset`.
 * Unpacking: unpackNar(source, dest, {hash?}) creates `dest` (which must not exist).
 * Hashing:   NarHasher, NarHashTap (pass-through Transform), hashPathSync(path),
 *            hashNarStream(source); narHash is printed `sha256:<nix-base32>`.
 * Compression: Compression, parseCompression, compressStream/decompressStream (Duplex),
 *            narFileExtension, guixNarUrlPath.
 */
export * from './errors.js'
export { NIX_BASE32_ALPHABET, nixBase32Length, encodeNixBase32, decodeNixBase32 } from './base32.js'
export { NAR_CHUNK_SIZE, packNarSync, packNar, writeNar, type PackOptions } from './writer.js'
export { NAR_MAX_NAME, NAR_MAX_DEPTH, NarParser, parseNar, type NarVisitor } from './reader.js'
export { NarUnpacker, unpackNar, type UnpackOptions, type UnpackResult } from './unpack.js'
export { NarHasher, NarHashTap, formatNarHash, hashPathSync, hashNarStream, type NarDigest } from './hash.js'
export {
  COMPRESSIONS, type Compression, parseCompression, compressStream, decompressStream,
  narFileExtension, guixNarUrlPath, type CompressOptions
} from './compression.js'
