// Tests bench/args.ts: BENCH/ROUNDS from the environment (as make passes them), argv overriding them, bad values as
// usage errors, and the selection of groups and single workloads.
import t from "tap";
import { parseBenchArgs, selectWorkloads } from "../../bench/args.js";
import { UsageError } from "../../src/errors.js";

t.test("defaults: everything, each group's own rounds, BENCHMARKS.md", async (t) => {
  t.same(parseBenchArgs([], {}), {
    only: undefined,
    rounds: undefined,
    out: undefined,
    coldNetwork: false,
    help: false,
  });
  t.equal(parseBenchArgs([], { BENCH: "", ROUNDS: "" }).only, undefined, "make's empty BENCH= means all");
});

t.test("environment, then argv", async (t) => {
  const env = { BENCH: "ready, vmdib-warm", ROUNDS: "5", BENCH_COLD_NETWORK: "1" };
  t.same(parseBenchArgs([], env), {
    only: ["ready", "vmdib-warm"],
    rounds: 5,
    out: undefined,
    coldNetwork: true,
    help: false,
  });
  const o = parseBenchArgs(["--only", "libguestfs-warm", "--rounds=2", "--out", "/tmp/b.md"], env);
  t.same(o.only, ["libguestfs-warm"]);
  t.equal(o.rounds, 2);
  t.equal(o.out, "/tmp/b.md");
  t.equal(parseBenchArgs(["--help"], {}).help, true);
});

t.test("bad input is a usage error", async (t) => {
  t.throws(() => parseBenchArgs(["--rounds", "0"], {}), UsageError);
  t.throws(() => parseBenchArgs([], { ROUNDS: "three" }), UsageError);
  t.throws(() => parseBenchArgs(["--only"], {}), UsageError);
  t.throws(() => parseBenchArgs(["--fast"], {}), UsageError);
});

const GROUPS = [
  { name: "ready", workloads: ["vmdib-cold", "vmdib-warm", "libguestfs-warm"] },
  { name: "build", workloads: ["w1-cold", "w2-native"] },
];

t.test("selection by group, by workload, or all", async (t) => {
  t.same(selectWorkloads(GROUPS, undefined), [
    { group: "ready", workloads: ["vmdib-cold", "vmdib-warm", "libguestfs-warm"] },
    { group: "build", workloads: ["w1-cold", "w2-native"] },
  ]);
  t.same(selectWorkloads(GROUPS, ["ready"]), [
    { group: "ready", workloads: ["vmdib-cold", "vmdib-warm", "libguestfs-warm"] },
  ]);
  t.same(selectWorkloads(GROUPS, ["libguestfs-warm", "vmdib-warm", "w2-native"]), [
    { group: "ready", workloads: ["vmdib-warm", "libguestfs-warm"] },
    { group: "build", workloads: ["w2-native"] },
  ]);
});

t.test("an unknown name is a usage error that lists the known ones", async (t) => {
  const err = t.throws(() => selectWorkloads(GROUPS, ["redy"])) as unknown as UsageError;
  t.type(err, UsageError);
  t.match(err.message, /'redy'/);
  t.match(err.hint, /ready, vmdib-cold/);
});
