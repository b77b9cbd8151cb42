// `guix-swarm narinfo …`: sign and verify narinfo files with Guix or Nix keys.
import { readFile, writeFile } from 'node:fs/promises'
import type { Command } from 'commander'
import {
  KeyError, NarinfoError, parsePublicKeys, parseSecretKey, SexpError, signNarinfo, verifyNarinfo,
  type KeyPair, type PublicKey
} from '../../narinfo/index.js'
import { CliError, EXIT } from '../errors.js'

/** Read FILE, or stdin for "-"; an unreadable file is bad input (exit 2). */
async function readInput (file: string): Promise<Buffer> {
  try {
    if (file === '-') {
      const chunks: Buffer[] = []
      for await (const c of process.stdin) chunks.push(c as Buffer)
      return Buffer.concat(chunks)
    }
    return await readFile(file)
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`, EXIT.USAGE)
  }
}

async function loadKey<T> (file: string, parse: (text: string) => T): Promise<T> {
  const text = (await readInput(file)).toString('utf8')
  try {
    return parse(text)
  } catch (err) {
    if (err instanceof KeyError || err instanceof SexpError) throw new CliError(`${file}: ${err.name}: ${err.message}`, EXIT.USAGE)
    throw err
  }
}

export function register (program: Command): void {
  const narinfo = program.command('narinfo').description('Sign and verify narinfo files (Guix Signature: and Nix Sig:)')

  narinfo.command('sign')
    .description('Sign FILE ("-" for stdin): a Guix key replaces the Signature: line, a Nix key adds a Sig: line')
    .argument('<file>', 'narinfo to sign')
    .requiredOption('-k, --key <secfile>', 'Guix signing-key.sec or Nix NAME:BASE64 secret key')
    .option('-o, --output <file>', 'write the signed narinfo to FILE instead of stdout')
    .option('--host <name>', 'host name written in a Guix signature (default: this machine\'s)')
    .action(async (file: string, opts: { key: string, output?: string, host?: string }) => {
      const pair = await loadKey<KeyPair>(opts.key, parseSecretKey)
      const text = (await readInput(file)).toString('utf8')
      let signed: string
      try {
        signed = signNarinfo(text, pair, { host: opts.host })
      } catch (err) {
        if (err instanceof NarinfoError) throw new CliError(`${file}: ${err.name}: ${err.message}`, EXIT.USAGE)
        throw err
      }
      if (opts.output !== undefined) await writeFile(opts.output, signed)
      else process.stdout.write(signed)
    })

  narinfo.command('verify')
    .description('Exit 0 when a signature by one of the trusted keys verifies, 1 when none does, 2 on bad input')
    .argument('<file>', 'narinfo to verify ("-" for stdin)')
    .requiredOption('-k, --key <pubfile...>', 'trusted keys: Guix signing-key.pub or acl files, or Nix NAME:BASE64 key files')
    .option('--store-dir <dir>', 'store directory StorePath must be in (default: the narinfo\'s, /gnu/store or /nix/store)')
    .action(async (file: string, opts: { key: string[], storeDir?: string }) => {
      const trusted: PublicKey[] = []
      for (const k of opts.key) trusted.push(...await loadKey<PublicKey[]>(k, parsePublicKeys))
      const bytes = await readInput(file)
      const r = verifyNarinfo(bytes, trusted, { storeDir: opts.storeDir })
      if (r.ok) {
        const who = r.kind === 'guix' ? `Guix key ${r.keyId} (signed on ${r.host})` : `Nix key ${r.keyId}`
        process.stdout.write(`${r.narinfo.storePath}: verified by ${who}\n`)
        return
      }
      const narinfoBroken = r.failures.some((f) => f.kind === 'narinfo' && f.reason === 'malformed')
      const detail = r.failures.length > 1 ? ` (${r.failures.map((f) => `${f.kind}: ${f.reason}`).join(', ')})` : ''
      throw new CliError(`${file}: not verified: ${r.reason}: ${r.message}${detail}`, narinfoBroken ? EXIT.USAGE : EXIT.FAILED)
    })
}

