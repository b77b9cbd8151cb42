// Plain counters: the node reads them into prom-client gauges/counters at scrape time.

export class TransferMetrics {
  bytesServed = 0
  bytesFetched = 0
  requestsServed = 0
  /** Requests refused: malformed/oversized frames, bad offsets, unknown types. */
  badRequests = 0
  /** Range or whole-file attempts against one provider that failed (cut, refused, wrong size). */
  fetchFailures = 0
  /** verify() rejections. */
  verifyFailures = 0
  filesFetched = 0

  snapshot (): Record<string, number> {
    return {
      bytesServed: this.bytesServed,
      bytesFetched: this.bytesFetched,
      requestsServed: this.requestsServed,
      badRequests: this.badRequests,
      fetchFailures: this.fetchFailures,
      verifyFailures: this.verifyFailures,
      filesFetched: this.filesFetched
    }
  }
}
