// The product, end to end: as the user running the tests, `vmdib build -o out/debian vm debian-minimal` makes a
// qcow2, and `vmdib test` boots it: a login prompt on the serial console, the console arguments on the kernel
// command line, and root mounted by label (not by the build's loop device).
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");

t.test("vm debian-minimal builds to a qcow2 that boots to a login prompt", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-debian-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const build = await execa(VMDIB, ["build", "-o", "out/debian", "vm", "debian-minimal"], {
    cwd: dir,
    reject: false,
    all: true,
  });
  t.equal(build.exitCode, 0, build.all?.split("\n").slice(-40).join("\n"));
  t.match(build.stdout, /wrote \S+\/out\/debian\.qcow2 \(qcow2/);
  t.match(build.stdout, /debootstrap stage one/, "debootstrap's first stage was made on the host");
  t.ok((await readdir(join(dir, "out", "debian.d"))).length > 0, "manifests next to the image, as DIB");

  const test = await execa(VMDIB, ["test", "out/debian.qcow2", "--json"], { cwd: dir, reject: false });
  const report = JSON.parse(test.stdout || "{}");
  const status = Object.fromEntries((report.checks ?? []).map((c: { id: string; status: string }) => [c.id, c.status]));
  t.match(
    status,
    { "login-prompt": "pass", "console-args": "pass", "root-by-label": "pass" },
    test.stdout + test.stderr,
  );
  t.equal(test.exitCode, 0);
  t.match(report.kernelCmdline ?? "", /root=LABEL=cloudimg-rootfs/);
  t.notMatch(report.kernelCmdline ?? "", /root=\/dev\/loop/);
});
