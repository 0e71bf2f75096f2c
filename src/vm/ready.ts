// Readiness: the guest says it is ready (a marker line on the lifeline), never inferred from a TCP connect — QEMU's
// user networking accepts and then resets connections while nothing listens. Failures carry hints and the
// serial console's tail.
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { VmdibError } from "../errors.js";
import { redactLog } from "../redact.js";
import { READY_MARKER } from "./qemu.js";

/** The last `lines` lines of a (possibly large or missing) log file, without control characters. */
export async function tailFile(path: string, lines = 25, maxBytes = 64 * 1024): Promise<string[]> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, "r");
    const { size } = await fh.stat();
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const text = buf
      .toString("utf8")
      // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping terminal control sequences is the point
      .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")
      // biome-ignore lint/suspicious/noControlCharactersInRegex: see above
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
    // Redacted line by line across the whole window, so a key's body is dropped even when the tail starts after
    // its BEGIN line.
    return condenseConsole(
      redactLog(text)
        .split("\n")
        .map((l) => l.trimEnd())
        .filter((l) => l.length > 0),
    ).slice(-lines);
  } catch {
    return [];
  } finally {
    await fh?.close();
  }
}

/**
 * Drop the kernel's register dumps and stack traces (after "Kernel panic" or an oops): they push the lines that
 * say what went wrong (ours, the kernel's first complaint) out of a short tail and mean nothing to a user.
 */
export function condenseConsole(lines: readonly string[]): string[] {
  const noise =
    /^\[\s*[\d.]+\]\s+(Call Trace:|<\/?TASK>|\? |[\w.]+\+0x[0-9a-f]+\/0x[0-9a-f]+|R[A-Z0-9]{1,2}: |Code: |CPU: \d+ PID|Hardware name:|Kernel Offset:)/;
  return lines.filter((l) => !noise.test(l));
}

/** How QEMU ended, as the machine saw it. */
export interface QemuExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** QEMU's own stderr (its complaints about options, ports, files). */
  readonly stderr: string;
}

export function describeExit(e: QemuExit): string {
  return e.signal ? `QEMU was killed by ${e.signal}` : `QEMU exited with status ${e.code}`;
}

export interface WaitForReadyOptions {
  /** QEMU's stdout: the host end of the lifeline. */
  readonly lifeline: Readable;
  /** Settles when QEMU exits. */
  readonly exited: Promise<QemuExit>;
  readonly timeoutMs: number;
  readonly serialLog: string;
  readonly accelNote: string;
  readonly signal?: AbortSignal;
  /** The line to wait for (default READY_MARKER; snapshot mode first waits for its snapshot point). */
  readonly marker?: string;
}

/** Resolves with the guest's uptime (seconds, from the marker) when the guest reports ready (prints the marker). */
export async function waitForReady(opts: WaitForReadyOptions): Promise<number> {
  const outcome = await new Promise<
    { kind: "ready"; uptime: number } | { kind: "exit"; exit: QemuExit } | { kind: "timeout" } | { kind: "abort" }
  >((resolve) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      const m = new RegExp(`${opts.marker ?? READY_MARKER} ([0-9.]+)`).exec(buf);
      if (m) finish({ kind: "ready", uptime: Number(m[1]) });
      if (buf.length > 4096) buf = buf.slice(-256);
    };
    const onAbort = () => finish({ kind: "abort" });
    const timer = setTimeout(() => finish({ kind: "timeout" }), opts.timeoutMs);
    let done = false;
    function finish(o: Parameters<typeof resolve>[0]) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      opts.lifeline.off("data", onData);
      opts.signal?.removeEventListener("abort", onAbort);
      resolve(o);
    }
    opts.lifeline.on("data", onData);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    opts.exited.then((exit) => finish({ kind: "exit", exit }));
  });

  if (outcome.kind === "ready") return outcome.uptime;
  if (outcome.kind === "abort") throw opts.signal?.reason ?? new VmdibError("interrupted");
  const tail = await tailFile(opts.serialLog);
  if (outcome.kind === "exit") {
    const qemuSays = outcome.exit.stderr.trim().split("\n").filter(Boolean).slice(-5);
    throw new VmdibError(`the appliance VM stopped before it was ready: ${describeExit(outcome.exit)}`, {
      context: [...qemuSays.map((l) => `qemu: ${l}`), ...(tail.length ? ["serial console:", ...tail] : [])],
      hint:
        tail.length === 0
          ? "QEMU failed before the guest printed anything; check the QEMU messages above"
          : "the guest's console is above; `vmdib appliance build` rebuilds the appliance if it is damaged",
    });
  }
  throw new VmdibError(`the appliance VM was not ready after ${Math.round(opts.timeoutMs / 1000)} s`, {
    context: tail.length ? ["serial console:", ...tail] : ["(the guest printed nothing on its console)"],
    hint: `accelerator: ${opts.accelNote}. A busy host or software emulation can be slow: raise the timeout with VMDIB_READY_TIMEOUT=<seconds>, or try --accel tcg if a hardware accelerator hangs`,
  });
}
