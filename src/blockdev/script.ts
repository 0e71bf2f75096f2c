// Bash for the block-device plan (pure): the setup script run as root in the appliance (attach, partition, LVM,
// mkfs, mount, exports), the fstab text, and the two ways back (strict umount on success, best-effort cleanup).
import { shellJoin, shellQuote } from "../shell.js";
import type { BlockDevicePlan, DiskPlan, FilesystemPlan, MountPlan, PartitionTablePlan } from "./graph.js";

/** `"${DEV['name']}"`: the device of a named node, filled in by the setup script as it creates it. */
function dev(name: string): string {
  return `"\${DEV[${shellQuote(name)}]}"`;
}

function header(plan: BlockDevicePlan, what: string): string[] {
  return [
    "#!/bin/bash",
    `# vmdib block-device ${what}, generated from ${oneLine(plan.source)}; runs as root in the appliance.`,
    "set -eu -o pipefail",
    "export LC_ALL=C",
    ...NO_UDEV,
  ];
}

/**
 * The appliance runs no udev. LVM then waits for /dev/VG/LV nodes that never come ("device not cleared",
 * measured); DM_DISABLE_UDEV makes libdevmapper (kpartx, dmsetup, LVM) create and remove its nodes itself.
 */
const NO_UDEV = [
  "# No udev (the appliance): device-mapper and LVM make their /dev nodes themselves.",
  "[ -e /run/udev/control ] || export DM_DISABLE_UDEV=1",
];

/** For comments: control characters (a newline would end the comment) become "?". */
function oneLine(s: string): string {
  return [...s].map((c) => (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f ? "?" : c)).join("");
}

/** Options for the generated setup script. */
export interface SetupScriptOptions {
  /** Guest path of the file the script writes `export NAME=value` lines to (source it before later phases). */
  readonly exportsFile: string;
  /**
   * How partitions get device nodes: `kpartx` (DIB's way, device-mapper: /dev/mapper/loopNpM; the appliance) or
   * `partscan` (the loop driver's own partition scan: /dev/loopNpM; for kernels without device-mapper, e.g. to
   * try a script on a host). Default kpartx.
   */
  readonly partitions?: "kpartx" | "partscan";
}

/** The setup script: creates every disk, table, volume and filesystem in plan order and mounts them. */
export function buildSetupScript(plan: BlockDevicePlan, opts: SetupScriptOptions): string {
  const out = [
    ...header(plan, "setup"),
    "",
    "# Device of every named node (loop devices are only known once attached).",
    "declare -A DEV=()",
    "",
    "# kpartx and LVM create their nodes through udev when it runs and by themselves when it does not;",
    "# either way give a node a moment to appear, then ask device-mapper to create it.",
    "wait_for_block() {",
    "  local _",
    "  for _ in $(seq 50); do",
    '    [ -b "$1" ] && return 0',
    "    sleep 0.1",
    "  done",
    "  dmsetup mknodes >/dev/null 2>&1 || true",
    '  [ -b "$1" ] || { echo "vmdib: block device $1 did not appear" >&2; return 1; }',
    "}",
  ];
  const byName = <T extends { name: string }>(list: readonly T[], name: string): T => {
    const found = list.find((x) => x.name === name);
    if (!found) throw new Error(`internal: plan has no ${name}`);
    return found;
  };
  const partscan = opts.partitions === "partscan";
  for (const step of plan.steps) {
    out.push("");
    switch (step.op) {
      case "disk":
        out.push(...diskLines(byName(plan.disks, step.name), partscan));
        break;
      case "partition":
        out.push(...partitionLines(byName(plan.partitionTables, step.name), partscan));
        break;
      case "lvm": {
        const lvm = byName(plan.lvm, step.name);
        out.push(`# lvm ${oneLine(lvm.name)}: physical volumes, volume groups, logical volumes (DIB's argument order)`);
        const pvDev = new Map(lvm.pvs.map((pv) => [pv.name, dev(pv.base)]));
        for (const pv of lvm.pvs)
          out.push(`pvcreate ${dev(pv.base)}${pv.options.length ? ` ${shellJoin(pv.options)}` : ""}`);
        for (const vg of lvm.vgs) {
          const devs = vg.pvs.map((p) => pvDev.get(p) as string).join(" ");
          out.push(`vgcreate ${shellQuote(vg.name)} ${devs}${vg.options.length ? ` ${shellJoin(vg.options)}` : ""}`);
        }
        for (const lv of lvm.lvs) {
          const size = lv.size !== undefined ? `-L ${shellQuote(lv.size)}` : `-l ${shellQuote(lv.extents ?? "")}`;
          out.push(
            `lvcreate --name ${shellQuote(lv.name)} ${size}${lv.options.length ? ` ${shellJoin(lv.options)}` : ""} ${shellQuote(lv.vg)}`,
          );
          if (lv.device.kind === "lv") {
            // device-mapper doubles dashes inside VG and LV names
            const dm = `${lv.device.vg.replaceAll("-", "--")}-${lv.device.lv.replaceAll("-", "--")}`;
            out.push(`DEV[${shellQuote(lv.name)}]=${shellQuote(`/dev/mapper/${dm}`)}`);
            out.push(`wait_for_block ${dev(lv.name)}`);
          }
        }
        break;
      }
      case "mkfs":
        out.push(...mkfsLines(byName(plan.filesystems, step.name)));
        break;
      case "mount": {
        const m: MountPlan = byName(plan.mounts, step.name);
        out.push(`# mount ${oneLine(m.name)}: ${oneLine(m.mountPoint)}`);
        out.push(`mkdir -p -- ${shellQuote(m.path)}`);
        out.push(`mount ${dev(byName(plan.filesystems, m.base).base)} ${shellQuote(m.path)}`);
        break;
      }
    }
  }
  out.push("", ...exportLines(plan, opts.exportsFile), "");
  return out.join("\n");
}

function diskLines(d: DiskPlan, partscan: boolean): string[] {
  const out = [`# local_loop ${oneLine(d.name)}: ${d.sizeBytes} bytes`];
  const path = shellQuote(d.backing.path);
  if (d.backing.kind === "file") {
    out.push(`mkdir -p -- ${shellQuote(d.backing.path.replace(/\/[^/]*$/, "") || "/")}`);
    out.push(`rm -f -- ${path}`);
    out.push(`# sparse: only the blocks written later take space`);
    out.push(`truncate -s ${d.sizeBytes} -- ${path}`);
  } else {
    out.push(
      `[ -b ${path} ] || { echo ${shellQuote(`vmdib: disk ${d.backing.path} for ${d.name} is not a block device`)} >&2; exit 1; }`,
    );
    out.push(`if [ "$(blockdev --getsize64 ${path})" -lt ${d.sizeBytes} ]; then`);
    out.push(
      `  echo ${shellQuote(`vmdib: disk ${d.backing.path} for ${d.name} is smaller than the planned ${d.sizeBytes} bytes`)} >&2`,
    );
    out.push("  exit 1");
    out.push("fi");
  }
  // A disk may be larger than planned (the host truncates it afterwards): --sizelimit makes the loop device exactly
  // the planned size, so GPT's backup header and "100%" partitions end where the image will end.
  const limit = d.backing.kind === "device" ? ` --sizelimit ${d.sizeBytes}` : "";
  out.push(`DEV[${shellQuote(d.name)}]=$(losetup --find --show${limit}${partscan ? " --partscan" : ""} -- ${path})`);
  return out;
}

/** sfdisk input: every start and size decided by the plan, disk and partition ids from the seed. */
export function sfdiskScript(t: PartitionTablePlan): string {
  const lines: string[] = [];
  if (t.label === "mbr") {
    lines.push("label: dos", `label-id: ${t.diskId}`, "unit: sectors", "");
    const line = (p: { startSector: number; sizeSectors: number; type: string; bootable?: boolean }) =>
      `start=${p.startSector}, size=${p.sizeSectors}, type=${p.type}${p.bootable ? ", bootable" : ""}`;
    for (const p of t.partitions.filter((x) => !x.logical)) lines.push(line(p));
    // DIB writes an LBA extended partition (type 0x0f) that reaches the end of the disk
    if (t.extended) lines.push(line({ ...t.extended, type: "f" }));
    for (const p of t.partitions.filter((x) => x.logical)) lines.push(line(p));
  } else {
    lines.push("label: gpt", `label-id: ${t.diskId}`, "unit: sectors", "first-lba: 2048", "");
    for (const p of t.partitions) {
      lines.push(`start=${p.startSector}, size=${p.sizeSectors}, type=${p.type}, uuid=${p.uuid}, name="${p.name}"`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function partitionLines(t: PartitionTablePlan, partscan: boolean): string[] {
  const disk = dev(t.disk);
  const out = [
    `# partitioning ${oneLine(t.name)}: ${t.label} on ${oneLine(t.disk)}`,
    "# --no-reread/--no-tell-kernel: the partitions are mapped below, once the table is complete.",
    `sfdisk --quiet --no-reread --no-tell-kernel --wipe always ${disk} <<'VMDIB_SFDISK'`,
    sfdiskScript(t).trimEnd(),
    "VMDIB_SFDISK",
    "sync",
    ...(partscan
      ? ["# the loop driver's own partitions: /dev/loopNpM", `partx --update ${disk}`]
      : ["# -s: wait until the mappings exist; the nodes are /dev/mapper/loopNpM", `kpartx -avs ${disk}`]),
  ];
  for (const p of t.partitions) {
    const prefix = partscan ? `\${DEV[${shellQuote(t.disk)}]}` : `/dev/mapper/\${DEV[${shellQuote(t.disk)}]#/dev/}`;
    out.push(`DEV[${shellQuote(p.name)}]="${prefix}p${p.number}"`);
    out.push(`wait_for_block ${dev(p.name)}`);
  }
  return out;
}

/** The mkfs arguments DIB passes (level2/mkfs.py), plus a UUID for vfat and btrfs, which DIB leaves random. */
export function mkfsArgv(fs: FilesystemPlan): string[] {
  const argv = ["mkfs", "-t", fs.type, ...fs.opts];
  const vfat = fs.type === "vfat" || fs.type === "fat";
  argv.push(vfat ? "-n" : "-L", fs.label);
  if (fs.uuid !== undefined) {
    if (vfat) argv.push("-i", fs.uuid.replace("-", ""));
    else if (fs.type === "xfs") argv.push("-m", `uuid=${fs.uuid}`);
    else argv.push("-U", fs.uuid);
  }
  if (fs.type !== "vfat" && fs.type !== "fat") argv.push("-q");
  return argv;
}

function mkfsLines(fs: FilesystemPlan): string[] {
  return [
    `# mkfs ${oneLine(fs.name)}: ${fs.type}, label ${oneLine(fs.label)}`,
    `${shellJoin(mkfsArgv(fs))} ${dev(fs.base)}`,
  ];
}

function exportLines(plan: BlockDevicePlan, exportsFile: string): string[] {
  const out = [
    "# Exports for later phases, as disk-image-create has them after the block-device step.",
    "IMAGE_BLOCK_DEVICES=''",
  ];
  for (const b of plan.blockDevices) {
    // DIB's format " [name]=device " is eval'd by bootloader elements: `eval DEVICES=( $IMAGE_BLOCK_DEVICES )`
    out.push(`IMAGE_BLOCK_DEVICES+=${shellQuote(` [${shellQuote(b.name)}]=`)}"$(printf %q ${dev(b.name)}) "`);
  }
  const image = plan.disks.find((d) => d.name === plan.imageDisk) as DiskPlan;
  out.push("{");
  out.push(`  printf 'export %s=%q\\n' IMAGE_BLOCK_DEVICE ${dev(plan.imageDisk)}`);
  out.push(`  printf 'export %s=%q\\n' IMAGE_BLOCK_DEVICE_WITHOUT_PART ${dev(plan.imageDisk)}`);
  out.push(`  printf 'export %s=%q\\n' IMAGE_BLOCK_DEVICES "$IMAGE_BLOCK_DEVICES"`);
  out.push(`  printf 'export %s=%q\\n' TMP_IMAGE_PATH ${shellQuote(image.backing.path)}`);
  for (const [k, v] of Object.entries(plan.env)) out.push(`  printf 'export %s=%q\\n' ${k} ${shellQuote(v)}`);
  out.push(`} > ${shellQuote(exportsFile)}`);
  return out;
}

/** Loop devices attached to a disk's backing file or device, found by the kernel rather than remembered. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: a bash array expansion, not a JS template
const FOR_EACH_LOOP = 'for loop in "${loops[@]}"; do';

/** Must match the SetupScriptOptions the setup script was generated with. */
export interface TeardownOptions {
  readonly partitions?: "kpartx" | "partscan";
}

function loopsOf(d: DiskPlan): string {
  return `mapfile -t loops < <(losetup --noheadings --output NAME --associated ${shellQuote(d.backing.path)} 2>/dev/null)`;
}

/**
 * The success path (DIB's `umount`): children before parents, sync + fstrim (not vfat) + umount each, deactivate
 * LVM, remove the partition mappings, detach the loop devices. Fails on the first error, except fstrim (an
 * optimisation that some backing stores cannot do).
 */
export function buildUmountScript(plan: BlockDevicePlan, opts: TeardownOptions = {}): string {
  const out = [...header(plan, "umount")];
  for (const m of [...plan.mounts].reverse()) {
    out.push("", `# mount ${oneLine(m.name)}: ${oneLine(m.mountPoint)}`, "sync");
    if (m.fsType !== "vfat" && m.fsType !== "fat") {
      // discard unused blocks so the image stays small; not fatal, as in a skipped optimisation
      out.push(
        `fstrim --verbose ${shellQuote(m.path)} || echo ${shellQuote(`vmdib: fstrim ${m.path} failed; the image stays larger`)} >&2`,
      );
    }
    out.push(`umount ${shellQuote(m.path)}`);
  }
  for (const lvm of [...plan.lvm].reverse()) {
    out.push("", `# lvm ${oneLine(lvm.name)}`);
    for (const lv of lvm.lvs) out.push(`lvchange -an ${shellQuote(`${lv.vg}/${lv.name}`)}`);
    for (const vg of lvm.vgs) out.push(`vgchange -an ${shellQuote(vg.name)}`);
  }
  for (const d of [...plan.disks].reverse()) {
    const partitioned = opts.partitions !== "partscan" && plan.partitionTables.some((t) => t.disk === d.name);
    out.push("", `# local_loop ${oneLine(d.name)}`);
    out.push(loopsOf(d));
    out.push(
      `[ "\${#loops[@]}" -gt 0 ] || { echo ${shellQuote(`vmdib: no loop device is attached to ${d.backing.path}`)} >&2; exit 1; }`,
    );
    out.push(FOR_EACH_LOOP);
    if (partitioned) out.push('  kpartx -d "$loop"');
    out.push("  # udev events after the partition changes can hold the device a moment (DIB retries too)");
    out.push(
      '  for try in 1 2 3 4 5 6 7 8 9 10; do losetup -d "$loop" && break; [ "$try" = 10 ] && exit 1; sleep 0.2; done',
    );
    out.push("done");
  }
  out.push("");
  return out.join("\n");
}

/**
 * The error path (DIB's `delete`, minus deleting the image file, which is the caller's): undoes whatever part
 * of the setup happened, in reverse, each step allowed to fail. Safe to run twice or before setup ran at all.
 */
export function buildCleanupScript(plan: BlockDevicePlan, opts: TeardownOptions = {}): string {
  const out = [
    "#!/bin/bash",
    `# vmdib block-device cleanup, generated from ${oneLine(plan.source)}; runs as root in the appliance.`,
    "# Best effort: every step may fail because setup stopped before it.",
    "set -u -o pipefail",
    "export LC_ALL=C",
    ...NO_UDEV,
    "",
    "# Everything under the mount base, including mounts that later phases added (proc, dev, ...), deepest first.",
    `if mountpoint -q ${shellQuote(plan.mountBase)}; then`,
    `  umount --recursive ${shellQuote(plan.mountBase)} || umount --recursive --lazy ${shellQuote(plan.mountBase)} || true`,
    "fi",
  ];
  for (const m of [...plan.mounts].reverse()) {
    if (m.path === plan.mountBase) continue;
    out.push(
      `mountpoint -q ${shellQuote(m.path)} && { umount ${shellQuote(m.path)} || umount --lazy ${shellQuote(m.path)} || true; }`,
    );
  }
  for (const lvm of [...plan.lvm].reverse()) {
    for (const vg of lvm.vgs) out.push(`vgchange -an ${shellQuote(vg.name)} >/dev/null 2>&1 || true`);
  }
  for (const d of [...plan.disks].reverse()) {
    out.push(loopsOf(d));
    out.push(FOR_EACH_LOOP);
    if (opts.partitions !== "partscan") out.push('  kpartx -d "$loop" >/dev/null 2>&1 || true');
    out.push('  losetup -d "$loop" || true');
    out.push("done");
  }
  out.push("exit 0", "");
  return out.join("\n");
}

/** fstab fields escape whitespace and backslashes in octal (fstab(5)). */
function fstabField(s: string): string {
  return s.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
}

/** The fstab DIB writes: one line per mount with an fstab entry, in mount order, by LABEL. */
export function buildFstab(plan: BlockDevicePlan): string {
  return plan.fstab
    .map((f) =>
      [f.spec, f.mountPoint, f.fsType, f.options, String(f.dumpFreq), String(f.fsckPassno)].map(fstabField).join(" "),
    )
    .map((l) => `${l}\n`)
    .join("");
}

/** Writes the fstab into a tree (DIB writes it into the built tree before copying it into the image). */
export function buildFstabScript(plan: BlockDevicePlan, targetRoot: string): string {
  const etc = `${targetRoot.replace(/\/+$/, "")}/etc`;
  const lines = buildFstab(plan).split("\n").filter(Boolean);
  return [
    ...header(plan, "fstab"),
    `mkdir -p -- ${shellQuote(etc)}`,
    lines.length
      ? `printf '%s\\n' ${lines.map(shellQuote).join(" ")} > ${shellQuote(`${etc}/fstab`)}`
      : `: > ${shellQuote(`${etc}/fstab`)}`,
    "",
  ].join("\n");
}
