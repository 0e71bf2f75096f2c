import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { parseBlockDeviceConfig } from "../../src/blockdev/config.js";
import {
  type BlockDevicePlanParams,
  blockDeviceInitInfo,
  derivedUuid,
  describeBlockDevicePlan,
  GPT_TYPE_CODES,
  planBlockDevice,
} from "../../src/blockdev/graph.js";
import { GiB, MiB } from "../../src/blockdev/size.js";
import { UsageError } from "../../src/errors.js";

const DIB_DIR = "/usr/lib/python3/dist-packages/diskimage_builder";
const haveDib = existsSync(join(DIB_DIR, "block_device"));
const params: BlockDevicePlanParams = { imageSizeBytes: 2 * GiB, imageDir: "/build/img", mountBase: "/build/mnt" };

function element(name: string): string {
  return readFileSync(join(DIB_DIR, "elements", name, "block-device-default.yaml"), "utf8");
}
function fixture(name: string): string {
  return readFileSync(join(DIB_DIR, "block_device", "tests", "config", name), "utf8");
}
function plan(yaml: string, p: Partial<BlockDevicePlanParams> = {}, source = "test") {
  return planBlockDevice(parseBlockDeviceConfig(yaml, source), { ...params, ...p });
}
function planError(yaml: string, p: Partial<BlockDevicePlanParams> = {}): UsageError {
  try {
    plan(yaml, p);
  } catch (e) {
    if (e instanceof UsageError) return e;
    throw e;
  }
  throw new Error("planned without error");
}

const MINIMAL = (mkfs: string) => `- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
${mkfs}
      mount:
        mount_point: /
        fstab:
          fsck-passno: 1
`;

t.test(
  "block-device-mbr: one bootable primary partition, DIB's root defaults",
  { skip: !haveDib && "no DIB" },
  async (t) => {
    const p = plan(element("block-device-mbr"));
    const disk = p.disks[0];
    t.same(disk?.backing, { kind: "file", path: "/build/img/image0.raw" });
    t.equal(disk?.sizeBytes, 2 * GiB);
    const table = p.partitionTables[0];
    t.equal(table?.label, "mbr");
    t.match(table?.diskId, /^0x[0-9a-f]{8}$/);
    // DIB's MBR writer: start at 1 MiB, 1 MiB kept free at the end for "100%"
    t.same(
      table?.partitions.map((x) => [x.name, x.number, x.startSector, x.sizeSectors, x.type, x.bootable, x.logical]),
      [["root", 1, 2048, (2 * GiB) / 512 - 4096, "83", true, false]],
    );
    const fs = p.filesystems[0];
    t.same(
      [fs?.name, fs?.type, fs?.label, fs?.opts],
      ["mkfs_root", "ext4", "cloudimg-rootfs", ["-i", "4096", "-J", "size=64"]],
    );
    t.equal(fs?.uuid, derivedUuid("vmdib", "mkfs:mkfs_root"));
    t.same(
      p.mounts.map((m) => [m.mountPoint, m.path]),
      [["/", "/build/mnt"]],
    );
    t.same(
      p.fstab.map((f) => [f.spec, f.mountPoint, f.fsType, f.options, f.dumpFreq, f.fsckPassno]),
      [["LABEL=cloudimg-rootfs", "/", "ext4", "defaults", 0, 1]],
    );
    t.same(p.steps, [
      { op: "disk", name: "image0" },
      { op: "partition", name: "partitioning_image0" },
      { op: "mkfs", name: "mkfs_root" },
      { op: "mount", name: "mount_mkfs_root" },
    ]);
    t.same(p.env, {
      DIB_ROOT_LABEL: "cloudimg-rootfs",
      DIB_ROOT_FSTYPE: "ext4",
      DIB_MOUNTPOINTS: "/",
      DIB_IMAGE_SIZE: String(2 * 1024 * 1024),
    });
    t.same(p.runtimeEnv, [
      "IMAGE_BLOCK_DEVICE",
      "IMAGE_BLOCK_DEVICE_WITHOUT_PART",
      "IMAGE_BLOCK_DEVICES",
      "TMP_IMAGE_PATH",
    ]);
    t.same(
      p.blockDevices.map((b) => b.name),
      ["image0", "root"],
    );
    t.same(p.warnings, []);
    t.same(JSON.parse(JSON.stringify(p)), p, "the plan is plain data");
  },
);

t.test("root parameters are merged into mkfs_root as DIB does", { skip: !haveDib && "no DIB" }, async (t) => {
  const xfs = plan(element("block-device-mbr"), { fsType: "xfs", mkfsOptions: " -K  " });
  t.same(
    [xfs.root.fsType, xfs.root.label, xfs.filesystems[0]?.opts],
    ["xfs", "img-rootfs", ["-K"]],
    "xfs: img-rootfs, no ext4 extras",
  );
  const ext4 = plan(element("block-device-mbr"), {
    rootLabel: "my root",
    mkfsOptions: "-O ^metadata_csum",
    journalSizeMiB: 32,
    maxOnlineResize: 1000,
  });
  t.same(ext4.filesystems[0]?.opts, ["-E", "resize=1000", "-i", "4096", "-J", "size=32", "-O", "^metadata_csum"]);
  t.equal(ext4.env.DIB_ROOT_LABEL, "my root");
  const xfsResize = plan(element("block-device-mbr"), { fsType: "xfs", maxOnlineResize: 1000 });
  t.same(xfsResize.filesystems[0]?.opts, [], "-E resize is ext-only");
  t.match(xfsResize.warnings, [/max-online-resize/]);
  // an explicit type/label/opts in the config wins over the parameters
  const explicit = plan(MINIMAL('      type: ext3\n      label: lbl\n      opts: "-b 4096"'), {
    fsType: "xfs",
    rootLabel: "x",
  });
  t.same([explicit.root.fsType, explicit.root.label, explicit.filesystems[0]?.opts], ["ext3", "lbl", ["-b", "4096"]]);
  const long = planError(element("block-device-mbr"), { fsType: "xfs", rootLabel: "cloudimg-rootfs" });
  t.match(long.message, /label 'cloudimg-rootfs' is too long for xfs: 15 > 12/);
});

t.test("block-device-gpt and gpt_efi: sizes as DIB hands them to sgdisk", { skip: !haveDib && "no DIB" }, async (t) => {
  const gpt = plan(element("block-device-gpt")).partitionTables[0];
  t.same(
    gpt?.partitions.map((x) => [x.name, x.number, x.startSector, x.sizeSectors / 2048, x.type]),
    [
      ["BSP", 1, 2048, 8, GPT_TYPE_CODES.EF02],
      ["root", 2, 18432, 2048 - 2 - 8, GPT_TYPE_CODES["8300"]],
    ],
  );
  t.match(gpt?.diskId, /^[0-9A-F]{8}-[0-9A-F]{4}-8[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
  // DIB's test_gpt: a 1 GiB disk gives -n 1:0:+8M -n 2:0:+8M -n 3:0:+1006M
  const efi = plan(fixture("gpt_efi.yaml"), { imageSizeBytes: GiB });
  t.same(
    efi.partitionTables[0]?.partitions.map((x) => [x.name, x.sizeSectors / 2048, x.type]),
    [
      ["ESP", 8, GPT_TYPE_CODES.EF00],
      ["BSP", 8, GPT_TYPE_CODES.EF02],
      ["Root Part", 1006, GPT_TYPE_CODES["8300"]],
    ],
  );
  t.same(
    efi.blockDevices.map((b) => b.name),
    ["image0", "ESP", "BSP", "Root Part"],
  );
});

t.test(
  "block-device-efi: mounts parents first, fstab in mount order, vfat label upper-cased",
  { skip: !haveDib && "no DIB" },
  async (t) => {
    const p = plan(element("block-device-efi"));
    t.same(
      p.mounts.map((m) => [m.mountPoint, m.path, m.fsType]),
      [
        ["/", "/build/mnt", "ext4"],
        ["/boot/efi", "/build/mnt/boot/efi", "vfat"],
      ],
    );
    t.same(
      p.fstab.map((f) => `${f.spec} ${f.mountPoint} ${f.fsType} ${f.options} ${f.dumpFreq} ${f.fsckPassno}`),
      ["LABEL=cloudimg-rootfs / ext4 defaults 0 1", "LABEL=MKFS_ESP /boot/efi vfat defaults 0 2"],
    );
    const esp = p.filesystems.find((f) => f.name === "mkfs_ESP");
    t.match(esp?.uuid, /^[0-9A-F]{4}-[0-9A-F]{4}$/, "vfat volume id");
    t.equal(p.env.DIB_MOUNTPOINTS, "/boot/efi|/", "config order, as DIB's getval mount-points");
    const mountSteps = p.steps.filter((s) => s.op === "mount").map((s) => s.name);
    t.same(mountSteps, ["mount_mkfs_root", "mount_mkfs_ESP"]);
  },
);

t.test(
  "DIB's lvm examples plan, with LVM in one step and mounts parents-first",
  { skip: !haveDib && "no DIB" },
  async (t) => {
    for (const f of [
      "lvm_graph.yaml",
      "lvm_tree.yaml",
      "lvm_tree_multiple_pv.yaml",
      "lvm_tree_multiple_pv_vg.yaml",
      "lvm_tree_spanned_vg.yaml",
      "lvm_tree_partition_ordering.yaml",
    ]) {
      const p = plan(fixture(f), { imageSizeBytes: 8 * GiB });
      t.ok(p.lvm.length === 1, `${f}: one lvm`);
      const steps = p.steps.map((s) => s.op);
      t.ok(
        steps.indexOf("lvm") > steps.indexOf("partition") && steps.indexOf("lvm") < steps.indexOf("mkfs"),
        `${f}: partition < lvm < mkfs`,
      );
    }
    const p = plan(fixture("lvm_graph.yaml"), { imageSizeBytes: 8 * GiB });
    t.same(
      p.mounts.map((m) => m.mountPoint),
      ["/", "/home", "/tmp", "/var", "/var/log", "/var/log/audit"],
    );
    t.same(p.lvm[0]?.pvs, [
      { name: "pv", base: "root", device: { kind: "partition", disk: "image0", number: 1 }, options: ["--force"] },
    ]);
    t.same(p.lvm[0]?.vgs, [{ name: "vg", pvs: ["pv"], options: ["--force"] }]);
    t.same(p.lvm[0]?.lvs[0], {
      name: "lv_root",
      vg: "vg",
      size: "1800M",
      options: [],
      device: { kind: "lv", vg: "vg", lv: "lv_root" },
    });
    const extents = plan(
      fixture("lvm_tree_multiple_partitions.yaml")
        .replace("type: 'EF00'", "type: 'ef'")
        .replace("type: 'EF02'", "type: '83'"),
      { imageSizeBytes: 8 * GiB },
    );
    t.same(
      extents.lvm[0]?.lvs.map((l) => [l.name, l.size, l.extents]),
      [
        ["lv_root", undefined, "28%VG"],
        ["lv_tmp", undefined, "4%VG"],
        ["lv_var", undefined, "40%VG"],
        ["lv_log", undefined, "23%VG"],
        ["lv_audit", undefined, "4%VG"],
        ["lv_home", undefined, "1%VG"],
      ],
    );
    t.same(
      extents.partitionTables[0]?.partitions.map((x) => [x.name, x.number, x.logical]),
      [
        ["root", 5, true],
        ["ESP", 6, true],
        ["BSP", 7, true],
      ],
      "no primary flag: logical partitions from 5",
    );
    t.match(extents.warnings, [/unknown key 'fck-passno'/], "DIB's own fixture has a typo that DIB ignores silently");
    t.same([p.root.label, p.root.fsType], ["img-rootfs", "xfs"]);
    t.same(p.fstab.find((f) => f.mountPoint === "/tmp")?.options, "rw,nosuid,nodev,noexec,relatime");
    t.equal(p.fstab.find((f) => f.mountPoint === "/var")?.fsckPassno, 2, "DIB's default fsck-passno");
    t.same(
      p.order.slice(0, 4).map((n) => n.name),
      ["image0", "root", "lvm_mbr", "pv"],
      "DIB's call order",
    );
    // lvm_tree_partition_ordering: DIB's test expects / -> /boot -> /var
    t.same(
      plan(fixture("lvm_tree_partition_ordering.yaml")).mounts.map((m) => m.mountPoint),
      ["/", "/boot", "/var"],
    );
    t.equal(plan(fixture("lvm_tree_partition_ordering.yaml")).disks[0]?.sizeBytes, 5e9, "local_loop size: wins");
  },
);

t.test(
  "DIB's error fixtures, and what DIB only finds when a command fails",
  { skip: !haveDib && "no DIB" },
  async (t) => {
    const cases: Array<[string, RegExp]> = [
      ["bad_edge_graph.yaml", /mkfs 'mkfs_root': base 'this_is_not_a_node' is not defined/],
      ["duplicate_name.yaml", /'this_is_a_duplicate': the name is used twice/],
      ["duplicate_fs_labels.yaml", /label 'duplicate' is also used by mkfs 'mkfs_root'/],
      ["lvm_tree_multiple_partitions.yaml", /partition 'ESP': type 'EF00' is not an MBR partition type/],
      ["multiple_partitions_graph.yaml", /uuid 'root-uuid-1234' is not a valid UUID/],
      ["simple_graph.yaml", /base 'root_part' is not defined/],
    ];
    for (const [f, re] of cases) {
      const err = planError(fixture(f), { imageSizeBytes: 8 * GiB });
      t.match(err.message, re, f);
      t.match(err.message, /block-device config \(test\)/);
      t.ok(err.hint, `${f} has a hint`);
    }
  },
);

t.test("validation: each bad config names the node and says what to do", async (t) => {
  const part = (parts: string, label = "mbr") => `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: ${label}
    partitions:
${parts}
- mkfs:
    name: mkfs_root
    base: root
    mount:
      mount_point: /
`;
  const cases: Array<[string, RegExp, Partial<BlockDevicePlanParams>?]> = [
    [MINIMAL("      type: zfs"), /mkfs 'mkfs_root': filesystem type 'zfs' is not supported/],
    [MINIMAL("      type: ext4").replace("mount_point: /", "mount_point: /srv"), /no mount has mount_point "\/"/],
    [
      MINIMAL("      type: ext4").replace("mount_point: /", "mount_point: srv"),
      /mount_point 'srv' is not an absolute path/,
    ],
    [MINIMAL("      type: ext4").replace("mount_point: /", "mount_point: /a/../b"), /contains '\.\.'/],
    [MINIMAL("      label: this-label-is-far-too-long"), /too long for ext4: 26 > 16/],
    [MINIMAL("      uuid: 1234"), /uuid '1234' is not a valid UUID/],
    [MINIMAL("").replace("fsck-passno: 1", "options: rw relatime"), /options 'rw relatime' must be one word/],
    [MINIMAL("").replace("fsck-passno: 1", "fsck-passno: x"), /fsck-passno 'x' is not a number/],
    [part("      - name: root\n        size: 12 parsecs"), /partition 'root': size '12 parsecs' is not valid/],
    [
      part("      - name: root\n        flags: [ primary ]\n        size: 3G"),
      /partition 'root': needs 2861\.0 MiB at sector 2048, but the disk has 2047 MiB left/,
    ],
    [
      part("      - name: root\n        size: 3G"),
      /partition 'root': needs 2861\.0 MiB at sector 4096, but the disk has 2046 MiB left/,
    ],
    [
      part(
        "      - name: root\n        flags: [ boot ]\n        size: 10%\n      - name: b\n        flags: [ primary ]\n        size: 10%",
      ),
      /partition 'b': a primary partition follows a logical one/,
    ],
    [
      part(
        [1, 2, 3, 4, 5]
          .map((i) => `      - name: p${i}\n        flags: [ primary ]\n        size: 1MiB`)
          .join("\n")
          .replace("p1", "root"),
      ),
      /partition 'p5': an MBR holds at most 4 primary/,
    ],
    [part("      - name: root\n        flags: [ primary ]\n        size: 100%", "gpt"), /primary flag is for mbr only/],
    [part("      - name: root\n        flags: [ bootable ]\n        size: 100%"), /unknown flag 'bootable'/],
    [part("      - name: root\n        type: 'ZZ00'\n        size: 100%", "gpt"), /GPT type 'ZZ00' is not known/],
    [part("      - name: root\n        size: 100KiB", "gpt"), /less than 1 MiB/],
    [part("      - name: root\n        size: 100%", "dos"), /label 'dos' is not mbr or gpt/],
    [part("      - name: 'root; rm -rf /'\n        size: 100%"), /characters vmdib does not allow/],
    [
      "- local_loop:\n    name: image0\n- mkfs:\n    name: mkfs_root\n    base: mount_x\n    type: ext4\n- mount:\n    name: mount_x\n    base: mkfs_root\n    mount_point: /\n",
      /base 'mount_x' is a mount, but a mkfs must be built on a local_loop or partition or lv/,
    ],
    [
      MINIMAL("      type: ext4") +
        "- mkfs:\n    name: other\n    base: image0\n    type: ext4\n    mount:\n      mount_point: /\n",
      /mount point \/ is also used/,
    ],
    ["- mkfs:\n    name: mkfs_root\n    base: x\n", /base 'x' is not defined/],
    [
      "- local_loop:\n    name: Image0\n- mkfs:\n    name: mkfs_root\n    base: image0\n    mount:\n      mount_point: /\n",
      /base 'image0' is not defined/,
    ],
    [MINIMAL("      type: ext4"), /image size .* is outside/, { imageSizeBytes: 1000 }],
  ];
  t.match(
    planError(
      "- local_loop:\n    name: Image0\n- mkfs:\n    name: mkfs_root\n    base: image0\n    mount:\n      mount_point: /\n",
    ).hint,
    /Did you mean 'Image0'/,
  );
  for (const [yaml, re, p] of cases) {
    const err = planError(yaml, p);
    t.match(err.message, re, re.source);
    t.equal(err.exitCode, 2);
    t.type(err.hint, "string");
  }
});

t.test("a dependency cycle is reported with the nodes in it", async (t) => {
  const err = planError(`- local_loop:
    name: image0
- lvm:
    name: lvm
    pvs:
      - name: pv
        base: lv
    vgs:
      - name: vg
        base: [ pv ]
    lvs:
      - name: lv
        base: vg
        size: 1G
- mkfs:
    name: mkfs_root
    base: image0
    mount:
      mount_point: /
`);
  t.match(err.message, /lvm 'lvm'.*cycle/);
});

t.test("unknown keys are kept as DIB does, with a warning", async (t) => {
  const p = plan(MINIMAL("      type: ext4\n      lable: oops"));
  t.match(p.warnings, [/mkfs 'mkfs_root': unknown key 'lable'/]);
  const typo = planError("- local_loop:\n    name: image0\n    mkfs:\n      mout:\n        mount_point: /\n");
  t.match(typo.message, /no mount has mount_point/);
});

t.test("deterministic: same input, same plan; the seed and `uuid: random` change only identifiers", async (t) => {
  const yaml = MINIMAL("      type: ext4");
  t.same(plan(yaml), plan(yaml));
  const a = plan(yaml, { uuidSeed: "a" });
  const b = plan(yaml, { uuidSeed: "b" });
  t.not(a.filesystems[0]?.uuid, b.filesystems[0]?.uuid);
  t.equal(plan(MINIMAL("      uuid: random")).filesystems[0]?.uuid, undefined);
  t.equal(
    plan(MINIMAL("      uuid: 0F2C6A6E-1111-4222-8333-444455556666")).filesystems[0]?.uuid,
    "0F2C6A6E-1111-4222-8333-444455556666",
  );
});

t.test("a virtio disk can stand in for the image file", async (t) => {
  const p = plan(MINIMAL("      type: ext4"), { devices: { image0: "/dev/disk/by-id/virtio-vmdib-image0" } });
  t.same(p.disks[0]?.backing, { kind: "device", path: "/dev/disk/by-id/virtio-vmdib-image0" });
});

const canRunDibMbr =
  haveDib &&
  (() => {
    try {
      execFileSync("/usr/bin/python3", ["-c", "import diskimage_builder.block_device.level1.mbr"], { stdio: "ignore" });
      execFileSync("sfdisk", ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

t.test(
  "MBR layout equals what DIB's own MBR writer puts on disk",
  { skip: !canRunDibMbr && "needs DIB's python and sfdisk" },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "vmdib-mbr-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const layouts = [
      ["boot,primary:100%"],
      ["boot,primary:100MiB", "primary:20%", ":30%", ":50MiB", ":100%"],
      ["boot,primary:1G", "primary:1G", "primary:1G", ":10%", ":100%"],
      [":100MiB", "boot:25%", ":100%"],
    ];
    for (const [i, layout] of layouts.entries()) {
      const parts = layout.map((spec, j) => {
        const [flags, size] = spec.split(":") as [string, string];
        return `      - name: ${j === 0 ? "root" : `p${j}`}\n        size: ${size}\n        flags: [ ${flags} ]`;
      });
      const yaml = `- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n${parts.join("\n")}\n- mkfs:\n    name: mkfs_root\n    base: root\n    mount:\n      mount_point: /\n`;
      const size = 4 * GiB;
      const ours = plan(yaml, { imageSizeBytes: size }).partitionTables[0];
      const image = join(dir, `dib${i}.raw`);
      writeFileSync(image, "");
      truncateSync(image, size);
      const py = [
        "import sys",
        "from diskimage_builder.block_device.level1.mbr import MBR",
        "from diskimage_builder.block_device.utils import parse_rel_size_spec",
        "path, size = sys.argv[1], int(sys.argv[2])",
        "with MBR(path, size, 1024 * 1024) as m:",
        "    for spec in sys.argv[3:]:",
        "        flags, s = spec.split(':')",
        "        m.add_partition('primary' in flags, 'boot' in flags, parse_rel_size_spec(s, m.free())[1], 0x83)",
      ].join("\n");
      execFileSync("/usr/bin/python3", ["-c", py, image, String(size), ...layout]);
      const dump = JSON.parse(execFileSync("sfdisk", ["--json", image], { encoding: "utf8" })) as {
        partitiontable: {
          partitions: { node: string; start: number; size: number; type: string; bootable?: boolean }[];
        };
      };
      const theirs = dump.partitiontable.partitions.map((p) => [
        Number(/(\d+)$/.exec(p.node)?.[1]),
        p.start,
        p.size,
        p.type,
        p.bootable === true,
      ]);
      const mine = [
        ...(ours?.partitions ?? [])
          .filter((p) => !p.logical)
          .map((p) => [p.number, p.startSector, p.sizeSectors, p.type, p.bootable]),
        ...(ours?.extended
          ? [[ours.extended.number, ours.extended.startSector, ours.extended.sizeSectors, "f", false]]
          : []),
        ...(ours?.partitions ?? [])
          .filter((p) => p.logical)
          .map((p) => [p.number, p.startSector, p.sizeSectors, p.type, p.bootable]),
      ];
      t.same(mine, theirs, `layout ${layout.join(" ")}`);
    }
    t.ok(MiB > 0);
  },
);

t.test("blockDeviceInitInfo: DIB's early getval answers, and early validation", async (t) => {
  const info = blockDeviceInitInfo(parseBlockDeviceConfig(MINIMAL(""), "t"), { fsType: "xfs" });
  t.same(info.env, { DIB_ROOT_LABEL: "img-rootfs", DIB_ROOT_FSTYPE: "xfs", DIB_MOUNTPOINTS: "/" });
  t.equal(info.rootFsType, "xfs");
  t.throws(() => blockDeviceInitInfo(parseBlockDeviceConfig(MINIMAL("      type: zfs"), "t"), {}), UsageError);
  // a 3G partition is fine before the size is known; planBlockDevice checks it against the real size
  const big =
    "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: root\n        size: 3G\n- mkfs:\n    name: mkfs_root\n    base: root\n    mount:\n      mount_point: /\n";
  t.equal(blockDeviceInitInfo(parseBlockDeviceConfig(big, "t"), {}).rootFsType, "ext4");
});

t.test("describeBlockDevicePlan summarises the layout for --dry-run", { skip: !haveDib && "no DIB" }, async (t) => {
  const lines = describeBlockDevicePlan(plan(element("block-device-efi")));
  t.match(
    lines.join("\n"),
    /gpt partition table[\s\S]*1 ESP: 550 MiB at sector 2048[\s\S]*mount \/boot\/efi <- mkfs_ESP \(fstab: LABEL=MKFS_ESP defaults 0 2\)/,
  );
});
