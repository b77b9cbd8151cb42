#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm install` (prepare).
import '../dist/src/cli/main.js'
