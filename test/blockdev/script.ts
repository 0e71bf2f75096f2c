import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { parseBlockDeviceConfig } from "../../src/blockdev/config.js";
import { type BlockDevicePlanParams, planBlockDevice } from "../../src/blockdev/graph.js";
import {
  buildCleanupScript,
  buildFstab,
  buildFstabScript,
  buildSetupScript,
  buildUmountScript,
  mkfsArgv,
  sfdiskScript,
} from "../../src/blockdev/script.js";
import { GiB } from "../../src/blockdev/size.js";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { shellQuote } from "../../src/shell.js";

const DIB_ELEMENTS = "/usr/lib/python3/dist-packages/diskimage_builder/elements";
const SNAPSHOTS = join(PACKAGE_ROOT, "test", "fixtures", "blockdev");
const UPDATE = process.env.VMDIB_UPDATE_SNAPSHOTS === "1";
const params: BlockDevicePlanParams = { imageSizeBytes: 2 * GiB, imageDir: "/build/img", mountBase: "/build/mnt" };
const haveShellcheck = spawnSync("shellcheck", ["--version"]).status === 0;

function bash(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  return spawnSync("bash", args, { encoding: "utf8", ...opts });
}

t.test("shellQuote round-trips anything bash can hold", async (t) => {
  const hostile = [
    "",
    "plain",
    "a b",
    "it's",
    "$(touch x)",
    "`id`",
    'dq"',
    "back\\slash",
    "new\nline",
    "tab\t",
    "*?[a]",
    "~root",
    "-n",
    "!x",
    "ü ñ 漢",
    "'",
    "''",
  ];
  for (const s of hostile) {
    const out = bash(["-c", `printf '%s' ${shellQuote(s)}`]).stdout;
    t.equal(out, s, JSON.stringify(s));
  }
  t.equal(shellQuote("/dev/loop0"), "/dev/loop0", "safe words stay bare");
  t.throws(() => shellQuote("a\0b"), RangeError);
});

for (const variant of ["mbr", "gpt", "efi"]) {
  const file = join(DIB_ELEMENTS, `block-device-${variant}`, "block-device-default.yaml");
  t.test(
    `scripts for block-device-${variant} match their snapshots`,
    { skip: !existsSync(file) && "no DIB" },
    async (t) => {
      const plan = planBlockDevice(
        parseBlockDeviceConfig(readFileSync(file, "utf8"), `block-device-${variant}`),
        params,
      );
      const outputs: Record<string, string> = {
        "setup.sh": buildSetupScript(plan, { exportsFile: "/build/block-device.env" }),
        "umount.sh": buildUmountScript(plan),
        "cleanup.sh": buildCleanupScript(plan),
        fstab: buildFstab(plan),
      };
      for (const [name, text] of Object.entries(outputs)) {
        const snap = join(SNAPSHOTS, `${variant}.${name}`);
        if (UPDATE) writeFileSync(snap, text);
        t.equal(text, readFileSync(snap, "utf8"), `${variant}.${name} (VMDIB_UPDATE_SNAPSHOTS=1 rewrites it)`);
        if (name.endsWith(".sh")) {
          const syntax = spawnSync("bash", ["-n", snap]);
          t.equal(syntax.status, 0, `${name} parses`);
          if (haveShellcheck) {
            const sc = spawnSync("shellcheck", ["-s", "bash", snap], { encoding: "utf8" });
            t.equal(sc.status, 0, `${name} is shellcheck-clean ${sc.stdout}`);
          }
        }
      }
    },
  );
}

t.test("sfdisk input and mkfs arguments", async (t) => {
  const plan = planBlockDevice(
    parseBlockDeviceConfig(
      `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 50%
      - name: data
        type: '8e'
        size: 100%
- mkfs:
    name: mkfs_root
    base: root
    type: xfs
    mount:
      mount_point: /
- mkfs:
    name: fs_data
    base: data
    type: btrfs
    uuid: random
    opts: "-m single"
`,
      "t",
    ),
    params,
  );
  const table = plan.partitionTables[0];
  if (!table) throw new Error("no table");
  t.equal(
    sfdiskScript(table),
    // 50% of (2 GiB - 2 MiB free); the extended partition runs to the end; its logical one starts 1 MiB in
    `label: dos\nlabel-id: ${table.diskId}\nunit: sectors\n\nstart=2048, size=2095104, type=83, bootable\nstart=2097152, size=2097152, type=f\nstart=2099200, size=2095104, type=8e\n`,
  );
  const [root, data] = plan.filesystems;
  t.same(mkfsArgv(root as never), ["mkfs", "-t", "xfs", "-L", "img-rootfs", "-m", `uuid=${root?.uuid}`, "-q"]);
  t.same(
    mkfsArgv(data as never),
    ["mkfs", "-t", "btrfs", "-m", "single", "-L", "fs_data", "-q"],
    "uuid: random leaves the UUID to mkfs",
  );
});

/** Fake tools that log their arguments NUL-separated, so the test sees exactly what the script passes. */
function stubTools(dir: string, log: string): string {
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const stub = (name: string, body = "") =>
    writeFileSync(
      join(bin, name),
      `#!/bin/bash\nprintf '%s\\0' ${name} "$@" >> ${shellQuote(log)}\nprintf '\\n' >> ${shellQuote(log)}\n${body}\n`,
      {
        mode: 0o755,
      },
    );
  stub("losetup", 'case "$1" in --find) echo /dev/loop7;; --noheadings) echo /dev/loop7;; esac');
  for (const name of ["mkfs", "mount", "umount", "sync", "fstrim", "kpartx", "sfdisk", "dmsetup", "mountpoint"])
    stub(name);
  chmodSync(bin, 0o755);
  return bin;
}

t.test("hostile labels, mount points and paths reach the tools verbatim and are never evaluated", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmdib bd '$(x)-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const label = `a'$(touch P)\`;"`; // 15 characters: fits ext4's 16
  const mp = `/srv/$(touch PWNED) 'x"\\`;
  const yaml = `- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
      label: ${JSON.stringify(label)}
      mount:
        mount_point: /
        fstab:
          options: defaults
- mkfs:
    name: fs_srv
    base: image0
    type: ext4
    label: "x y;\`id\`"
    mount:
      mount_point: ${JSON.stringify(mp)}
      fstab:
        options: defaults
`;
  // two filesystems on one device is nonsense for a real disk, but fine for checking the quoting
  const plan = planBlockDevice(parseBlockDeviceConfig(yaml, "hostile"), {
    imageSizeBytes: 64 * 1024 * 1024,
    imageDir: join(dir, "img $(touch PWNED)"),
    mountBase: join(dir, "mnt `touch PWNED`"),
    mkfsOptions: "-O ^has_journal $(touch PWNED)",
  });
  const log = join(dir, "log");
  const bin = stubTools(dir, log);
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  const exportsFile = join(dir, "exports $(touch PWNED)");
  const setup = join(dir, "setup.sh");
  writeFileSync(setup, buildSetupScript(plan, { exportsFile }));
  const r = bash([setup], { env, cwd: dir });
  t.equal(r.status, 0, r.stderr);
  t.notOk(existsSync(join(dir, "PWNED")) || existsSync(join(dir, "P")), "nothing was evaluated");
  const calls = readFileSync(log, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split("\0").slice(0, -1));
  const mkfs = calls.filter((c) => c[0] === "mkfs");
  t.same(mkfs[0], [
    "mkfs",
    "-t",
    "ext4",
    "-i",
    "4096",
    "-J",
    "size=64",
    "-O",
    "^has_journal",
    "$(touch",
    "PWNED)",
    "-L",
    label,
    "-U",
    plan.filesystems[0]?.uuid,
    "-q",
    "/dev/loop7",
  ]);
  t.same(mkfs[1]?.slice(0, 5), ["mkfs", "-t", "ext4", "-L", "x y;`id`"]);
  const mounts = calls.filter((c) => c[0] === "mount").map((c) => c.slice(1));
  t.same(mounts, [
    ["/dev/loop7", join(dir, "mnt `touch PWNED`")],
    ["/dev/loop7", join(dir, "mnt `touch PWNED`") + mp],
  ]);
  t.ok(existsSync(join(dir, "mnt `touch PWNED`", `srv/$(touch PWNED) 'x"\\`)), "mount point directory made verbatim");
  const exported = bash([
    "-c",
    `. "$1"; printf '%s\\0' "$DIB_ROOT_LABEL" "$IMAGE_BLOCK_DEVICE" "$TMP_IMAGE_PATH" "$DIB_MOUNTPOINTS"`,
    "x",
    exportsFile,
  ]).stdout.split("\0");
  t.same(exported.slice(0, 4), [label, "/dev/loop7", join(dir, "img $(touch PWNED)", "image0.raw"), `/|${mp}`]);
  const devices = bash([
    "-c",
    `. "$1"; declare -A D; eval "D=( $IMAGE_BLOCK_DEVICES )"; printf '%s=%s\\n' "\${!D[@]}" "\${D[@]}"`,
    "x",
    exportsFile,
  ]).stdout;
  t.equal(devices, "image0=/dev/loop7\n", "IMAGE_BLOCK_DEVICES evals as DIB's bootloader does");

  // fstab escapes whitespace and backslashes (fstab(5)); writing it is quoted too
  const fstab = buildFstab(plan);
  t.equal(
    fstab,
    `LABEL=${label.replace(" ", "\\040")} / ext4 defaults 0 2\nLABEL=x\\040y;\`id\` /srv/$(touch\\040PWNED)\\040'x"\\134 ext4 defaults 0 2\n`,
  );
  const target = join(dir, "target $(touch PWNED)");
  t.equal(bash(["-c", buildFstabScript(plan, target)]).status, 0);
  t.equal(readFileSync(join(target, "etc", "fstab"), "utf8"), fstab);

  writeFileSync(log, "");
  writeFileSync(join(dir, "umount.sh"), buildUmountScript(plan));
  const u = bash([join(dir, "umount.sh")], { env, cwd: dir });
  t.equal(u.status, 0, u.stderr);
  const ucalls = readFileSync(log, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split("\0").slice(0, -1));
  t.same(
    ucalls.filter((c) => c[0] === "umount" || c[0] === "losetup").map((c) => c.slice(0, 2).concat(c.slice(-1))),
    [
      ["umount", join(dir, "mnt `touch PWNED`") + mp, join(dir, "mnt `touch PWNED`") + mp],
      ["umount", join(dir, "mnt `touch PWNED`"), join(dir, "mnt `touch PWNED`")],
      ["losetup", "--noheadings", join(dir, "img $(touch PWNED)", "image0.raw")],
      ["losetup", "-d", "/dev/loop7"],
    ],
    "children unmounted first, then the loop device found by its backing file and detached",
  );
  t.equal(bash([join(dir, "umount.sh")], { env, cwd: dir }).status, 0);
  t.equal(bash(["-c", buildCleanupScript(plan)], { env, cwd: dir }).status, 0, "cleanup always succeeds");
  t.notOk(existsSync(join(dir, "PWNED")), "still nothing evaluated");
});

t.test("the virtio-disk variant checks the device instead of creating a file", async (t) => {
  const plan = planBlockDevice(
    parseBlockDeviceConfig(
      "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
      "t",
    ),
    {
      ...params,
      devices: { image0: "/dev/disk/by-id/virtio-vmdib-image0" },
    },
  );
  const s = buildSetupScript(plan, { exportsFile: "/x" });
  t.match(s, /\[ -b \/dev\/disk\/by-id\/virtio-vmdib-image0 \]/);
  t.match(s, /blockdev --getsize64 \/dev\/disk\/by-id\/virtio-vmdib-image0\)" -lt 2147483648/);
  t.match(
    s,
    /losetup --find --show --sizelimit 2147483648 -- \/dev\/disk\/by-id\/virtio-vmdib-image0/,
    "the loop device is the planned size",
  );
  t.notMatch(s, /truncate/);
  const gone = bash(["-c", s]);
  t.not(gone.status, 0, "a missing disk fails the setup");
  t.match(gone.stderr, /is not a block device/);
});
