// The controller's memory around the host's heavy phases (Packages index, debootstrap's first stage, the appliance):
// a young generation that does not grow, and full collections at phase boundaries.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let collect: (() => void) | undefined | null;

/**
 * A full garbage collection, now. V8 collects when its heuristics say so, and between the phases of an appliance
 * build that is too late: the parsed Packages index (~30 MB, dead once the closure is resolved) was still in the heap
 * when the first packages' contents arrived, and the two together made the controller's peak. One collection costs
 * tens of milliseconds. The `gc` function is taken from a fresh context after enabling --expose-gc, as Jest does
 * for its heap reports; where that is refused, this does nothing.
 */
export function releaseGarbage(): void {
  if (collect === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      collect = runInNewContext("gc") as () => void;
    } catch {
      collect = null;
    }
  }
  collect?.();
}

let youngLimited = false;

/**
 * Keep V8's young generation at the size it has now (from node's start: two 1 MB semi-spaces) for the rest of the
 * process. Parsing the 50 MB Packages index, streaming .debs and the downloads allocate short-lived strings and
 * buffers fast, and V8 answers by doubling the semi-spaces up to 16 MB each. That costs twice: the semi-spaces are
 * resident, and the dead pipe chunks and file buffers they hold are freed only when a scavenge finds them, so
 * malloc's heap grows too. Measured on the host phases of a cold `vmdib build -t tar debian-minimal` (index,
 * debootstrap's first stage, appliance): peak RSS 188 MB -> 145 MB, no slower (a scavenge of 1 MB takes well under a
 * millisecond; the controller's JavaScript is not where a build's time goes).
 *
 * `--max-semi-space-size` counts only when the heap is made, i.e. on node's command line; the growth factor is read
 * each time V8 considers growing, so setting it to 1 works in a running process — but only from before the growth:
 * the CLI calls this first thing (src/cli.ts), the heavy phases call it again for other callers. Idempotent; where
 * V8 refuses the flag, nothing changes.
 */
export function limitYoungGeneration(): void {
  if (youngLimited) return;
  youngLimited = true;
  try {
    setFlagsFromString("--semi-space-growth-factor=1");
  } catch {
    // an embedder that freezes V8's flags: the default growth stays
  }
}
