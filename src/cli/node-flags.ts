/**
 * The flags bin/guix-swarm.js starts Node with (its `#!/usr/bin/env -S node …` line; a test
 * keeps the two the same, and the test and bench harnesses start nodes with these too).
 *
 * A young generation that starts at 16 MiB semi-spaces (V8's default starts at 1 MiB and grew
 * too slowly under a NAR transfer): with the default, a node streaming a NAR promoted the
 * objects of its in-flight buffers and ran 10–20 full collections per 256 MiB sent, at 2.3 ms
 * of CPU per MiB; with it, none, at 1.35 ms (docs/BENCHMARKS.md). A busy node's young
 * generation reaches 16 MiB anyway; an idle one holds up to 32 MiB more.
 */
export const NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16']
