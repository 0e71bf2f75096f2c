// `vmdib boot IMAGE`: start a built disk image with its serial console on the terminal (like `mkosi qemu`); Ctrl-A X
// quits as in QEMU. Also owns the option parsing `vmdib test` shares.
import { constants as osc } from "node:os";
import { resolve } from "node:path";
import { UsageError } from "../errors.js";
import { bootImage } from "../vm/image-boot.js";
import type { Command } from "./context.js";
import { type FlagSpec, optionsHelp, type VmFlags, vmFlagSpecs, walkFlags } from "./vm-flags.js";

/** Options `vmdib boot` and `vmdib test` share. */
export interface ImageCommandOptions extends VmFlags {
  image?: string;
  uefi: boolean;
}

/** The options `vmdib boot` and `vmdib test` share: --uefi and the VM flags (-v shows what `verbose` says). */
export function imageFlagSpecs(verbose: string): FlagSpec<ImageCommandOptions>[] {
  const [accel, memory, cpus, verboseFlag] = vmFlagSpecs({ memoryMiB: 1024, verbose }) as [
    FlagSpec<VmFlags>,
    FlagSpec<VmFlags>,
    FlagSpec<VmFlags>,
    FlagSpec<VmFlags>,
  ];
  const uefi: FlagSpec<ImageCommandOptions> = {
    names: ["--uefi"],
    help: "boot with UEFI firmware (OVMF) instead of BIOS",
    apply: (o) => {
      o.uefi = true;
    },
  };
  return [uefi, memory, cpus, accel, verboseFlag];
}

/**
 * Parse `[options] IMAGE` against `specs` (a command's table, imageFlagSpecs among it). Options may come before or
 * after IMAGE; `--flag=value` and `--flag value` both work.
 */
export function parseImageArgs<O extends ImageCommandOptions>(
  args: readonly string[],
  cwd: string,
  command: string,
  specs: readonly FlagSpec<O>[],
  into: O,
): O {
  const take = (word: string) => {
    if (into.image !== undefined) {
      throw new UsageError(`unexpected argument '${word}'`, { hint: `vmdib ${command} takes one IMAGE` });
    }
    into.image = resolve(cwd, word);
    return "take" as const;
  };
  const rest = walkFlags(args, { command, specs, into, word: take });
  // After `--` every word is positional, even one that starts with '-'.
  for (const word of rest) take(word);
  if (into.image === undefined) {
    throw new UsageError("no IMAGE given", { hint: `vmdib ${command} [options] IMAGE, e.g. out/debian.qcow2` });
  }
  return into;
}

type BootOptions = ImageCommandOptions & { snapshot: boolean };

export const BOOT_FLAGS: FlagSpec<BootOptions>[] = [
  ...imageFlagSpecs("say what happens (accelerator, QEMU command line) on stderr"),
  {
    names: ["--snapshot"],
    help: "throw away the guest's writes: the image file stays unchanged",
    apply: (o) => {
      o.snapshot = true;
    },
  },
];

export const BOOT_HELP = `usage: vmdib boot [options] IMAGE

Boot IMAGE (qcow2, raw, vhd, vmdk, vdi — what \`vmdib build\` wrote) in QEMU with its serial console on this
terminal. Ctrl-A X quits (Ctrl-A C switches to the QEMU monitor, Ctrl-A H lists the keys), as in QEMU.
SSH in the guest is forwarded from a free port on 127.0.0.1, printed at the start.

${optionsHelp(BOOT_FLAGS)}`;

export function parseBootArgs(args: readonly string[], cwd: string): BootOptions {
  return parseImageArgs(args, cwd, "boot", BOOT_FLAGS, { uefi: false, verbose: false, snapshot: false });
}

export const run: Command = async (ctx) => {
  if (ctx.args.includes("-h") || ctx.args.includes("--help")) {
    ctx.stdout.write(BOOT_HELP);
    return 0;
  }
  const options = parseBootArgs(ctx.args, ctx.cwd);
  const say = (line: string) => {
    if (options.verbose) ctx.stderr.write(`vmdib: ${line}\r\n`);
  };
  const tty = ctx.stdin.isTTY === true && typeof ctx.stdin.setRawMode === "function";
  // QEMU switches the terminal to raw mode and restores it when it exits normally. Entering raw mode here first
  // makes libuv save the terminal's original settings, so leaving it below restores them even when QEMU was
  // killed before it could. Nothing here reads stdin: every key goes to QEMU.
  if (tty) ctx.stdin.setRawMode?.(true);
  try {
    const exit = await bootImage({
      image: options.image as string,
      uefi: options.uefi,
      snapshot: options.snapshot,
      env: ctx.env,
      signal: ctx.signal,
      log: say,
      ...(options.memoryMiB ? { memoryMiB: options.memoryMiB } : {}),
      ...(options.cpus ? { cpus: options.cpus } : {}),
      ...(options.accel ? { accel: options.accel } : {}),
      onStart: (b) => {
        ctx.stderr.write(
          `vmdib: booting ${options.image} (${b.format}, ${options.uefi ? "UEFI" : "BIOS"}, ${b.accel.accel}${
            b.snapshot ? ", snapshot: changes are thrown away" : ""
          }); guest SSH on 127.0.0.1:${b.sshPort}; Ctrl-A X quits\r\n`,
        );
      },
    });
    if (exit.signal) return 128 + ((osc.signals as Record<string, number>)[exit.signal] ?? 1);
    return exit.code ?? 1;
  } finally {
    if (tty) ctx.stdin.setRawMode?.(false);
    ctx.stdin.pause();
  }
};
