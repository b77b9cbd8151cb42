// A Nix build hook that declines every build at once. With a local store and no remote builders,
// Nix still starts its build-remote hook once per `nix-store --realise` only to hear it decline;
// that start (the `nix` binary, its libraries and config) cost ~55 ms of CPU per client here,
// against ~2 ms for a shell that gives the same answer (docs/BENCHMARKS.md).
import { join } from 'node:path'
import { writeScriptFile } from './script-file.js'

/** The protocol's whole answer: decline this build and every later one, then read the requests to their end. */
export const DECLINING_BUILD_HOOK = `#!/bin/sh
# Written by guix-swarm: no remote builders are configured, so decline at once (Nix build-hook protocol).
echo '# decline-permanently' >&2
exec cat >/dev/null
`

/**
 * Writes the declining hook as `<dir>/nix-build-hook` (mode 0755) and returns its path. `dir`
 * should be private to the node (its data dir): Nix runs the hook with the client's rights.
 */
export async function writeDecliningBuildHook (dir: string): Promise<string> {
  const path = join(dir, 'nix-build-hook')
  await writeScriptFile(path, DECLINING_BUILD_HOOK, 0o755)
  return path
}
