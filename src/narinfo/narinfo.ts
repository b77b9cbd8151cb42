// The narinfo model, its strict parser, and the two writers: `guix publish` order (FORMATS.md
// §4.1) and `nix copy` order (§3.2). Every byte of the output matters: Guix signs the text.
import { decodeNixBase32, encodeNixBase32 } from '../nar/index.js'
import {
  NarinfoBadFieldError, NarinfoCrlfError, NarinfoFormatError, NarinfoMissingFieldError,
  NarinfoStoreDirError, NarinfoUrlGroupError
} from './errors.js'

export const GUIX_STORE_DIR = '/gnu/store'
export const NIX_STORE_DIR = '/nix/store'

/** One way to download the NAR: Guix lists several (one per compression), Nix one. */
export interface NarinfoUrl {
  url: string
  compression?: string
  fileSize?: number
  /** `sha256:<nix-base32>` of the compressed file (Nix only). */
  fileHash?: string
}

export interface Narinfo {
  /** Full store path, e.g. `/gnu/store/<hash>-hello-2.12`. */
  storePath: string
  urls: NarinfoUrl[]
  /** As written: `sha256:<nix-base32>` normally; Nix also accepts hex and SRI. */
  narHash: string
  narSize: number
  /** Base names (`<hash>-<name>`), in the order written. */
  references: string[]
  /** Base name of the deriver. */
  deriver?: string
  /** Older `guix publish` wrote it; kept when present. */
  system?: string
  /** Content address (Nix). */
  ca?: string
  /** Nix `Sig:` values (`keyname:base64`), in file order. */
  sigs: string[]
  /** Guix `Signature:` value (`1;host;base64`). */
  signature?: string
}

export type Dialect = 'guix' | 'nix'

export interface ParseOptions {
  /** The store directory StorePath must lie in; `/gnu/store` by default. */
  storeDir?: string
}

/** Where each known field sat in the text: byte offsets of line starts, for signature coverage checks. */
export interface NarinfoLayout {
  /** Byte offset of the first line with each key. */
  firstOffset: Map<string, number>
}

export interface ParsedNarinfo { narinfo: Narinfo, layout: NarinfoLayout }

const SINGLE_FIELDS = new Set(['StorePath', 'NarHash', 'NarSize', 'References', 'Deriver', 'System', 'CA', 'Signature'])
const GROUP_FIELDS = ['URL', 'Compression', 'FileSize', 'FileHash'] as const
const BASENAME = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-._?=]+$/
// Nix takes any text before the first colon as the field name; we only refuse whitespace in it
const KEY = /^[^\s:]+$/

/** True when `s` is a store base name: 32 nix-base32 characters, a dash, a name. */
export function isStoreBaseName (s: string): boolean {
  return BASENAME.test(s) && s.length <= 211 && s.slice(33) !== '.' && s.slice(33) !== '..'
}

/** Parse a narinfo (either dialect). Throws a NarinfoFormatError subclass saying what and where. */
export function parseNarinfo (text: string | Uint8Array, opts: ParseOptions = {}): Narinfo {
  return parseNarinfoWithLayout(text, opts).narinfo
}

export function parseNarinfoWithLayout (input: string | Uint8Array, opts: ParseOptions = {}): ParsedNarinfo {
  const storeDir = opts.storeDir ?? GUIX_STORE_DIR
  const text = typeof input === 'string' ? input : decodeUtf8(input)
  const cr = text.indexOf('\r')
  if (cr !== -1) throw new NarinfoCrlfError(`narinfo contains a carriage return (CRLF line endings?) on line ${lineNo(text, cr)}; only LF is allowed`)

  const single = new Map<string, string>()
  const groups: Record<(typeof GROUP_FIELDS)[number], string[]> = { URL: [], Compression: [], FileSize: [], FileHash: [] }
  const sigs: string[] = []
  const firstOffset = new Map<string, number>()
  const lines = text.split('\n')
  // a final newline leaves one empty string behind
  if (lines[lines.length - 1] === '') lines.pop()
  let offset = 0
  let ended = false
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]
    const here = offset
    offset += Buffer.byteLength(line, 'utf8') + 1
    if (line.trim() === '') { ended = true; continue }
    if (ended) throw new NarinfoFormatError(`line ${i + 1}: content after an empty line`)
    const colon = line.indexOf(':')
    if (colon <= 0) throw new NarinfoFormatError(`line ${i + 1}: expected "Key: value", got ${JSON.stringify(line.slice(0, 60))}`)
    const key = line.slice(0, colon)
    if (!KEY.test(key)) throw new NarinfoFormatError(`line ${i + 1}: bad field name ${JSON.stringify(key)}`)
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')
    if (!firstOffset.has(key)) firstOffset.set(key, here)
    if (key === 'Sig') sigs.push(value)
    else if ((GROUP_FIELDS as readonly string[]).includes(key)) groups[key as (typeof GROUP_FIELDS)[number]].push(value)
    else if (SINGLE_FIELDS.has(key)) {
      // a second copy could sit outside the signed part and disagree with the signed one
      if (single.has(key)) throw new NarinfoBadFieldError(`line ${i + 1}: ${key} appears more than once`)
      single.set(key, value)
    }
    // unknown fields are ignored, as Nix and Guix do
  }

  const need = (k: string): string => {
    const v = single.get(k)
    if (v === undefined) throw new NarinfoMissingFieldError(`narinfo has no ${k} field`)
    return v
  }

  const storePath = need('StorePath')
  checkStorePath(storePath, storeDir)
  const narHash = need('NarHash')
  narHashBytes(narHash) // validates
  const narSize = parseSize(need('NarSize'), 'NarSize')
  const refsText = single.get('References')
  const references = refsText === undefined || refsText === '' ? [] : refsText.split(/[ \t]+/)
  for (const r of references) {
    if (!isStoreBaseName(r)) throw new NarinfoBadFieldError(`References: ${JSON.stringify(r)} is not a store base name`)
  }
  const deriver = single.get('Deriver')
  if (deriver !== undefined && !isStoreBaseName(deriver)) throw new NarinfoBadFieldError(`Deriver: ${JSON.stringify(deriver)} is not a store base name`)

  if (groups.URL.length === 0) throw new NarinfoMissingFieldError('narinfo has no URL field')
  for (const k of ['Compression', 'FileSize', 'FileHash'] as const) {
    const n = groups[k].length
    if (n !== 0 && n !== groups.URL.length) {
      throw new NarinfoUrlGroupError(`${groups.URL.length} URL line(s) but ${n} ${k} line(s); they must pair up one to one`)
    }
  }
  const urls: NarinfoUrl[] = groups.URL.map((url, i) => {
    if (url === '') throw new NarinfoBadFieldError('URL is empty')
    const entry: NarinfoUrl = { url }
    const c = groups.Compression[i]
    if (c !== undefined) entry.compression = c
    const fs = groups.FileSize[i]
    if (fs !== undefined) entry.fileSize = parseSize(fs, 'FileSize')
    const fh = groups.FileHash[i]
    if (fh !== undefined) {
      narHashBytes(fh, 'FileHash')
      entry.fileHash = fh
    }
    return entry
  })

  const narinfo: Narinfo = { storePath, urls, narHash, narSize, references, sigs }
  if (deriver !== undefined) narinfo.deriver = deriver
  const system = single.get('System')
  if (system !== undefined) narinfo.system = system
  const ca = single.get('CA')
  if (ca !== undefined) narinfo.ca = ca
  const signature = single.get('Signature')
  if (signature !== undefined) narinfo.signature = signature
  return { narinfo, layout: { firstOffset } }
}

function decodeUtf8 (bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    throw new NarinfoFormatError('narinfo is not valid UTF-8')
  }
}

function lineNo (text: string, index: number): number {
  let n = 1
  for (let i = 0; i < index; i++) if (text.charCodeAt(i) === 10) n++
  return n
}

function parseSize (v: string, field: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(v)) throw new NarinfoBadFieldError(`${field}: ${JSON.stringify(v)} is not a decimal size`)
  const n = Number(v)
  if (!Number.isSafeInteger(n)) throw new NarinfoBadFieldError(`${field}: ${v} is too large`)
  return n
}

function checkStorePath (path: string, storeDir: string): void {
  const slash = path.lastIndexOf('/')
  const dir = path.slice(0, slash)
  const base = path.slice(slash + 1)
  if (slash <= 0 || dir !== storeDir) {
    throw new NarinfoStoreDirError(`StorePath ${JSON.stringify(path)} is not in the store directory ${storeDir}`)
  }
  if (!isStoreBaseName(base)) throw new NarinfoBadFieldError(`StorePath ${JSON.stringify(path)} does not end in <hash>-<name>`)
}

/** The store directory of a narinfo's StorePath, without validating anything else (to pick parse options). */
export function sniffStoreDir (text: string | Uint8Array): string | undefined {
  const t = typeof text === 'string' ? text : Buffer.from(text).toString('utf8')
  const m = /^StorePath:[ \t]*(\/\S*)\/[^/\s]+[ \t]*$/m.exec(t)
  return m?.[1]
}

/**
 * The raw SHA-256 of a `NarHash`/`FileHash` value in any form Nix accepts: `sha256:<nix-base32>`,
 * `sha256:<hex>` or SRI `sha256-<base64>`.
 */
export function narHashBytes (value: string, field = 'NarHash'): Uint8Array {
  let m = /^sha256:([0-9a-z]{52})$/.exec(value)
  if (m !== null) {
    try {
      return decodeNixBase32(m[1], 32)
    } catch (err) {
      throw new NarinfoBadFieldError(`${field}: ${(err as Error).message}`)
    }
  }
  m = /^sha256:([0-9a-f]{64})$/.exec(value)
  if (m !== null) return Uint8Array.from(Buffer.from(m[1], 'hex'))
  m = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(value)
  if (m !== null) {
    const b = Buffer.from(m[1], 'base64')
    if (b.length === 32) return Uint8Array.from(b)
  }
  throw new NarinfoBadFieldError(`${field}: ${JSON.stringify(value)} is not a SHA-256 hash (sha256:<nix-base32>, sha256:<hex> or SRI)`)
}

/** `sha256:<nix-base32>`: the only form Guix reads and the one Nix signs. */
export function normalizeNarHash (value: string): string {
  return `sha256:${encodeNixBase32(narHashBytes(value))}`
}

function checkValue (field: string, v: string): string {
  if (/[\r\n]/.test(v)) throw new NarinfoBadFieldError(`${field}: value contains a line break`)
  return v
}

function checkSize (field: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new NarinfoBadFieldError(`${field}: ${v} is not a byte count`)
  return v
}

function storeDirOf (narinfo: Narinfo): string {
  return narinfo.storePath.slice(0, narinfo.storePath.lastIndexOf('/'))
}

/** Full paths of the references, in the store directory of StorePath. */
export function referencePaths (narinfo: Narinfo): string[] {
  const dir = storeDirOf(narinfo)
  return narinfo.references.map((r) => `${dir}/${r}`)
}

/**
 * `guix publish` layout (FORMATS.md §4.1): StorePath, then per URL a URL/Compression/FileSize
 * group, NarHash, NarSize, References, System (only if present: older Guix), Deriver, and
 * Signature last. Guix writes neither FileHash nor Sig, so neither do we in this dialect.
 */
export function formatGuixNarinfo (n: Narinfo): string {
  let out = `StorePath: ${checkValue('StorePath', n.storePath)}\n`
  for (const u of n.urls) {
    out += `URL: ${checkValue('URL', u.url)}\n`
    if (u.compression !== undefined) out += `Compression: ${checkValue('Compression', u.compression)}\n`
    if (u.fileSize !== undefined) out += `FileSize: ${checkSize('FileSize', u.fileSize)}\n`
  }
  out += `NarHash: ${checkValue('NarHash', n.narHash)}\n`
  out += `NarSize: ${checkSize('NarSize', n.narSize)}\n`
  out += `References: ${n.references.map((r) => checkValue('References', r)).join(' ')}\n`
  if (n.system !== undefined) out += `System: ${checkValue('System', n.system)}\n`
  if (n.deriver !== undefined) out += `Deriver: ${checkValue('Deriver', n.deriver)}\n`
  if (n.signature !== undefined) out += `Signature: ${checkValue('Signature', n.signature)}\n`
  return out
}

/**
 * `nix copy` layout (FORMATS.md §3.2): StorePath, URL, Compression, FileHash, FileSize per URL
 * group, NarHash, NarSize, References (sorted, as Nix keeps them in a set), Deriver, Sig lines
 * (sorted, likewise), CA. Nix writes no System and no Guix Signature.
 */
export function formatNixNarinfo (n: Narinfo): string {
  let out = `StorePath: ${checkValue('StorePath', n.storePath)}\n`
  for (const u of n.urls) {
    out += `URL: ${checkValue('URL', u.url)}\n`
    if (u.compression !== undefined) out += `Compression: ${checkValue('Compression', u.compression)}\n`
    if (u.fileHash !== undefined) out += `FileHash: ${checkValue('FileHash', u.fileHash)}\n`
    if (u.fileSize !== undefined) out += `FileSize: ${checkSize('FileSize', u.fileSize)}\n`
  }
  out += `NarHash: ${checkValue('NarHash', n.narHash)}\n`
  out += `NarSize: ${checkSize('NarSize', n.narSize)}\n`
  out += `References: ${[...n.references].sort(byteOrder).map((r) => checkValue('References', r)).join(' ')}\n`
  if (n.deriver !== undefined) out += `Deriver: ${checkValue('Deriver', n.deriver)}\n`
  for (const s of [...new Set(n.sigs)].sort(byteOrder)) out += `Sig: ${checkValue('Sig', s)}\n`
  if (n.ca !== undefined) out += `CA: ${checkValue('CA', n.ca)}\n`
  return out
}

export function formatNarinfo (n: Narinfo, dialect: Dialect): string {
  return dialect === 'guix' ? formatGuixNarinfo(n) : formatNixNarinfo(n)
}

/** std::string ordering (bytewise), which is what Nix's sets use. */
export function byteOrder (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}
