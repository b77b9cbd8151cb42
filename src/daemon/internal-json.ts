// Telling apart the logs of several builds run by one `nix-store --realise --log-format
// internal-json`: each stderr line is `@nix {json}`. A build is an activity (`start`, type 105
// actBuild, fields[0] = the .drv path); its output lines are `result` type 101
// (resBuildLogLine, fields[0] = the line) under that activity's id. Messages (`msg`) belong to a
// build when they name its .drv path (e.g. "builder for '…' failed"), else to all.
// Observed on Nix 2.8.

const ACT_BUILD = 105
const RES_BUILD_LOG_LINE = 101
const PREFIX = '@nix '
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g

interface NixLogEvent {
  action?: string
  id?: number
  type?: number
  fields?: unknown[]
  msg?: string
  text?: string
}

export interface LogRouterSink {
  /** A line (with its newline) of one build's log. */
  line: (drvPath: string, text: string) => void
  /** A line that names none of the builds (the daemon's own messages, or not JSON at all). */
  other: (text: string) => void
}

export class InternalJsonLogRouter {
  private readonly activities = new Map<number, string>()
  private partial = ''

  constructor (private readonly drvPaths: readonly string[], private readonly sink: LogRouterSink) {}

  /** Feed stderr bytes as they come; lines may be split across chunks. */
  push (chunk: Buffer): void {
    const text = this.partial + chunk.toString('utf8')
    const lines = text.split('\n')
    this.partial = lines.pop() ?? ''
    for (const l of lines) this.handle(l)
  }

  end (): void {
    if (this.partial !== '') this.handle(this.partial)
    this.partial = ''
  }

  private handle (line: string): void {
    if (!line.startsWith(PREFIX)) {
      if (line.trim() !== '') this.routeMessage(line)
      return
    }
    let ev: NixLogEvent
    try {
      ev = JSON.parse(line.slice(PREFIX.length)) as NixLogEvent
    } catch {
      this.routeMessage(line)
      return
    }
    if (ev.action === 'start' && ev.type === ACT_BUILD && typeof ev.id === 'number' && typeof ev.fields?.[0] === 'string') {
      const drv = ev.fields[0]
      if (this.drvPaths.includes(drv)) {
        this.activities.set(ev.id, drv)
        if (typeof ev.text === 'string' && ev.text !== '') this.sink.line(drv, ev.text.replace(ANSI, '') + '\n')
      }
    } else if (ev.action === 'result' && ev.type === RES_BUILD_LOG_LINE && typeof ev.id === 'number') {
      const drv = this.activities.get(ev.id)
      const text = typeof ev.fields?.[0] === 'string' ? ev.fields[0] : ''
      if (drv !== undefined) this.sink.line(drv, text + '\n')
      else this.sink.other(text + '\n')
    } else if (ev.action === 'msg' && typeof ev.msg === 'string') {
      this.routeMessage(ev.msg.replace(ANSI, ''))
    }
  }

  private routeMessage (text: string): void {
    const named = this.drvPaths.filter((d) => text.includes(d))
    if (named.length === 0) this.sink.other(text + '\n')
    for (const d of named) this.sink.line(d, text + '\n')
  }
}
