// The repository's copy of the fixtures (test/vectors) must be byte-for-byte the shared ones
// (../shared/vectors, the verified truth) whenever both are present, so the copy that lets a
// clone run alone never drifts from what FORMATS.md describes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { readFile, readdir } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { REPO_VECTORS, SHARED_VECTORS } from '../helpers/paths.js'

async function files (root: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.push(relative(root, join(e.parentPath ?? e.path, e.name)))
  }
  return out.sort()
}

const shared = existsSync(SHARED_VECTORS)

test('test/vectors is an exact copy of ../shared/vectors', { skip: shared ? false : `no ${SHARED_VECTORS} beside the checkout: the repository's copy is used as it is` }, async () => {
  const want = await files(SHARED_VECTORS)
  assert.deepEqual(await files(REPO_VECTORS), want, 'the same files (copy ../shared/vectors to test/vectors again)')
  for (const f of want) {
    assert.equal(Buffer.compare(await readFile(join(REPO_VECTORS, f)), await readFile(join(SHARED_VECTORS, f))), 0, `${f} differs from the shared copy`)
  }
})
