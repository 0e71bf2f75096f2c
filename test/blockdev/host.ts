import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { parseBlockDeviceConfig } from "../../src/blockdev/config.js";
import { planBlockDevice } from "../../src/blockdev/graph.js";
import { buildCleanupScript, buildSetupScript, buildUmountScript } from "../../src/blockdev/script.js";
import { MiB } from "../../src/blockdev/size.js";

// Runs generated scripts for real against a sparse file: needs root, loop devices and the tools (the appliance
// has them; a CI host run as a normal user skips this). Without device-mapper it uses the loop driver's own
// partition scan instead of kpartx, which is the only difference to the appliance.
const ok = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: "ignore" }).status === 0;
const isRoot = process.getuid?.() === 0;
const missing = ["sfdisk", "mkfs.ext4", "losetup", "partx", "blkid", "findmnt", "fstrim"].filter(
  (c) => !ok("sh", ["-c", `command -v ${c}`]),
);
const skip = !isRoot
  ? "needs root"
  : !existsSync("/dev/loop-control")
    ? "no loop devices"
    : missing.length
      ? `missing ${missing.join(" ")}`
      : false;
const partitions = ok("dmsetup", ["version"]) && ok("sh", ["-c", "command -v kpartx"]) ? "kpartx" : "partscan";

const CONFIGS: Record<string, string> = {
  // as DIB's block-device-mbr and block-device-gpt elements
  mbr: `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 100%
        mkfs:
          mount:
            mount_point: /
            fstab:
              options: "defaults"
              fsck-passno: 1
`,
  gpt: `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root
        flags: [ boot ]
        size: 100%
        mkfs:
          type: ext4
          mount:
            mount_point: /
            fstab:
              options: "defaults"
              fsck-passno: 1
`,
};

function run(script: string, env: NodeJS.ProcessEnv = process.env) {
  return spawnSync("bash", [script], { encoding: "utf8", env });
}

function attached(image: string): string {
  return spawnSync("losetup", ["--noheadings", "--output", "NAME", "--associated", image], {
    encoding: "utf8",
  }).stdout.trim();
}

for (const [name, yaml] of Object.entries(CONFIGS)) {
  t.test(`${name}: setup, write, umount for real (${partitions})`, { skip }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `vmdib-host-${name}-`));
    const plan = planBlockDevice(parseBlockDeviceConfig(yaml, name), {
      imageSizeBytes: 256 * MiB,
      imageDir: join(dir, "img"),
      mountBase: join(dir, "mnt"),
    });
    const files = {
      setup: buildSetupScript(plan, { exportsFile: join(dir, "exports"), partitions }),
      umount: buildUmountScript(plan, { partitions }),
      cleanup: buildCleanupScript(plan, { partitions }),
    };
    for (const [k, v] of Object.entries(files)) writeFileSync(join(dir, `${k}.sh`), v);
    const image = join(dir, "img", "image0.raw");
    t.teardown(() => {
      run(join(dir, "cleanup.sh"));
      rmSync(dir, { recursive: true, force: true });
    });

    const setup = run(join(dir, "setup.sh"));
    t.equal(setup.status, 0, "setup succeeds", { stderr: setup.stderr });
    const source = spawnSync("findmnt", ["-n", "-o", "SOURCE", join(dir, "mnt")], { encoding: "utf8" }).stdout.trim();
    t.match(source, partitions === "kpartx" ? /^\/dev\/mapper\/loop\d+p\d$/ : /^\/dev\/loop\d+p\d$/);
    t.equal(
      spawnSync("blkid", ["-o", "value", "-s", "LABEL", source], { encoding: "utf8" }).stdout.trim(),
      "cloudimg-rootfs",
    );
    t.equal(
      spawnSync("blkid", ["-o", "value", "-s", "UUID", source], { encoding: "utf8" }).stdout.trim(),
      plan.filesystems[0]?.uuid,
    );
    writeFileSync(join(dir, "mnt", "hello"), "hello\n");
    const exports = readFileSync(join(dir, "exports"), "utf8");
    t.match(exports, /^export IMAGE_BLOCK_DEVICE=\/dev\/loop\d+$/m);
    t.match(exports, /^export DIB_ROOT_LABEL=cloudimg-rootfs$/m);

    const umount = run(join(dir, "umount.sh"));
    t.equal(umount.status, 0, "umount succeeds", { stderr: umount.stderr });
    t.equal(attached(image), "", "no loop device left on the image");
    t.notOk(ok("mountpoint", ["-q", join(dir, "mnt")]), "nothing mounted");

    const table = JSON.parse(spawnSync("sfdisk", ["--json", image], { encoding: "utf8" }).stdout) as {
      partitiontable: { id: string; partitions: { start: number; size: number }[] };
    };
    const planned = plan.partitionTables[0];
    t.same(
      table.partitiontable.partitions.map((p) => [p.start, p.size]),
      planned?.partitions.map((p) => [p.startSector, p.sizeSectors]),
      "the table on disk is the planned one",
    );
    t.equal(table.partitiontable.id.toLowerCase(), planned?.diskId.toLowerCase(), "disk id from the seed");
    const du = spawnSync("du", ["-k", image], { encoding: "utf8" }).stdout.split("\t")[0];
    t.ok(Number(du) < 128 * 1024, `image stays sparse (${du} KiB allocated of 256 MiB)`);
  });

  t.test(`${name}: a setup that fails half-way is undone by cleanup`, { skip }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `vmdib-host-${name}-fail-`));
    const plan = planBlockDevice(parseBlockDeviceConfig(yaml, name), {
      imageSizeBytes: 64 * MiB,
      imageDir: join(dir, "img"),
      mountBase: join(dir, "mnt"),
    });
    writeFileSync(join(dir, "setup.sh"), buildSetupScript(plan, { exportsFile: join(dir, "exports"), partitions }));
    writeFileSync(join(dir, "cleanup.sh"), buildCleanupScript(plan, { partitions }));
    const bin = join(dir, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "mkfs"), "#!/bin/sh\necho 'mkfs: injected failure' >&2\nexit 1\n", { mode: 0o755 });
    t.teardown(() => {
      run(join(dir, "cleanup.sh"));
      rmSync(dir, { recursive: true, force: true });
    });
    const setup = run(join(dir, "setup.sh"), { ...process.env, PATH: `${bin}:${process.env.PATH}` });
    t.not(setup.status, 0, "setup fails");
    t.match(setup.stderr, /injected failure/);
    const image = join(dir, "img", "image0.raw");
    t.not(attached(image), "", "the loop device is still attached before cleanup");
    const cleanup = run(join(dir, "cleanup.sh"));
    t.equal(cleanup.status, 0, cleanup.stderr);
    t.equal(attached(image), "", "cleanup detached it");
    t.equal(run(join(dir, "cleanup.sh")).status, 0, "cleanup twice is fine");
  });
}
