import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { PeerKeyError } from './errors.js'

const log = logger('guix-swarm:node:identity')

export const PEER_KEY_FILE = 'peer-key'

/**
 * Load `<dataDir>/peer-key` (libp2p protobuf-encoded Ed25519 private key), creating it
 * (mode 0600) on first start, so the peer id survives restarts.
 */
export async function loadOrCreatePeerKey (dataDir: string): Promise<PrivateKey> {
  const file = join(dataDir, PEER_KEY_FILE)
  try {
    const buf = await readFile(file)
    try {
      return privateKeyFromProtobuf(buf)
    } catch (err) {
      throw new PeerKeyError(`${file} is not a libp2p private key (${(err as Error).message}); move it away to get a new identity`)
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (err instanceof PeerKeyError) throw err
      throw new PeerKeyError(`cannot read ${file}: ${(err as Error).message}`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  // 'wx': never overwrite an identity another process created meanwhile.
  await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  await chmod(file, 0o600)
  log('created new identity in %s', file)
  return key
}
