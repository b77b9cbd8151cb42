// One call to get a matching store client and builder for the detected kind.
import { CliBuilder, type Builder, type BuilderOptions } from './builder.js'
import { NIX_COMMANDS, guixCommands } from './commands.js'
import { CliStore, guixScriptPath, type StoreDaemon } from './store.js'
import type { ProcessRunner } from './runner.js'

export interface BackendOptions extends BuilderOptions {
  runner?: ProcessRunner
  env?: NodeJS.ProcessEnv
  storeDir?: string
  realStoreDir?: string
  /** See StoreComponents. */
  packInProcess?: boolean
  trustLocalAbsence?: boolean | 'learn'
}

export interface Backend { store: StoreDaemon, builder: Builder }

/**
 * Which daemon holds a node's store: its builder's, or for a node that does not build
 * (`none`) the one whose default store dir it uses.
 */
export function storeKindOf (builder: 'nix' | 'guix' | 'none', storeDir: string): 'nix' | 'guix' {
  return builder !== 'none' ? builder : storeDir === '/nix/store' ? 'nix' : 'guix'
}

export async function openBackend (kind: 'nix' | 'guix', opts: BackendOptions = {}): Promise<Backend> {
  const commands = kind === 'nix' ? NIX_COMMANDS : guixCommands(await guixScriptPath())
  const store = new CliStore({
    commands, runner: opts.runner, env: opts.env, storeDir: opts.storeDir, realStoreDir: opts.realStoreDir,
    packInProcess: opts.packInProcess, trustLocalAbsence: opts.trustLocalAbsence
  })
  const builder = new CliBuilder({ commands, store, runner: opts.runner, env: opts.env }, opts)
  return { store, builder }
}
