// `vmdib build --break` the way a person uses it: through a real terminal (node-pty). after-install stops with a root
// shell in the image's chroot, what is typed runs there, and `exit` lets the build go on to a finished image;
// after-error offers the shell where a script failed, and leaving it ends the build with that failure. The first
// build also checks the live status line a terminal gets (elapsed time, step, script), drawn under the log lines.
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { terminal } from "../helpers/pty.js";

const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

t.test("--break after-install: a shell in the chroot, then the build goes on", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-break-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const args = ["build", "-n", "-o", "out/b", "-t", "raw", "--break", "after-install", "tiny-os", "block-device-mbr"];
  const { exited, expect, type, text } = terminal(t, args, { cwd: dir, env: { ELEMENTS_PATH: ELEMENTS } });

  // The status line, redrawn in place: "\r ESC[K [m:ss]  STEP (WHERE)  SCRIPT ...". root.d's tiny script runs for
  // seconds, so the once-a-second redraw shows it.
  const status = await expect(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the terminal's erase-line sequence is what is checked
    /\r\u001b\[K\[(\d+):(\d\d)\] {2}root \(appliance\) {2}10-tiny-root/,
    900_000,
  );
  t.ok(
    Number(status[1]) * 60 + Number(status[2]) > 0,
    `the status line: elapsed, step, script (${status[0].slice(4)})`,
  );
  await expect(/break after-install: a root shell in the image's chroot/, 900_000);
  const beforeBreak = text().slice(0, text().indexOf("break after-install"));
  await expect(/# $/m, 120_000);
  t.pass("the build stops with a root prompt");
  // Every line up to the break, after the last erase-line: a whole log line — the status line is cleared before
  // each line is written, never left inside one.
  const lines = beforeBreak.split(/\r?\n/).map((l) => l.split("\r\u001b[K").at(-1) ?? "");
  const torn = lines.filter((l) => l !== "" && !/^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| |vmdib: )/.test(l));
  t.same(torn, [], "every line before the break is a timestamped log line");
  await type("cat /etc/vmdib-tiny; echo MARK-$((6*7))\r");
  await expect(/element=block-device-mbr tiny-os[\s\S]*MARK-42/, 60_000);
  t.pass("commands run in the chroot, where install.d's file is");
  await type("exit\r");
  await expect(/==> post-install \(chroot\)/, 120_000);
  t.pass("leaving the shell resumes the build");
  t.equal(await exited, 0, "the build finishes");
  t.ok((await stat(join(dir, "out", "b.raw"))).size > 0, "and writes its image");
});

t.test("--break after-error: a failing script offers a shell; leaving it ends the build with the error", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-break-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const args = ["build", "-n", "-o", "out/e", "-t", "raw", "--break", "after-error", "tiny-os", "tiny-fail"];
  const { exited, expect, type } = terminal(t, args, { cwd: dir, env: { ELEMENTS_PATH: ELEMENTS } });

  await expect(/break after-error: a root shell in the image's chroot; exit it and the build then stops/, 900_000);
  await expect(/# $/m, 120_000);
  await type("cat /etc/vmdib-tiny; echo MARK-$((6*7))\r");
  await expect(/element=tiny-fail tiny-os[\s\S]*MARK-42/, 60_000);
  t.pass("the shell is in the chroot of the failed step, with what the scripts before it made");
  await type("exit\r");
  await expect(/step 'install' failed with exit code \d+ \(install\.d\/60-tiny-fail, exit code 3\)/, 120_000);
  t.equal(await exited, 1, "the build ends with the script's failure");
});
