// Fast end to end: the real CLI builds the tiny-os fixture (every phase, block device, outputs) in the helper VM,
// and the host checks what came out — partition table, filesystem label, files written by element scripts.
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
// sfdisk and debugfs live in sbin, which a normal user's PATH may lack.
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;

t.test("tiny-os builds to qcow2, raw and tar; the image holds what the elements wrote", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-tiny-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const run = await execa(
    VMDIB,
    ["build", "-n", "-o", "out/tiny", "-t", "qcow2,tar,raw", "--checksum", "tiny-os", "block-device-mbr", "manifests"],
    { cwd: dir, env: { ELEMENTS_PATH: ELEMENTS }, reject: false, all: true },
  );
  t.equal(run.exitCode, 0, run.all?.split("\n").slice(-30).join("\n"));
  t.match(run.stdout, /==> install \(chroot\)/, "phases report where they run");
  t.match(run.stdout, /dib-run-parts 50-tiny-marker +\d/, "DIB's per-script timing table");

  const raw = join(dir, "out", "tiny.raw");
  const table = JSON.parse((await execa("sfdisk", ["--json", raw], { env: { PATH } })).stdout).partitiontable;
  t.equal(table.label, "dos", "block-device-mbr made an MBR");
  t.equal(table.partitions.length, 1);
  t.equal(table.partitions[0].start, 2048);
  t.equal(table.partitions[0].bootable, true);

  const qcow = JSON.parse((await execa("qemu-img", ["info", "--output=json", join(dir, "out", "tiny.qcow2")])).stdout);
  t.equal(qcow.format, "qcow2");
  t.equal(qcow["virtual-size"], (await stat(raw)).size, "qcow2 and raw hold the same disk");
  t.ok(qcow["actual-size"] < qcow["virtual-size"] / 10, "qcow2 is compressed and sparse");

  // The root partition, cut out of the raw image, read with e2fsprogs: no root and no loop device needed.
  const part = join(dir, "root.img");
  await execa("dd", [`if=${raw}`, `of=${part}`, "bs=512", `skip=${table.partitions[0].start}`, "status=none"]);
  const blkid = (await execa("blkid", ["-o", "export", part], { env: { PATH } })).stdout;
  t.match(blkid, /LABEL=cloudimg-rootfs/);
  t.match(blkid, /TYPE=ext4/);
  const marker = (await execa("debugfs", ["-R", "cat /etc/vmdib-tiny", part], { env: { PATH } })).stdout;
  t.match(marker, /element=block-device-mbr manifests tiny-os/, "install.d ran in the chroot with IMAGE_ELEMENT");
  t.match(marker, /label=cloudimg-rootfs/, "DIB_ROOT_LABEL was known before root.d");
  const fstab = (await execa("debugfs", ["-R", "cat /etc/vmdib-tiny-fstab", part], { env: { PATH } })).stdout;
  t.match(fstab, /^LABEL=cloudimg-rootfs \/ ext4 /m, "finalise.d saw the fstab, by label");

  const tar = (await execa("tar", ["tf", join(dir, "out", "tiny.tar")])).stdout.split("\n");
  t.ok(tar.includes("./etc/vmdib-tiny"), "tar output holds the tree");
  t.notOk(
    tar.some((p) => p.startsWith("./proc/")),
    "no /proc contents",
  );

  const manifests = await readdir(join(dir, "out", "tiny.d", "dib-manifests"));
  t.ok(manifests.includes("dib_arguments"), "the manifests directory is published next to the image, as in DIB");

  const sum = (await readFile(join(dir, "out", "tiny.qcow2.sha256"), "utf8")).split(" ")[0];
  const real = (await execa("sha256sum", [join(dir, "out", "tiny.qcow2")])).stdout.split(" ")[0];
  t.equal(sum, real, "--checksum wrote a correct sha256");
  t.ok((await stat(join(dir, "out", "tiny.qcow2.md5"))).size > 0);
});

t.test("a failing element script fails the build, names it, and keeps the older image", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-fail-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await execa("mkdir", ["-p", join(dir, "out")]);
  await writeFile(join(dir, "out", "tiny.qcow2"), "an older image\n");
  const run = await execa("./bin/vmdib", ["build", "-n", "-o", join(dir, "out", "tiny"), "tiny-os", "tiny-fail"], {
    cwd: PACKAGE_ROOT,
    env: { ELEMENTS_PATH: ELEMENTS },
    reject: false,
  });
  t.equal(run.exitCode, 1);
  t.match(run.stderr, /step 'install' failed .*install\.d\/60-tiny-fail, exit code 3/);
  t.match(run.stderr, /tiny-fail says: something is wrong/, "the script's last lines");
  t.equal(await readFile(join(dir, "out", "tiny.qcow2"), "utf8"), "an older image\n", "older image untouched");
});
