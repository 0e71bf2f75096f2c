// An older QEMU than the host's runs the appliance: bullseye's QEMU 5.2, fetched from the configured mirror (signature,
// then SHA256, as for the appliance) and run extracted with `dpkg -x`, with bullseye's Xen and io_uring libraries it
// links against next to it. vmdib's floor is 4.2 (test/vm-pure/probe-qemu.ts); no release still on the mirror ships
// a QEMU between 4.2 and 5.2, so 5.2 is the oldest that can be run here. Cold boot, snapshot save and restore.
import { execFile } from "node:child_process";
import { chmod, copyFile, link, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import { resolveMirror } from "../../src/mirror.js";
import { cacheDir } from "../../src/paths.js";
import { shellQuote } from "../../src/shell.js";
import {
  type ArchiveOptions,
  DEFAULT_KEYRING,
  fetchDebs,
  loadPackages,
  loadRelease,
} from "../../src/vm/appliance/archive.js";
import { type ApplianceFiles, startAppliance } from "../../src/vm/machine.js";
import { findQemu } from "../../src/vm/probe.js";
import { collector, prepareVm } from "./helpers.js";

const run = promisify(execFile);

/** bullseye's qemu-system-x86 and the libraries it needs that bookworm no longer has (found with ldd). */
const PACKAGES = [
  "qemu-system-x86",
  "liburing1",
  "libxencall1",
  "libxendevicemodel1",
  "libxenevtchn1",
  "libxenforeignmemory1",
  "libxengnttab1",
  "libxenhypfs1",
  "libxenmisc4.14",
  "libxenstore3.0",
  "libxentoolcore1",
  "libxentoollog1",
  "libyajl2",
];

t.test("bullseye's QEMU 5.2 boots the appliance, saves and restores its snapshot", async (t) => {
  const vm = await prepareVm();
  const archive: ArchiveOptions = {
    mirror: resolveMirror(process.env),
    suite: "bullseye",
    arch: "amd64",
    cacheRoot: cacheDir(process.env),
    offline: false,
    keyring: DEFAULT_KEYRING,
  };
  let release: Awaited<ReturnType<typeof loadRelease>>;
  try {
    release = await loadRelease(archive);
  } catch (err) {
    // The day the mirror drops bullseye, this test has nothing to run; say so instead of failing.
    if (err instanceof VmdibError && /answered 404/.test(err.message)) {
      t.comment(`skipped: bullseye is not on the mirror any more: ${err.message}`);
      return;
    }
    throw err;
  }
  const { index } = await loadPackages(archive, release, "main");
  const pkgs = PACKAGES.map((name) => {
    const p = index.packages.get(name);
    if (!p) throw new Error(`bullseye has no ${name}`);
    return p;
  });
  const debs = await fetchDebs(pkgs, archive);

  const dir = await mkdtemp(join(cacheDir(process.env), "test-qemu-old-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, "root");
  for (const d of debs) await run("dpkg", ["-x", d.path, root]);
  const bin = join(dir, "bin");
  await mkdir(bin);
  const libs = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"].map((l) => join(root, l)).join(":");
  const wrapper = join(bin, "qemu-system-x86_64");
  await writeFile(
    wrapper,
    `#!/bin/sh\nLD_LIBRARY_PATH=${shellQuote(libs)} exec ${shellQuote(join(root, "usr/bin/qemu-system-x86_64"))} "$@"\n`,
  );
  await chmod(wrapper, 0o755);
  const qemu = await findQemu({ ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` });
  t.equal(qemu.binary, wrapper, "the old QEMU is the one found on PATH");
  t.match(qemu.version, /version 5\.2\./, qemu.version);

  // The appliance's files in a directory of their own: the snapshot is kept next to the initrd, and this one must
  // not take the place of the user's (two are kept per appliance).
  const files = join(dir, "appliance");
  await mkdir(files);
  const place = async (src: string) => {
    const dest = join(files, src.split("/").pop() ?? "file");
    await link(src, dest).catch(() => copyFile(src, dest));
    return dest;
  };
  const appliance: ApplianceFiles = {
    kernel: await place(vm.appliance.kernel),
    initrd: await place(vm.appliance.initrd),
    ...(vm.appliance.vmlinux ? { vmlinux: await place(vm.appliance.vmlinux) } : {}),
  };

  for (const expected of ["saved", "restored"] as const) {
    const m = await startAppliance({ appliance, qemu, accel: vm.accel, memoryMiB: 1024 });
    try {
      t.equal(m.start, expected, `start: ${expected}`);
      const out = collector();
      t.equal(await m.exec("cat /proc/sys/kernel/osrelease", { stdout: out.stream }), 0, "a command runs");
      t.match(out.text(), /^\d+\.\d+/);
    } finally {
      await m.stop();
    }
  }
});
