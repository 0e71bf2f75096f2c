// Sizes for the block-device layer (pure): DIB's size specs ("100%", "8MiB", "3G"), the --image-size /
// --image-extra-size flag values, and DIB's rule for how big the image file is.
import { UsageError } from "../errors.js";

export const KiB = 1024;
export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;
export const TiB = 1024 ** 4;

/** Largest image vmdib will plan: catches typos such as `--image-size 1e9` before a file that size is made. */
export const MAX_IMAGE_BYTES = 16 * TiB;

/**
 * Units of DIB's block-device size specs (diskimage_builder/block_device/utils.py): binary with `i`,
 * decimal without, a bare number is bytes. Note `G` is 10^9 here, unlike in the --image-size flag.
 */
const SPEC_UNITS: Readonly<Record<string, number>> = {
  TiB,
  GiB,
  MiB,
  KiB,
  TB: 1000 ** 4,
  GB: 1000 ** 3,
  MB: 1000 ** 2,
  KB: 1000,
  T: 1000 ** 4,
  G: 1000 ** 3,
  M: 1000 ** 2,
  K: 1000,
  B: 1,
  "": 1,
};

/** A parsed size spec: absolute bytes, or a percentage of the space still free where it is used. */
export type SizeSpec =
  | { readonly kind: "bytes"; readonly bytes: number }
  | { readonly kind: "percent"; readonly percent: number };

/**
 * Parses a block-device size spec as DIB does: `100%`, `8MiB`, `3G`, `1.5GiB`, `512` (bytes).
 * Returns undefined when the text is not a size; the caller names the node in its error.
 */
export function parseSizeSpec(raw: unknown): SizeSpec | undefined {
  const text = typeof raw === "number" ? String(raw) : typeof raw === "string" ? raw.trim() : undefined;
  if (text === undefined || text === "") return undefined;
  const pct = /^(\d+(?:\.\d+)?|\.\d+)\s*%$/.exec(text);
  if (pct) {
    const percent = Number(pct[1]);
    return percent > 0 && percent <= 100 ? { kind: "percent", percent } : undefined;
  }
  const m = /^(\d+(?:\.\d+)?|\.\d+)? ?([A-Za-z]*)$/.exec(text);
  if (!m) return undefined;
  const factor = SPEC_UNITS[m[2] ?? ""];
  if (factor === undefined) return undefined;
  // DIB: a unit without a number means one of it ("MiB" = 1 MiB).
  const count = m[1] === undefined ? 1 : Number(m[1]);
  const bytes = Math.floor(count * factor);
  return Number.isFinite(bytes) && bytes > 0 ? { kind: "bytes", bytes } : undefined;
}

/** Resolves a size spec against the space still free (DIB's parse_rel_size_spec), in bytes. */
export function resolveSizeSpec(spec: SizeSpec, freeBytes: number): number {
  return spec.kind === "bytes" ? spec.bytes : Math.floor((freeBytes * spec.percent) / 100);
}

/** Units of the --image-size / --image-extra-size flags: all binary, as DIB computes its "GB" as GiB. */
const FLAG_UNITS: Readonly<Record<string, number>> = {
  k: KiB,
  kb: KiB,
  kib: KiB,
  m: MiB,
  mb: MiB,
  mib: MiB,
  g: GiB,
  gb: GiB,
  gib: GiB,
  t: TiB,
  tb: TiB,
  tib: TiB,
};

/**
 * Parses an --image-size / --image-extra-size value (also DIB_IMAGE_SIZE / DIB_IMAGE_EXTRA_SIZE) to bytes.
 * A plain number is GiB: disk-image-create multiplies DIB_IMAGE_SIZE by 1024*1024 KiB, and its help calls both
 * values "GB". Units K/M/G/T (with optional B or iB) are accepted, all binary. Rejects 0, negatives, NaN,
 * exponents and anything above MAX_IMAGE_BYTES with a UsageError naming `setting`.
 */
export function parseImageSizeFlag(raw: string, setting: string): number {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$/.exec(raw);
  const factor = m ? (m[2] === "" ? GiB : FLAG_UNITS[(m[2] ?? "").toLowerCase()]) : undefined;
  const bytes = m && factor !== undefined ? Math.floor(Number(m[1]) * factor) : Number.NaN;
  if (!Number.isFinite(bytes) || bytes < KiB || bytes > MAX_IMAGE_BYTES) {
    throw new UsageError(`${setting}: '${raw}' is not a usable size`, {
      hint: `Give a positive size up to 16 TiB: a plain number means GiB (as in DIB), or use a unit such as 512M or 2G.`,
    });
  }
  return bytes;
}

export interface ImageSizeInput {
  /** Disk usage of the built tree in bytes (as `du -a -c -x` reports it, times 1024). */
  readonly treeBytes: number;
  /** --image-size / DIB_IMAGE_SIZE in bytes: the size of the image, the tree is not measured. */
  readonly imageSize?: number | undefined;
  /** --image-extra-size / DIB_IMAGE_EXTRA_SIZE in bytes: added to the tree instead of DIB's 1/0.6 headroom. */
  readonly extraSize?: number | undefined;
  /** Root filesystem type (DIB_ROOT_FSTYPE): ext4 adds room for the journal when the size is computed. */
  readonly rootFsType: string;
  /** --mkfs-journal-size / DIB_JOURNAL_SIZE in MiB, default 64 as in DIB. */
  readonly journalSizeMiB?: number | undefined;
  /** The element set holds block-device-efi (or another element with that in its name): DIB adds 525 MiB. */
  readonly efi?: boolean | undefined;
}

/**
 * DIB's image size rule (disk-image-create, after post-root.d), in bytes:
 * - with --image-size: that size (extra size and journal are not added, as in DIB);
 * - else du of the tree in KiB, plus --image-extra-size if given, otherwise divided by 0.6;
 *   plus the ext4 journal (64 MiB or --mkfs-journal-size) when the root filesystem is ext4, and then at least
 *   four journals (unlike DIB, whose small ext4 images fail in mke2fs);
 * - plus 525 MiB for an EFI system partition when block-device-efi is in the element set (always, as in DIB);
 * - rounded up to a multiple of 64 KiB (qemu-img compresses such images correctly).
 */
export function imageSizeBytes(input: ImageSizeInput): number {
  if (!Number.isFinite(input.treeBytes) || input.treeBytes < 0) {
    throw new RangeError(`treeBytes must be a non-negative number, got ${input.treeBytes}`);
  }
  let kib: number;
  if (input.imageSize !== undefined) {
    kib = Math.floor(input.imageSize / KiB);
  } else {
    const du = Math.ceil(input.treeBytes / KiB);
    kib = input.extraSize !== undefined ? du + Math.floor(input.extraSize / KiB) : Math.floor(du / 0.6);
    if (input.rootFsType === "ext4") {
      const journalKiB = (input.journalSizeMiB ?? 64) * 1024;
      // mke2fs refuses a journal bigger than a quarter-ish of the filesystem ("Total journal size too big"); DIB
      // then fails on small trees. Keep the filesystem at least four journals large.
      kib = Math.max(kib + journalKiB, 4 * journalKiB);
    }
  }
  if (input.efi) kib += 525 * 1024;
  if (kib % 64 !== 0) kib += 64 - (kib % 64);
  return kib * KiB;
}
