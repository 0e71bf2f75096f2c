// Releasing garbage at the appliance build's phase boundaries, so one phase's dead data is not resident under the next.
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
