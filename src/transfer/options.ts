// Tuning shared by the transfer engine and the node's libp2p host (see bench/serve.ts).

/**
 * yamux options for the node's muxer (`yamux(transferYamuxOptions)`). A stream's receive
 * window grows up to maxStreamWindowSize; a paused stream must be allowed to hold a whole
 * window, or yamux resets it (LIBP2P.md pitfall 2), hence maxReadBufferLength above it.
 */
export const transferYamuxOptions = {
  streamOptions: {
    // bench/serve.ts measured 8–16 MiB windows with 64 KiB sends faster than this. They were
    // dropped for intermittent fetch-test "stalls", most likely the failing assert.ok hanging
    // under tsx (test/transfer/assert-messages.test.ts). With 16 MiB windows the fetch tests
    // pass except the idle-reader bound (20 MiB in flight, bound 16 MiB): this window stays
    // because it bounds what one paused stream may hold. Re-measure before raising it.
    maxStreamWindowSize: 4 * 1024 * 1024,
    maxReadBufferLength: 8 * 1024 * 1024
  }
}

/**
 * Bytes per read from the source and per send() on the stream: one yamux frame, one coalesced
 * socket write (src/transfer/noise.ts). 1 MiB took ~15–25% less CPU per MiB than 256 KiB on
 * both sides in most bench/serve.ts runs; it stays well inside the 4 MiB window.
 */
export const SEND_CHUNK_SIZE = 1024 * 1024
/**
 * Send buffers a server keeps for reuse (send-buffers.ts). One steady stream cycles through
 * three (one being encrypted and written, one waiting for window, one read ahead); the rest
 * serve concurrent streams. Idle, they hold SEND_BUFFERS_KEPT × SEND_CHUNK_SIZE bytes.
 */
export const SEND_BUFFERS_KEPT = 8
/** Unread bytes a receiving stream may hold before it is paused. */
export const RECEIVE_HIGH_WATER_MARK = 4 * 1024 * 1024
/** Range size when a file is pulled from several providers at once. */
export const PARALLEL_CHUNK_SIZE = 8 * 1024 * 1024
/** Providers used at the same time for one file. */
export const MAX_PARALLEL_PROVIDERS = 3
/** A peer must send its request frame within this time. */
export const REQUEST_TIMEOUT_MS = 10_000
