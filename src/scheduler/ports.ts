// What the scheduler needs from elsewhere, as small interfaces: the node's binary cache turns
// outputs into signed NARs, and the node (later) fetches .drv closures and input outputs from
// the swarm. Defaults here only check the local store.
import type { Builder, BuildOutcome, StoreDaemon } from '../daemon/index.js'
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
  /** Try to make these output paths valid locally; returns the ones still missing. */
  ensureOutputs: (paths: string[], signal: AbortSignal) => Promise<string[]>
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

/** One derivation's part of a batch handed to `BatchBuilder.buildMany`. */
export interface BatchItem {
  drvPath: string
  /** This derivation's own log. */
  onLog: (chunk: Buffer) => void
}

export interface BuildManyOptions {
  /** Aborting kills the whole batch; every item without an outcome yet ends `canceled`. */
  signal: AbortSignal
  /** Concurrent builds inside the batch (Nix --max-jobs). */
  maxJobs?: number
  /** GC roots for all the batch's outputs, named from this base as nix-store names them (R, R-2, R-2-dev…). */
  gcRoot?: string
  /** Called once per item as soon as its outcome is known (possibly before the batch ends). */
  onOutcome?: (drvPath: string, outcome: BuildOutcome) => void
}

/**
 * A builder that can also build several independent derivations with ONE daemon client (the
 * process, not the build, is a trivial build's main cost). `buildMany` is optional: without it
 * the scheduler builds a batch's derivations one after another with `build`.
 */
export type BatchBuilder = Builder & {
  buildMany?: (items: BatchItem[], opts: BuildManyOptions) => Promise<Map<string, BuildOutcome>>
}
