// Tests src/vm/appliance/memory.ts: releaseGarbage() really collects (without node's --expose-gc flag).
import { setImmediate as tick } from "node:timers/promises";
import t from "tap";
import { releaseGarbage } from "../../src/vm/appliance/memory.js";

t.test("releaseGarbage: dead objects are gone afterwards, live ones stay", async (t) => {
  const live = { name: "kept" };
  let dead: WeakRef<object> | undefined = new WeakRef({ big: Buffer.alloc(1 << 20) });
  const kept = new WeakRef(live);
  await tick(); // a WeakRef's target is held until the job that made it ends
  releaseGarbage();
  t.equal(dead?.deref(), undefined);
  t.equal(kept.deref(), live);
  dead = undefined;
  releaseGarbage(); // a second call reuses the collector
});
