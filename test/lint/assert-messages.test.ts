// Guard against the "CPU-bound hang" of the fetch tests. When `assert.ok(x)` / `assert(x)`
// fails without a message, node builds one by reading the call site's source from disk and
// parsing it with acorn. tsx hands V8 whitespace-minified code (the whole module on line 1),
// so node parses the .ts file from a column that matches nothing there: for fetch.test.ts
// that took minutes of pure CPU, starving every timer (including the test timeouts), and a
// plain test failure looked like a hang in the transfer code. A message skips the parse.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import ts from 'typescript'
import { REPO_ROOT } from '../helpers/paths.js'

// The .ts sources, found from the repo root so this works from dist/test as well as under tsx.
const DIRS = ['test', 'bench'].map((d) => join(REPO_ROOT, d))

/** Every .ts file under `dir`, recursively. */
async function tsFiles (dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true })
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => join(e.parentPath, e.name))
}

/** `file:line` of every assert.ok(x) / assert(x) call with no message argument. */
function messagelessAsserts (fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS)
  const found: string[] = []
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node) && node.arguments.length < 2) {
      const callee = node.expression.getText(source)
      if (callee === 'assert' || callee === 'assert.ok') {
        found.push(`${fileName}:${source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1}`)
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return found
}

describe('tests and benches give every truthiness assertion a message', () => {
  it('the checker finds message-less assert.ok and assert calls, and only those', () => {
    const text = [
      'assert.ok(a)',
      'assert.ok(b, "why")',
      'assert(c)',
      'assert(d, `why ${d}`)',
      'assert.equal(e, 1)',
      'foo.ok(f)'
    ].join('\n')
    assert.deepEqual(messagelessAsserts('x.ts', text), ['x.ts:1', 'x.ts:3'])
  })

  it('no .ts file under test/ or bench/ has one', async () => {
    const files = (await Promise.all(DIRS.map(tsFiles))).flat().map((f) => relative(REPO_ROOT, f))
    // the sources really were found (from dist/ too), not an empty list that passes vacuously
    assert.ok(files.includes(join('test', 'transfer', 'fetch.test.ts')), `test/transfer/fetch.test.ts not found under ${REPO_ROOT}`)
    assert.ok(files.some((f) => f.startsWith('bench')), `no bench/*.ts found under ${REPO_ROOT}`)
    const found: string[] = []
    for (const f of files) found.push(...messagelessAsserts(f, await readFile(join(REPO_ROOT, f), 'utf8')))
    assert.deepEqual(found, [], 'give these assertions a message (see the comment at the top of this file)')
  })
})
