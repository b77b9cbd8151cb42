// Small readers of a test node's queue API (straight HTTP: cheap to poll), shared by the queue tests.
import type { TestNode } from '../helpers/swarm.js'

export interface QueueSection {
  builds: number
  ops: number
  stateHash: string
  byState: Record<string, number>
  stats: { rejected: Record<string, number> }
}

export interface AttemptJson { number: number, peerId: string, state: string, claimedAt: number, leaseEndsAt: number | null, result: unknown }

export interface BuildJson {
  id: string
  derivation: string
  system: string
  state: string
  priority: number
  tags: Record<string, string>
  canceled: boolean
  attempts: AttemptJson[]
  reason: string
}

export async function queueStatus (node: TestNode): Promise<QueueSection> {
  const res = await fetch(`${node.url}/api/status`)
  return ((await res.json()) as { queue: QueueSection }).queue
}

/** The build as node sees it, or undefined while it does not know it. */
export async function buildOn (node: TestNode, id: string): Promise<BuildJson | undefined> {
  const res = await fetch(`${node.url}/api/builds/${id}`)
  if (res.status === 404) return undefined
  if (!res.ok) throw new Error(`GET /api/builds/${id} on ${node.peerId}: ${res.status} ${await res.text()}`)
  return (await res.json()) as BuildJson
}

export async function post (node: TestNode, path: string, body: unknown): Promise<{ status: number, json: unknown }> {
  const res = await fetch(`${node.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, json: await res.json() }
}

/** A well-formed (never built) derivation path, unique per `name`. */
export function drvPath (name: string, store = '/gnu/store'): string {
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz'
  let h = ''
  for (let i = 0; i < 32; i++) h += alphabet[(name.charCodeAt(i % name.length) * (i + 7) + i) % 32]
  return `${store}/${h}-${name}.drv`
}

/** Every node's state hash, once they all agree (else undefined). */
export async function agreedHash (nodes: TestNode[]): Promise<string | undefined> {
  const hashes = await Promise.all(nodes.map(async (n) => (await queueStatus(n)).stateHash))
  return hashes.every((h) => h === hashes[0]) ? hashes[0] : undefined
}
