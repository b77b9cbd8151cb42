// A strict parser and exact printer for the `.drv` ATerm (FORMATS.md §2): parse(print(d)) == d and print(parse(s)) == s.
import { DerivationParseError } from './errors.js'

export interface DerivationOutput { path: string, hashAlgo: string, hash: string }

export interface Derivation {
  /** outputName → output; fixed-output derivations carry hashAlgo (`sha256`, `r:sha256`) and a hex hash. */
  outputs: Map<string, DerivationOutput>
  /** input .drv path → the output names it needs. */
  inputDrvs: Map<string, string[]>
  inputSrcs: string[]
  system: string
  builder: string
  args: string[]
  env: Map<string, string>
}

const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t' }

class Reader {
  pos = 0
  constructor (readonly s: string) {}

  fail (msg: string): never { throw new DerivationParseError(msg, this.pos) }

  expect (lit: string): void {
    if (!this.s.startsWith(lit, this.pos)) this.fail(`expected '${lit}'`)
    this.pos += lit.length
  }

  peek (): string { return this.s[this.pos] ?? '' }

  string (): string {
    this.expect('"')
    let out = ''
    let start = this.pos
    for (;;) {
      const c = this.s[this.pos]
      if (c === undefined) this.fail('unterminated string')
      if (c === '"') { out += this.s.slice(start, this.pos); this.pos++; return out }
      if (c === '\\') {
        out += this.s.slice(start, this.pos)
        const e = this.s[this.pos + 1]
        if (e === undefined) this.fail('unterminated escape')
        out += ESCAPES[e] ?? e // Nix maps \x to x for any other x
        this.pos += 2
        start = this.pos
        continue
      }
      this.pos++
    }
  }

  list<T> (item: () => T): T[] {
    this.expect('[')
    const out: T[] = []
    if (this.peek() === ']') { this.pos++; return out }
    for (;;) {
      out.push(item())
      if (this.peek() === ',') { this.pos++; continue }
      this.expect(']')
      return out
    }
  }

  tuple<T> (body: () => T): T {
    this.expect('(')
    const v = body()
    this.expect(')')
    return v
  }
}

function intoMap<V> (r: Reader, entries: Array<[string, V]>, what: string): Map<string, V> {
  const m = new Map<string, V>()
  for (const [k, v] of entries) {
    if (m.has(k)) r.fail(`duplicate ${what} '${k}'`)
    m.set(k, v)
  }
  return m
}

/** Parse the text of a `.drv` file. Trailing bytes, missing commas, unknown escapes at EOF… are errors. */
export function parseDerivation (text: string): Derivation {
  const r = new Reader(text)
  r.expect('Derive(')
  const outputs = intoMap(r, r.list(() => r.tuple((): [string, DerivationOutput] => {
    const name = r.string(); r.expect(',')
    const path = r.string(); r.expect(',')
    const hashAlgo = r.string(); r.expect(',')
    const hash = r.string()
    return [name, { path, hashAlgo, hash }]
  })), 'output')
  r.expect(',')
  const inputDrvs = intoMap(r, r.list(() => r.tuple((): [string, string[]] => {
    const p = r.string(); r.expect(',')
    return [p, r.list(() => r.string())]
  })), 'input derivation')
  r.expect(',')
  const inputSrcs = r.list(() => r.string())
  r.expect(',')
  const system = r.string(); r.expect(',')
  const builder = r.string(); r.expect(',')
  const args = r.list(() => r.string())
  r.expect(',')
  const env = intoMap(r, r.list(() => r.tuple((): [string, string] => {
    const k = r.string(); r.expect(',')
    return [k, r.string()]
  })), 'env key')
  r.expect(')')
  if (r.pos !== text.length) r.fail('trailing data after derivation')
  if (outputs.size === 0) throw new DerivationParseError('derivation has no outputs', r.pos)
  return { outputs, inputDrvs, inputSrcs, system, builder, args, env }
}

function quote (s: string): string {
  return '"' + s.replace(/[\\"\n\r\t]/g, (c) => c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : '\\' + c) + '"'
}

const byKey = <V>(m: Map<string, V>): Array<[string, V]> => [...m.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
const sorted = (xs: string[]): string[] => [...xs].sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
const list = (xs: string[]): string => '[' + xs.join(',') + ']'

/** Print in Nix's canonical form (sorted maps, no spaces, no trailing newline). */
export function printDerivation (d: Derivation): string {
  return 'Derive(' + [
    list(byKey(d.outputs).map(([n, o]) => `(${quote(n)},${quote(o.path)},${quote(o.hashAlgo)},${quote(o.hash)})`)),
    list(byKey(d.inputDrvs).map(([p, outs]) => `(${quote(p)},${list(sorted(outs).map(quote))})`)),
    list(sorted(d.inputSrcs).map(quote)),
    quote(d.system),
    quote(d.builder),
    list(d.args.map(quote)),
    list(byKey(d.env).map(([k, v]) => `(${quote(k)},${quote(v)})`))
  ].join(',') + ')'
}

/** outputName → store path, as a plain record. */
export function derivationOutputPaths (d: Derivation): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, o] of d.outputs) out[name] = o.path
  return out
}
