// `vmdib elements [-n] [-a ARCH] [--env] ELEMENT...`: the element set a build with these arguments would use,
// printed like DIB's element-info (names separated by spaces, or --env's export lines).
import { loadElementSet } from "../elements/discover.js";
import { renderElementEnv } from "../elements/resolve.js";
import { UsageError } from "../errors.js";
import type { Command } from "./context.js";

const HELP = `usage: vmdib elements [-n] [-a ARCH] [--env] ELEMENT...

Print the elements a build with these arguments would use: the requested ones, \`base\` (unless -n), the default
block device for \`vm\` (as disk-image-create adds them) and everything they depend on, sorted by name.

options:
  -n         do not add the \`base\` element
  -a ARCH    target architecture (decides the default block device of \`vm\`; default: $ARCH, else amd64)
  -e, --env  print DIB's IMAGE_ELEMENT / IMAGE_ELEMENT_YAML export lines instead
  -h, --help show this help

environment:
  ELEMENTS_PATH  colon-separated element directories, searched in order before vmdib's own
`;

interface ElementsArgs {
  readonly help: boolean;
  readonly skipBase: boolean;
  readonly env: boolean;
  readonly arch: string | undefined;
  readonly elements: readonly string[];
}

/** argv → options (pure). Flags may come before or after element names; `--` ends the flags. */
export function parseElementsArgs(args: readonly string[]): ElementsArgs {
  let help = false;
  let skipBase = false;
  let env = false;
  let arch: string | undefined;
  const elements: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--") {
      elements.push(...args.slice(i + 1));
      break;
    }
    if (arg === "-h" || arg === "--help") help = true;
    else if (arg === "-n") skipBase = true;
    else if (arg === "-e" || arg === "--env") env = true;
    else if (arg.startsWith("-a")) {
      arch = arg === "-a" ? args[++i] : arg.slice(2);
      if (!arch)
        throw new UsageError("option -a needs an architecture", { hint: "e.g. `vmdib elements -a arm64 vm ...`" });
    } else if (arg.startsWith("-")) {
      throw new UsageError(`unknown option '${arg}' for \`vmdib elements\``, {
        hint: "run `vmdib elements --help` for its options",
      });
    } else elements.push(arg);
  }
  return { help, skipBase, env, arch, elements };
}

export const run: Command = async (ctx) => {
  const args = parseElementsArgs(ctx.args);
  if (args.help) {
    ctx.stdout.write(HELP);
    return 0;
  }
  if (args.elements.length === 0) {
    throw new UsageError("no elements given", {
      hint: "name at least an operating-system element, e.g. `vmdib elements vm debian-minimal`",
    });
  }
  const set = await loadElementSet({
    requested: args.elements,
    elementsPath: (ctx.env.ELEMENTS_PATH ?? "").split(":"),
    skipBase: args.skipBase,
    arch: args.arch ?? (ctx.env.ARCH || "amd64"),
    cwd: ctx.cwd,
  });
  for (const warning of set.warnings) ctx.stderr.write(`vmdib: warning: ${warning}\n`);
  ctx.stdout.write(args.env ? renderElementEnv(set.elements) : `${set.elements.map((e) => e.name).join(" ")}\n`);
  return 0;
};
