// DHT keys for NARs and store paths.
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHash } from 'node:crypto'
import { InvalidHashPartError, InvalidNarHashError } from './errors.js'

const NIX_BASE32_HASH_PART = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/

/** CIDv1, raw codec, sha2-256 multihash carrying the NAR's own sha256 (the narinfo NarHash). */
export function narCid (narHash: Uint8Array): CID {
  if (narHash.length !== 32) throw new InvalidNarHashError(narHash.length)
  return CID.createV1(raw.code, Digest.create(sha256.code, narHash))
}

/**
 * CIDv1 (raw codec) whose sha2-256 multihash is sha256("guix-swarm:storepath:<hashPart>").
 *
 * Why hash instead of embedding the hash part: the hash part is a 160-bit truncated,
 * nix-base32-encoded digest, not a sha2-256 digest, so it cannot honestly sit in a sha2-256
 * multihash; an identity multihash would work but shares the keyspace with every other
 * identity-CID user. The domain prefix keeps these keys apart from narCid keys and from
 * other applications' CIDs, and the hash spreads them uniformly over the kad keyspace.
 */
export function storePathCid (hashPart: string): CID {
  if (!NIX_BASE32_HASH_PART.test(hashPart)) throw new InvalidHashPartError(hashPart)
  const digest = createHash('sha256').update(`guix-swarm:storepath:${hashPart}`, 'ascii').digest()
  return CID.createV1(raw.code, Digest.create(sha256.code, new Uint8Array(digest)))
}

export function isStorePathHashPart (s: string): boolean {
  return NIX_BASE32_HASH_PART.test(s)
}
