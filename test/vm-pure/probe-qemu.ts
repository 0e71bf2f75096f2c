// Tests findQemu (src/vm/probe.ts) against fake qemu-system-x86_64 scripts on PATH: a QEMU too old for the flags
// vmdib uses, one that does not run, and one new enough. (No QEMU on PATH: test/vm-pure/probe.ts.)
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import { findQemu, MIN_QEMU_VERSION, parseQemuVersion } from "../../src/vm/probe.js";

/** A directory holding a qemu-system-x86_64 shell script with `body`. */
async function fakeQemu(t: { teardown(fn: () => unknown): void }, body: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-fake-qemu-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bin = join(dir, "qemu-system-x86_64");
  await writeFile(bin, `#!/bin/sh\n${body}\n`);
  await chmod(bin, 0o755);
  return dir;
}

t.test("a QEMU too old for vmdib's flags: a clear error naming both versions, with upgrade hints", async (t) => {
  const dir = await fakeQemu(t, 'echo "QEMU emulator version 2.11.1(Debian 1:2.11+dfsg-1ubuntu7)"');
  const err = await findQemu({ PATH: dir }, "linux").catch((e: unknown) => e);
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /is QEMU 2\.11\.1, too old: vmdib needs QEMU 4\.2\.0 or newer/);
  t.match((err as VmdibError).hint, /apt-get install qemu-system-x86/);
  const mac = (await findQemu({ PATH: dir }, "darwin").catch((e: unknown) => e)) as VmdibError;
  t.match(mac.hint, /brew upgrade qemu/);
});

t.test("a QEMU that does not run: names the binary", async (t) => {
  const dir = await fakeQemu(t, "exit 127");
  const err = await findQemu({ PATH: dir }, "linux").catch((e: unknown) => e);
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /qemu-system-x86_64 does not run/);
  t.match((err as VmdibError).hint, /QEMU installation/);
});

t.test("a new enough QEMU, and one whose version cannot be read, are accepted", async (t) => {
  const ok = await fakeQemu(t, 'echo "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"');
  t.match(await findQemu({ PATH: ok }, "linux"), { version: /7\.2\.22/ });
  const odd = await fakeQemu(t, 'echo "QEMU (custom build)"');
  t.match(await findQemu({ PATH: odd }, "linux"), { version: "QEMU (custom build)" });
});

t.test("parseQemuVersion", async (t) => {
  t.same(parseQemuVersion("QEMU emulator version 4.2.1 (Debian 1:4.2-3ubuntu6.30)"), [4, 2, 1]);
  t.same(parseQemuVersion("QEMU emulator version 9.1"), [9, 1, 0]);
  t.equal(parseQemuVersion("nothing"), undefined);
  t.same(MIN_QEMU_VERSION, [4, 2, 0]);
});
