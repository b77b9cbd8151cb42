// Public API of src/daemon: the local Nix/Guix store and builder client (a bottom layer, like src/nar).
//
//   const { kind } = await detectBuilder('auto')                 // 'guix' | 'nix' | 'none'
//   const { store, builder } = await openBackend(kind, { substituters, trustedPublicKeys, inputs: 'require' })
//   await builder.build(drvPath, { signal, onLog, gcRoot })       // BuildOutcome, never throws
//   await builder.buildMany?.(items, { signal, gcRootBase })       // Nix: one client, one outcome per .drv
//   for (const p of await store.queryRequisites([drvPath])) {      // references first
//     const { info, nar } = await store.exportPath(p)              // NAR stream + PathInfo
//     await other.importPath({ storePath: p, ...info }, nar)       // verified before registration
//   }
// CliStore remembers path infos (immutable while valid), packs NARs in-process from the store's
// files when it can read them, and answers "invalid" for paths not on disk without a process.
export { detectBuilder, parseNixSystems, guixSocket, isLocalStore, storeUrl, nixBuildHookIdle, nixBuildLimits } from './detect.js'
export type { BuilderPref, BuilderKind, BuildLimits, DetectedBuilder, DetectOptions } from './detect.js'
export * from './errors.js'
export { NodeProcessRunner, defaultRunner, runToEnd } from './runner.js'
export { processTree } from './proctree.js'
export type { Stat as ProcessStat } from './proctree.js'
export type { ProcessRunner, RunningProcess, StartOptions, Exit, Completed } from './runner.js'
export { parseDerivation, printDerivation, derivationOutputPaths } from './derivation.js'
export type { Derivation, DerivationOutput } from './derivation.js'
export { parseSha256, formatSha256 } from './hash.js'
export { NIX_COMMANDS, guixCommands, GUIX_SCRIPT } from './commands.js'
export type { CommandSet, Command, BuildFlags, StoreKind } from './commands.js'
export { CliStore, nixStore, guixStore, guixScriptPath, parseRegInfo, closureOrder, exportTrailer } from './store.js'
export type { StoreDaemon, PathInfo, ImportInfo, ImportItem, StoreComponents, StoreConnectionStatus } from './store.js'
export { CliBuilder, parseDryRun, missingFromLog, classifyExit } from './builder.js'
export type { Builder, BuildOutcome, BuildOptions, BuilderComponents, BuilderOptions, BatchItem, BuildManyOptions } from './builder.js'
export { InternalJsonLogRouter } from './internal-json.js'
export type { LogRouterSink } from './internal-json.js'
export { PathInfoCache } from './info-cache.js'
export { openBackend, storeKindOf } from './backend.js'
export { writeDecliningBuildHook, DECLINING_BUILD_HOOK } from './build-hook.js'
export type { Backend, BackendOptions } from './backend.js'
