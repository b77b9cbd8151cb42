#!/usr/bin/env -S node --min-semi-space-size=16
// Thin launcher: the CLI is compiled to dist/ by `npm install` (prepare). The Node flags on the
// first line are src/cli/node-flags.ts's (why there); `node bin/guix-swarm.js` runs without them.
import '../dist/src/cli/main.js'
