import { open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { DataDirInUseError } from './errors.js'

const log = logger('guix-swarm:node:lock')

export const LOCK_FILE = 'lock'

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * One node per data dir: `<dataDir>/lock` created with O_EXCL holding our pid. A lock whose
 * pid is gone (crash, SIGKILL) is stale and taken over. The level database's own lock is a
 * second line of defence behind this one.
 */
export class DataDirLock {
  private held = false
  readonly file: string

  constructor (readonly dataDir: string) {
    this.file = join(dataDir, LOCK_FILE)
  }

  async acquire (): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(this.file, 'wx', 0o644)
        await fh.writeFile(`${process.pid}\n`)
        await fh.close()
        this.held = true
        return
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      let pid = NaN
      try {
        pid = Number.parseInt(await readFile(this.file, 'utf8'), 10)
      } catch {}
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new DataDirInUseError(`data dir ${this.dataDir} is already in use by another guix-swarm node (pid ${pid}); stop it or choose another --data-dir`)
      }
      // Pid unreadable for a moment could be a node mid-write: give it one more look before taking over.
      if (!Number.isInteger(pid) && attempt === 0) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        continue
      }
      log('removing stale lock %s (pid %s)', this.file, String(pid))
      await unlink(this.file).catch(() => {})
    }
    throw new DataDirInUseError(`cannot take the lock ${this.file}: another process keeps recreating it`)
  }

  async release (): Promise<void> {
    if (!this.held) return
    this.held = false
    try {
      const pid = Number.parseInt(await readFile(this.file, 'utf8'), 10)
      if (pid === process.pid) await unlink(this.file)
    } catch {}
  }
}
