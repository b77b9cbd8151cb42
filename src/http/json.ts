import type { IncomingMessage, ServerResponse } from 'node:http'
import { HttpBadJsonError, HttpBodyTooLargeError } from './errors.js'

/** Write `body` as JSON with `status`; ends the response. */
export function sendJson (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n'
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store'
  })
  res.end(text)
}

/** Write an error as `{error: {name, message}}`. */
export function sendError (res: ServerResponse, status: number, err: { name: string, message: string }): void {
  sendJson(res, status, { error: { name: err.name, message: err.message } })
}

/**
 * Read and parse a JSON request body, refusing more than `limitBytes`
 * (checked against Content-Length up front and against the bytes actually received).
 */
export async function readJsonBody (req: IncomingMessage, limitBytes: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limitBytes) {
    throw new HttpBodyTooLargeError(`request body of ${declared} bytes exceeds the limit of ${limitBytes} bytes (${req.method ?? ''} ${req.url ?? ''})`)
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    const buf = chunk as Buffer
    size += buf.length
    if (size > limitBytes) {
      throw new HttpBodyTooLargeError(`request body exceeds the limit of ${limitBytes} bytes (${req.method ?? ''} ${req.url ?? ''})`)
    }
    chunks.push(buf)
  }
  const text = Buffer.concat(chunks).toString('utf8')
  if (text.trim() === '') throw new HttpBadJsonError(`empty request body where JSON was expected (${req.method ?? ''} ${req.url ?? ''})`)
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    throw new HttpBadJsonError(`request body is not valid JSON: ${(err as Error).message}`)
  }
}
