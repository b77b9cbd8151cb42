// One table per backend: the only place where Nix and Guix differ is which command lines they run.
// Everything else (parsing, classification, import/export) is shared.

export type StoreKind = 'nix' | 'guix'

export interface Command { command: string, args: string[], input?: string }

export interface BuildFlags {
  /** Substituter URLs (the node's own HTTP front, peers). Empty: build offline. */
  substituters: string[]
  /** Nix `trusted-public-keys` (`name:base64`). Guix authorises keys with `guix archive --authorize` instead. */
  trustedPublicKeys: string[]
  /** Seconds without output before the daemon kills the build (0: no limit). */
  maxSilentTime?: number
  /** Seconds of total build time (0: no limit). */
  timeout?: number
  /** Nix `build-hook` program for builds (Nix's own when absent); Guix has no such setting. */
  buildHook?: string
}

export interface CommandSet {
  kind: StoreKind
  defaultStoreDir: string
  /** Prints the invalid ones among `paths`, one per line; exit 0. */
  printInvalid: (paths: string[]) => Command
  /** Prints registration info (`path\nhexNarHash\nnarSize\nderiver\nnRefs\nrefs…`) per path. */
  dumpInfo: (paths: string[]) => Command
  /** Prints the closure of `paths`, one per line. */
  requisites: (paths: string[]) => Command
  /** Writes the NAR serialisation of `path` on stdout. */
  dump: (path: string) => Command
  /** Reads the export format (`1, NAR, NIXE, path, refs, deriver, 0` … `0`) on stdin; undefined when unsupported. */
  importExport: Command | undefined
  /** Builds a derivation; prints output paths (or roots) on stdout and the build log on stderr. `gcRoot`: symlink(s) that keep the outputs alive. */
  build: (drvPath: string, flags: BuildFlags, gcRoot?: string) => Command
  /**
   * Builds several independent derivations in one client, going on past failures, with a log
   * that says which build each line belongs to (Nix: `--log-format internal-json`); undefined
   * when the tool cannot attribute its log.
   */
  buildMany?: (drvPaths: string[], flags: BuildFlags, maxJobs: number, gcRootBase?: string) => Command
  /** Fetches store paths from substituters only, never building them; undefined when the tool cannot promise that. */
  substitute: ((paths: string[], flags: BuildFlags) => Command) | undefined
  /** Says what a build would build and what it would fetch (on stderr), without doing it. */
  dryRun: (drvPath: string, flags: BuildFlags) => Command
  /**
   * A long-lived store connection speaking Nix's serve protocol on stdin/stdout (queries and
   * imports without a process each); undefined when the tool has none.
   */
  serve?: Command
  /**
   * The same server, set up to build: the log as `buildMany`'s (one line per event, told apart
   * per build), going on past failures, one build at a time; undefined when the tool has none.
   */
  serveBuild?: (flags: BuildFlags) => Command
  /** Exit codes that mean "a builder ran and failed" (Nix: 100 generic, 101 timeout, 102 hash mismatch, 104 not deterministic). */
  buildFailedCodes: number[]
}

function nixOptions (f: BuildFlags): string[] {
  const o = ['--option', 'substituters', f.substituters.join(' ')]
  if (f.substituters.length > 0) {
    o.push('--option', 'trusted-public-keys', f.trustedPublicKeys.join(' '))
    // The node's cache changes by the minute; a remembered 404 would hide a path that just arrived.
    o.push('--option', 'narinfo-cache-negative-ttl', '0')
  }
  if (f.maxSilentTime !== undefined) o.push('--option', 'max-silent-time', String(f.maxSilentTime))
  if (f.timeout !== undefined) o.push('--option', 'timeout', String(f.timeout))
  if (f.buildHook !== undefined) o.push('--option', 'build-hook', f.buildHook)
  return o
}

// Queries must never wander off to cache.nixos.org: a local question gets a local answer.
const OFFLINE = ['--option', 'substituters', '']

export const NIX_COMMANDS: CommandSet = {
  kind: 'nix',
  defaultStoreDir: '/nix/store',
  printInvalid: (paths) => ({ command: 'nix-store', args: ['--check-validity', '--print-invalid', ...OFFLINE, '--', ...paths] }),
  dumpInfo: (paths) => ({ command: 'nix-store', args: ['--dump-db', ...OFFLINE, '--', ...paths] }),
  requisites: (paths) => ({ command: 'nix-store', args: ['--query', '--requisites', ...OFFLINE, '--', ...paths] }),
  dump: (path) => ({ command: 'nix-store', args: ['--dump', '--', path] }),
  importExport: { command: 'nix-store', args: ['--import', ...OFFLINE] },
  // --add-root R makes R, R-dev… (one per output) registered as indirect GC roots.
  build: (drv, f, root) => ({ command: 'nix-store', args: ['--realise', ...nixOptions(f), ...(root !== undefined ? ['--add-root', root] : []), '--', drv] }),
  // --add-root R names the roots R, R-2, R-3 … per .drv argument (and -<output> beyond out);
  // Nix makes none at all once any build of the batch failed.
  buildMany: (drvs, f, maxJobs, root) => ({
    command: 'nix-store',
    args: ['--realise', '--keep-going', '--max-jobs', String(maxJobs), '--log-format', 'internal-json', ...nixOptions(f), ...(root !== undefined ? ['--add-root', root] : []), '--', ...drvs]
  }),
  // Given output paths rather than .drv files, --realise only substitutes (FORMATS.md §2.4).
  substitute: (paths, f) => ({ command: 'nix-store', args: ['--realise', ...nixOptions(f), '--', ...paths] }),
  dryRun: (drv, f) => ({ command: 'nix-store', args: ['--realise', '--dry-run', ...nixOptions(f), '--', drv] }),
  // The server remembers path infos for its lifetime unless told not to: a path found invalid
  // (negative TTL) or valid before a garbage collection (positive TTL) would stay so.
  serve: {
    command: 'nix-store',
    args: ['--serve', '--write', '--option', 'narinfo-cache-negative-ttl', '0', '--option', 'narinfo-cache-positive-ttl', '0', ...OFFLINE]
  },
  serveBuild: (f) => ({
    command: 'nix-store',
    args: ['--serve', '--write', '--log-format', 'internal-json', '--option', 'keep-going', 'true', '--option', 'max-jobs', '1', ...nixOptions(f)]
  }),
  buildFailedCodes: [100, 101, 102, 104]
}

/**
 * Guix has no CLI for path registration info or NAR dumps, so a short Guile script run by
 * `guix repl` asks the daemon (query-path-info, valid-path?, write-file) and prints exactly
 * what nix-store prints, so parsing stays shared.
 * Unverified here (no Guix on this machine); written from guix/store.scm and guix/serialization.scm.
 */
export const GUIX_SCRIPT = `(use-modules (guix store) (guix base16) (guix serialization) (ice-9 format))
(define args (cdr (command-line)))
(with-store s
  (let ((mode (car args)) (paths (cdr args)))
    (cond
     ((string=? mode "invalid")
      (for-each (lambda (p) (unless (valid-path? s p) (format #t "~a~%" p))) paths))
     ((string=? mode "info")
      (for-each (lambda (p)
                  (unless (valid-path? s p)
                    (format (current-error-port) "error: path '~a' is not valid~%" p) (exit 1))
                  (let ((i (query-path-info s p)))
                    (format #t "~a~%~a~%~a~%~a~%~a~%~{~a~%~}" p
                            (bytevector->base16-string (path-info-hash i)) (path-info-nar-size i)
                            (or (path-info-deriver i) "") (length (path-info-references i))
                            (path-info-references i))))
                paths))
     ((string=? mode "dump")
      (let ((out (current-output-port)))
        (set-port-encoding! out "ISO-8859-1")
        (write-file (car paths) out)
        (force-output out))))))
`

function guixSubstituteFlags (f: BuildFlags): string[] {
  const o = f.substituters.length === 0 ? ['--no-substitutes'] : [`--substitute-urls=${f.substituters.join(' ')}`]
  if (f.maxSilentTime !== undefined) o.push(`--max-silent-time=${f.maxSilentTime}`)
  if (f.timeout !== undefined) o.push(`--timeout=${f.timeout}`)
  return o
}

/** `scriptPath` is where GUIX_SCRIPT was written (guix repl runs a file). */
export function guixCommands (scriptPath: string): CommandSet {
  const repl = (mode: string, paths: string[]): Command => ({ command: 'guix', args: ['repl', '--', scriptPath, mode, ...paths] })
  return {
    kind: 'guix',
    defaultStoreDir: '/gnu/store',
    printInvalid: (paths) => repl('invalid', paths),
    dumpInfo: (paths) => repl('info', paths),
    requisites: (paths) => ({ command: 'guix', args: ['gc', '--requisites', ...paths] }),
    dump: (path) => repl('dump', [path]),
    // guix-daemon imports only archives signed by a key in /etc/guix/acl; paths reach a Guix
    // store by substitution from the node's HTTP front (`--substitute-urls`) instead.
    importExport: undefined,
    // --verbosity=2 puts the build log on stderr; --no-grafts: build exactly this derivation.
    build: (drv, f, root) => ({ command: 'guix', args: ['build', '--verbosity=2', '--no-grafts', ...guixSubstituteFlags(f), ...(root !== undefined ? [`--root=${root}`] : []), drv] }),
    // No substitute-only CLI verb in Guix; `inputs: require` falls back to the dry run.
    substitute: undefined,
    dryRun: (drv, f) => ({ command: 'guix', args: ['build', '--dry-run', '--no-grafts', ...guixSubstituteFlags(f), drv] }),
    buildFailedCodes: []
  }
}
