// Tests src/vm/ready.ts without a VM: the console tail keeps what matters and drops kernel stack dumps; a missing
// log reads as empty.
import { rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { condenseConsole, tailFile } from "../../src/vm/ready.js";

const panic = `vmdib-init: starting at 8.12 s
vmdib-init: FATAL: no host key in fw_cfg
[   10.876569] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100
[   10.877631] CPU: 1 PID: 1 Comm: init Not tainted 6.1.0-57-amd64 #1  Debian 6.1.192-3
[   10.878760] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   10.879264] Call Trace:
[   10.887242]  <TASK>
[   10.887661]  dump_stack_lvl+0x44/0x5c
[   10.888346]  do_exit.cold+0x15/0x15
[   10.888916]  ? do_user_addr_fault+0x1b0/0x570
[   10.889521] RIP: 0033:0x7f9003a3f409
[   10.890367] Code: 00 4c 8b 05 f9 e9 0f 00
[   10.890921] RSP: 002b:00007ffd7d44c268 EFLAGS: 00000246 ORIG_RAX: 00000000000000e7
[   10.891391] RDX: 000000000000003c RSI: 00000000000000e7 RDI: 0000000000000001
[   10.892129]  </TASK>
[   10.906722] Kernel Offset: 0x2d600000 from 0xffffffff81000000
`;

t.test("condenseConsole keeps init's messages and the panic line, drops the dump", async (t) => {
  t.same(condenseConsole(panic.trim().split("\n")), [
    "vmdib-init: starting at 8.12 s",
    "vmdib-init: FATAL: no host key in fw_cfg",
    "[   10.876569] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
  ]);
});

t.test("tailFile strips control characters and returns the last lines; missing file → []", async (t) => {
  const f = join(tmpdir(), `vmdib-tail-${process.pid}.log`);
  t.teardown(() => rm(f, { force: true }));
  await writeFile(f, `one\n\x1b[2Jtwo\r\n\nthree\x07\n${panic}`);
  const tail = await tailFile(f, 4);
  t.same(tail, [
    "three",
    "vmdib-init: starting at 8.12 s",
    "vmdib-init: FATAL: no host key in fw_cfg",
    "[   10.876569] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
  ]);
  t.same(await tailFile(join(tmpdir(), "does-not-exist.log")), []);
});
