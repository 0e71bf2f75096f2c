// `vmdib run [options] -- CMD...`: boot the appliance, run one command as root with its output streamed live, exit with
// its exit code, shut down. Also owns the option parsing and boot sequence `vmdib shell` shares.
import { resolve } from "node:path";
import { UsageError } from "../errors.js";
import { ensureAppliance } from "../vm/appliance/index.js";
import { bootKernel, type DiskRequest, type Machine, type ShareRequest, startAppliance } from "../vm/machine.js";
import { chooseAccel, findQemu, parseAccel } from "../vm/probe.js";
import type { Accel } from "../vm/qemu.js";
import { formatEvent } from "./appliance.js";
import type { Command, CommandContext } from "./context.js";

export const RUN_HELP = `usage: vmdib run [options] -- COMMAND [ARG...]

Boot the helper VM, run COMMAND as root inside it (stdout and stderr streamed), exit with its exit code.

options:
  --accel kvm|hvf|tcg   accelerator (default: probed once per host, then remembered)
  --memory MIB          guest memory (default 2048)
  --cpus N              virtual CPUs (default: all host cores)
  --share HOST:GUEST[:ro]
                        share a host directory at GUEST (read-write unless :ro); repeatable
  --offline             use only the cached appliance packages
  -v, --verbose         say what happens (appliance, accelerator, boot time) on stderr
`;

export interface VmOptions {
  accel?: Accel;
  memoryMiB?: number;
  cpus?: number;
  shares: ShareRequest[];
  /** Host files attached as virtio disks (the build's image disk). */
  disks?: DiskRequest[];
  offline: boolean;
  verbose: boolean;
}

/** A flag's value as a positive whole number (memory, CPUs, timeouts), or a UsageError naming the flag. */
export function positiveInt(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n <= 0) {
    throw new UsageError(`${flag} needs a positive whole number, not '${value ?? ""}'`);
  }
  return n;
}

function parseShare(value: string | undefined, cwd: string): ShareRequest {
  const m = value === undefined ? null : /^(.+?):(\/[^:\s]*)(:ro)?$/.exec(value);
  if (!m?.[1] || !m[2]) {
    throw new UsageError(`--share needs HOST:GUEST[:ro] with an absolute GUEST path, not '${value ?? ""}'`);
  }
  return { hostPath: resolve(cwd, m[1]), guestPath: m[2], readonly: m[3] !== undefined };
}

/**
 * Split `[options] [--] COMMAND...`: options end at `--` or at the first word that is not an option, so that
 * `vmdib run ls -l` and `vmdib run -- ls -l` both work.
 */
export function parseVmArgs(args: readonly string[], cwd: string): { options: VmOptions; command: string[] } {
  const options: VmOptions = { shares: [], offline: false, verbose: false };
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-")) break;
    const [flag, inline] =
      a.startsWith("--") && a.includes("=")
        ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)]
        : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      i++;
      if (i >= args.length) throw new UsageError(`${flag} needs a value`);
      return args[i];
    };
    switch (flag) {
      case "--accel":
        options.accel = parseAccel(value() ?? "");
        break;
      case "--memory":
        options.memoryMiB = positiveInt(flag, value());
        break;
      case "--cpus":
        options.cpus = positiveInt(flag, value());
        break;
      case "--share":
        options.shares.push(parseShare(value(), cwd));
        break;
      case "--offline":
        options.offline = true;
        break;
      case "-v":
      case "--verbose":
        options.verbose = true;
        break;
      default:
        throw new UsageError(`unknown option '${a}'`, { hint: "run `vmdib run --help`" });
    }
  }
  return { options, command: args.slice(i) };
}

/** Appliance → QEMU → accelerator → booted machine, reporting progress on stderr when verbose. */
export async function bootFromCli(ctx: CommandContext, options: VmOptions): Promise<Machine> {
  const say = (line: string) => {
    if (options.verbose) ctx.stderr.write(`vmdib: ${line}\n`);
  };
  const qemu = await findQemu(ctx.env);
  const appliance = await ensureAppliance({
    env: ctx.env,
    offline: options.offline,
    signal: ctx.signal,
    onEvent: (e) => {
      const line = formatEvent(e);
      if (line) say(line);
    },
  });
  say(`appliance ${appliance.key} (${appliance.reused ? "cached" : "built"})`);
  const accel = await chooseAccel({ qemu, kernel: bootKernel(appliance), override: options.accel, env: ctx.env });
  say(`accelerator ${accel.accel}: ${accel.reason}${accel.cached ? " (remembered)" : ""}`);
  return await startAppliance({
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
  });
}

export const run: Command = async (ctx) => {
  if (ctx.args[0] === "-h" || ctx.args[0] === "--help") {
    ctx.stdout.write(RUN_HELP);
    return 0;
  }
  const { options, command } = parseVmArgs(ctx.args, ctx.cwd);
  if (command.length === 0) throw new UsageError("no command given", { hint: "vmdib run -- COMMAND [ARG...]" });
  const machine = await bootFromCli(ctx, options);
  let failed = false;
  try {
    const t0 = performance.now();
    const code = await machine.exec(command, { stdout: ctx.stdout, stderr: ctx.stderr, signal: ctx.signal });
    if (options.verbose) {
      ctx.stderr.write(`vmdib: command exited ${code} after ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
    }
    return code;
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // Shutting down cleanly matters less than the error that brought us here: never let it mask that error.
    await machine.stop().catch((err: unknown) => {
      if (!failed) throw err;
    });
  }
};
