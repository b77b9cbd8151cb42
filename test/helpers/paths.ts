// Locates the repository root and the shared fixtures, whether tests run from source or dist/.
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

function findRepoRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json')) || existsSync(join(dir, 'tsconfig.json')) === false) {
    const up = dirname(dir)
    if (up === dir) throw new Error('repository root not found')
    dir = up
  }
  return dir
}

export const REPO_ROOT = findRepoRoot()
/** The project's fixtures as shared beside the checkout (`../shared/vectors`), when they are there. */
export const SHARED_VECTORS = resolve(REPO_ROOT, '..', 'shared', 'vectors')
/** A copy kept in the repository, so a clone alone runs the suite (test/lint/vectors.test.ts keeps it equal). */
export const REPO_VECTORS = join(REPO_ROOT, 'test', 'vectors')
/** Where tests read fixtures: the shared ones when present, else the repository's copy. */
export const VECTORS = existsSync(SHARED_VECTORS) ? SHARED_VECTORS : REPO_VECTORS
