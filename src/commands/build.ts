// `vmdib build`: options → elements → block-device layout → plan; `--dry-run` prints the plan, else it is executed.
import { loadBlockDeviceConfig } from "../blockdev/config.js";
import { planBlockDevice } from "../blockdev/graph.js";
import { GiB } from "../blockdev/size.js";
import { type BuildOptions, buildHelp, parseBuildArgs } from "../config.js";
import { loadElementSet } from "../elements/discover.js";
import { VmdibError } from "../errors.js";
import { type BuildPlan, buildPlan, GUEST_PATHS, renderPlan } from "../plan.js";
import { VERSION } from "../version.js";
import type { Command, CommandContext } from "./context.js";

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
  const layout = planBlockDevice(config, {
    imageSizeBytes: options.imageSize ?? GiB,
    imageDir: GUEST_PATHS.imageDir,
    mountBase: GUEST_PATHS.targetRoot,
    fsType: options.fsType,
    rootLabel: options.rootLabel,
    mkfsOptions: options.mkfsOptions,
    journalSizeMiB: options.journalSizeMb,
    maxOnlineResize: options.maxOnlineResize,
  });
  const blockDevice = {
    size:
      options.imageSize === undefined
        ? "computed after post-root.d: du of the tree / 0.6 (or + --image-extra-size), + ext4 journal, + EFI partition"
        : `${options.imageSize} bytes (--image-size)`,
    layout,
  };
  const plan = buildPlan({
    options,
    elements: set.elements,
    hooks: set.hooks.phases,
    environmentFiles: set.hooks.environment,
    blockDevice,
    passEnv: passedEnv(ctx.env, options),
    version: VERSION,
  });
  return { plan, set, config, warnings: [...set.warnings, ...layout.warnings] };
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
  const { plan, warnings } = await planBuild(options, ctx);
  for (const w of warnings) ctx.stderr.write(`vmdib: warning: ${w}\n`);
  if (options.dryRun) {
    ctx.stdout.write(options.json ? `${JSON.stringify(plan, null, 2)}\n` : renderPlan(plan));
    return 0;
  }
  return execute(plan);
};

async function execute(_plan: BuildPlan): Promise<number> {
  throw new VmdibError("building images is not available yet in this version of vmdib", {
    hint: "use --dry-run to see the plan; the executor lands with the helper VM",
  });
}
