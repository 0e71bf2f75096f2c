// Tests for src/progress.ts: the status line, the estimate, and what each kind of view writes.
import { Writable } from "node:stream";
import t from "tap";
import type { BuildEvent } from "../src/execute.js";
import {
  createDownloadMeter,
  createView,
  type DownloadEvent,
  downloadLine,
  estimateRemaining,
  statusLine,
  timingsKey,
} from "../src/progress.js";

const ESC = "\u001b";

class Sink extends Writable {
  text = "";
  override _write(chunk: Buffer, _e: BufferEncoding, done: () => void) {
    this.text += chunk.toString();
    done();
  }
}

const EVENTS: BuildEvent[] = [
  { type: "step-start", step: "install", where: "chroot" },
  { type: "output", step: "install", stream: "stdout", line: "dib-run-parts Running /tmp/in_target.d/install.d/50-x" },
  { type: "output", step: "install", stream: "stdout", line: "secret=hunter2" },
  { type: "step-end", step: "install", seconds: 5, ok: true },
  { type: "step-start", step: "convert qcow2", where: "host" },
  { type: "progress", step: "convert qcow2", done: 512 * 1024 ** 2, total: 1024 ** 3 },
  { type: "step-end", step: "convert qcow2", seconds: 2, ok: true },
  { type: "artifact", path: "out/x.qcow2", format: "qcow2", bytes: 1024 ** 2 },
];

t.test("status line: elapsed, step, script, progress bar with rate, estimate; cut to the width", async (t) => {
  const line = statusLine(
    {
      step: "convert qcow2",
      where: "host",
      elapsedS: 75,
      remainingS: 3600 + 61,
      progress: { done: 512 * 1024 ** 2, total: 1024 ** 3, rate: 100 * 1024 ** 2 },
    },
    200,
  );
  t.equal(
    line,
    "[1:15]  convert qcow2 (host)  [##########..........] 50% 512 of 1024 MiB, 100 MiB/s, ETA 0:05  about 1:01:01 left",
  );
  t.equal(statusLine({ step: "install", where: "chroot", script: "50-x", elapsedS: 3 }, 20).length, 19);
});

t.test("estimate: the last build's steps not yet run, plus what is left of this one", async (t) => {
  const last = { steps: { root: 600, install: 300, "convert qcow2": 20 }, total: 920 };
  t.equal(estimateRemaining(last, new Set(["root"]), "install", 100), 220);
  t.equal(estimateRemaining(last, new Set(["root"]), "install", 400), 20, "a slow step never counts below zero");
  t.equal(timingsKey(["vm", "debian-minimal"], ["qcow2"]), timingsKey(["debian-minimal", "vm"], ["qcow2"]));
});

t.test("pipe: timestamped lines, no escape codes; secrets redacted", async (t) => {
  const out = new Sink();
  const view = createView(out, { json: false, quiet: false, tty: false, redact: (s) => s.replace("hunter2", "***") });
  for (const e of EVENTS) view.onEvent(e);
  view.close();
  t.notOk(out.text.includes(ESC), "no escape codes");
  t.match(out.text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ==> install \(chroot\)$/m);
  t.match(out.text, /\| secret=\*\*\*$/m);
  t.notMatch(out.text, /hunter2/);
  t.match(out.text, /\| wrote out\/x\.qcow2 \(qcow2, 1\.0 MiB\)$/m);
});

t.test("terminal: the same lines with a status line drawn under them and cleared at the end", async (t) => {
  const out = new Sink();
  let clock = 0;
  const view = createView(out, {
    json: false,
    quiet: false,
    tty: true,
    columns: 120,
    now: () => clock,
    last: { steps: { install: 10, "convert qcow2": 4 }, total: 14 },
  });
  view.onEvent(EVENTS[0] as BuildEvent);
  clock = 2000;
  view.onEvent(EVENTS[1] as BuildEvent);
  t.ok(out.text.endsWith(`\r${ESC}[K[0:02]  install (chroot)  50-x  about 0:12 left`), "step, script, estimate");
  for (const e of EVENTS.slice(2, 5)) view.onEvent(e);
  clock = 3000;
  view.onEvent(EVENTS[5] as BuildEvent);
  t.match(out.text, /\[##########\.{10}\] 50%/, "conversion progress");
  view.close();
  t.ok(out.text.endsWith(`\r${ESC}[K`), "the status line is cleared");
});

t.test(
  "--logfile keeps every line; the terminal gets no script output. -q: only artifacts. --json: events",
  async (t) => {
    const out = new Sink();
    const log = new Sink();
    const view = createView(out, { json: false, quiet: false, tty: false, logfile: log });
    for (const e of EVENTS) view.onEvent(e);
    t.match(log.text, /\| secret=hunter2$/m);
    t.notMatch(out.text, /secret=/);
    t.match(out.text, /==> install/);

    const quiet = new Sink();
    const q = createView(quiet, { json: false, quiet: true, tty: false });
    for (const e of EVENTS) q.onEvent(e);
    t.same(quiet.text.trim().split("\n").length, 1);
    t.match(quiet.text, /wrote out\/x\.qcow2/);

    const json = new Sink();
    const j = createView(json, { json: true, quiet: false, tty: true });
    for (const e of EVENTS) j.onEvent(e);
    j.close();
    const events = json.text
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    t.equal(events.length, EVENTS.length, "one JSON object per event, no status line");
    t.match(events[5], { type: "progress", done: 512 * 1024 ** 2, total: 1024 ** 3 });
  },
);

const MiB = 1024 ** 2;
/** 40 appliance packages, 40 MiB, arriving at 2 MiB/s: an event every 250 ms, as src/vm/appliance/archive.ts reports. */
function downloadEvents(): { at: number; e: DownloadEvent }[] {
  const out: { at: number; e: DownloadEvent }[] = [];
  const total = 40 * MiB;
  for (let ms = 0; ms <= 20_000; ms += 250) {
    const done = Math.min(total, (ms / 1000) * 2 * MiB);
    const filesDone = Math.floor(done / MiB);
    out.push({ at: ms, e: { type: "download", what: "appliance packages", done, total, files: 40, filesDone } });
  }
  return out;
}

t.test(
  "downloadLine: x of y MiB, rate, ETA and files while running; count, size, time and rate at the end",
  async (t) => {
    const d = { what: "appliance packages", total: 40 * MiB, files: 40 };
    t.equal(
      downloadLine({ ...d, done: 10 * MiB, filesDone: 9 }, 5),
      "downloading appliance packages: 25% 10.0 of 40.0 MiB (9/40 files), 2.0 MiB/s, ETA 0:15",
    );
    t.equal(
      downloadLine({ ...d, done: 40 * MiB, filesDone: 40 }, 20),
      "downloaded appliance packages: 40 files, 40.0 MiB in 20.0 s (2.0 MiB/s)",
    );
    t.equal(
      downloadLine({ what: "package index", done: 0, total: 9 * MiB, files: 1, filesDone: 0 }, 0),
      "downloading package index: 0% 0.0 of 9.0 MiB",
    );
  },
);

t.test("a download on a terminal: a progress bar with bytes, rate, ETA and files before any step", async (t) => {
  const out = new Sink();
  let clock = 0;
  const view = createView(out, { json: false, quiet: false, tty: true, columns: 200, now: () => clock });
  for (const { at, e } of downloadEvents()) {
    clock = at;
    view.onEvent(e);
    if (at === 5000) {
      t.ok(
        out.text.endsWith(
          `\r${ESC}[K[0:05]  downloading appliance packages  [#####...............] 25% 10.0 of 40.0 MiB (10/40 files), 2.0 MiB/s, ETA 0:15`,
        ),
        out.text.slice(-160),
      );
    }
  }
  t.notMatch(out.text, /\| downloading /, "no plain progress lines on a terminal");
  t.match(out.text, /\| downloaded appliance packages: 40 files, 40\.0 MiB in 20\.0 s \(2\.0 MiB\/s\)\n/);
  view.close();
});

t.test(
  "a download that never ends (it failed; the build went on) gives the status line back at the next step",
  async (t) => {
    const out = new Sink();
    const view = createView(out, { json: false, quiet: false, tty: true, columns: 200, now: () => 5000 });
    view.onEvent({ type: "download", what: "debootstrap packages", done: 1, total: 10, files: 2, filesDone: 0 });
    t.match(out.text, /downloading debootstrap packages/);
    view.onEvent({ type: "step-start", step: "prepare", where: "appliance" });
    t.ok(out.text.endsWith(`\r${ESC}[K[0:00]  prepare (appliance)`), "the step, not the dead download");
    view.close();
  },
);

t.test(
  "a download on a pipe: a plain line every 10 s and one at the end, no escape codes; --json: one a second",
  async (t) => {
    const out = new Sink();
    let clock = 0;
    const view = createView(out, { json: false, quiet: false, tty: false, now: () => clock });
    for (const { at, e } of downloadEvents()) {
      clock = at;
      view.onEvent(e);
    }
    view.close();
    t.notOk(out.text.includes(ESC));
    const lines = out.text.trim().split("\n");
    t.equal(lines.length, 2, lines.join("\n"));
    t.match(
      lines[0],
      /\| downloading appliance packages: 50% 20\.0 of 40\.0 MiB \(20\/40 files\), 2\.0 MiB\/s, ETA 0:10$/,
    );
    t.match(lines[1], /\| downloaded appliance packages: 40 files/);

    const json = new Sink();
    clock = 0;
    const j = createView(json, { json: true, quiet: false, tty: false, now: () => clock });
    for (const { at, e } of downloadEvents()) {
      clock = at;
      j.onEvent(e);
    }
    const events = json.text
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as DownloadEvent);
    t.equal(events.length, 21, "the first, one a second, the last");
    t.match(events.at(-1), { type: "download", done: 40 * MiB, filesDone: 40 });

    const quiet = new Sink();
    const q = createView(quiet, { json: false, quiet: true, tty: false });
    for (const { e } of downloadEvents()) q.onEvent(e);
    t.equal(quiet.text, "", "-q: no download lines");
  },
);

t.test("createDownloadMeter: a bar on a terminal with other lines above it; plain lines on a pipe", async (t) => {
  const tty = Object.assign(new Sink(), { isTTY: true, columns: 200 });
  let clock = 0;
  const meter = createDownloadMeter(tty, "vmdib: ", () => clock);
  for (const { at, e } of downloadEvents()) {
    clock = at;
    meter.progress(e);
    if (at === 5000) meter.line("vmdib:   fetched linux-image (60.0 MB)");
  }
  t.ok(
    tty.text.includes(`\r${ESC}[Kvmdib:   fetched linux-image (60.0 MB)\n\r${ESC}[K[0:05]  downloading appliance`),
    "the line above, the bar redrawn under it",
  );
  t.ok(tty.text.endsWith("\r\u001b[Kvmdib: downloaded appliance packages: 40 files, 40.0 MiB in 20.0 s (2.0 MiB/s)\n"));

  const pipe = new Sink();
  clock = 0;
  const plain = createDownloadMeter(pipe, "vmdib: ", () => clock);
  for (const { at, e } of downloadEvents()) {
    clock = at;
    plain.progress(e);
  }
  t.notOk(pipe.text.includes(ESC));
  t.equal(pipe.text.trim().split("\n").length, 2);
});
