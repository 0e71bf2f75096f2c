// Runs src/blockdev's generated scripts in the real appliance (one boot): kpartx, sfdisk, LVM without udev, mkfs
// (ext3/ext4/vfat/btrfs), mounts in order, exports, umount, and cleanup after a failure half-way.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { parseBlockDeviceConfig } from "../../src/blockdev/config.js";
import { planBlockDevice } from "../../src/blockdev/graph.js";
import { buildCleanupScript, buildSetupScript, buildUmountScript } from "../../src/blockdev/script.js";
import { MiB } from "../../src/blockdev/size.js";
import { shellQuote } from "../../src/shell.js";
import type { Machine } from "../../src/vm/machine.js";
import { bootMachine, collector, tempDir } from "./helpers.js";

const LAYOUTS: Record<string, [string, number]> = {
  // block-device-efi's layout, with a hostile-looking ESP label and a partition name with a space
  efi: [
    `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 64MiB
        mkfs:
          type: vfat
          label: "EFI $SYS"
          mount:
            mount_point: /boot/efi
            fstab:
              fsck-passno: 2
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root part
        size: 100%
        mkfs:
          name: mkfs_root
          type: ext4
          mount:
            mount_point: /
            fstab:
              fsck-passno: 1
`,
    512,
  ],
  // primary + LVM on a second partition, logical layout of DIB's lvm_tree_partition_ordering
  lvm: [
    `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: boot
        flags: [ boot, primary ]
        size: 128MiB
      - name: root
        size: 100%
- lvm:
    name: lvm
    pvs:
      - name: pv
        base: root
    vgs:
      - name: vg-x
        base: [ pv ]
    lvs:
      - name: lv_root
        base: vg-x
        size: 300M
      - name: lv-var
        base: vg-x
        extents: 100%FREE
- mkfs:
    base: boot
    type: ext3
    mount:
      mount_point: /boot
- mkfs:
    name: mkfs_root
    base: lv_root
    mount:
      mount_point: /
- mkfs:
    name: mkfs_var
    base: lv-var
    type: btrfs
    mount:
      mount_point: /var
`,
    768,
  ],
};

const work = await tempDir("vmdib-test-blockdev-");
let machine: Machine;
try {
  machine = await bootMachine({
    memoryMiB: 2048,
    shares: [{ hostPath: work.path, guestPath: "/vmdib/work", readonly: false }],
  });
} catch (err) {
  await work.done();
  throw err;
}
t.teardown(async () => {
  await machine.stop();
  await work.done();
});

async function run(cmd: string) {
  const out = collector();
  const err = collector();
  const code = await machine.exec(["bash", "-c", cmd], { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

for (const [name, [yaml, mib]] of Object.entries(LAYOUTS)) {
  const plan = planBlockDevice(parseBlockDeviceConfig(yaml, name), {
    imageSizeBytes: mib * MiB,
    imageDir: `/tmp/bd-${name}/img`,
    mountBase: `/tmp/bd-${name}/mnt`,
    uuidSeed: name,
  });
  const g = (f: string) => `/vmdib/work/${name}.${f}`;

  t.test(`${name}: setup, check, umount in the appliance`, async (t) => {
    await writeFile(
      join(work.path, `${name}.setup.sh`),
      buildSetupScript(plan, { exportsFile: `/tmp/bd-${name}/exports` }),
    );
    await writeFile(join(work.path, `${name}.umount.sh`), buildUmountScript(plan));
    await writeFile(join(work.path, `${name}.cleanup.sh`), buildCleanupScript(plan));
    t.teardown(() => run(`bash ${g("cleanup.sh")}; rm -rf /tmp/bd-${name}`).then(() => undefined));

    const setup = await run(`bash ${g("setup.sh")}`);
    t.equal(setup.code, 0, "setup succeeds", { stderr: setup.stderr.slice(-2000) });
    const mounts = await run(`findmnt -R -n -r -o TARGET,FSTYPE,LABEL /tmp/bd-${name}/mnt`);
    t.same(
      mounts.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(" ").slice(0, 2)),
      plan.mounts.map((m) => [m.path, m.fsType]),
      "mounted in plan order with the planned types",
    );
    for (const fs of plan.filesystems) {
      const probe = await run(`blkid -o value -s UUID "$(blkid -l -o device -t LABEL=${shellQuote(fs.label)})"`);
      t.equal(probe.stdout.trim(), fs.uuid, `${fs.name}: label ${fs.label} with uuid ${fs.uuid}`);
    }
    const devices = await run(
      `. /tmp/bd-${name}/exports; declare -A D; eval "D=( $IMAGE_BLOCK_DEVICES )"; for k in "\${!D[@]}"; do [ -b "\${D[$k]}" ] && echo "$k"; done | sort`,
    );
    t.same(
      devices.stdout.trim().split("\n"),
      plan.blockDevices.map((b) => b.name).sort(),
      "IMAGE_BLOCK_DEVICES names real block devices",
    );
    t.equal((await run(`echo hi > /tmp/bd-${name}/mnt/hello`)).code, 0);

    const umount = await run(`bash ${g("umount.sh")}`);
    t.equal(umount.code, 0, "umount succeeds", { stderr: umount.stderr.slice(-2000) });
    t.same(
      await run(`losetup -a; dmsetup ls | grep -v 'No devices found'; findmnt -rn -R /tmp/bd-${name}/mnt`),
      { code: 1, stdout: "", stderr: "" },
      "no loop device, mapping or mount left",
    );
  });

  t.test(`${name}: a setup that fails after mkfs is undone by cleanup`, async (t) => {
    const fail = await run(
      `mkdir -p /tmp/fakebin && printf '#!/bin/sh\\nexit 1\\n' > /tmp/fakebin/mount && chmod +x /tmp/fakebin/mount && PATH=/tmp/fakebin:$PATH bash ${g("setup.sh")}`,
    );
    t.not(fail.code, 0, "setup fails at the first mount");
    t.not((await run("losetup -a")).stdout, "", "the loop device is attached before cleanup");
    t.equal((await run(`bash ${g("cleanup.sh")}`)).code, 0);
    t.same(
      await run("losetup -a; dmsetup ls | grep -v 'No devices found'"),
      { code: 1, stdout: "", stderr: "" },
      "cleanup left nothing",
    );
    t.equal(
      (await run(`bash ${g("cleanup.sh")}; rm -rf /tmp/bd-${name} /tmp/fakebin`)).code,
      0,
      "cleanup again is harmless",
    );
  });
}
