// The command-line flags every command that boots a VM shares (--accel, --memory, --cpus, -v), and the one option
// walker `vmdib run`, `vmdib shell`, `vmdib boot` and `vmdib test` parse their arguments with.
import { UsageError } from "../errors.js";
import { parseAccel } from "../vm/probe.js";
import type { Accel } from "../vm/qemu.js";

/** The shared VM flags, as parsed (absent: the command's default). */
export interface VmFlags {
  accel?: Accel;
  memoryMiB?: number;
  cpus?: number;
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

/** Applies `flag` to `into` when it is one of the shared VM flags; false otherwise. */
export function applyVmFlag(into: VmFlags, flag: string, value: () => string): boolean {
  switch (flag) {
    case "--accel":
      into.accel = parseAccel(value());
      return true;
    case "--memory":
      into.memoryMiB = positiveInt(flag, value());
      return true;
    case "--cpus":
      into.cpus = positiveInt(flag, value());
      return true;
    case "-v":
    case "--verbose":
      into.verbose = true;
      return true;
    default:
      return false;
  }
}

export interface FlagWalk {
  /** The command's name, for the hint of an unknown option. */
  readonly command: string;
  /** The shared VM flags land here. */
  readonly vm: VmFlags;
  /** The command's own flags; returns false for a flag it does not know. */
  readonly flag?: (flag: string, value: () => string) => boolean;
  /**
   * A word that is not an option: "stop" ends the options there (the word and the rest are returned, as `vmdib run
   * CMD...` wants), "take" consumes it (a positional argument such as IMAGE) and goes on.
   */
  readonly word: (word: string) => "stop" | "take";
}

/**
 * Walks `args`: shared VM flags first, then the command's own. `--flag=value` and `--flag value` both work; `--`
 * ends the options. Returns the words after the options ended (empty when they never did).
 */
export function walkFlags(args: readonly string[], walk: FlagWalk): string[] {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "--") return args.slice(i + 1);
    if (!a.startsWith("-") || a === "-") {
      if (walk.word(a) === "stop") return args.slice(i);
      continue;
    }
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const [flag, inline] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      i++;
      const v = args[i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    if (!applyVmFlag(walk.vm, flag, value) && !walk.flag?.(flag, value)) {
      throw new UsageError(`unknown option '${a}'`, { hint: `run \`vmdib ${walk.command} --help\`` });
    }
  }
  return [];
}
