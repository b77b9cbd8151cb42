// Finding every process a build started: Nix puts its builder in a new session (setsid), so
// killing nix-store's process group alone would leave the builder running.
import { readdir, readFile } from 'node:fs/promises'

export interface Stat {
  pid: number
  ppid: number
  pgrp: number
  /** CPU seconds of the process itself (utime + stime) and of its children it reaped (cutime + cstime). */
  cpu: number
  reapedCpu: number
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on Linux). */
const TICKS = 100

async function readStat (pid: number): Promise<Stat | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8')
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ') // after "pid (comm) "
    // utime, stime, cutime, cstime are fields 14–17 of the line, 12–15 after the command name
    return { pid, ppid: Number(rest[1]), pgrp: Number(rest[2]), cpu: (Number(rest[11]) + Number(rest[12])) / TICKS, reapedCpu: (Number(rest[13]) + Number(rest[14])) / TICKS }
  } catch {
    return undefined // gone, or no /proc
  }
}

/** `root` and all its descendants still alive (Linux /proc; empty elsewhere). */
export async function processTree (root: number): Promise<Stat[]> {
  let names: string[]
  try { names = await readdir('/proc') } catch { return [] }
  const stats = (await Promise.all(names.filter((n) => /^\d+$/.test(n)).map(async (n) => await readStat(Number(n)))))
    .filter((s): s is Stat => s !== undefined)
  const children = new Map<number, Stat[]>()
  for (const s of stats) {
    const list = children.get(s.ppid) ?? []
    list.push(s)
    children.set(s.ppid, list)
  }
  const self = stats.find((s) => s.pid === root)
  if (self === undefined) return []
  const out: Stat[] = []
  const queue = [self]
  while (queue.length > 0) {
    const s = queue.shift() as Stat
    out.push(s)
    queue.push(...(children.get(s.pid) ?? []))
  }
  return out
}

/** Signal every process group and process in the tree. */
export function signalTree (tree: Stat[], signal: NodeJS.Signals): void {
  const groups = new Set(tree.map((s) => s.pgrp))
  for (const g of groups) { try { process.kill(-g, signal) } catch { /* gone */ } }
  for (const s of tree) { try { process.kill(s.pid, signal) } catch { /* gone */ } }
}

export function isAlive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}
