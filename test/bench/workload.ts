// Tests bench/workload.ts with fake workloads (no clock, no VM): the interleaved order, samples collected per metric,
// a workload that cannot prepare or fails a run recorded as not measured, cleanup after everything, facts before it.
import t from "tap";
import { type Group, NotMeasured, runGroup, schedule, type Workload } from "../../bench/workload.js";

t.test("schedule interleaves: every round visits each workload once, in order", async (t) => {
  t.same(
    schedule(["a", "b", "c"], 2).map((s) => `${s.round}${s.name}`),
    ["1a", "1b", "1c", "2a", "2b", "2c"],
  );
  t.same(schedule([], 3), []);
});

function group(workloads: Workload[], events: string[]): Group {
  return {
    name: "g",
    title: "G",
    workloads: () => workloads,
    rows: [],
    goals: [],
    async facts() {
      events.push("facts");
      return { tables: [], notes: ["a fact"] };
    },
  };
}

t.test("runGroup: interleaved runs, samples per metric, skips and failures, cleanup last", async (t) => {
  const events: string[] = [];
  const fake = (name: string, behave: Partial<Workload> = {}): Workload => ({
    name,
    describe: `${name} does things`,
    async run(round) {
      events.push(`${name}${round}`);
      return { ms: { total: round * 10, part: round }, notes: ["same note"] };
    },
    async cleanup() {
      events.push(`cleanup ${name}`);
    },
    ...behave,
  });
  const r = await runGroup(
    group(
      [
        fake("a"),
        fake("missing", {
          async prepare() {
            throw new NotMeasured("tool is not installed", "install it");
          },
        }),
        fake("flaky", {
          async run(round) {
            events.push(`flaky${round}`);
            if (round === 2) throw new Error("boom");
            return { ms: { total: 1 } };
          },
        }),
        fake("b"),
        fake("unselected"),
      ],
      events,
    ),
    { rounds: 3, only: new Set(["a", "missing", "flaky", "b"]), log: () => {} },
  );
  t.same(events, [
    "a1",
    "flaky1",
    "b1",
    "a2",
    "flaky2",
    "b2",
    "a3",
    "b3",
    "facts",
    "cleanup b",
    "cleanup flaky",
    "cleanup missing",
    "cleanup a",
  ]);
  t.same(r.samples.a, { total: [10, 20, 30], part: [1, 2, 3] });
  t.same(r.samples.flaky, { total: [1] }, "samples before the failure are kept");
  t.equal(r.samples.missing, undefined);
  t.same(r.skipped, { missing: "tool is not installed (install it)", flaky: "failed in round 2: boom" });
  t.same(r.notes, ["same note", "a fact"], "a note repeated by every run is listed once");
  t.equal(r.describe.unselected, "unselected does things", "every workload is described, run or not");
  t.equal(r.rounds, 3);
});

t.test(
  "runGroup interrupted: what ran is kept, the running and later workloads are marked, cleanup and facts run",
  async (t) => {
    const events: string[] = [];
    const stop = new AbortController();
    const w = (name: string, run: Workload["run"]): Workload => ({
      name,
      describe: name,
      run,
      async cleanup() {
        events.push(`cleanup ${name}`);
      },
    });
    const r = await runGroup(
      group(
        [
          w("a", async () => ({ ms: { total: 5 } })),
          w("b", async (_round, signal) => {
            stop.abort();
            t.equal(signal?.aborted, true, "the running workload is told");
            throw new Error("killed");
          }),
          w("c", async () => ({ ms: { total: 1 } })),
        ],
        events,
      ),
      { rounds: 2, log: () => {}, signal: stop.signal },
    );
    t.same(r.samples, { a: { total: [5] } }, "round 1 of a is kept; nothing runs after the interrupt");
    t.match(r.skipped.b ?? "", /^interrupted: the bench was stopped/);
    t.match(r.skipped.c ?? "", /interrupted .* before it ran/);
    t.notOk(r.skipped.a, "a keeps its samples, with no 'not measured'");
    t.match(r.notes.join("\n"), /interrupted in round 1/);
    t.same(events, ["facts", "cleanup c", "cleanup b", "cleanup a"]);
  },
);
