import type { Command } from 'commander'

export function register (_program: Command): void {
  // filled by the narinfo command group
}
