// Wire format of /guix-swarm/nar/1.0.0:
//   request:  frame(JSON Request), then the client half-closes
//   response: frame(JSON ResponseHeader), then exactly header.size raw bytes (status 'ok')
// frame = uint32 big-endian length + UTF-8 JSON. JSON because the messages are tiny and
// readable in a packet dump; the length prefix bounds what a peer can make us buffer.
import { MalformedFrameError, OversizedFrameError } from './errors.js'
import { isStorePathHashPart } from './cid.js'
import type { StreamReader } from './stream-io.js'

export const NAR_PROTOCOL = '/guix-swarm/nar/1.0.0'
/** Requests and response headers are a few hundred bytes; anything bigger is hostile. */
export const MAX_FRAME_SIZE = 16 * 1024
/** Narinfos with long References lines stay far below this. */
export const MAX_NARINFO_SIZE = 1024 * 1024
/** File keys are names like `<narHash-b32>.<compression>`; the charset keeps a naive source safe from paths. */
const FILE_KEY = /^[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,254}$/

export type Request =
  | { type: 'narinfo', hashPart: string }
  | { type: 'file', key: string, offset: number, length?: number }

export type ResponseHeader =
  | { status: 'ok', size: number, total?: number }
  | { status: 'not-found' }
  | { status: 'error', code: 'bad-request' | 'range' | 'internal', message: string }

export function isFileKey (key: string): boolean {
  return FILE_KEY.test(key) && !key.includes('..')
}

export function encodeFrame (message: Request | ResponseHeader): Uint8Array {
  return encodeJsonFrame(message)
}

/** frame(JSON) for any small message (also the closure-bundle protocol's); over MAX_FRAME_SIZE throws. */
export function encodeJsonFrame (message: object): Uint8Array {
  const body = Buffer.from(JSON.stringify(message), 'utf8')
  if (body.length > MAX_FRAME_SIZE) throw new OversizedFrameError(body.length, MAX_FRAME_SIZE, 'encoding a frame')
  const out = new Uint8Array(4 + body.length)
  new DataView(out.buffer).setUint32(0, body.length)
  out.set(body, 4)
  return out
}

/** One frame's JSON object; MalformedFrameError / OversizedFrameError (ProtocolErrors) otherwise. */
export async function readFrameJson (reader: StreamReader, where: string): Promise<Record<string, unknown>> {
  const prefix = await reader.readExact(4, `${where} (length prefix)`)
  const length = new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0)
  if (length > MAX_FRAME_SIZE) throw new OversizedFrameError(length, MAX_FRAME_SIZE, where)
  if (length === 0) throw new MalformedFrameError(`${where}: empty frame`)
  const body = await reader.readExact(length, `${where} (body)`)
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body))
  } catch (err) {
    throw new MalformedFrameError(`${where}: frame is not UTF-8 JSON: ${(err as Error).message}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new MalformedFrameError(`${where}: frame is not a JSON object`)
  }
  return value as Record<string, unknown>
}

function isSafeNonNegInt (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

export async function readRequest (reader: StreamReader): Promise<Request> {
  const m = await readFrameJson(reader, 'request')
  if (m.type === 'narinfo') {
    if (typeof m.hashPart !== 'string' || !isStorePathHashPart(m.hashPart)) {
      throw new MalformedFrameError('narinfo request: hashPart must be 32 nix-base32 characters')
    }
    return { type: 'narinfo', hashPart: m.hashPart }
  }
  if (m.type === 'file') {
    if (typeof m.key !== 'string' || !isFileKey(m.key)) throw new MalformedFrameError('file request: bad key')
    if (!isSafeNonNegInt(m.offset)) throw new MalformedFrameError('file request: offset must be a non-negative integer')
    if (m.length !== undefined && !isSafeNonNegInt(m.length)) throw new MalformedFrameError('file request: length must be a non-negative integer')
    return m.length === undefined
      ? { type: 'file', key: m.key, offset: m.offset }
      : { type: 'file', key: m.key, offset: m.offset, length: m.length }
  }
  throw new MalformedFrameError(`request: unknown type ${JSON.stringify(m.type)}`)
}

export async function readResponseHeader (reader: StreamReader): Promise<ResponseHeader> {
  const m = await readFrameJson(reader, 'response')
  if (m.status === 'ok') {
    if (!isSafeNonNegInt(m.size)) throw new MalformedFrameError('response: size must be a non-negative integer')
    if (m.total !== undefined && !isSafeNonNegInt(m.total)) throw new MalformedFrameError('response: total must be a non-negative integer')
    return m.total === undefined ? { status: 'ok', size: m.size } : { status: 'ok', size: m.size, total: m.total }
  }
  if (m.status === 'not-found') return { status: 'not-found' }
  if (m.status === 'error') {
    const code = m.code === 'bad-request' || m.code === 'range' || m.code === 'internal' ? m.code : 'internal'
    return { status: 'error', code, message: typeof m.message === 'string' ? m.message.slice(0, 1000) : 'unknown error' }
  }
  throw new MalformedFrameError(`response: unknown status ${JSON.stringify(m.status)}`)
}
