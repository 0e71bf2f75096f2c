// Tests `vmdib shell` the way a person uses it: through a real terminal (node-pty), typing commands, resizing the
// window, pressing Ctrl-C, and leaving with `exit`.
import t from "tap";
import { terminal } from "../helpers/pty.js";
import { prepareVm } from "./helpers.js";

await prepareVm(); // build the appliance first, so the terminal session only waits for the boot

t.test("vmdib shell: typing, window size, Ctrl-C, exit", async (t) => {
  const { term, exited, expect, type } = terminal(t, ["shell"], { cwd: process.cwd() });
  term.resize(80, 24);

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
