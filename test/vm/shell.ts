// Tests `vmdib shell` the way a person uses it: through a real terminal (node-pty), typing commands, resizing the
// window, pressing Ctrl-C, and leaving with `exit`.
import { join } from "node:path";
import pty from "node-pty";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { prepareVm } from "./helpers.js";

await prepareVm(); // build the appliance first, so the terminal session only waits for the boot

t.test("vmdib shell: typing, window size, Ctrl-C, exit", async (t) => {
  const term = pty.spawn(process.execPath, [join(PACKAGE_ROOT, "bin", "vmdib"), "shell"], {
    name: "xterm",
    cols: 80,
    rows: 24,
    cwd: process.cwd(),
    env: { ...process.env, TERM: "xterm" } as Record<string, string>,
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
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; screen so far:\n${screen.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const type = async (text: string) => {
    for (const ch of text) {
      term.write(ch);
      await new Promise((r) => setTimeout(r, 15));
    }
  };

  await expect(/# $/m, 300_000);
  t.pass("a root prompt appears");

  term.resize(100, 30);
  await new Promise((r) => setTimeout(r, 300));
  await type("stty size\r");
  await expect(/30 100/, 20_000);
  t.pass("the guest terminal follows the window size");

  await type("sleep 100\r");
  await new Promise((r) => setTimeout(r, 1000));
  term.write("\x03");
  await type("echo after-$((20+22))\r");
  await expect(/after-42/, 20_000);
  t.pass("Ctrl-C interrupts the guest's command, not vmdib");

  await type("echo hi; exit\r");
  await expect(/\bhi\b/, 20_000);
  t.equal(await exited, 0, "vmdib exits 0 when the shell exits");
});
