// Running the tools a benchmark measures: find them on PATH, run one to completion with its output lines timestamped,
// a timeout, and (on Linux) the peak resident memory of the process itself, read from /proc while it runs.
import { spawn } from "node:child_process";
import { constants as fsc } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { createInterface } from "node:readline";

/** One line of a tool's output and when it arrived (ms after the tool was spawned). */
export interface TimedLine {
  readonly t: number;
  readonly text: string;
}

export interface Ran {
  /** Exit code; null when a signal ended it. */
  readonly code: number | null;
  /** stdout and stderr lines, in arrival order. */
  readonly lines: TimedLine[];
  /** Spawn → exit. */
  readonly ms: number;
  /** Peak resident set size of the spawned process (not its children) in kB, when /proc tells. */
  readonly peakRssKb?: number;
  /** The timeout ended it. */
  readonly timedOut: boolean;
}

export interface RunOptions {
  readonly env: NodeJS.ProcessEnv;
  readonly timeoutMs: number;
  /** Default: the system's temporary directory. */
  readonly cwd?: string;
  /** Poll /proc/<pid>/status for VmHWM while it runs. */
  readonly rss?: boolean;
  /** Aborting stops the tool as a timeout does (SIGTERM, then SIGKILL). */
  readonly signal?: AbortSignal;
}

/** The first executable `cmd` in PATH (then in `extra`), or undefined. */
export async function which(
  cmd: string,
  env: NodeJS.ProcessEnv,
  extra: readonly string[] = [],
): Promise<string | undefined> {
  for (const dir of [...(env.PATH ?? "").split(delimiter), ...extra]) {
    if (!dir) continue;
    try {
      await access(join(dir, cmd), fsc.X_OK);
      return join(dir, cmd);
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** VmHWM ("peak resident set size") in kB from the text of /proc/<pid>/status (pure); undefined if absent. */
export function vmHwmKb(status: string): number | undefined {
  const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
  return m ? Number(m[1]) : undefined;
}

/** How often the peak RSS is read: VmHWM only grows, so the last read before exit is the peak up to then. */
const RSS_POLL_MS = 200;

/** How long a timed-out tool gets after SIGTERM (vmdib stops its VM and cleans up) before SIGKILL. */
const TERM_GRACE_MS = 30_000;

/** Run a command to completion. Rejects on spawn failure only: a non-zero exit is the caller's to judge. */
export function runTimed(cmd: string, args: readonly string[], o: RunOptions): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env: o.env, stdio: ["ignore", "pipe", "pipe"], cwd: o.cwd ?? tmpdir() });
    const lines: TimedLine[] = [];
    for (const s of [child.stdout, child.stderr]) {
      createInterface({ input: s }).on("line", (text) => lines.push({ t: performance.now() - t0, text }));
    }
    let peak: number | undefined;
    let polling = false;
    const poll =
      o.rss && child.pid !== undefined
        ? setInterval(() => {
            if (polling) return;
            polling = true;
            readFile(`/proc/${child.pid}/status`, "utf8")
              .then((s) => {
                const kb = vmHwmKb(s);
                if (kb !== undefined) peak = Math.max(peak ?? 0, kb);
              })
              .catch(() => undefined)
              .finally(() => {
                polling = false;
              });
          }, RSS_POLL_MS)
        : undefined;
    let timedOut = false;
    let killer: NodeJS.Timeout | undefined;
    // Our own child only, by pid: a hung run must not stall the whole bench. SIGTERM first, so that vmdib (or sudo,
    // which passes it on) can stop what it started.
    const stop = () => {
      if (killer) return;
      child.kill("SIGTERM");
      killer = setTimeout(() => child.kill("SIGKILL"), TERM_GRACE_MS);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, o.timeoutMs);
    if (o.signal?.aborted) stop();
    o.signal?.addEventListener("abort", stop, { once: true });
    const done = () => {
      o.signal?.removeEventListener("abort", stop);
      clearTimeout(timer);
      if (killer) clearTimeout(killer);
      if (poll) clearInterval(poll);
    };
    child.on("error", (err) => {
      done();
      reject(err);
    });
    child.on("close", (code) => {
      done();
      resolve({
        code,
        lines: lines.sort((a, b) => a.t - b.t),
        ms: performance.now() - t0,
        timedOut,
        ...(peak !== undefined ? { peakRssKb: peak } : {}),
      });
    });
  });
}

/** The last `n` lines of a run's output, joined for an error message. */
export function tail(r: Ran, n = 5): string {
  return r.lines
    .slice(-n)
    .map((l) => l.text)
    .join(" / ");
}

/** Run a command that must succeed (ten minutes at most). */
export async function mustRun(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv, cwd?: string) {
  const r = await runTimed(cmd, args, { env, timeoutMs: 10 * 60_000, ...(cwd ? { cwd } : {}) });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${tail(r)}`);
  return r;
}
