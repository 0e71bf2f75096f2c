// `vmdib build`: options → elements → block-device layout → plan; `--dry-run` prints the plan, else it is executed.
import { createWriteStream, constants as fsc, type WriteStream } from "node:fs";
import { access, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import type { Writable } from "node:stream";
import { execa } from "execa";
import { type BlockDeviceConfig, loadBlockDeviceConfig } from "../blockdev/config.js";
import { blockDeviceInitInfo, describeBlockDevicePlan, planBlockDevice } from "../blockdev/graph.js";
import { GiB } from "../blockdev/size.js";
import { describeImage, parseBuildFiles } from "../buildfile.js";
import {
  commitTree,
  digestDir,
  digestElement,
  digestHostFiles,
  GUEST_TREES,
  lookupTree,
  treeCacheKey,
  treeFile,
} from "../cache/tree.js";
import { type BuildOptions, buildHelp, imageOptions, type ParsedArgs, parseArgv, parseBuildArgs } from "../config.js";
import { loadElementSet } from "../elements/discover.js";
import { UsageError, VmdibError } from "../errors.js";
import { type BuildEvent, BuildSession, SESSION_GUEST, type TreeCacheStep } from "../execute.js";
import { withLock } from "../lock.js";
import { resolveMirror } from "../mirror.js";
import { cacheDir, GUEST_DIR } from "../paths.js";
import { type BuildPlan, blockDeviceParams, buildPlan, GUEST_PATHS, renderPlan } from "../plan.js";
import { createView, loadTimings, saveTimings, type Timings, timingsKey, type ViewEvent } from "../progress.js";
import { lineRedactor, redactSecrets } from "../redact.js";
import { type BuildReport, collectReport, renderReport } from "../report.js";
import { prepareDebootstrapStage1 } from "../rootfs/debootstrap.js";
import { shellJoin } from "../shell.js";
import { VERSION } from "../version.js";
import { sha256File } from "../vm/appliance/archive.js";
import { makeWorkDir } from "../workdir.js";
import type { Command, CommandContext } from "./context.js";
import { bootFromCli } from "./run.js";
import { terminalShell } from "./shell.js";

/** Host variables that reach the element scripts: DIB's own (`DIB_*`) and a few it documents, never with -c. */
export function passedEnv(env: NodeJS.ProcessEnv, options: Pick<BuildOptions, "clearEnv">): Record<string, string> {
  if (options.clearEnv) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    // DIB_BLOCK_DEVICE_CONFIG is planned on the host; the image cache path is the guest's.
    if (k.startsWith("DIB_") && k !== "DIB_BLOCK_DEVICE_CONFIG" && k !== "DIB_IMAGE_CACHE") out[k] = v;
  }
  return out;
}

/** Debian builds get the mirror the host's apt uses unless DIB_DISTRIBUTION_MIRROR says otherwise. */
function debianMirror(elements: readonly { name: string }[], env: NodeJS.ProcessEnv): Record<string, string> {
  if (env.DIB_DISTRIBUTION_MIRROR || !elements.some((e) => e.name === "debian-minimal" || e.name === "debian"))
    return {};
  return { DIB_DISTRIBUTION_MIRROR: resolveMirror(env) };
}

/** Everything before execution: pure but for reading element trees and the block-device config. */
export async function planBuild(options: BuildOptions, ctx: Pick<CommandContext, "env" | "cwd">) {
  const set = await loadElementSet({
    requested: options.elements,
    elementsPath: options.elementsPath,
    skipBase: options.skipBase,
    arch: options.arch,
    cwd: ctx.cwd,
  });
  const config = await loadBlockDeviceConfig({
    dibBlockDeviceConfig: options.blockDeviceConfig,
    elements: set.elements,
    arch: options.arch,
  });
  // Without --image-size the real size is known only after post-root.d (DIB's rule over the built tree): the
  // layout is planned with a provisional 1 GiB and planned again by the executor once the tree is measured.
  const params = blockDeviceParams(options);
  const layout = planBlockDevice(config, {
    ...params,
    imageSizeBytes: options.imageSize ?? GiB,
    imageDir: GUEST_PATHS.imageDir,
    mountBase: GUEST_PATHS.targetRoot,
  });
  // DIB exports the root label, type and mount points before root.d runs; elements read them early.
  const early = blockDeviceInitInfo(config, params);
  const blockDevice = {
    size:
      options.imageSize === undefined
        ? "computed after post-root.d: du of the tree / 0.6 (or + --image-extra-size), + ext4 journal, + EFI partition"
        : `${options.imageSize} bytes (--image-size)`,
    summary: describeBlockDevicePlan(layout),
    layout,
  };
  const plan = buildPlan({
    options,
    elements: set.elements,
    hooks: set.hooks.phases,
    environmentFiles: set.hooks.environment,
    blockDevice,
    passEnv: { ...debianMirror(set.elements, ctx.env), ...passedEnv(ctx.env, options), ...early.env },
    version: VERSION,
  });
  return { plan, config, rootFsType: early.rootFsType, warnings: [...set.warnings, ...layout.warnings] };
}

export const run: Command = async (ctx) => {
  const options = parseBuildArgs(ctx.args, ctx.env);
  if (options.help) {
    ctx.stdout.write(buildHelp());
    return 0;
  }
  if (options.version) {
    ctx.stdout.write(`vmdib ${VERSION}\n`);
    return 0;
  }
  if (options.files.length > 0) return await runBuildFiles(parseArgv(ctx.args), options, ctx);
  const planned = await planBuild(options, ctx);
  for (const w of planned.warnings) ctx.stderr.write(`vmdib: warning: ${w}\n`);
  needsTerminal(options, ctx);
  if (options.dryRun) {
    // Redacted: DIB_* values may hold a proxy URL with credentials or a key (the plan itself keeps them).
    ctx.stdout.write(
      redactSecrets(options.json ? `${JSON.stringify(planned.plan, null, 2)}\n` : renderPlan(planned.plan)),
    );
    return 0;
  }
  return await buildImages([{ ...planned, options }], options, ctx);
};

function needsTerminal(options: BuildOptions, ctx: CommandContext): void {
  if (options.breakAt.length > 0 && !options.dryRun && ctx.stdin.isTTY !== true)
    throw new UsageError(`--break ${options.breakAt.join(",")} opens a shell and needs a terminal`, {
      hint: "run the build from a terminal, or drop --break (and the break variable)",
    });
}

/** One image to build: its options and plan, and for a build file's image how messages name it. */
interface PlannedImage {
  readonly options: BuildOptions;
  readonly plan: BuildPlan;
  readonly config: BlockDeviceConfig;
  /** "images.yaml entry 2 (line 7, imagename 'b')"; absent for the command line's one image. */
  readonly label?: string;
}

/** DIB_IMAGE_CACHE on the host: --image-cache, else the user's cache. */
function imageCacheDir(options: BuildOptions, ctx: Pick<CommandContext, "cwd" | "env">): string {
  return resolve(ctx.cwd, options.imageCache ?? join(cacheDir(ctx.env), "image-create"));
}

/** Puts where it happened in front of an error's message (the error keeps its class, hint and exit code). */
function prefixed(err: unknown, label: string): unknown {
  if (err instanceof Error && !err.message.startsWith(label)) err.message = `${label}: ${err.message}`;
  return err;
}

/**
 * `vmdib build -f FILE...`: every image of the build files, planned up front (a bad entry fails before anything
 * boots), then built one after another in one helper VM. The command line's settings are each image's defaults.
 */
async function runBuildFiles(cli: ParsedArgs, runOptions: BuildOptions, ctx: CommandContext): Promise<number> {
  const files: { name: string; text: string }[] = [];
  for (const file of runOptions.files) {
    const text = await readFile(resolve(ctx.cwd, file), "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read the build file ${file} (${err.code ?? err.message})`, {
        hint: "give -f the path of a YAML build file",
        cause: err,
      });
    });
    files.push({ name: file, text });
  }
  const cliName = cli.values.get("imageName");
  const images: PlannedImage[] = [];
  // Several files are one list of entries, as DIB reads them.
  for (const image of parseBuildFiles(files, typeof cliName === "string" ? cliName : undefined)) {
    const label = describeImage(image);
    // The entry's environment is this image's only: each image starts again from the host's.
    const env = { ...ctx.env, ...image.environment };
    try {
      const options = imageOptions(cli, env, image, label);
      const planned = await planBuild(options, { env, cwd: ctx.cwd });
      for (const w of planned.warnings) ctx.stderr.write(`vmdib: warning: ${label}: ${w}\n`);
      images.push({ ...planned, options, label });
    } catch (err) {
      throw prefixed(err, label);
    }
  }
  const owner = new Map<string, string>();
  for (const image of images)
    for (const o of image.plan.outputs) {
      const path = resolve(ctx.cwd, o.path);
      const other = owner.get(path);
      if (other !== undefined)
        throw new UsageError(`${image.label} and ${other} both write ${o.path}`, {
          hint: "give each image its own imagename",
        });
      owner.set(path, image.label ?? "");
    }
  // One helper VM, one image cache share for all of them.
  const caches = new Set(images.map((i) => imageCacheDir(i.options, ctx)));
  if (caches.size > 1)
    throw new UsageError(`the images of ${runOptions.files.join(", ")} name different image-cache directories`, {
      hint: "one helper VM shares one download cache: set image-cache once, on the command line",
    });
  needsTerminal(runOptions, ctx);
  if (runOptions.dryRun) {
    const listed = images.map((i) => ({ image: i.label, plan: i.plan }));
    ctx.stdout.write(
      redactSecrets(
        runOptions.json
          ? `${JSON.stringify({ images: listed }, null, 2)}\n`
          : listed
              .map((i, k) => `== image ${k + 1} of ${images.length}: ${i.image}\n\n${renderPlan(i.plan)}`)
              .join("\n"),
      ),
    );
    return 0;
  }
  return await buildImages(images, runOptions, ctx);
}

/**
 * Runs the host's qemu-img (`convert` and the like) with -p, turning its "(NN.NN/100%)" lines into progress. A
 * failure is the user's to fix (an option the format does not take, a full disk), so it says qemu-img's reason.
 */
export async function runQemuImg(
  [verb = "convert", ...rest]: readonly string[],
  signal?: AbortSignal,
  onProgress?: (fraction: number) => void,
): Promise<void> {
  const child = execa("qemu-img", [verb, "-p", ...rest], {
    cancelSignal: signal,
    stdin: "ignore",
    reject: false,
  });
  child.stdout?.on("data", (chunk: Buffer) => {
    const all = [...chunk.toString().matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
    const last = all[all.length - 1]?.[1];
    if (last !== undefined) onProgress?.(Number(last) / 100);
  });
  const r = await child;
  if (r.isCanceled && signal?.reason) throw signal.reason;
  if (!r.failed) return;
  const missing = r.code === "ENOENT";
  const reason = missing
    ? "qemu-img is not installed"
    : (String(r.stderr).trim().split("\n").pop() ?? `exit code ${r.exitCode}`).replace(/^qemu-img: /, "");
  throw new VmdibError(`qemu-img ${verb} failed: ${reason}`, {
    context: [`qemu-img ${shellJoin([verb, "-p", ...rest])}`],
    hint: missing
      ? "install it: apt-get install qemu-utils (Debian/Ubuntu), brew install qemu (macOS)"
      : "check --qemu-img-options (DIB's QEMU_IMG_OPTIONS): each output type takes only its own format's options",
  });
}

/** How one image of the run went, for the summary at the end. */
export interface ImageResult {
  readonly name: string;
  readonly label: string | undefined;
  status: "built" | "failed" | "not started";
  seconds: number;
  outputs: { readonly path: string; readonly bytes: number }[];
  /** QEMU's pid: one helper VM serves every image. */
  qemuPid?: number;
}

/** The table printed after the images of a build file (pure). */
export function renderImagesSummary(results: readonly ImageResult[]): string {
  const mib = (b: number) => `${(b / 1024 ** 2).toFixed(1)} MiB`;
  const lines = ["Images"];
  const w = Math.max(...results.map((r) => r.name.length));
  for (const r of results) {
    const time = r.status === "not started" ? "" : `  ${r.seconds.toFixed(1)} s`;
    lines.push(`  ${r.name.padEnd(w)}  ${r.status}${time}${r.label ? `  (${r.label})` : ""}`);
    for (const o of r.outputs) lines.push(`  ${"".padEnd(w)}    ${o.path}  ${mib(o.bytes)}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Builds the images in order in one helper VM (booted for the first, stopped after the last). The first image that
 * fails stops the run: images built before it are kept, later ones are not started, and its own older outputs stay
 * (outputs are only replaced once all of an image's are complete).
 */
async function buildImages(images: readonly PlannedImage[], runOptions: BuildOptions, ctx: CommandContext) {
  // Every output directory is checked before anything boots.
  for (const image of images) await outputDir(image.plan, ctx);
  const first = images[0];
  if (!first) return 0;
  const run: RunShared = {
    imageCache: imageCacheDir(first.options, ctx),
    trees: join(cacheDir(ctx.env), "trees"),
    logfiles: new Map(),
    current: undefined,
    accel: undefined,
  };
  await mkdir(run.imageCache, { recursive: true });
  const results: ImageResult[] = images.map((i) => ({
    name: i.plan.imageName,
    label: i.label,
    status: "not started",
    seconds: 0,
    outputs: [],
  }));
  const dir = await mkdtemp(join(tmpdir(), "vmdib-build-"));
  let qemuPid: number | undefined;
  const session = new BuildSession(
    dir,
    images.map((i) => i.plan),
    async (req, alongside) => {
      const say = (e: ViewEvent) => run.current?.render(e);
      const machine = await bootFromCli(ctx, {
        ...(alongside ? { alongsideBoot: alongside } : {}),
        accel: runOptions.accel,
        memoryMiB: runOptions.memoryMb,
        offline: runOptions.offline,
        verbose: !runOptions.json,
        log: (message) => say({ type: "info", message }),
        onDownload: (p) => say({ ...p, type: "download", what: `appliance ${p.what}` }),
        // --no-cache bypasses every cache, the saved appliance snapshot included.
        snapshot: !runOptions.noCache,
        shares: [
          { hostPath: req.workRoot, guestPath: SESSION_GUEST, readonly: false },
          { hostPath: run.imageCache, guestPath: GUEST_PATHS.imageCache, readonly: false },
          { hostPath: run.trees, guestPath: GUEST_TREES, readonly: false },
          ...req.elementShares.map((s) => ({ hostPath: s.host, guestPath: s.guest, readonly: true })),
        ],
        disks: [{ serial: req.imageDisk.serial, path: req.imageDisk.path, format: "raw" }],
      });
      run.accel = `${machine.accel.accel} (${machine.accel.reason})`;
      qemuPid = machine.pid;
      say({ type: "info", message: `helper VM up: QEMU pid ${machine.pid} (${machine.start} start)` });
      const terminal = ctx.stdin.isTTY === true;
      return {
        exec: (argv, io) => machine.exec(argv, io),
        ...(terminal
          ? {
              shell: async (argv: readonly string[]) => {
                run.current?.view.pause();
                try {
                  return await terminalShell(ctx, machine, shellJoin(argv));
                } finally {
                  run.current?.view.resume();
                }
              },
            }
          : {}),
        stop: () => machine.stop(),
      };
    },
  );
  let failure: unknown;
  try {
    for (const [k, image] of images.entries()) {
      const result = results[k] as ImageResult;
      const started = Date.now();
      try {
        await withOutputLock(image.plan, ctx, () => buildImage(session, image, ctx, run, result));
        result.status = "built";
      } catch (err) {
        result.status = "failed";
        const rest = images.slice(k + 1).map((i) => i.plan.imageName);
        if (image.label && err instanceof VmdibError && rest.length > 0)
          err.context.push(`not started (the run stops at the first failure): ${rest.join(", ")}`);
        throw image.label ? prefixed(err, image.label) : err;
      } finally {
        result.seconds = (Date.now() - started) / 1000;
        result.qemuPid = qemuPid;
      }
    }
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    // A failed stop matters less than the failure that brought us here: never let it mask that error.
    await session.close().catch((err: unknown) => {
      if (!failure) throw err;
    });
    await rm(dir, { recursive: true, force: true });
    for (const stream of run.logfiles.values()) await new Promise((done) => stream.end(() => done(undefined)));
    if (images.some((i) => i.label)) {
      ctx.stdout.write(
        runOptions.json
          ? `${JSON.stringify({ time: new Date().toISOString(), type: "images", images: results })}\n`
          : renderImagesSummary(results),
      );
    }
  }
  return 0;
}

/** What the images of one run share: caches, log files, and the image being built now (its view and events). */
interface RunShared {
  readonly imageCache: string;
  readonly trees: string;
  /** Log files by path: images naming the same one append to it. */
  readonly logfiles: Map<string, WriteStream>;
  current: { render: (e: ViewEvent) => void; view: ReturnType<typeof buildView> } | undefined;
  /** The helper VM's accelerator, once it is up. */
  accel: string | undefined;
}

/** Checks an image's output directory can be written (made when missing), before anything boots. */
async function outputDir(plan: BuildPlan, ctx: CommandContext): Promise<void> {
  const dir = dirname(resolve(ctx.cwd, plan.imageName));
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, fsc.W_OK);
  } catch (err) {
    throw new UsageError(`cannot write to the output directory ${dir} (${(err as NodeJS.ErrnoException).code})`, {
      hint: "choose an -o in a directory you can write",
      cause: err,
    });
  }
}

/**
 * One build at a time per -o: a lock file next to the outputs, so a second build aimed at the same name waits instead
 * of interleaving (a dead owner's lock is taken over).
 */
async function withOutputLock<T>(plan: BuildPlan, ctx: CommandContext, fn: () => Promise<T>): Promise<T> {
  await outputDir(plan, ctx);
  return await withLock(`${resolve(ctx.cwd, plan.imageName)}.vmdib-lock`, fn, {
    signal: ctx.signal,
    onWait: (owner) =>
      ctx.stderr.write(`vmdib: waiting for another build (pid ${owner.split(" ")[0]}) writing ${plan.imageName}\n`),
  });
}

/** One image in the run's helper VM: its own view, caches, work dir, the plan walked, outputs and its summary. */
async function buildImage(
  session: BuildSession,
  image: PlannedImage,
  ctx: CommandContext,
  run: RunShared,
  result: ImageResult,
): Promise<void> {
  const { options, config } = image;
  const { report, onEvent: collect } = collectReport();
  const timings = join(cacheDir(ctx.env), "timings");
  const timingKey = timingsKey(
    image.plan.elements.map((e) => e.name),
    image.plan.outputs.map((o) => o.type),
  );
  let logfile: WriteStream | undefined;
  if (options.logfile) {
    const path = resolve(ctx.cwd, options.logfile);
    logfile = run.logfiles.get(path) ?? createWriteStream(path, { flags: "w" });
    run.logfiles.set(path, logfile);
  }
  const view = buildView(ctx, options, await loadTimings(timings, timingKey), logfile);
  const render = (e: ViewEvent) => {
    if (e.type !== "download") collect(e);
    view.onEvent(e);
  };
  run.current = { render, view };
  if (image.label) render({ type: "info", message: `building ${image.label}` });
  const { plan, write: writeStage1 } = await withDebootstrapStage1(
    image.plan,
    options,
    run.imageCache,
    ctx,
    render,
    report,
  );
  const treeCache = await treeCacheStep(plan, options, run.trees, render);
  report.caches.push({
    name: "tree after post-root.d",
    result: `${treeCache.restore ? "hit" : "miss"} ${treeCache.key}`,
  });
  await mkdir(session.workRoot, { recursive: true });
  const workDir = await makeWorkDir(plan, session.workRoot);
  const started = Date.now();
  let ok = false;
  try {
    await session.build(plan, options, config, workDir, {
      cwd: ctx.cwd,
      signal: ctx.signal,
      onEvent: render,
      treeCache,
      qemuImg: runQemuImg,
      ...(writeStage1 ? { hostWork: writeStage1 } : {}),
    });
    ok = true;
  } finally {
    await rm(workDir, { recursive: true, force: true });
    if (treeCache.saveTo) await rm(join(run.trees, basename(treeCache.saveTo)), { force: true });
    report.totalSeconds = (Date.now() - started) / 1000;
    if (run.accel) report.accel = run.accel;
    view.close();
    if (ok) {
      for (const o of report.outputs) o.sha256 = await outputSha256(o.path);
      const steps = Object.fromEntries(report.steps.map((s) => [s.name, s.seconds]));
      await saveTimings(timings, timingKey, { steps, total: report.totalSeconds }).catch(() => undefined);
    }
    result.outputs = report.outputs.map((o) => ({ path: o.path, bytes: o.bytes }));
    const summary = options.json
      ? `${JSON.stringify({ time: new Date().toISOString(), type: "summary", ...(image.label ? { image: image.label } : {}), ...report })}\n`
      : renderReport(report);
    ctx.stdout.write(summary);
    logfile?.write(summary);
    run.current = undefined;
  }
}

/** An output's sha256: from the .sha256 file --checksum wrote next to it, else computed. */
async function outputSha256(path: string): Promise<string> {
  const written = await readFile(`${path}.sha256`, "utf8").catch(() => "");
  return /^[0-9a-f]{64}/.exec(written)?.[0] ?? (await sha256File(path));
}

/**
 * The phase-level cache for this plan: its key over everything that feeds root.d … post-root.d, and whether a tree
 * for it is there. --no-cache makes the tree again (and replaces the entry).
 */
async function treeCacheStep(
  plan: BuildPlan,
  options: BuildOptions,
  dir: string,
  render: (e: BuildEvent) => void,
): Promise<TreeCacheStep & { key: string }> {
  await mkdir(dir, { recursive: true });
  const key = treeCacheKey({
    arch: plan.arch,
    elements: await Promise.all(plan.elements.map(async (e) => ({ name: e.name, files: await digestElement(e.path) }))),
    env: plan.environment.common,
    hostFiles: await digestHostFiles(plan.environment.common),
    driver: await digestDir(join(GUEST_DIR, "dib")),
  });
  // --break stops inside phases the cached tree would skip: they run.
  const found = options.noCache || options.breakAt.length > 0 ? undefined : await lookupTree(dir, key);
  if (found?.hit) {
    render({
      type: "info",
      message: `tree cache hit ${key} (saved ${found.meta.created}): root.d … post-root.d are skipped`,
    });
    return {
      key,
      restore: { file: `${GUEST_TREES}/${treeFile(key)}`, builtKib: found.meta.builtKib },
      commit: async () => {},
    };
  }
  const why = found
    ? found.reason === "damaged"
      ? "the cached tree was damaged and is removed"
      : "not cached"
    : options.noCache
      ? "--no-cache"
      : "--break";
  render({ type: "info", message: `tree cache miss ${key} (${why}): the tree after post-root.d will be saved` });
  const partial = `${treeFile(key)}.partial-${process.pid}`;
  return {
    key,
    saveTo: `${GUEST_TREES}/${partial}`,
    commit: async (builtKib) => {
      const meta = await commitTree(
        dir,
        key,
        join(dir, partial),
        plan.elements.map((e) => e.name),
        builtKib,
      );
      render({ type: "info", message: `tree cache: saved ${key} (${(meta.bytes / 1024 ** 2).toFixed(0)} MiB)` });
    },
  };
}

/**
 * debootstrap's first stage natively on the host (src/rootfs/debootstrap.ts) when the build uses a debootstrap
 * element on Debian: the guest then runs only the second stage. Any failure here but the mirror's only costs that
 * speed-up. On a miss the tarball is written by `write`, which the build runs while the helper VM boots; if it
 * fails, the guest finds no tarball and runs debootstrap whole.
 */
async function withDebootstrapStage1(
  plan: BuildPlan,
  options: BuildOptions,
  imageCache: string,
  ctx: CommandContext,
  render: (e: ViewEvent) => void,
  report: BuildReport,
): Promise<{ plan: BuildPlan; write?: () => Promise<void> }> {
  const started = Date.now();
  const failed = (err: unknown): undefined => {
    if (ctx.signal?.aborted) throw err;
    // A mirror that refuses or fails here fails the guest's debootstrap too (the guest reaches the network through
    // this host, and is given no proxy), only later and as a cascade: stop with its error.
    if (err instanceof VmdibError && /\bDebian mirror\b/.test(err.message))
      throw mirrorSettingNamed(err, plan.environment.common);
    const message = err instanceof Error ? err.message : String(err);
    render({
      type: "info",
      message: `warning: debootstrap stage one on the host failed (${message}); the guest runs it`,
    });
  };
  const stage1 = await prepareDebootstrapStage1({
    elements: plan.elements,
    env: plan.environment.common,
    arch: plan.arch,
    imageCache,
    guestImageCache: GUEST_PATHS.imageCache,
    cacheRoot: cacheDir(ctx.env),
    offline: options.offline,
    noCache: options.noCache,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    onEvent: (e) => {
      if (e.type === "step" || e.type === "warning") render({ type: "info", message: e.message });
      else if (e.type === "downloads" && e.count) render({ type: "info", message: `downloading ${e.count} packages` });
      else if (e.type === "download-progress") render({ ...e, type: "download", what: `debootstrap ${e.what}` });
    },
  }).catch(failed);
  if (!stage1) return { plan };
  report.caches.push({ name: "debootstrap stage one", result: `${stage1.hit ? "hit" : "miss"} ${stage1.key}` });
  const done = (what: string, since: number) =>
    render({
      type: "info",
      message: `debootstrap stage one ${what} on the host (key ${stage1.key}) in ${((Date.now() - since) / 1000).toFixed(1)} s`,
    });
  const env = { ...plan.environment.common, ...stage1.env };
  const withStage1 = { ...plan, environment: { ...plan.environment, common: env } };
  const { write } = stage1;
  if (!write) {
    done("cached", started);
    return { plan: withStage1 };
  }
  return {
    plan: withStage1,
    write: () => {
      const since = Date.now();
      return write().then(() => done("built", since), failed);
    },
  };
}

/** The mirror error with its hint naming the variable the debootstrap mirror came from (DIB's Debian one first). */
function mirrorSettingNamed(err: VmdibError, env: Readonly<Record<string, string>>): VmdibError {
  const name = env.DIB_DEBIAN_DISTRIBUTION_MIRROR ? "DIB_DEBIAN_DISTRIBUTION_MIRROR" : "DIB_DISTRIBUTION_MIRROR";
  return new VmdibError(err.message, {
    cause: err,
    exitCode: err.exitCode,
    context: [...err.context, "(debootstrap's packages, fetched on the host: the guest would meet the same mirror)"],
    ...(err.hint ? { hint: err.hint.replaceAll("DIB_DISTRIBUTION_MIRROR", name) } : {}),
  });
}

/** The build's view (src/progress.ts) on stdout, with secrets kept out of every line and JSON event. */
function buildView(ctx: CommandContext, options: BuildOptions, last: Timings | undefined, logfile?: Writable) {
  const redactLine = lineRedactor();
  const view = createView(ctx.stdout, {
    json: options.json,
    quiet: options.quiet,
    tty: Boolean(ctx.stdout.isTTY),
    ...(ctx.stdout.columns ? { columns: ctx.stdout.columns } : {}),
    ...(logfile ? { logfile } : {}),
    ...(last ? { last } : {}),
    redact: redactSecrets,
  });
  return {
    ...view,
    // Script output may print a proxy URL with credentials or a private key: neither reaches the log.
    onEvent: (e: ViewEvent) => view.onEvent(e.type === "output" ? { ...e, line: redactLine(e.line) } : e),
  };
}
