// `vmdib build`: options → elements → block-device layout → plan; `--dry-run` prints the plan, else it is executed.
import { createWriteStream, constants as fsc } from "node:fs";
import { access, mkdir, readFile, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Writable } from "node:stream";
import { execa } from "execa";
import { type BlockDeviceConfig, loadBlockDeviceConfig } from "../blockdev/config.js";
import { blockDeviceInitInfo, describeBlockDevicePlan, planBlockDevice } from "../blockdev/graph.js";
import { GiB } from "../blockdev/size.js";
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
import { type BuildOptions, buildHelp, parseBuildArgs } from "../config.js";
import { loadElementSet } from "../elements/discover.js";
import { UsageError } from "../errors.js";
import { type BuildEvent, executePlan, type TreeCacheStep } from "../execute.js";
import { withLock } from "../lock.js";
import { resolveMirror } from "../mirror.js";
import { cacheDir, GUEST_DIR } from "../paths.js";
import { type BuildPlan, blockDeviceParams, buildPlan, GUEST_PATHS, renderPlan } from "../plan.js";
import { createView, loadTimings, saveTimings, type Timings, timingsKey } from "../progress.js";
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
  const { plan, config, warnings } = await planBuild(options, ctx);
  for (const w of warnings) ctx.stderr.write(`vmdib: warning: ${w}\n`);
  if (options.breakAt.length > 0 && !options.dryRun && ctx.stdin.isTTY !== true)
    throw new UsageError(`--break ${options.breakAt.join(",")} opens a shell and needs a terminal`, {
      hint: "run the build from a terminal, or drop --break (and the break variable)",
    });
  if (options.dryRun) {
    // Redacted: DIB_* values may hold a proxy URL with credentials or a key (the plan itself keeps them).
    ctx.stdout.write(redactSecrets(options.json ? `${JSON.stringify(plan, null, 2)}\n` : renderPlan(plan)));
    return 0;
  }
  return await withOutputLock(plan, ctx, () => execute(plan, options, config, ctx));
};

/**
 * One build at a time per -o: a lock file next to the outputs, so a second build aimed at the same name waits instead
 * of interleaving (a dead owner's lock is taken over). Also where an unwritable output directory is caught, before
 * anything boots.
 */
async function withOutputLock<T>(plan: BuildPlan, ctx: CommandContext, fn: () => Promise<T>): Promise<T> {
  const prefix = resolve(ctx.cwd, plan.imageName);
  const dir = dirname(prefix);
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, fsc.W_OK);
  } catch (err) {
    throw new UsageError(`cannot write to the output directory ${dir} (${(err as NodeJS.ErrnoException).code})`, {
      hint: "choose an -o in a directory you can write",
      cause: err,
    });
  }
  return await withLock(`${prefix}.vmdib-lock`, fn, {
    signal: ctx.signal,
    onWait: (owner) =>
      ctx.stderr.write(`vmdib: waiting for another build (pid ${owner.split(" ")[0]}) writing ${plan.imageName}\n`),
  });
}

/** Boots the helper VM with the build's shares and image disk, walks the plan, reports progress. */
async function execute(planned: BuildPlan, options: BuildOptions, config: BlockDeviceConfig, ctx: CommandContext) {
  const { report, onEvent: collect } = collectReport();
  const timings = join(cacheDir(ctx.env), "timings");
  const timingKey = timingsKey(
    planned.elements.map((e) => e.name),
    planned.outputs.map((o) => o.type),
  );
  const logfile = options.logfile ? createWriteStream(resolve(ctx.cwd, options.logfile), { flags: "w" }) : undefined;
  const view = buildView(ctx, options, await loadTimings(timings, timingKey), logfile);
  const render = (e: BuildEvent) => {
    collect(e);
    view.onEvent(e);
  };
  const imageCache = options.imageCache ?? join(cacheDir(ctx.env), "image-create");
  await mkdir(imageCache, { recursive: true });
  const plan = await withDebootstrapStage1(planned, options, imageCache, ctx, render, report);
  const trees = join(cacheDir(ctx.env), "trees");
  const treeCache = await treeCacheStep(plan, options, trees, render);
  report.caches.push({
    name: "tree after post-root.d",
    result: `${treeCache.restoreFrom ? "hit" : "miss"} ${treeCache.key}`,
  });
  const workDir = await makeWorkDir(plan);
  const started = Date.now();
  let ok = false;
  try {
    await executePlan(plan, options, config, workDir, {
      cwd: ctx.cwd,
      signal: ctx.signal,
      onEvent: render,
      treeCache,
      qemuImg: async ([verb = "convert", ...rest], signal, onProgress) => {
        // -p: qemu-img prints "(NN.NN/100%)" as it goes; the view turns it into a progress bar.
        const child = execa("qemu-img", [verb, "-p", ...rest], { cancelSignal: signal, stdin: "ignore" });
        child.stdout?.on("data", (chunk: Buffer) => {
          const all = [...chunk.toString().matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
          const last = all[all.length - 1]?.[1];
          if (last !== undefined) onProgress?.(Number(last) / 100);
        });
        await child;
      },
      startMachine: async (req) => {
        const machine = await bootFromCli(ctx, {
          accel: options.accel,
          memoryMiB: options.memoryMb,
          offline: options.offline,
          verbose: !options.json,
          log: (message) => render({ type: "info", message }),
          // --no-cache bypasses every cache, the saved appliance snapshot included.
          snapshot: !options.noCache,
          shares: [
            { hostPath: req.workDir, guestPath: GUEST_PATHS.work, readonly: false },
            { hostPath: imageCache, guestPath: GUEST_PATHS.imageCache, readonly: false },
            { hostPath: trees, guestPath: GUEST_TREES, readonly: false },
            ...req.elementShares.map((s) => ({ hostPath: s.host, guestPath: s.guest, readonly: true })),
          ],
          disks: [{ serial: req.imageDisk.serial, path: req.imageDisk.path, format: "raw" }],
        });
        report.accel = `${machine.accel.accel} (${machine.accel.reason})`;
        const terminal = ctx.stdin.isTTY === true;
        return {
          exec: (argv, io) => machine.exec(argv, io),
          ...(terminal
            ? {
                shell: async (argv: readonly string[]) => {
                  view.pause();
                  try {
                    return await terminalShell(ctx, machine, shellJoin(argv));
                  } finally {
                    view.resume();
                  }
                },
              }
            : {}),
          stop: () => machine.stop(),
        };
      },
    });
    ok = true;
  } finally {
    await rm(workDir, { recursive: true, force: true });
    if (treeCache.saveTo) await rm(join(trees, basename(treeCache.saveTo)), { force: true });
    report.totalSeconds = (Date.now() - started) / 1000;
    view.close();
    if (ok) {
      for (const o of report.outputs) o.sha256 = await outputSha256(o.path);
      const steps = Object.fromEntries(report.steps.map((s) => [s.name, s.seconds]));
      await saveTimings(timings, timingKey, { steps, total: report.totalSeconds }).catch(() => undefined);
    }
    const summary = options.json
      ? `${JSON.stringify({ time: new Date().toISOString(), type: "summary", ...report })}\n`
      : renderReport(report);
    ctx.stdout.write(summary);
    if (logfile) await new Promise((done) => logfile.end(summary, () => done(undefined)));
  }
  return 0;
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
    return { key, restoreFrom: `${GUEST_TREES}/${treeFile(key)}`, commit: async () => {} };
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
    commit: async () => {
      const meta = await commitTree(
        dir,
        key,
        join(dir, partial),
        plan.elements.map((e) => e.name),
      );
      render({ type: "info", message: `tree cache: saved ${key} (${(meta.bytes / 1024 ** 2).toFixed(0)} MiB)` });
    },
  };
}

/**
 * debootstrap's first stage natively on the host (src/rootfs/debootstrap.ts) when the build uses a debootstrap
 * element on Debian: the guest then runs only the second stage. Any failure here only costs that speed-up.
 */
async function withDebootstrapStage1(
  plan: BuildPlan,
  options: BuildOptions,
  imageCache: string,
  ctx: CommandContext,
  render: (e: BuildEvent) => void,
  report: BuildReport,
): Promise<BuildPlan> {
  const started = Date.now();
  try {
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
        else if (e.type === "downloads" && e.count)
          render({ type: "info", message: `downloading ${e.count} packages` });
      },
    });
    if (!stage1) return plan;
    report.caches.push({ name: "debootstrap stage one", result: `${stage1.hit ? "hit" : "miss"} ${stage1.key}` });
    render({
      type: "info",
      message: `debootstrap stage one ${stage1.hit ? "cached" : "built"} on the host (key ${stage1.key}) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    });
    return { ...plan, environment: { ...plan.environment, common: { ...plan.environment.common, ...stage1.env } } };
  } catch (err) {
    if (ctx.signal?.aborted) throw err;
    const message = err instanceof Error ? err.message : String(err);
    render({
      type: "info",
      message: `warning: debootstrap stage one on the host failed (${message}); the guest runs it`,
    });
    return plan;
  }
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
    onEvent: (e: BuildEvent) => view.onEvent(e.type === "output" ? { ...e, line: redactLine(e.line) } : e),
  };
}
