// Tests the runner plumbing of src/vm/image-boot.ts (spawn, console watch, checks, report, cleanup) with a stand-in
// guest: the cached appliance kernel booted directly with a tiny initramfs (dash, sleep, libc taken from the
// appliance) whose /init prints a login prompt. Not an image test: test/vm/image-boot.ts boots real images.
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { CpioWriter, parseCpio, S_IFCHR, S_IFDIR, S_IFREG } from "../../src/vm/appliance/cpio.js";
import { listAppliances } from "../../src/vm/appliance/index.js";
import { testImage } from "../../src/vm/image-boot.js";

/** Files of the appliance initramfs the stand-in needs: the merged-/usr links, dash, sleep and the C library. */
const KEEP =
  /^(bin|sbin|lib|lib64|usr|usr\/bin|usr\/lib|usr\/lib64|usr\/lib\/x86_64-linux-gnu|usr\/bin\/(dash|sh|sleep)|usr\/lib64\/ld-linux-x86-64\.so\.2|usr\/lib\/x86_64-linux-gnu\/(ld-linux-x86-64\.so\.2|libc\.so\.6))$/;

function standInInitrd(applianceInitrd: string, out: string, init: string): void {
  const entries = parseCpio(readFileSync(applianceInitrd)).filter((e) => KEEP.test(e.name));
  const fd = openSync(out, "w");
  try {
    const w = new CpioWriter(fd);
    for (const e of entries) w.add({ ...e, ino: undefined, nlink: 1 });
    // Without /dev/console the kernel cannot give /init a console, and its prompt would go nowhere.
    w.add({ name: "dev", mode: S_IFDIR | 0o755 });
    w.add({ name: "dev/console", mode: S_IFCHR | 0o600, rdevmajor: 5, rdevminor: 1 });
    w.add({ name: "init", mode: S_IFREG | 0o755, data: Buffer.from(init) });
    w.finish();
  } finally {
    closeSync(fd);
  }
}

const appliance = (await listAppliances(process.env)).find((a) => a.manifest);
if (!appliance?.manifest) {
  t.plan(0, "no cached appliance: run `vmdib appliance build` first (the stand-in guest borrows its kernel and libc)");
} else {
  const kernel = join(appliance.dir, appliance.manifest.kernel.file);
  const applianceInitrd = join(appliance.dir, appliance.manifest.initrd.file);
  const work = mkdtempSync(join(tmpdir(), "vmdib-image-plumbing-"));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const initrd = join(work, "initrd.img");
  standInInitrd(
    applianceInitrd,
    initrd,
    "#!/bin/sh\necho\necho 'Debian GNU/Linux 12 standin ttyS0'\necho\nprintf 'standin login: '\nexec sleep 3600\n",
  );
  // A tiny raw "image": attached as the virtio disk like a real one, never touched (-snapshot).
  const image = join(work, "disk.raw");
  writeFileSync(image, Buffer.alloc(1 << 20));
  const base = "console=ttyS0 panic=-1 tsc=reliable no_timer_check cryptomgr.notests 8250.nr_uarts=1 edd=off";

  t.test("a guest that prints a login prompt passes the console checks", async (t) => {
    // A private TMPDIR: the run directory (serial log, -snapshot overlay) must be gone afterwards.
    const runTmp = join(work, "tmp");
    mkdirSync(runTmp);
    const report = await testImage({
      image,
      env: { ...process.env, TMPDIR: runTmp },
      cpus: 1,
      memoryMiB: 256,
      timeoutMs: 120_000,
      direct: { kernel, initrd, append: `${base} root=LABEL=cloudimg-rootfs` },
    });
    t.equal(report.format, "raw");
    t.equal(report.passed, true, JSON.stringify(report.checks));
    t.same(
      report.checks.map((c) => [c.id, c.status]),
      [
        ["login-prompt", "pass"],
        ["console-args", "pass"],
        ["root-by-label", "pass"],
        ["ssh", "skip"],
      ],
    );
    t.match(report.kernelCmdline, /root=LABEL=cloudimg-rootfs/);
    t.ok(report.loginPromptSeconds !== null && report.loginPromptSeconds < 120);
    t.equal(report.serialLogCopy, null);
    t.same(await readdir(runTmp), [], "the run directory is removed");
    // A controller that died by SIGKILL left a run directory behind; the next run sweeps it, and leaves a live one.
    mkdirSync(join(runTmp, "vmdib-image-dead"));
    writeFileSync(join(runTmp, "vmdib-image-dead", "controller.pid"), "999999999\n");
    mkdirSync(join(runTmp, "vmdib-image-live"));
    writeFileSync(join(runTmp, "vmdib-image-live", "controller.pid"), `${process.pid}\n`);
    await testImage({ image, env: { ...process.env, TMPDIR: runTmp }, timeoutMs: 1, cpus: 1, memoryMiB: 64 });
    t.same(await readdir(runTmp), ["vmdib-image-live"], "stale run directories are swept");
  });

  t.test("a loop-device root fails with the reason, and the console is kept", async (t) => {
    const report = await testImage({
      image,
      cpus: 1,
      memoryMiB: 256,
      timeoutMs: 120_000,
      direct: {
        kernel,
        initrd,
        append: `${base} root=/dev/loop0p1`,
      },
    });
    t.equal(report.passed, false);
    const byId = Object.fromEntries(report.checks.map((c) => [c.id, c]));
    t.equal(byId["login-prompt"]?.status, "pass");
    t.equal(byId["root-by-label"]?.status, "fail");
    t.match(byId["root-by-label"]?.detail, /loop device/);
    t.ok(report.serialTail.length > 0, "the serial tail is in the report");
    t.ok(report.serialLogCopy && existsSync(report.serialLogCopy), "the whole console is kept on failure");
  });

  t.test("a guest that never prompts fails at the timeout, and QEMU is stopped", async (t) => {
    const quiet = join(work, "quiet.img");
    standInInitrd(applianceInitrd, quiet, "#!/bin/sh\nexec sleep 3600\n");
    const report = await testImage({
      image,
      cpus: 1,
      memoryMiB: 256,
      timeoutMs: 15_000,
      direct: { kernel, initrd: quiet, append: `${base} root=LABEL=x` },
    });
    t.equal(report.passed, false);
    t.equal(report.checks[0]?.status, "fail");
    t.match(report.checks[0]?.detail, /no login prompt within 15 s/);
    t.ok(report.totalSeconds >= 15 && report.totalSeconds < 40);
  });

  t.test("a guest that panics ends QEMU (-no-reboot) and fails at once", async (t) => {
    const report = await testImage({
      image,
      cpus: 1,
      memoryMiB: 256,
      timeoutMs: 120_000,
      // No initramfs and no root device: the kernel panics, panic=-1 reboots, -no-reboot ends QEMU.
      direct: { kernel, append: `${base} root=LABEL=nothing` },
    });
    t.equal(report.passed, false);
    t.match(report.checks[0]?.detail, /QEMU exited with status 0 before a login prompt/);
    t.ok(report.totalSeconds < 60, `took ${report.totalSeconds} s`);
    t.ok(report.serialTail.some((l) => /panic/i.test(l)));
  });
}
