// Tests for src/report.ts: build events folded into the end-of-build report, and its rendering.
import t from "tap";
import { collectReport, renderReport } from "../src/report.js";

t.test("steps with their scripts' times, outputs, caches, accelerator", async (t) => {
  const { report, onEvent } = collectReport();
  onEvent({ type: "step-start", step: "install", where: "chroot" });
  for (const line of [
    "dib-run-parts Running /tmp/in_target.d/install.d/50-tiny-marker",
    "dib-run-parts ----------------------- PROFILING -----------------------",
    "dib-run-parts Script                                     Seconds",
    "dib-run-parts 50-tiny-marker                                0.123",
    "dib-run-parts 60-other                                     12.500",
  ])
    onEvent({ type: "output", step: "install", stream: "stdout", line });
  onEvent({ type: "step-end", step: "install", seconds: 14.2, ok: true });
  onEvent({ type: "step-start", step: "convert qcow2", where: "host" });
  onEvent({ type: "step-end", step: "convert qcow2", seconds: 3, ok: false });
  onEvent({ type: "artifact", path: "out/tiny.qcow2", format: "qcow2", bytes: 3 * 1024 ** 2 });
  report.caches.push({ name: "tree after post-root.d", result: "hit 0123" });
  report.accel = "tcg (no /dev/kvm)";
  report.totalSeconds = 20;
  t.same(report.steps[0]?.scripts, [
    { name: "50-tiny-marker", seconds: 0.123 },
    { name: "60-other", seconds: 12.5 },
  ]);
  const text = renderReport(report);
  t.match(text, /^ {2}install +chroot +14\.2$/m);
  t.match(text, /^ {4}60-other +12\.5$/m);
  t.match(text, /^ {2}convert qcow2 \(FAILED\) +host +3\.0$/m);
  t.match(text, /^ {2}total +20\.0$/m);
  t.match(text, /^ {2}out\/tiny\.qcow2 +3\.0 MiB$/m);
  t.match(text, /^ {2}tree after post-root\.d: hit 0123$/m);
  t.match(text, /^Accelerator: tcg \(no \/dev\/kvm\)$/m);
});
