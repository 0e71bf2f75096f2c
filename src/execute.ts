// The executor: walks BuildPlans inside one helper VM (guest/dib/run-phase per step; a build file's images one after
// another, each with its own work dir, build tree and a fresh image disk), sizes and lays out the block device,
// converts the image on the host, and publishes outputs only on success. Owns each build's cleanup stack.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { cp, mkdir, open, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { execa } from "execa";
import type { BlockDeviceConfig } from "./blockdev/config.js";
import { type BlockDevicePlan, planBlockDevice } from "./blockdev/graph.js";
import { buildCleanupScript, buildFstabScript, buildSetupScript, buildUmountScript } from "./blockdev/script.js";
import { imageSizeBytes, TiB } from "./blockdev/size.js";
import { RECORD_BLOCKS, restoreTreeCommand, saveTreeCommand } from "./cache/tree.js";
import { withCleanup } from "./cleanup.js";
import type { BuildOptions, ImageType } from "./config.js";
import { VmdibError } from "./errors.js";
import { HOST_TOOLS_DIR, hostZstdVersion, serveHostTools } from "./host-tools.js";
import { aciManifest, type DockerArchiveFiles, dockerArchiveFiles } from "./image/docker.js";
import { type BuildPlan, blockDeviceParams, GUEST_PATHS, outputName, type PlanOutput } from "./plan.js";
import { shellJoin, shellQuote } from "./shell.js";
import { sha256File } from "./vm/appliance/archive.js";

/** The helper VM as the executor uses it: run argv as root, streaming output; the exit code comes back. */
export interface BuildMachine {
  exec(argv: readonly string[], io: { stdout: Writable; stderr: Writable; signal?: AbortSignal }): Promise<number>;
  /** Run argv on the user's terminal (`--break`); absent when there is no terminal. */
  shell?(argv: readonly string[]): Promise<number>;
}

/** Progress the CLI renders: a timestamped line per event, or one JSON object per event with --json. */
export type BuildEvent =
  | { readonly type: "step-start"; readonly step: string; readonly where: string }
  | { readonly type: "step-end"; readonly step: string; readonly seconds: number; readonly ok: boolean }
  | { readonly type: "output"; readonly step: string; readonly stream: "stdout" | "stderr"; readonly line: string }
  | { readonly type: "info"; readonly message: string }
  | { readonly type: "artifact"; readonly path: string; readonly format: ImageType; readonly bytes: number }
  | { readonly type: "progress"; readonly step: string; readonly done: number; readonly total: number };

/**
 * Starts the helper VM a session boots once and stops at its end; `alongside`, when given, runs while the VM boots
 * and is awaited with it.
 */
export type StartMachine = (
  spec: MachineRequest,
  alongside?: () => Promise<void>,
) => Promise<BuildMachine & { stop(): Promise<void> }>;

export interface ExecuteDeps {
  /** Runs the host's qemu-img (no root needed) with these arguments. */
  readonly qemuImg: (
    args: readonly string[],
    signal: AbortSignal,
    onProgress?: (fraction: number) => void,
  ) => Promise<void>;
  /** Runs another host tool (tar for the docker archive, docker when a daemon is there); default: execa. */
  readonly run?: ToolRunner;
  readonly onEvent: (e: BuildEvent) => void;
  readonly signal: AbortSignal;
  readonly cwd: string;
  /** The phase-level cache (src/cache/tree.ts) for this build's key; absent when the build does not use it. */
  readonly treeCache?: TreeCacheStep;
  /**
   * The host zstd that compresses the initramfs for the guest (src/host-tools.ts); default "zstd" from PATH, null:
   * the guest compresses it itself.
   */
  readonly hostZstd?: string | null;
  /** Host work the build needs before its first phase (the debootstrap stage one): run while the VM starts. */
  readonly hostWork?: () => Promise<void>;
}

/** A cached tree to restore instead of running root.d … post-root.d, or where to save the new one. */
export interface TreeCacheStep {
  /** The cached build directory, as a file in the guest, and the tree's size when it was saved (sizes the image). */
  readonly restore?: { readonly file: string; readonly builtKib: number };
  /** Where the guest writes the new tree; commit() then makes it the cache entry, with the tree's size. */
  readonly saveTo?: string;
  commit(builtKib: number): Promise<void>;
}

/** Runs a host program and resolves with its stdout; rejects when it fails. */
export type ToolRunner = (file: string, args: readonly string[], signal: AbortSignal) => Promise<string>;

const runTool: ToolRunner = async (file, args, signal) =>
  (await execa(file, args, { cancelSignal: signal, stdin: "ignore" })).stdout;

/** What the executor asks of the VM: shares (the builds' work dirs read-write, element dirs read-only), image disk. */
export interface MachineRequest {
  /** Holds every build's work dir; shared read-write at SESSION_GUEST, each build's bound at GUEST_PATHS.work. */
  readonly workRoot: string;
  /** Every build's element search directories, read-only; each build binds its own at GUEST_PATHS.elements/<n>. */
  readonly elementShares: readonly { readonly host: string; readonly guest: string }[];
  /** Host file attached as a virtio disk; the guest finds it as /dev/disk/by-id/virtio-<serial>. */
  readonly imageDisk: { readonly path: string; readonly serial: string };
}

/** The raw image is a sparse host file attached as a virtio disk; it is created this large and truncated later. */
export const IMAGE_DISK_SERIAL = "vmdib-image";
const IMAGE_DISK_CAPACITY = 2 * TiB;
const IMAGE_DISK_GUEST = `/dev/disk/by-id/virtio-${IMAGE_DISK_SERIAL}`;
/** Where the session's work root and element directories are mounted in the guest. */
export const SESSION_GUEST = "/vmdib/session";
const ELEMENT_DIRS_GUEST = "/vmdib/element-dirs";

/** Memory the build tree leaves to the guest's programs (apt, dpkg, sshd) when it is full. */
const TREE_RESERVE_KIB = 512 * 1024;

/** qemu-img's name of each disk format, and whether it is made by qemu-img at all. */
const QEMU_IMG_FORMAT: Partial<Record<ImageType, string>> = {
  qcow2: "qcow2",
  raw: "raw",
  vhd: "vpc",
  vhdx: "vhdx",
  vmdk: "vmdk",
  vdi: "vdi",
  qed: "qed",
};

/** `qemu-img convert` argv (pure): compression for qcow2 unless -u, whatever the -t order; user options last. */
export function convertArgv(source: string, target: string, type: ImageType, options: BuildOptions): string[] {
  const format = QEMU_IMG_FORMAT[type];
  if (!format) throw new Error(`${type} is not made by qemu-img`);
  // -U (force-share): the helper VM still has the image disk open (it serves the next image of a build file) and
  // QEMU holds a write lock on it; the guest has flushed and released the disk before the host converts it.
  const argv = ["convert", "-U", "-f", "raw", "-O", format];
  if (type === "qcow2" && options.compress) argv.push("-c");
  // vhd: dynamic, as DIB's vhd-util makes it (a fixed VHD has no header at the start: qemu-img probes it as raw);
  // force_size keeps the raw image's exact size instead of rounding it up to a CHS geometry.
  const opts = [type === "vhd" ? "force_size=on" : "", options.qemuImgOptions].filter(Boolean).join(",");
  if (opts) argv.push("-o", opts);
  argv.push(source, target);
  return argv;
}

/** Members the chroot leaves behind that no tree output carries (the mount points themselves stay, empty). */
const TREE_EXCLUDES = ["./proc/*", "./sys/*", "./dev/*", "./tmp/in_target.d"];

/** What the guest writes into the work dir's out/ for each tree format; the host finishes and publishes them. */
export const TREE_FILES = {
  tar: "tar",
  aci: "aci",
  squashfs: "squashfs",
  docker: "docker-layer.tar",
} as const;

/**
 * Guest commands (pure) that write the tree outputs into outDir while the image is still mounted at root: one tar
 * for tar and tgz (gzip runs on the host, natively), the aci tar (tree under rootfs/, then its manifest), the
 * squashfs, and docker's layer tar (the host adds config and manifest.json around it).
 */
export function treeOutputCommands(
  outputs: readonly PlanOutput[],
  root: string,
  outDir: string,
  arch: string,
): string[] {
  const types = new Set(outputs.map((o) => o.type));
  const tar = (file: string, ...extra: string[]) =>
    shellJoin([
      "tar",
      "-C",
      root,
      "-cf",
      file,
      // Large records: the file is on a 9p share, where each record written is a round trip to the host.
      "-b",
      String(RECORD_BLOCKS),
      // Owners by number: the image's /etc/passwd, not the appliance's, names them.
      "--numeric-owner",
      // File capabilities (ping, ...) live in security.* xattrs.
      "--xattrs",
      "--xattrs-include=*",
      ...TREE_EXCLUDES.map((e) => `--exclude=${e}`),
      ...extra,
      ".",
    ]);
  const cmds: string[] = [];
  if (types.has("tar") || types.has("tgz")) cmds.push(tar(`${outDir}/${TREE_FILES.tar}`));
  const aci = outputs.find((o) => o.type === "aci");
  if (aci) {
    const file = `${outDir}/${TREE_FILES.aci}`;
    const dir = `${outDir}/aci-manifest`;
    cmds.push(
      // appc: the tree under rootfs/ and a file named manifest at the top.
      tar(file, "--transform=s,^\\.,rootfs,S"),
      `mkdir -p ${shellQuote(dir)} && printf %s ${shellQuote(aciManifest(aci.reference ?? "vmdib-image", arch))} >${shellQuote(`${dir}/manifest`)}`,
      shellJoin(["tar", "-C", dir, "--append", "-f", file, "--owner=0", "--group=0", "manifest"]),
      shellJoin(["rm", "-rf", dir]),
    );
  }
  if (types.has("squashfs")) {
    cmds.push(
      shellJoin([
        "mksquashfs",
        root,
        `${outDir}/${TREE_FILES.squashfs}`,
        // DIB's settings: xz, no appending to an old file, no recovery file next to it.
        ...["-comp", "xz", "-noappend", "-no-recovery", "-quiet", "-wildcards"],
        ...TREE_EXCLUDES.flatMap((e) => ["-e", e.replace(/^\.\//, "")]),
      ]),
    );
  }
  if (types.has("docker")) cmds.push(tar(`${outDir}/${TREE_FILES.docker}`));
  return cmds;
}

/** Line splitter that turns a guest stream into `output` events (and keeps the last lines for error messages). */
function lineStream(step: string, stream: "stdout" | "stderr", deps: ExecuteDeps, tail: string[]): Writable {
  let buf = "";
  return new Writable({
    write(chunk: Buffer, _enc: BufferEncoding, cb: () => void) {
      buf += chunk.toString("utf8");
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        tail.push(line);
        if (tail.length > 20) tail.shift();
        deps.onEvent({ type: "output", step, stream, line });
        nl = buf.indexOf("\n");
      }
      cb();
    },
    final(cb: () => void) {
      if (buf) deps.onEvent({ type: "output", step, stream, line: buf });
      cb();
    },
  });
}

/**
 * One helper VM serving a sequence of builds (`vmdib build`: one; `-f FILE`: every image of the file), booted at the
 * first build. The shares are fixed when QEMU starts, so the VM gets the work root and every build's element
 * directories up front, and each build binds its own at the fixed guest paths. The one image disk is emptied between
 * builds: the host truncates its file to nothing and back (QEMU reads a raw file through the host's page cache, so
 * the guest then reads zeros), after the guest flushed its writes and before it drops what it had cached of the disk
 * — no build sees another's blocks. A failed build ends the session: close() it.
 */
export class BuildSession {
  readonly workRoot: string;
  readonly #imagePath: string;
  readonly #request: MachineRequest;
  readonly #start: StartMachine;
  #machine: (BuildMachine & { stop(): Promise<void> }) | undefined;
  #builds = 0;
  #failed = false;

  /** `dir`: a fresh private directory of the caller's; it holds the work root and the image disk file. */
  constructor(dir: string, plans: readonly Pick<BuildPlan, "shares">[], start: StartMachine) {
    this.workRoot = join(dir, "work");
    this.#imagePath = join(dir, "image.raw");
    const hosts = [...new Set(plans.flatMap((p) => p.shares.map((s) => s.host)))];
    this.#request = {
      workRoot: this.workRoot,
      elementShares: hosts.map((host, i) => ({ host, guest: `${ELEMENT_DIRS_GUEST}/${i}` })),
      imageDisk: { path: this.#imagePath, serial: IMAGE_DISK_SERIAL },
    };
    this.#start = start;
  }

  /**
   * Builds one plan in the session's VM; its work dir must be made directly in workRoot. Outputs appear next to -o
   * only when everything succeeded. Returns the published files.
   */
  async build(
    plan: BuildPlan,
    options: BuildOptions,
    config: BlockDeviceConfig,
    workDir: string,
    deps: ExecuteDeps,
  ): Promise<string[]> {
    if (this.#failed) throw new Error("internal: a build failed in this session; it cannot build more");
    if (dirname(workDir) !== this.workRoot) throw new Error(`internal: work dir ${workDir} is not in the work root`);
    this.#failed = true;
    if (!this.#machine) {
      await mkdir(this.workRoot, { recursive: true });
      await (await open(this.#imagePath, "w", 0o600)).close();
      await truncate(this.#imagePath, IMAGE_DISK_CAPACITY);
      this.#machine = await this.#start(this.#request, deps.hostWork);
    } else {
      await truncate(this.#imagePath, 0);
      await truncate(this.#imagePath, IMAGE_DISK_CAPACITY);
      await deps.hostWork?.();
    }
    const binds = plan.shares.map((s) => {
      const from = this.#request.elementShares.find((e) => e.host === s.host);
      if (!from) throw new Error(`internal: element directory ${s.host} is not shared`);
      return { from: from.guest, to: s.guest };
    });
    const fresh = this.#builds++ > 0;
    const published = await executePlan(
      this.#machine,
      { plan, options, config, workDir, binds, fresh },
      {
        ...deps,
        imagePath: this.#imagePath,
      },
    );
    this.#failed = false;
    return published;
  }

  /** Stops the helper VM (when one was started). */
  async close(): Promise<void> {
    await this.#machine?.stop();
  }
}

/** One build in the session's VM: the plan, its work dir, and the binds that put its shares where it expects them. */
interface ImageBuild {
  readonly plan: BuildPlan;
  readonly options: BuildOptions;
  readonly config: BlockDeviceConfig;
  readonly workDir: string;
  readonly binds: readonly { readonly from: string; readonly to: string }[];
  /** An earlier build used the image disk: the guest drops what it cached of it. */
  readonly fresh: boolean;
}

/** Guest commands (pure) that put a build's work dir and element directories at the paths its plan uses. */
export function bindCommands(workDir: string, binds: ImageBuild["binds"]): string[] {
  const q = shellQuote;
  return [
    `mkdir -p ${GUEST_PATHS.work} && mount --bind ${q(`${SESSION_GUEST}/${basename(workDir)}`)} ${GUEST_PATHS.work}`,
    ...binds.map(
      (b) =>
        // remount: a bind mount takes the flags it is given, not those of its source; the elements stay read-only.
        `mkdir -p ${q(b.to)} && mount --bind ${q(b.from)} ${q(b.to)} && mount -o remount,bind,ro ${q(b.to)}`,
    ),
  ];
}

/**
 * Guest commands (pure) that leave nothing of a finished build in the VM: loop devices still on the image disk
 * (a legacy block-device.d hook's) detached, every write flushed to the host file and the disk's cache dropped, the
 * build tree and the binds unmounted.
 */
export function finishCommands(binds: ImageBuild["binds"]): string[] {
  return [
    `disk=$(readlink -f ${IMAGE_DISK_GUEST})`,
    `for loop in $(losetup --noheadings --output NAME --associated "$disk"); do kpartx -d "$loop" >/dev/null 2>&1 || true; losetup -d "$loop"; done`,
    "sync",
    `blockdev --flushbufs "$disk"`,
    `umount --recursive ${GUEST_PATHS.build}`,
    ...binds.map((b) => `umount ${shellQuote(b.to)}`),
    `umount ${GUEST_PATHS.work}`,
  ];
}

/** Runs the whole plan in a started VM; the session owns the VM and the image disk. */
async function executePlan(
  machine: BuildMachine,
  build: ImageBuild,
  deps: ExecuteDeps & { readonly imagePath: string },
): Promise<string[]> {
  const { plan, options, config, workDir } = build;
  const { imagePath } = deps;
  const reportCleanupError = (e: Error) => deps.onEvent({ type: "info", message: e.message });
  return await withCleanup(async (cleanup) => {
    const driver = `${GUEST_PATHS.driver}/run-phase`;
    /** DIB's break=: a shell on the user's terminal in the appliance (or the chroot) at this point of the build. */
    async function breakpoint(point: string, inChroot: boolean) {
      if (!options.breakAt.includes(point)) return;
      if (!machine.shell) throw new VmdibError(`--break ${point}: no terminal to open the shell on`);
      const where = inChroot ? "the image's chroot" : "the helper VM";
      const after = point === "after-error" ? "the build then stops" : "the build then goes on";
      deps.onEvent({ type: "info", message: `break ${point}: a root shell in ${where}; exit it and ${after}` });
      await machine.shell(["bash", driver, GUEST_PATHS.work, "shell", ...(inChroot ? ["target"] : [])]);
    }
    const runStep = async (step: string, argv: readonly string[], where: string = "appliance"): Promise<string[]> => {
      deps.onEvent({ type: "step-start", step, where });
      const started = Date.now();
      const tail: string[] = [];
      const stdout = lineStream(step, "stdout", deps, tail);
      const stderr = lineStream(step, "stderr", deps, tail);
      let code: number;
      try {
        code = await machine.exec(argv, { stdout, stderr, signal: deps.signal });
      } catch (err) {
        // The VM died or stopped answering mid-step: name the step and the script that was running, with its last lines.
        // Interrupted: say so (the VM may have gone down with the same signal), not that the VM died.
        if (deps.signal?.aborted) throw deps.signal.reason ?? err;
        if (!(err instanceof VmdibError)) throw err;
        const running = tail
          .map((l) => /dib-run-parts Running (\S+)/.exec(l)?.[1])
          .filter(Boolean)
          .pop();
        const script = running ? ` in ${running.replace(/.*\/([^/]+\.d)\//, "$1/")}` : "";
        throw new VmdibError(`step '${step}' failed${script}: ${err.message}`, {
          cause: err,
          context: [...(tail.length ? ["last output:", ...tail] : []), ...err.context],
          ...(err.hint ? { hint: err.hint } : {}),
        });
      }
      stdout.end();
      stderr.end();
      deps.onEvent({ type: "step-end", step, seconds: (Date.now() - started) / 1000, ok: code === 0 });
      if (code !== 0) {
        const full = await spaceExhausted(machine, tail, options);
        if (full) throw full;
        if (tail.some((l) => /Total journal size too big for filesystem/.test(l)))
          throw new VmdibError(
            `the image's root filesystem is too small for its ${options.journalSizeMb} MiB ext4 journal`,
            {
              context: tail,
              hint: "mke2fs wants the filesystem at least twice the journal: raise --image-size or lower --mkfs-journal-size",
            },
          );
        await breakpoint("after-error", plan.steps.find((s) => s.name === step)?.where === "chroot");
        const failed = tail.map((l) => /dib-run-parts (\S+) failed with exit code (\d+)/.exec(l)).find(Boolean);
        const script = failed ? ` (${failed[1]?.replace(/.*\/([^/]+\.d)\//, "$1/")}, exit code ${failed[2]})` : "";
        throw new VmdibError(`step '${step}' failed with exit code ${code}${script}`, {
          context: tail,
          hint: "the lines above are the end of its output; rerun with -x to trace the element scripts",
        });
      }
      return tail;
    };
    const phase = async (name: string, ...args: string[]) => {
      const where = plan.steps.find((s) => s.name === name)?.where;
      await breakpoint(`before-${name}`, where === "chroot");
      const tail = await runStep(
        name,
        ["bash", driver, ...(options.trace > 0 ? ["-x"] : []), GUEST_PATHS.work, name, ...args],
        where,
      );
      await breakpoint(`after-${name}`, where === "chroot");
      return tail;
    };
    /** Generated scripts reach the guest through the work dir; `run` runs one as a step. */
    const writeScript = async (name: string, text: string) => {
      await writeFile(join(workDir, `${name}.sh`), text, { mode: 0o700 });
      return ["bash", `${GUEST_PATHS.work}/${name}.sh`];
    };
    const script = async (name: string, text: string) => runStep(name, await writeScript(name, text));

    // The tree is built in tmpfs inside the guest (DIB's tmpfs build): device nodes and ownership work there, and
    // under TCG it is far faster than any disk. It may fill the memory the appliance leaves free but TREE_RESERVE_KIB,
    // so that a full tree ends in ENOSPC (reported as such) rather than the OOM killer taking sshd.
    // An image disk an earlier build used: the host emptied its file; the guest forgets what it cached of it (a
    // cached page would otherwise be written back around a partial write) and its old partition table.
    const freshDisk = build.fresh
      ? [
          `disk=$(readlink -f ${IMAGE_DISK_GUEST}); blockdev --flushbufs "$disk"; blockdev --rereadpt "$disk" 2>/dev/null || true`,
        ]
      : [];
    await runStep("prepare", [
      "bash",
      "-c",
      `set -eu
${[...freshDisk, ...bindCommands(workDir, build.binds)].join("\n")}
kib=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) - ${TREE_RESERVE_KIB} ))
mkdir -p ${GUEST_PATHS.build} && mount -t tmpfs -o size=$((kib > 65536 ? kib : 65536))k,mode=0755 vmdib-build ${GUEST_PATHS.build}`,
    ]);
    // The host's zstd compresses the initramfs for the chroot (byte-identical, ~10x faster than under TCG): the
    // directory's existence is what tells run-phase to bind it into the chroot.
    const hostZstd = deps.hostZstd === undefined ? "zstd" : deps.hostZstd;
    const zstdVersion = hostZstd ? await hostZstdVersion(hostZstd) : undefined;
    if (hostZstd && zstdVersion) {
      const dir = join(workDir, HOST_TOOLS_DIR);
      await mkdir(dir, { recursive: true });
      const server = await serveHostTools(dir, zstdVersion, {
        zstd: hostZstd,
        report: (message) => deps.onEvent({ type: "info", message }),
      });
      cleanup.push("stop serving host tools", () => server.stop());
    }
    // Once the build has finished in the guest, the in-guest undo steps have nothing left to do.
    let finished = false;
    const inGuest = (fn: () => Promise<unknown>) => async () => {
      if (!finished) await fn().catch(() => undefined);
    };
    cleanup.push(
      "unmount the build tree",
      inGuest(() => phase("unmount", "--all")),
    );
    // On a tree cache hit only init runs now: the tree goes straight into the image once its block device is mounted.
    const restore = deps.treeCache?.restore;
    const kib = restore ? restore.builtKib : await buildTree(deps.treeCache, phase, runStep, options, deps);
    if (restore) await phase("init");
    const sizeBytes = imageSizeBytes({
      treeBytes: kib * 1024,
      imageSize: options.imageSize,
      extraSize: options.imageExtraSize,
      rootFsType: plan.environment.common.DIB_ROOT_FSTYPE ?? options.fsType,
      journalSizeMiB: options.journalSizeMb,
      efi: plan.elements.some((e) => e.name.includes("block-device-efi")),
    });
    deps.onEvent({ type: "info", message: `image size ${(sizeBytes / 1024 ** 2).toFixed(0)} MiB (tree ${kib} KiB)` });
    const layout: BlockDevicePlan = planBlockDevice(config, {
      ...blockDeviceParams(options),
      imageSizeBytes: sizeBytes,
      imageDir: GUEST_PATHS.imageDir,
      mountBase: GUEST_PATHS.targetRoot,
      devices: { [layoutImageDisk(config)]: IMAGE_DISK_GUEST },
    });

    // What a legacy block-device.d hook needs to make the device itself (disk-image-create exports DIB_IMAGE_SIZE in
    // KiB before the phase; TMP_IMAGE_PATH is the raw image the outputs are converted from: here the image disk).
    const envDir = `${GUEST_PATHS.build}/env.d`;
    const legacyEnv = `${envDir}/30-block-device.env`;
    await runStep("image-disk", [
      "bash",
      "-c",
      `set -eu; mkdir -p ${envDir}; printf 'export %s\\n' ${shellQuote(`DIB_IMAGE_SIZE=${Math.floor(sizeBytes / 1024)}`)} ${shellQuote(`TMP_IMAGE_PATH=${IMAGE_DISK_GUEST}`)} >${envDir}/20-image-disk.env`,
    ]);
    await phase("block-device");
    // DIB's eval_run_d: a hook that printed IMAGE_BLOCK_DEVICE= made the device (run-phase saved the line); then
    // the YAML layout is skipped altogether and the hook owns partitions, filesystems and mounts.
    const legacy = (await machine.exec(["test", "-s", legacyEnv], quiet())) === 0;
    const restoreTree = (file: string, treeDir?: string) =>
      runStep("restore-tree", strictBash(restoreTreeCommand(GUEST_PATHS.build, file, treeDir)));
    if (legacy) {
      deps.onEvent({
        type: "info",
        message: "a block-device.d hook set IMAGE_BLOCK_DEVICE: the block-device layout is skipped (legacy DIB)",
      });
      // The hook's device is its own business: the tree goes back to built/ and copy-root copies it, as on a miss.
      if (restore) await restoreTree(restore.file);
    } else {
      const exportsFile = `${envDir}/40-block-device.env`;
      const release = await writeScript("blockdev-cleanup", buildCleanupScript(layout));
      cleanup.push(
        "release the block devices",
        inGuest(() => machine.exec(release, quiet())),
      );
      await script("blockdev-setup", buildSetupScript(layout, { exportsFile }));
      // A hit writes the tree once, straight into the mounted image (mount points such as /boot/efi included); the
      // fstab then goes where the tree now is, and there is nothing left for copy-root to copy.
      if (restore) await restoreTree(restore.file, basename(GUEST_PATHS.targetRoot));
      await script("fstab", buildFstabScript(layout, restore ? GUEST_PATHS.targetRoot : `${GUEST_PATHS.build}/built`));
    }
    if (!restore || legacy) await phase("copy-root");
    for (const name of ["pre-finalise", "finalise", "cleanup"]) await phase(name);

    const treeCmds = treeOutputCommands(plan.outputs, GUEST_PATHS.targetRoot, GUEST_PATHS.out, plan.arch);
    if (treeCmds.length > 0) await runStep("tree-outputs", strictBash(treeCmds.join("\n")));
    // Chroot mounts only: the block device's own mounts (DIB_MOUNTPOINTS, /boot/efi) are the umount script's.
    if (legacy) {
      // The hook's mounts are the tree and below it: unmount them (trimmed first, so the image stays sparse), then
      // flush what went through its devices.
      const root = shellQuote(GUEST_PATHS.targetRoot);
      await phase("unmount", "--all");
      await runStep("legacy-umount", [
        "bash",
        "-c",
        `set -eu; if mountpoint -q ${root}; then fstrim ${root} || true; umount ${root}; fi; sync`,
      ]);
    } else {
      await phase("unmount");
      await script("blockdev-umount", buildUmountScript(layout));
    }
    await runStep("finish", strictBash(finishCommands(build.binds).join("\n")));
    finished = true;

    // The disk holds the image in its first sizeBytes; the rest of the sparse capacity was never written.
    await truncate(imagePath, sizeBytes);
    return await publishOutputs(plan, options, workDir, imagePath, deps);
  }, reportCleanupError);
}

/**
 * root.d … post-root.d, then stash-root, whose size of the tree it returns (KiB); the tree is saved for the cache
 * when the build asks for it. A tree that cannot be saved costs only the next build's reuse.
 */
async function buildTree(
  tree: TreeCacheStep | undefined,
  phase: (name: string, ...args: string[]) => Promise<string[]>,
  runStep: (step: string, argv: readonly string[]) => Promise<string[]>,
  options: BuildOptions,
  deps: ExecuteDeps,
): Promise<number> {
  for (const name of ["root", "extra-data", "pre-install", "install"]) await phase(name);
  if (options.packages.length > 0) await phase("packages", ...options.packages);
  for (const name of ["post-install", "post-root"]) await phase(name);
  const stashed = await phase("stash-root");
  const kib = Number(/VMDIB_BUILT_KIB=(\d+)/.exec(stashed.join("\n"))?.[1]);
  if (!Number.isSafeInteger(kib)) throw new VmdibError("the guest did not report the size of the built tree");
  if (tree?.saveTo) {
    try {
      await runStep("save-tree", strictBash(saveTreeCommand(GUEST_PATHS.build, tree.saveTo)));
      await tree.commit(kib);
    } catch (err) {
      if (deps.signal.aborted) throw err;
      deps.onEvent({ type: "info", message: `warning: the tree was not cached: ${(err as Error).message}` });
    }
  }
  return kib;
}

/** argv that runs a shell command line in the guest, stopping at the first failure (of a pipe too). */
const strictBash = (command: string) => ["bash", "-c", `set -eu -o pipefail; ${command}`];

/** `df -k` of the build tree (tmpfs) and of the image's root filesystem, as "target size used" lines (pure parse). */
export function parseDf(text: string): Map<string, { sizeKiB: number; usedKiB: number }> {
  const out = new Map<string, { sizeKiB: number; usedKiB: number }>();
  for (const line of text.split("\n")) {
    const [target, size, used] = line.trim().split(/\s+/);
    if (target?.startsWith("/") && Number(size) > 0) out.set(target, { sizeKiB: Number(size), usedKiB: Number(used) });
  }
  return out;
}

/**
 * A step that failed with ENOSPC: which space ran out, how much was used, and the option that gives more — instead of
 * the cascade of I/O errors the scripts print. Undefined when the failure was something else.
 */
async function spaceExhausted(
  machine: BuildMachine,
  tail: readonly string[],
  options: BuildOptions,
): Promise<VmdibError | undefined> {
  if (!tail.some((l) => /No space left on device/i.test(l))) return undefined;
  let text = "";
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  const sink = quiet().stderr;
  const df = `df -k --output=target,size,used ${GUEST_PATHS.build} ${GUEST_PATHS.targetRoot} 2>/dev/null || true`;
  await machine.exec(["bash", "-c", df], { stdout: out, stderr: sink }).catch(() => 1);
  const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
  const used = parseDf(text);
  const tree = used.get(GUEST_PATHS.build);
  const image = used.get(GUEST_PATHS.targetRoot);
  if (image && image.usedKiB >= image.sizeKiB * 0.95)
    return new VmdibError(
      `image space exhausted: the image's root filesystem is full (${mib(image.usedKiB)} used of ${mib(image.sizeKiB)})`,
      {
        context: [...tail],
        hint: `make the image bigger with --image-size (now ${options.imageSize ? `${Math.round(options.imageSize / 2 ** 20)} MiB` : "computed from the tree"}) or --image-extra-size`,
      },
    );
  const where = tree ? ` (${mib(tree.usedKiB)} used of ${mib(tree.sizeKiB)})` : "";
  return new VmdibError(`build space exhausted: the build tree in the helper VM's memory is full${where}`, {
    context: [...tail],
    hint: `the tree may use the helper VM's free memory but 512 MiB: raise it with --memory (now ${options.memoryMb} MB)`,
  });
}

/** The local_loop the layout's IMAGE_BLOCK_DEVICE comes from (DIB: image0), attached as the image disk. */
function layoutImageDisk(config: BlockDeviceConfig): string {
  const loops = config.entries.filter((e) => e.type === "local_loop").map((e) => e.name);
  return loops.includes("image0") ? "image0" : (loops[0] ?? "image0");
}

function quiet() {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  return { stdout: sink, stderr: sink };
}

/** The host `tar` argv (pure) that packs a staged docker-archive directory, members in docker save's order. */
export function dockerArchiveTarArgv(dir: string, dest: string, files: DockerArchiveFiles): string[] {
  const layerDir = dirname(files.layerName);
  return [
    ...["-C", dir, "-cf", dest],
    // The archive's own members belong to nobody in particular; the layer tar inside keeps the image's owners.
    ...["--owner=0", "--group=0", "--numeric-owner", "--no-recursion"],
    ...["manifest.json", files.configName, layerDir, files.layerName],
  ];
}

/** Wraps the guest's layer tar into a docker-archive at dest (hashing and packing natively on the host). */
async function writeDockerArchive(
  layer: string,
  dest: string,
  o: { reference: string; arch: string },
  run: ToolRunner,
  signal: AbortSignal,
): Promise<void> {
  const files = dockerArchiveFiles(
    { layerSha256: await sha256File(layer), arch: o.arch, reference: o.reference, created: new Date().toISOString() },
    (text) => createHash("sha256").update(text).digest("hex"),
  );
  const dir = join(dirname(layer), "docker-archive");
  await mkdir(join(dir, dirname(files.layerName)), { recursive: true });
  await rename(layer, join(dir, files.layerName));
  await writeFile(join(dir, files.configName), files.config);
  await writeFile(join(dir, "manifest.json"), files.manifest);
  await run("tar", dockerArchiveTarArgv(dir, dest, files), signal);
}

/** Whether a Docker daemon answers (then the docker output is also loaded into it, as DIB's `docker import`). */
async function dockerDaemonAnswers(run: ToolRunner, signal: AbortSignal): Promise<boolean> {
  return await run("docker", ["version", "--format", "{{.Server.Version}}"], signal).then(
    (v) => v.trim() !== "",
    () => false,
  );
}

/** md5 and sha256 files next to an output, in the `md5sum`/`sha256sum` format DIB writes. */
async function writeChecksums(path: string): Promise<void> {
  const md5 = createHash("md5");
  const [, sha256] = await Promise.all([pipeline(createReadStream(path), md5), sha256File(path)]);
  const name = basename(path);
  await writeFile(`${path}.md5`, `${md5.digest("hex")}  ${name}\n`);
  await writeFile(`${path}.sha256`, `${sha256}  ${name}\n`);
}

/**
 * Makes every output under a temporary name next to -o — qemu-img conversions of the disk, the guest's tree
 * outputs finished natively (gzip, docker archive) — then renames all of them into place; an older image at a
 * name stays until every new output is complete.
 */
export async function publishOutputs(
  plan: Pick<BuildPlan, "outputs" | "arch">,
  options: BuildOptions,
  workDir: string,
  imagePath: string,
  deps: Pick<ExecuteDeps, "qemuImg" | "run" | "onEvent" | "signal" | "cwd">,
): Promise<string[]> {
  const out = join(workDir, "out");
  const run = deps.run ?? runTool;
  const timed = async (step: string, fn: () => Promise<unknown>) => {
    deps.onEvent({ type: "step-start", step, where: "host" });
    const started = Date.now();
    await fn();
    deps.onEvent({ type: "step-end", step, seconds: (Date.now() - started) / 1000, ok: true });
  };
  const staged: { tmp: string; final: string; output: PlanOutput }[] = [];
  // tar and tgz come from one guest tar; it moves to the tar output's temporary name when that is staged first.
  let tarAt = join(out, TREE_FILES.tar);
  try {
    for (const o of plan.outputs) {
      const final = resolve(deps.cwd, o.path);
      await mkdir(dirname(final), { recursive: true });
      const tmp = `${final}.vmdib-partial-${process.pid}`;
      staged.push({ tmp, final, output: o });
      switch (o.type) {
        case "tar":
          await rename(tarAt, tmp);
          tarAt = tmp;
          break;
        case "tgz":
          // Native zlib at its default level: DIB's gzip -9 costs much time for a few percent.
          await timed("gzip tgz", () => pipeline(createReadStream(tarAt), createGzip(), createWriteStream(tmp)));
          break;
        case "aci":
        case "squashfs":
          await rename(join(out, TREE_FILES[o.type]), tmp);
          break;
        case "docker": {
          const reference = o.reference ?? "vmdib-image:latest";
          await timed("docker archive", () =>
            writeDockerArchive(join(out, TREE_FILES.docker), tmp, { reference, arch: plan.arch }, run, deps.signal),
          );
          if (await dockerDaemonAnswers(run, deps.signal)) {
            await timed("docker load", () => run("docker", ["load", "-i", tmp], deps.signal));
            deps.onEvent({ type: "info", message: `docker: ${reference} loaded into the Docker daemon` });
          }
          break;
        }
        default: {
          const step = `convert ${o.type}`;
          const total = (await stat(imagePath)).size;
          const onProgress = (f: number) => deps.onEvent({ type: "progress", step, done: f * total, total });
          await timed(step, () => deps.qemuImg(convertArgv(imagePath, tmp, o.type, options), deps.signal, onProgress));
        }
      }
    }
    // The manifests element leaves <name>.d/ next to the image, as DIB does.
    const manifests = join(out, `${basename(outputName(options))}.d`);
    if (
      await stat(manifests).then(
        (st) => st.isDirectory(),
        () => false,
      )
    ) {
      const final = resolve(deps.cwd, `${outputName(options)}.d`);
      await rm(final, { recursive: true, force: true });
      await cp(manifests, final, { recursive: true });
    }
    for (const s of staged) {
      await rename(s.tmp, s.final);
      if (s.output.checksums.length > 0) await writeChecksums(s.final);
      deps.onEvent({ type: "artifact", path: s.final, format: s.output.type, bytes: (await stat(s.final)).size });
    }
    return staged.map((s) => s.final);
  } finally {
    for (const s of staged) await rm(s.tmp, { force: true });
  }
}
