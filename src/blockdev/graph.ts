// The block-device plan (pure): DIB's config graph → validated, ordered, serialisable BlockDevicePlan with every
// size, partition start, label, UUID, mount and fstab line decided on the host, before anything runs in the guest.
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { UsageError } from "../errors.js";
import type { BlockDeviceConfig, ConfigEntry } from "./config.js";
import { MAX_IMAGE_BYTES, MiB, parseSizeSpec, resolveSizeSpec, type SizeSpec } from "./size.js";

const SECTOR = 512;

/** A block device the guest will have, named symbolically: the real loop device is only known at run time. */
export type DeviceRef =
  /** The loop device of a local_loop (IMAGE_BLOCK_DEVICE for image0). */
  | { readonly kind: "disk"; readonly disk: string }
  /** A partition as kpartx maps it: /dev/mapper/<loopN>p<number>. */
  | { readonly kind: "partition"; readonly disk: string; readonly number: number }
  /** A logical volume: /dev/mapper/<vg>-<lv> (dashes in the names doubled, as device-mapper does). */
  | { readonly kind: "lv"; readonly vg: string; readonly lv: string };

export interface BlockDevicePlanParams {
  /** Size of a local_loop that sets none (DIB's image-size parameter): the result of imageSizeBytes(). */
  readonly imageSizeBytes: number;
  /** Guest directory for the image files `<local_loop name>.raw` (DIB's image-dir). */
  readonly imageDir: string;
  /** Guest directory where "/" of the image is mounted (DIB's mount-base, $TMP_BUILD_DIR/mnt). */
  readonly mountBase: string;
  /**
   * local_loop name → an existing block device in the guest to use instead of creating `<imageDir>/<name>.raw`
   * (e.g. `/dev/disk/by-id/virtio-<serial>` for a sparse file of the host attached as a virtio disk).
   */
  readonly devices?: Readonly<Record<string, string>> | undefined;
  /** FS_TYPE: type of the `mkfs_root` filesystem when the config sets none. Default ext4. */
  readonly fsType?: string | undefined;
  /** --root-label: label of `mkfs_root` when the config sets none. Default cloudimg-rootfs (img-rootfs for xfs). */
  readonly rootLabel?: string | undefined;
  /** MKFS_OPTS / --mkfs-options: extra mkfs arguments for `mkfs_root`, split on whitespace (never shell-evaluated). */
  readonly mkfsOptions?: string | undefined;
  /** --mkfs-journal-size / DIB_JOURNAL_SIZE in MiB for an ext4 root; default 64 as in DIB. */
  readonly journalSizeMiB?: number | undefined;
  /** --max-online-resize in filesystem blocks: `-E resize=N` for an ext2/3/4 root. */
  readonly maxOnlineResize?: number | undefined;
  /**
   * Seed for every identifier DIB would draw at random (filesystem UUIDs, vfat volume ids, MBR disk id, GPT
   * GUIDs): the same config, params and seed give the same image metadata. Default "vmdib".
   */
  readonly uuidSeed?: string | undefined;
}

export interface DiskPlan {
  readonly name: string;
  readonly sizeBytes: number;
  /** A sparse file the setup script creates, or an existing block device it attaches. */
  readonly backing:
    | { readonly kind: "file"; readonly path: string }
    | { readonly kind: "device"; readonly path: string };
  readonly device: DeviceRef;
}

export interface PartitionPlan {
  readonly name: string;
  /** Partition number as the kernel/kpartx count it: 1-4 primary, 5+ logical (MBR). */
  readonly number: number;
  readonly startSector: number;
  readonly sizeSectors: number;
  /** MBR: the type byte as two hex digits ("83"); GPT: the type GUID. */
  readonly type: string;
  readonly flags: readonly string[];
  /** MBR active flag (the `boot` flag); for GPT DIB sets no attribute and neither do we. */
  readonly bootable: boolean;
  /** MBR: a logical partition inside the extended one (no `primary` flag). */
  readonly logical: boolean;
  /** GPT: the partition's unique GUID (absent for MBR). */
  readonly uuid?: string;
  readonly device: DeviceRef;
}

export interface PartitionTablePlan {
  /** The partitioning entry's name (it is not a graph node in DIB; its partitions are). */
  readonly name: string;
  readonly disk: string;
  readonly label: "mbr" | "gpt";
  readonly alignBytes: number;
  /** MBR disk signature ("0x1234abcd") or GPT disk GUID. */
  readonly diskId: string;
  /** MBR: the extended partition holding the logical ones, from its start to the end of the disk (as DIB). */
  readonly extended?: { readonly number: number; readonly startSector: number; readonly sizeSectors: number };
  readonly partitions: readonly PartitionPlan[];
}

export interface LvmPlan {
  readonly name: string;
  readonly pvs: readonly {
    readonly name: string;
    readonly base: string;
    readonly device: DeviceRef;
    readonly options: readonly string[];
  }[];
  readonly vgs: readonly {
    readonly name: string;
    readonly pvs: readonly string[];
    readonly options: readonly string[];
  }[];
  readonly lvs: readonly {
    readonly name: string;
    readonly vg: string;
    /** lvcreate -L (LVM units: M is MiB) */
    readonly size?: string;
    /** lvcreate -l (extents or a percentage such as 28%VG) */
    readonly extents?: string;
    readonly options: readonly string[];
    readonly device: DeviceRef;
  }[];
}

export const MKFS_TYPES = ["ext2", "ext3", "ext4", "xfs", "vfat", "fat", "btrfs"] as const;
export type MkfsType = (typeof MKFS_TYPES)[number];

export interface FilesystemPlan {
  readonly name: string;
  readonly base: string;
  readonly device: DeviceRef;
  readonly type: MkfsType;
  /** Always set (DIB: defaults to the node name; vfat labels upper-cased). */
  readonly label: string;
  /** UUID (vfat: volume id XXXX-XXXX); undefined only when the config says `uuid: random` (mkfs then picks). */
  readonly uuid?: string;
  /** Extra mkfs arguments, one array item per argument. */
  readonly opts: readonly string[];
}

export interface MountPlan {
  readonly name: string;
  /** The mkfs node mounted here. */
  readonly base: string;
  readonly mountPoint: string;
  /** Absolute guest path: mountBase + mountPoint. */
  readonly path: string;
  readonly fsType: MkfsType;
  readonly device: DeviceRef;
}

export interface FstabEntry {
  readonly name: string;
  /** The mount node this line is for. */
  readonly mount: string;
  /** `LABEL=<label>` as DIB writes it (every filesystem has a label, so DIB never falls back to UUID=). */
  readonly spec: string;
  readonly mountPoint: string;
  readonly fsType: MkfsType;
  readonly options: string;
  readonly dumpFreq: number;
  readonly fsckPassno: number;
}

/** One step of the setup script, in execution order; names refer to the plan's lists. */
export type SetupStep =
  | { readonly op: "disk"; readonly name: string }
  | { readonly op: "partition"; readonly name: string }
  | { readonly op: "lvm"; readonly name: string }
  | { readonly op: "mkfs"; readonly name: string }
  | { readonly op: "mount"; readonly name: string };

export interface BlockDevicePlan {
  /** Where the config came from. */
  readonly source: string;
  /** DIB's call order: every graph node (partitions, pvs, vgs, lvs included), parents first, ties in config order. */
  readonly order: readonly { readonly type: string; readonly name: string }[];
  readonly steps: readonly SetupStep[];
  readonly disks: readonly DiskPlan[];
  readonly partitionTables: readonly PartitionTablePlan[];
  readonly lvm: readonly LvmPlan[];
  readonly filesystems: readonly FilesystemPlan[];
  /** In mount order: parents before children ("/" before "/boot" before "/boot/efi"). */
  readonly mounts: readonly MountPlan[];
  /** In mount order, only mounts that have an fstab entry. */
  readonly fstab: readonly FstabEntry[];
  /** DIB's state['blockdev']: every named block device, for IMAGE_BLOCK_DEVICES. */
  readonly blockDevices: readonly { readonly name: string; readonly device: DeviceRef }[];
  /** The local_loop whose device is IMAGE_BLOCK_DEVICE (DIB: image0; here: image0, else the first). */
  readonly imageDisk: string;
  readonly root: { readonly filesystem: string; readonly label: string; readonly fsType: MkfsType };
  readonly mountBase: string;
  /** Exports known before anything runs (DIB_ROOT_LABEL, DIB_ROOT_FSTYPE, DIB_MOUNTPOINTS, DIB_IMAGE_SIZE). */
  readonly env: Readonly<Record<string, string>>;
  /** Exports only the setup script knows (loop device names); it writes them to its exports file. */
  readonly runtimeEnv: readonly string[];
  /** Things DIB accepts silently that are probably mistakes (unknown keys, ignored settings). */
  readonly warnings: readonly string[];
}

export const RUNTIME_ENV = [
  "IMAGE_BLOCK_DEVICE",
  "IMAGE_BLOCK_DEVICE_WITHOUT_PART",
  "IMAGE_BLOCK_DEVICES",
  "TMP_IMAGE_PATH",
] as const;

/** sgdisk's 4-digit type codes that DIB configs use, as the GUIDs sfdisk writes. A full GUID is accepted as is. */
export const GPT_TYPE_CODES: Readonly<Record<string, string>> = {
  "0700": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", // Microsoft basic data
  "4100": "9E1A2D38-C612-4316-AA26-8B49521E5A8B", // PowerPC PReP boot
  "8200": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", // Linux swap
  "8300": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", // Linux filesystem
  "8301": "8DA63339-0007-60C0-C436-083AC8230908", // Linux reserved
  "8302": "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", // Linux /home
  "8303": "44479540-F297-41B2-9AF7-D131D5F0458A", // Linux root (x86)
  "8304": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", // Linux root (x86-64)
  "8305": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE", // Linux root (ARM-64)
  "8306": "3B8F8425-20E0-4F3B-907F-1A25A76F98E8", // Linux /srv
  "8E00": "E6D6D379-F507-44C2-A23C-238F2A3DF928", // Linux LVM
  EA00: "BC13C2FF-59E6-4262-A352-B275FD6F7172", // XBOOTLDR
  EF00: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", // EFI system
  EF02: "21686148-6449-6E6F-744E-656564454649", // BIOS boot
  FD00: "A19D880F-05FC-4D3B-A006-743F0F84911E", // Linux RAID
};

const LABEL_MAX: Readonly<Record<MkfsType, number>> = {
  ext2: 16,
  ext3: 16,
  ext4: 16,
  xfs: 12,
  vfat: 11,
  fat: 11,
  btrfs: 255,
};
const PARTITION_FLAGS = ["boot", "primary", "esp", "bios_grub"] as const;
const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  local_loop: ["size", "directory"],
  partitioning: ["label", "align", "partitions"],
  partition: ["name", "base", "flags", "size", "type"],
  lvm: ["pvs", "vgs", "lvs"],
  mkfs: ["type", "label", "opts", "uuid"],
  mount: ["mount_point"],
  fstab: ["options", "dump-freq", "fsck-passno"],
};
/** Node names reach sfdisk scripts, device-mapper names and bash array keys: keep them to printable, quote-free text. */
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.:+@ -]{0,63}$/;
/** LVM's own rule for VG and LV names (lvm(8), "VALID NAMES"). */
const LVM_NAME_RE = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** A node of the dependency graph, as DIB's plugins create them. */
interface GraphNode {
  readonly type: "local_loop" | "partition" | "lvm" | "pv" | "vg" | "lv" | "mkfs" | "mount" | "fstab";
  readonly name: string;
  /** The nodes it is built on, as the config names them (checked for existence and kind). */
  readonly bases: readonly string[];
  /** Dependency edges into this node: its bases plus ordering edges (previous partition, parent mount). */
  readonly from: string[];
  readonly to: string[];
  readonly index: number;
  /** The partitioning / lvm entry this node belongs to. */
  readonly owner?: string;
}

class Ctx {
  readonly warnings: string[] = [];
  constructor(readonly source: string) {}
  fail(node: string, what: string, hint: string): never {
    throw new UsageError(`block-device config (${this.source}): ${node}: ${what}`, { hint });
  }
  warn(node: string, what: string): void {
    this.warnings.push(`${node}: ${what}`);
  }
}

function describe(type: string, name: string): string {
  return `${type} '${name}'`;
}

/** A deterministic identifier: SHA-256 of seed and purpose, shaped as an RFC 9562 version-8 ("custom") UUID. */
export function derivedUuid(seed: string, purpose: string): string {
  const h = createHash("sha256").update(`${seed}\0${purpose}`).digest();
  h[6] = ((h[6] ?? 0) & 0x0f) | 0x80;
  h[8] = ((h[8] ?? 0) & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

function derivedHex32(seed: string, purpose: string): string {
  const x = createHash("sha256").update(`${seed}\0${purpose}`).digest().subarray(0, 4).toString("hex");
  return x === "00000000" ? "00000001" : x; // a zero MBR signature means "none" to some tools
}

function checkName(ctx: Ctx, type: string, name: string): void {
  if (!NAME_RE.test(name)) {
    ctx.fail(
      describe(type, name),
      "the name has characters vmdib does not allow in node names",
      "Use letters, digits, spaces and _ . : + @ - (at most 64, not starting with a space or -).",
    );
  }
}

function checkKnownKeys(ctx: Ctx, type: string, name: string, values: Readonly<Record<string, unknown>>): void {
  const known = KNOWN_KEYS[type] ?? [];
  for (const k of Object.keys(values)) {
    if (!known.includes(k)) ctx.warn(describe(type, name), `unknown key '${k}' ignored (known: ${known.join(", ")})`);
  }
}

function scalarString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  return undefined;
}

function argList(ctx: Ctx, node: string, key: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return v.trim().split(/\s+/).filter(Boolean);
  if (Array.isArray(v) && v.every((x) => scalarString(x) !== undefined)) return v.map((x) => scalarString(x) as string);
  return ctx.fail(
    node,
    `'${key}' must be a string or a list of strings`,
    `Write ${key}: ["--force"] or ${key}: "--force".`,
  );
}

function sizeOf(ctx: Ctx, node: string, raw: unknown, allowPercent: boolean): SizeSpec {
  const spec = parseSizeSpec(raw);
  if (!spec || (spec.kind === "percent" && !allowPercent)) {
    return ctx.fail(
      node,
      `size '${String(raw)}' is not valid`,
      allowPercent
        ? "Use a percentage of the space left (100%, 40%) or an absolute size such as 8MiB, 1GiB, 3G (G = 10^9, GiB = 2^30)."
        : "Use an absolute size such as 8MiB, 1GiB or 3G (G = 10^9, GiB = 2^30).",
    );
  }
  return spec;
}

/** True if `s` has a C0 control character or DEL. */
export function hasControlChar(s: string): boolean {
  for (const c of s) {
    const n = c.charCodeAt(0);
    if (n < 0x20 || n === 0x7f) return true;
  }
  return false;
}

/** Parents before children, independent of spelling: by depth, then by path. */
export function compareMountPoints(a: string, b: string): number {
  const depth = (p: string) => (p === "/" ? 0 : p.split("/").length - 1);
  return depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0);
}

function normalizeMountPoint(ctx: Ctx, node: string, raw: unknown): string {
  if (typeof raw !== "string" || !raw.startsWith("/")) {
    return ctx.fail(
      node,
      `mount_point '${String(raw)}' is not an absolute path`,
      "Write mount_point: / or /boot, /var/log, ...",
    );
  }
  // Control characters would need escaping in fstab and break line-oriented tools; ".." would escape mountBase.
  if (hasControlChar(raw) || raw.split("/").includes("..")) {
    return ctx.fail(
      node,
      `mount_point ${JSON.stringify(raw)} contains '..' or control characters`,
      "Use a plain absolute path.",
    );
  }
  const p = posix.normalize(raw);
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}

/** Renders a device reference for messages and JSON consumers that want a path-like string. */
export function deviceLabel(d: DeviceRef): string {
  switch (d.kind) {
    case "disk":
      return `<loop of ${d.disk}>`;
    case "partition":
      return `/dev/mapper/<loop of ${d.disk}>p${d.number}`;
    case "lv":
      return `/dev/mapper/${dmName(d.vg, d.lv)}`;
  }
}

/** device-mapper's name for an LV: dashes inside the VG and LV names are doubled. */
export function dmName(vg: string, lv: string): string {
  return `${vg.replaceAll("-", "--")}-${lv.replaceAll("-", "--")}`;
}

interface Facts {
  disks: Map<string, DiskPlan>;
  tables: PartitionTablePlan[];
  /** partition name → its table */
  partitionOf: Map<string, PartitionTablePlan>;
  lvms: LvmPlan[];
  lvmOf: Map<string, LvmPlan>;
  lvDevice: Map<string, DeviceRef>;
}

/**
 * Plans the block device: validates the config against DIB's rules (plus the checks DIB leaves to a failing
 * command), merges the root-filesystem parameters into `mkfs_root` as DIB does, computes the partition layout in
 * sectors, orders everything, and derives labels, UUIDs, mounts, fstab and exports. Throws UsageError naming the
 * node and what to do.
 */
export function planBlockDevice(config: BlockDeviceConfig, params: BlockDevicePlanParams): BlockDevicePlan {
  const ctx: Ctx = new Ctx(config.source);
  const seed = params.uuidSeed ?? "vmdib";
  if (!posix.isAbsolute(params.mountBase) || !posix.isAbsolute(params.imageDir)) {
    throw new RangeError("mountBase and imageDir must be absolute guest paths");
  }
  const entries = config.entries;
  for (const e of entries) {
    checkName(ctx, e.type, e.name);
    checkKnownKeys(ctx, e.type, e.name, e.values);
  }

  // --- graph nodes, as DIB's plugins create them ---
  const nodes = new Map<string, GraphNode>();
  let index = 0;
  const add = (n: Omit<GraphNode, "index">) => {
    if (nodes.has(n.name)) {
      ctx.fail(
        describe(n.type, n.name),
        "the name is used twice",
        "Give every node (partitions, pvs, vgs, lvs included) a unique name.",
      );
    }
    nodes.set(n.name, { ...n, index: index++ });
  };
  const baseName = (e: ConfigEntry): string => {
    if (typeof e.base !== "string" || e.base === "") {
      return ctx.fail(
        describe(e.type, e.name),
        "has no 'base'",
        `Set base: to the name of the node this ${e.type} is built on.`,
      );
    }
    return e.base;
  };

  for (const e of entries) {
    switch (e.type) {
      case "local_loop":
        add({ type: "local_loop", name: e.name, bases: [], from: [], to: [] });
        break;
      case "partitioning": {
        const base = baseName(e);
        const parts = (e.values.partitions ?? []) as Record<string, unknown>[];
        let prev: string | undefined;
        for (const p of parts) {
          const name = p.name as string;
          checkName(ctx, "partition", name);
          checkKnownKeys(ctx, "partition", name, p);
          add({ type: "partition", name, bases: [base], from: prev ? [base, prev] : [base], to: [], owner: e.name });
          prev = name;
        }
        break;
      }
      case "lvm":
        addLvmNodes(ctx, e, add);
        break;
      case "mkfs":
      case "mount":
      case "fstab":
        add({ type: e.type, name: e.name, bases: [baseName(e)], from: [baseName(e)], to: [] });
        break;
    }
  }

  // --- mounts: sorted so each depends on the one before (DIB's mount ordering edges) ---
  const mountEntries = entries.filter((e) => e.type === "mount");
  const mountPointOf = new Map<string, string>();
  for (const e of mountEntries) {
    const mp = normalizeMountPoint(ctx, describe("mount", e.name), e.values.mount_point);
    const dup = [...mountPointOf].find(([, p]) => p === mp);
    if (dup)
      ctx.fail(
        describe("mount", e.name),
        `mount point ${mp} is also used by mount '${dup[0]}'`,
        "Mount each path once.",
      );
    mountPointOf.set(e.name, mp);
  }
  const sortedMounts = [...mountPointOf].sort((a, b) => compareMountPoints(a[1], b[1]));
  sortedMounts.forEach(([name], i) => {
    const prev = sortedMounts[i - 1];
    if (prev) nodes.get(name)?.from.unshift(prev[0]);
  });

  // --- edges must name existing nodes of the right kind ---
  const blockTypes = ["local_loop", "partition", "lv"];
  const wants: Record<string, readonly string[]> = {
    partition: ["local_loop"],
    mkfs: blockTypes,
    mount: ["mkfs"],
    fstab: ["mount"],
    lvm: blockTypes,
  };
  for (const n of nodes.values()) {
    for (const f of n.bases) {
      const target = nodes.get(f);
      if (!target) {
        const hint = [...nodes.keys()].filter((k) => k.toLowerCase() === f.toLowerCase());
        ctx.fail(
          describe(n.type, n.name),
          `base '${f}' is not defined`,
          hint.length > 0
            ? `Did you mean '${hint[0]}'? Names are case-sensitive.`
            : `Define a node named '${f}', or point base: at one of: ${[...nodes.keys()].join(", ")}.`,
        );
      }
      const ok = wants[n.type];
      if (ok && !ok.includes(target.type)) {
        ctx.fail(
          describe(n.type, n.name),
          `base '${f}' is a ${target.type}, but a ${n.type} must be built on a ${ok.join(" or ")}`,
          `Point base: at a ${ok.join(" or ")} node.`,
        );
      }
    }
  }

  const order = topoSort(ctx, nodes);

  // --- disks ---
  const facts: Facts = {
    disks: new Map(),
    tables: [],
    partitionOf: new Map(),
    lvms: [],
    lvmOf: new Map(),
    lvDevice: new Map(),
  };
  for (const e of entries.filter((x) => x.type === "local_loop")) {
    const node = describe("local_loop", e.name);
    let sizeBytes = params.imageSizeBytes;
    if (e.values.size !== undefined) sizeBytes = (sizeOf(ctx, node, e.values.size, false) as { bytes: number }).bytes;
    sizeBytes = Math.ceil(sizeBytes / SECTOR) * SECTOR;
    if (!(sizeBytes >= MiB && sizeBytes <= MAX_IMAGE_BYTES)) {
      ctx.fail(
        node,
        `image size ${sizeBytes} bytes is outside 1 MiB .. 16 TiB`,
        "Set a sensible size: or --image-size.",
      );
    }
    const dir = e.values.directory === undefined ? params.imageDir : e.values.directory;
    if (typeof dir !== "string" || !posix.isAbsolute(dir)) {
      ctx.fail(
        node,
        `directory '${String(dir)}' is not an absolute path`,
        "Remove directory: to use the build's image directory.",
      );
    }
    const device = params.devices?.[e.name];
    facts.disks.set(e.name, {
      name: e.name,
      sizeBytes,
      backing: device ? { kind: "device", path: device } : { kind: "file", path: posix.join(dir, `${e.name}.raw`) },
      device: { kind: "disk", disk: e.name },
    });
  }
  if (facts.disks.size === 0) {
    ctx.fail("config", "has no local_loop", "Add '- local_loop: {name: image0}' as the first entry.");
  }

  // --- partition tables ---
  for (const e of entries.filter((x) => x.type === "partitioning")) {
    const table = planPartitionTable(ctx, e, facts, seed);
    facts.tables.push(table);
    for (const p of table.partitions) facts.partitionOf.set(p.name, table);
  }

  // --- lvm ---
  const deviceOf = (name: string): DeviceRef => {
    const disk = facts.disks.get(name);
    if (disk) return disk.device;
    const table = facts.partitionOf.get(name);
    const part = table?.partitions.find((p) => p.name === name);
    if (part) return part.device;
    const lv = facts.lvDevice.get(name);
    if (lv) return lv;
    throw new Error(`internal: no device for ${name}`);
  };
  for (const e of entries.filter((x) => x.type === "lvm")) {
    const lvm = planLvm(ctx, e, deviceOf);
    facts.lvms.push(lvm);
    for (const lv of lvm.lvs) facts.lvDevice.set(lv.name, lv.device);
    for (const n of [...lvm.pvs, ...lvm.vgs, ...lvm.lvs]) facts.lvmOf.set(n.name, lvm);
  }

  // --- filesystems, with the root parameters merged into mkfs_root (DIB's _merge_rootfs_params) ---
  const mkfsEntries = entries.filter((x) => x.type === "mkfs");
  const rootMount = mountEntries.find((e) => mountPointOf.get(e.name) === "/");
  if (!rootMount) {
    ctx.fail(
      "config",
      'no mount has mount_point "/"',
      "Add a mount with mount_point: / under the root filesystem's mkfs (DIB needs it for DIB_ROOT_LABEL and the bootloader).",
    );
  }
  const rootMkfsName = baseName(rootMount);
  const typeOf = (e: ConfigEntry): unknown =>
    e.name === "mkfs_root" && e.values.type === undefined ? (params.fsType ?? "ext4") : e.values.type;
  const rootEntry = mkfsEntries.find((e) => e.name === rootMkfsName);
  const rootType = rootEntry ? typeOf(rootEntry) : undefined;
  const rootOpts = rootFsOptions(ctx, params, rootType);
  const labels = new Map<string, string>();
  const filesystems: FilesystemPlan[] = mkfsEntries.map((e) => {
    const node = describe("mkfs", e.name);
    const type = typeOf(e);
    if (type === undefined) ctx.fail(node, "has no type", `Set type: to one of ${MKFS_TYPES.join(", ")}.`);
    if (!(MKFS_TYPES as readonly unknown[]).includes(type)) {
      ctx.fail(node, `filesystem type '${String(type)}' is not supported`, `Use one of ${MKFS_TYPES.join(", ")}.`);
    }
    const fsType = type as MkfsType;
    const isRootMerge = e.name === "mkfs_root";
    let label = scalarString(e.values.label);
    if (e.values.label !== undefined && label === undefined)
      ctx.fail(node, "label must be a string", 'Quote it: label: "..."');
    if (label === undefined && isRootMerge) {
      label =
        params.rootLabel !== undefined && params.rootLabel !== ""
          ? params.rootLabel
          : fsType === "xfs"
            ? "img-rootfs"
            : "cloudimg-rootfs";
    }
    label ??= e.name;
    if (fsType === "vfat" || fsType === "fat") label = label.toUpperCase(); // DIB: vfat labels identify the disk upper-cased
    if (label === "" || label.includes("\0") || label.includes("\n"))
      ctx.fail(node, "label is empty or contains a newline", "Give a one-line label.");
    if ([...label].length > LABEL_MAX[fsType]) {
      ctx.fail(
        node,
        `label '${label}' is too long for ${fsType}: ${[...label].length} > ${LABEL_MAX[fsType]}`,
        isRootMerge ? "Shorten --root-label (xfs allows 12 characters, ext4 16, vfat 11)." : "Shorten label:.",
      );
    }
    const other = labels.get(label);
    if (other)
      ctx.fail(
        node,
        `label '${label}' is also used by mkfs '${other}'`,
        "Labels must be unique: fstab and the bootloader find filesystems by label.",
      );
    labels.set(label, e.name);
    const uuid = fsUuid(ctx, node, fsType, e.values.uuid, seed, e.name);
    const opts = isRootMerge && e.values.opts === undefined ? rootOpts : argList(ctx, node, "opts", e.values.opts);
    return {
      name: e.name,
      base: baseName(e),
      device: deviceOf(baseName(e)),
      type: fsType,
      label,
      ...(uuid !== undefined ? { uuid } : {}),
      opts,
    };
  });
  if (params.maxOnlineResize !== undefined && !["ext2", "ext3", "ext4"].includes(String(rootType))) {
    ctx.warn("config", `--max-online-resize applies to ext2/3/4 only; ignored for a ${String(rootType)} root`);
  }
  const fsByName = new Map(filesystems.map((f) => [f.name, f]));
  const rootFs = fsByName.get(rootMkfsName) as FilesystemPlan;

  // --- mounts and fstab ---
  const mountsByName = new Map<string, MountPlan>();
  for (const [name, mountPoint] of sortedMounts) {
    const e = mountEntries.find((m) => m.name === name) as ConfigEntry;
    const fs = fsByName.get(baseName(e)) as FilesystemPlan;
    mountsByName.set(name, {
      name,
      base: fs.name,
      mountPoint,
      path: mountPoint === "/" ? params.mountBase : posix.join(params.mountBase, mountPoint),
      fsType: fs.type,
      device: fs.device,
    });
  }
  const mounts = [...mountsByName.values()];
  const fstabByMount = new Map<string, FstabEntry>();
  for (const e of entries.filter((x) => x.type === "fstab")) {
    const node = describe("fstab", e.name);
    const mount = mountsByName.get(baseName(e)) as MountPlan;
    if (fstabByMount.has(mount.name))
      ctx.fail(node, `mount '${mount.name}' already has an fstab entry`, "Keep one fstab entry per mount.");
    const options = scalarString(e.values.options ?? "defaults");
    if (options === undefined || options === "" || /\s/.test(options)) {
      ctx.fail(
        node,
        `options '${String(e.values.options)}' must be one word`,
        'Separate fstab options with commas: "rw,relatime".',
      );
    }
    const field = (key: string, dflt: number): number => {
      const v = e.values[key] ?? dflt;
      const n = typeof v === "number" ? v : typeof v === "string" && /^\d+$/.test(v) ? Number(v) : Number.NaN;
      if (!Number.isInteger(n) || n < 0 || n > 9)
        ctx.fail(node, `${key} '${String(v)}' is not a number 0-9`, `Write ${key}: ${dflt}.`);
      return n;
    };
    const fs = fsByName.get(mount.base) as FilesystemPlan;
    fstabByMount.set(mount.name, {
      name: e.name,
      mount: mount.name,
      spec: `LABEL=${fs.label}`,
      mountPoint: mount.mountPoint,
      fsType: fs.type,
      options,
      dumpFreq: field("dump-freq", 0),
      fsckPassno: field("fsck-passno", 2),
    });
  }
  const fstab = mounts.flatMap((m) => fstabByMount.get(m.name) ?? []);

  // --- steps in call order; block devices for IMAGE_BLOCK_DEVICES ---
  const steps: SetupStep[] = [];
  const blockDevices: { name: string; device: DeviceRef }[] = [];
  const seenTables = new Set<string>();
  for (const n of order) {
    switch (n.type) {
      case "local_loop":
        steps.push({ op: "disk", name: n.name });
        blockDevices.push({ name: n.name, device: deviceOf(n.name) });
        break;
      case "partition": {
        const table = facts.partitionOf.get(n.name) as PartitionTablePlan;
        if (!seenTables.has(table.name)) steps.push({ op: "partition", name: table.name });
        seenTables.add(table.name);
        blockDevices.push({ name: n.name, device: deviceOf(n.name) });
        break;
      }
      case "lvm":
        steps.push({ op: "lvm", name: n.name });
        break;
      case "lv":
        blockDevices.push({ name: n.name, device: deviceOf(n.name) });
        break;
      case "mkfs":
        steps.push({ op: "mkfs", name: n.name });
        break;
      case "mount":
        steps.push({ op: "mount", name: n.name });
        break;
      default:
        break;
    }
  }

  const imageDisk = facts.disks.has("image0") ? "image0" : (facts.disks.keys().next().value as string);
  const env: Record<string, string> = {
    DIB_ROOT_LABEL: rootFs.label,
    DIB_ROOT_FSTYPE: rootFs.type,
    // DIB's getval mount-points: every mount point in config order, joined by "|" (not valid in a path).
    DIB_MOUNTPOINTS: mountEntries.map((e) => mountPointOf.get(e.name)).join("|"),
    // disk-image-create re-exports the computed size in KiB before the block-device phase.
    DIB_IMAGE_SIZE: String(Math.floor(params.imageSizeBytes / 1024)),
  };

  return {
    source: config.source,
    order: order.map((n) => ({ type: n.type, name: n.name })),
    steps,
    disks: [...facts.disks.values()],
    partitionTables: facts.tables,
    lvm: facts.lvms,
    filesystems,
    mounts,
    fstab,
    blockDevices,
    imageDisk,
    root: { filesystem: rootFs.name, label: rootFs.label, fsType: rootFs.type },
    mountBase: params.mountBase,
    env,
    runtimeEnv: [...RUNTIME_ENV],
    warnings: ctx.warnings,
  };
}

/** MKFS_OPTS as disk-image-create builds them for the root filesystem. */
function rootFsOptions(ctx: Ctx, params: BlockDevicePlanParams, rootType: unknown): string[] {
  const user = (params.mkfsOptions ?? "").trim().split(/\s+/).filter(Boolean);
  let opts = user;
  if (rootType === "ext4") {
    // DIB: a larger inode ratio and a 64 MiB journal, "very conservative to handle images being resized a lot".
    const journal = params.journalSizeMiB ?? 64;
    if (!Number.isInteger(journal) || journal < 1 || journal > 10240) {
      ctx.fail(
        "config",
        `journal size ${journal} MiB is not usable`,
        "Give --mkfs-journal-size as whole MiB between 1 and 10240.",
      );
    }
    opts = ["-i", "4096", "-J", `size=${journal}`, ...opts];
  }
  if (params.maxOnlineResize !== undefined && ["ext2", "ext3", "ext4"].includes(String(rootType))) {
    // DIB passes this to every root type, which makes mkfs.xfs fail; only ext* understand it.
    opts = ["-E", `resize=${params.maxOnlineResize}`, ...opts];
  }
  return opts;
}

function fsUuid(ctx: Ctx, node: string, type: MkfsType, raw: unknown, seed: string, name: string): string | undefined {
  const vfat = type === "vfat" || type === "fat";
  if (raw === undefined || raw === null) {
    const u = derivedUuid(seed, `mkfs:${name}`);
    return vfat ? `${u.slice(0, 4)}-${u.slice(4, 8)}`.toUpperCase() : u;
  }
  const s = scalarString(raw);
  if (s === "random") return undefined;
  if (vfat ? s !== undefined && /^[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}$/.test(s) : s !== undefined && UUID_RE.test(s))
    return s;
  return ctx.fail(
    node,
    `uuid '${String(raw)}' is not a valid ${vfat ? "vfat volume id" : "UUID"}`,
    vfat
      ? "Write an 8-digit hex volume id such as 1234-ABCD, 'random' to let mkfs choose, or leave uuid: out (derived from the seed)."
      : "Write a UUID such as 0f2c6a6e-..., 'random' to let mkfs choose, or leave uuid: out (derived from the seed).",
  );
}

function addLvmNodes(ctx: Ctx, e: ConfigEntry, add: (n: Omit<GraphNode, "index">) => void): void {
  const node = describe("lvm", e.name);
  const list = (key: string): Record<string, unknown>[] => {
    const v = e.values[key];
    if (!Array.isArray(v) || v.length === 0)
      ctx.fail(node, `needs a non-empty '${key}' list`, "An lvm entry needs pvs, vgs and lvs lists.");
    return v.map((x, i) => {
      if (typeof x !== "object" || x === null || typeof (x as { name?: unknown }).name !== "string") {
        ctx.fail(node, `${key} item ${i + 1} has no name`, "Give every pv, vg and lv a name.");
      }
      return x as Record<string, unknown>;
    });
  };
  const pvs = list("pvs");
  const vgs = list("vgs");
  const lvs = list("lvs");
  const pvBases = new Set<string>();
  for (const pv of pvs) {
    if (typeof pv.base !== "string")
      ctx.fail(describe("pv", String(pv.name)), "has no base", "Set base: to the partition the physical volume is on.");
    checkName(ctx, "pv", pv.name as string);
    pvBases.add(pv.base);
  }
  // DIB: the lvm node depends on the pvs' devices and every pv depends on it, so all of LVM is made in one step.
  add({ type: "lvm", name: e.name, bases: [...pvBases], from: [...pvBases], to: pvs.map((p) => p.name as string) });
  for (const pv of pvs) add({ type: "pv", name: pv.name as string, bases: [], from: [e.name], to: [], owner: e.name });
  const pvNames = new Set(pvs.map((p) => p.name as string));
  for (const vg of vgs) {
    const name = vg.name as string;
    if (!LVM_NAME_RE.test(name))
      ctx.fail(
        describe("vg", name),
        "is not a valid LVM name",
        "Use letters, digits and + _ . - (not starting with -).",
      );
    const base = vg.base;
    if (!Array.isArray(base) || base.length === 0 || !base.every((b) => typeof b === "string")) {
      ctx.fail(describe("vg", name), "base must be a list of pv names", 'Write base: ["pv"].');
    }
    for (const b of base as string[]) {
      if (!pvNames.has(b))
        ctx.fail(
          describe("vg", name),
          `base '${b}' does not match a pv of lvm '${e.name}'`,
          `Use one of: ${[...pvNames].join(", ")}.`,
        );
    }
    add({ type: "vg", name, bases: [], from: [...(base as string[])], to: [], owner: e.name });
  }
  const vgNames = new Set(vgs.map((v) => v.name as string));
  for (const lv of lvs) {
    const name = lv.name as string;
    if (!LVM_NAME_RE.test(name))
      ctx.fail(
        describe("lv", name),
        "is not a valid LVM name",
        "Use letters, digits and + _ . - (not starting with -).",
      );
    if (typeof lv.base !== "string" || !vgNames.has(lv.base)) {
      ctx.fail(
        describe("lv", name),
        `base '${String(lv.base)}' does not match a vg of lvm '${e.name}'`,
        `Use one of: ${[...vgNames].join(", ")}.`,
      );
    }
    add({ type: "lv", name, bases: [], from: [lv.base], to: [], owner: e.name });
  }
}

function planLvm(ctx: Ctx, e: ConfigEntry, deviceOf: (name: string) => DeviceRef): LvmPlan {
  const items = (key: string) => e.values[key] as Record<string, unknown>[];
  return {
    name: e.name,
    pvs: items("pvs").map((pv) => ({
      name: pv.name as string,
      base: pv.base as string,
      device: deviceOf(pv.base as string),
      options: argList(ctx, describe("pv", pv.name as string), "options", pv.options),
    })),
    vgs: items("vgs").map((vg) => ({
      name: vg.name as string,
      pvs: vg.base as string[],
      options: argList(ctx, describe("vg", vg.name as string), "options", vg.options),
    })),
    lvs: items("lvs").map((lv) => {
      const node = describe("lv", lv.name as string);
      const size = scalarString(lv.size);
      const extents = scalarString(lv.extents);
      if (size === undefined && extents === undefined)
        ctx.fail(node, "needs 'size' or 'extents'", "Write size: 1800M or extents: 28%VG.");
      if (size !== undefined && !/^\d+(\.\d+)?[bBsSkKmMgGtTpPeE]?$/.test(size)) {
        ctx.fail(
          node,
          `size '${size}' is not an LVM size`,
          "Use lvcreate -L syntax such as 1800M or 2G (LVM units are binary).",
        );
      }
      if (size === undefined && extents !== undefined && !/^\d+(%(VG|FREE|PVS|ORIGIN))?$/.test(extents)) {
        ctx.fail(node, `extents '${extents}' is not valid`, "Use lvcreate -l syntax such as 100, 28%VG or 100%FREE.");
      }
      return {
        name: lv.name as string,
        vg: lv.base as string,
        ...(size !== undefined ? { size } : { extents: extents as string }),
        options: argList(ctx, node, "options", lv.options),
        device: { kind: "lv", vg: lv.base as string, lv: lv.name as string } as DeviceRef,
      };
    }),
  };
}

function planPartitionTable(ctx: Ctx, e: ConfigEntry, facts: Facts, seed: string): PartitionTablePlan {
  const node = describe("partitioning", e.name);
  const diskName = e.base as string;
  const disk = facts.disks.get(diskName);
  if (!disk) return ctx.fail(node, `base '${diskName}' is not a local_loop`, "Partition a local_loop node.");
  const label = e.values.label;
  if (label !== "mbr" && label !== "gpt") {
    return ctx.fail(node, `label '${String(label)}' is not mbr or gpt`, "Write label: mbr or label: gpt.");
  }
  if (facts.tables.some((t) => t.disk === diskName)) {
    ctx.fail(node, `local_loop '${diskName}' is already partitioned`, "Use one partitioning entry per disk.");
  }
  const parts = (e.values.partitions ?? []) as Record<string, unknown>[];
  if (parts.length === 0) ctx.fail(node, "has no partitions", "List the partitions under partitions:.");
  let alignBytes = MiB;
  if (e.values.align !== undefined) {
    const a = parseSizeSpec(e.values.align);
    if (a?.kind !== "bytes" || a.bytes % SECTOR !== 0)
      ctx.fail(node, `align '${String(e.values.align)}' is not a multiple of 512 bytes`, "Leave align: out (1 MiB).");
    alignBytes = (a as { bytes: number }).bytes;
  }
  const diskBlocks = disk.sizeBytes / SECTOR;
  const out: PartitionPlan[] = [];
  let extended: PartitionTablePlan["extended"];

  const flagsOf = (p: Record<string, unknown>, pnode: string): string[] => {
    const f = p.flags ?? [];
    if (!Array.isArray(f) || !f.every((x) => typeof x === "string"))
      ctx.fail(pnode, "flags must be a list", "Write flags: [ boot, primary ].");
    for (const x of f as string[]) {
      if (!(PARTITION_FLAGS as readonly string[]).includes(x))
        ctx.fail(pnode, `unknown flag '${x}'`, `Flags are: ${PARTITION_FLAGS.join(", ")}.`);
    }
    if (label === "gpt" && (f as string[]).includes("primary"))
      ctx.fail(pnode, "the primary flag is for mbr only", "Remove primary from the flags of a gpt partition.");
    if (label === "mbr" && (f as string[]).includes("bios_grub"))
      ctx.fail(pnode, "bios_grub is for gpt only", "Use label: gpt for a BIOS boot partition.");
    return f as string[];
  };
  const partSize = (p: Record<string, unknown>, pnode: string): SizeSpec => {
    if (p.size === undefined) ctx.fail(pnode, "has no size", "Write size: 100% or size: 8MiB.");
    return sizeOf(ctx, pnode, p.size, true);
  };

  if (label === "mbr") {
    // DIB's MBR writer (level1/mbr.py): 1 MiB aligned starts, 1 MiB kept free at the end, primaries first, then
    // logical partitions (numbered from 5) each after an EBR, inside one extended partition reaching the disk's end.
    const alignBlocks = alignBytes / SECTOR;
    const align = (b: number) => (b % alignBlocks === 0 ? b : (Math.floor(b / alignBlocks) + 1) * alignBlocks);
    let nextFree = align(1);
    let slot = 0;
    let logicals = 0;
    for (const p of parts) {
      const name = p.name as string;
      const pnode = describe("partition", name);
      const flags = flagsOf(p, pnode);
      const free = disk.sizeBytes - (nextFree + align(1)) * SECTOR;
      const bytes = resolveSizeSpec(partSize(p, pnode), free);
      const primary = flags.includes("primary");
      let start: number;
      let number: number;
      if (primary) {
        if (logicals > 0)
          ctx.fail(
            pnode,
            "a primary partition follows a logical one",
            "List partitions with the primary flag first (as DIB requires).",
          );
        if (slot >= 4)
          ctx.fail(
            pnode,
            "an MBR holds at most 4 primary partitions",
            "Drop the primary flag from later partitions to make them logical, or use gpt.",
          );
        start = align(nextFree);
        number = ++slot;
      } else {
        if (logicals === 0) {
          if (slot >= 4)
            ctx.fail(
              pnode,
              "no MBR slot is left for the extended partition",
              "Use at most 3 primary partitions before logical ones.",
            );
          extended = { number: slot + 1, startSector: nextFree, sizeSectors: diskBlocks - nextFree };
          slot = 4;
        }
        start = align(nextFree + 1); // the EBR takes the sector at nextFree
        number = 5 + logicals++;
      }
      const sizeSectors = Math.floor(bytes / SECTOR);
      if (sizeSectors < 1 || start + sizeSectors > diskBlocks) {
        ctx.fail(
          pnode,
          `needs ${fmtBytes(bytes)} at sector ${start}, but the disk has ${fmtBytes(Math.max(0, (diskBlocks - start) * SECTOR))} left`,
          "Make the partition smaller, use a percentage, or give a bigger --image-size.",
        );
      }
      nextFree = align(start + sizeSectors);
      out.push({
        name,
        number,
        startSector: start,
        sizeSectors,
        type: mbrType(ctx, pnode, p.type, flags),
        flags,
        bootable: flags.includes("boot"),
        logical: !primary,
        device: { kind: "partition", disk: diskName, number },
      });
    }
    return {
      name: e.name,
      disk: diskName,
      label,
      alignBytes,
      diskId: `0x${derivedHex32(seed, `mbr:${diskName}`)}`,
      ...(extended ? { extended } : {}),
      partitions: out,
    };
  }

  // GPT, as DIB drives sgdisk: 2 MiB kept back for the headers, each partition a whole number of MiB placed right
  // after the previous one from sector 2048, percentages of what is left.
  let free = disk.sizeBytes - 2 * MiB;
  let next = 2048;
  parts.forEach((p, i) => {
    const name = p.name as string;
    const pnode = describe("partition", name);
    const flags = flagsOf(p, pnode);
    const bytes = resolveSizeSpec(partSize(p, pnode), free);
    const mib = Math.floor(bytes / MiB);
    if (bytes > free || mib < 1) {
      ctx.fail(
        pnode,
        mib < 1
          ? `size ${fmtBytes(bytes)} is less than 1 MiB`
          : `needs ${fmtBytes(bytes)} but only ${fmtBytes(free)} is left on the disk`,
        "Make the partition bigger than 1 MiB, smaller than the space left, or give a bigger --image-size.",
      );
    }
    const number = i + 1;
    out.push({
      name,
      number,
      startSector: next,
      sizeSectors: mib * 2048,
      type: gptType(ctx, pnode, p.type, flags),
      flags,
      bootable: flags.includes("boot"),
      logical: false,
      uuid: derivedUuid(seed, `gpt-part:${diskName}:${name}`).toUpperCase(),
      device: { kind: "partition", disk: diskName, number },
    });
    next += mib * 2048;
    free -= bytes;
  });
  return {
    name: e.name,
    disk: diskName,
    label,
    alignBytes,
    diskId: derivedUuid(seed, `gpt:${diskName}`).toUpperCase(),
    partitions: out,
  };
}

function mbrType(ctx: Ctx, node: string, raw: unknown, flags: readonly string[]): string {
  if (raw === undefined) return flags.includes("esp") ? "ef" : "83";
  const s = scalarString(raw);
  const m = s === undefined ? null : /^(?:0x)?([0-9a-fA-F]{1,2})$/.exec(s);
  if (
    !m ||
    Number.parseInt(m[1] as string, 16) === 0 ||
    Number.parseInt(m[1] as string, 16) === 0x05 ||
    Number.parseInt(m[1] as string, 16) === 0x0f
  ) {
    return ctx.fail(
      node,
      `type '${String(raw)}' is not an MBR partition type`,
      "MBR types are one hex byte such as '83' (Linux), 'ef' (EFI), '8e' (LVM); 4-digit codes like EF00 are for label: gpt.",
    );
  }
  return (m[1] as string).toLowerCase().padStart(2, "0");
}

function gptType(ctx: Ctx, node: string, raw: unknown, flags: readonly string[]): string {
  if (raw === undefined)
    return GPT_TYPE_CODES[flags.includes("esp") ? "EF00" : flags.includes("bios_grub") ? "EF02" : "8300"] as string;
  const s = scalarString(raw);
  if (s !== undefined && UUID_RE.test(s)) return s.toUpperCase();
  const code = s === undefined ? undefined : GPT_TYPE_CODES[s.toUpperCase().padStart(4, "0")];
  if (!code) {
    return ctx.fail(
      node,
      `GPT type '${String(raw)}' is not known to vmdib`,
      `Use one of ${Object.keys(GPT_TYPE_CODES).join(", ")}, or the type's full GUID.`,
    );
  }
  return code;
}

function fmtBytes(n: number): string {
  return n >= MiB ? `${(n / MiB).toFixed(n % MiB === 0 ? 0 : 1)} MiB` : `${n} bytes`;
}

/** Kahn's algorithm, ties broken by config order, so the same config always gives the same order (DIB's does not). */
function topoSort(ctx: Ctx, nodes: Map<string, GraphNode>): GraphNode[] {
  const indeg = new Map<string, number>();
  const succ = new Map<string, Set<string>>();
  for (const n of nodes.values()) {
    indeg.set(n.name, indeg.get(n.name) ?? 0);
    const edges: Array<[string, string]> = [
      ...n.from.map((f) => [f, n.name] as [string, string]),
      ...n.to.map((t) => [n.name, t] as [string, string]),
    ];
    for (const [a, b] of edges) {
      const s = succ.get(a) ?? new Set<string>();
      if (!s.has(b)) {
        s.add(b);
        indeg.set(b, (indeg.get(b) ?? 0) + 1);
      }
      succ.set(a, s);
    }
  }
  const ready = [...nodes.values()].filter((n) => indeg.get(n.name) === 0);
  const out: GraphNode[] = [];
  while (ready.length > 0) {
    ready.sort((a, b) => a.index - b.index);
    const n = ready.shift() as GraphNode;
    out.push(n);
    for (const s of succ.get(n.name) ?? []) {
      const d = (indeg.get(s) ?? 0) - 1;
      indeg.set(s, d);
      if (d === 0) ready.push(nodes.get(s) as GraphNode);
    }
  }
  if (out.length !== nodes.size) {
    const stuck = [...nodes.values()].filter((n) => !out.includes(n)).map((n) => describe(n.type, n.name));
    ctx.fail(
      stuck.join(", "),
      "these nodes depend on each other in a cycle",
      "Follow their base: references and break the loop.",
    );
  }
  return out;
}

/** What DIB's `dib-block-device init` + `getval` give the build before the image size is known. */
export interface BlockDeviceInitInfo {
  /** DIB_ROOT_LABEL, DIB_ROOT_FSTYPE, DIB_MOUNTPOINTS: disk-image-create exports these before root.d runs. */
  readonly env: Readonly<Record<"DIB_ROOT_LABEL" | "DIB_ROOT_FSTYPE" | "DIB_MOUNTPOINTS", string>>;
  /** The root filesystem's type: what imageSizeBytes() needs as rootFsType (DIB uses DIB_ROOT_FSTYPE there). */
  readonly rootFsType: MkfsType;
  readonly warnings: readonly string[];
}

/**
 * Validates the whole config and answers DIB's early questions (root label, root type, mount points) before the
 * tree exists: call it while planning, so a bad config fails in seconds rather than after debootstrap. Sizes are
 * checked against the largest image vmdib plans; planBlockDevice() checks them again against the real size.
 */
export function blockDeviceInitInfo(
  config: BlockDeviceConfig,
  params: Omit<BlockDevicePlanParams, "imageSizeBytes" | "imageDir" | "mountBase">,
): BlockDeviceInitInfo {
  const plan = planBlockDevice(config, { ...params, imageSizeBytes: MAX_IMAGE_BYTES, imageDir: "/", mountBase: "/" });
  const { DIB_ROOT_LABEL, DIB_ROOT_FSTYPE, DIB_MOUNTPOINTS } = plan.env as Record<string, string>;
  return {
    env: {
      DIB_ROOT_LABEL: DIB_ROOT_LABEL ?? "",
      DIB_ROOT_FSTYPE: DIB_ROOT_FSTYPE ?? "",
      DIB_MOUNTPOINTS: DIB_MOUNTPOINTS ?? "",
    },
    rootFsType: plan.root.fsType,
    warnings: plan.warnings,
  };
}

/** A human summary of the layout for `--dry-run` (the JSON form is the plan itself). */
export function describeBlockDevicePlan(plan: BlockDevicePlan): string[] {
  const gib = (b: number) => (b >= 1024 ** 3 ? `${(b / 1024 ** 3).toFixed(2)} GiB` : `${(b / MiB).toFixed(0)} MiB`);
  const out = [`config: ${plan.source}`];
  for (const d of plan.disks) {
    out.push(`${d.name}: ${gib(d.sizeBytes)} ${d.backing.kind === "file" ? "sparse file" : "disk"} ${d.backing.path}`);
    for (const t of plan.partitionTables.filter((x) => x.disk === d.name)) {
      out.push(`  ${t.label} partition table ${t.name} (id ${t.diskId})`);
      for (const p of t.partitions) {
        const flags = p.flags.length ? ` [${p.flags.join(",")}]` : "";
        out.push(
          `    ${p.number} ${p.name}: ${gib(p.sizeSectors * SECTOR)} at sector ${p.startSector}, type ${p.type}${flags}`,
        );
      }
    }
  }
  for (const l of plan.lvm) {
    out.push(
      `lvm ${l.name}: pvs ${l.pvs.map((p) => `${p.name}(${p.base})`).join(" ")}; vgs ${l.vgs.map((v) => v.name).join(" ")}`,
    );
    for (const lv of l.lvs) out.push(`  lv ${lv.vg}/${lv.name}: ${lv.size ?? lv.extents}`);
  }
  for (const f of plan.filesystems) {
    out.push(
      `mkfs ${f.name}: ${f.type} on ${f.base}, label ${JSON.stringify(f.label)}, uuid ${f.uuid ?? "(mkfs picks)"}${f.opts.length ? `, options ${f.opts.join(" ")}` : ""}`,
    );
  }
  for (const m of plan.mounts) {
    const fstab = plan.fstab.find((x) => x.mount === m.name);
    out.push(
      `mount ${m.mountPoint} <- ${m.base}${fstab ? ` (fstab: ${fstab.spec} ${fstab.options} ${fstab.dumpFreq} ${fstab.fsckPassno})` : ""}`,
    );
  }
  for (const w of plan.warnings) out.push(`warning: ${w}`);
  return out;
}
