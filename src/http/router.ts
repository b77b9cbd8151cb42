import type { IncomingMessage, ServerResponse } from 'node:http'
import { logger } from '@libp2p/logger'
import { HttpError, HttpMethodNotAllowedError, HttpNotFoundError } from './errors.js'
import { sendError } from './json.js'

const log = logger('guix-swarm:http')

export type RouteParams = Record<string, string>
export type RouteHandler = (req: IncomingMessage, res: ServerResponse, params: RouteParams, url: URL) => void | Promise<void>

/**
 * A path pattern: a string with `:name` segments and an optional trailing `*`
 * (the rest of the path, into `params['*']`), or a RegExp whose named groups become params.
 */
export type RoutePattern = string | RegExp

interface Route {
  method: string
  regex: RegExp
  keys: string[]
  handler: RouteHandler
  pattern: string
}

function compile (pattern: RoutePattern): { regex: RegExp, keys: string[] } {
  if (pattern instanceof RegExp) return { regex: pattern, keys: [] }
  const keys: string[] = []
  let src = ''
  for (const part of pattern.split('/').slice(1)) {
    if (part === '*') {
      keys.push('*')
      src += '/(.*)'
    } else if (part.startsWith(':')) {
      keys.push(part.slice(1))
      src += '/([^/]+)'
    } else {
      src += '/' + part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    }
  }
  return { regex: new RegExp(`^${src === '' ? '/' : src}$`), keys }
}

/**
 * A small router on node:http. Routes match in registration order; an unknown path under
 * /api/ gets a JSON 404, a known path with the wrong method a JSON 405, and a handler that
 * throws gets `{error: {name, message}}` with the error's status (HttpError) or 500.
 */
export class HttpRouter {
  private readonly routes: Route[] = []

  /** Register `handler` for `method` ('GET', 'POST', … or '*' for any) on `pattern`. */
  route (method: string, pattern: RoutePattern, handler: RouteHandler): this {
    const { regex, keys } = compile(pattern)
    this.routes.push({ method: method.toUpperCase(), regex, keys, handler, pattern: String(pattern) })
    return this
  }

  /** Remove every route registered with this exact pattern (services unplug on stop). */
  unroute (pattern: RoutePattern): void {
    const p = String(pattern)
    for (let i = this.routes.length - 1; i >= 0; i--) {
      if (this.routes[i].pattern === p) this.routes.splice(i, 1)
    }
  }

  /** The node:http request listener. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    void this.dispatch(req, res)
  }

  async dispatch (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase()
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://localhost')
    } catch {
      sendError(res, 400, { name: 'HttpBadRequestError', message: `bad request target ${req.url ?? ''}` })
      return
    }
    let pathMatched = false
    for (const r of this.routes) {
      const m = r.regex.exec(url.pathname)
      if (m == null) continue
      pathMatched = true
      // HEAD is served by GET handlers; node:http drops the body for HEAD.
      if (r.method !== '*' && r.method !== method && !(method === 'HEAD' && r.method === 'GET')) continue
      const params: RouteParams = { ...(m.groups ?? {}) }
      r.keys.forEach((k, i) => {
        try {
          params[k] = decodeURIComponent(m[i + 1] ?? '')
        } catch {
          params[k] = m[i + 1] ?? ''
        }
      })
      try {
        await r.handler(req, res, params, url)
      } catch (err) {
        this.fail(res, err, method, url)
      }
      return
    }
    if (pathMatched) {
      this.fail(res, new HttpMethodNotAllowedError(`${method} is not allowed on ${url.pathname}`), method, url)
      return
    }
    this.fail(res, new HttpNotFoundError(`no route for ${method} ${url.pathname}`), method, url)
  }

  private fail (res: ServerResponse, err: unknown, method: string, url: URL): void {
    const e = err instanceof Error ? err : new Error(String(err))
    const status = e instanceof HttpError ? e.status : 500
    if (status >= 500) log.error('%s %s failed: %s', method, url.pathname, e.stack ?? e.message)
    else log('%s %s -> %d %s', method, url.pathname, status, e.message)
    if (res.headersSent) {
      res.destroy(e)
      return
    }
    if (url.pathname.startsWith('/api/') || url.pathname === '/api' || status >= 500 || !(e instanceof HttpNotFoundError)) {
      sendError(res, status, e)
    } else {
      // Substitute clients probe paths that do not exist; a short text 404 is what they expect.
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
      res.end('not found\n')
    }
  }
}
