// A tiny static HTTP server over a directory (NOT our node): what any operator could put in front
// of a cache directory. 404 (never 5xx) for anything missing, Content-Length always, HEAD too.
import { createServer, type Server } from 'node:http'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { join, normalize } from 'node:path'

export interface StaticServer { url: string, requests: string[], close: () => Promise<void> }

export async function serveDirectory (root: string): Promise<StaticServer> {
  const requests: string[] = []
  const server: Server = createServer((req, res) => {
    void (async () => {
      const path = decodeURIComponent((req.url ?? '/').split('?')[0])
      requests.push(`${req.method ?? '?'} ${path}`)
      const file = normalize(join(root, path))
      try {
        if (!file.startsWith(root + '/')) throw new Error('outside')
        const s = await stat(file)
        if (!s.isFile()) throw new Error('not a file')
        res.writeHead(200, { 'Content-Length': s.size })
        if (req.method === 'HEAD') { res.end(); return }
        createReadStream(file).pipe(res)
      } catch {
        res.writeHead(404, { 'Content-Length': 0 })
        res.end()
      }
    })()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => { server.closeAllConnections(); await new Promise<void>((resolve) => server.close(() => resolve())) }
  }
}
