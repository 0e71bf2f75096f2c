// Tests bench/proc.ts: VmHWM from /proc/<pid>/status text, and a real short run with its lines, exit code and peak
// RSS (Linux), and the timeout.
import t from "tap";
import { runTimed, vmHwmKb } from "../../bench/proc.js";

t.test("VmHWM in kB, or undefined", async (t) => {
  t.equal(vmHwmKb("Name:\tnode\nVmPeak:\t  1000 kB\nVmHWM:\t   98304 kB\nVmRSS:\t 90000 kB\n"), 98304);
  t.equal(vmHwmKb("Name:\tkthreadd\n"), undefined);
});

t.test("a run: lines from stdout and stderr, exit code, peak RSS of the process", async (t) => {
  const r = await runTimed("sh", ["-c", "echo one; echo two >&2; sleep 0.5; exit 3"], {
    env: process.env,
    timeoutMs: 30_000,
    rss: true,
  });
  t.equal(r.code, 3);
  t.same(r.lines.map((l) => l.text).sort(), ["one", "two"]);
  t.equal(r.timedOut, false);
  if (process.platform === "linux") t.ok((r.peakRssKb ?? 0) > 0, `peak RSS ${r.peakRssKb} kB`);
});

t.test("the timeout ends the run", async (t) => {
  const r = await runTimed("sleep", ["30"], { env: process.env, timeoutMs: 300 });
  t.equal(r.timedOut, true);
  t.not(r.code, 0);
});
