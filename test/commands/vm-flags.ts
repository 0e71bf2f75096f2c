// Tests src/commands/vm-flags.ts: the shared VM flags and the option walker behind run, shell, boot and test.
import t from "tap";
import { applyVmFlag, positiveInt, type VmFlags, walkFlags } from "../../src/commands/vm-flags.js";
import { UsageError } from "../../src/errors.js";

t.test("the shared flags, in both spellings", async (t) => {
  const vm: VmFlags = { verbose: false };
  const rest = walkFlags(["--accel=tcg", "--memory", "512", "--cpus=1", "-v", "--", "-x"], {
    command: "x",
    vm,
    word: () => "stop",
  });
  t.same(vm, { accel: "tcg", memoryMiB: 512, cpus: 1, verbose: true });
  t.same(rest, ["-x"], "-- ends the options");
  t.equal(
    applyVmFlag(vm, "--uefi", () => ""),
    false,
    "not a shared flag",
  );
});

t.test("words stop the walk or are taken; a command's own flags come after the shared ones", async (t) => {
  const taken: string[] = [];
  const own: string[] = [];
  const vm: VmFlags = { verbose: false };
  const rest = walkFlags(["a", "--own", "v1", "b", "--verbose"], {
    command: "x",
    vm,
    word: (w) => {
      taken.push(w);
      return "take";
    },
    flag: (f, value) => {
      own.push(`${f}=${value()}`);
      return true;
    },
  });
  t.same(rest, []);
  t.same(taken, ["a", "b"]);
  t.same(own, ["--own=v1"]);
  t.equal(vm.verbose, true);
  t.same(walkFlags(["-v", "ls", "-l"], { command: "x", vm, word: () => "stop" }), ["ls", "-l"]);
});

t.test("bad input is a UsageError naming the flag or the command's help", async (t) => {
  const vm: VmFlags = { verbose: false };
  const walk = (args: string[]) => walkFlags(args, { command: "boot", vm, word: () => "take" });
  t.throws(() => walk(["--bogus"]), /unknown option '--bogus'.*/);
  t.throws(() => walk(["--bogus"]), UsageError);
  t.throws(() => walk(["--memory"]), /--memory needs a value/);
  t.throws(() => walk(["--cpus", "0"]), /--cpus needs a positive whole number/);
  t.throws(() => walk(["--accel", "xen"]), UsageError);
  t.throws(() => positiveInt("--timeout", "1.5"), /--timeout/);
  t.equal(positiveInt("--timeout", "30"), 30);
});
