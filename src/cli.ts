// Command-line entry: argv → subcommand; renders errors. Subcommands live in src/commands/ and print via their context.

import type { Command, CommandContext } from "./commands/context.js";
import { VmdibError } from "./errors.js";
import { redactSecrets } from "./redact.js";
import { VERSION } from "./version.js";
import { limitYoungGeneration } from "./vm/appliance/memory.js";

/** Subcommands, loaded lazily so `vmdib --version` stays fast. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  build: {
    summary: "build a disk image from elements (like disk-image-create)",
    load: async () => (await import("./commands/build.js")).run,
  },
  elements: {
    summary: "print the element set a build would use (like DIB's element-info)",
    load: async () => (await import("./commands/elements.js")).run,
  },
  appliance: {
    summary: "build or inspect the cached helper-VM appliance (kernel + initramfs)",
    load: async () => (await import("./commands/appliance.js")).run,
  },
  run: {
    summary: "boot the helper VM and run one command in it as root",
    load: async () => (await import("./commands/run.js")).run,
  },
  shell: {
    summary: "boot the helper VM and open an interactive root shell in it",
    load: async () => (await import("./commands/shell.js")).run,
  },
  boot: {
    summary: "boot a built disk image with its console on this terminal (Ctrl-A X quits)",
    load: async () => (await import("./commands/boot.js")).run,
  },
  test: {
    summary: "boot a built disk image headless and check it (login prompt, console, root by label, SSH)",
    load: async () => (await import("./commands/test-image.js")).run,
  },
  doctor: {
    summary: "check that a build can run here (QEMU, accelerator, space, mirror, appliance) and say how to fix it",
    load: async () => (await import("./commands/doctor.js")).run,
  },
  completion: {
    summary: "print a bash or zsh completion script",
    load: async () => (await import("./commands/completion.js")).completionCommand(Object.keys(COMMANDS)),
  },
  help: { summary: "show help for a command", load: async () => helpCommand },
};

/** `vmdib help [COMMAND]`: a command's help is what `vmdib COMMAND --help` prints. */
const helpCommand: Command = async (ctx) => {
  const [name] = ctx.args;
  if (name === undefined) {
    ctx.stdout.write(`${usage()}\n`);
    return 0;
  }
  if (name === "help") {
    ctx.stdout.write(
      "usage: vmdib help [COMMAND]\n\nShow the options of COMMAND (what `vmdib COMMAND --help` prints).\n",
    );
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    throw new VmdibError(`no help for unknown command '${name}'`, { exitCode: 2, hint: "run `vmdib --help`" });
  }
  return (await command.load())({ ...ctx, args: ["--help"] });
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length), 4);
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    "usage: vmdib <command> [options]",
    "",
    "commands:",
    ...lines,
    "",
    "Run `vmdib help <command>` for a command's options.",
  ].join("\n");
}

export async function main(argv: string[], ctx: Omit<CommandContext, "args">): Promise<number> {
  const debug = argv.includes("--debug");
  const [name, ...args] = argv.filter((a) => a !== "--debug");
  try {
    if (name === undefined || name === "-h" || name === "--help") {
      ctx.stdout.write(`${usage()}\n`);
      return name === undefined ? 2 : 0;
    }
    if (name === "--version") {
      ctx.stdout.write(`vmdib ${VERSION}\n`);
      return 0;
    }
    const command = COMMANDS[name];
    if (!command) {
      throw new VmdibError(`unknown command '${name}'`, {
        exitCode: 2,
        hint: "run `vmdib --help` for the list of commands",
      });
    }
    return await (await command.load())({ ...ctx, args });
  } catch (err) {
    // The reader of our output went away (`vmdib ... | head`): nothing to say, and nobody to say it to.
    if (!(err instanceof OutputClosed)) ctx.stderr.write(redactSecrets(renderError(err, debug)));
    return err instanceof VmdibError ? err.exitCode : 1;
  }
}

/** 128 + SIGPIPE: what a program that dies of a closed pipe exits with (`yes | head` under `set -o pipefail`). */
export const EXIT_PIPE_CLOSED = 141;

/** Why a command was aborted when its stdout pipe closed; main() ends quietly on it. */
export class OutputClosed extends VmdibError {
  constructor() {
    super("the reader of vmdib's output went away", { exitCode: EXIT_PIPE_CLOSED });
    this.name = "OutputClosed";
  }
}

/** One clear message: what failed, context lines, what to do. The stack only with --debug. */
export function renderError(err: unknown, debug: boolean): string {
  const lines: string[] = [];
  if (err instanceof VmdibError) {
    lines.push(`vmdib: error: ${err.message}`);
    for (const line of err.context) lines.push(`  | ${line}`);
    if (err.hint) lines.push(`  hint: ${err.hint}`);
  } else {
    lines.push(`vmdib: internal error: ${err instanceof Error ? err.message : String(err)}`);
    if (!debug) lines.push("  hint: rerun with --debug for the stack trace, and report it");
  }
  if (debug && err instanceof Error) {
    lines.push(err.stack ?? "");
    if (err.cause)
      lines.push(
        `caused by: ${err.cause instanceof Error ? (err.cause.stack ?? err.cause.message) : String(err.cause)}`,
      );
  }
  return `${lines.join("\n")}\n`;
}

/** Process entry used by bin/vmdib: real streams, real signals. */
export async function run(): Promise<void> {
  limitYoungGeneration(); // before the commands' modules load and the heap's young generation grows: see memory.ts
  const controller = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) process.exit(sig === "SIGINT" ? 130 : 143); // second signal: give up on cleanup
    signalled = sig;
    controller.abort(new VmdibError(`interrupted by ${sig}`, { exitCode: sig === "SIGINT" ? 130 : 143 }));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // Node ignores SIGPIPE, so a closed stdout (`vmdib build ... | head`) arrives as an EPIPE 'error' event, which
  // unhandled would crash with a stack trace. Instead the command is aborted like an interrupt (its cleanup stack
  // unwinds, QEMU stops) and vmdib exits quietly with 141.
  let pipeClosed = false;
  const onStreamError = (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
    if (pipeClosed) return;
    pipeClosed = true;
    process.exitCode = EXIT_PIPE_CLOSED;
    controller.abort(new OutputClosed());
  };
  process.stdout.on("error", onStreamError);
  process.stderr.on("error", onStreamError);
  const code = await main(process.argv.slice(2), {
    env: process.env,
    cwd: process.cwd(),
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    signal: controller.signal,
  });
  process.exitCode = signalled ? (signalled === "SIGINT" ? 130 : 143) : pipeClosed ? EXIT_PIPE_CLOSED : code;
}
