// Drives `vmdib ARGS` on a real terminal (node-pty), the way a person does: wait for text to appear, type keys.
import { join } from "node:path";
import pty from "node-pty";
import type { Test } from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

export function terminal(t: Test, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const term = pty.spawn(process.execPath, [join(PACKAGE_ROOT, "bin", "vmdib"), ...args], {
    name: "xterm",
    cols: 120,
    rows: 30,
    cwd: opts.cwd ?? process.cwd(),
    env: { ...process.env, TERM: "xterm", ...opts.env } as Record<string, string>,
  });
  let screen = "";
  let cursor = 0;
  term.onData((d) => {
    screen += d;
  });
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
  t.teardown(() => {
    try {
      term.kill("SIGKILL");
    } catch {
      // already gone
    }
  });
  /** Wait until the output after the cursor matches, then move the cursor past the match. */
  const expect = async (re: RegExp, ms: number) => {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(screen.slice(cursor));
      if (m) {
        cursor += m.index + m[0].length;
        return m;
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; screen so far:\n${screen.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  /** Type like a person: one key at a time. */
  const type = async (text: string) => {
    for (const ch of text) {
      term.write(ch);
      await new Promise((r) => setTimeout(r, 15));
    }
  };
  /** Everything the terminal received so far, escape sequences included. */
  const text = () => screen;
  return { term, exited, expect, type, text };
}
