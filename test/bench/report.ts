// Tests bench/report.ts: the section's table (medians, ranges, ratios to the reference row), "not measured" rows with
// the reason, goal verdicts, a warning when runs disagree widely, and a partial run replacing only its own section.
import t from "tap";
import {
  goalLine,
  mergeReport,
  parseSections,
  REPORT_HEADER,
  type RunInfo,
  renderSection,
  spreadWarning,
} from "../../bench/report.js";
import type { GroupResult } from "../../bench/workload.js";

const info: RunInfo = {
  date: "2026-11-29T14:00:00Z",
  command: "make bench BENCH=ready",
  user: "builder",
  machine: "2 CPUs (Test CPU), 23.5 GiB memory, Linux 6.1.0, Node v20.0.0",
  qemu: "QEMU emulator version 7.2.0",
  accel: "tcg (no usable KVM)",
  loadStart: [1, 0.5, 0.25],
  loadEnd: [2, 1, 0.5],
};

const REF = { workload: "lg", metric: "launch" };
const result = (samples: GroupResult["samples"], skipped: GroupResult["skipped"] = {}): GroupResult => ({
  group: "ready",
  title: "Ready",
  rounds: 3,
  rows: [
    { label: "libguestfs launch", ...REF },
    { label: "vmdib ready", workload: "vm", metric: "total", ref: REF },
  ],
  goals: [
    {
      text: "vmdib at most half of libguestfs",
      numerator: { workload: "vm", metric: "total" },
      denominator: REF,
      max: 0.5,
    },
  ],
  samples,
  skipped,
  describe: { lg: "libguestfs-test-tool", vm: "boot | run true" },
  facts: [{ title: "Sizes", header: ["", "vmdib"], rows: [["initramfs", "179.4 MB"]] }],
  notes: ["cold means seeded"],
});

t.test("a section: run info, table with ratio, goal met, legend, facts, notes, markers", async (t) => {
  const text = renderSection(
    result({ lg: { launch: [30_000, 32_000, 31_000] }, vm: { total: [7_500, 8_000, 7_000] } }),
    info,
  );
  t.match(text, /^<!-- bench:ready:begin -->\n## Ready\n/);
  t.match(text, /<!-- bench:ready:end -->$/);
  t.match(
    text,
    "Measured 2026-11-29T14:00:00Z with `make bench BENCH=ready` as user `builder`; 3 rounds, interleaved.",
  );
  t.match(text, "- Load average (1/5/15 min): 1.00 / 0.50 / 0.25 at the start, 2.00 / 1.00 / 0.50 at the end");
  t.match(text, "| libguestfs launch | 31.0 s | 30.0 s – 32.0 s | 3 |  |");
  t.match(text, "| vmdib ready | 7.50 s | 7.00 s – 8.00 s | 3 | 0.24× libguestfs launch |");
  t.match(text, "vmdib ready / libguestfs launch = 0.242×, limit 0.50×: **met**");
  t.match(text, "- `vm`: boot | run true", "legend text is not a table cell: no escaping");
  t.match(text, "### Sizes\n\n|  | vmdib |\n|---|---:|\n| initramfs | 179.4 MB |");
  t.match(text, "Notes:\n\n- cold means seeded");
});

t.test("a missing reference or workload: 'not measured' with the reason, goal not evaluated", async (t) => {
  const r = result({ vm: { total: [7_000] } }, { lg: "libguestfs-test-tool is not installed (apt-get install it)" });
  const text = renderSection(r, info);
  t.match(
    text,
    "| libguestfs launch | not measured |  |  | libguestfs-test-tool is not installed (apt-get install it) |",
  );
  t.match(text, "| vmdib ready | 7.00 s | 7.00 s – 7.00 s | 1 | – (libguestfs launch not measured) |");
  t.match(goalLine(r, r.goals[0] as GroupResult["goals"][number]), /\*\*not evaluated\*\*/);
  t.match(text, "- `lg`: libguestfs-test-tool **Not measured: libguestfs-test-tool is not installed");
});

t.test("goal not met", async (t) => {
  const r = result({ lg: { launch: [10_000] }, vm: { total: [6_000] } });
  t.match(goalLine(r, r.goals[0] as GroupResult["goals"][number]), "= 0.600×, limit 0.50×: **not met**");
});

t.test("pipes inside table cells are escaped", async (t) => {
  const r = result({}, { lg: "a | b" });
  t.match(renderSection(r, info), "| a \\| b |");
});

t.test("mergeReport replaces the sections that ran, keeps the others, in group order", async (t) => {
  const old = mergeReport(
    undefined,
    new Map([
      ["ready", "<!-- bench:ready:begin -->\nold ready\n<!-- bench:ready:end -->"],
      ["build", "<!-- bench:build:begin -->\nold build\n<!-- bench:build:end -->"],
      ["gone", "<!-- bench:gone:begin -->\nno longer a group\n<!-- bench:gone:end -->"],
    ]),
    ["ready", "build", "gone"],
  );
  t.ok(old.startsWith(REPORT_HEADER));
  t.same([...parseSections(old).keys()], ["ready", "build", "gone"]);
  const next = mergeReport(
    `${old}\nsomeone's hand edit outside the markers\n`,
    new Map([["ready", "<!-- bench:ready:begin -->\nnew ready\n<!-- bench:ready:end -->"]]),
    ["ready", "build"],
  );
  const s = parseSections(next);
  t.same([...s.keys()], ["ready", "build"]);
  t.match(s.get("ready"), /new ready/);
  t.match(s.get("build"), /old build/);
  t.notMatch(next, /hand edit/, "the file is generated: text outside the sections is not kept");
});

t.test("a wide spread between runs is called out; a narrow one or a single run is not", async (t) => {
  const calm = result({ lg: { launch: [30_000, 31_000, 32_000] }, vm: { total: [7_000, 7_500, 8_000] } });
  t.equal(spreadWarning(calm), undefined);
  t.notMatch(renderSection(calm, info), /Caution/);
  t.equal(spreadWarning(result({ lg: { launch: [10_000] }, vm: { total: [90_000] } })), undefined);
  const busy = result({ lg: { launch: [44_000, 49_000, 85_000] }, vm: { total: [17_600, 20_900, 40_500] } });
  const w = spreadWarning(busy) ?? "";
  t.match(w, "in 2 of 2 rows the slowest run took over 1.5× the fastest (up to 2.30×)");
  t.match(renderSection(busy, info), w);
});

t.test("a ratio just over the limit does not print as the limit", async (t) => {
  const r = result({ lg: { launch: [27_500] }, vm: { total: [13_900] } });
  t.match(goalLine(r, r.goals[0] as GroupResult["goals"][number]), "= 0.505×, limit 0.50×: **not met**");
});

t.test("verdicts on goals that are not ratios follow the goal lines", async (t) => {
  const r = { ...result({ lg: { launch: [30_000] }, vm: { total: [7_000] } }), verdicts: ["RSS ≤ 150 MB — **met**."] };
  const text = renderSection(r, info);
  t.match(text, /limit 0\.50×: \*\*met\*\*\.\n- Goal: RSS ≤ 150 MB — \*\*met\*\*\.\n/);
  t.match(text, /with `make bench BENCH=ready` as user `builder`; 3 rounds, interleaved\./);
});
