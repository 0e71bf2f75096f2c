// How a build's events reach the user. On a pipe: DIB's timestamped lines (`YYYY-MM-DD HH:MM:SS.mmm | ...`), no escape
// codes. With --json: one JSON object per event. On a terminal: the same lines with a live status line under them —
// step, script, elapsed time, an estimate from the last build of the same elements, a progress bar for conversion.
// --logfile keeps the full log in a file while the terminal shows only the steps; -q shows only the summary.
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Writable } from "node:stream";
import type { BuildEvent } from "./execute.js";

/** Step durations of a finished build, kept to estimate the next one of the same elements. */
export interface Timings {
  readonly steps: Readonly<Record<string, number>>;
  readonly total: number;
}

export interface Status {
  readonly step: string;
  readonly where: string;
  readonly script?: string;
  readonly elapsedS: number;
  readonly remainingS?: number;
  readonly progress?: { readonly done: number; readonly total: number; readonly rate?: number };
}

const clock = (s: number) => {
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
};
const mib = (b: number) => `${(b / 1024 ** 2).toFixed(0)} MiB`;

/** The status line (pure), cut to the terminal's width. */
export function statusLine(s: Status, columns = 80): string {
  const parts = [`[${clock(s.elapsedS)}]`, `${s.step} (${s.where})`];
  if (s.script) parts.push(s.script);
  if (s.progress && s.progress.total > 0) {
    const f = Math.min(1, s.progress.done / s.progress.total);
    const width = 20;
    const bar = `${"#".repeat(Math.round(f * width)).padEnd(width, ".")}`;
    const rate = s.progress.rate ? `, ${mib(s.progress.rate)}/s` : "";
    parts.push(`[${bar}] ${(f * 100).toFixed(0)}% ${mib(s.progress.done)}/${mib(s.progress.total)}${rate}`);
  }
  if (s.remainingS !== undefined) parts.push(`about ${clock(s.remainingS)} left`);
  const line = parts.join("  ");
  return line.length > columns - 1 ? `${line.slice(0, columns - 2)}…` : line;
}

/** Remaining time from the last build's step durations (pure): steps not started, plus what is left of this one. */
export function estimateRemaining(last: Timings, done: ReadonlySet<string>, current: string, currentS: number): number {
  let left = Math.max(0, (last.steps[current] ?? 0) - currentS);
  for (const [step, s] of Object.entries(last.steps)) if (!done.has(step) && step !== current) left += s;
  return left;
}

/** The key timings are kept under: the element names (sorted) and output types. */
export function timingsKey(elements: readonly string[], types: readonly string[]): string {
  const doc = JSON.stringify([[...elements].sort(), [...types].sort()]);
  return createHash("sha256").update(doc).digest("hex").slice(0, 16);
}

export async function loadTimings(dir: string, key: string): Promise<Timings | undefined> {
  return await readFile(join(dir, `${key}.json`), "utf8").then(
    (t) => JSON.parse(t) as Timings,
    () => undefined,
  );
}

export async function saveTimings(dir: string, key: string, t: Timings): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `${key}.json.${process.pid}`);
  await writeFile(tmp, `${JSON.stringify(t)}\n`);
  await rename(tmp, join(dir, `${key}.json`));
}

export interface ViewOptions {
  readonly json: boolean;
  readonly quiet: boolean;
  /** stdout is a terminal: draw the status line. */
  readonly tty: boolean;
  readonly columns?: number;
  /** Gets every line, timestamped, whatever the terminal shows. */
  readonly logfile?: Writable;
  readonly last?: Timings;
  /** Applied to every line and JSON event before it is written (secrets out). */
  readonly redact?: (text: string) => string;
  readonly now?: () => number;
}

export const stamp = (d = new Date()) => d.toISOString().replace("T", " ").slice(0, 23);

/** A line for an event in DIB's log style, or undefined for events with no line (progress). */
export function eventLine(e: BuildEvent): string | undefined {
  switch (e.type) {
    case "step-start":
      return `==> ${e.step} (${e.where})`;
    case "step-end":
      return `<== ${e.step} ${e.ok ? "done" : "FAILED"} in ${e.seconds.toFixed(1)} s`;
    case "output":
      return e.line;
    case "info":
      return e.message;
    case "artifact":
      return `wrote ${e.path} (${e.format}, ${(e.bytes / 1024 ** 2).toFixed(1)} MiB)`;
    case "progress":
      return undefined;
  }
}

/** The build's view on `out`: call onEvent for each event, close() at the end (clears the status line). */
export function createView(rawOut: Writable, o: ViewOptions) {
  const now = o.now ?? Date.now;
  const redact = o.redact ?? ((text: string) => text);
  const out = { write: (text: string) => rawOut.write(redact(text)) };
  const started = now();
  const done = new Set<string>();
  let current: { step: string; where: string; since: number; script?: string } | undefined;
  let progress: { done: number; total: number; since: number } | undefined;
  let drawn = false;
  let drawnAt = 0;
  const live = o.tty && !o.json;

  const clear = () => {
    if (drawn) out.write("\r\x1b[K");
    drawn = false;
  };
  let paused = false;
  const draw = () => {
    if (!live || !current || paused) return;
    const t = now();
    const progressS = progress ? (t - progress.since) / 1000 : 0;
    const status: Status = {
      step: current.step,
      where: current.where,
      elapsedS: (t - started) / 1000,
      ...(current.script ? { script: current.script } : {}),
      ...(o.last ? { remainingS: estimateRemaining(o.last, done, current.step, (t - current.since) / 1000) } : {}),
      ...(progress
        ? {
            progress: {
              done: progress.done,
              total: progress.total,
              ...(progressS > 0 ? { rate: progress.done / progressS } : {}),
            },
          }
        : {}),
    };
    out.write(`\r\x1b[K${statusLine(status, o.columns)}`);
    drawn = true;
    drawnAt = t;
  };
  const timer = live ? setInterval(draw, 1000) : undefined;
  timer?.unref();

  const onEvent = (e: BuildEvent) => {
    const line = eventLine(e);
    if (line !== undefined) o.logfile?.write(redact(`${stamp(new Date(now()))} | ${line}\n`));
    if (e.type === "step-start") {
      current = { step: e.step, where: e.where, since: now() };
      progress = undefined;
    } else if (e.type === "step-end") {
      done.add(e.step);
    } else if (e.type === "output" && current) {
      const running = /^dib-run-parts Running \S*\/([^/\s]+)$/.exec(e.line.trim());
      if (running?.[1]) current.script = running[1];
    } else if (e.type === "progress") {
      progress = { done: e.done, total: e.total, since: progress?.since ?? now() };
    }
    if (o.json) {
      out.write(`${JSON.stringify({ time: new Date(now()).toISOString(), ...e })}\n`);
      return;
    }
    // What the terminal shows: everything, or (with a log file or -q) the steps, outputs and infos worth a line.
    const shown = line !== undefined && !(o.quiet && e.type !== "artifact") && !(o.logfile && e.type === "output");
    if (shown) {
      clear();
      out.write(`${stamp(new Date(now()))} | ${line}\n`);
      draw();
    } else if (e.type === "step-start" || now() - drawnAt >= 250) {
      // Unshown events (script output with --logfile, progress) redraw at most four times a second.
      draw();
    }
  };
  const close = () => {
    if (timer) clearInterval(timer);
    clear();
  };
  /** While a shell has the terminal (`--break`), the status line stays away. */
  const pause = () => {
    paused = true;
    clear();
  };
  const resume = () => {
    paused = false;
    draw();
  };
  return { onEvent, close, pause, resume };
}
