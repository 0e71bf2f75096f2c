// The build plan: options + resolved elements + hooks + block-device layout → one serialisable BuildPlan (pure).
import { basename, dirname } from "node:path";
import type { BlockDevicePlanParams } from "./blockdev/graph.js";
import type { BuildOptions, ImageType } from "./config.js";
import { PHASES, type PhaseWhere } from "./elements/phases.js";
import { dockerReference } from "./image/docker.js";

/** Fixed places inside the helper VM; the guest driver (guest/dib) uses the same layout. */
export const GUEST_PATHS = {
  /** Per-build work directory shared read-write from the host: env, merged hooks, element links, outputs. */
  work: "/vmdib/work",
  /** The guest driver (guest/dib: run-phase, dib-run-parts, DIB's lib), copied into the work directory. */
  driver: "/vmdib/work/dib",
  lib: "/vmdib/work/dib/lib",
  /** Element search directories, shared read-only, one per ELEMENTS_PATH entry: /vmdib/elements/<n>. */
  elements: "/vmdib/elements",
  /** Build directory on the guest's own scratch space (DIB's TMP_BUILD_DIR): device nodes and owners work there. */
  build: "/vmdib/build",
  /** Writable copy of the merged hooks (DIB's TMP_HOOKS_PATH outside the chroot). */
  hooks: "/vmdib/build/hooks",
  /** The image tree while elements run (DIB's TARGET_ROOT / TMP_MOUNT_PATH). */
  targetRoot: "/vmdib/build/mnt",
  /** Where the raw image file is made (DIB's TMP_IMAGE_DIR). */
  imageDir: "/vmdib/build/image",
  /** DIB_IMAGE_CACHE inside the guest. */
  imageCache: "/vmdib/cache",
  /** Outputs the guest writes for the host (manifests under <name>.d/, tar, squashfs). */
  out: "/vmdib/work/out",
} as const;

export interface PlanElement {
  readonly name: string;
  /** Directory on the host. */
  readonly path: string;
}

export interface PlanScript {
  readonly name: string;
  readonly element: string;
  /** Host path of the script. */
  readonly path: string;
}

/** What the planner needs from element resolution and hook collection. */
export interface PlanInputs {
  readonly options: BuildOptions;
  /** Resolved elements in their deterministic order. */
  readonly elements: readonly PlanElement[];
  /** Executable hooks per phase directory (`install.d` → scripts in dib-run-parts order). */
  readonly hooks: Readonly<Record<string, readonly PlanScript[]>>;
  /** environment.d files, in the order they are sourced. */
  readonly environmentFiles: readonly PlanScript[];
  readonly blockDevice: PlanBlockDevice;
  /** Host variables passed into the build (DIB_* unless -c), already filtered by the caller. */
  readonly passEnv: Readonly<Record<string, string>>;
  readonly version: string;
}

export interface PlanStep {
  /** Phase or step name: `root`, `install`, `packages`, `block-device`, ... (the names --break uses). */
  readonly name: string;
  readonly kind: "phase" | "step";
  readonly where: PhaseWhere;
  /** Hook directory for phases. */
  readonly dir?: string;
  readonly description: string;
  readonly scripts: readonly PlanScript[];
  /** Variables this step sees on top of the plan's common environment. */
  readonly env: Readonly<Record<string, string>>;
}

/** The block-device layout as planned before the build: how it will be sized, a summary, the full plan. */
export interface PlanBlockDevice {
  readonly size: string;
  readonly summary: readonly string[];
  /** The BlockDevicePlan from src/blockdev (re-planned with the real size once the tree is measured). */
  readonly layout: unknown;
}

/** The block-device settings that come from options (the same at plan time and when the tree is measured). */
export function blockDeviceParams(
  options: BuildOptions,
): Omit<BlockDevicePlanParams, "imageSizeBytes" | "imageDir" | "mountBase" | "devices"> {
  return {
    fsType: options.fsType,
    rootLabel: options.rootLabel,
    mkfsOptions: options.mkfsOptions,
    journalSizeMiB: options.journalSizeMb,
    maxOnlineResize: options.maxOnlineResize,
    // Identifiers DIB draws at random are derived from the image name: reproducible, yet distinct per image.
    uuidSeed: basename(outputName(options)),
  };
}

export interface PlanOutput {
  readonly type: ImageType;
  /** Path on the host, relative to the working directory as given with -o. */
  readonly path: string;
  readonly checksums: readonly string[];
  /** docker and aci: the image reference (`--docker-target`, else made from the image name). */
  readonly reference?: string;
}

export interface BuildPlan {
  readonly vmdib: string;
  readonly imageName: string;
  readonly arch: string;
  readonly elements: readonly (PlanElement & { readonly guestPath: string })[];
  /** Element search directories on the host and where each is shared in the guest. */
  readonly shares: readonly { readonly host: string; readonly guest: string }[];
  readonly environment: {
    readonly common: Readonly<Record<string, string>>;
    readonly files: readonly PlanScript[];
  };
  readonly steps: readonly PlanStep[];
  readonly blockDevice: PlanBlockDevice;
  readonly outputs: readonly PlanOutput[];
  readonly packages: readonly string[];
}

/** DIB's file extension per output type (squashfs is `.squash`, docker becomes a loadable archive). */
const EXTENSION: Record<ImageType, string> = {
  qcow2: "qcow2",
  raw: "raw",
  vhd: "vhd",
  vhdx: "vhdx",
  vmdk: "vmdk",
  vdi: "vdi",
  qed: "qed",
  tar: "tar",
  tgz: "tgz",
  squashfs: "squash",
  aci: "aci",
  docker: "docker.tar",
};

/** Steps without hooks, placed where disk-image-create runs them. */
const STEPS_AFTER: Record<string, Omit<PlanStep, "scripts" | "env">> = {
  install: {
    name: "packages",
    kind: "step",
    where: "chroot",
    description: "install the -p packages (install-packages)",
  },
  "post-root": {
    name: "image-size",
    kind: "step",
    where: "appliance",
    description: "compute the image size from the tree (or --image-size)",
  },
  "block-device": {
    name: "copy",
    kind: "step",
    where: "appliance",
    description: "copy the tree into the mounted image filesystems",
  },
  cleanup: {
    name: "outputs",
    kind: "step",
    where: "host",
    description: "convert the raw image to the requested formats with the host's qemu-img",
  },
};

/** Where the merged hooks, DIB's lib and the tree are for phases that run outside the chroot. */
const OUTSIDE_ENV = {
  TARGET_ROOT: GUEST_PATHS.targetRoot,
  TMP_MOUNT_PATH: GUEST_PATHS.targetRoot,
  TMP_BUILD_DIR: GUEST_PATHS.build,
  TMP_IMAGE_DIR: GUEST_PATHS.imageDir,
  TMP_HOOKS_PATH: GUEST_PATHS.hooks,
};

/** Inside the chroot the hooks are bind-mounted read-only at /tmp/in_target.d. */
const CHROOT_ENV = { TMP_HOOKS_PATH: "/tmp/in_target.d" };

export function outputName(options: Pick<BuildOptions, "imageName" | "types">): string {
  // disk-image-create: with a single type, `-o foo.qcow2 -t qcow2` means `foo`.
  const [only] = options.types;
  if (options.types.length === 1 && only && options.imageName.endsWith(`.${only}`)) {
    return options.imageName.slice(0, -(only.length + 1));
  }
  return options.imageName;
}

/** Formats made from the image tree in the guest; every other type is the disk image converted by qemu-img. */
export const TREE_TYPES: readonly ImageType[] = ["tar", "tgz", "squashfs", "aci", "docker"];

/**
 * The files a build publishes. With the `no-final-image` element (DIB: an element that makes its own artefacts)
 * the disk image is not converted: only the tree formats are written.
 */
export function buildOutputs(options: BuildOptions, elementNames: readonly string[] = []): PlanOutput[] {
  const name = outputName(options);
  const noFinalImage = elementNames.includes("no-final-image");
  const types = [...new Set(options.types)].filter((t) => !noFinalImage || TREE_TYPES.includes(t));
  // Raw last, as DIB orders it (there the conversion to raw moves the working image away).
  const ordered = [...types.filter((t) => t !== "raw"), ...types.filter((t) => t === "raw")];
  return ordered.map((type) => {
    const path = `${name}.${EXTENSION[type]}`;
    const reference =
      type === "docker" || type === "aci" ? { reference: dockerReference(options.dockerTarget, name) } : {};
    return { type, path, checksums: options.checksum ? [`${path}.md5`, `${path}.sha256`] : [], ...reference };
  });
}

/** The variables every phase sees, as disk-image-create exports them. */
function commonEnv(inputs: PlanInputs, elementYaml: string): Record<string, string> {
  const o = inputs.options;
  const env: Record<string, string> = {
    ...inputs.passEnv,
    ARCH: o.arch,
    // The guest's output prefix: manifests land in IMAGE_NAME.d/, tar and squashfs next to it.
    IMAGE_NAME: `${GUEST_PATHS.out}/${basename(outputName(o))}`,
    IMAGE_ELEMENT: inputs.elements.map((e) => e.name).join(" "),
    IMAGE_ELEMENT_YAML: elementYaml,
    DIB_DEBUG_TRACE: String(o.trace),
    DIB_IMAGE_CACHE: GUEST_PATHS.imageCache,
    DIB_OFFLINE: o.offline ? "1" : "",
    DIB_CHECKSUM: o.checksum ? "1" : "0",
    DIB_NO_TMPFS: o.noTmpfs ? "1" : "0",
    DIB_MIN_TMPFS: String(o.minTmpfsGb),
    DIB_DEFAULT_INSTALLTYPE: o.installType,
    DIB_JOURNAL_SIZE: String(o.journalSizeMb),
    FS_TYPE: o.fsType,
    _LIB: GUEST_PATHS.lib,
  };
  // DIB's scripts read these in GB.
  if (o.imageSize !== undefined) env.DIB_IMAGE_SIZE = String(o.imageSize / 1024 ** 3);
  if (o.imageExtraSize !== undefined) env.DIB_IMAGE_EXTRA_SIZE = String(o.imageExtraSize / 1024 ** 3);
  if (o.maxOnlineResize !== undefined) env.MAX_ONLINE_RESIZE = String(o.maxOnlineResize);
  if (o.mkfsOptions) env.MKFS_OPTS = o.mkfsOptions;
  if (o.rootLabel) env.DIB_ROOT_LABEL = o.rootLabel;
  if (o.dockerTarget) env.DOCKER_TARGET = o.dockerTarget;
  if (o.packages.length > 0) env.INSTALL_PACKAGES = o.packages.join(" ");
  return Object.fromEntries(Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** JSON is valid YAML: IMAGE_ELEMENT_YAML maps each element to its directory in the guest. */
function elementYaml(elements: readonly { name: string; guestPath: string }[]): string {
  return JSON.stringify(Object.fromEntries(elements.map((e) => [e.name, e.guestPath])));
}

export function buildPlan(inputs: PlanInputs): BuildPlan {
  const searchDirs = [...new Set(inputs.elements.map((e) => dirname(e.path)))];
  const shares = searchDirs.map((host, i) => ({ host, guest: `${GUEST_PATHS.elements}/${i}` }));
  const guestDir = new Map(shares.map((s) => [s.host, s.guest]));
  const elements = inputs.elements.map((e) => ({
    ...e,
    guestPath: `${guestDir.get(dirname(e.path))}/${basename(e.path)}`,
  }));

  const steps: PlanStep[] = [];
  for (const phase of PHASES) {
    steps.push({
      name: phase.name,
      kind: "phase",
      where: phase.where,
      dir: phase.dir,
      description:
        phase.name === "block-device"
          ? "run block-device.d hooks; unless they set IMAGE_BLOCK_DEVICE, create the block-device layout below"
          : `run ${phase.dir} hooks ${phase.where === "chroot" ? "inside the chroot" : "outside the chroot"}`,
      scripts: inputs.hooks[phase.dir] ?? [],
      env: phase.where === "chroot" ? CHROOT_ENV : OUTSIDE_ENV,
    });
    const after = STEPS_AFTER[phase.name];
    if (after && (after.name !== "packages" || inputs.options.packages.length > 0)) {
      const env = after.where === "chroot" ? CHROOT_ENV : after.where === "host" ? {} : OUTSIDE_ENV;
      steps.push({ ...after, scripts: [], env });
    }
  }

  return {
    vmdib: inputs.version,
    imageName: outputName(inputs.options),
    arch: inputs.options.arch,
    elements,
    shares,
    environment: { common: commonEnv(inputs, elementYaml(elements)), files: inputs.environmentFiles },
    steps,
    blockDevice: inputs.blockDevice,
    outputs: buildOutputs(
      inputs.options,
      inputs.elements.map((e) => e.name),
    ),
    packages: inputs.options.packages,
  };
}

/** Human-readable rendering of a plan for `--dry-run`. */
export function renderPlan(plan: BuildPlan): string {
  const out: string[] = [];
  out.push(`Build plan for ${plan.imageName} (${plan.arch}), vmdib ${plan.vmdib}`, "");
  out.push("Elements:");
  const w = Math.max(...plan.elements.map((e) => e.name.length));
  for (const e of plan.elements) out.push(`  ${e.name.padEnd(w)}  ${e.path}`);
  out.push("", "Environment (every phase):");
  for (const [k, v] of Object.entries(plan.environment.common)) out.push(`  ${k}=${JSON.stringify(v)}`);
  if (plan.environment.files.length > 0) {
    out.push("  sourced before each phase, under set -u:");
    for (const f of plan.environment.files) out.push(`    ${f.element}/environment.d/${f.name}`);
  }
  out.push("", "Steps:");
  for (const s of plan.steps) {
    const extra = Object.entries(s.env)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
    out.push(
      `  ${s.name.padEnd(13)} [${s.where}] ${s.description}${s.scripts.length === 0 && s.kind === "phase" ? " (none)" : ""}`,
    );
    if (extra && (s.scripts.length > 0 || s.kind === "step")) out.push(`  ${"".padEnd(13)}   env: ${extra}`);
    for (const sc of s.scripts) out.push(`  ${"".padEnd(13)}   ${sc.name}  (${sc.element})`);
  }
  out.push("", "Block device:", `  size: ${plan.blockDevice.size}`, ...plan.blockDevice.summary.map((l) => `  ${l}`));
  out.push("", "Outputs:");
  for (const o of plan.outputs) {
    out.push(`  ${o.path}  (${o.type}${o.reference ? ` ${o.reference}` : ""})`);
    for (const c of o.checksums) out.push(`  ${c}`);
  }
  return `${out.join("\n")}\n`;
}
