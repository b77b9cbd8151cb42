// CLI entry. The polyfill must be evaluated before any libp2p code runs.
import '../polyfill.js'
import { buildProgram } from './program.js'
import { CliError } from './errors.js'

const program = buildProgram()
try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CliError) {
    process.stderr.write(`guix-swarm: ${err.message}\n`)
    process.exit(err.exitCode)
  }
  const e = err as Error
  process.stderr.write(`guix-swarm: ${e.name}: ${e.message}\n`)
  process.exit(1)
}
