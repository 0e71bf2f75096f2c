// How a build's events reach the user. On a pipe: DIB's timestamped lines (`YYYY-MM-DD HH:MM:SS.mmm | ...`), no escape
// codes. With --json: one JSON object per event. On a terminal: the same lines with a live status line under them —
// step, script, elapsed time, an estimate from the last build of the same elements, a progress bar with bytes, rate
// and ETA for downloads (appliance packages, debootstrap's first stage) and conversion; on a pipe, downloads get a
// plain line every DOWNLOAD_LINE_INTERVAL_S. --logfile keeps the full log in a file while the terminal shows only the
// steps; -q shows only the summary.
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Writable } from "node:stream";
import type { BuildEvent } from "./execute.js";

/**
 * A batch of downloads on the host, before the helper VM runs (src/vm/appliance/archive.ts DownloadProgress with
 * what is downloaded for: "appliance packages", "debootstrap package index", ...).
 */
export interface DownloadEvent {
  readonly type: "download";
  readonly what: string;
  readonly done: number;
  readonly total: number;
  readonly files: number;
  readonly filesDone: number;
}

/** Everything the view shows: the build's events and the downloads before it. */
export type ViewEvent = BuildEvent | DownloadEvent;

/** On a pipe (and in --logfile), a running download gets a line this often. */
export const DOWNLOAD_LINE_INTERVAL_S = 10;

/** Step durations of a finished build, kept to estimate the next one of the same elements. */
export interface Timings {
  readonly steps: Readonly<Record<string, number>>;
  readonly total: number;
}

export interface Status {
  readonly step: string;
  /** Where the step runs (appliance, chroot, host); downloads leave it out. */
  readonly where?: string;
  readonly script?: string;
  /** Shown after the progress bar's sizes ("12/40 files"). */
  readonly detail?: string;
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
const mib = (b: number) => `${(b / 1024 ** 2).toFixed(b < 100 * 1024 ** 2 ? 1 : 0)} MiB`;
/** "12.3 of 45.6 MiB": both in the total's precision. */
const ofMib = (done: number, total: number) => {
  const digits = total < 100 * 1024 ** 2 ? 1 : 0;
  return `${(done / 1024 ** 2).toFixed(digits)} of ${(total / 1024 ** 2).toFixed(digits)} MiB`;
};

/**
 * "45% 12.3 of 45.6 MiB (12/40 files), 3.2 MiB/s, ETA 0:10" (pure): the numbers of a progress bar, or of a plain
 * progress line; `detail` goes in the parentheses.
 */
export function progressText(
  p: { readonly done: number; readonly total: number; readonly rate?: number },
  detail?: string,
): string {
  const f = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
  let text = `${(f * 100).toFixed(0)}% ${ofMib(p.done, p.total)}${detail ? ` (${detail})` : ""}`;
  if (p.rate && p.rate > 0) {
    text += `, ${mib(p.rate)}/s`;
    if (p.done < p.total) text += `, ETA ${clock((p.total - p.done) / p.rate)}`;
  }
  return text;
}

/** The line a download gets on a pipe while it runs, and when it is done (pure). */
export function downloadLine(d: Omit<DownloadEvent, "type">, seconds: number): string {
  const rate = seconds > 0 ? d.done / seconds : undefined;
  if (d.filesDone >= d.files && d.done >= d.total) {
    const files = d.files === 1 ? "1 file" : `${d.files} files`;
    return `downloaded ${d.what}: ${files}, ${mib(d.total)} in ${seconds.toFixed(1)} s${rate ? ` (${mib(rate)}/s)` : ""}`;
  }
  const files = d.files > 1 ? `${d.filesDone}/${d.files} files` : undefined;
  return `downloading ${d.what}: ${progressText({ done: d.done, total: d.total, ...(rate ? { rate } : {}) }, files)}`;
}

/** The status line (pure), cut to the terminal's width. */
export function statusLine(s: Status, columns = 80): string {
  const parts = [`[${clock(s.elapsedS)}]`, s.where ? `${s.step} (${s.where})` : s.step];
  if (s.script) parts.push(s.script);
  if (s.progress && s.progress.total > 0) {
    const f = Math.min(1, s.progress.done / s.progress.total);
    const width = 20;
    const bar = `${"#".repeat(Math.round(f * width)).padEnd(width, ".")}`;
    parts.push(`[${bar}] ${progressText(s.progress, s.detail)}`);
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

/** A line for an event in DIB's log style, or undefined for events with no line (progress; downloads: see the view). */
export function eventLine(e: ViewEvent): string | undefined {
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
    case "download":
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
  /** The running download batch: its latest numbers, when it started, when it last got a plain line. */
  let download: { event: DownloadEvent; since: number; lineAt: number; jsonAt: number } | undefined;
  let drawn = false;
  let drawnAt = 0;
  const live = o.tty && !o.json;

  const clear = () => {
    if (drawn) out.write("\r\x1b[K");
    drawn = false;
  };
  let paused = false;
  const rateSince = (bytes: number, since: number, t: number) => {
    const seconds = (t - since) / 1000;
    return seconds > 0 && bytes > 0 ? { rate: bytes / seconds } : {};
  };
  const status = (t: number): Status | undefined => {
    if (download) {
      const d = download.event;
      return {
        step: `downloading ${d.what}`,
        elapsedS: (t - started) / 1000,
        progress: { done: d.done, total: d.total, ...rateSince(d.done, download.since, t) },
        ...(d.files > 1 ? { detail: `${d.filesDone}/${d.files} files` } : {}),
      };
    }
    if (!current) return undefined;
    return {
      step: current.step,
      where: current.where,
      elapsedS: (t - started) / 1000,
      ...(current.script ? { script: current.script } : {}),
      ...(o.last ? { remainingS: estimateRemaining(o.last, done, current.step, (t - current.since) / 1000) } : {}),
      ...(progress
        ? { progress: { done: progress.done, total: progress.total, ...rateSince(progress.done, progress.since, t) } }
        : {}),
    };
  };
  const draw = () => {
    if (!live || paused) return;
    const t = now();
    const s = status(t);
    if (!s) return;
    out.write(`\r\x1b[K${statusLine(s, o.columns)}`);
    drawn = true;
    drawnAt = t;
  };
  const timer = live ? setInterval(draw, 1000) : undefined;
  timer?.unref();

  /** A line for a download event: on a pipe (and in the log file) every DOWNLOAD_LINE_INTERVAL_S; always at the end. */
  const downloadEventLine = (e: DownloadEvent): string | undefined => {
    const t = now();
    if (!download || download.event.what !== e.what) download = { event: e, since: t, lineAt: t, jsonAt: -Infinity };
    download.event = e;
    const seconds = (t - download.since) / 1000;
    if (e.filesDone >= e.files && e.done >= e.total) {
      download = undefined;
      return downloadLine(e, seconds);
    }
    if ((!live || o.logfile) && t - download.lineAt >= DOWNLOAD_LINE_INTERVAL_S * 1000) {
      download.lineAt = t;
      return downloadLine(e, seconds);
    }
    return undefined;
  };

  const onEvent = (e: ViewEvent) => {
    // A download's JSON events at most once a second (and its first and last), however often the archive reports.
    const jsonSkip =
      o.json &&
      e.type === "download" &&
      download?.event.what === e.what &&
      e.done < e.total &&
      now() - download.jsonAt < 1000;
    const line = e.type === "download" ? downloadEventLine(e) : eventLine(e);
    if (line !== undefined) o.logfile?.write(redact(`${stamp(new Date(now()))} | ${line}\n`));
    if (e.type === "step-start") {
      current = { step: e.step, where: e.where, since: now() };
      progress = undefined;
      // A download that never reported its end (it failed, and the build went on without it) leaves the line.
      download = undefined;
    } else if (e.type === "step-end") {
      done.add(e.step);
    } else if (e.type === "output" && current) {
      const running = /^dib-run-parts Running \S*\/([^/\s]+)$/.exec(e.line.trim());
      if (running?.[1]) current.script = running[1];
    } else if (e.type === "progress") {
      progress = { done: e.done, total: e.total, since: progress?.since ?? now() };
    }
    if (o.json) {
      if (jsonSkip) return;
      if (e.type === "download" && download) download.jsonAt = now();
      out.write(`${JSON.stringify({ time: new Date(now()).toISOString(), ...e })}\n`);
      return;
    }
    // What the terminal shows: everything, or (with a log file or -q) the steps, outputs and infos worth a line.
    // A running download's periodic lines are for pipes and the log file: the terminal has the status line.
    const periodic = e.type === "download" && download !== undefined;
    const shown =
      line !== undefined &&
      !(o.quiet && e.type !== "artifact") &&
      !(o.logfile && e.type === "output") &&
      !(live && periodic);
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

/**
 * Download progress on a plain stream, outside a build's view (`vmdib appliance build`, `vmdib run -v`): on a
 * terminal a bar redrawn in place, else a line every DOWNLOAD_LINE_INTERVAL_S; a line at the end of each batch.
 * Other lines go through line() so they never land inside the bar.
 */
export function createDownloadMeter(
  out: Writable & { isTTY?: boolean; columns?: number },
  prefix = "",
  now: () => number = Date.now,
) {
  const tty = out.isTTY === true;
  let batch: { what: string; since: number; lineAt: number; drawAt: number; last: string } | undefined;
  let drawn = false;
  const clear = () => {
    if (drawn) out.write("\r\x1b[K");
    drawn = false;
  };
  const progress = (p: Omit<DownloadEvent, "type">) => {
    const t = now();
    if (batch?.what !== p.what) batch = { what: p.what, since: t, lineAt: t, drawAt: -Infinity, last: "" };
    const seconds = (t - batch.since) / 1000;
    if (p.filesDone >= p.files && p.done >= p.total) {
      clear();
      out.write(`${prefix}${downloadLine(p, seconds)}\n`);
      batch = undefined;
      return;
    }
    if (tty) {
      if (t - batch.drawAt < 250) return;
      batch.drawAt = t;
      const rate = seconds > 0 && p.done > 0 ? { rate: p.done / seconds } : {};
      batch.last = statusLine(
        {
          step: `downloading ${p.what}`,
          elapsedS: seconds,
          progress: { done: p.done, total: p.total, ...rate },
          ...(p.files > 1 ? { detail: `${p.filesDone}/${p.files} files` } : {}),
        },
        out.columns,
      );
      out.write(`\r\x1b[K${batch.last}`);
      drawn = true;
    } else if (t - batch.lineAt >= DOWNLOAD_LINE_INTERVAL_S * 1000) {
      batch.lineAt = t;
      out.write(`${prefix}${downloadLine(p, seconds)}\n`);
    }
  };
  const line = (text: string) => {
    const redraw = drawn;
    clear();
    out.write(`${text}\n`);
    if (redraw && batch) {
      out.write(`\r\x1b[K${batch.last}`);
      drawn = true;
    }
  };
  return { progress, line, close: clear };
}
