// The executor: walks a BuildPlan inside the helper VM (guest/dib/run-phase per step), sizes and lays out the block
// device, converts the image on the host, and publishes outputs only on success. Owns the build's cleanup stack.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { cp, mkdir, open, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Writable } from "node:stream";
import type { BlockDeviceConfig } from "./blockdev/config.js";
import { type BlockDevicePlan, planBlockDevice } from "./blockdev/graph.js";
import { buildCleanupScript, buildFstabScript, buildSetupScript, buildUmountScript } from "./blockdev/script.js";
import { imageSizeBytes, TiB } from "./blockdev/size.js";
import { withCleanup } from "./cleanup.js";
import type { BuildOptions, ImageType } from "./config.js";
import { VmdibError } from "./errors.js";
import { type BuildPlan, blockDeviceParams, GUEST_PATHS, outputName, type PlanOutput } from "./plan.js";

/** The helper VM as the executor uses it: run argv as root, streaming output; the exit code comes back. */
export interface BuildMachine {
  exec(argv: readonly string[], io: { stdout: Writable; stderr: Writable; signal?: AbortSignal }): Promise<number>;
}

/** Progress the CLI renders: a timestamped line per event, or one JSON object per event with --json. */
export type BuildEvent =
  | { readonly type: "step-start"; readonly step: string; readonly where: string }
  | { readonly type: "step-end"; readonly step: string; readonly seconds: number; readonly ok: boolean }
  | { readonly type: "output"; readonly step: string; readonly stream: "stdout" | "stderr"; readonly line: string }
  | { readonly type: "info"; readonly message: string }
  | { readonly type: "artifact"; readonly path: string; readonly format: ImageType; readonly bytes: number };

export interface ExecuteDeps {
  /** Boots the helper VM with the work dir, element shares and the image disk attached. */
  readonly startMachine: (spec: MachineRequest) => Promise<BuildMachine & { stop(): Promise<void> }>;
  /** Runs the host's qemu-img (no root needed) with these arguments. */
  readonly qemuImg: (args: readonly string[], signal: AbortSignal) => Promise<void>;
  readonly onEvent: (e: BuildEvent) => void;
  readonly signal: AbortSignal;
  readonly cwd: string;
}

/** What the executor asks of the VM: shares (work dir read-write, element dirs read-only) and the image disk. */
export interface MachineRequest {
  readonly workDir: string;
  readonly elementShares: readonly { readonly host: string; readonly guest: string }[];
  /** Host file attached as a virtio disk; the guest finds it as /dev/disk/by-id/virtio-<serial>. */
  readonly imageDisk: { readonly path: string; readonly serial: string };
}

/** The raw image is a sparse host file attached as a virtio disk; it is created this large and truncated later. */
export const IMAGE_DISK_SERIAL = "vmdib-image";
const IMAGE_DISK_CAPACITY = 2 * TiB;
const IMAGE_DISK_GUEST = `/dev/disk/by-id/virtio-${IMAGE_DISK_SERIAL}`;

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
  const argv = ["convert", "-f", "raw", "-O", format];
  if (type === "qcow2" && options.compress) argv.push("-c");
  const opts = [type === "vhd" ? "subformat=fixed" : "", options.qemuImgOptions].filter(Boolean).join(",");
  if (opts) argv.push("-o", opts);
  argv.push(source, target);
  return argv;
}

/** Guest commands that write the tree-based outputs (tar, tgz, aci, squashfs, docker) into the work dir. */
export function treeOutputCommands(outputs: readonly PlanOutput[], root: string, outDir: string): string[] {
  const excludes = "--exclude=./proc --exclude=./sys --exclude=./dev/* --exclude=./tmp/in_target.d";
  const cmds: string[] = [];
  for (const o of outputs) {
    const file = `${outDir}/${o.type}`;
    switch (o.type) {
      case "tar":
        cmds.push(`tar -C ${root} -cf ${file} --numeric-owner --xattrs --xattrs-include='*' ${excludes} .`);
        break;
      case "tgz":
        cmds.push(`tar -C ${root} -czf ${file} --numeric-owner --xattrs --xattrs-include='*' ${excludes} .`);
        break;
      case "aci":
        cmds.push(
          `tar -C ${root} -cf ${file} --numeric-owner --transform 's,^\\.,rootfs,S' ${excludes} .`,
          `printf '%s\\n' '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"vmdib/image"}' > ${outDir}/manifest`,
          `tar -C ${outDir} --append -f ${file} manifest`,
        );
        break;
      case "squashfs":
        cmds.push(
          `mksquashfs ${root} ${file} -comp xz -noappend -wildcards -e 'proc/*' -e 'sys/*' -no-recovery -quiet`,
        );
        break;
      case "docker":
        cmds.push(dockerArchiveCommand(root, outDir, file));
        break;
      default:
        break;
    }
  }
  return cmds;
}

/**
 * A `docker load`/`podman load` archive without any daemon: one layer (the tree as a tar), its config, and the
 * manifest.json that names them, in the docker-archive layout.
 */
function dockerArchiveCommand(root: string, outDir: string, file: string): string {
  const d = `${outDir}/docker`;
  return [
    `rm -rf ${d} && mkdir -p ${d}`,
    `tar -C ${root} -cf ${d}/layer.tar --numeric-owner --exclude=./proc --exclude=./sys --exclude=./dev/* --exclude=./tmp/in_target.d .`,
    `diff=$(sha256sum ${d}/layer.tar | cut -d' ' -f1)`,
    `printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/bash"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"vmdib"}]}' "$diff" > ${d}/config.json`,
    `cfg=$(sha256sum ${d}/config.json | cut -d' ' -f1)`,
    `mv ${d}/config.json ${d}/$cfg.json`,
    `printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$cfg" "$DOCKER_TARGET" > ${d}/manifest.json`,
    `tar -C ${d} -cf ${file} manifest.json "$cfg.json" layer.tar`,
    `rm -rf ${d}`,
  ].join(" && ");
}

async function sha(path: string, algorithm: "md5" | "sha256"): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
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

/** Runs the whole plan. Outputs appear next to -o only when everything succeeded. Returns the published files. */
export async function executePlan(
  plan: BuildPlan,
  options: BuildOptions,
  config: BlockDeviceConfig,
  workDir: string,
  deps: ExecuteDeps,
): Promise<string[]> {
  const reportCleanupError = (e: Error) => deps.onEvent({ type: "info", message: e.message });
  return await withCleanup(async (cleanup) => {
    const imagePath = join(workDir, "image.raw");
    await (await open(imagePath, "w", 0o600)).close();
    await truncate(imagePath, IMAGE_DISK_CAPACITY);

    const machine = await deps.startMachine({
      workDir,
      elementShares: plan.shares,
      imageDisk: { path: imagePath, serial: IMAGE_DISK_SERIAL },
    });
    cleanup.push("stop the helper VM", () => machine.stop());

    const driver = `${GUEST_PATHS.driver}/run-phase`;
    const runStep = async (step: string, argv: readonly string[], where: string = "appliance"): Promise<string[]> => {
      deps.onEvent({ type: "step-start", step, where });
      const started = Date.now();
      const tail: string[] = [];
      const stdout = lineStream(step, "stdout", deps, tail);
      const stderr = lineStream(step, "stderr", deps, tail);
      const code = await machine.exec(argv, { stdout, stderr, signal: deps.signal });
      stdout.end();
      stderr.end();
      deps.onEvent({ type: "step-end", step, seconds: (Date.now() - started) / 1000, ok: code === 0 });
      if (code !== 0) {
        const failed = tail.map((l) => /dib-run-parts (\S+) failed with exit code (\d+)/.exec(l)).find(Boolean);
        const script = failed ? ` (${failed[1]?.replace(/.*\/([^/]+\.d)\//, "$1/")}, exit code ${failed[2]})` : "";
        throw new VmdibError(`step '${step}' failed with exit code ${code}${script}`, {
          context: tail,
          hint: "the lines above are the end of its output; rerun with -x to trace the element scripts",
        });
      }
      return tail;
    };
    const phase = (name: string, ...args: string[]) =>
      runStep(
        name,
        ["bash", driver, ...(options.trace > 0 ? ["-x"] : []), GUEST_PATHS.work, name, ...args],
        plan.steps.find((s) => s.name === name)?.where,
      );
    /** Generated scripts reach the guest through the work dir; `run` runs one as a step. */
    const writeScript = async (name: string, text: string) => {
      await writeFile(join(workDir, `${name}.sh`), text, { mode: 0o700 });
      return ["bash", `${GUEST_PATHS.work}/${name}.sh`];
    };
    const script = async (name: string, text: string) => runStep(name, await writeScript(name, text));

    // The tree is built in tmpfs inside the guest (DIB's tmpfs build): device nodes and ownership work there, and
    // under TCG it is far faster than any disk. The guest's memory bounds it.
    await runStep("prepare", [
      "bash",
      "-c",
      `set -eu; mkdir -p ${GUEST_PATHS.build} && mount -t tmpfs -o size=90%,mode=0755 vmdib-build ${GUEST_PATHS.build}`,
    ]);
    // Once the VM is stopped on the success path, the in-guest undo steps have nothing left to do.
    let vmStopped = false;
    const inGuest = (fn: () => Promise<unknown>) => async () => {
      if (!vmStopped) await fn().catch(() => undefined);
    };
    cleanup.push(
      "unmount the build tree",
      inGuest(() => phase("unmount", "--all")),
    );
    for (const name of ["root", "extra-data", "pre-install", "install"]) await phase(name);
    if (options.packages.length > 0) await phase("packages", ...options.packages);
    for (const name of ["post-install", "post-root"]) await phase(name);

    const stashed = await phase("stash-root");
    const kib = Number(/VMDIB_BUILT_KIB=(\d+)/.exec(stashed.join("\n"))?.[1]);
    if (!Number.isFinite(kib)) throw new VmdibError("the guest did not report the size of the built tree");
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

    await phase("block-device");
    const exportsFile = `${GUEST_PATHS.build}/env.d/40-block-device.env`;
    const release = await writeScript("blockdev-cleanup", buildCleanupScript(layout));
    cleanup.push(
      "release the block devices",
      inGuest(() => machine.exec(release, quiet())),
    );
    await script("blockdev-setup", buildSetupScript(layout, { exportsFile }));
    await script("fstab", buildFstabScript(layout, `${GUEST_PATHS.build}/built`));
    await phase("copy-root");
    for (const name of ["pre-finalise", "finalise", "cleanup"]) await phase(name);

    const treeCmds = treeOutputCommands(plan.outputs, GUEST_PATHS.targetRoot, GUEST_PATHS.out);
    if (treeCmds.length > 0)
      await runStep("tree-outputs", ["bash", "-c", `set -eu -o pipefail\n${treeCmds.join("\n")}`]);
    // Chroot mounts only: the block device's own mounts (DIB_MOUNTPOINTS, /boot/efi) are the umount script's.
    await phase("unmount");
    await script("blockdev-umount", buildUmountScript(layout));
    vmStopped = true;
    await machine.stop();

    // The disk holds the image in its first sizeBytes; the rest of the sparse capacity was never written.
    await truncate(imagePath, sizeBytes);
    return await publishOutputs(plan, options, workDir, imagePath, deps);
  }, reportCleanupError);
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

/** Converts or moves every output to a temporary name next to -o, then renames all of them into place. */
async function publishOutputs(
  plan: BuildPlan,
  options: BuildOptions,
  workDir: string,
  imagePath: string,
  deps: ExecuteDeps,
): Promise<string[]> {
  const staged: { tmp: string; final: string; type: ImageType }[] = [];
  try {
    for (const o of plan.outputs) {
      const final = resolve(deps.cwd, o.path);
      await mkdir(dirname(final), { recursive: true });
      const tmp = `${final}.vmdib-partial-${process.pid}`;
      staged.push({ tmp, final, type: o.type });
      if (QEMU_IMG_FORMAT[o.type]) {
        deps.onEvent({ type: "step-start", step: `convert ${o.type}`, where: "host" });
        const started = Date.now();
        await deps.qemuImg(convertArgv(imagePath, tmp, o.type, options), deps.signal);
        deps.onEvent({ type: "step-end", step: `convert ${o.type}`, seconds: (Date.now() - started) / 1000, ok: true });
      } else {
        await rename(join(workDir, "out", o.type), tmp);
      }
    }
    // The manifests element leaves <name>.d/ next to the image, as DIB does.
    const manifests = join(workDir, "out", `${basename(outputName(options))}.d`);
    if (
      await stat(manifests).then(
        (s) => s.isDirectory(),
        () => false,
      )
    ) {
      const final = resolve(deps.cwd, `${outputName(options)}.d`);
      await rm(final, { recursive: true, force: true });
      await cp(manifests, final, { recursive: true });
    }
    for (const s of staged) {
      await rename(s.tmp, s.final);
      const o = plan.outputs.find((x) => x.type === s.type);
      if (o && o.checksums.length > 0) {
        await writeFile(`${s.final}.md5`, `${await sha(s.final, "md5")}  ${o.path.split("/").pop()}\n`);
        await writeFile(`${s.final}.sha256`, `${await sha(s.final, "sha256")}  ${o.path.split("/").pop()}\n`);
      }
      deps.onEvent({ type: "artifact", path: s.final, format: s.type, bytes: (await stat(s.final)).size });
    }
    return staged.map((s) => s.final);
  } finally {
    for (const s of staged) await rm(s.tmp, { force: true });
  }
}
