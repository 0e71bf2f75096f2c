// Option tables for the commands besides build (whose table is src/config.ts): `vmdib run`, `shell`, `boot`, `test`,
// `doctor`. Each flag is declared once with its value name, help text and effect, so the parser (walkFlags) and the
// help (optionsHelp) cannot disagree; and the flags every command that boots a VM shares (--accel, --memory, --cpus, -v).
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

/** One option of a command: its spellings, its value (absent: a switch), its help, what it does to the options. */
export interface FlagSpec<O> {
  /** "--memory", or ["-v", "--verbose"]. */
  readonly names: readonly string[];
  /** The value's name in the help ("MIB"); absent for a switch. */
  readonly value?: string;
  /** One line of help; a "\n" starts a continuation line. */
  readonly help: string;
  readonly apply: (into: O, value: string, flag: string) => void;
}

/** A flag's value as a positive whole number (memory, CPUs, timeouts), or a UsageError naming the flag. */
export function positiveInt(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n <= 0) {
    throw new UsageError(`${flag} needs a positive whole number, not '${value ?? ""}'`);
  }
  return n;
}

/** What differs between the commands in the shared flags' help. */
export interface VmFlagDefaults {
  readonly memoryMiB: number;
  /** What -v shows for this command. */
  readonly verbose: string;
}

/** The shared VM flags (--accel, --memory, --cpus, -v), with this command's defaults in their help. */
export function vmFlagSpecs(d: VmFlagDefaults): FlagSpec<VmFlags>[] {
  return [
    {
      names: ["--accel"],
      value: "kvm|hvf|tcg",
      help: "accelerator (default: probed once per host, then remembered)",
      apply: (o, v) => {
        o.accel = parseAccel(v);
      },
    },
    {
      names: ["--memory"],
      value: "MIB",
      help: `guest memory (default ${d.memoryMiB})`,
      apply: (o, v, f) => {
        o.memoryMiB = positiveInt(f, v);
      },
    },
    {
      names: ["--cpus"],
      value: "N",
      help: "virtual CPUs (default: all host cores)",
      apply: (o, v, f) => {
        o.cpus = positiveInt(f, v);
      },
    },
    {
      names: ["-v", "--verbose"],
      help: d.verbose,
      apply: (o) => {
        o.verbose = true;
      },
    },
  ];
}

/** Every spelling of every flag in a table (for shell completion). */
export function flagNames(specs: readonly FlagSpec<never>[]): string[] {
  return specs.flatMap((s) => s.names);
}

/** The `options:` block of a command's help, rendered from its table (pure). */
export function optionsHelp(specs: readonly FlagSpec<never>[]): string {
  const WIDTH = 24;
  const lines = ["options:"];
  for (const s of specs) {
    const left = `  ${s.names.join(", ")}${s.value ? ` ${s.value}` : ""}`;
    const [first = "", ...more] = s.help.split("\n");
    // A flag too long for the column gets its help on the next line, as the hand-written help did.
    if (left.length <= WIDTH - 2) lines.push(`${left.padEnd(WIDTH)}${first}`);
    else lines.push(left, `${"".padEnd(WIDTH)}${first}`);
    for (const m of more) lines.push(`${"".padEnd(WIDTH)}${m}`);
  }
  return `${lines.join("\n")}\n`;
}

export interface FlagWalk<O> {
  /** The command's name, for the hint of an unknown option. */
  readonly command: string;
  /** The command's options table; every flag it accepts is here. */
  readonly specs: readonly FlagSpec<O>[];
  /** Where the flags land. */
  readonly into: O;
  /**
   * A word that is not an option: "stop" ends the options there (the word and the rest are returned, as `vmdib run
   * CMD...` wants), "take" consumes it (a positional argument such as IMAGE) and goes on.
   */
  readonly word: (word: string) => "stop" | "take";
}

/**
 * Walks `args` against the command's table. `--flag=value` and `--flag value` both work; `--` ends the options.
 * Returns the words after the options ended (empty when they never did).
 */
export function walkFlags<O>(args: readonly string[], walk: FlagWalk<O>): string[] {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "--") return args.slice(i + 1);
    if (!a.startsWith("-") || a === "-") {
      if (walk.word(a) === "stop") return args.slice(i);
      continue;
    }
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const [flag, inline] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const spec = walk.specs.find((s) => s.names.includes(flag));
    if (!spec) throw new UsageError(`unknown option '${a}'`, { hint: `run \`vmdib ${walk.command} --help\`` });
    if (spec.value === undefined) {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
      spec.apply(walk.into, "", flag);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      i++;
      value = args[i];
      if (value === undefined) throw new UsageError(`${flag} needs a value`);
    }
    spec.apply(walk.into, value, flag);
  }
  return [];
}
