// One SETTINGS table for `vmdib build`: flag, DIB environment variable, parser, default and help → frozen options.
import { parseImageSizeFlag } from "./blockdev/size.js";
import { BUILD_FILE_KEYS } from "./buildfile.js";
import { PHASES } from "./elements/phases.js";
import { UsageError } from "./errors.js";
import { parseAccel } from "./vm/probe.js";
import type { Accel } from "./vm/qemu.js";

/** Output formats `-t` accepts, as disk-image-create names them. */
export const IMAGE_TYPES = [
  "qcow2",
  "raw",
  "vhd",
  "vhdx",
  "vmdk",
  "vdi",
  "qed",
  "tar",
  "tgz",
  "squashfs",
  "aci",
  "docker",
] as const;
export type ImageType = (typeof IMAGE_TYPES)[number];

/** The parsed, validated options of one build. Every field comes from a SETTINGS row or the positional elements. */
export interface BuildOptions {
  readonly imageName: string;
  readonly types: readonly ImageType[];
  readonly arch: string;
  readonly trace: number;
  readonly compress: boolean;
  readonly clearEnv: boolean;
  readonly skipBase: boolean;
  readonly packages: readonly string[];
  readonly checksum: boolean;
  /** --image-size in bytes (a plain number is GB, as in DIB). */
  readonly imageSize: number | undefined;
  /** --image-extra-size in bytes. */
  readonly imageExtraSize: number | undefined;
  readonly imageCache: string | undefined;
  readonly maxOnlineResize: number | undefined;
  readonly minTmpfsGb: number;
  readonly journalSizeMb: number;
  readonly mkfsOptions: string;
  readonly noTmpfs: boolean;
  readonly offline: boolean;
  readonly qemuImgOptions: string;
  readonly rootLabel: string | undefined;
  readonly installType: string;
  readonly dockerTarget: string | undefined;
  readonly logfile: string | undefined;
  readonly fsType: string;
  readonly blockDeviceConfig: string | undefined;
  readonly elementsPath: readonly string[];
  readonly dryRun: boolean;
  readonly json: boolean;
  readonly quiet: boolean;
  /** DIB's break points (`--break`, `break=`): where a shell opens during the build. */
  readonly breakAt: readonly string[];
  readonly accel: Accel | undefined;
  readonly noCache: boolean;
  readonly memoryMb: number;
  readonly help: boolean;
  readonly version: boolean;
  /** Build files (`-f`, DIB's diskimage-builder YAML): every image they list, in one helper VM. */
  readonly files: readonly string[];
  /** The elements named on the command line, in order. */
  readonly elements: readonly string[];
}

type Kind = "flag" | "count" | "value" | "list";

/** One row: how a setting is spelled on the command line and in the environment, how it parses, its default. */
interface Setting<K extends keyof BuildOptions = keyof BuildOptions> {
  readonly key: K;
  readonly short?: string;
  readonly long?: string;
  /** The environment variable DIB reads for it; the flag wins over the variable. */
  readonly env?: string;
  readonly kind: Kind;
  /** Placeholder shown in --help for value options. */
  readonly metavar?: string;
  readonly help: string;
  /** What a `flag` row sets when given (default true; `-u` sets compress to false). */
  readonly flagValue?: boolean;
  /** Turns the raw string (value/list items) into the option's value; throws a message on bad input. */
  readonly parse?: (raw: string, where: string) => BuildOptions[K];
  readonly default: BuildOptions[K];
}

const row = <K extends keyof BuildOptions>(s: Setting<K>): Setting<K> => s;

/** Reads DIB's flag-style environment values: `1`, `true`, `yes` mean on; empty and `0` mean off. */
function envBool(raw: string): boolean {
  return !["", "0", "false", "no", "off"].includes(raw.trim().toLowerCase());
}

/** A positive decimal number (DIB sizes are GB or MB, fractions allowed), bounded to catch typos like `1e9`. */
function positive(unit: string, max: number) {
  return (raw: string, where: string): number => {
    const n = /^\s*\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isFinite(n) || n <= 0 || n > max) {
      throw `${where} must be a positive number of ${unit} up to ${max}, got '${raw}'`;
    }
    return n;
  };
}

function nonNegativeInt(raw: string, where: string): number {
  if (!/^\s*\d+\s*$/.test(raw)) throw `${where} must be a whole number, got '${raw}'`;
  return Number(raw);
}

function imageType(raw: string, where: string): ImageType {
  const t = raw.trim();
  if (!(IMAGE_TYPES as readonly string[]).includes(t)) {
    throw `${where}: unknown image type '${t}' (known: ${IMAGE_TYPES.join(", ")})`;
  }
  return t as ImageType;
}

/** DIB's break points: before-PHASE, after-PHASE (PHASE as in root.d without .d), after-error. */
function breakPoint(raw: string, where: string): string {
  const phases = PHASES.map((p) => p.name);
  const m = /^(before|after)-(.+)$/.exec(raw);
  if (raw === "after-error" || (m?.[2] && phases.includes(m[2]))) return raw;
  throw `${where}: unknown break point '${raw}' (before-PHASE, after-PHASE or after-error; phases: ${phases.join(", ")})`;
}

function nonEmpty(raw: string, where: string): string {
  if (raw === "") throw `${where} must not be empty`;
  return raw;
}

/** Items of a comma list (`-t qcow2,tar`, `-p a,b`), empty items dropped. */
function commaItems(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

// The table. Order is the order of --help.
export const SETTINGS = [
  row({
    key: "files",
    short: "f",
    long: "file",
    kind: "list",
    metavar: "FILE",
    help: "build every image of FILE (DIB's diskimage-builder YAML) in one helper VM; repeatable",
    default: [],
  }),
  row({
    key: "imageName",
    short: "o",
    env: "IMAGE_NAME",
    kind: "value",
    metavar: "NAME",
    help: "output image name, without extension",
    parse: nonEmpty,
    default: "image",
  }),
  row({
    key: "types",
    short: "t",
    kind: "list",
    metavar: "TYPE[,TYPE]",
    help: `output formats, comma separated (${IMAGE_TYPES.join(", ")})`,
    default: ["qcow2"],
  }),
  row({
    key: "arch",
    short: "a",
    env: "ARCH",
    kind: "value",
    metavar: "ARCH",
    help: "target architecture",
    parse: nonEmpty,
    default: "amd64",
  }),
  row({
    key: "trace",
    short: "x",
    env: "DIB_DEBUG_TRACE",
    kind: "count",
    help: "trace element scripts (set -x); repeat for more detail",
    default: 0,
  }),
  row({
    key: "compress",
    short: "u",
    kind: "flag",
    flagValue: false,
    help: "uncompressed: do not compress qcow2 output",
    default: true,
  }),
  row({
    key: "clearEnv",
    short: "c",
    kind: "flag",
    help: "clear the environment: pass no host variables into the build",
    default: false,
  }),
  row({
    key: "skipBase",
    short: "n",
    kind: "flag",
    help: "skip the default inclusion of the 'base' element",
    default: false,
  }),
  row({
    key: "packages",
    short: "p",
    kind: "list",
    metavar: "PKG[,PKG]",
    help: "extra packages to install after install.d; repeatable",
    default: [],
  }),
  row({
    key: "checksum",
    long: "checksum",
    env: "DIB_CHECKSUM",
    kind: "flag",
    help: "write MD5 and SHA256 checksum files next to each image",
    default: false,
  }),
  row({
    key: "imageSize",
    long: "image-size",
    env: "DIB_IMAGE_SIZE",
    kind: "value",
    metavar: "SIZE",
    help: "image size: GB, or with a unit (512M, 2G) (default: computed from the tree)",
    parse: parseImageSizeFlag,
    default: undefined,
  }),
  row({
    key: "imageExtraSize",
    long: "image-extra-size",
    env: "DIB_IMAGE_EXTRA_SIZE",
    kind: "value",
    metavar: "SIZE",
    help: "extra free space added to the computed image size: GB, or with a unit",
    parse: parseImageSizeFlag,
    default: undefined,
  }),
  row({
    key: "imageCache",
    long: "image-cache",
    env: "DIB_IMAGE_CACHE",
    kind: "value",
    metavar: "DIR",
    help: "directory for cached downloads (default: the vmdib cache directory)",
    parse: nonEmpty,
    default: undefined,
  }),
  row({
    key: "maxOnlineResize",
    long: "max-online-resize",
    env: "MAX_ONLINE_RESIZE",
    kind: "value",
    metavar: "BLOCKS",
    help: "largest size in filesystem blocks the root filesystem can be resized to online",
    parse: nonNegativeInt,
    default: undefined,
  }),
  row({
    key: "minTmpfsGb",
    long: "min-tmpfs",
    env: "DIB_MIN_TMPFS",
    kind: "value",
    metavar: "GB",
    help: "minimum tmpfs size in GB to build the tree in memory",
    parse: positive("GB", 16384),
    default: 2,
  }),
  row({
    key: "journalSizeMb",
    long: "mkfs-journal-size",
    env: "DIB_JOURNAL_SIZE",
    kind: "value",
    metavar: "MB",
    help: "ext4 journal size in MB",
    parse: positive("MB", 10240),
    default: 64,
  }),
  row({
    key: "mkfsOptions",
    long: "mkfs-options",
    env: "MKFS_OPTS",
    kind: "value",
    metavar: "OPTS",
    help: "options passed to mkfs for the root filesystem, as one string",
    default: "",
  }),
  row({
    key: "noTmpfs",
    long: "no-tmpfs",
    env: "DIB_NO_TMPFS",
    kind: "flag",
    help: "do not build the tree in tmpfs",
    default: false,
  }),
  row({
    key: "offline",
    long: "offline",
    env: "DIB_OFFLINE",
    kind: "flag",
    help: "do not update cached resources; work from the caches only",
    default: false,
  }),
  row({
    key: "qemuImgOptions",
    long: "qemu-img-options",
    env: "QEMU_IMG_OPTIONS",
    kind: "value",
    metavar: "K=V[,K=V]",
    help: "options passed to qemu-img convert (-o)",
    default: "",
  }),
  row({
    key: "rootLabel",
    long: "root-label",
    kind: "value",
    metavar: "LABEL",
    help: "label of the root filesystem (default: cloudimg-rootfs, img-rootfs for xfs)",
    parse: nonEmpty,
    default: undefined,
  }),
  row({
    key: "installType",
    long: "install-type",
    env: "DIB_DEFAULT_INSTALLTYPE",
    kind: "value",
    metavar: "TYPE",
    help: "default installation type of elements: source or package",
    parse: nonEmpty,
    default: "source",
  }),
  row({
    key: "dockerTarget",
    long: "docker-target",
    env: "DOCKER_TARGET",
    kind: "value",
    metavar: "REPO:TAG",
    help: "repository and tag for the docker output (default: the image name)",
    parse: nonEmpty,
    default: undefined,
  }),
  row({
    key: "logfile",
    long: "logfile",
    kind: "value",
    metavar: "FILE",
    help: "write the full build log to FILE; the terminal then shows the steps and the summary",
    parse: nonEmpty,
    default: undefined,
  }),
  row({
    key: "breakAt",
    long: "break",
    env: "break",
    kind: "list",
    metavar: "POINT[,POINT]",
    help: "open a shell in the helper VM at before-PHASE, after-PHASE or after-error (DIB's break=); needs a terminal",
    default: [],
  }),
  row({
    key: "quiet",
    short: "q",
    long: "quiet",
    kind: "flag",
    help: "print only the outputs, the summary and errors",
    default: false,
  }),
  row({
    key: "fsType",
    env: "FS_TYPE",
    kind: "value",
    help: "root filesystem type",
    parse: nonEmpty,
    default: "ext4",
  }),
  row({
    key: "blockDeviceConfig",
    env: "DIB_BLOCK_DEVICE_CONFIG",
    kind: "value",
    help: "block-device YAML, inline or file://PATH",
    default: undefined,
  }),
  row({
    key: "elementsPath",
    env: "ELEMENTS_PATH",
    kind: "value",
    help: "colon-separated element directories searched before vmdib's own",
    parse: (raw) => raw.split(":").filter((p) => p !== ""),
    default: [],
  }),
  row({
    key: "dryRun",
    long: "dry-run",
    kind: "flag",
    help: "print the build plan and exit without starting anything",
    default: false,
  }),
  row({
    key: "json",
    long: "json",
    kind: "flag",
    help: "machine-readable output (with --dry-run: one JSON document)",
    default: false,
  }),
  row({
    key: "accel",
    long: "accel",
    env: "VMDIB_ACCEL",
    kind: "value",
    metavar: "kvm|hvf|tcg",
    help: "accelerator for the helper VM (default: probed)",
    parse: parseAccel,
    default: undefined,
  }),
  row({
    key: "noCache",
    long: "no-cache",
    env: "VMDIB_NO_CACHE",
    kind: "flag",
    help: "bypass vmdib's build caches",
    default: false,
  }),
  row({
    key: "memoryMb",
    long: "memory",
    env: "VMDIB_MEMORY",
    kind: "value",
    metavar: "MB",
    help: "memory of the helper VM in MB",
    parse: positive("MB", 1048576),
    default: 6144,
  }),
  row({ key: "help", short: "h", long: "help", kind: "flag", help: "show this help and exit", default: false }),
  row({ key: "version", long: "version", kind: "flag", help: "show the version and exit", default: false }),
] as const satisfies readonly Setting[];

function flagName(s: Setting): string {
  return s.long ? `--${s.long}` : `-${s.short}`;
}

/** Applies a raw string to a row, turning parser complaints into one UsageError naming where the value came from. */
function parseValue(s: Setting, raw: string, where: string): unknown {
  try {
    if (s.key === "types") return commaItems(raw).map((t) => imageType(t, where));
    if (s.key === "breakAt") return commaItems(raw).map((b) => breakPoint(b, where));
    // A file name may hold a comma.
    if (s.key === "files") return [nonEmpty(raw, where)];
    if (s.kind === "list") return commaItems(raw);
    return s.parse ? s.parse(raw, where) : raw;
  } catch (message) {
    if (typeof message !== "string") throw message;
    throw new UsageError(message, { hint: `see \`vmdib help build\` for ${where}` });
  }
}

/** The command line as given: each setting it names with its parsed value, and the positional elements. */
export interface ParsedArgs {
  readonly values: ReadonlyMap<keyof BuildOptions, unknown>;
  readonly elements: readonly string[];
}

/**
 * argv (after `build`) → the settings it names (parsed, not yet merged with the environment and defaults).
 * Options may follow elements (like getopt's permutation); `--` ends options.
 */
export function parseArgv(argv: readonly string[]): ParsedArgs {
  const values = new Map<keyof BuildOptions, unknown>();
  const elements: string[] = [];
  const byShort = new Map(SETTINGS.filter((s) => "short" in s).map((s) => [(s as Setting).short, s as Setting]));
  const byLong = new Map(SETTINGS.filter((s) => "long" in s).map((s) => [(s as Setting).long, s as Setting]));

  const set = (s: Setting, raw: string | undefined) => {
    const where = flagName(s);
    if (s.kind === "flag") values.set(s.key, s.flagValue ?? true);
    else if (s.kind === "count") values.set(s.key, ((values.get(s.key) as number | undefined) ?? 0) + 1);
    else if (s.kind === "list") {
      const prior = (values.get(s.key) as unknown[] | undefined) ?? [];
      values.set(s.key, [...prior, ...(parseValue(s, raw ?? "", where) as unknown[])]);
    } else values.set(s.key, parseValue(s, raw ?? "", where));
  };
  const takes = (s: Setting) => s.kind === "value" || s.kind === "list";

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") {
      elements.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const s = byLong.get(name);
      if (!s) throw unknownOption(arg);
      if (!takes(s)) {
        if (eq >= 0) throw new UsageError(`option --${name} takes no value`, { hint: "see `vmdib help build`" });
        set(s, undefined);
      } else if (eq >= 0) set(s, arg.slice(eq + 1));
      else {
        const next = argv[++i];
        if (next === undefined) throw missingValue(`--${name}`);
        set(s, next);
      }
    } else if (arg.startsWith("-") && arg.length > 1) {
      // Bundled short flags: `-xu`, and a value option last in the bundle or attached: `-oname`, `-o name`.
      for (let j = 1; j < arg.length; j++) {
        const s = byShort.get(arg[j] as string);
        if (!s) throw unknownOption(`-${arg[j]}`);
        if (!takes(s)) {
          set(s, undefined);
          continue;
        }
        const attached = arg.slice(j + 1);
        if (attached !== "") set(s, attached);
        else {
          const next = argv[++i];
          if (next === undefined) throw missingValue(`-${s.short}`);
          set(s, next);
        }
        break;
      }
    } else elements.push(arg);
  }
  return { values, elements };
}

/** Given settings (flags, or a build file's entry over them) + environment + defaults → frozen options. */
function resolveOptions(
  values: ReadonlyMap<keyof BuildOptions, unknown>,
  elements: readonly string[],
  env: NodeJS.ProcessEnv,
): BuildOptions {
  // -c clears the host environment: only flags and defaults count (DIB re-execs with `exec -c`).
  const clear = values.get("clearEnv") === true;
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS as readonly Setting[]) {
    if (values.has(s.key)) out[s.key] = values.get(s.key);
    else if (!clear && s.env && env[s.env] !== undefined && env[s.env] !== "") {
      const raw = env[s.env] as string;
      if (s.kind === "flag") out[s.key] = envBool(raw);
      else if (s.kind === "count") out[s.key] = /^\d+$/.test(raw) ? Number(raw) : envBool(raw) ? 1 : 0;
      else out[s.key] = parseValue(s, raw, s.env);
    } else out[s.key] = s.default;
  }
  out.elements = [...elements];
  const options = out as unknown as BuildOptions;
  if (!options.help && !options.version) validate(options);
  return Object.freeze(options);
}

/**
 * argv (after `build`) + environment → options. Flags win over DIB's variables, which win over defaults.
 * Options may follow elements (like getopt's permutation); `--` ends options.
 */
export function parseBuildArgs(argv: readonly string[], env: NodeJS.ProcessEnv): BuildOptions {
  const { values, elements } = parseArgv(argv);
  return resolveOptions(values, elements, env);
}

/** Settings a build file's image cannot change: they belong to the one helper VM, or to the whole run. */
export const RUN_SETTINGS: readonly (keyof BuildOptions)[] = [
  "files",
  "dryRun",
  "json",
  "quiet",
  "breakAt",
  "accel",
  "noCache",
  "memoryMb",
  "help",
  "version",
];

/**
 * The options of one image of a build file: the entry's settings win over the command line's, which win over the
 * variables of the host's environment plus the entry's `environment`, which win over defaults. `where` names the
 * entry in messages about its values.
 */
export function imageOptions(
  cli: ParsedArgs,
  env: NodeJS.ProcessEnv,
  image: {
    readonly settings: Readonly<Partial<Record<keyof BuildOptions, string | boolean | number | readonly string[]>>>;
    readonly elements: readonly string[];
  },
  where: string,
): BuildOptions {
  const values = new Map(cli.values);
  values.delete("files");
  const byKey = new Map((SETTINGS as readonly Setting[]).map((s) => [s.key, s]));
  for (const [key, value] of Object.entries(image.settings) as [keyof BuildOptions, unknown][]) {
    const s = byKey.get(key);
    if (!s || RUN_SETTINGS.includes(key)) throw new Error(`internal: a build file cannot set ${key}`);
    // Named as the file names it.
    const fileKey = Object.entries(BUILD_FILE_KEYS).find(([, k]) => k.setting === key)?.[0] ?? key;
    const at = `${where}: '${fileKey}'`;
    if (s.kind === "flag" || s.kind === "count") values.set(key, value);
    else if (s.kind === "list")
      values.set(
        key,
        (value as readonly string[]).flatMap((item) => parseValue(s, item, at) as unknown[]),
      );
    else values.set(key, parseValue(s, String(value), at));
  }
  return resolveOptions(values, image.elements, env);
}

function validate(o: BuildOptions): void {
  if (o.files.length > 0) {
    if (o.elements.length > 0)
      throw new UsageError(`elements on the command line (${o.elements.join(" ")}) and a build file (-f)`, {
        hint: "with -f every image names its elements in the file: drop them from the command line",
      });
    return;
  }
  if (o.elements.length === 0) {
    throw new UsageError("no elements given: at least one distribution root element must be specified", {
      hint: "for example: vmdib build -o out/debian vm debian-minimal",
    });
  }
  if (o.types.length === 0)
    throw new UsageError("-t names no image type", { hint: `use one of ${IMAGE_TYPES.join(", ")}` });
}

function unknownOption(arg: string): UsageError {
  return new UsageError(`unknown option '${arg}'`, { hint: "run `vmdib help build` for the options" });
}

function missingValue(flag: string): UsageError {
  return new UsageError(`option ${flag} needs a value`, { hint: "run `vmdib help build` for the options" });
}

/** `vmdib help build`, generated from SETTINGS so flags, variables and help cannot drift apart. */
export function buildHelp(): string {
  const lines = [
    "usage: vmdib build [options] ELEMENT...",
    "       vmdib build [options] -f FILE",
    "",
    "Build a disk image from diskimage-builder elements; with -f, every image a YAML build file lists.",
    "",
  ];
  const flagRows: [string, string][] = [];
  const envRows: [string, string][] = [];
  for (const s of SETTINGS as readonly Setting[]) {
    const spelled = [s.short && `-${s.short}`, s.long && `--${s.long}`].filter(Boolean).join(", ");
    const def = describeDefault(s.default);
    const help = `${s.help}${def ? ` [default: ${def}]` : ""}${s.env && spelled ? ` (env ${s.env})` : ""}`;
    if (spelled) flagRows.push([`${spelled}${s.metavar ? ` ${s.metavar}` : ""}`, help]);
    else if (s.env) envRows.push([s.env, help]);
  }
  const width = Math.max(...[...flagRows, ...envRows].map(([l]) => l.length));
  lines.push("options:", ...flagRows.map(([l, h]) => `  ${l.padEnd(width)}  ${h}`));
  lines.push("", "environment:", ...envRows.map(([l, h]) => `  ${l.padEnd(width)}  ${h}`));
  lines.push(`  ${"DIB_*".padEnd(width)}  every DIB_* variable is passed to the element scripts`);
  lines.push("", "Example:", "  vmdib build -o out/debian vm debian-minimal");
  lines.push(
    "",
    "Build files (-f): a YAML list of images with DIB's keys (imagename, elements, types, environment, packages,",
    "checksum, image-size, debug-trace, uncompressed, logfile, ...); one helper VM builds them in order and stops at",
    "the first failure. Options on the command line are every image's defaults; an entry's keys win.",
    "  - imagename: out/web",
    "    elements: [vm, debian-minimal]",
    "    types: [qcow2]",
    "    environment: {DIB_RELEASE: bookworm}",
  );
  return `${lines.join("\n")}\n`;
}

function describeDefault(v: unknown): string {
  if (v === undefined || v === false || v === "" || (Array.isArray(v) && v.length === 0)) return "";
  if (v === true) return "";
  return Array.isArray(v) ? v.join(",") : String(v);
}
