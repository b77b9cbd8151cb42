// Gossip envelopes (topic queue/3): one message carries the ops a node authored together (a
// submit of many builds, a batch's claims), so a burst costs one gossipsub message, one relay
// and one signature check per author run instead of one of each per op.
//
// A message is either one op's bytes (a dag-cbor map) or a dag-cbor array of op byte strings,
// in the order they were authored. The first byte tells them apart: map or array.
import { encode as cborEncode, decode as cborDecode } from '@ipld/dag-cbor'
import { OpMalformedError, OpOversizedError } from './errors.js'

export interface GossipLimits {
  /** Largest message a node sends or takes (bytes). */
  maxMessageBytes: number
  /** Most ops in one message. */
  maxOps: number
}

export const DEFAULT_GOSSIP_LIMITS: GossipLimits = { maxMessageBytes: 256 * 1024, maxOps: 512 }

/** CBOR major type 4 (array): the first byte of a batch. A single op is a map (major type 5). */
const isArrayHead = (b: number): boolean => (b >> 5) === 4

// array head + one byte-string head per op (at most 5 bytes each for ops ≤ 4 GiB)
const overhead = (ops: number): number => 5 + 5 * ops

/**
 * Split `ops` (op bytes, in authoring order) into messages within `limits`, order kept. A lone
 * op goes as itself, so a message of one op reads the same as before batching.
 */
export function encodeGossip (ops: readonly Uint8Array[], limits: GossipLimits = DEFAULT_GOSSIP_LIMITS): Uint8Array[] {
  const out: Uint8Array[] = []
  let group: Uint8Array[] = []
  let bytes = 0
  const flush = (): void => {
    if (group.length === 1) out.push(group[0])
    else if (group.length > 1) out.push(cborEncode(group))
    group = []
    bytes = 0
  }
  for (const op of ops) {
    if (group.length > 0 && (group.length >= limits.maxOps || bytes + op.length + overhead(group.length + 1) > limits.maxMessageBytes)) flush()
    group.push(op)
    bytes += op.length
  }
  flush()
  return out
}

/** The op bytes in a message; throws OpMalformedError / OpOversizedError for what no honest node sends. */
export function decodeGossip (data: Uint8Array, limits: GossipLimits = DEFAULT_GOSSIP_LIMITS): Uint8Array[] {
  if (data.length === 0) throw new OpMalformedError('empty gossip message')
  if (!isArrayHead(data[0])) return [data]
  if (data.length > limits.maxMessageBytes) throw new OpOversizedError(data.length, limits.maxMessageBytes)
  let items: unknown
  try {
    items = cborDecode(data)
  } catch (err) {
    throw new OpMalformedError(`gossip batch: ${(err as Error).message}`)
  }
  if (!Array.isArray(items)) throw new OpMalformedError('gossip batch is not an array')
  if (items.length < 2 || items.length > limits.maxOps) throw new OpMalformedError(`gossip batch of ${items.length} ops (2 to ${limits.maxOps})`)
  for (const item of items) {
    if (!(item instanceof Uint8Array) || item.length === 0) throw new OpMalformedError('gossip batch item is not op bytes')
  }
  return items as Uint8Array[]
}
