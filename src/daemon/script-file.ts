// Helper scripts the daemon layer hands to the store's tools (a Guile script for `guix repl`, a
// Nix build hook): written whole under a temporary name, then renamed over the old one, so a
// tool starting meanwhile never reads half a script.
import { rename, writeFile } from 'node:fs/promises'

/** `mode` before the umask; writeFile's own default when absent. */
export async function writeScriptFile (path: string, text: string, mode = 0o666): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, text, { mode })
  await rename(tmp, path)
}
