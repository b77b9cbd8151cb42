import { Command } from 'commander'
import { VERSION } from '../version.js'
import * as nar from './commands/nar.js'
import * as key from './commands/key.js'
import * as narinfo from './commands/narinfo.js'
import * as cache from './commands/cache.js'
import * as node from './commands/node.js'
import * as queue from './commands/queue.js'
import * as substitutes from './commands/substitutes.js'

/** Each command group lives in its own module under ./commands and registers itself here. */
export function buildProgram (): Command {
  const program = new Command()
  program
    .name('guix-swarm')
    .description('A build farm for GNU Guix with no central server')
    .version(VERSION)
    .showHelpAfterError()
  for (const group of [node, queue, substitutes, nar, key, narinfo, cache]) group.register(program)
  return program
}
