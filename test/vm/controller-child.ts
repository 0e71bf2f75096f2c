// Not a test: a controller process for test/vm/lifecycle.ts to SIGKILL. It boots an appliance WITHOUT setpriv's
// parent-death signal, prints QEMU's pid, and waits — so only the guest's lifeline can stop that QEMU.
// Run by tap as a file, it does nothing (VMDIB_TEST_CHILD is unset) and is reported as skipped.
import { bootMachine } from "./helpers.js";

if (process.env.VMDIB_TEST_CHILD === "1") {
  const machine = await bootMachine({ pdeathsig: false });
  process.stdout.write(`qemu-pid ${machine.pid} run-dir ${machine.runDir}\n`);
  await machine.exec("sleep 600");
}
