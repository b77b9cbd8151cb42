import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { parseDerivation, printDerivation, derivationOutputPaths, DerivationParseError } from '../../src/daemon/index.js'
import { VECTORS } from '../helpers/paths.js'

const DRV = join(VECTORS, 'drv')

interface StorePathsEntry { drv_path: string, drv_references: string[], outputs: Record<string, string> }

test('every vector .drv parses, round-trips byte for byte, and matches store-paths.json', async () => {
  const files = (await readdir(DRV)).filter((f) => f.endsWith('.drv'))
  assert.equal(files.length, 10)
  const expected = JSON.parse(await readFile(join(DRV, 'store-paths.json'), 'utf8')) as StorePathsEntry[]
  for (const f of files) {
    const text = await readFile(join(DRV, f), 'utf8')
    const d = parseDerivation(text)
    assert.equal(printDerivation(d), text, f)
    const e = expected.find((x) => x.drv_path.endsWith('/' + f))
    assert.ok(e !== undefined, f)
    assert.deepEqual(derivationOutputPaths(d), e.outputs, f)
    assert.deepEqual([...d.inputDrvs.keys(), ...d.inputSrcs].sort(), [...e.drv_references].sort(), f)
    assert.equal(d.system, 'x86_64-linux')
  }
})

test('escapes: quote, backslash, newline, cr, tab, dollar and UTF-8', async () => {
  const text = await readFile(join(DRV, 'a6f5bffv1i5ghwyqgrd4wy3vc13jwpgz-fmt-escapes.drv'), 'utf8')
  const d = parseDerivation(text)
  assert.equal(d.env.get('weird'), 'quote" backslash\\ newline\n cr\r tab\t dollar${x} unicode-ü')
  assert.equal(printDerivation(d), text)
})

test('fixed-output and dependency details', async () => {
  const fod = parseDerivation(await readFile(join(DRV, 'pfcwrhk4nflh24xm3g122v9lhc30a78s-fmt-fod-rec.drv'), 'utf8'))
  assert.equal(fod.outputs.get('out')?.hashAlgo, 'r:sha256')
  const dep = parseDerivation(await readFile(join(DRV, 'ca6q6gwk8wwdw20zhfqp543ga5hsi20c-fmt-dep.drv'), 'utf8'))
  assert.deepEqual([...dep.inputDrvs.values()].sort(), [['dev'], ['out']])
})

test('strict: malformed input is a DerivationParseError with an offset', () => {
  const good = 'Derive([("out","/nix/store/x-a","","")],[],[],"s","/bin/sh",[],[])'
  assert.equal(printDerivation(parseDerivation(good)), good)
  const bad = [
    '', 'Derive(', good + '\n', good.replace('[],[],"s"', '[] ,[],"s"'), good.replace('"s"', '"s'),
    'Derive([],[],[],"s","/bin/sh",[],[])', good.replace(')', '),("out","/nix/store/y","","")'),
    'Derive([("out","/nix/store/x-a","","",)],[],[],"s","/bin/sh",[],[])', 'Derive([("out","/nix/store/x-a","","")],[],[],"s","/bin/sh",[],[]'
  ]
  for (const b of bad) {
    assert.throws(() => parseDerivation(b), (e: Error) => e instanceof DerivationParseError && e.name === 'DerivationParseError' && /at offset \d+/.test(e.message), JSON.stringify(b))
  }
})

test('unknown escapes read as the escaped character; printing normalises them', () => {
  const d = parseDerivation('Derive([("out","/p","","")],[],[],"s","b",["\\$\\a"],[])')
  assert.deepEqual(d.args, ['$a'])
})
