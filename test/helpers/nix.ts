// Tests that need a real Nix skip loudly when it is absent, and fail instead under REQUIRE_NIX=1.
import { execFileSync } from 'node:child_process'

function probe (): string | undefined {
  try {
    execFileSync('nix-store', ['--version'], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    return `nix-store is not available (${(err as Error).message.split('\n')[0]}); install Debian's nix-bin`
  }
}

const reason = probe()

/** `skip` option for node:test: false when Nix is present; throws under REQUIRE_NIX=1 when it is not. */
export function nixSkip (): string | false {
  if (reason === undefined) return false
  if (process.env.REQUIRE_NIX === '1') throw new Error(`REQUIRE_NIX=1 but ${reason}`)
  process.stderr.write(`\n*** SKIPPING Nix test: ${reason} ***\n\n`)
  return reason
}
