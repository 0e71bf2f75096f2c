// Fast end to end: the real CLI builds the tiny-os fixture (every phase, block device, outputs) in the helper VM,
// and the host checks what came out — partition table, filesystem label, files written by element scripts — and
// hands every output format to a real consumer (qemu-img, tar, unsquashfs, skopeo, podman).
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
// sfdisk and debugfs live in sbin, which a normal user's PATH may lack.
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;
const DISK_FORMATS = { qcow2: "qcow2", vhd: "vpc", vmdk: "vmdk", vdi: "vdi" } as const;

/** The reason a consumer check cannot run here, or undefined when the tool is installed. */
async function missing(tool: string, pkg: string): Promise<string | undefined> {
  const found = await execa("sh", ["-c", `command -v ${tool}`], { env: { PATH }, reject: false });
  return found.exitCode === 0 ? undefined : `${tool} is not installed (Debian package ${pkg}; .ci/run installs it)`;
}

async function sha256Of(stream: NodeJS.ReadableStream): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

const ALL_TYPES = "qcow2,tar,raw,vhd,vmdk,vdi,tgz,squashfs,aci,docker";

t.test("tiny-os builds to every output type; the image holds what the elements wrote", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-tiny-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const run = await execa(
    VMDIB,
    // --no-cache: this build proves the phases themselves, so it never takes a cached tree (src/cache/tree.ts).
    [
      ...["build", "-n", "--no-cache", "-o", "out/tiny", "-t", ALL_TYPES, "--checksum"],
      ...["tiny-os", "block-device-mbr", "manifests"],
    ],
    { cwd: dir, env: { ELEMENTS_PATH: ELEMENTS }, reject: false, all: true },
  );
  t.equal(run.exitCode, 0, run.all?.split("\n").slice(-30).join("\n"));
  if (run.exitCode !== 0) return;
  t.match(run.stdout, /==> install \(chroot\)/, "phases report where they run");
  t.notOk(run.stdout.includes("\u001b"), "stdout is a pipe: no status line, no escape codes");
  t.match(run.stdout, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ==> root \(appliance\)$/m, "DIB's timestamped lines");
  t.match(run.stdout, /dib-run-parts 50-tiny-marker +\d/, "DIB's per-script timing table");
  const out = (ext: string) => join(dir, "out", `tiny.${ext}`);

  const raw = out("raw");
  const table = JSON.parse((await execa("sfdisk", ["--json", raw], { env: { PATH } })).stdout).partitiontable;
  t.equal(table.label, "dos", "block-device-mbr made an MBR");
  t.equal(table.partitions.length, 1);
  t.equal(table.partitions[0].start, 2048);
  t.equal(table.partitions[0].bootable, true);

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
  const rawBlocks = (await stat(raw)).blocks * 512;
  t.ok(rawBlocks < (await stat(raw)).size / 4, `raw image stays sparse (${rawBlocks} bytes allocated): trimmed`);

  // Every disk format: qemu-img reads it as that format, finds no corruption, and sees the raw image's content.
  for (const [type, format] of Object.entries(DISK_FORMATS)) {
    const file = out(type);
    const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", file])).stdout);
    t.equal(info.format, format, `${type}: qemu-img reads it as ${format}`);
    t.equal(info["virtual-size"], (await stat(raw)).size, `${type}: the raw image's size`);
    // vpc has no consistency check in qemu-img.
    if (type !== "vhd")
      t.equal((await execa("qemu-img", ["check", file], { reject: false })).exitCode, 0, `${type}: check`);
    const cmp = await execa("qemu-img", ["compare", "-f", "raw", "-F", format, raw, file], { reject: false });
    t.equal(cmp.exitCode, 0, `${type}: qemu-img compare with the raw image: ${cmp.stdout}`);
  }
  const qcow = JSON.parse((await execa("qemu-img", ["info", "--output=json", out("qcow2")])).stdout);
  t.ok(qcow["actual-size"] < qcow["virtual-size"] / 10, "qcow2 is compressed and sparse");

  const tar = (await execa("tar", ["tf", out("tar")])).stdout.split("\n");
  t.ok(tar.includes("./etc/vmdib-tiny"), "tar output holds the tree");
  t.ok(tar.includes("./proc/"), "mount points stay, empty");
  t.notOk(
    tar.some((p) => /^\.\/(proc|sys)\/./.test(p)),
    "no /proc or /sys contents",
  );
  const tgz = (await execa("tar", ["tzf", out("tgz")])).stdout.split("\n");
  t.same(tgz, tar, "tgz is the same tree, gzipped");

  const aci = (await execa("tar", ["tf", out("aci")])).stdout.split("\n");
  t.ok(aci.includes("rootfs/etc/vmdib-tiny"), "aci: the tree under rootfs/");
  t.ok(aci.includes("manifest"), "aci: a manifest at the top");
  const acManifest = JSON.parse((await execa("tar", ["xOf", out("aci"), "manifest"])).stdout);
  t.match(acManifest, {
    acKind: "ImageManifest",
    acVersion: "0.8.11",
    name: "tiny",
    labels: [
      { name: "arch", value: "amd64" },
      { name: "os", value: "linux" },
    ],
  });

  const noUnsquashfs = await missing("unsquashfs", "squashfs-tools");
  await t.test("squashfs: unsquashfs lists the tree", { skip: noUnsquashfs }, async (t) => {
    const list = (await execa("unsquashfs", ["-l", "-d", "", out("squash")], { env: { PATH } })).stdout.split("\n");
    t.ok(list.includes("/etc/vmdib-tiny"), "the marker file");
    t.notOk(
      list.some((p) => p.startsWith("/proc/")),
      "no /proc contents",
    );
  });

  // docker: the archive's own structure first (what docker load reads), then real consumers.
  const docker = out("docker.tar");
  const manifest = JSON.parse((await execa("tar", ["xOf", docker, "manifest.json"])).stdout);
  t.same(manifest[0].RepoTags, ["tiny:latest"], "tagged after the image name");
  const config = JSON.parse((await execa("tar", ["xOf", docker, manifest[0].Config])).stdout);
  t.match(config, { architecture: "amd64", os: "linux", rootfs: { type: "layers" } });
  const layer = execa("tar", ["xOf", docker, manifest[0].Layers[0]], { encoding: "buffer" });
  t.same(config.rootfs.diff_ids, [`sha256:${await sha256Of(layer.stdout)}`], "diff_ids: sha256 of the layer tar");
  await layer;

  await t.test(
    "docker: skopeo reads the archive and copies it to an OCI layout",
    { skip: await missing("skopeo", "skopeo") },
    async (t) => {
      const inspect = JSON.parse((await execa("skopeo", ["inspect", `docker-archive:${docker}`])).stdout);
      t.equal(inspect.Architecture, "amd64");
      t.same(inspect.Layers, config.rootfs.diff_ids);
      // copy verifies every blob against its digest.
      await execa("skopeo", ["copy", "--quiet", `docker-archive:${docker}`, `oci:${join(dir, "oci")}:tiny`]);
      const index = JSON.parse(await readFile(join(dir, "oci", "index.json"), "utf8"));
      t.equal(index.manifests.length, 1, "an OCI image");
    },
  );

  // A storage and runtime directory of the test's own: nothing lands in the user's podman storage.
  const runtime = join(dir, "podman-run");
  await mkdir(runtime, { mode: 0o700 });
  const podmanEnv = { XDG_RUNTIME_DIR: runtime, XDG_CONFIG_HOME: join(dir, "podman-config") };
  const podman = (...args: string[]) =>
    execa("podman", ["--root", join(dir, "podman-root"), "--runroot", runtime, "--storage-driver", "vfs", ...args], {
      env: podmanEnv,
      reject: false,
      all: true,
    });
  let noPodman = await missing("podman", "podman");
  if (!noPodman) {
    const info = await podman("info");
    if (info.exitCode !== 0) noPodman = `podman cannot run rootless here: ${info.all?.split("\n").slice(-1)[0]}`;
  }
  await t.test("docker: podman load accepts it and runs a program from it", { skip: noPodman }, async (t) => {
    t.teardown(async () => {
      await podman("unshare", "rm", "-rf", join(dir, "podman-root"));
      // Rootless podman leaves a pause process holding its user namespace; it is ours to end.
      const pid = Number(await readFile(join(runtime, "libpod", "tmp", "pause.pid"), "utf8").catch(() => ""));
      if (pid > 0) process.kill(pid, "SIGKILL");
    });
    const load = await podman("load", "-i", docker);
    t.equal(load.exitCode, 0, load.all);
    t.match(load.stdout, /Loaded image.*tiny:latest/);
    const cat = await podman("run", "--rm", "--network", "none", "tiny:latest", "/usr/bin/cat", "/etc/vmdib-tiny");
    // crun refuses hybrid cgroup hierarchies (some CI hosts): the archive is proven by the load, running needs more.
    const runtimeProblem = /OCI runtime error: (.*)/.exec(cat.all ?? "")?.[1];
    const skip = runtimeProblem && `podman cannot run containers on this host: ${runtimeProblem}`;
    await t.test("podman run: the image tree runs as a container", { skip }, async (t) => {
      t.equal(cat.exitCode, 0, cat.all);
      t.match(cat.stdout, /element=block-device-mbr manifests tiny-os/);
    });
  });

  const manifests = await readdir(join(dir, "out", "tiny.d", "dib-manifests"));
  t.ok(manifests.includes("dib_arguments"), "the manifests directory is published next to the image, as in DIB");

  for (const ext of ["qcow2", "docker.tar"]) {
    const sum = (await readFile(`${out(ext)}.sha256`, "utf8")).split(" ")[0];
    const real = (await execa("sha256sum", [out(ext)])).stdout.split(" ")[0];
    t.equal(sum, real, `--checksum wrote a correct sha256 for ${ext}`);
    const md5 = (await readFile(`${out(ext)}.md5`, "utf8")).split(" ")[0];
    t.equal(md5, (await execa("md5sum", [out(ext)])).stdout.split(" ")[0], `and a correct md5`);
  }
});

t.test("a legacy block-device.d hook that sets IMAGE_BLOCK_DEVICE replaces the YAML layout", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-legacy-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const run = await execa(VMDIB, ["build", "-n", "-o", "out/legacy", "-t", "raw", "tiny-os", "tiny-legacy-bd"], {
    cwd: dir,
    env: { ELEMENTS_PATH: ELEMENTS },
    reject: false,
    all: true,
  });
  t.equal(run.exitCode, 0, run.all?.split("\n").slice(-30).join("\n"));
  if (run.exitCode !== 0) return;
  t.notMatch(run.stdout, /blockdev-setup/, "no block-device layout was made");
  const raw = join(dir, "out", "legacy.raw");
  // The hook's filesystem spans the disk: no partition table, the filesystem at offset 0.
  const blkid = (await execa("blkid", ["-o", "export", raw], { env: { PATH } })).stdout;
  t.match(blkid, /LABEL=legacy-root/);
  t.match(blkid, /TYPE=ext4/);
  const marker = (await execa("debugfs", ["-R", "cat /etc/vmdib-tiny", raw], { env: { PATH } })).stdout;
  t.match(marker, /element=tiny-legacy-bd tiny-os|element=tiny-os tiny-legacy-bd/, "the tree was copied onto it");
  const fstab = (await execa("debugfs", ["-R", "cat /etc/vmdib-tiny-fstab", raw], { env: { PATH } })).stdout;
  t.match(fstab, /^LABEL=legacy-root \/ ext4/m, "finalise.d saw the hook's fstab");
});

t.test("no-final-image: only the tree outputs are planned (the disk is not converted)", async (t) => {
  const run = await execa(
    VMDIB,
    ["build", "--dry-run", "-o", "x", "-t", "qcow2,raw,tar", "tiny-os", "no-final-image"],
    {
      env: { ELEMENTS_PATH: ELEMENTS },
    },
  );
  const outputs = run.stdout.slice(run.stdout.indexOf("Outputs:"));
  t.match(outputs, /x\.tar/);
  t.notMatch(outputs, /x\.qcow2|x\.raw/);
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
