// `vmdib shell [options]`: boot the appliance and give the user an interactive root shell on a real terminal
// (raw mode, window size and resizes forwarded, Ctrl-C goes to the guest).

import { UsageError } from "../errors.js";
import type { Machine } from "../vm/machine.js";
import type { Command, CommandContext } from "./context.js";
import { bootFromCli, parseVmArgs, runFlagSpecs, usingMachine } from "./run.js";
import { optionsHelp } from "./vm-flags.js";

const HELP = `usage: vmdib shell [options]

Boot the helper VM and open an interactive root shell in it; the VM shuts down when the shell exits.

${optionsHelp(runFlagSpecs("."))}`;

export const run: Command = async (ctx) => {
  if (ctx.args[0] === "-h" || ctx.args[0] === "--help") {
    ctx.stdout.write(HELP);
    return 0;
  }
  const { options, command } = parseVmArgs(ctx.args, ctx.cwd);
  if (command.length > 0) {
    throw new UsageError(`unexpected argument '${command[0]}'`, {
      hint: "to run one command use `vmdib run -- COMMAND`",
    });
  }
  return await usingMachine(await bootFromCli(ctx, options), (machine) => terminalShell(ctx, machine));
};

/** A shell (or `command`) in the guest on this terminal: raw mode, window size and resizes; the exit code back. */
export async function terminalShell(
  ctx: Pick<CommandContext, "stdin" | "stdout" | "env">,
  machine: Pick<Machine, "shell">,
  command?: string,
): Promise<number> {
  const tty = ctx.stdin.isTTY === true && typeof ctx.stdin.setRawMode === "function";
  let onWinch: (() => void) | undefined;
  try {
    // Raw mode: every key (Ctrl-C, Ctrl-D, arrows) travels to the guest's terminal, which does the line editing.
    if (tty) ctx.stdin.setRawMode?.(true);
    return await machine.shell({
      stdin: ctx.stdin,
      stdout: ctx.stdout,
      term: ctx.env.TERM || "xterm",
      cols: ctx.stdout.columns ?? 80,
      rows: ctx.stdout.rows ?? 24,
      ...(command === undefined ? {} : { command }),
      onResize: (resize) => {
        // A terminal's stdout emits 'resize' on SIGWINCH, after Node has refreshed columns and rows.
        onWinch = () => resize(ctx.stdout.columns ?? 80, ctx.stdout.rows ?? 24);
        ctx.stdout.on("resize", onWinch);
      },
    });
  } finally {
    if (onWinch) ctx.stdout.off("resize", onWinch);
    if (tty) ctx.stdin.setRawMode?.(false);
    // Stop reading the terminal, or it keeps this process alive after the shell has gone.
    ctx.stdin.pause();
  }
}
