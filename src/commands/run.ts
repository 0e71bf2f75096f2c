// `vmdib run [options] -- CMD...`: boot the appliance, run one command as root with its output streamed live, exit with
// its exit code, shut down. Also owns the option parsing and boot sequence `vmdib shell` shares.
import { resolve } from "node:path";
import { UsageError } from "../errors.js";
import { createDownloadMeter } from "../progress.js";
import type { DownloadProgress } from "../vm/appliance/archive.js";
import { ensureAppliance } from "../vm/appliance/index.js";
import { bootKernel, type DiskRequest, type Machine, type ShareRequest, startAppliance } from "../vm/machine.js";
import { chooseAccel, findQemu } from "../vm/probe.js";
import { formatEvent } from "./appliance.js";
import type { Command, CommandContext } from "./context.js";
import { type FlagSpec, optionsHelp, type VmFlags, vmFlagSpecs, walkFlags } from "./vm-flags.js";

export interface VmOptions extends VmFlags {
  shares: ShareRequest[];
  /** Host files attached as virtio disks (the build's image disk). */
  disks?: DiskRequest[];
  offline: boolean;
  /** Where progress lines go instead of stderr (a build's view). */
  log?: (line: string) => void;
  /** Download progress of the appliance's packages (a build's view draws it); else -v shows it on stderr. */
  onDownload?: (p: DownloadProgress) => void;
  /** false: boot cold even when a saved appliance snapshot could be restored (`--no-cache`). */
  snapshot?: boolean;
  /**
   * Host work to run while QEMU boots (or restores) the appliance, once the appliance is ready — not while it is
   * assembled, so the two never add up in memory. Its failure fails the start.
   */
  alongsideBoot?: () => Promise<void>;
}

function parseShare(value: string, cwd: string): ShareRequest {
  const m = value === undefined ? null : /^(.+?):(\/[^:\s]*)(:ro)?$/.exec(value);
  if (!m?.[1] || !m[2]) {
    throw new UsageError(`--share needs HOST:GUEST[:ro] with an absolute GUEST path, not '${value}'`);
  }
  return { hostPath: resolve(cwd, m[1]), guestPath: m[2], readonly: m[3] !== undefined };
}

/** The options of `vmdib run` and `vmdib shell` (--share paths resolve against `cwd`). */
export function runFlagSpecs(cwd: string): FlagSpec<VmOptions>[] {
  return [
    ...vmFlagSpecs({ memoryMiB: 2048, verbose: "say what happens (appliance, accelerator, boot time) on stderr" }),
    {
      names: ["--share"],
      value: "HOST:GUEST[:ro]",
      help: "share a host directory at GUEST (read-write unless :ro); repeatable",
      apply: (o, v) => {
        o.shares.push(parseShare(v, cwd));
      },
    },
    {
      names: ["--offline"],
      help: "use only the cached appliance packages",
      apply: (o) => {
        o.offline = true;
      },
    },
  ];
}

export const RUN_HELP = `usage: vmdib run [options] -- COMMAND [ARG...]

Boot the helper VM, run COMMAND as root inside it (stdout and stderr streamed), exit with its exit code.

${optionsHelp(runFlagSpecs("."))}`;

/**
 * Split `[options] [--] COMMAND...`: options end at `--` or at the first word that is not an option, so that
 * `vmdib run ls -l` and `vmdib run -- ls -l` both work.
 */
export function parseVmArgs(args: readonly string[], cwd: string): { options: VmOptions; command: string[] } {
  const options: VmOptions = { shares: [], offline: false, verbose: false };
  const command = walkFlags(args, { command: "run", specs: runFlagSpecs(cwd), into: options, word: () => "stop" });
  return { options, command };
}

/** Appliance → QEMU → accelerator → booted machine, reporting progress on stderr when verbose. */
export async function bootFromCli(ctx: CommandContext, options: VmOptions): Promise<Machine> {
  const meter = createDownloadMeter(ctx.stderr, "vmdib: ");
  const say =
    options.log ??
    ((line: string) => {
      if (options.verbose) meter.line(`vmdib: ${line}`);
    });
  const qemu = await findQemu(ctx.env);
  const appliance = await ensureAppliance({
    env: ctx.env,
    offline: options.offline,
    signal: ctx.signal,
    onEvent: (e) => {
      if (e.type === "download-progress") {
        if (options.onDownload) options.onDownload(e);
        else if (options.verbose && !options.log) meter.progress({ ...e, what: `appliance ${e.what}` });
        return;
      }
      const line = formatEvent(e);
      if (line) say(line);
    },
  }).finally(() => meter.close()); // a failed download's bar must not stay in front of the error message
  say(`appliance ${appliance.key} (${appliance.reused ? "cached" : "built"})`);
  const accel = await chooseAccel({ qemu, kernel: bootKernel(appliance), override: options.accel, env: ctx.env });
  say(`accelerator ${accel.accel}: ${accel.reason}${accel.cached ? " (remembered)" : ""}`);
  const alongside = options.alongsideBoot?.();
  alongside?.catch(() => {}); // observed below, after the boot
  const machine = await startAppliance({
    appliance,
    qemu,
    accel,
    shares: options.shares,
    env: ctx.env,
    signal: ctx.signal,
    debug: ctx.env.VMDIB_DEBUG === "1",
    log: say,
    ...(options.memoryMiB ? { memoryMiB: options.memoryMiB } : {}),
    ...(options.cpus ? { cpus: options.cpus } : {}),
    ...(options.disks ? { disks: options.disks } : {}),
    ...(options.snapshot === false ? { snapshot: false } : {}),
  }).catch(async (err: unknown) => {
    await alongside?.catch(() => {});
    throw err;
  });
  try {
    await alongside;
  } catch (err) {
    await machine.stop();
    throw err;
  }
  return machine;
}

export const run: Command = async (ctx) => {
  if (ctx.args[0] === "-h" || ctx.args[0] === "--help") {
    ctx.stdout.write(RUN_HELP);
    return 0;
  }
  const { options, command } = parseVmArgs(ctx.args, ctx.cwd);
  if (command.length === 0) throw new UsageError("no command given", { hint: "vmdib run -- COMMAND [ARG...]" });
  return await usingMachine(await bootFromCli(ctx, options), async (machine) => {
    const t0 = performance.now();
    const code = await machine.exec(command, { stdout: ctx.stdout, stderr: ctx.stderr, signal: ctx.signal });
    if (options.verbose) {
      ctx.stderr.write(`vmdib: command exited ${code} after ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
    }
    return code;
  });
};

/** Runs `fn` with the machine, then shuts it down (`vmdib run`, `vmdib shell`). */
export async function usingMachine<T>(machine: Machine, fn: (machine: Machine) => Promise<T>): Promise<T> {
  let failed = false;
  try {
    return await fn(machine);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // Shutting down cleanly matters less than the error that brought us here: never let it mask that error.
    await machine.stop().catch((err: unknown) => {
      if (!failed) throw err;
    });
  }
}
