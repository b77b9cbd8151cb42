// `guix-swarm key …`: create the node's signing keys (Guix and Nix kinds) from the command line.
import { join } from 'node:path'
import type { Command } from 'commander'
import { formatGuixPublicKey, formatNixPublicKey, generateKeys, KEY_FILES, KeyExistsError, NixKeyError } from '../../narinfo/index.js'
import { CliError, EXIT } from '../errors.js'

export function register (program: Command): void {
  const key = program.command('key').description('Manage signing keys (Guix signing-key.* and Nix nix-key.*)')

  key.command('generate')
    .description('Write signing-key.pub/.sec (Guix) and nix-key.pub/.sec (Nix) into DIR')
    .requiredOption('-d, --dir <dir>', 'directory for the four key files (created with mode 0700)')
    .option('-n, --name <name>', 'Nix key name (default: <hostname>-1)')
    .option('-f, --force', 'replace existing key files')
    .action(async (opts: { dir: string, name?: string, force?: boolean }) => {
      let keys
      try {
        keys = await generateKeys(opts.dir, { name: opts.name, force: opts.force === true })
      } catch (err) {
        if (err instanceof KeyExistsError) throw new CliError(err.message, EXIT.FAILED)
        if (err instanceof NixKeyError) throw new CliError(err.message, EXIT.USAGE)
        throw err
      }
      const out = [
        `${join(opts.dir, KEY_FILES.guixPublic)}:`,
        formatGuixPublicKey(keys.guix.publicKey).trimEnd(),
        `${join(opts.dir, KEY_FILES.nixPublic)}:`,
        formatNixPublicKey(keys.nix.publicKey)
      ]
      process.stdout.write(out.join('\n') + '\n')
    })
}
