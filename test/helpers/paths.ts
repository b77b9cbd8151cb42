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
/** `../shared/vectors` beside the checkout (CI lays a copy of shared/ there too). */
export const VECTORS = resolve(REPO_ROOT, '..', 'shared', 'vectors')
