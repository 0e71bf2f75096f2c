// The end-of-build report: every step and its scripts with durations (DIB's profiling tables, gathered in one place),
// each output with size and checksum, the caches hit or missed, and the accelerator. Collected from build events;
// rendered as text by a pure function.
import type { BuildEvent } from "./execute.js";

export interface StepTiming {
  readonly name: string;
  readonly where: string;
  readonly seconds: number;
  readonly ok: boolean;
  readonly scripts: { readonly name: string; readonly seconds: number }[];
}

export interface BuildReport {
  readonly steps: StepTiming[];
  readonly outputs: { readonly path: string; readonly format: string; readonly bytes: number; sha256?: string }[];
  readonly caches: { readonly name: string; readonly result: string }[];
  accel?: string;
  totalSeconds?: number;
}

/** A script line of dib-run-parts' profiling table: "dib-run-parts NAME   SECONDS". */
const PROFILE_LINE = /^dib-run-parts ([0-9A-Za-z_-]+)\s+(\d+\.\d+)$/;

/** Folds build events into a report. */
export function collectReport(): { report: BuildReport; onEvent: (e: BuildEvent) => void } {
  const report: BuildReport = { steps: [], outputs: [], caches: [] };
  const open = new Map<string, { where: string; scripts: { name: string; seconds: number }[] }>();
  const onEvent = (e: BuildEvent) => {
    switch (e.type) {
      case "step-start":
        open.set(e.step, { where: e.where, scripts: [] });
        break;
      case "output": {
        const m = PROFILE_LINE.exec(e.line.trim());
        if (m?.[1] && m[2]) open.get(e.step)?.scripts.push({ name: m[1], seconds: Number(m[2]) });
        break;
      }
      case "step-end": {
        const o = open.get(e.step);
        open.delete(e.step);
        report.steps.push({
          name: e.step,
          where: o?.where ?? "",
          seconds: e.seconds,
          ok: e.ok,
          scripts: o?.scripts ?? [],
        });
        break;
      }
      case "artifact":
        report.outputs.push({ path: e.path, format: e.format, bytes: e.bytes });
        break;
      default:
        break;
    }
  };
  return { report, onEvent };
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;

/** The report as the table printed at the end of a build (pure). */
export function renderReport(r: BuildReport): string {
  const rows: [string, string, string][] = [];
  for (const s of r.steps) {
    rows.push([s.ok ? s.name : `${s.name} (FAILED)`, s.where, s.seconds.toFixed(1)]);
    for (const c of s.scripts) rows.push([`  ${c.name}`, "", c.seconds.toFixed(1)]);
  }
  if (r.totalSeconds !== undefined) rows.push(["total", "", r.totalSeconds.toFixed(1)]);
  const w0 = Math.max(4, ...rows.map((x) => x[0].length));
  const w1 = Math.max(5, ...rows.map((x) => x[1].length));
  const lines = [
    "Build summary",
    `  ${"step".padEnd(w0)}  ${"where".padEnd(w1)}  seconds`,
    ...rows.map(([a, b, c]) => `  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c.padStart(7)}`),
  ];
  if (r.outputs.length) {
    lines.push("Outputs");
    const w = Math.max(...r.outputs.map((o) => o.path.length));
    for (const o of r.outputs)
      lines.push(`  ${o.path.padEnd(w)}  ${mib(o.bytes).padStart(11)}${o.sha256 ? `  sha256 ${o.sha256}` : ""}`);
  }
  if (r.caches.length) {
    lines.push("Caches");
    for (const c of r.caches) lines.push(`  ${c.name}: ${c.result}`);
  }
  if (r.accel) lines.push(`Accelerator: ${r.accel}`);
  return `${lines.join("\n")}\n`;
}
