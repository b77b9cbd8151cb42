// Shared helpers for the NAR tests: temp dirs, fixture trees, a raw NAR token builder and a
// snapshot of a directory to prove that nothing outside an unpack target changed.
import { execFileSync } from 'node:child_process'
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { VECTORS } from '../helpers/paths.js'

export const NAR_VECTORS = join(VECTORS, 'nar')
export const INVALID_VECTORS = join(VECTORS, 'nar-invalid')

export function tempDir (prefix = 'gs-nar-'): { dir: string, cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Recreates the fixture trees with the shared make-cases.sh into `dir`. */
export function makeCases (dir: string): void {
  execFileSync('sh', [join(NAR_VECTORS, 'make-cases.sh'), dir], { stdio: 'pipe' })
}

/** Builds NAR bytes token by token, so tests can write hostile archives. */
export class NarBuilder {
  private readonly parts: Buffer[] = []

  str (s: string | Buffer): this {
    const b = typeof s === 'string' ? Buffer.from(s) : s
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(b.length))
    this.parts.push(len, b, Buffer.alloc((8 - (b.length % 8)) % 8))
    return this
  }

  raw (b: Buffer): this {
    this.parts.push(b)
    return this
  }

  tokens (...ts: Array<string | Buffer>): this {
    for (const t of ts) this.str(t)
    return this
  }

  file (contents: string, executable = false): this {
    this.tokens('(', 'type', 'regular')
    if (executable) this.tokens('executable', '')
    return this.tokens('contents', contents, ')')
  }

  symlink (target: string): this {
    return this.tokens('(', 'type', 'symlink', 'target', target, ')')
  }

  entry (name: string | Buffer, node: (b: this) => void): this {
    this.tokens('entry', '(', 'name', name, 'node')
    node(this)
    return this.tokens(')')
  }

  dir (entries: (b: this) => void): this {
    this.tokens('(', 'type', 'directory')
    entries(this)
    return this.tokens(')')
  }

  build (): Buffer {
    return Buffer.concat(this.parts)
  }
}

export function nar (): NarBuilder {
  return new NarBuilder().str('nix-archive-1')
}

/** A listing of everything under `root` (type, mode, size, contents/target), skipping `exclude`. */
export function snapshot (root: string, exclude: string): Map<string, string> {
  const out = new Map<string, string>()
  const walk = (p: string): void => {
    if (p === exclude) return
    const st = lstatSync(p)
    // A directory's mtime changes when dest is created in it; its children are listed instead.
    let what = st.isDirectory() ? `${st.mode.toString(8)} dir` : `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`
    if (st.isSymbolicLink()) what += ` -> ${readlinkSync(p)}`
    else if (st.isFile()) what += ` ${readFileSync(p).toString('base64')}`
    out.set(p, what)
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n))
  }
  walk(root)
  return out
}
