// `vmdib boot IMAGE`: start a built disk image with its serial console on the terminal (like `mkosi qemu`); Ctrl-A X
// quits as in QEMU. Also owns the option parsing `vmdib test` shares.
import { constants as osc } from "node:os";
import { resolve } from "node:path";
import { UsageError } from "../errors.js";
import { bootImage } from "../vm/image-boot.js";
import type { Command } from "./context.js";
import { type VmFlags, walkFlags } from "./vm-flags.js";

export const BOOT_HELP = `usage: vmdib boot [options] IMAGE

Boot IMAGE (qcow2, raw, vhd, vmdk, vdi — what \`vmdib build\` wrote) in QEMU with its serial console on this
terminal. Ctrl-A X quits (Ctrl-A C switches to the QEMU monitor, Ctrl-A H lists the keys), as in QEMU.
SSH in the guest is forwarded from a free port on 127.0.0.1, printed at the start.

options:
  --uefi                boot with UEFI firmware (OVMF) instead of BIOS
  --memory MIB          guest memory (default 1024)
  --cpus N              virtual CPUs (default: all host cores)
  --accel kvm|hvf|tcg   accelerator (default: probed once per host, then remembered)
  --snapshot            throw away the guest's writes: the image file stays unchanged
  -v, --verbose         say what happens (accelerator, QEMU command line) on stderr
`;

/** Options `vmdib boot` and `vmdib test` share. */
export interface ImageCommandOptions extends VmFlags {
  image?: string;
  uefi: boolean;
}

/**
 * Parse `[options] IMAGE`: the shared VM flags, --uefi, and `extra(flag, value)` for a command's own (returns false
 * for an unknown flag). Options may come before or after IMAGE; `--flag=value` and `--flag value` both work.
 */
export function parseImageArgs(
  args: readonly string[],
  cwd: string,
  command: string,
  extra: (flag: string, value: () => string) => boolean = () => false,
): ImageCommandOptions {
  const options: ImageCommandOptions = { uefi: false, verbose: false };
  const take = (word: string) => {
    if (options.image !== undefined) {
      throw new UsageError(`unexpected argument '${word}'`, { hint: `vmdib ${command} takes one IMAGE` });
    }
    options.image = resolve(cwd, word);
    return "take" as const;
  };
  const rest = walkFlags(args, {
    command,
    vm: options,
    word: take,
    flag: (flag, value) => {
      if (flag !== "--uefi") return extra(flag, value);
      options.uefi = true;
      return true;
    },
  });
  // After `--` every word is positional, even one that starts with '-'.
  for (const word of rest) take(word);
  if (options.image === undefined) {
    throw new UsageError("no IMAGE given", { hint: `vmdib ${command} [options] IMAGE, e.g. out/debian.qcow2` });
  }
  return options;
}

export function parseBootArgs(args: readonly string[], cwd: string): ImageCommandOptions & { snapshot: boolean } {
  let snapshot = false;
  const options = parseImageArgs(args, cwd, "boot", (flag) => {
    if (flag !== "--snapshot") return false;
    snapshot = true;
    return true;
  });
  return { ...options, snapshot };
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
