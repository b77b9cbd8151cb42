// Public API of src/scheduler: claims with leases, priorities, retries, dependency order, builds
// on the local daemon, outputs turned into signed NARs where the build ran.
//
//   const s = new SchedulerService({ queue, store, builder, publisher: binaryCache, inputs, logsDir,
//     hooks: { programs: { 'build-success': '/usr/local/bin/notify' }, timeoutMs: 10_000 },
//     config: { maxBuilds: 2, systems: ['x86_64-linux'], tags: ['big-memory'], leaseMs: 60_000 } })
//   await s.start(); …; s.status(); await s.readLog(buildId); await s.stop()
export { SchedulerService, BUSY_GRACE_MS, SETUP_STRIKES } from './scheduler.js'
export type {
  SchedulerComponents, SchedulerQueue, SchedulerStatus, RunningBuild, RunPhase, Decision, DecisionAction, StopOptions
} from './scheduler.js'
export { DEFAULT_SCHEDULER_CONFIG, resolveConfig, backoffMs, tagsMet, type SchedulerConfig } from './config.js'
export { localInputs, type InputFetcher, type OutputPublisher, type PublishedOutput } from './ports.js'
export { LogStore, logName, MEMORY_LOG_BYTES, MEMORY_LOG_MS, type LogWriter } from './logs.js'
export { HookRunner, HOOK_EVENTS, type HookEvent, type HookConfig, type HookRun } from './hooks.js'
export * from './errors.js'
