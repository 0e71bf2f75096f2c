// Tests src/commands/vm-flags.ts: the option tables behind run, shell, boot and test — the walker, the shared VM
// flags, and help rendered from the same tables the parser reads (every flag in a command's help parses, and back).
import t from "tap";
import { parseBootArgs } from "../../src/commands/boot.js";
import { parseVmArgs } from "../../src/commands/run.js";
import { parseTestArgs } from "../../src/commands/test-image.js";
import {
  type FlagSpec,
  optionsHelp,
  positiveInt,
  type VmFlags,
  vmFlagSpecs,
  walkFlags,
} from "../../src/commands/vm-flags.js";
import { UsageError } from "../../src/errors.js";
import { vmdib } from "../helpers/cli.js";

const VM = vmFlagSpecs({ memoryMiB: 1024, verbose: "talk" });

t.test("the shared flags, in both spellings", async (t) => {
  const vm: VmFlags = { verbose: false };
  const rest = walkFlags(["--accel=tcg", "--memory", "512", "--cpus=1", "-v", "--", "-x"], {
    command: "x",
    specs: VM,
    into: vm,
    word: () => "stop",
  });
  t.same(vm, { accel: "tcg", memoryMiB: 512, cpus: 1, verbose: true });
  t.same(rest, ["-x"], "-- ends the options");
});

t.test("words stop the walk or are taken; a command's own flags sit in the same table", async (t) => {
  const taken: string[] = [];
  type Own = VmFlags & { own: string[] };
  const specs: FlagSpec<Own>[] = [
    ...VM,
    { names: ["--own"], value: "V", help: "own", apply: (o, v, f) => o.own.push(`${f}=${v}`) },
  ];
  const into: Own = { verbose: false, own: [] };
  const rest = walkFlags(["a", "--own", "v1", "b", "--verbose"], {
    command: "x",
    specs,
    into,
    word: (w) => {
      taken.push(w);
      return "take";
    },
  });
  t.same(rest, []);
  t.same(taken, ["a", "b"]);
  t.same(into.own, ["--own=v1"]);
  t.equal(into.verbose, true);
  t.same(walkFlags(["-v", "ls", "-l"], { command: "x", specs: VM, into, word: () => "stop" }), ["ls", "-l"]);
});

t.test("bad input is a UsageError naming the flag or the command's help", async (t) => {
  const vm: VmFlags = { verbose: false };
  const walk = (args: string[]) => walkFlags(args, { command: "boot", specs: VM, into: vm, word: () => "take" });
  t.throws(() => walk(["--bogus"]), /unknown option '--bogus'.*/);
  t.throws(() => walk(["--bogus"]), UsageError);
  t.throws(() => walk(["--memory"]), /--memory needs a value/);
  t.throws(() => walk(["--cpus", "0"]), /--cpus needs a positive whole number/);
  t.throws(() => walk(["--accel", "xen"]), UsageError);
  t.throws(() => walk(["--verbose=yes"]), /--verbose takes no value/);
  t.throws(() => positiveInt("--timeout", "1.5"), /--timeout/);
  t.equal(positiveInt("--timeout", "30"), 30);
});

t.test("optionsHelp: aligned columns, long flags on their own line, continuation lines", async (t) => {
  const help = optionsHelp([
    ...VM.slice(1, 2),
    { names: ["--share"], value: "HOST:GUEST[:ro]", help: "share\nrepeatable", apply: () => {} },
  ]);
  t.equal(
    help,
    [
      "options:",
      "  --memory MIB          guest memory (default 1024)",
      "  --share HOST:GUEST[:ro]",
      "                        share",
      "                        repeatable",
      "",
    ].join("\n"),
  );
});

/** The flags a help text lists ("  --memory MIB", "  -v, --verbose"), with a sample value when they take one. */
function flagsInHelp(help: string): { flag: string; value?: string }[] {
  const out: { flag: string; value?: string }[] = [];
  for (const m of help.matchAll(/^ {2}((?:-[a-z-]+, )?)(--?[a-z-]+)(?: (\S+))?/gm)) {
    const value = m[3];
    for (const flag of [m[1]?.replace(", ", ""), m[2]].filter((f): f is string => Boolean(f))) {
      out.push(value ? { flag, value } : { flag });
    }
  }
  return out;
}

const SAMPLE: Record<string, string> = {
  "kvm|hvf|tcg": "tcg",
  MIB: "512",
  N: "2",
  "HOST:GUEST[:ro]": "out:/x",
  FILE: "key",
  NAME: "devuser",
  SECONDS: "60",
};

t.test("every flag each command's help lists is one its parser takes (help and parser share a table)", async (t) => {
  const parsers: Record<string, (args: string[]) => unknown> = {
    run: (a) => parseVmArgs([...a, "true"], "/w"),
    shell: (a) => parseVmArgs(a, "/w"),
    boot: (a) => parseBootArgs([...a, "img"], "/w"),
    // --ssh-key needs --user: give it one.
    test: (a) => parseTestArgs([...a, "--user", "u", "img"], "/w"),
  };
  for (const [command, parse] of Object.entries(parsers)) {
    const help = (await vmdib(["help", command])).stdout;
    const flags = flagsInHelp(help);
    t.ok(flags.length >= 5, `${command}: ${flags.map((f) => f.flag).join(" ")}`);
    for (const f of flags) {
      const args = f.value === undefined ? [f.flag] : [f.flag, SAMPLE[f.value] ?? "x"];
      t.doesNotThrow(() => parse(args), `${command} ${args.join(" ")}`);
    }
  }
});
