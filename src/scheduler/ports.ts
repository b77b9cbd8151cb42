// What the scheduler needs from elsewhere, as small interfaces: the node's binary cache turns
// outputs into signed NARs, and the node (later) fetches .drv closures and input outputs from
// the swarm. Defaults here only check the local store.
import type { StoreDaemon } from '../daemon/index.js'
import { DerivationUnavailableError } from './errors.js'

/** What publishing an output yields; `BinaryCache.addFromStore`'s CacheEntry has these fields. */
export interface PublishedOutput {
  storePath: string
  narHash: string
  narSize: number
}

/** Makes the NAR, compresses it and signs its narinfo (src/cache's BinaryCache satisfies this). */
export interface OutputPublisher {
  addFromStore: (store: StoreDaemon, storePath: string) => Promise<PublishedOutput>
}

export interface InputFetcher {
  /** Make `drv` and its `.drv` closure valid in the local store, or throw DerivationUnavailableError. */
  ensureDerivation: (drv: string, signal: AbortSignal) => Promise<void>
  /**
   * Try to make these output paths valid locally; returns the ones still missing. `holders`:
   * peers that built them (the claimers of the input builds' successful attempts), asked first.
   */
  ensureOutputs: (paths: string[], signal: AbortSignal, holders?: string[]) => Promise<string[]>
}

/** The default until the node wires in swarm fetching: everything must already be local. */
export function localInputs (store: StoreDaemon): InputFetcher {
  return {
    async ensureDerivation (drv) {
      if (!await store.isValid(drv)) throw new DerivationUnavailableError(drv, 'no input fetcher configured')
    },
    async ensureOutputs (paths) {
      return paths.length === 0 ? [] : await store.filterInvalid(paths)
    }
  }
}
