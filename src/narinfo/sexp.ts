// S-expressions as libgcrypt reads and writes them: Guix keys, ACL entries and signatures.
// We parse canonical (`4:data`), advanced (`data`, `#HEX#`, `"text"`, `|base64|`) and mixed text,
// and print canonical or libgcrypt's "advanced" layout byte for byte (FORMATS.md §4.3), because
// Guix emits signatures and key files in that layout.
import { SexpParseError, SexpShapeError } from './errors.js'

/** An atom is a byte string; a list holds atoms and lists. */
export type Sexp = Uint8Array | Sexp[]

const TOKEN_CHARS = /^[A-Za-z0-9\-./_:*+=]$/
const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d])

export function atom (text: string): Uint8Array {
  return new TextEncoder().encode(text)
}

export function isAtom (s: Sexp): s is Uint8Array {
  return s instanceof Uint8Array
}

export function atomText (s: Sexp): string {
  if (!isAtom(s)) throw new SexpShapeError('expected an atom, found a list')
  return new TextDecoder().decode(s)
}

/** Parse one s-expression (canonical, advanced or a mix); trailing whitespace is allowed. */
export function parseSexp (input: string | Uint8Array): Sexp {
  const bytes = typeof input === 'string' ? new TextEncoder().encode(input) : input
  const parser = new Parser(bytes)
  parser.skipSpace()
  const value = parser.value()
  parser.skipSpace()
  if (!parser.atEnd()) throw new SexpParseError(`trailing data at offset ${parser.pos}`)
  return value
}

class Parser {
  pos = 0
  constructor (private readonly b: Uint8Array) {}

  atEnd (): boolean { return this.pos >= this.b.length }

  skipSpace (): void {
    while (this.pos < this.b.length && WHITESPACE.has(this.b[this.pos])) this.pos++
  }

  private fail (what: string): never {
    throw new SexpParseError(`${what} at offset ${this.pos}`)
  }

  value (): Sexp {
    if (this.atEnd()) this.fail('unexpected end of input')
    const c = this.b[this.pos]
    if (c === 0x28 /* ( */) return this.list()
    return this.atomValue()
  }

  private list (): Sexp[] {
    this.pos++
    const items: Sexp[] = []
    for (;;) {
      this.skipSpace()
      if (this.atEnd()) this.fail('unterminated list')
      if (this.b[this.pos] === 0x29 /* ) */) { this.pos++; return items }
      items.push(this.value())
    }
  }

  private atomValue (): Uint8Array {
    const c = this.b[this.pos]
    if (c >= 0x30 && c <= 0x39) return this.lengthPrefixed()
    if (c === 0x23 /* # */) return this.hex(undefined)
    if (c === 0x22 /* " */) return this.quoted(undefined)
    if (c === 0x7c /* | */) return this.base64(undefined)
    if (c === 0x5b /* [ */) this.fail('display hints are not supported')
    const start = this.pos
    while (this.pos < this.b.length && TOKEN_CHARS.test(String.fromCharCode(this.b[this.pos]))) this.pos++
    if (this.pos === start) this.fail(`unexpected character 0x${c.toString(16)}`)
    return this.b.slice(start, this.pos)
  }

  private lengthPrefixed (): Uint8Array {
    const start = this.pos
    while (this.pos < this.b.length && this.b[this.pos] >= 0x30 && this.b[this.pos] <= 0x39) this.pos++
    const len = Number(new TextDecoder().decode(this.b.subarray(start, this.pos)))
    if (this.atEnd()) this.fail('unexpected end after length')
    const c = this.b[this.pos]
    if (c === 0x3a /* : */) {
      this.pos++
      if (this.pos + len > this.b.length) this.fail(`verbatim atom of ${len} bytes runs past the end`)
      const out = this.b.slice(this.pos, this.pos + len)
      this.pos += len
      return out
    }
    if (c === 0x23) return this.hex(len)
    if (c === 0x22) return this.quoted(len)
    if (c === 0x7c) return this.base64(len)
    return this.fail('a length must be followed by ":", "#", "\\"" or "|"')
  }

  private delimited (close: number): string {
    const start = ++this.pos
    while (this.pos < this.b.length && this.b[this.pos] !== close) this.pos++
    if (this.atEnd()) this.fail(`unterminated ${String.fromCharCode(close)}…${String.fromCharCode(close)} atom`)
    const text = new TextDecoder().decode(this.b.subarray(start, this.pos))
    this.pos++
    return text
  }

  private checkLength (out: Uint8Array, len: number | undefined): Uint8Array {
    if (len !== undefined && len !== out.length) this.fail(`atom length ${out.length} differs from its prefix ${len}`)
    return out
  }

  private hex (len: number | undefined): Uint8Array {
    const text = this.delimited(0x23).replace(/\s+/g, '')
    if (!/^([0-9A-Fa-f]{2})*$/.test(text)) this.fail('bad hex atom')
    return this.checkLength(Uint8Array.from(Buffer.from(text, 'hex')), len)
  }

  private base64 (len: number | undefined): Uint8Array {
    const text = this.delimited(0x7c).replace(/\s+/g, '')
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) this.fail('bad base64 atom')
    return this.checkLength(Uint8Array.from(Buffer.from(text, 'base64')), len)
  }

  private quoted (len: number | undefined): Uint8Array {
    this.pos++
    const out: number[] = []
    for (;;) {
      if (this.atEnd()) this.fail('unterminated string')
      const c = this.b[this.pos++]
      if (c === 0x22) break
      if (c !== 0x5c /* \ */) { out.push(c); continue }
      if (this.atEnd()) this.fail('unterminated escape')
      const e = this.b[this.pos++]
      const simple: Record<number, number> = { 0x62: 8, 0x74: 9, 0x76: 11, 0x6e: 10, 0x66: 12, 0x72: 13, 0x22: 0x22, 0x27: 0x27, 0x5c: 0x5c }
      if (simple[e] !== undefined) out.push(simple[e])
      else if (e === 0x78 /* x */) {
        const h = new TextDecoder().decode(this.b.subarray(this.pos, this.pos + 2))
        if (!/^[0-9A-Fa-f]{2}$/.test(h)) this.fail('bad \\x escape')
        out.push(parseInt(h, 16)); this.pos += 2
      } else if (e >= 0x30 && e <= 0x37) {
        const o = new TextDecoder().decode(this.b.subarray(this.pos - 1, this.pos + 2))
        if (!/^[0-7]{3}$/.test(o)) this.fail('bad octal escape')
        out.push(parseInt(o, 8) & 0xff); this.pos += 2
      } else if (e === 0x0a || e === 0x0d) {
        // a backslash-newline continues the string
        if (this.b[this.pos] === (e === 0x0a ? 0x0d : 0x0a)) this.pos++
      } else this.fail('bad escape')
    }
    return this.checkLength(Uint8Array.from(out), len)
  }
}

/** Canonical form: `(4:data…)`, no whitespace (what libgcrypt hashes and compares). */
export function toCanonical (s: Sexp): Uint8Array {
  const parts: Uint8Array[] = []
  const walk = (x: Sexp): void => {
    if (isAtom(x)) {
      parts.push(new TextEncoder().encode(`${x.length}:`), x)
      return
    }
    parts.push(Uint8Array.of(0x28))
    for (const y of x) walk(y)
    parts.push(Uint8Array.of(0x29))
  }
  walk(s)
  return Uint8Array.from(Buffer.concat(parts))
}

const QUOTE_ESCAPES: Record<number, string> = { 8: '\\b', 9: '\\t', 11: '\\v', 10: '\\n', 12: '\\f', 13: '\\r', 0x22: '\\"', 0x27: "\\'", 0x5c: '\\\\' }

function isTokenByte (c: number): boolean {
  return TOKEN_CHARS.test(String.fromCharCode(c))
}

/**
 * libgcrypt's suitable_encoding(): 'token', 'quoted' (printable text) or 'hex' (binary). One
 * deliberate difference: libgcrypt would quote bytes 0xA1-0xFF raw, which makes text that is not
 * UTF-8 and that Guix (utf8->string) cannot read back; we print such atoms in hex.
 */
function atomEncoding (a: Uint8Array): 'token' | 'quoted' | 'hex' {
  if (a.length === 0) return 'quoted'
  // a set top bit reads as a negative number, a leading zero as binary
  if ((a[0] & 0x80) !== 0 || a[0] === 0) return 'hex'
  let token = true
  for (const c of a) {
    if ((c < 0x20 || c >= 0x7f) && QUOTE_ESCAPES[c] === undefined) return 'hex'
    if (token && !isTokenByte(c)) token = false
  }
  return token && !(a[0] >= 0x30 && a[0] <= 0x39) ? 'token' : 'quoted'
}

function printAtom (a: Uint8Array): string {
  switch (atomEncoding(a)) {
    case 'token': return Buffer.from(a).toString('latin1')
    case 'hex': return `#${Buffer.from(a).toString('hex').toUpperCase()}#`
    case 'quoted': {
      let out = '"'
      for (const c of a) {
        const esc = QUOTE_ESCAPES[c]
        if (esc !== undefined) out += esc
        else out += String.fromCharCode(c)
      }
      return out + '"'
    }
  }
}

/**
 * libgcrypt's GCRYSEXP_FMT_ADVANCED layout: each sub-list on a new line indented one space per
 * depth, an atom followed by anything gets one space, a list that ends with a sub-list closes
 * on its own line indented like its children, and the text ends with a newline.
 */
export function toAdvanced (s: Sexp): string {
  let out = ''
  // prev: what was printed last, to decide spacing the way libgcrypt's printer does
  const st: { prev: 'open' | 'atom' | 'close' | 'none' } = { prev: 'none' }
  let depth = 0
  const walk = (x: Sexp): void => {
    if (isAtom(x)) {
      if (st.prev === 'atom') out += ' '
      else if (st.prev === 'close') out += '\n' + ' '.repeat(depth)
      out += printAtom(x)
      st.prev = 'atom'
      return
    }
    if (st.prev === 'atom') out += ' '
    if (depth > 0) out += '\n' + ' '.repeat(depth)
    out += '('
    depth++
    st.prev = 'open'
    for (const y of x) walk(y)
    // the children may have ended with a sub-list
    if ((st.prev as string) === 'close') out += '\n' + ' '.repeat(depth)
    depth--
    out += ')'
    st.prev = 'close'
  }
  walk(s)
  return out + '\n'
}

/** Structural equality (what Guix's ACL check uses). */
export function sexpEquals (a: Sexp, b: Sexp): boolean {
  if (isAtom(a) || isAtom(b)) {
    return isAtom(a) && isAtom(b) && Buffer.from(a).equals(Buffer.from(b))
  }
  return a.length === b.length && a.every((x, i) => sexpEquals(x, b[i]))
}

/** The first sub-list whose head atom is `name`, searched depth first (like gcry_sexp_find_token). */
export function findToken (s: Sexp, name: string): Sexp[] | undefined {
  if (isAtom(s)) return undefined
  if (s.length > 0 && isAtom(s[0]) && atomText(s[0]) === name) return s
  for (const child of s) {
    const hit = findToken(child, name)
    if (hit !== undefined) return hit
  }
  return undefined
}

/** The single atom value of `(name value)` inside s, or a shape error naming what is missing. */
export function tokenAtom (s: Sexp, name: string, where: string): Uint8Array {
  const hit = findToken(s, name)
  if (hit === undefined) throw new SexpShapeError(`${where}: no (${name} …) element`)
  const v = hit[1]
  if (hit.length !== 2 || v === undefined || !isAtom(v)) throw new SexpShapeError(`${where}: (${name} …) must hold exactly one atom`)
  return v
}
