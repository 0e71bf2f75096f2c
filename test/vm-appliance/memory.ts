// Tests src/vm/appliance/memory.ts: releaseGarbage() really collects (without node's --expose-gc flag), and
// limitYoungGeneration() keeps the young generation from growing in a running process.
import { setImmediate as tick } from "node:timers/promises";
import { getHeapSpaceStatistics } from "node:v8";
import t from "tap";
import { limitYoungGeneration, releaseGarbage } from "../../src/vm/appliance/memory.js";

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

t.test("limitYoungGeneration: a burst of short-lived garbage does not grow the young generation", async (t) => {
  const newSpace = () => getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
  limitYoungGeneration();
  limitYoungGeneration(); // idempotent
  const before = newSpace();
  let keep = 0;
  for (let i = 0; i < 200_000; i++) keep += `${i}`.padEnd(300, "x").toUpperCase().length;
  t.ok(keep > 0);
  t.ok(before > 0, "V8 reports a new space");
  t.equal(newSpace(), before, "the semi-spaces kept their size");
});
