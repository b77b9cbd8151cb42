// Runs libgcrypt through guile + guile-gcrypt (test/fixtures/narinfo/gcrypt.scm) as an independent
// reference for Guix signatures. Skips loudly without guile-gcrypt; fails under REQUIRE_NIX=1.
import { execFile, execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { REPO_ROOT } from './paths.js'

export const GCRYPT_SCM = join(REPO_ROOT, 'test', 'fixtures', 'narinfo', 'gcrypt.scm')

function probe (): string | undefined {
  try {
    execFileSync('guile', ['--no-auto-compile', '-c', '(use-modules (gcrypt pk-crypto))'], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    return `guile with guile-gcrypt is not available (${(err as Error).message.split('\n')[0]}); install Debian's guile-3.0 and guile-gcrypt`
  }
}

let reason: string | undefined | null = null

/** `skip` option for node:test: false when guile-gcrypt works; throws under REQUIRE_NIX=1 when it does not. */
export function guileSkip (): string | false {
  if (reason === null) reason = probe()
  if (reason === undefined) return false
  if (process.env.REQUIRE_NIX === '1') throw new Error(`REQUIRE_NIX=1 but ${reason}`)
  process.stderr.write(`\n*** SKIPPING libgcrypt interop test: ${reason} ***\n\n`)
  return reason
}

/** Run gcrypt.scm with args; resolves with stdout, rejects with stderr on failure. */
export async function gcrypt (args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile('guile', ['--no-auto-compile', '-q', GCRYPT_SCM, ...args], { encoding: 'utf8', env: { ...process.env, GUILE_AUTO_COMPILE: '0' } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`guile gcrypt.scm ${args.join(' ')} failed: ${stderr}`))
      else resolve(stdout)
    })
  })
}

