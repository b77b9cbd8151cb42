// Hybrid logical clock: physical milliseconds plus a logical counter, so stamps follow
// causality even when wall clocks disagree a little.
export type Stamp = readonly [ms: number, counter: number]

export function compareStamp (a: Stamp, b: Stamp): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1]
}

export class Hlc {
  private ms = 0
  private counter = 0
  constructor (private readonly now: () => number) {}

  /** A fresh stamp for a local event, strictly after every stamp seen so far. */
  tick (): Stamp {
    const pt = this.now()
    if (pt > this.ms) {
      this.ms = pt
      this.counter = 0
    } else {
      this.counter++
    }
    return [this.ms, this.counter]
  }

  /** Fold in a remote stamp (already checked against the skew bound). */
  observe (remote: Stamp): void {
    if (compareStamp(remote, [this.ms, this.counter]) > 0) {
      this.ms = remote[0]
      this.counter = remote[1]
    }
  }

  current (): Stamp { return [this.ms, this.counter] }
}
